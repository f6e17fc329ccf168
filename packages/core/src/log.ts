/** Logging: `debug` namespaces ckpt:<area>. Enable with DEBUG=ckpt:* (or ckpt:hooks, ...). */
import { appendFileSync } from 'node:fs';
import { format } from 'node:util';
import createDebug from 'debug';

export type Logger = createDebug.Debugger;

export function logger(area: string): Logger {
  return createDebug(`ckpt:${area}`);
}

/**
 * Turns logging on at run time (the CLI's -v), for loggers made before and after: `debug` reads
 * DEBUG only when it is first loaded. With a file, every line goes there (appended, 0600) instead
 * of stderr.
 */
export function enableLogging(namespaces = 'ckpt:*', file?: string): void {
  if (file) {
    createDebug.log = (...args: unknown[]) => appendFileSync(file, format(...(args as [unknown, ...unknown[]])) + '\n', { mode: 0o600 });
    createDebug.inspectOpts = { ...createDebug.inspectOpts, colors: false };
  }
  createDebug.enable(namespaces);
}
