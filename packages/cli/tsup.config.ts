import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { defineConfig } from 'tsup';
import type { Plugin } from 'esbuild';

/**
 * Modules of the command bundle loaded at their first use, not at every start: each import of
 * one (by ckpt's code or a library's) gets a stand-in whose properties, one per export of the real
 * module (listed here at build time), load it when first read. import-meta-resolve (with the
 * assert and v8 it loads) resolves the user's plugins; child_process runs nft, npm and ssh (and
 * commander's external subcommands, which ckpt has none of); v8 gives the gc() of a dump that
 * leaves the process running; net, tty and stream serve migrations, terminals and logs (stdout
 * and stderr to a pipe or a file need none, see src/stdio.ts); crypto makes and reads key files
 * (a dump and a restore sign and verify natively). Some 15 ms of every start, together, that most
 * commands never use.
 *
 * zod checks options and configs (records are checked by core's own `s`): a dump or a restore
 * given neither never loads it, and its top level and its sixth of the code cache go from every
 * start. Its stand-in has only the names ckpt's modules import (LAZY_PACKAGES lists them): esbuild
 * copies a CommonJS module's names into each importer's view of it, and zod's 232 names times its
 * ten importers here cost more than zod's load. The build fails where a module imports another.
 *
 * Once a stand-in has loaded its module, it calls globalThis[Symbol.for('ckpt.lazyLoaded')](name,
 * module) if the command set it (cli.ts configures zod there).
 */
const LAZY_BUILTINS = ['child_process', 'v8', 'net', 'tty', 'stream', 'crypto'];
/** Each lazy package, with the names ckpt's modules may import of it (undefined: all of its own). */
const LAZY_PACKAGES: Record<string, readonly string[] | undefined> = { 'import-meta-resolve': undefined, zod: ['z'] };

/** The names a module imports of pkg (type-only imports left out): `*` for a namespace, `default`. */
function importedNames(file: string, pkg: string): string[] {
  const names: string[] = [];
  const statement = new RegExp(`import\\s+(?!type\\s)([^;]*?)\\s+from\\s+['"]${pkg}['"]`, 'g');
  for (const [, clause] of readFileSync(file, 'utf8').matchAll(statement)) {
    if (/\*\s*as\s/.test(clause)) names.push('*');
    if (/^[A-Za-z_$][\w$]*\s*(,|$)/.test(clause.trim())) names.push('default');
    for (const spec of /\{([^}]*)\}/.exec(clause)?.[1].split(',') ?? []) {
      const [name] = spec.trim().split(/\s+as\s+/);
      if (name && !name.startsWith('type ')) names.push(name);
    }
  }
  return names;
}

/**
 * Start-up of the command bundle: `debug` probes for the optional `supports-color` at load, a
 * failing resolution through every node_modules above (2-3 ms, per copy of debug); it gets an
 * empty module instead (debug's basic colors, as when it is not installed). And one copy of
 * `debug` (core's) for every importer, not two evaluated at start. And the LAZY modules above.
 */
const startupPlugin: Plugin = {
  name: 'ckpt-startup',
  setup(build) {
    const coreDebug = createRequire(new URL('../core/package.json', import.meta.url)).resolve('debug');
    const apiDir = new URL('../api/', import.meta.url).pathname;
    build.onResolve({ filter: /^supports-color$/ }, () => ({ path: 'supports-color', namespace: 'ckpt-empty' }));
    build.onLoad({ filter: /.*/, namespace: 'ckpt-empty' }, () => ({ contents: 'module.exports = null;', loader: 'js' }));
    build.onResolve({ filter: /^debug$/ }, () => ({ path: coreDebug }));
    const lazy = new RegExp(`^(node:)?(${LAZY_BUILTINS.join('|')})$|^(${Object.keys(LAZY_PACKAGES).join('|')})$`);
    build.onResolve({ filter: lazy }, (args) => {
      // The stand-in's own require is of the real module.
      if (args.namespace === 'ckpt-lazy') return undefined;
      const only = LAZY_PACKAGES[args.path];
      if (only && !args.importer.includes('/node_modules/')) {
        const other = importedNames(args.importer, args.path).filter((n) => !only.includes(n));
        if (other.length) return { errors: [{ text: `${args.importer} imports ${other.join(', ')} of ${args.path}, whose stand-in has ${only.join(', ')} only (LAZY_PACKAGES)` }] };
      }
      return { path: args.path.replace(/^node:/, ''), namespace: 'ckpt-lazy' };
    });
    build.onLoad({ filter: /.*/, namespace: 'ckpt-lazy' }, async ({ path }) => {
      const builtin = LAZY_BUILTINS.includes(path);
      const real = builtin ? createRequire(import.meta.url)(path) : await import(createRequire(apiDir).resolve(path));
      const names = (builtin ? undefined : LAZY_PACKAGES[path]) ?? Object.keys(real).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n));
      const getters = names.map((n) => `get ${n}() { return load().${n}; }`).join(',\n');
      const id = JSON.stringify(path);
      return {
        contents: `let real;
const load = () => {
  if (real) return real;
  real = require(${JSON.stringify(builtin ? `node:${path}` : path)});
  globalThis[Symbol.for('ckpt.lazyLoaded')]?.(${id}, real);
  return real;
};
module.exports = {
${getters}
};
`,
        loader: 'js',
        resolveDir: apiDir,
      };
    });
  },
};

