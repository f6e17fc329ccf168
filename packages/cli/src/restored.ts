/** What `ckpt restore` and `ckpt receive` do with processes just restored: an application is registered again. */
import type { RestoreResult } from '@ckpt/core';
import { registerApp, type AppEntry } from '@ckpt/api';

export interface Restored {
  /** The pid users know: for an application, ckpt-init's child; else the root. */
  main: number;
  /** Every pid, the main one first (for an application, ckpt-init last). */
  ordered: number[];
  /** The application it was registered again as. */
  app?: AppEntry;
}

/**
 * An application comes back in a fresh pid namespace: it is registered again, under its id,
 * with its main process (the child of ckpt-init).
 */
export function registerRestored(r: RestoreResult): Restored {
  let main = r.pids[0];
  let app: AppEntry | undefined;
  if (r.app && r.nsPids) {
    main = r.pids[r.nsPids.indexOf(2)] ?? main;
    app = registerApp({ id: r.app, init: r.pids[0], pid: main, command: [] });
  }
  return { main, ordered: [main, ...r.pids.filter((p) => p !== main)], app };
}
