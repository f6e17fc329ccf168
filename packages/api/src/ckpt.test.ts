// createCkpt: the config's plugins, then the caller's, then the built-ins less "disable".
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { builtinPlugins, createCkpt } from './ckpt.js';
import { BUILTIN_PLUGIN_NAMES } from './schema.js';

let root: string;

beforeEach(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), 'ckpt-unit-create-')));
  // The plugin modules below are ES modules in .js files.
  write('package.json', { type: 'module' });
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

function write(rel: string, content: unknown): void {
  const p = join(root, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
}

/** A plugin factory module that remembers the options it was built with. */
const factory = (name: string) => `export const seen = [];\nexport default (opts) => { seen.push(opts); return { name: '${name}', apply() {} }; };\n`;

describe('createCkpt', () => {
  it('BUILTIN_PLUGIN_NAMES (what "disable" accepts) are the built-ins, in order', () => {
    expect(builtinPlugins().map((p) => p.name)).toEqual([...BUILTIN_PLUGIN_NAMES]);
  });

  it("each built-in plugin's options take {} as {} (lazyOptions' promise: taken without building the schema)", () => {
    for (const p of builtinPlugins()) {
      if (!p.options) continue;
      const given = p.options['~standard'].validate({});
      // The schema itself (a zod schema: safeParse builds it).
      const real = (p.options as unknown as { safeParse(v: unknown): { success: boolean; data?: unknown } }).safeParse({});
      expect(real, p.name).toEqual({ success: true, data: {} });
      expect(given, p.name).toEqual({ value: {} });
      // Anything else is the schema's to judge, built or not.
      expect(p.options['~standard'].validate({ noSuchOption: 1 }), p.name).toHaveProperty('issues');
    }
  });

  it('user plugins first (config, then the caller\'s), with their options, then the built-ins less "disable"', async () => {
    write('proj/ckpt.config.json', {
      plugins: [['./plugins/a.js', { level: 1 }]],
      disable: ['@ckpt/plugin-tty', '@ckpt/plugin-tcp'],
    });
    write('proj/plugins/a.js', factory('acme-a'));
    write('proj/b.js', factory('acme-b'));
    const c = await createCkpt({ cwd: join(root, 'proj'), plugins: ['./b.js'] });
    const names = c.plugins.map((p) => p.name);
    expect(names.slice(0, 2)).toEqual(['acme-a', 'acme-b']);
    expect(names.slice(2)).toEqual(BUILTIN_PLUGIN_NAMES.filter((n) => n !== '@ckpt/plugin-tty' && n !== '@ckpt/plugin-tcp'));
    const a = (await import(join(root, 'proj/plugins/a.js'))) as { seen: unknown[] };
    expect(a.seen).toEqual([{ level: 1 }]);
  });

  it('a plugin with an options schema also gets its options checked by core, under its own name', async () => {
    // A Standard Schema (what zod, valibot, ... implement) that wants { level: number }.
    write(
      'proj/schema.js',
      `export default () => ({
      name: '@acme/checked',
      options: { '~standard': { version: 1, vendor: 'test', validate: (v) =>
        typeof v.level === 'number' ? { value: v } : { issues: [{ message: 'level must be a number', path: ['level'] }] } } },
      apply() {},
    });\n`,
    );
    write('proj/ckpt.config.json', { builtins: false, plugins: [['./schema.js', { level: 'high' }]] });
    await expect(createCkpt({ cwd: join(root, 'proj') })).rejects.toThrow(/level must be a number/);
    write('proj/ckpt.config.json', { builtins: false, plugins: ['./schema.js'], options: { './schema.js': { level: 2 } } });
    expect((await createCkpt({ cwd: join(root, 'proj') })).plugins.map((p) => p.name)).toEqual(['@acme/checked']);
  });

  it('"builtins": false leaves only the user plugins; plugin paths resolve from the config file\'s directory', async () => {
    write('proj/ckpt.config.json', { builtins: false, plugins: ['./only.js'] });
    write('proj/only.js', factory('acme-only'));
    mkdirSync(join(root, 'proj/sub/dir'), { recursive: true });
    const c = await createCkpt({ cwd: join(root, 'proj/sub/dir') });
    expect(c.plugins.map((p) => p.name)).toEqual(['acme-only']);
  });
});
