/**
 * The plugin loader: resolves a plugin the way Node resolves an `import` from the config file's
 * directory, then loads it.
 *
 * - A path (`./x.mjs`, `../x.cjs`, `/abs/x.js`, a `file:` URL, or a directory holding a package)
 *   is taken relative to the base directory.
 * - A package name is resolved with Node's ESM algorithm (import-meta-resolve): the `exports`
 *   conditions "node", "import" and "default" (so a package that only exports "import" loads:
 *   createRequire().resolve, used before, knows "require" only), else "main"; searched in
 *   node_modules from the base directory up, then where `npm install -g` puts packages.
 *
 * The module's default export (or its `plugin` export; for CommonJS, module.exports) is a plugin
 * object `{ name, apply }` or a factory, called with the spec's options, that returns one.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { importUserModule } from './userImport.js';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { resolve as resolveImport } from 'import-meta-resolve';
import { CkptError, type CkptPlugin } from '@ckpt/core';
import type { PluginSpec } from './config.js';

function loadError(spec: string, why: string, cause?: unknown): CkptError {
  return new CkptError('ERR_CKPT_CONFIG', `cannot load plugin ${spec}: ${why}`, cause === undefined ? {} : { cause });
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}

/** "@scope/name/sub" -> "@scope/name"; "name/sub" -> "name". */
function packageNameOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

let npmRootCache: string | null | undefined;

