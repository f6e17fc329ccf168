/**
 * Configuration: `ckpt.config.json` or `ckpt.config.mjs` (searched in the working directory, or
 * given with --config), listing plugins in order, each a package name or a path, with options:
 *
 *   { "plugins": ["@acme/ckpt-plugin-gpu", ["./my-plugin.mjs", { "verbose": true }]] }
 *
 * A plugin module's default export (or `plugin` export) is either a plugin object or a factory
 * called with the options. Built-in plugins are added first unless "builtins": false.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { CkptError } from './errors.js';
import type { CkptPlugin } from './plugin.js';

export type PluginSpec = string | [string, unknown];

export interface CkptConfig {
  plugins: PluginSpec[];
  builtins: boolean;
  /** Per-plugin options keyed by plugin name, for built-ins. */
  options: Record<string, unknown>;
  /** Where the config came from (plugin paths resolve relative to it). */
  baseDir: string;
  file?: string;
}

export const CONFIG_FILES = ['ckpt.config.json', 'ckpt.config.mjs'];

export async function loadConfig(file?: string, cwd = process.cwd()): Promise<CkptConfig> {
  let path: string | undefined;
  if (file) {
    path = resolve(cwd, file);
    if (!existsSync(path)) throw new CkptError('ERR_CKPT_CONFIG', `config file not found: ${path}`);
  } else {
    path = CONFIG_FILES.map((f) => resolve(cwd, f)).find((f) => existsSync(f));
  }
  if (!path) return { plugins: [], builtins: true, options: {}, baseDir: cwd };
  let raw: unknown;
  try {
    raw = path.endsWith('.json')
      ? JSON.parse(readFileSync(path, 'utf8'))
      : ((await import(pathToFileURL(path).href)) as { default: unknown }).default;
  } catch (e) {
    throw new CkptError('ERR_CKPT_CONFIG', `cannot read config ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (!raw || typeof raw !== 'object') throw new CkptError('ERR_CKPT_CONFIG', `config ${path}: expected an object`);
  const o = raw as Record<string, unknown>;
  const plugins = o.plugins ?? [];
  if (!Array.isArray(plugins) || !plugins.every((p) => typeof p === 'string' || (Array.isArray(p) && typeof p[0] === 'string'))) {
    throw new CkptError('ERR_CKPT_CONFIG', `config ${path}: "plugins" must be a list of names or [name, options] pairs`);
  }
  return {
    plugins: plugins as PluginSpec[],
    builtins: o.builtins !== false,
    options: { ...((o.options as Record<string, unknown>) ?? {}), ...(o.files ? { '@ckpt/plugin-files': o.files } : {}) },
    baseDir: dirname(path),
    file: path,
  };
}

/** Loads one plugin module (package name or path) and instantiates it with options. */
export async function loadPlugin(spec: PluginSpec, baseDir: string): Promise<CkptPlugin> {
  const [name, options] = typeof spec === 'string' ? [spec, undefined] : spec;
  let url: string;
  if (name.startsWith('.') || isAbsolute(name)) {
    url = pathToFileURL(resolve(baseDir, name)).href;
  } else {
    try {
      url = pathToFileURL(createRequire(resolve(baseDir, 'noop.js')).resolve(name)).href;
    } catch {
      url = name; // let import() resolve it (ESM-only packages)
    }
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    throw new CkptError('ERR_CKPT_CONFIG', `cannot load plugin ${name}: ${(e as Error).message}`, { cause: e });
  }
  const exp = (mod.default ?? mod.plugin) as unknown;
  const plugin = typeof exp === 'function' ? (exp as (o: unknown) => CkptPlugin)(options) : (exp as CkptPlugin);
  if (!plugin || typeof plugin.apply !== 'function' || typeof plugin.name !== 'string') {
    throw new CkptError('ERR_CKPT_CONFIG', `plugin ${name} does not export a plugin ({ name, apply }) or a factory returning one`);
  }
  return plugin;
}
