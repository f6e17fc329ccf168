/**
 * Plugins: plain typed objects, `{ name, version, apply(hooks, ctx) }` (webpack's shape), that
 * also declare what they are about, so core and the CLI can use them without knowing them:
 *
 * - `options`: a schema (zod, valibot: any Standard Schema) for the plugin's options; core
 *   validates the configured options when the Ckpt is built and each run's options when a
 *   session starts, and hands the result to the plugin as `ctx.options(session)`.
 * - `flags`: CLI flags of `ckpt dump` / `ckpt restore` that set those options.
 * - `record`: the version of the plugin's record format, and schemas of its per-process record
 *   and of the data of the fds it owns; core validates every one read back before any hook sees it.
 * - `claims`: what it handles, shown by `ckpt plugins`.
 * - `show`: how `ckpt show` describes its records.
 */
import { TAP_CALL, type Hooks, type StateClass, type TapCall } from './hooks.js';
import type { Logger } from './log.js';
import { logger } from './log.js';
import { CkptError, PluginError } from './errors.js';
import type { DumpSession, FdRecord, ProcessDump, RestoreSession } from './context.js';
import type { ImageReader, ProcessRecord } from './image.js';
import { validate, type StandardSchemaV1 } from './schema.js';
import type { ServiceToken } from './services.js';

export interface PluginFlag {
  /** Which command takes it. */
  command: 'dump' | 'restore';
  /** commander syntax: '--tcp-close', '--external <spec...>'. */
  flags: string;
  description: string;
  /** The option of the plugin it sets. */
  option: string;
  /** Repeatable (each use, and each whitespace-separated word, adds to a list). */
  list?: boolean;
}

export interface PluginClaims {
  /** State classes it saves (its taps of <class>.dump/restore). */
  stateClasses?: StateClass[];
  /** fd kinds it claims through fds.dump. */
  fdKinds?: string[];
}

/** A row of `ckpt show`'s socket table. */
export interface SocketRow {
  family: string;
  type: string;
  state: string;
  holders: string[];
  local: string;
  remote: string;
  recvQ: number;
  recvMessages: number;
  sendQ: number;
  note?: string;
}

/** How `ckpt show` describes a plugin's records (every function is optional). */
export interface PluginShow {
  /** The name of an open file it owns, for `ckpt show --files` (default: data.path, or its kind). */
  fdName?(record: FdRecord, pid: number): string | undefined;
  /** Socket rows for the fds it owns, over the whole image. */
  sockets?(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>): SocketRow[];
  /** Lines about one process (indented under it in the text output); `record` is the plugin's own. */
  process?(record: unknown, proc: ProcessRecord): string[];
  /** An image-wide section (e.g. SysV IPC objects): its JSON key, title line and rows. */
  image?(image: ImageReader, procs: readonly ProcessRecord[]): { key: string; json: unknown; lines: string[] } | undefined;
}

export interface PluginRecord {
  /** Version of the record format; bump it when a change would mislead an older reader. */
  readonly version: number;
  /** Schema of the per-process record (proc.put(name, record)). */
  readonly schema?: StandardSchemaV1;
  /** Schema of the `data` of every fd record this plugin owns. */
  readonly fd?: StandardSchemaV1;
}

export interface CkptPlugin<O = unknown> {
  readonly name: string;
  readonly version?: string;
  readonly description?: string;
  readonly options?: StandardSchemaV1<unknown, O>;
  readonly flags?: readonly PluginFlag[];
  readonly record?: PluginRecord;
  readonly claims?: PluginClaims;
  readonly show?: PluginShow;
  apply(hooks: Hooks, ctx: PluginContext<O>): void;
}

export interface PluginContext<O = unknown> {
  readonly name: string;
  /** Logger under ckpt:plugin:<short name>. */
  readonly log: Logger;
  /** This plugin's options for the session: configured ones, overridden by the run's, validated. */
  options(session: DumpSession | RestoreSession): O;
  /** Replaces a core service (process control, image store, network lock, logger) for every session. */
  provide<T>(token: ServiceToken<T>, value: T): void;
}

/**
 * Declares a plugin. A factory (`definePlugin((opts) => ({...}))`) for plugins built with
 * arguments, or an object; either way the result is the plugin itself.
 */