export default defineConfig([
  // The programmatic entry, index.js (@ckpt/api re-exported).
  {
    entry: ['src/index.ts'],
    format: ['esm'],
    dts: { entry: 'src/index.ts' },
    clean: true,
    outDir: 'dist',
    target: 'node20',
    sourcemap: true,
    external: ['@ckpt/core', '@ckpt/native', 'zod', 'picomatch', 'debug', 'typedi', 'tapable', 'reflect-metadata'],
    noExternal: [/^@ckpt\/(api|plugin-)/],
    banner: { js: "import { createRequire as __ckptRequire } from 'node:module'; const require = __ckptRequire(import.meta.url);" },
  },
  // The command's entry, bin.cjs (see bin.ts), with the version in it and nothing else of ckpt's.
  {
    entry: ['src/bin.ts'],
    format: ['cjs'],
    outDir: 'dist',
    outExtension: () => ({ js: '.cjs' }),
    target: 'node20',
    sourcemap: true,
    noExternal: [/^@ckpt\/core\/version$/],
  },
  // The whole command in one CommonJS file (start-up time: one file to read, compiled once through
  // a code cache; see bin.ts). Everything is in it but the addon itself, which @ckpt/native's code
  // loads from its package directory: import.meta.url, which only that code uses, names the file
  // it would have been loaded from there.
  {
    entry: ['src/cli.ts'],
    format: ['cjs'],
    outDir: 'dist',
    outExtension: () => ({ js: '.cjs' }),
    target: 'node20',
    sourcemap: true,
    noExternal: [/./],
    external: ['node-gyp-build'],
    esbuildPlugins: [startupPlugin],
    // tsup's own plugin would take node:child_process first (and make it external as is).
    removeNodeProtocol: false,
    esbuildOptions(o) {
      o.define = { ...o.define, 'import.meta.url': '__ckptNativeUrl' };
      // Whitespace and syntax only (names kept, for stack traces; cli.cjs.map maps them back with
      // node --enable-source-maps): 1.5 -> 1.06 MB to read and load at every start, and a smaller
      // code cache (A/B, 12 runs each: dump 88.5 -> 85.7 ms, restore 91.8 -> 86.1, --help 58 -> 56).
      o.minifyWhitespace = true;
      // ASCII only (esbuild's default, said here because bin.ts reads the bundle as latin1).
      o.charset = 'ascii';
      o.minifySyntax = true;
    },
    // @ckpt/native's directory: beside this package where npm installs both (node_modules/@ckpt),
    // or in the repository (native/), found by a look at each; require.resolve only when neither
    // is it (its exports-map resolution cost 3 ms of every start). The banner comes before
    // esbuild's "use strict", which is then no directive: the bundle says it first (its sources
    // are ES modules, strict by definition).
    //
    // The bundle is one function expression, Node's CommonJS wrapper written in (banner and
    // footer), which bin.ts compiles as read: see readBundle there.
    banner: {
      js: `(function (exports, require, module, __filename, __dirname) { "use strict";
const __ckptNativeUrl = (() => {
  const { dirname, join } = require('node:path');
  const isNative = (d) => { try { return JSON.parse(require('node:fs').readFileSync(join(d, 'package.json'), 'utf8')).name === '@ckpt/native'; } catch { return false; } };
  const dir = [join(__dirname, '../../native'), join(__dirname, '../../../native')].find(isNative) ?? dirname(require.resolve('@ckpt/native/package.json'));
  return require('node:url').pathToFileURL(join(dir, 'dist', 'index.js')).href;
})();`,
    },
    footer: { js: '})' },
  },
]);
