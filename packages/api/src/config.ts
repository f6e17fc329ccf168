/**
 * The config loader. A config is found by searching upward from the working directory (like
 * eslint, prettier, babel: a project's config applies in its subdirectories) for, in each
 * directory in this order:
 *
 *   ckpt.config.json, ckpt.config.mjs, ckpt.config.js, ckpt.config.cjs, .ckptrc.json,
 *   and the "ckpt" key of package.json
 *
 * or given with --config FILE. It lists plugins in order, each a package name or a path, with
 * options, and options for any plugin by name:
 *
 *   { "plugins": ["@acme/ckpt-plugin-gpu", ["./my-plugin.mjs", { "verbose": true }]],
 *     "disable": ["@ckpt/plugin-tty"],
 *     "options": { "@ckpt/plugin-files": { "rules": [] } } }
 *
 * The file is validated strictly (see schema.ts): an unknown or misspelled key and a wrong type
 * are errors naming the key and the file, because a silently ignored key is a setting the user
 * believes in and does not have. Plugin options are only gathered here; each plugin's own schema
 * checks them when the Ckpt is built.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { importUserModule } from './userImport.js';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { z } from 'zod';
import { CkptError } from '@ckpt/core';
import { BUILTIN_PLUGIN_NAMES, configKeys, configSchema } from './schema.js';

/** A plugin to load: a package name or a path, or such a name with the options for its factory. */
export type PluginSpec = string | [string, unknown];

export interface CkptConfig {
  /** User plugins in order, each with its options (from its pair and from options[name], merged). */
  plugins: PluginSpec[];
  /** Load the built-in plugins. */
  builtins: boolean;
  /** Built-in plugins left out. */
  disable: string[];
  /** Options by plugin name: the built-ins' and the user plugins' (as named in "plugins"). */
  options: Record<string, unknown>;
  /** Where the config came from (plugin paths and packages resolve from there). */
  baseDir: string;
  /** The config file, when there is one. */
  file?: string;
}

/** The files searched for in each directory, in order ("package.json" means its "ckpt" key). */
export const CONFIG_FILES = ['ckpt.config.json', 'ckpt.config.mjs', 'ckpt.config.js', 'ckpt.config.cjs', '.ckptrc.json', 'package.json'];

/** The plugin whose options the top-level "files" key holds (kept from the first config format). */
const FILES_PLUGIN = '@ckpt/plugin-files';

export interface LoadConfigOptions {
  /**
   * The last directory searched (default: the user's home directory when cwd is under it, so
   * that a stray config above $HOME is not picked up; else the root).
   */
  stopDir?: string;
}

function configError(message: string, cause?: unknown): CkptError {
  return new CkptError('ERR_CKPT_CONFIG', message, cause === undefined ? {} : { cause });
}

/** The first line of an error: configs are reported on one line. */
function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0];
}

/** Reads a config file's content into its raw value. */
type Loader = (file: string, content: string) => unknown;

const jsonLoader: Loader = (file, content) => {
  try {
    return JSON.parse(content.replace(/^\uFEFF/, '')) as unknown;
  } catch (e) {
    throw configError(`cannot read config ${file}: invalid JSON: ${firstLine(e)}`, e);
  }
};

/**
 * .mjs/.js/.cjs: import() for all three (Node's own loader decides ESM or CommonJS; for CommonJS
 * module.exports is the default export). A config module exports the config as its default.
 */
const moduleLoader = async (file: string): Promise<unknown> => {
  let mod: { default?: unknown };
  try {
    mod = (await importUserModule(pathToFileURL(file).href)) as { default?: unknown };
  } catch (e) {
    const what = e instanceof SyntaxError ? 'syntax error' : 'error';
    throw configError(`cannot read config ${file}: ${what}: ${firstLine(e)}`, e);
  }
  return mod.default;
};

