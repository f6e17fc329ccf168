// Multi-threaded processes: every thread of the process is dumped and restored with its old TID, its
// own signal mask, its TLS (fs_base), its rseq registration, its robust list and clear_child_tid;
// the threads keep their counters, and the mutex/condvar token ring keeps going.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  checksAfterRestore,
  cmdline,
  dumpOk,
  expectConsecutive,
  expectRunningFree,
  FIXTURES_DIR,
  isAlive,
  makeTempDir,
  numbersOf,
  readLines,
  readText,
  restoreOk,
  runFixture,
  tail,
  useCleanup,
  waitFor,
  waitForLine,
  waitForTick,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const THREADS = path.join(BUILD_DIR, 'threads');
const NTHR = 4;
const TICK_RE = /^tick (\d+) counters (\d+) (\d+) (\d+) (\d+) handoffs (\d+)$/;
const START_RE = /^start pid=(\d+) tids=(\d+),(\d+),(\d+),(\d+),(\d+)$/;
const USR1_RE = /^usr1 (main:.*)$/;
const BAD_RE = /^(tlsbad|tidbad|maskbad|rseqbad|mutexbad|fatal)/;

interface TickLine {
  index: number;
  tick: number;
  counters: number[];
  handoffs: number;
}

function tickLines(file: string): TickLine[] {
  const out: TickLine[] = [];
  readLines(file).forEach((l, index) => {
    const m = l.match(TICK_RE);
    if (m) out.push({ index, tick: Number(m[1]), counters: m.slice(2, 6).map(Number), handoffs: Number(m[6]) });
  });
  return out;
}

interface ThreadReport {
  tid: number;
  mask: string;
  tls: string;
  rseq: string;
}

/** "usr1 main:TID:MASK:TLS:RSEQ t0:..." -> { main: {...}, t0: {...}, ... } */
function parseUsr1(fields: string): Record<string, ThreadReport> {
  const out: Record<string, ThreadReport> = {};
  for (const f of fields.split(' ')) {
    const [name, tid, mask, tls, rseq] = f.split(':');
    out[name] = { tid: Number(tid), mask, tls, rseq };
  }
  return out;
}

/** Sends SIGUSR1 and returns the per-thread report the main thread prints for it. */
async function usr1Report(pid: number, stdout: string): Promise<Record<string, ThreadReport>> {
  const from = readLines(stdout).length;
  process.kill(pid, 'SIGUSR1');
  const m = await waitForLine(stdout, USR1_RE, 20_000, from);
  const r = parseUsr1(m.match[1]);
  expect(Object.keys(r).sort(), m.match[0]).toEqual(['main', 't0', 't1', 't2', 't3']);
  return r;
}

function expectAllOk(r: Record<string, ThreadReport>, what: string): void {
  const rseqNone = Object.values(r).some((t) => t.rseq === 'none');
  if (rseqNone) console.warn(`threads: glibc did not register rseq (${what}); rseq not checked`);
  const got = Object.fromEntries(Object.entries(r).map(([k, t]) => [k, `mask:${t.mask} tls:${t.tls} rseq:${rseqNone ? 'ok' : t.rseq}`]));
  const want = Object.fromEntries(Object.keys(r).map((k) => [k, 'mask:ok tls:ok rseq:ok']));
  expect(got, `per-thread state ${what}`).toEqual(want);
}