export function definePlugin<O = unknown, A extends unknown[] = []>(factory: (...args: A) => CkptPlugin<O>): (...args: A) => CkptPlugin<O> {
  return factory;
}

/** Validates options against a plugin's schema: one error naming the plugin and the key. */
export function checkOptions<O>(plugin: CkptPlugin<O>, value: unknown, where: string): O {
  if (!plugin.options) {
    if (value !== undefined && !(typeof value === 'object' && value !== null && Object.keys(value).length === 0)) {
      throw new CkptError('ERR_CKPT_CONFIG', `${where}: plugin ${plugin.name} takes no options`);
    }
    return undefined as O;
  }
  const r = validate(plugin.options, value ?? {});
  if (!r.ok) {
    const option = r.path.split(/[.[]/)[0];
    const flag = plugin.flags?.find((f) => f.option === option);
    throw new CkptError('ERR_CKPT_CONFIG', `${where}: option ${r.path ? `"${r.path}" ` : ''}of plugin ${plugin.name}: ${r.message}`, {
      hint: flag ? `ckpt ${flag.command} takes it as ${flag.flags}` : undefined,
    });
  }
  return r.value;
}

type AnyHook = {
  intercept(i: { register?: (tap: { name: string; fn: (...a: unknown[]) => unknown; type: string }) => unknown }): void;
};

/**
 * Wraps every tap so that its time is logged under ckpt:hooks and its errors name the plugin
 * and the hook. Claims of `fds.dump` are stamped with the claiming tap's name (their owner).
 */
export function instrumentHooks(hooks: Hooks): void {
  const log = logger('hooks');
  const wrapTap = (hook: AnyHook, name: string) => {
    hook.intercept({
      register(tap) {
        const fn = tap.fn;
        if (tap.type !== 'promise' && tap.type !== 'async') return tap;
        const when = (tap as { when?: (...a: unknown[]) => boolean }).when;
        const call: TapCall = {
          fn,
          // An fds.dump claim says which plugin made it.
          result: (out) => (name === 'fds.dump' && out && typeof out === 'object' ? { ...(out as object), owner: tap.name } : out),
          failure: (e) => (e instanceof PluginError ? e : new PluginError(tap.name, name, e)),
          get timed() {
            return log.enabled;
          },
        };
        return {
          ...tap,
          // series() calls a promise tap's `call` itself, unless timed; this is for the rest (an
          // async tap, tapable's own compile).
          ...(tap.type === 'promise' ? { [TAP_CALL]: call } : {}),
          fn: async (...args: unknown[]) => {
            // Where tapable's own compile runs the taps (series() skips such a tap itself).
            if (when && !when(...args)) return undefined;
            // Timed only when logged: a hook such as fds.dump runs once per fd.
            const t0 = log.enabled ? performance.now() : undefined;
            try {
              return call.result(await fn(...args));
            } catch (e) {
              throw call.failure(e);
            } finally {
              if (t0 !== undefined) log('%s [%s] %sms', name, tap.name, (performance.now() - t0).toFixed(2));
            }
          },
        };
      },
    });
  };
  const visit = (obj: Record<string, unknown>, path: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const name = path ? `${path}.${k}` : k;
      if (v && typeof (v as AnyHook).intercept === 'function') {
        // A HookMap: intercept every hook it makes (tapable's HookMap.intercept({ factory })).
        if (typeof (v as { for?: unknown }).for === 'function') {
          (v as unknown as { intercept(i: { factory: (key: unknown, hook: unknown) => unknown }): void }).intercept({
            factory: (key, hook) => {
              wrapTap(hook as AnyHook, `${name}[${String(key)}]`);
              return hook;
            },
          });
        } else {
          wrapTap(v as AnyHook, name);
        }
      } else if (v && typeof v === 'object') {
        visit(v as Record<string, unknown>, name);
      }
    }
  };
  visit(hooks as unknown as Record<string, unknown>, '');
}

export function pluginLogger(plugin: { name: string }): Logger {
  return logger(`plugin:${plugin.name.replace(/^@ckpt\/plugin-/, '').replace(/^@/, '')}`);
}

/** The process-records of a dump, for plugins that read the fd table of every process. */
export type ProcessFds = Pick<ProcessDump, 'pid' | 'fds'>;
