/**
 * After the restore (beforeResume): the masters ckpt keeps for ptys whose other end was not in
 * the image: a forwarder (ckpt restore waits: output to our stdout, piped stdin to the terminal)
 * or, with --detach, a keeper process that logs the output to a file.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readSync, writeSync, type Stats } from 'node:fs';
import { isatty } from 'node:tty';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger, RestoreSession } from '@ckpt/core';
import { native, F_GETFL, F_SETFL, O_NONBLOCK } from '@ckpt/native';
import { closeQuietly, states, type PtyPlan } from './plan.js';

/** The host pid of the first restored process on pty p. */
function firstHolder(session: RestoreSession, p: PtyPlan): number {
  const proc = session.processes.find((q) => q.pid === p.holders[0]) ?? session.processes[0];
  return proc?.stub?.pid ?? p.holders[0];
}

/** --detach: a keeper process (cat) appends the terminal's output to a log file. */
function startKeeper(session: RestoreSession, p: PtyPlan, log: Logger): void {
  const dir = join(tmpdir(), 'ckpt-run');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pid = firstHolder(session, p);
  const file = join(dir, `${pid}.tty.log`);
  const out = openSync(file, 'a', 0o600);
  try {
    const keeper = native.proc.spawnDetached('/bin/sh', ['sh', '-c', 'exec cat 2>/dev/null'], ['PATH=/usr/bin:/bin'], '/', [p.master!, out, out]);
    log('pty %d: keeper %d copies /dev/pts/%d to %s', p.index, keeper, p.newIndex, file);
  } finally {
    closeSync(out);
  }
  process.stderr.write(`ckpt: pid ${pid} is on a new terminal (/dev/pts/${p.newIndex}) whose other end was not in the image: its output goes to ${file}\n`);
}

/** Without --detach: copy the terminal's output to our stdout (and a piped stdin to it) while we live. */
function startForwarder(m: number, onClose: () => void): void {
  native.fd.fcntl(m, F_SETFL, native.fd.fcntl(m, F_GETFL, 0) | O_NONBLOCK);
  const buf = Buffer.alloc(65536);
  let closed = false;
  let input: NodeJS.ReadableStream | undefined;
  const stop = () => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    process.off('exit', drainAndStop);
    process.stdout.off('error', stop);
    if (input) input.removeListener('data', onInput);
    onClose();
  };
  const pump = () => {
    for (;;) {
      let n: number;
      try {
        n = readSync(m, buf, 0, buf.length, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return;
        stop(); // EIO: every process closed the terminal
        return;
      }
      if (n <= 0) return stop();
      process.stdout.write(Buffer.from(buf.subarray(0, n)));
    }
  };
  const drainAndStop = () => {
    if (!closed) pump();
    stop();
  };
  const onInput = (chunk: Buffer | string) => {
    if (closed) return;
    const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    try {
      for (let off = 0; off < data.length; ) off += writeSync(m, data, off);
    } catch {
      /* the terminal's input queue is full or gone: dropped */
    }
  };
  process.stdout.once('error', stop); // our reader went away: stop copying
  const timer = setInterval(pump, 20);
  timer.unref();
  // What the program wrote last (before it exited, which ckpt restore follows) is copied at our
  // exit: 'exit' comes also when the command ends with process.exit(), which skips 'beforeExit'
  // (its output was lost then, up to a pump's 20 ms of it). stdout is synchronous on Linux.
  process.on('exit', drainAndStop);
  // Keyboard input from a pipe or a file (a terminal on stdin: use --tty instead).
  let st: Stats | undefined;
  try {
    st = isatty(0) ? undefined : fstatSync(0);
  } catch {
    st = undefined;
  }
  if (st && (st.isFIFO() || st.isSocket() || st.isFile())) {
    input = process.stdin;
    process.stdin.on('data', onInput);
    (process.stdin as unknown as { unref?: () => void }).unref?.();
  }
}

/** beforeResume: keeps (forwarder, keeper) or closes the masters of ours, closes every other fd of ours. */
export function makeAfterRestore(log: Logger) {
  return async function afterRestore(session: RestoreSession): Promise<void> {
    const state = states.of(session).state;
    if (!state || state.done) return;
    state.done = true;
    for (const p of state.ptys.values()) {
      const m = p.master;
      if (m === undefined) continue;
      const keep = !p.hasMaster && !p.hungUp && p.holders.length > 0 && !p.terminal;
      if (keep && !session.options.detach) {
        state.open.delete(m);
        startForwarder(m, () => closeQuietly(m));
        continue;
      }
      if (keep) startKeeper(session, p, log);
      // Masters the processes hold are in place; a hung-up terminal is hung up again here.
      state.open.delete(m);
      closeQuietly(m);
    }
    for (const fd of state.open) closeQuietly(fd);
    state.open.clear();
  };
}
