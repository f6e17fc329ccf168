/**
 * The grouped facade over the addon: `native.ptrace.seize(pid)`, `native.mem.readMem(...)`...
 * (groups in ./groups.ts). Every function rethrows the addon's errno errors as NativeError.
 *
 * Threading rule: ptrace requests are only valid from the thread that attached. All functions
 * here are synchronous and must be called from the JS main thread, which is the tracer.
 */
import type { NativeFacade } from './binding.js';
import { NativeError } from './errors.js';
import { GROUPS } from './groups.js';
import { packageRoot, raw } from './load.js';

type RawError = { message: string; errno?: number; code?: string; syscall?: string; pid?: number };

/** One binding function, with native errors turned into NativeError instances. */
function wrap(fn: (...a: unknown[]) => unknown): (...a: unknown[]) => unknown {
  return (...args: unknown[]) => {
    try {
      return fn(...args);
    } catch (e) {
      const err = e as RawError;
      if (err && typeof err === 'object' && 'errno' in err) throw new NativeError(err);
      throw e;
    }
  };
}

function build(): NativeFacade {
  const table = raw as unknown as Record<string, unknown>;
  const missing: string[] = [];
  const out: Record<string, Record<string, unknown>> = {};
  for (const [group, names] of Object.entries(GROUPS)) {
    const g: Record<string, unknown> = {};
    for (const name of names) {
      const fn = table[name];
      if (typeof fn === 'function') g[name] = wrap(fn as (...a: unknown[]) => unknown);
      else missing.push(name);
    }
    out[group] = Object.freeze(g);
  }
  if (missing.length) {
    throw new Error(`ckpt native engine is older than its facade (no ${missing.join(', ')}): rebuild it, \`npm run build\` in ${packageRoot}.`);
  }
  return Object.freeze(out) as unknown as NativeFacade;
}

export const native: NativeFacade = build();
