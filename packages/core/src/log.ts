/** Logging: `debug` namespaces ckpt:<area>. Enable with DEBUG=ckpt:* (or ckpt:hooks, ...). */
import createDebug from 'debug';

export type Logger = createDebug.Debugger;

export function logger(area: string): Logger {
  return createDebug(`ckpt:${area}`);
}
