/** State shared by dump and restore: the run's options, and who holds a socket (for messages). */
import { readdirSync, readlinkSync } from 'node:fs';
import { createSessionState, type DumpSession, type RestoreSession } from '@ckpt/core';
import type { UnixSocketOptions } from './record.js';

/** The options of the session, bound at beforeDump / beforeRestore. */
export const sessionOptions = createSessionState('unix:options', (_s: DumpSession | RestoreSession): UnixSocketOptions => ({}));

/** Every process holding socket inode `ino` (for messages about peers outside the tree). */
export function holdersOf(ino: number): string {
  const want = `socket:[${ino}]`;
  const out: string[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const f of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${f}`) === want) {
          let comm = '';
          try {
            comm = readlinkSync(`/proc/${p}/exe`).split('/').pop() ?? '';
          } catch {
            /* gone */
          }
          out.push(`pid ${p}${comm ? ` (${comm})` : ''} fd ${f}`);
          break;
        }
      } catch {
        /* closed meanwhile */
      }
    }
    if (out.length >= 3) break;
  }
  return out.join(', ');
}
