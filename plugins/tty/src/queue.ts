/**
 * Bytes queued in a pty: input the master wrote that the slave has not read (typed ahead), and
 * output the slave wrote that the master has not read. Reading a terminal consumes it, so the
 * dump reads both and puts them back at once (the process is frozen throughout); the restore puts
 * them into the new pty the same way. Both are done by the helper ckpt-ptyqueue
 * (native/src/ptyqueue.c), which finishes a put-back even if ckpt is killed meanwhile.
 *
 * Reading: output through the master (FIONREAD bytes, packet mode off meanwhile);
 * input through a slave of its own (TIOCGPTPEER), non-canonical for the read so that a partial
 * line is readable too.
 * Putting back: with the slave's settings made inert for a moment — no echo, no signals, no
 * input translation, the editing characters (erase, kill, EOF, word erase, literal next, reprint)
 * disabled, no output processing — the input is written to the master and the output to the
 * slave; a poll on the other side makes the kernel process them before the settings come back.
 * Canonical mode is kept, so complete lines stay lines and a partial line stays partial. What the
 * kernel stored for an end of file typed ahead (^D) comes back as a NUL byte.
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { fault, reapWithin } from '@ckpt/core';
import { native, ptyQueuePath } from '@ckpt/native';

const O_CLOEXEC = 0o2000000;
const MFD_CLOEXEC = 1;

export interface Queued {
  /** Typed ahead: what the slave has still to read (base64). */
  input?: string;
  /** What the master has still to read (base64). */
  output?: string;
}

/**
 * The bytes queued in a restored pty (our master `master`, its slave under `termios`) written
 * into it by ckpt-ptyqueue ("put"): the same put-back a dump does (see above).
 */
export function putBack(master: number, termios: Buffer, q: Queued): void {
  if (!q.input && !q.output) return;
  const chunk = (b64?: string) => {
    const b = Buffer.from(b64 ?? '', 'base64');
    const l = Buffer.alloc(4);
    l.writeUInt32LE(b.length);
    return [l, b];
  };
  const bytes = native.fd.memfdCreate('ckpt-ptyqueue', MFD_CLOEXEC);
  try {
    writeSync(bytes, Buffer.concat([...chunk(q.output), ...chunk(q.input)]), 0, undefined, 0);
    const { status } = runPtyQueue(master, termios, false, bytes);
    if (status !== 0) throw new Error(`the bytes queued in the terminal could not be put back (ckpt-ptyqueue status ${status})`);
  } finally {
    closeSync(bytes);
  }
}

/** Runs ckpt-ptyqueue on our master (with `put`: the bytes to put back in memfd `put`): its exit status and answer. */
function runPtyQueue(master: number, termios: Buffer, packet: boolean, put?: number): { status: number | undefined; answer: Buffer } {
  const [r, w] = native.fd.pipe(O_CLOEXEC);
  const devnull = openSync('/dev/null', 'r+');
  let pid: number;
  try {
    const argv = ['ckpt-ptyqueue', termios.toString('hex'), packet ? '1' : '0', ...(put !== undefined ? ['put'] : [])];
    pid = native.proc.spawnDetached(ptyQueuePath, argv, [], null, [master, w, put ?? devnull]);
  } catch (e) {
    closeSync(r);
    throw e;
  } finally {
    closeSync(w);
    closeSync(devnull);
  }
  // (A ckpt killed from here on leaves the helper to finish: the bytes go back all the same.)
  fault('tty:queue');
  const chunks: Buffer[] = [];
  try {
    const buf = Buffer.alloc(65536);
    for (let n = readSync(r, buf); n > 0; n = readSync(r, buf)) chunks.push(Buffer.from(buf.subarray(0, n)));
  } finally {
    closeSync(r);
  }
  return { status: reapWithin(pid, 5000)?.code, answer: Buffer.concat(chunks) };
}

/**
 * The bytes queued in the pty of master `master` (our copy of a master of the frozen process),
 * read and put back at once by ckpt-ptyqueue: a helper in a session of its own that finishes the
 * put-back whatever becomes of this ckpt (were it killed between the read and the write-back, the
 * bytes would be lost, and the slave left non-canonical). `packet`: the master is in packet mode.
 * undefined when nothing is queued.
 */
export function takeQueued(master: number, termios: Buffer, packet: boolean): Queued | undefined {
  const { status, answer: all } = runPtyQueue(master, termios, packet);
  const outLen = all.length >= 4 ? all.readUInt32LE(0) : 0;
  const output = all.subarray(4, 4 + outLen);
  const inLen = all.length >= 8 + outLen ? all.readUInt32LE(4 + outLen) : 0;
  const input = all.subarray(8 + outLen, 8 + outLen + inLen);
  if (status === 2 || output.length !== outLen || input.length !== inLen) {
    throw new Error(`the bytes queued in the terminal could not be read and put back whole (ckpt-ptyqueue status ${status})`);
  }
  if (!input.length && !output.length) return undefined;
  const q: Queued = {};
  if (input.length) q.input = input.toString('base64');
  if (output.length) q.output = output.toString('base64');
  return q;
}
