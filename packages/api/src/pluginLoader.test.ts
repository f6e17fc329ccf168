// The plugin loader: packages resolved as Node's import resolves them (ESM, CommonJS, "exports"
// with only "import"), paths, global packages, and one-line errors.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadPlugin, resolvePlugin } from './pluginLoader.js';

let root: string;
let savedNodePath: string | undefined;

beforeEach(() => {
  // ckpt-unit-: vitest.config.ts loads modules under such directories with Node's own loader,
  // so that they are loaded here as they are by the CLI (CommonJS included).
  root = realpathSync(mkdtempSync(join(tmpdir(), 'ckpt-unit-plugins-')));
  savedNodePath = process.env.NODE_PATH;
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
  if (savedNodePath === undefined) delete process.env.NODE_PATH;
  else process.env.NODE_PATH = savedNodePath;
});

function write(rel: string, content: unknown): string {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content, null, 1));
  return p;
}

/** An ES module plugin factory that records its options in the plugin's name. */
const esmFactory = (name: string) => `export default (opts) => ({ name: '${name}', opts, apply() {} });\n`;

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a failure');
}

describe('packages', () => {
  it('an ES module package whose "exports" has only "import" (createRequire could not resolve it)', async () => {
    write('proj/node_modules/esm-only/package.json', { name: 'esm-only', type: 'module', exports: { '.': { import: './lib/main.js' } } });
    write('proj/node_modules/esm-only/lib/main.js', esmFactory('esm-only'));
    const p = (await loadPlugin(['esm-only', { level: 2 }], join(root, 'proj'))) as unknown as { name: string; opts: unknown };
    expect(p.name).toBe('esm-only');
    expect(p.opts).toEqual({ level: 2 });
  });

  it('"exports" with only "default", and a subpath export', async () => {
    write('proj/node_modules/@acme/dflt/package.json', { name: '@acme/dflt', type: 'module', exports: { '.': { default: './a.js' }, './extra': './b.js' } });
    write('proj/node_modules/@acme/dflt/a.js', esmFactory('@acme/dflt'));
    write('proj/node_modules/@acme/dflt/b.js', esmFactory('@acme/dflt-extra'));
    expect((await loadPlugin('@acme/dflt', join(root, 'proj'))).name).toBe('@acme/dflt');
    expect((await loadPlugin('@acme/dflt/extra', join(root, 'proj'))).name).toBe('@acme/dflt-extra');
  });

  it('a CommonJS package (main, module.exports = factory) and one exporting { plugin }', async () => {
    write('proj/node_modules/cjs-plugin/package.json', { name: 'cjs-plugin', main: 'lib/index.js' });
    write('proj/node_modules/cjs-plugin/lib/index.js', "module.exports = function (opts) { return { name: 'cjs-plugin', opts, apply() {} }; };\n");
    write('proj/node_modules/cjs-named/package.json', { name: 'cjs-named' });
    write('proj/node_modules/cjs-named/index.js', "exports.plugin = { name: 'cjs-named', apply() {} };\n");
    const p = (await loadPlugin(['cjs-plugin', { x: 1 }], join(root, 'proj'))) as unknown as { name: string; opts: unknown };
    expect(p).toMatchObject({ name: 'cjs-plugin', opts: { x: 1 } });
    expect((await loadPlugin('cjs-named', join(root, 'proj'))).name).toBe('cjs-named');
  });

  it('found in node_modules of a parent of the base directory', async () => {
    write('proj/node_modules/up/package.json', { name: 'up', type: 'module', exports: './i.js' });
    write('proj/node_modules/up/i.js', esmFactory('up'));
    mkdirSync(join(root, 'proj/a/b'), { recursive: true });
    expect((await loadPlugin('up', join(root, 'proj/a/b'))).name).toBe('up');
  });

  it('a global package (a NODE_PATH directory, as npm root -g is)', async () => {
    write('global/lib/node_modules/glob-plugin/package.json', { name: 'glob-plugin', type: 'module', exports: { import: './g.js' } });
    write('global/lib/node_modules/glob-plugin/g.js', esmFactory('glob-plugin'));
    write('other/libs/plain-dir/package.json', { name: 'plain-dir', main: 'm.js' });
    write('other/libs/plain-dir/m.js', "module.exports = { name: 'plain-dir', apply() {} };\n");
    process.env.NODE_PATH = `${join(root, 'global/lib/node_modules')}:${join(root, 'other/libs')}`;
    mkdirSync(join(root, 'proj'));
    expect(resolvePlugin('glob-plugin', join(root, 'proj'))).toBe(`file://${join(root, 'global/lib/node_modules/glob-plugin/g.js')}`);
    expect((await loadPlugin('glob-plugin', join(root, 'proj'))).name).toBe('glob-plugin');
    expect((await loadPlugin('plain-dir', join(root, 'proj'))).name).toBe('plain-dir');
  });

  it("the project's copy comes before the global one", async () => {
    write('proj/node_modules/twice/package.json', { name: 'twice', type: 'module', exports: './l.js' });
    write('proj/node_modules/twice/l.js', esmFactory('twice-local'));
    write('global/node_modules/twice/package.json', { name: 'twice', type: 'module', exports: './g.js' });
    write('global/node_modules/twice/g.js', esmFactory('twice-global'));
    process.env.NODE_PATH = join(root, 'global/node_modules');
    expect((await loadPlugin('twice', join(root, 'proj'))).name).toBe('twice-local');
  });
});