/** Damerau-Levenshtein (optimal string alignment) distance: a swapped pair of letters is one typo. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The known word closest to a misspelled one, if it is close enough to be a typo of it. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dist = editDistance(word.toLowerCase(), k.toLowerCase());
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

/** A key path as a reader finds it in the file: plugins[1], options["@ckpt/plugin-tty"], quoted when plain. */
function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(String(seg))) out += out ? `.${String(seg)}` : String(seg);
    else out += out ? `[${JSON.stringify(String(seg))}]` : JSON.stringify(String(seg));
  }
  return out.includes('"') ? out : `"${out}"`;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const seg of path) v = v && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[seg] : undefined;
  return v;
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return typeof v === 'string' ? `a string (${JSON.stringify(v)})` : `${typeof v === 'undefined' ? 'nothing' : `a ${typeof v}`}`;
}

const EXPECTED: Record<string, string> = {
  record: 'an object',
  object: 'an object',
  array: 'a list',
  tuple: 'a [name, options] pair',
  string: 'a string',
  boolean: 'true or false',
  number: 'a number',
};

/** One zod issue as a sentence naming the key path (prefix: "ckpt" for package.json's key). */
function describeIssue(issue: z.core.$ZodIssue, raw: unknown, prefix: readonly string[]): string {
  const at = (path: readonly PropertyKey[]) => keyPath([...prefix, ...path]);
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys
        .map((k) => {
          const known = issue.path.length === 0 ? configKeys() : [];
          const near = closest(k, known);
          const hint = near ? `did you mean "${near}"?` : known.length ? `the keys are ${known.join(', ')}` : '';
          return `${at([...issue.path, k])} is not a known key${hint ? ` (${hint})` : ''}`;
        })
        .join('; ');
    case 'invalid_union':
      // The only union is a plugin spec.
      return `${at(issue.path)} must be a package name or path, or a [name, options] pair with an options object (got ${kindOf(valueAt(raw, issue.path))})`;
    case 'invalid_value': {
      const v = valueAt(raw, issue.path);
      if (issue.path[0] === 'disable') {
        return `${at(issue.path)}: ${JSON.stringify(v)} is not a built-in plugin (the built-ins: ${BUILTIN_PLUGIN_NAMES.join(', ')})`;
      }
      return `${at(issue.path)} must be one of ${issue.values.map((x) => JSON.stringify(x)).join(', ')} (got ${kindOf(v)})`;
    }
    case 'invalid_type':
      return `${at(issue.path)} must be ${EXPECTED[issue.expected] ?? issue.expected} (got ${kindOf(valueAt(raw, issue.path))})`;
    case 'too_small':
      return `${at(issue.path)} must not be empty`;
    default:
      return `${at(issue.path)}: ${issue.message}`;
  }
}

