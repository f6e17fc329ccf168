/**
 * Plugins: `{ name, version?, apply(hooks, ctx) }` (webpack's shape). A plugin factory validates
 * its options when called and returns the plugin; `apply` taps hooks and nothing else.
 */
import type { Hooks } from './hooks.js';
import type { Logger } from './log.js';
import { logger } from './log.js';
import { PluginError } from './errors.js';

export interface PluginContext {
  /** Logger under ckpt:plugin:<name>. */
  readonly log: Logger;
}

export interface CkptPlugin {
  readonly name: string;
  readonly version?: string;
  apply(hooks: Hooks, ctx: PluginContext): void;
}

/** Declares a plugin factory with typed options (validated by the factory itself). */
export function definePlugin<O = void>(factory: (options: O) => CkptPlugin): (options: O) => CkptPlugin {
  return factory;
}

type AnyHook = {
  intercept(i: { register?: (tap: { name: string; fn: (...a: unknown[]) => unknown; type: string }) => unknown }): void;
};

/**
 * Wraps every tap so that its time is logged under ckpt:hooks and its errors name the plugin
 * and the hook.
 */
export function instrumentHooks(hooks: Hooks): void {
  const log = logger('hooks');
  const visit = (obj: Record<string, unknown>, path: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const name = path ? `${path}.${k}` : k;
      if (v && typeof (v as AnyHook).intercept === 'function') {
        (v as AnyHook).intercept({
          register(tap) {
            const fn = tap.fn;
            if (tap.type !== 'promise' && tap.type !== 'async') return tap;
            return {
              ...tap,
              fn: async (...args: unknown[]) => {
                const t0 = performance.now();
                try {
                  return await (fn as (...a: unknown[]) => Promise<unknown>)(...args);
                } catch (e) {
                  if (e instanceof PluginError) throw e;
                  throw new PluginError(tap.name, name, e);
                } finally {
                  log('%s [%s] %sms', name, tap.name, (performance.now() - t0).toFixed(2));
                }
              },
            };
          },
        });
      } else if (v && typeof v === 'object') {
        visit(v as Record<string, unknown>, name);
      }
    }
  };
  visit(hooks as unknown as Record<string, unknown>, '');
}

export function pluginContext(plugin: CkptPlugin): PluginContext {
  return { log: logger(`plugin:${plugin.name.replace(/^@ckpt\/plugin-/, '')}`) };
}
