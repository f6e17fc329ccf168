/**
 * The repair guard: a small helper process (native's ckpt-repairguard) that holds a copy of each
 * connection while the dump has it in repair mode, and takes it out of repair mode if this ckpt
 * dies before doing so itself. Without it a ckpt killed while it reads a connection would leave
 * the process with a socket that no longer sends. One helper per dump, started at the first
 * connection; it exits when its channel closes (the dump ends, or ckpt dies).
 */
import { closeSync, openSync } from 'node:fs';
import { native, repairGuardPath, SOCK_SEQPACKET } from '@ckpt/native';

export class RepairGuard {
  private readonly channel: number;
  private readonly pid: number;
  private next = 1;

  constructor() {
    const [mine, theirs] = native.sock.unixSocketpair(SOCK_SEQPACKET);
    const devnull = openSync('/dev/null', 'r+');
    try {
      this.pid = native.proc.spawnDetached(repairGuardPath, ['ckpt-repairguard'], [], null, [theirs, devnull, devnull]);
    } catch (e) {
      closeSync(mine);
      throw e;
    } finally {
      closeSync(theirs);
      closeSync(devnull);
    }
    this.channel = mine;
  }

  /** Before repair mode goes on: the helper holds the socket (reuse: SO_REUSEADDR to put back, -1 to leave it). */
  hold(fd: number, reuse: number): number {
    const id = this.next++;
    const m = Buffer.alloc(9);
    m.write('R', 0, 'latin1');
    m.writeInt32LE(id, 1);
    m.writeInt32LE(reuse, 5);
    native.sock.unixSend(this.channel, m, null, [fd]);
    return id;
  }

  /** Once repair mode is off again: the helper lets go of the socket. */
  release(id: number): void {
    const m = Buffer.alloc(5);
    m.write('D', 0, 'latin1');
    m.writeInt32LE(id, 1);
    native.sock.unixSend(this.channel, m);
  }

  /** Ends the helper (it holds nothing by then) and reaps it. */
  close(): void {
    closeSync(this.channel);
    for (let i = 0; i < 200 && !native.proc.tryWait(this.pid); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
  }
}
