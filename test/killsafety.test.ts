// Kill-safety inside a stage: ckpt dump SIGKILLed at any instant of its remote-syscall work
// (CKPT_FAULT_PTRACE_STEP=N: every step at which a thread can be caught mid-way), and at random
// instants. The fixture (guarded.c) checks from inside that its registers (general and vector),
// signal masks (including one a ppoll had swapped), alternate stack and signal handling are
// exactly as they were; afterwards it must run free, and a later dump (or `ckpt check --repair`)
// removes the guard mapping a killed ckpt can leave.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  bin,
  ckpt,
  describeResult,
  dumpOk,
  expectOk,
  expectRunningFree,
  makeTempDir,
  procState,
  readLines,
  readText,
  restoreOk,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const THREADS_RE = /^threads a=(\d+) b=(\d+) c=(\d+) usr1=(\d+)$/;

async function startGuarded(dir: string) {
  const p = await runFixture(dir, [bin('guarded')], { name: 'guarded' });
  await waitForLine(p.stdout, /^start pid=/);
  await waitForLine(p.stdout, /^tick 2$/);
  return p;
}

function lastThreads(stdout: string): number[] {
  const lines = readText(stdout)
    .split('\n')
    .filter((l) => THREADS_RE.test(l));
  const m = THREADS_RE.exec(lines[lines.length - 1] ?? '');
  return m ? m.slice(1).map(Number) : [0, 0, 0, 0];
}

/** Free, not harmed (no BAD from its own checks), and every thread still making progress. */
async function expectUnharmed(pid: number, stdout: string, what: string): Promise<void> {
  expectRunningFree(pid, what);
  const bad = readText(stdout)
    .split('\n')
    .find((l) => l.startsWith('BAD'));
  expect(bad, `${what}: the process found its state changed`).toBeUndefined();
  const before = lastThreads(stdout);
  await waitFor(
    () => {
      const now = lastThreads(stdout);
      return now[0] > before[0] && now[1] > before[1] && now[2] > before[2];
    },
    10_000,
    () => `${what}: its threads stopped making progress (${lastThreads(stdout)} after ${before})`,
  );
}

/**
 * Anonymous rwx mappings in the application and its ckpt-init (`ckpt run` dumps both): neither has
 * one of its own, so any is a guard ckpt left.
 */
function rwxMappings(pid: number): string[] {
  const ppid = Number(readText(`/proc/${pid}/stat`).split(') ')[1].split(' ')[1]);
  return rwxMappingsOf(readText(`/proc/${ppid}/comm`).trim() === 'ckpt-init' ? [ppid, pid] : [pid]);
}

/** Anonymous rwx mappings of each of these processes (none has one of its own). */
function rwxMappingsOf(tree: number[]): string[] {
  return tree.flatMap((p) =>
    fs
      .readFileSync(`/proc/${p}/maps`, 'utf8')
      .split('\n')
      .filter((l) => / rwxp 00000000 00:00 0\s*$/.test(l))
      .map((l) => `${p}: ${l}`),
  );
}

async function stepsOfADump(pid: number, img: string): Promise<number> {
  const r = await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running'], { env: { DEBUG: 'ckpt:fault' } });
  expectOk(r);
  const m = /remote-syscall steps: (\d+)/.exec(r.stderr);
  expect(m, `the dump logged no step count\n${describeResult(r)}`).not.toBeNull();
  return Number(m![1]);
}