/** `npm root -g`, run once: the slow way, for a prefix set in an npmrc that nothing else tells. */
function npmRootGlobal(): string | undefined {
  if (npmRootCache === undefined) {
    try {
      npmRootCache = execFileSync('npm', ['root', '-g'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim() || null;
    } catch {
      npmRootCache = null;
    }
  }
  return npmRootCache ?? undefined;
}

/**
 * Where global packages are, cheaply (no child process): the npm prefix when run through npm
 * ($npm_config_prefix), the prefix node itself was installed under (<prefix>/bin/node ->
 * <prefix>/lib/node_modules: what `npm root -g` says unless an npmrc moves it), and NODE_PATH.
 * Only existing directories, each once.
 */
export function globalPackageDirs(): string[] {
  const dirs: string[] = [];
  const prefix = process.env.npm_config_prefix;
  if (prefix) dirs.push(join(prefix, 'lib', 'node_modules'));
  dirs.push(join(dirname(dirname(process.execPath)), 'lib', 'node_modules'));
  for (const d of (process.env.NODE_PATH ?? '').split(':')) if (d) dirs.push(resolve(d));
  return [...new Set(dirs)].filter((d) => existsSync(d));
}

function isNotFound(e: unknown, pkg: string): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === 'ERR_MODULE_NOT_FOUND' && (err.message ?? '').startsWith(`Cannot find package '${pkg}'`);
}

/**
 * A package that sits directly in dir (dir/<name>): dir is a node_modules directory (npm's global
 * root) or a NODE_PATH entry. Resolved as an import from inside dir, through the package's own
 * "exports" (self-reference) or its "main".
 */
function resolveInDir(specifier: string, dir: string): string | undefined {
  const pkg = packageNameOf(specifier);
  const pkgDir = join(dir, pkg);
  if (!existsSync(join(pkgDir, 'package.json'))) return undefined;
  return resolvePackageDir(pkgDir, specifier.slice(pkg.length), specifier);
}

/** The entry of the package in pkgDir (subpath "" or "/sub"), as Node's import would pick it. */
function resolvePackageDir(pkgDir: string, subpath: string, spec: string): string {
  let pj: { name?: unknown; exports?: unknown };
  try {
    pj = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as typeof pj;
  } catch (e) {
    throw loadError(spec, `cannot read ${join(pkgDir, 'package.json')}: ${firstLine(e)}`, e);
  }
  if (typeof pj.name === 'string' && pj.exports != null) {
    // A package may import itself by its name through its "exports": the resolver then applies
    // the export conditions, wherever the package lies.
    return resolveImport(pj.name + subpath, pathToFileURL(join(pkgDir, 'package.json')).href);
  }
  // No "exports": "main", or index.js (what both require and import do for such a package).
  return pathToFileURL(createRequire(join(pkgDir, 'package.json')).resolve(join(pkgDir, subpath))).href;
}

/**
 * The URL to import for a plugin spec, or a CkptError saying where it looked. Exported for
 * `ckpt plugins`-like listings and tests.
 */
export function resolvePlugin(name: string, baseDir: string): string {
  baseDir = resolve(baseDir);
  if (name.startsWith('file:')) name = fileURLToPath(name);
  if (name.startsWith('.') || isAbsolute(name)) {
    const path = resolve(baseDir, name);
    if (!existsSync(path)) throw loadError(name, `no such file: ${path}`);
    if (statSync(path).isDirectory()) {
      if (!existsSync(join(path, 'package.json'))) throw loadError(name, `${path} is a directory without a package.json`);
      return resolvePackageDir(path, '', name);
    }
    return pathToFileURL(path).href;
  }
  const pkg = packageNameOf(name);
  const tryResolve = (how: () => string | undefined): string | undefined => {
    try {
      return how();
    } catch (e) {
      if (isNotFound(e, pkg)) return undefined;
      // Found, but its package.json does not lead to a module (bad "exports", subpath not exported).
      throw loadError(name, firstLine(e), e);
    }
  };
  // From the base directory up: node_modules of the project, of its parents.
  const local = tryResolve(() => resolveImport(name, pathToFileURL(join(baseDir, 'noop.js')).href));
  if (local) return local;
  const globals = globalPackageDirs();
  for (const dir of globals) {
    const url = tryResolve(() => resolveInDir(name, dir));
    if (url) return url;
  }
  const npmRoot = npmRootGlobal();
  if (npmRoot && !globals.includes(npmRoot)) {
    const url = tryResolve(() => resolveInDir(name, npmRoot));
    if (url) return url;
    globals.push(npmRoot);
  }
  const looked = [`node_modules from ${baseDir} up`, ...globals].join(', ');
  throw loadError(name, `package ${pkg} not found (looked in ${looked}; install it with npm install ${pkg}, or npm install -g ${pkg})`);
}

/** The plugin (or factory) a module exports: default, or `plugin`; CommonJS interop unwrapped. */
function pluginExport(mod: Record<string, unknown>): unknown {
  let exp = mod.default ?? mod.plugin;
  // CommonJS: import() gives module.exports as the default; an ES module compiled to CommonJS
  // (exports.default = ..., or exports.plugin = ...) has the real export one level down.
  if (exp && typeof exp === 'object' && typeof (exp as { apply?: unknown }).apply !== 'function') {
    const inner = (exp as Record<string, unknown>).default ?? (exp as Record<string, unknown>).plugin;
    if (inner) exp = inner;
  }
  return exp;
}

/**
 * Where a SyntaxError is, when its stack says (file:line as its first line); Node 20 does not for
 * ES modules, and the error may be in a module the plugin imports, so the fallback says both.
 */
function syntaxErrorPlace(e: Error, entry: string): string {
  const first = (e.stack ?? '').split('\n')[0];
  const m = /^(file:\/\/\S+|\/\S+):(\d+)$/.exec(first);
  if (!m) return `${entry} (or a module it imports)`;
  const file = m[1].startsWith('file:') ? fileURLToPath(m[1]) : m[1];
  return `${file}:${m[2]}`;
}

/**
 * Loads one plugin module (package name or path, resolved from baseDir) and returns the plugin,
 * calling its factory with the spec's options. Every failure is one line naming the spec.
 */
export async function loadPlugin(spec: PluginSpec, baseDir: string): Promise<CkptPlugin> {
  const [name, options] = typeof spec === 'string' ? [spec, undefined] : spec;
  if (typeof name !== 'string' || !name) throw new CkptError('ERR_CKPT_CONFIG', `a plugin is named ${JSON.stringify(name)}: expected a package name or a path`);
  const url = resolvePlugin(name, baseDir);
  const file = url.startsWith('file:') ? fileURLToPath(url) : url;
  let mod: Record<string, unknown>;
  try {
    mod = (await importUserModule(url)) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof SyntaxError) throw loadError(name, `syntax error in ${syntaxErrorPlace(e, file)}: ${firstLine(e)}`, e);
    throw loadError(name, `${file} failed to load: ${firstLine(e)}`, e);
  }
  const exp = pluginExport(mod);
  let plugin: CkptPlugin;
  try {
    plugin = typeof exp === 'function' ? (exp as (o: unknown) => CkptPlugin)(options) : (exp as CkptPlugin);
  } catch (e) {
    if (e instanceof CkptError) throw loadError(name, e.message, e);
    throw loadError(name, `its factory failed: ${firstLine(e)}`, e);
  }
  if (!plugin || typeof plugin !== 'object' || typeof plugin.apply !== 'function' || typeof plugin.name !== 'string') {
    throw loadError(name, `${file} does not export a plugin ({ name, apply }) or a factory returning one (as its default export, or as "plugin")`);
  }
  return plugin;
}