/** Validates a raw config: the CkptError names the file and each bad key, on one line. */
export function parseConfig(raw: unknown, file: string): z.output<typeof configSchema> {
  const inPackageJson = basename(file) === 'package.json';
  const where = `config ${file}${inPackageJson ? ' (key "ckpt")' : ''}`;
  if (raw === undefined || raw === null) raw = {}; // an empty file: no settings
  if (typeof raw !== 'object' || Array.isArray(raw)) throw configError(`${where}: expected an object, got ${kindOf(raw)}`);
  const r = configSchema.safeParse(raw);
  if (r.success) return r.data;
  // A misspelled key first: it is usually the cause of the rest (e.g. a missing default).
  const issues = [...r.error.issues].sort((a, b) => Number(b.code === 'unrecognized_keys') - Number(a.code === 'unrecognized_keys'));
  const shown = issues.slice(0, 3).map((i) => describeIssue(i, raw, inPackageJson ? ['ckpt'] : []));
  const more = issues.length > shown.length ? `; and ${issues.length - shown.length} more` : '';
  throw configError(`${where}: ${shown.join('; ')}${more}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

/**
 * The options of a plugin spec: those of options[name] overridden key by key by those of its
 * [name, options] pair (the pair is the more specific place).
 */
export function mergePluginOptions(spec: PluginSpec, options: Record<string, unknown>): PluginSpec {
  const [name, own] = typeof spec === 'string' ? [spec, undefined] : spec;
  const shared = options[name];
  if (shared === undefined) return own === undefined ? name : [name, own];
  if (own === undefined) return [name, shared];
  return [name, isObject(shared) && isObject(own) ? { ...shared, ...own } : own];
}

/** The config when there is no config file. */
function defaults(cwd: string): CkptConfig {
  return { plugins: [], builtins: true, disable: [], options: {}, baseDir: cwd };
}

/** package.json's "ckpt" key, or null when it has none (a falsy one is none). */
function packageConfig(file: string, content: string): unknown {
  const pkg = jsonLoader(file, content);
  return (pkg && typeof pkg === 'object' && (pkg as Record<string, unknown>).ckpt) || null;
}

/**
 * A config file's raw value: package.json's "ckpt" key (null without one); undefined for an
 * empty file (a config with no settings); else the file read by its extension.
 */
async function readConfigFile(path: string): Promise<unknown> {
  const content = readFileSync(path, 'utf8');
  if (basename(path) === 'package.json') return packageConfig(path, content);
  if (content.trim() === '') return undefined;
  const ext = extname(path);
  if (ext === '' || ext === '.json') return jsonLoader(path, content);
  if (ext === '.mjs' || ext === '.js' || ext === '.cjs') return moduleLoader(path);
  throw configError(`config ${path}: a config is JSON (.json, or no extension) or a module (.mjs, .js, .cjs), not ${ext}`);
}

/**
 * The nearest config from dir up: in each directory the first of CONFIG_FILES there (a
 * package.json only with a "ckpt" key), up to stopDir if dir is under it, else to the root.
 * One synchronous readdir per directory (a module config is still imported): this runs at the
 * start of every command.
 */
async function searchConfig(dir: string, stopDir: string): Promise<{ filepath: string; config: unknown } | null> {
  for (;;) {
    let names: Set<string> | undefined;
    try {
      names = new Set(readdirSync(dir));
    } catch {
      // A directory that can be searched but not listed: each name is looked up.
    }
    for (const name of CONFIG_FILES) {
      const path = join(dir, name);
      // existsSync also where it is listed: a dangling symlink is no config.
      if ((names && !names.has(name)) || !existsSync(path)) continue;
      const config = await readConfigFile(path);
      if (name === 'package.json' && config === null) continue;
      return { filepath: path, config };
    }
    const parent = dirname(dir);
    if (dir === stopDir || parent === dir) return null;
    dir = parent;
  }
}

/**
 * Loads the config: `file` (relative to cwd) if given, else the nearest one found from cwd up.
 * No config at all is not an error: built-ins only.
 */
export async function loadConfig(file?: string, cwd = process.cwd(), opts: LoadConfigOptions = {}): Promise<CkptConfig> {
  cwd = resolve(cwd);
  let found: { filepath: string; config: unknown } | null;
  try {
    if (file) {
      const path = resolve(cwd, file);
      if (!existsSync(path)) throw configError(`config file not found: ${path}`);
      if (statSync(path).isDirectory()) throw configError(`config ${path} is a directory (give a file, e.g. ${resolve(path, CONFIG_FILES[0])})`);
      found = { filepath: path, config: await readConfigFile(path) };
    } else {
      found = await searchConfig(cwd, resolve(opts.stopDir ?? homedir()));
    }
  } catch (e) {
    if (e instanceof CkptError) throw e;
    // An unreadable file (EACCES, EISDIR...).
    throw configError(`cannot read config${file ? ` ${resolve(cwd, file)}` : ` (searching from ${cwd})`}: ${firstLine(e)}`, e);
  }
  if (!found) return defaults(cwd);
  const path = found.filepath;
  if (basename(path) === 'package.json' && found.config == null) {
    // Only reachable with an explicit --config package.json that has no "ckpt" key.
    throw configError(`config ${path}: it has no "ckpt" key`);
  }
  const parsed = parseConfig(found.config, path);

  const options: Record<string, unknown> = { ...parsed.options };
  if (parsed.files) options[FILES_PLUGIN] = { ...(options[FILES_PLUGIN] as Record<string, unknown> | undefined), ...parsed.files };
  const plugins = parsed.plugins.map((spec) => mergePluginOptions(spec as PluginSpec, options));
  for (const spec of plugins) if (typeof spec !== 'string') options[spec[0]] = spec[1];
  return { plugins, builtins: parsed.builtins, disable: [...parsed.disable], options, baseDir: dirname(path), file: path };
}
