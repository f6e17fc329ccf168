/** Logging: `debug` namespaces ckpt:<area>. Enable with DEBUG=ckpt:* (or ckpt:hooks, ...). */
import { appendFileSync } from 'node:fs';
import { format } from 'node:util';
import createDebug from 'debug';

export type Logger = createDebug.Debugger;

/**
 * A logger for ckpt:<area>. Made lazily: `debug` builds an instance on its first use, for a
 * namespace that is on; until then a call only asks whether the namespace is on (cached until the
 * enabled namespaces change). Dozens of loggers are made at every start, and each debug instance
 * costs its color and a look at whether stderr is a terminal, which makes Node open process.stderr:
 * 1.5-2 ms of every command, for logs that are off unless asked for.
 */
export function logger(area: string): Logger {
  const namespace = `ckpt:${area}`;
  let real: Logger | undefined;
  let override: boolean | undefined;
  let seen: unknown;
  let on = false;
  const instance = () => {
    if (!real) {
      real = createDebug(namespace);
      if (override !== undefined) real.enabled = override;
    }
    return real;
  };
  const enabled = () => {
    if (real) return real.enabled;
    if (override !== undefined) return override;
    const current = (createDebug as unknown as { namespaces?: unknown }).namespaces;
    if (current !== seen) [seen, on] = [current, createDebug.enabled(namespace)];
    return on;
  };
  const log = ((...args: [unknown, ...unknown[]]) => {
    if (enabled()) instance()(...args);
  }) as Logger;
  Object.defineProperty(log, 'enabled', {
    enumerable: true,
    get: enabled,
    set: (v: boolean) => {
      override = v;
      if (real) real.enabled = v;
    },
  });
  Object.defineProperty(log, 'namespace', { enumerable: true, value: namespace });
  // The rest of a debug instance, from the instance.
  for (const key of ['color', 'diff', 'log', 'extend', 'destroy'] as const) {
    Object.defineProperty(log, key, {
      enumerable: true,
      get: () => instance()[key],
      set: (v: unknown) => {
        (instance() as unknown as Record<string, unknown>)[key] = v;
      },
    });
  }
  return log;
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
