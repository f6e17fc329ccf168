// The event fds of event loops: an epoll loop over a timerfd, an eventfd and a signalfd (plus an
// unwatched semaphore eventfd, and an unwatched timerfd read only on SIGUSR1). After dump and restore
// the timers keep firing, the eventfds keep their counter and mode, the signalfd still receives
// SIGUSR1, and the epoll instance watches the same fds with the same events and data. With
// --leave-running the loop runs on undisturbed.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  ckpt,
  dumpOk,
  expectOk,
  expectRunningFree,
  isAlive,
  makeTempDir,
  readLines,
  readText,
  restoreOk,
  runFixture,
  sleep,
  tail,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const EVLOOP = path.join(BUILD_DIR, 'evloop');
const START_RE = /^start pid=\d+ epoll=(\d+) timer=(\d+) event=(\d+) signal=(\d+) stash=(\d+) lazy=(\d+) mono=(\d+)$/;
const LOOP_RE = /^tick (\d+) ev (\d+)$/;
const BAD_RE = /^(epollbad|fatal|stash read failed|signalfd other)/;

interface Fds {
  epoll: number;
  timer: number;
  event: number;
  signal: number;
  stash: number;
  lazy: number;
  mono: bigint;
}

interface Loop {
  index: number;
  tick: number;
  ev: number;
}

function loopLines(file: string): Loop[] {
  const out: Loop[] = [];
  readLines(file).forEach((l, index) => {
    const m = l.match(LOOP_RE);
    if (m) out.push({ index, tick: Number(m[1]), ev: Number(m[2]) });
  });
  return out;
}

/** /proc/PID/fdinfo/FD as key -> value (tfd lines of an epoll fd are left out: see watches()). */
function fdinfo(pid: number, fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').split('\n')) {
    const m = line.match(/^([^:]+):\s*(.*)$/);
    if (m && m[1] !== 'tfd') out[m[1]] = m[2].trim();
  }
  return out;
}

/** The watch list of an epoll fd: "tfd T events E data D", sorted by tfd. */
function watches(pid: number, fd: number): string[] {
  const out: { tfd: number; s: string }[] = [];
  for (const line of fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8').split('\n')) {
    const m = line.match(/^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/);
    if (m) out.push({ tfd: Number(m[1]), s: `tfd ${m[1]} events ${m[2]} data ${m[3]}` });
  }
  return out.sort((a, b) => a.tfd - b.tfd).map((x) => x.s);
}

/**
 * What the kernel says about the loop's fds, in a form that must be the same after a restore: the
 * kind of each fd, its open flags, and the state of each object (timer clock, interval and settime
 * flags; eventfd mode, and the stash's counter; signalfd mask; epoll watch list).
 */
function fdState(pid: number, f: Fds) {
  const link = (fd: number) => fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
  const t = fdinfo(pid, f.timer);
  const e = fdinfo(pid, f.event);
  const s = fdinfo(pid, f.signal);
  const st = fdinfo(pid, f.stash);
  const ep = fdinfo(pid, f.epoll);
  const lz = fdinfo(pid, f.lazy);
  return {
    links: [f.timer, f.event, f.signal, f.epoll, f.stash, f.lazy].map((fd) => `${fd} ${link(fd)}`),
    timer: { flags: t.flags, clockid: t.clockid, 'settime flags': t['settime flags'], it_interval: t.it_interval },
    lazy: { flags: lz.flags, clockid: lz.clockid, 'settime flags': lz['settime flags'], it_interval: lz.it_interval },
    event: { flags: e.flags, semaphore: e['eventfd-semaphore'] },
    signal: { flags: s.flags, sigmask: s.sigmask },
    stash: { flags: st.flags, count: st['eventfd-count'], semaphore: st['eventfd-semaphore'] },
    epoll: { flags: ep.flags, watches: watches(pid, f.epoll) },
  };
}

