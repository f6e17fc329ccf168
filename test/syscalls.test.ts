// Processes checkpointed while blocked in a syscall: the syscall must carry on after restore as if
// nothing happened (restarted, not failed with EINTR).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  nsPidOf,
  bin,
  ckpt,
  dumpOk,
  expectOk,
  expectRunningFree,
  makeTempDir,
  readLines,
  restoreOk,
  runFixture,
  sleep,
  tail,
  useCleanup,
  waitForLine,
  waitInSyscall,
  waitNotAlive,
} from './helpers.js';

useCleanup();

// x86_64 syscall numbers
const SYS_read = 0;
const SYS_poll = 7;
const SYS_nanosleep = 35;
const SYS_ppoll = 271;
const SYS_clock_nanosleep = 230;

/** Writes data into the FIFO without blocking: fails (ENXIO) if no process has it open for reading. */
function writeFifo(fifo: string, data: string): void {
  const fd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    fs.writeSync(fd, data);
  } finally {
    fs.closeSync(fd);
  }
}

describe('blocked in a syscall', () => {
  it('nanosleep: restored sleep completes its full time, ret=0, no EINTR', async () => {
    const SECONDS = 4;
    const dir = makeTempDir('nanosleep');
    const img = path.join(dir, 'img');
    const sleeper = bin('sleeper');
    const { pid, stdout } = await runFixture(dir, [sleeper, 'nanosleep', String(SECONDS)]);
    await waitForLine(stdout, /^start$/);
    await waitInSyscall(pid, [SYS_nanosleep, SYS_clock_nanosleep]);
    await sleep(1000); // dump about a second into the sleep

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    expect(readLines(stdout), 'the sleeper woke before the restore').toEqual(['start']);

    await restoreOk(img, pid, sleeper);
    const woke = await waitForLine(stdout, /^woke elapsed_ms=(\d+) ret=(-?\d+) errno=(\S+)/, 20_000);
    const [, elapsed, ret, errno] = woke.match;
    expect({ ret, errno }, woke.match[0]).toEqual({ ret: '0', errno: 'none' });
    // nanosleep never returns early; elapsed (CLOCK_MONOTONIC) also spans the time spent dumped
    expect(Number(elapsed), woke.match[0]).toBeGreaterThanOrEqual(SECONDS * 1000 - 50);
  });

  it('read on a FIFO: blocked read is still blocked after restore and gets the data written later', async () => {
    const dir = makeTempDir('fifo');
    const img = path.join(dir, 'img');
    const fifo = path.join(dir, 'fifo');
    const sleeper = bin('sleeper');
    const { pid, stdout } = await runFixture(dir, [sleeper, 'fifo', fifo]);
    await waitForLine(stdout, /^ready fd=\d+$/);
    await waitInSyscall(pid, [SYS_read]);

    await dumpOk(pid, img);
    await waitNotAlive(pid);

    await restoreOk(img, pid, sleeper);
    // back in read(), not woken with EINTR
    await waitInSyscall(pid, [SYS_read]);
    expect(readLines(stdout), `the sleeper's read returned before data was written\n${tail(stdout)}`).toEqual([expect.stringMatching(/^ready fd=\d+$/)]);
    expectRunningFree(pid, 'restored fifo reader');

    writeFifo(fifo, 'hello');
    const r = await waitForLine(stdout, /^read /, 15_000);
    expect(r.match.input).toBe('read n=5 data=hello');
  });

  it('poll on a FIFO: blocked poll is still blocked after restore and reports POLLIN', async () => {
    const dir = makeTempDir('poll');
    const img = path.join(dir, 'img');
    const fifo = path.join(dir, 'fifo');
    const sleeper = bin('sleeper');
    const { pid, stdout } = await runFixture(dir, [sleeper, 'poll', fifo]);
    await waitForLine(stdout, /^ready fd=\d+$/);
    await waitInSyscall(pid, [SYS_poll, SYS_ppoll]);

    await dumpOk(pid, img);
    await waitNotAlive(pid);

    await restoreOk(img, pid, sleeper);
    await waitInSyscall(pid, [SYS_poll, SYS_ppoll]);
    expect(readLines(stdout), `the sleeper's poll returned before data was written\n${tail(stdout)}`).toHaveLength(1);
    expectRunningFree(pid, 'restored poller');

    writeFifo(fifo, 'hello');
    const r = await waitForLine(stdout, /^poll /, 15_000);
    const m = r.match.input!.match(/^poll ret=(-?\d+) revents=0x([0-9a-f]+) data=(.*)$/);
    expect(m, r.match.input).not.toBeNull();
    expect(Number(m![1]), r.match.input).toBe(1);
    expect(parseInt(m![2], 16) & 0x1, `POLLIN not set: ${r.match.input}`).toBe(1);
    expect(m![3]).toBe('hello');
  });

  it('pipe holding unread data: restored with its contents', async () => {
    const dir = makeTempDir('pipe');
    const img = path.join(dir, 'img');
    const sleeper = bin('sleeper');
    const { pid, stdout } = await runFixture(dir, [sleeper, 'pipe', '5']);
    await waitForLine(stdout, /^ready rfd=\d+ wfd=\d+$/);
    await waitInSyscall(pid, [SYS_nanosleep, SYS_clock_nanosleep]);
    const own = nsPidOf(pid); // the pid the sleeper sees for itself (it writes it into the pipe)

    const d = await ckpt(['dump', '-t', String(pid), '-D', img]);
    expectOk(d);
    await waitNotAlive(pid);
    await restoreOk(img, pid, sleeper);
    const r = await waitForLine(stdout, /^pipe /, 20_000);
    expect(r.match.input).toBe(`pipe n=${`pipedata-${own}`.length} data=pipedata-${own} again=ok`);
  });
});