describe('ckpt dump killed at any instant harms nothing', () => {
  it('killed at each remote-syscall step: every thread carries on with its registers, masks and alternate stack', async () => {
    const dir = makeTempDir('kill-steps');
    const { pid, stdout } = await startGuarded(dir);
    const total = await stepsOfADump(pid, path.join(dir, 'img-full'));
    expect(total).toBeGreaterThan(50);
    // Every step of the first stages (guard creation, first parkings on the stack and in the
    // guard), then steps spread over the rest, and the last ones (the final unparking).
    const steps = new Set<number>();
    for (let n = 1; n <= 40; n++) steps.add(n);
    for (let n = 41; n < total; n += Math.ceil((total - 40) / 30)) steps.add(n);
    for (let n = total - 3; n <= total; n++) steps.add(n);
    let killed = 0;
    for (const n of steps) {
      const img = path.join(dir, `img-${n}`);
      const r = await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running'], { env: { CKPT_FAULT_PTRACE_STEP: String(n) } });
      expect(r.signal, `ckpt dump with a kill at step ${n} of ${total}\n${describeResult(r)}`).toBe('SIGKILL');
      killed++;
      expectRunningFree(pid, `after a kill at step ${n}`);
      // Between stages a process keeps its guard with one thread parked to unmap it: that thread
      // does so as soon as it runs again, which may be a moment after ckpt died.
      await waitFor(
        () => rwxMappings(pid).length <= 1,
        3000,
        () => `guard mappings after a kill at step ${n} (the next dump removes the last one):\n${rwxMappings(pid).join('\n')}`,
      );
    }
    await expectUnharmed(pid, stdout, `after ${killed} kills`);
    // Signals still reach it, and the next dump takes away what the last kill left.
    const usr1 = lastThreads(stdout)[3];
    process.kill(pid, 'SIGUSR1');
    await waitFor(
      () => lastThreads(stdout)[3] > usr1,
      5000,
      () => 'SIGUSR1 was not handled after the kills',
    );
    await dumpOk(pid, path.join(dir, 'img-last'), ['--leave-running']);
    expect(rwxMappings(pid), 'mappings left after a complete dump').toEqual([]);
    await expectUnharmed(pid, stdout, 'after the last dump');
  });

  // A tree's processes are asked the same things at once (dumpAll hooks): each single-threaded
  // one is parked on its guard's remover tail throughout, so a ckpt killed at any instant leaves
  // at most one guard mapping in the whole tree (one being made or taken away), not one each.
  it('a preforking tree killed at each remote-syscall step: every process runs free and reads what it had, and at most one guard is left', async () => {
    const dir = makeTempDir('kill-tree');
    const report = path.join(dir, 'report');
    const go = path.join(dir, 'go');
    fs.writeFileSync(report, '');
    const prefork = path.join(BUILD_DIR, 'prefork');
    const { pid } = await runFixture(dir, [prefork, report, go], { name: 'prefork', noNamespace: true });
    await waitForLine(report, /^ready \d+$/);
    const kids = readText(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).map(Number);
    expect(kids.length).toBe(4);
    for (const k of kids) track(k, prefork);
    const tree = [pid, ...kids];
    const guards = () => rwxMappingsOf(tree);
    const total = await stepsOfADump(pid, path.join(dir, 'img-full'));
    const steps = new Set<number>();
    for (let n = 1; n <= 12; n++) steps.add(n);
    for (let n = 13; n < total; n += Math.ceil((total - 12) / 36)) steps.add(n);
    steps.add(total);
    for (const n of steps) {
      const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, `img-${n}`), '--leave-running'], { env: { CKPT_FAULT_PTRACE_STEP: String(n) } });
      expect(r.signal, `ckpt dump of the tree with a kill at step ${n} of ${total}\n${describeResult(r)}`).toBe('SIGKILL');
      for (const p of tree) expectRunningFree(p, `pid ${p} of the tree after a kill at step ${n}`);
      await waitFor(
        () => guards().length <= 1,
        3000,
        () => `guard mappings in the tree after a kill at step ${n} of ${total}:\n${guards().join('\n')}`,
      );
    }
    // The next dump removes what the last kill left; then every process reads its memory as it had it.
    await dumpOk(pid, path.join(dir, 'img-last'), ['--leave-running']);
    expect(guards(), 'guard mappings left after a complete dump').toEqual([]);
    fs.writeFileSync(go, '');
    await waitForLine(report, /^done$/, 20_000);
    expect(
      readLines(report)
        .filter((l) => !l.startsWith('ready'))
        .sort(),
    ).toEqual(['done', 'ok child0', 'ok child1', 'ok child2', 'ok child3', 'ok parent']);
  });

  it('killed at random instants, leaving it running or dumping it for good: running unharmed, or dumped and restorable', async () => {
    const dir = makeTempDir('kill-random');
    const { pid, stdout } = await startGuarded(dir);
    const t0 = Date.now();
    await dumpOk(pid, path.join(dir, 'img-timing'), ['--leave-running']);
    const span = Date.now() - t0;
    let restored = 0;
    for (let i = 0; i < 14; i++) {
      const leave = i % 2 === 0;
      const img = path.join(dir, `img-${i}`);
      const delay = Math.floor(span * (0.2 + 0.8 * Math.random()));
      const r = await ckpt(['dump', '-t', String(pid), '-D', img, ...(leave ? ['--leave-running'] : [])], {
        onSpawn: (child) => setTimeout(() => child.kill('SIGKILL'), delay),
      });
      const what = `a ${leave ? '--leave-running ' : ''}dump killed after ${delay} ms`;
      if (r.signal !== 'SIGKILL') expectOk(r); // it finished first
      const state = procState(pid);
      if (state === null || state === 'Z') {
        // Only a dump that committed its image kills the process: that image restores.
        expect(leave, `${what}: the process died`).toBe(false);
        await waitNotAlive(pid);
        await restoreOk(img, pid, 'guarded');
        restored++;
      }
      await expectUnharmed(pid, stdout, what);
    }
    expect(restored).toBeLessThanOrEqual(7);
  });

  it('journals of killed ckpts: a dump drops their notes about processes that are gone, and a journal left with none', async () => {
    const dir = makeTempDir('kill-journals');
    const { pid, stdout } = await startGuarded(dir);
    const guards = '/run/ckpt/guards';
    fs.mkdirSync(guards, { recursive: true, mode: 0o700 });
    const boot = readText('/proc/sys/kernel/random/boot_id').trim();
    const startOf = (p: number) => Number(readText(`/proc/${p}/stat`).split(') ')[1].split(' ')[19]);
    // A process that is gone (it ran and was reaped), a ckpt that is gone (no such start time),
    // and one that is not: this test's own process, never dumped.
    const gone = spawnSync('true').pid!;
    const goneNote = { pid: gone, start: 1, addr: 0x7f0000000000, size: 65536 };
    const liveNote = { pid: process.pid, start: startOf(process.pid), addr: 0x10000, size: 65536 };
    const journal = (start: number, notes: object[]) => {
      const file = path.join(guards, `${gone}-${start}.json`);
      const owner = { pid: gone, start, boot };
      fs.writeFileSync(file, [{ owner }, ...notes].map((x) => `${JSON.stringify(x)}\n`).join(''), { mode: 0o600 });
      return { file, owner };
    };
    const onlyGone = journal(1, [goneNote]);
    const mixed = journal(2, [goneNote, liveNote]);
    // Killed before it noted anything.
    const empty = journal(3, []);
    try {
      await dumpOk(pid, path.join(dir, 'img'), ['--leave-running']);
      expect(fs.existsSync(onlyGone.file), 'a journal whose processes are all gone is still there').toBe(false);
      expect(fs.existsSync(empty.file), 'a journal without notes is still there').toBe(false);
      const left = readText(mixed.file)
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(left).toEqual([{ owner: mixed.owner }, liveNote]);
      expect(fs.readdirSync(guards).filter((n) => n.endsWith('.tmp'))).toEqual([]);
      await expectUnharmed(pid, stdout, 'after the dump');
    } finally {
      for (const j of [onlyGone, mixed, empty]) fs.rmSync(j.file, { force: true });
    }
  });

  it('ckpt check reports a guard mapping a killed dump left, and --repair removes it', async () => {
    const dir = makeTempDir('kill-check');
    const { pid, stdout } = await startGuarded(dir);
    let n = 5;
    for (; n < 200 && rwxMappings(pid).length === 0; n++) {
      const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, `img-${n}`), '--leave-running'], { env: { CKPT_FAULT_PTRACE_STEP: String(n) } });
      expect(r.signal).toBe('SIGKILL');
    }
    expect(rwxMappings(pid).length, 'no kill left a guard mapping').toBe(1);
    const check = await ckpt(['check', '--json']);
    const j = JSON.parse(check.stdout) as { staleGuards: Array<{ pid: number; addr: number; size: number }> };
    const holder = Number(rwxMappings(pid)[0].split(':')[0]);
    expect(
      j.staleGuards.some((g) => g.pid === holder),
      `ckpt check does not report the guard in ${holder}\n${describeResult(check)}`,
    ).toBe(true);
    expect(rwxMappings(pid).length, 'ckpt check without --repair changed the process').toBe(1);
    const repair = await ckpt(['check', '--repair']);
    expect(repair.stdout).toMatch(new RegExp(`pid ${holder} .*guard mapping.*removed`));
    expect(rwxMappings(pid)).toEqual([]);
    await expectUnharmed(pid, stdout, 'after ckpt check --repair');
  });
});
