/** Programmatic entry: a Ckpt instance with the built-in plugins plus configured ones. */
import { Ckpt, loadConfig, loadPlugin, type CkptPlugin, type PluginSpec } from '@ckpt/core';
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
import { fileLocksPlugin } from '@ckpt/plugin-file-locks';

export function builtinPlugins(): CkptPlugin[] {
  return [pidsPlugin(), memoryPlugin(), ttyPlugin(), fileContentPlugin(), unixSocketPlugin(), tcpPlugin(), filesPlugin(), eventFdsPlugin(), fileLocksPlugin(), sysvIpcPlugin(), registersPlugin()];
}

export interface CreateOptions {
  /** Config file (default: ckpt.config.json / ckpt.config.mjs in cwd, if present). */
  config?: string;
  /** Extra plugins (module names or paths), after the config's. */
  plugins?: PluginSpec[];
  cwd?: string;
}

/** Builds a Ckpt: user plugins first (so their fd handlers are asked first), then built-ins. */
export async function createCkpt(opts: CreateOptions = {}): Promise<Ckpt> {
  const cwd = opts.cwd ?? process.cwd();
  const config = await loadConfig(opts.config, cwd);
  const user: CkptPlugin[] = [];
  for (const spec of config.plugins) user.push(await loadPlugin(spec, config.baseDir));
  for (const spec of opts.plugins ?? []) user.push(await loadPlugin(spec, cwd));
  return new Ckpt([...user, ...(config.builtins ? builtinPlugins() : [])], config);
}

export { Ckpt };