/**
 * Whether a timerfd is running: it has expired (ticks > 0: fdinfo then shows it_value (0, 0) until
 * the expirations are read) or its next expiration is ahead (it_value > 0, and at most the interval).
 * A disarmed timer shows ticks 0 and it_value (0, 0).
 */
function expectTimerArmed(pid: number, fd: number, what: string): void {
  const info = fdinfo(pid, fd);
  const m = info.it_value?.match(/\((\d+),\s*(\d+)\)/);
  const valueNs = m ? Number(m[1]) * 1e9 + Number(m[2]) : -1;
  const ctx = `${what}: fdinfo of fd ${fd}: ${JSON.stringify(info)}`;
  expect(Number(info.ticks) > 0 || valueNs > 0, `${ctx}\nthe timer is not armed`).toBe(true);
  expect(valueNs, ctx).toBeLessThanOrEqual(100_000_000);
}

async function startLoop(dir: string) {
  const p = await runFixture(dir, [EVLOOP], { name: 'evloop' });
  const s = await waitForLine(p.stdout, START_RE);
  const [epoll, timer, event, signal, stash, lazy] = s.match.slice(1, 7).map(Number);
  const fds: Fds = { epoll, timer, event, signal, stash, lazy, mono: BigInt(s.match[7]) };
  await waitFor(
    () => loopLines(p.stdout).find((l) => l.tick >= 5 && l.ev === l.tick),
    20_000,
    () => `the loop did not reach tick 5\n${tail(p.stdout)}`,
  );
  return { ...p, fds };
}

/**
 * Sends SIGUSR1 and waits for the signalfd's "signalfd usr1 N", the stash read and the lazy timer
 * read that follow; the lazy timer (50 ms) must have expired since it was last read (or restored).
 */
async function usr1ViaSignalfd(pid: number, stdout: string, n: number): Promise<void> {
  const from = readLines(stdout).length;
  process.kill(pid, 'SIGUSR1');
  const got = await waitForLine(stdout, /^signalfd usr1 (\d+)$/, 15_000, from);
  expect(got.match[0], tail(stdout)).toBe(`signalfd usr1 ${n}`);
  const stash = await waitForLine(stdout, /^stash read (\d+)$/, 15_000, got.index);
  expect(stash.match[0], `the stash eventfd (semaphore mode, count 1000) read once\n${tail(stdout)}`).toBe('stash read 1');
  const lazy = await waitForLine(stdout, /^lazy (\d+|none)$/, 15_000, stash.index);
  expect(lazy.match[1], `the unwatched 50 ms timerfd has not expired since it was restored\n${tail(stdout)}`).not.toBe('none');
  expect(Number(lazy.match[1])).toBeGreaterThan(0);
}

/** Loop lines are in order: tick and ev never go down, ev never ahead of tick. */
function expectMonotonic(lines: Loop[], file: string): void {
  for (let k = 0; k < lines.length; k++) {
    const l = lines[k];
    expect(l.ev, `ev ahead of tick at line ${l.index + 1}\n${tail(file)}`).toBeLessThanOrEqual(l.tick);
    if (k === 0) continue;
    expect(l.tick, `tick went down at line ${l.index + 1}\n${tail(file)}`).toBeGreaterThanOrEqual(lines[k - 1].tick);
    expect(l.ev, `ev went down at line ${l.index + 1}\n${tail(file)}`).toBeGreaterThanOrEqual(lines[k - 1].ev);
  }
}

