/**
 * The socket guard: a small helper process (native's ckpt-repairguard) that holds a copy of each
 * socket a dump changes for a moment, and undoes the change if this ckpt dies before doing so
 * itself: a TCP connection read in repair mode leaves repair mode (without it, a ckpt killed
 * meanwhile would leave the process with a connection that no longer sends), a socket option set
 * for the moment (SO_PEEK_OFF while a receive queue is peeked) is put back. One helper per dump,
 * started at first use (socketGuard(session)); it exits when its channel closes (the dump ends, or
 * ckpt dies).
 */
import { closeSync } from 'node:fs';
import { native, repairGuardPath } from '@ckpt/native';
import type { DumpSession } from './context.js';
import { createSessionState } from './state.js';
import { reapWithin, spawnHelper } from './helpers.js';

export class SocketGuard {
  private readonly channel: number;
  private readonly pid: number;
  private next = 1;

  constructor() {
    ({ pid: this.pid, channel: this.channel } = spawnHelper(repairGuardPath, 'ckpt-repairguard'));
  }

  /** Before repair mode goes on: the helper holds the socket (reuse: SO_REUSEADDR to put back, -1 to leave it). */
  holdRepair(fd: number, reuse: number): number {
    return this.send('R', fd, [reuse]);
  }

  /** Before an int option of a socket is changed for a moment: the helper puts `value` back if ckpt dies. */
  holdOption(fd: number, level: number, name: number, value: number): number {
    return this.send('S', fd, [level, name, value]);
  }

  private send(kind: string, fd: number, ints: number[]): number {
    const id = this.next++;
    const m = Buffer.alloc(5 + 4 * ints.length);
    m.write(kind, 0, 'latin1');
    m.writeInt32LE(id, 1);
    ints.forEach((v, i) => m.writeInt32LE(v, 5 + 4 * i));
    native.sock.unixSend(this.channel, m, null, [fd]);
    return id;
  }

  /** Once the change is undone (repair mode off, the option back): the helper lets go of the socket. */
  release(id: number): void {
    const m = Buffer.alloc(5);
    m.write('D', 0, 'latin1');
    m.writeInt32LE(id, 1);
    native.sock.unixSend(this.channel, m);
  }

  /** Ends the helper (it holds nothing by then) and reaps it. */
  close(): void {
    closeSync(this.channel);
    reapWithin(this.pid, 200);
  }
}

const guards = createSessionState('core:socket-guard', (_s: DumpSession) => ({ guard: undefined as SocketGuard | undefined }), {
  dispose: (st) => st.guard?.close(),
});

/** The dump's socket guard, started at first use and ended with the dump. */
export function socketGuard(session: DumpSession): SocketGuard {
  const st = guards.of(session);
  st.guard ??= new SocketGuard();
  return st.guard;
}