describe('paths', () => {
  it("relative to the base directory (the config file's), not the process cwd", async () => {
    write('cfg/plugins/mine.mjs', "export const plugin = { name: 'mine', apply() {} };\n");
    expect((await loadPlugin('./plugins/mine.mjs', join(root, 'cfg'))).name).toBe('mine');
    expect((await loadPlugin(join(root, 'cfg/plugins/mine.mjs'), '/')).name).toBe('mine');
  });

  it('a directory holding a package', async () => {
    write('cfg/local-pkg/package.json', { name: 'local-pkg', type: 'module', exports: { import: './x.js' } });
    write('cfg/local-pkg/x.js', esmFactory('local-pkg'));
    expect((await loadPlugin('./local-pkg', join(root, 'cfg'))).name).toBe('local-pkg');
  });
});

describe('errors', () => {
  it('a package not found says where it looked', async () => {
    mkdirSync(join(root, 'proj'));
    process.env.NODE_PATH = join(root, 'nowhere-else');
    mkdirSync(join(root, 'nowhere-else'));
    const e = await failure(loadPlugin('@acme/missing-plugin', join(root, 'proj')));
    expect(e.code).toBe('ERR_CKPT_CONFIG');
    expect(e.message).toMatch(/^cannot load plugin @acme\/missing-plugin: package @acme\/missing-plugin not found \(looked in node_modules from /);
    expect(e.message).toContain(join(root, 'proj'));
    expect(e.message).toContain(join(root, 'nowhere-else'));
    expect(e.message).not.toContain('\n');
  });

  it('a missing file', async () => {
    const e = await failure(loadPlugin('./nope.mjs', root));
    expect(e.message).toBe(`cannot load plugin ./nope.mjs: no such file: ${join(root, 'nope.mjs')}`);
  });

  it('a syntax error says so, with the file', async () => {
    // .js in a module package, not .mjs: vitest transforms .mjs files itself, whatever its config.
    write('package.json', { type: 'module' });
    const file = write('bad.js', 'export default {\n');
    const e = await failure(loadPlugin('./bad.js', root));
    expect(e.code).toBe('ERR_CKPT_CONFIG');
    expect(e.message).toMatch(/^cannot load plugin \.\/bad\.js: syntax error in /);
    expect(e.message).toContain(file);
  });

  it('a module that exports no plugin, and a factory that throws', async () => {
    write('none.mjs', 'export const x = 1;\n');
    expect((await failure(loadPlugin('./none.mjs', root))).message).toMatch(/^cannot load plugin \.\/none\.mjs: .*none\.mjs does not export a plugin/);
    write('throws.mjs', "export default () => { throw new Error('bad options'); };\n");
    expect((await failure(loadPlugin('./throws.mjs', root))).message).toBe('cannot load plugin ./throws.mjs: its factory failed: bad options');
  });

  it('a package whose "exports" does not export what is asked', async () => {
    write('proj/node_modules/closed/package.json', { name: 'closed', type: 'module', exports: { '.': './i.js' } });
    write('proj/node_modules/closed/i.js', esmFactory('closed'));
    const e = await failure(loadPlugin('closed/internal', join(root, 'proj')));
    expect(e.message).toMatch(/^cannot load plugin closed\/internal: .*not (exported|defined)/i);
  });
});