describe('epoll event loop with timerfd, eventfd and signalfd', () => {
  it('dump and restore: the timer keeps ticking, the eventfd counting, SIGUSR1 arrives through the signalfd, the epoll watch list is the same', async () => {
    const dir = makeTempDir('evloop');
    const img = path.join(dir, 'img');
    const { pid, stdout, stderr, fds } = await startLoop(dir);
    const stateBefore = fdState(pid, fds);
    // the fixture set up what the test expects
    expect(stateBefore.epoll.watches, 'epoll watch list before the dump').toEqual([
      `tfd ${fds.timer} events 19 data e7000000${fds.timer.toString(16)}`,
      `tfd ${fds.event} events 80000019 data e7000000${fds.event.toString(16)}`,
      `tfd ${fds.signal} events 19 data e7000000${fds.signal.toString(16)}`,
    ]);
    expect(stateBefore.stash, 'stash eventfd before the dump').toMatchObject({ count: '3e8', semaphore: '1' });
    expect(stateBefore.timer, 'timerfd before the dump').toMatchObject({ clockid: '1', it_interval: '(0, 100000000)' });
    expect(stateBefore.lazy, 'lazy timerfd before the dump').toMatchObject({ clockid: '1', it_interval: '(0, 50000000)' });
    expect(fdinfo(pid, fds.lazy), 'the lazy timerfd has unread expirations before the dump').toMatchObject({ ticks: '1', it_value: '(0, 0)' });

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const before = loopLines(stdout);
    const nLinesBefore = readLines(stdout).length;
    const lastTick = Math.max(...before.map((l) => l.tick));
    const lastEv = Math.max(...before.map((l) => l.ev));
    expect(lastTick).toBeGreaterThanOrEqual(5);

    await restoreOk(img, pid, EVLOOP);

    // Same fds, same objects, same watch list.
    expect(fdState(pid, fds), `fds of the restored process (before the dump: ${JSON.stringify(stateBefore)})`).toEqual(stateBefore);
    // Both timers run. The lazy one always has unread expirations at the dump (fdinfo: it_value
    // (0, 0)); the loop's one does when it expired while the process was frozen for the dump.
    expectTimerArmed(pid, fds.timer, "the loop's timerfd after the restore");
    await sleep(150);
    expectTimerArmed(pid, fds.lazy, 'the unwatched timerfd after the restore');

    // Ticks continue from the dump-time value, and ev with them.
    const afterRestore = () => loopLines(stdout).filter((l) => l.index >= nLinesBefore);
    const ctx = () => `before the dump: tick ${lastTick} ev ${lastEv}\n${tail(stdout)}`;
    await waitFor(
      () => afterRestore().length > 0,
      15_000,
      () => `no loop line after the restore\n${ctx()}`,
    );
    const first = afterRestore()[0];
    expect(first.tick, `first tick after the restore (reset?)\n${ctx()}`).toBeGreaterThanOrEqual(lastTick);
    expect(first.tick, `first tick after the restore\n${ctx()}`).toBeLessThanOrEqual(lastTick + 10);
    expect(first.ev, `first ev after the restore (reset?)\n${ctx()}`).toBeGreaterThanOrEqual(lastEv);
    // ev catches up with tick: nothing written to the eventfd was lost
    const caught = await waitFor(
      () => afterRestore().find((l) => l.tick >= lastTick + 10 && l.ev === l.tick),
      20_000,
      () => `no "tick T ev T" with T >= ${lastTick + 10} after the restore (timer stopped, or eventfd count lost)\n${ctx()}`,
    );

    // The timer's period is still 100 ms: ~20 ticks in 2 s.
    const t0 = loopLines(stdout).at(-1)!.tick;
    const h0 = process.hrtime.bigint();
    await sleep(2000);
    const t1 = loopLines(stdout).at(-1)!.tick;
    const elapsed = Number(process.hrtime.bigint() - h0) / 1e6;
    const expected = elapsed / 100;
    expect(t1 - t0, `ticks in ${elapsed.toFixed(0)} ms after the restore\n${tail(stdout)}`).toBeGreaterThanOrEqual(Math.floor(expected) - 3);
    expect(t1 - t0, `ticks in ${elapsed.toFixed(0)} ms after the restore\n${tail(stdout)}`).toBeLessThanOrEqual(Math.ceil(expected) + 3);

    // SIGUSR1, still blocked, arrives through the restored signalfd (not by default action, which
    // would kill the process); the stash eventfd still holds 1000 in semaphore mode.
    await usr1ViaSignalfd(pid, stdout, 1);
    expect(isAlive(pid), 'SIGUSR1 killed the restored loop').toBe(true);
    expect(fdState(pid, fds), 'fds after the SIGUSR1').toEqual(stateBefore);
    await waitFor(
      () => loopLines(stdout).find((l) => l.tick >= caught.tick + 5 && l.ev === l.tick),
      15_000,
      () => `the loop stopped after SIGUSR1\n${tail(stdout)}`,
    );

    expectMonotonic(loopLines(stdout), stdout);
    expectRunningFree(pid, 'restored event loop');
    expect(
      readLines(stdout).filter((l) => BAD_RE.test(l)),
      tail(stdout),
    ).toEqual([]);
    expect(readText(stderr), 'evloop stderr').toBe('');
  });

  it('dump --leave-running: the loop keeps ticking untouched', async () => {
    const dir = makeTempDir('evloop-leave');
    const img = path.join(dir, 'img');
    const { pid, stdout, stderr, fds } = await startLoop(dir);
    const stateBefore = fdState(pid, fds);

    // tick counts every expiration of the timer since it was armed at `mono` (CLOCK_MONOTONIC, the
    // clock of process.hrtime): a dump that consumed or reset the timer would make it lag behind.
    const lag = () => {
      const elapsedTicks = Number((process.hrtime.bigint() - fds.mono) / 100_000_000n);
      return elapsedTicks - loopLines(stdout).at(-1)!.tick;
    };
    expect(lag(), `tick vs time before the dump\n${tail(stdout)}`).toBeLessThanOrEqual(2);

    let diedDuringDump = false;
    let dumping = true;
    const watcher = (async () => {
      while (dumping) {
        if (!isAlive(pid)) diedDuringDump = true;
        await sleep(20);
      }
    })();
    const d = await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running']);
    dumping = false;
    await watcher;
    expectOk(d);
    expect(diedDuringDump, 'the loop died during dump --leave-running').toBe(false);
    expectRunningFree(pid, 'loop after dump --leave-running');
    const tickAtDumpEnd = loopLines(stdout).at(-1)!.tick;

    // The kernel objects are untouched: same fds, timer, eventfd counter and mode, mask, watch list.
    expect(fdState(pid, fds), 'fds after dump --leave-running').toEqual(stateBefore);
    expectTimerArmed(pid, fds.timer, "the loop's timerfd after dump --leave-running");
    expectTimerArmed(pid, fds.lazy, 'the unwatched timerfd after dump --leave-running');

    // It keeps ticking in step with the clock, and ev with it.
    await waitFor(
      () => loopLines(stdout).find((l) => l.tick >= tickAtDumpEnd + 10 && l.ev === l.tick),
      20_000,
      () => `the loop stopped ticking after dump --leave-running (at the end of the dump: tick ${tickAtDumpEnd})\n${tail(stdout)}`,
    );
    const l = lag();
    expect(l, `tick vs time after the dump (timer expirations lost?)\n${tail(stdout)}`).toBeLessThanOrEqual(2);
    expect(l, `tick vs time after the dump\n${tail(stdout)}`).toBeGreaterThanOrEqual(-1);

    await usr1ViaSignalfd(pid, stdout, 1);
    expect(fdState(pid, fds), 'fds after the SIGUSR1').toEqual(stateBefore);
    const t = loopLines(stdout).at(-1)!.tick;
    await waitFor(
      () => loopLines(stdout).find((x) => x.tick >= t + 5 && x.ev === x.tick),
      15_000,
      () => `the loop stopped after SIGUSR1\n${tail(stdout)}`,
    );

    expectMonotonic(loopLines(stdout), stdout);
    expectRunningFree(pid, 'loop after dump --leave-running');
    expect(
      readLines(stdout).filter((x) => BAD_RE.test(x)),
      tail(stdout),
    ).toEqual([]);
    expect(readText(stderr), 'evloop stderr').toBe('');
  });
});
