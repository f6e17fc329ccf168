// The config loader: where configs are found, how they are validated, how options are gathered.
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closest, CONFIG_FILES, loadConfig } from './config.js';
import { BUILTIN_PLUGIN_NAMES, configJsonSchema } from './schema.js';

let root: string;

beforeEach(() => {
  // ckpt-unit-: vitest.config.ts loads modules under such directories with Node's own loader.
  root = realpathSync(mkdtempSync(join(tmpdir(), 'ckpt-unit-config-')));
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

function write(rel: string, content: unknown): string {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

/** loadConfig searching from root/rel, never above root (a config in /tmp must not leak in). */
const load = (rel = '', file?: string) => loadConfig(file, join(root, rel), { stopDir: root });

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a failure');
}

describe('finding the config', () => {
  it('no config: the built-ins, from cwd', async () => {
    mkdirSync(join(root, 'a'));
    expect(await load('a')).toEqual({ plugins: [], builtins: true, disable: [], options: {}, baseDir: join(root, 'a') });
  });

  it("searches upward from the working directory; baseDir is the config file's directory", async () => {
    const file = write('proj/ckpt.config.json', { builtins: false });
    mkdirSync(join(root, 'proj/src/deep'), { recursive: true });
    const c = await load('proj/src/deep');
    expect(c).toMatchObject({ builtins: false, file, baseDir: join(root, 'proj') });
  });

  it('the nearest directory wins, and in one directory the order of CONFIG_FILES', async () => {
    write('ckpt.config.json', { disable: ['@ckpt/plugin-tty'] });
    write('a/.ckptrc.json', { disable: ['@ckpt/plugin-tcp'] });
    write('a/ckpt.config.mjs', 'export default { disable: ["@ckpt/plugin-memory"] };');
    expect((await load('a')).disable).toEqual(['@ckpt/plugin-memory']);
    expect(CONFIG_FILES.indexOf('ckpt.config.mjs')).toBeLessThan(CONFIG_FILES.indexOf('.ckptrc.json'));
    expect((await load('')).disable).toEqual(['@ckpt/plugin-tty']);
  });

  it('reads the "ckpt" key of package.json, and skips a package.json without one', async () => {
    const pj = write('proj/package.json', { name: 'proj', ckpt: { plugins: ['./p.mjs'] } });
    write('proj/pkg/package.json', { name: 'inner' });
    mkdirSync(join(root, 'proj/pkg/src'));
    const c = await load('proj/pkg/src');
    expect(c).toMatchObject({ file: pj, plugins: ['./p.mjs'], baseDir: join(root, 'proj') });
  });

  it('loads .mjs, .js (in a module package) and .cjs configs', async () => {
    write('m/ckpt.config.mjs', 'export default { builtins: false };');
    write('j/package.json', { type: 'module' });
    write('j/ckpt.config.js', 'export default { disable: ["@ckpt/plugin-tty"] };');
    write('c/ckpt.config.cjs', 'module.exports = { options: { x: { y: 1 } } };');
    expect((await load('m')).builtins).toBe(false);
    expect((await load('j')).disable).toEqual(['@ckpt/plugin-tty']);
    expect((await load('c')).options).toEqual({ x: { y: 1 } });
  });

  it('an explicit file, relative to cwd; a missing one is an error', async () => {
    const file = write('conf/my.json', { builtins: false });
    mkdirSync(join(root, 'elsewhere'));
    expect(await load('elsewhere', '../conf/my.json')).toMatchObject({ builtins: false, file, baseDir: join(root, 'conf') });
    const e = await failure(load('elsewhere', 'nope.json'));
    expect(e.code).toBe('ERR_CKPT_CONFIG');
    expect(e.message).toBe(`config file not found: ${join(root, 'elsewhere/nope.json')}`);
  });

  it('an empty file is a config with no settings', async () => {
    write('ckpt.config.json', '');
    expect(await load()).toMatchObject({ plugins: [], builtins: true, file: join(root, 'ckpt.config.json') });
  });
});

describe('validation', () => {
  it('an unknown key, with the closest known key', async () => {
    const file = write('ckpt.config.json', { plugns: ['x'] });
    const e = await failure(load());
    expect(e.code).toBe('ERR_CKPT_CONFIG');
    expect(e.message).toBe(`config ${file}: "plugns" is not a known key (did you mean "plugins"?)`);
  });

  it('an unknown key far from any known one lists the keys', async () => {
    write('ckpt.config.json', { verbose: true });
    expect((await failure(load())).message).toMatch(/"verbose" is not a known key \(the keys are \$schema, plugins, builtins, disable, options, files\)$/);
  });

  it('a misspelled key comes first, before what it caused', async () => {
    write('ckpt.config.json', { builtin: false, disable: 3 });
    const e = await failure(load());
    expect(e.message).toMatch(/: "builtin" is not a known key \(did you mean "builtins"\?\); "disable" must be a list \(got a number\)$/);
  });

  it('a wrong type names the key path and the file, on one line', async () => {
    const file = write('ckpt.config.json', { builtins: 'yes' });
    expect((await failure(load())).message).toBe(`config ${file}: "builtins" must be true or false (got a string ("yes"))`);
    write('ckpt.config.json', { plugins: ['ok', ['pair', { a: 1 }], ['bad', 3]] });
    const e = await failure(load());
    expect(e.message).toBe(`config ${file}: "plugins[2]" must be a package name or path, or a [name, options] pair with an options object (got a list)`);
    expect(e.message).not.toContain('\n');
    write('ckpt.config.json', { options: { '@ckpt/plugin-tty': 1 } });
    expect((await failure(load())).message).toBe(`config ${file}: options["@ckpt/plugin-tty"] must be an object (got a number)`);
    write('ckpt.config.json', [1]);
    expect((await failure(load())).message).toBe(`config ${file}: expected an object, got a list`);
  });

  it('"disable": an unknown name lists the built-ins', async () => {
    const file = write('ckpt.config.json', { disable: ['@ckpt/plugin-tty', '@ckpt/plugin-gpu'] });
    const e = await failure(load());
    expect(e.code).toBe('ERR_CKPT_CONFIG');
    expect(e.message).toBe(`config ${file}: "disable[1]": "@ckpt/plugin-gpu" is not a built-in plugin (the built-ins: ${BUILTIN_PLUGIN_NAMES.join(', ')})`);
  });

  it('errors in package.json name the "ckpt" key', async () => {
    const file = write('package.json', { name: 'x', ckpt: { plugns: [] } });
    expect((await failure(load())).message).toBe(`config ${file} (key "ckpt"): "ckpt.plugns" is not a known key (did you mean "plugins"?)`);
  });

  it('invalid JSON and a failing module are read errors naming the file', async () => {
    const file = write('ckpt.config.json', '{ "plugins": [ }');
    const e = await failure(load());
    expect(e.message).toMatch(new RegExp(`^cannot read config ${file}: invalid JSON: `));
    rmSync(file);
    // .js in a module package, not .mjs: vitest transforms .mjs files itself, whatever its config.
    write('package.json', { type: 'module' });
    const js = write('ckpt.config.js', 'export default {');
    expect((await failure(load())).message).toMatch(new RegExp(`^cannot read config ${js}: syntax error: `));
  });

  it('"$schema" is accepted and ignored', async () => {
    write('ckpt.config.json', { $schema: './node_modules/@ckpt/api/schema.json', builtins: false });
    expect(await load()).toMatchObject({ builtins: false, plugins: [], options: {} });
  });
});

describe('options', () => {
  it('"files" is options["@ckpt/plugin-files"] (merged, "files" wins)', async () => {
    write('ckpt.config.json', { files: { rules: [] }, options: { '@ckpt/plugin-files': { rules: [1], other: true }, '@ckpt/plugin-tcp': { a: 1 } } });
    expect((await load()).options).toEqual({ '@ckpt/plugin-files': { rules: [], other: true }, '@ckpt/plugin-tcp': { a: 1 } });
  });

  it("a plugin's options: options[name] merged with its pair's (the pair wins)", async () => {
    write('ckpt.config.json', {
      plugins: ['plain', 'shared', ['./own.mjs', { a: 1, b: 2 }]],
      options: { shared: { s: true }, './own.mjs': { b: 0, c: 3 } },
    });
    const c = await load();
    expect(c.plugins).toEqual(['plain', ['shared', { s: true }], ['./own.mjs', { a: 1, b: 2, c: 3 }]]);
    expect(c.options).toEqual({ shared: { s: true }, './own.mjs': { a: 1, b: 2, c: 3 } });
  });
});

describe('suggestions', () => {
  it('closest: typos, swapped letters and case, but not unrelated words', () => {
    const keys = ['plugins', 'builtins', 'disable', 'options', 'files', '$schema'];
    expect(closest('plugns', keys)).toBe('plugins');
    expect(closest('pluigns', keys)).toBe('plugins');
    expect(closest('Disable', keys)).toBe('disable');
    expect(closest('option', keys)).toBe('options');
    expect(closest('schema', keys)).toBe('$schema');
    expect(closest('verbose', keys)).toBeUndefined();
  });
});

describe('the published JSON schema', () => {
  it('schema/ckpt.config.schema.json is the one the zod schema gives (run the build to update it)', () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const published = JSON.parse(readFileSync(join(here, '../schema/ckpt.config.schema.json'), 'utf8')) as unknown;
    expect(published).toEqual(configJsonSchema());
  });

  it('describes every key and rejects others', () => {
    const s = configJsonSchema() as { properties: Record<string, unknown>; additionalProperties: boolean };
    expect(Object.keys(s.properties).sort()).toEqual(['$schema', 'builtins', 'disable', 'files', 'options', 'plugins']);
    expect(s.additionalProperties).toBe(false);
  });
});
