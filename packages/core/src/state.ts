/**
 * Typed per-session plugin state. A plugin declares a key once, at module level:
 *
 *   const pipes = createSessionState('pipes', (session: RestoreSession) => new Map<string, number>(),
 *     { dispose: (m) => closeAll(m) });
 *
 * and reads `pipes.of(session)` in its hooks: the value is made on first use, belongs to that
 * session only, and is dropped (dispose called) when the session ends, whether it succeeded or
 * failed. Nothing is keyed by strings, nothing outlives the session.
 */
import { logger } from './log.js';

const log = logger('state');

export interface SessionStateKey<S, T> {
  readonly name: string;
  /** The session's value, made on first use. */
  of(session: S & { readonly state: SessionStateStore }): T;
  /** The session's value if it was made, else undefined. */
  peek(session: S & { readonly state: SessionStateStore }): T | undefined;
}

export function createSessionState<S, T>(
  name: string,
  init: (session: S) => T,
  opts: { dispose?: (value: T, session: S) => void } = {},
): SessionStateKey<S, T> {
  const key: SessionStateKey<S, T> = {
    name,
    of(session) {
      const store = session.state as unknown as StoreInternals;
      if (!store.values.has(key)) {
        store.values.set(key, init(session));
        if (opts.dispose) store.disposers.push(() => opts.dispose!(store.values.get(key) as T, session));
      }
      return store.values.get(key) as T;
    },
    peek(session) {
      return (session.state as unknown as StoreInternals).values.get(key) as T | undefined;
    },
  };
  return key;
}

interface StoreInternals {
  values: Map<unknown, unknown>;
  disposers: Array<() => void>;
}

/** The per-session store core creates with each session and disposes at its end. */
export class SessionStateStore {
  private readonly values = new Map<unknown, unknown>();
  private readonly disposers: Array<() => void> = [];

  /** Drops every value, newest first; a failing dispose is logged, never thrown. */
  dispose(): void {
    for (const d of this.disposers.splice(0).reverse()) {
      try {
        d();
      } catch (e) {
        log('dispose failed: %s', (e as Error).message);
      }
    }
    this.values.clear();
  }
}