/** TIDs of /proc/PID/task, sorted. */
function taskTids(pid: number): number[] {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/** SigBlk and the TID inside the pid namespace (last NSpid column) of one thread. */
function taskStatus(pid: number, tid: number): { sigBlk: string; nsTid: number } {
  const s = fs.readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  const field = (f: string) => s.match(new RegExp(`^${f}:\\s*(.*)$`, 'm'))?.[1].trim() ?? '';
  const ns = field('NSpid').split(/\s+/).filter(Boolean).map(Number);
  return { sigBlk: field('SigBlk'), nsTid: ns[ns.length - 1] };
}

function threadTable(pid: number): Map<number, { sigBlk: string; nsTid: number }> {
  return new Map(taskTids(pid).map((t) => [t, taskStatus(pid, t)]));
}

/** SigBlk the fixture sets: main {SIGRTMIN+8}, thread i {SIGUSR1, SIGUSR2, SIGRTMIN+i} (SIGRTMIN = 34). */
function expectedSigBlk(idx: number | 'main'): string {
  const bit = (sig: number) => 1n << BigInt(sig - 1);
  const v = idx === 'main' ? bit(34 + 8) : bit(10) | bit(12) | bit(34 + idx);
  return v.toString(16).padStart(16, '0');
}

async function startThreads(dir: string) {
  const p = await runFixture(dir, [THREADS], { name: 'threads' });
  const start = await waitForLine(p.stdout, START_RE);
  const nsTids = start.match.slice(2, 7).map(Number); // main, t0..t3
  await waitForTick(p.stdout, 5, 20_000, TICK_RE);
  return { ...p, nsTids };
}

describe('multi-threaded C program (main + 4 pthreads)', () => {
  it('restores every thread with its TID, signal mask, TLS and rseq; counters and the condvar ring continue', async () => {
    const dir = makeTempDir('threads');
    const img = path.join(dir, 'img');
    const { pid, stdout, stderr, nsTids } = await startThreads(dir);

    // Before the dump: 5 tasks, each with the mask the fixture gave it.
    const before = threadTable(pid);
    const tidsBefore = [...before.keys()];
    expect(tidsBefore.length, `tasks of pid ${pid}: ${tidsBefore}`).toBe(NTHR + 1);
    expect(
      [...before.values()].map((t) => t.nsTid).sort((a, b) => a - b),
      'TIDs printed by the fixture vs /proc',
    ).toEqual([...nsTids].sort((a, b) => a - b));
    const byNsTid = new Map([...before].map(([tid, st]) => [st.nsTid, { tid, ...st }]));
    const names: (number | 'main')[] = ['main', 0, 1, 2, 3];
    names.forEach((n, k) => {
      expect(byNsTid.get(nsTids[k])?.sigBlk, `SigBlk of thread ${n} before the dump`).toBe(expectedSigBlk(n));
    });
    const reportBefore = await usr1Report(pid, stdout);
    expectAllOk(reportBefore, 'before the dump');
    expect(
      ['main', 't0', 't1', 't2', 't3'].map((k) => reportBefore[k].tid),
      'gettid() before the dump',
    ).toEqual(nsTids);
    await waitForTick(stdout, tickLines(stdout).at(-1)!.tick + 3, 20_000, TICK_RE);

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const linesBefore = tickLines(stdout);
    const last = linesBefore.at(-1)!;
    const nLinesBefore = readLines(stdout).length;
    expect(Math.min(...last.counters), `counters before the dump: ${JSON.stringify(last)}`).toBeGreaterThanOrEqual(20);
    expect(last.handoffs).toBeGreaterThanOrEqual(80);

    await restoreOk(img, pid, THREADS);
    expect(cmdline(pid)).toEqual([THREADS]);

    // The same threads, with the same TIDs (host and namespace) and the same masks.
    const after = threadTable(pid);
    expect([...after.keys()], `TIDs in /proc/${pid}/task after the restore`).toEqual(tidsBefore);
    for (const [tid, st] of before) {
      expect(after.get(tid), `thread ${tid} (SigBlk and namespace TID) after the restore`).toEqual(st);
    }

    // The main thread's tick continues exactly; every thread's counter and the handoff count continue
    // from their dump-time values (a thread restarted or reset would start from 0).
    await waitFor(
      () => tickLines(stdout).filter((t) => t.index >= nLinesBefore).length >= 3,
      20_000,
      () => `no tick lines after the restore\n${tail(stdout)}`,
    );
    const first = tickLines(stdout).find((t) => t.index >= nLinesBefore)!;
    const ctx = () => `before: ${JSON.stringify(last)}\nfirst after: ${JSON.stringify(first)}\n${tail(stdout)}`;
    expect(first.tick, ctx()).toBe(last.tick + 1);
    for (let i = 0; i < NTHR; i++) {
      expect(first.counters[i], `counter of thread ${i}\n${ctx()}`).toBeGreaterThanOrEqual(last.counters[i]);
      expect(first.counters[i], `counter of thread ${i}\n${ctx()}`).toBeLessThanOrEqual(last.counters[i] + 60);
    }
    expect(first.handoffs, ctx()).toBeGreaterThanOrEqual(last.handoffs);
    expect(first.handoffs, ctx()).toBeLessThanOrEqual(last.handoffs + 240);

    const goal = (t: TickLine) => t.counters.every((c, i) => c >= last.counters[i] + 20) && t.handoffs >= last.handoffs + 80;
    await waitFor(
      () => tickLines(stdout).find((t) => t.index >= nLinesBefore && goal(t)),
      20_000,
      () => `the threads' counters or the handoffs stopped after the restore\n${ctx()}`,
    );
    const all = tickLines(stdout);
    expectConsecutive(
      all.map((t) => t.tick),
      1,
      'main thread ticks across the restore',
    );
    for (let k = 1; k < all.length; k++) {
      for (let i = 0; i < NTHR; i++) {
        expect(all[k].counters[i], `counter ${i} went down at tick ${all[k].tick}\n${tail(stdout)}`).toBeGreaterThanOrEqual(all[k - 1].counters[i]);
      }
      expect(all[k].handoffs, `handoffs went down at tick ${all[k].tick}`).toBeGreaterThanOrEqual(all[k - 1].handoffs);
    }
    // The ring: every handoff is one thread iteration.
    for (const t of all) {
      const sum = t.counters.reduce((a, b) => a + b, 0);
      expect(Math.abs(t.handoffs - sum), `handoffs vs counters at tick ${t.tick}: ${JSON.stringify(t)}`).toBeLessThanOrEqual(8);
    }

    // Inside the process: gettid() unchanged in every thread, masks, TLS and rseq intact.
    const reportAfter = await usr1Report(pid, stdout);
    expectAllOk(reportAfter, 'after the restore');
    expect(
      ['main', 't0', 't1', 't2', 't3'].map((k) => reportAfter[k].tid),
      'gettid() after the restore',
    ).toEqual(nsTids);

    expectRunningFree(pid, 'restored threads');
    const bad = readLines(stdout).filter((l) => BAD_RE.test(l));
    expect(bad, `error lines of the fixture\n${tail(stdout)}`).toEqual([]);
    expect(readText(stderr), 'threads stderr').toBe('');
  });

  it('restored threads exit and are joined (clear_child_tid), and the robust mutex of a dead thread is recovered (robust list)', async () => {
    // Control: the fixture's join/robust check, without a checkpoint.
    const ctlDir = makeTempDir('threads-ctl');
    const ctl = await startThreads(ctlDir);
    let from = readLines(ctl.stdout).length;
    process.kill(ctl.pid, 'SIGUSR2');
    await waitForLine(ctl.stdout, /^joined$/, 20_000, from);
    const ctlOut = readLines(ctl.stdout)
      .slice(from)
      .filter((l) => /^(join|robust|tasks) /.test(l));
    expect(ctlOut, `control run\n${tail(ctl.stdout)}`).toEqual(['join 0 ok', 'join 1 ok', 'join 2 ok', 'join 3 ok', 'robust ok', 'tasks 1']);

    const dir = makeTempDir('threads-exit');
    const img = path.join(dir, 'img');
    const { pid, stdout, stderr } = await startThreads(dir);
    const tidsBefore = taskTids(pid);
    expect(tidsBefore.length).toBe(NTHR + 1);
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const lastTick = numbersOf(stdout, TICK_RE).at(-1)!;
    await restoreOk(img, pid, THREADS);
    expect(taskTids(pid), 'TIDs after the restore').toEqual(tidsBefore);
    await waitForTick(stdout, lastTick + 3, 20_000, TICK_RE);

    from = readLines(stdout).length;
    process.kill(pid, 'SIGUSR2');
    await waitForLine(stdout, /^joined$/, 30_000, from);
    const out = readLines(stdout)
      .slice(from)
      .filter((l) => /^(join|robust|tasks) /.test(l));
    expect(
      out,
      `threads exiting after the restore (pthread_join waits for the kernel to clear and wake the thread's clear_child_tid word; the robust mutex needs the kernel to walk the dead thread's robust list)\n${tail(stdout)}`,
    ).toEqual(['join 0 ok', 'join 1 ok', 'join 2 ok', 'join 3 ok', 'robust ok', 'tasks 1']);
    expect(taskTids(pid), `tasks after the joins`).toEqual([pid]);
    // the main thread goes on alone
    await waitForTick(stdout, numbersOf(stdout, TICK_RE).at(-1)! + 3, 20_000, TICK_RE);
    expect(isAlive(pid)).toBe(true);
    expect(
      readLines(stdout).filter((l) => BAD_RE.test(l)),
      tail(stdout),
    ).toEqual([]);
    expect(readText(stderr), 'threads stderr').toBe('');
  });
});

describe('node with a worker_thread', () => {
  it('main timer and worker keep counting, with the same TIDs, after dump and restore', async () => {
    const script = path.join(FIXTURES_DIR, 'worker.js');
    const node = process.execPath;
    const dir = makeTempDir('nodeworker');
    const img = path.join(dir, 'img');
    const WRE = /^tick (\d+) worker (\d+)$/;
    const { pid, stdout, stderr } = await runFixture(dir, [node, script], { marker: script, name: 'worker' });
    await waitForLine(stdout, /^start pid=\d+$/, 30_000);
    await waitFor(
      () => {
        const k = numbersOf(stdout, /^tick \d+ worker (\d+)$/);
        return k.length && k[k.length - 1] >= 10;
      },
      30_000,
      () => `the worker did not count to 10\n${tail(stdout)}`,
    );
    const tidsBefore = taskTids(pid);
    expect(tidsBefore.length, 'node with a worker has several threads').toBeGreaterThan(2);

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const nLinesBefore = readLines(stdout).length;
    const ticksBefore = numbersOf(stdout, WRE);
    const workerBefore = numbersOf(stdout, /^tick \d+ worker (\d+)$/);
    const n0 = ticksBefore.at(-1)!;
    const k0 = workerBefore.at(-1)!;

    await restoreOk(img, pid, script);
    expect(taskTids(pid), `TIDs in /proc/${pid}/task after the restore`).toEqual(tidsBefore);
    expect(cmdline(pid)).toEqual([node, script]);

    const after = () =>
      readLines(stdout)
        .slice(nLinesBefore)
        .map((l) => l.match(WRE))
        .filter((m): m is RegExpMatchArray => m !== null)
        .map((m) => ({ n: Number(m[1]), k: Number(m[2]) }));
    const ctx = () => `before: tick ${n0} worker ${k0}\n${tail(stdout)}`;
    await waitFor(
      () => after().find((x) => x.n >= n0 + 20 && x.k >= k0 + 15),
      30_000,
      () => `main ticks or worker messages stopped after the restore\n${ctx()}`,
    );
    const a = after();
    expect(a[0].n, `first tick after the restore\n${ctx()}`).toBe(n0 + 1);
    expect(a[0].k, `worker counter right after the restore\n${ctx()}`).toBeGreaterThanOrEqual(k0);
    expect(a[0].k, `worker counter right after the restore\n${ctx()}`).toBeLessThanOrEqual(k0 + 5);
    expectConsecutive(numbersOf(stdout, WRE), 1, 'main ticks across the restore');
    const ks = numbersOf(stdout, /^tick \d+ worker (\d+)$/);
    for (let i = 1; i < ks.length; i++) expect(ks[i], `worker counter went down\n${tail(stdout)}`).toBeGreaterThanOrEqual(ks[i - 1]);

    expect(taskTids(pid), 'TIDs a while after the restore').toEqual(tidsBefore);
    expectRunningFree(pid, 'restored node');
    expect(
      readLines(stdout).filter((l) => /^fatal/.test(l)),
      tail(stdout),
    ).toEqual([]);
    expect(readText(stderr), 'node stderr').toBe('');
  });
});

describe('a process whose main thread has exited', () => {
  it('comes back with its leader a zombie and its other threads, memory, fds, cwd and child as they were', async () => {
    const { lines } = await checksAfterRestore('leaderless');
    expect(lines, lines.join('\n')).toEqual(['ok leader', 'ok memory', 'ok fd', 'ok cwd', 'ok threads', 'ok child', 'done']);
  });
});
