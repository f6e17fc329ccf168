/**
 * Bytes queued in a pty: input the master wrote that the slave has not read (typed ahead), and
 * output the slave wrote that the master has not read. Reading a terminal consumes it, so the
 * dump reads both and puts them back at once (the process is frozen throughout), through the
 * helper ckpt-ptyqueue (native/src/ptyqueue.c), which finishes the put-back even if ckpt is killed;
 * the restore puts them into the new pty the same way, here.
 *
 * Reading (the helper): output through the master (FIONREAD bytes, packet mode off meanwhile);
 * input through a slave of its own (TIOCGPTPEER), non-canonical for the read so that a partial
 * line is readable too.
 * Putting back: with the slave's settings made inert for a moment — no echo, no signals, no
 * input translation, the editing characters (erase, kill, EOF, word erase, literal next, reprint)
 * disabled, no output processing — the input is written to the master and the output to the
 * slave; a poll on the other side makes the kernel process them before the settings come back.
 * Canonical mode is kept, so complete lines stay lines and a partial line stays partial. What the
 * kernel stored for an end of file typed ahead (^D) comes back as a NUL byte.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { fault, reapWithin, withSignalsHeld, type Tracee } from '@ckpt/core';
import { native, ptyQueuePath, SYS, O_NOCTTY, O_NONBLOCK, O_RDWR } from '@ckpt/native';
import { TCSETS, TIOCGPTPEER } from './ioctl.js';

const POLLIN = 1;
const O_CLOEXEC = 0o2000000;
// struct termios offsets and flags (asm-generic termbits).
const IFLAG = 0,
  OFLAG = 4,
  LFLAG = 12,
  CC = 17;
const RAW_IFLAG = 0o2 | 0o10 | 0o20 | 0o40 | 0o100 | 0o200 | 0o400 | 0o1000 | 0o2000 | 0o10000 | 0o20000; // BRKINT PARMRK INPCK ISTRIP INLCR IGNCR ICRNL IUCLC IXON IXOFF IMAXBEL
const OPOST = 1;
const ISIG = 0o1,
  ECHO_ALL = 0o10 | 0o20 | 0o40 | 0o100 | 0o1000 | 0o2000 | 0o4000, // ECHO ECHOE ECHOK ECHONL ECHOCTL ECHOPRT ECHOKE
  IEXTEN = 0o100000,
  TOSTOP = 0o400;
const [VERASE, VKILL, VEOF, VREPRINT, VWERASE, VLNEXT] = [2, 3, 4, 12, 14, 15];

export interface Queued {
  /** Typed ahead: what the slave has still to read (base64). */
  input?: string;
  /** What the master has still to read (base64). */
  output?: string;
}

/** The settings under which bytes put back are taken as they are. */
function inert(termios: Buffer): Buffer {
  const t = Buffer.from(termios);
  t.writeUInt32LE(t.readUInt32LE(IFLAG) & ~RAW_IFLAG, IFLAG);
  t.writeUInt32LE(t.readUInt32LE(OFLAG) & ~OPOST, OFLAG);
  t.writeUInt32LE(t.readUInt32LE(LFLAG) & ~(ISIG | ECHO_ALL | IEXTEN | TOSTOP), LFLAG);
  for (const c of [VERASE, VKILL, VEOF, VREPRINT, VWERASE, VLNEXT]) t[CC + c] = 0;
  return t;
}

/** Makes the kernel take what was written toward `fd` now (a poll on it flushes its input buffer). */
function settle(t: Tracee, fd: number): void {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  t.syscallRaw(SYS.poll, t.put(pfd, 0), 1, 0);
}

/** Writes the queued bytes into the pty of master `m` (an fd of the task) under settings `termios`. */
export function putBack(t: Tracee, m: number, termios: Buffer, q: Queued): void {
  if (!q.input && !q.output) return;
  // Every signal blocked: terminal changes from a background group raise no SIGTTOU.
  withSignalsHeld(t.pid, () => putBackHeld(t, m, termios, q));
}

function putBackHeld(t: Tracee, m: number, termios: Buffer, q: Queued): void {
  const s = Number(t.syscall(SYS.ioctl, m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
  try {
    t.syscall(SYS.ioctl, s, TCSETS, t.put(inert(termios), 256));
    if (q.input) {
      const b = Buffer.from(q.input, 'base64');
      t.syscall(SYS.write, m, t.put(b, 4096), b.length);
      settle(t, s);
    }
    if (q.output) {
      const b = Buffer.from(q.output, 'base64');
      t.syscall(SYS.write, s, t.put(b, 4096), b.length);
      settle(t, m);
    }
  } finally {
    t.syscallRaw(SYS.ioctl, s, TCSETS, t.put(termios, 256));
    t.syscallRaw(SYS.close, s);
  }
}

/**
 * The bytes queued in the pty of master `master` (our copy of a master of the frozen process),
 * read and put back at once by ckpt-ptyqueue: a helper in a session of its own that finishes the
 * put-back whatever becomes of this ckpt (were it killed between the read and the write-back, the
 * bytes would be lost, and the slave left non-canonical). `packet`: the master is in packet mode.
 * undefined when nothing is queued.
 */
export function takeQueued(master: number, termios: Buffer, packet: boolean): Queued | undefined {
  const [r, w] = native.fd.pipe(O_CLOEXEC);
  const devnull = openSync('/dev/null', 'r+');
  let pid: number;
  try {
    pid = native.proc.spawnDetached(ptyQueuePath, ['ckpt-ptyqueue', termios.toString('hex'), packet ? '1' : '0'], [], null, [master, w, devnull]);
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
  const status = reapWithin(pid, 5000)?.code;
  const all = Buffer.concat(chunks);
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
