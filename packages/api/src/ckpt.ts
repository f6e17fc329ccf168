/** A Ckpt instance with the configured plugins and the built-in ones. */
import { resolve } from 'node:path';
import { Ckpt, type CkptPlugin } from '@ckpt/core';
import { memoryPlugin } from '@ckpt/plugin-memory';
import { registersPlugin } from '@ckpt/plugin-registers';
import { filesPlugin } from '@ckpt/plugin-files';
import { pidsPlugin } from '@ckpt/plugin-pids';
import { eventFdsPlugin } from '@ckpt/plugin-event-fds';
import { sysvIpcPlugin } from '@ckpt/plugin-sysv-ipc';
import { ttyPlugin } from '@ckpt/plugin-tty';
import { fileContentPlugin } from '@ckpt/plugin-file-content';
import { unixSocketPlugin } from '@ckpt/plugin-unix-socket';
import { tcpPlugin } from '@ckpt/plugin-tcp';
import { netlinkPlugin } from '@ckpt/plugin-netlink';
import { packetPlugin } from '@ckpt/plugin-packet';
import { tunPlugin } from '@ckpt/plugin-tun';
import { fileLocksPlugin } from '@ckpt/plugin-file-locks';
import { taskPlugin } from '@ckpt/plugin-task';
import { callbacksPlugin } from '@ckpt/plugin-callbacks';
import { loadConfig, mergePluginOptions, type PluginSpec } from './config.js';
import { loadPlugin } from './pluginLoader.js';

/**
 * The built-in plugins, in the order they are applied (BUILTIN_PLUGIN_NAMES in schema.ts lists
 * the same names without loading them, for the config's "disable").
 */
export function builtinPlugins(): CkptPlugin[] {
  return [
    callbacksPlugin(),
    pidsPlugin(),
    memoryPlugin(),
    ttyPlugin(),
    fileContentPlugin(),
    unixSocketPlugin(),
    tcpPlugin(),
    netlinkPlugin(),
    packetPlugin(),
    tunPlugin(),
    filesPlugin(),
    eventFdsPlugin(),
    fileLocksPlugin(),
    taskPlugin(),
    sysvIpcPlugin(),
    registersPlugin(),
  ];
}

export interface CreateOptions {
  /** Config file (default: the nearest ckpt.config.json, ckpt.config.mjs, ... from cwd up). */
  config?: string;
  /** Extra plugins (module names or paths, resolved from cwd), after the config's (`--plugin`). */
  plugins?: PluginSpec[];
  /** Where to search for the config and resolve extra plugins from (default: process.cwd()). */
  cwd?: string;
}

/**
 * Builds a Ckpt: user plugins first (so their fd handlers are asked before the built-ins'), the
 * config's then the caller's, then the built-ins less "disable". Options are handed over by
 * plugin name; core checks them against each plugin's schema.
 */
export async function createCkpt(opts: CreateOptions = {}): Promise<Ckpt> {
  const cwd = resolve(opts.cwd ?? process.cwd());
  const config = await loadConfig(opts.config, cwd);
  const options: Record<string, unknown> = { ...config.options };
  const user: CkptPlugin[] = [];
  const add = async (spec: PluginSpec, baseDir: string) => {
    const withOptions = mergePluginOptions(spec, config.options);
    const plugin = await loadPlugin(withOptions, baseDir);
    user.push(plugin);
    if (typeof withOptions === 'string') return;
    // The options were gathered under the spec (a path, say), and handed to the factory. Core
    // knows the plugin by its name, and checks options against the plugin's schema: a plugin
    // with a schema gets them there too; one without (its factory took them) must not, as core
    // refuses options for a plugin that declares none.
    const [key, given] = withOptions;
    delete options[key];
    if (given === undefined || !(plugin as { options?: unknown }).options) return;
    const own = options[plugin.name];
    options[plugin.name] = own && typeof own === 'object' && given && typeof given === 'object' ? { ...own, ...given } : given;
  };
  for (const spec of config.plugins) await add(spec, config.baseDir);
  for (const spec of opts.plugins ?? []) await add(spec, cwd);
  const disabled = new Set(config.disable);
  const builtins = config.builtins ? builtinPlugins().filter((p) => !disabled.has(p.name)) : [];
  return new Ckpt([...user, ...builtins], { options });
}

export { Ckpt };
