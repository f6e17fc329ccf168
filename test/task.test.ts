// Task attributes (@ckpt/plugin-task): scheduling, affinity, timer slack, OOM score and prctl flags
// come back as they were, checked from inside the restored process; a stopped process comes back
// stopped; POSIX timers keep firing; locked memory stays locked; seccomp filters keep filtering; state ckpt cannot restore yet
// (SCHED_DEADLINE) is refused by name before
// anything is copied, and the process carries on.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  checksAfterRestore,
  ckpt,
  dumpOk,
  expectCleanError,
  expectRunningFree,
  makeTempDir,
  procState,
  readLines,
  restoreOk,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitForTick,
  lastTick,
  waitNotAlive,
  expectOk,
  cleanupProcesses,
} from './helpers.js';

useCleanup();

const ATTRS = /^attrs (.*)$/;
const WANT = 'main=0 thread=0 subreaper=1 thp_disable=1 pdeathsig=10 nnp=1 oom=321 membarrier=272 personality=60000';

function lastTimers(stdout: string): { usr1: number; thread: number; left: number; newId: number } {
  const m = readLines(stdout)
    .filter((l) => l.startsWith('timers '))
    .at(-1)
    ?.match(/^timers usr1=(\d+) thread=(\d+) left_ms=(\d+) new_id=(\d+)$/);
  const [usr1, thread, left, newId] = (m ?? []).slice(1).map(Number);
  return { usr1, thread, left, newId };
}

function lastAttrs(stdout: string): string | undefined {
  const lines = readLines(stdout).filter((l) => ATTRS.test(l));
  return lines.at(-1)?.replace(ATTRS, '$1');
}

describe('task attributes', () => {
  it('nice, policy, affinity and timer slack per thread, parent-death signal, no_new_privs, subreaper, THP disable, personality, OOM score and membarrier registrations survive dump and restore', async () => {
    const dir = makeTempDir('task');
    const { pid, stdout } = await runFixture(dir, [path.join(BUILD_DIR, 'taskattrs')], { name: 'task' });
    await waitForLine(stdout, /^set cpu=\d$/);
    await waitForTick(stdout, 2);
    expect(lastAttrs(stdout)).toBe(WANT);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const show = await ckpt(['show', img]);
    expect(show.stdout).toMatch(/task: nice 3, SCHED_BATCH/);
    await restoreOk(img, pid, 'taskattrs');
    const from = lastTick(stdout);
    await waitForTick(stdout, from + 3);
    expect(readLines(stdout).filter((l) => l.startsWith('BAD'))).toEqual([]);
    expect(lastAttrs(stdout), 'what the restored process reads back').toBe(WANT);
  });

  it('THP disabled except where advised (PR_THP_DISABLE_EXCEPT_ADVISED) comes back as that, not disabled outright', async () => {
    const dir = makeTempDir('task-thp');
    const { pid, stdout } = await runFixture(dir, [path.join(BUILD_DIR, 'taskattrs'), 'thp-except-advised'], { name: 'task' });
    await waitForLine(stdout, /^set cpu=\d$|^BAD /);
    expect(
      readLines(stdout).filter((l) => l.startsWith('BAD')),
      'this test needs Linux 6.18 (PR_THP_DISABLE_EXCEPT_ADVISED)',
    ).toEqual([]);
    await waitForTick(stdout, 2);
    const want = WANT.replace('thp_disable=1', 'thp_disable=3');
    expect(lastAttrs(stdout)).toBe(want);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    expect((await ckpt(['show', img])).stdout).toMatch(/THP disabled except where advised/);
    await restoreOk(img, pid, 'taskattrs');
    await waitForTick(stdout, lastTick(stdout) + 3);
    expect(readLines(stdout).filter((l) => l.startsWith('BAD'))).toEqual([]);
    expect(lastAttrs(stdout), 'what the restored process reads back').toBe(want);
  });

  it('a stopped process is restored stopped, and runs on SIGCONT', async () => {
    const dir = makeTempDir('task-stopped');
    const w = await runFixture(dir, [path.join(BUILD_DIR, 'sleeper'), 'nanosleep', '1000'], { name: 'sleeper', noNamespace: true });
    await waitForLine(w.stdout, /^start/);
    process.kill(w.pid, 'SIGSTOP');
    await waitFor(
      () => procState(w.pid) === 'T',
      5000,
      () => `not stopped: ${procState(w.pid)}`,
    );
    const img = path.join(dir, 'img');
    await dumpOk(w.pid, img);
    await waitNotAlive(w.pid);
    await restoreOk(img, w.pid, 'sleeper');
    await waitFor(
      () => procState(w.pid) === 'T',
      5000,
      () => `the restored process is not stopped: ${procState(w.pid)}`,
    );
    process.kill(w.pid, 'SIGCONT');
    await waitFor(
      () => procState(w.pid) === 'S' || procState(w.pid) === 'R',
      5000,
      () => `it did not run on SIGCONT: ${procState(w.pid)}`,
    );
  });

  it('POSIX timers keep their ids, notification, value, time left and interval, and keep firing', async () => {
    const dir = makeTempDir('task-timers');
    const { pid, stdout } = await runFixture(dir, [path.join(BUILD_DIR, 'posixtimers')], { name: 'timers' });
    const ids = (await waitForLine(stdout, /^ready ids=(\d+),(\d+),(\d+)$/)).match.slice(1).map(Number);
    await waitForTick(stdout, 3);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    const at = lastTimers(stdout);
    await waitNotAlive(pid);
    await restoreOk(img, pid, 'posixtimers');
    await waitForTick(stdout, lastTick(stdout) + 5);
    expect(readLines(stdout).filter((l) => l.startsWith('BAD'))).toEqual([]);
    const now = lastTimers(stdout);
    expect(now.usr1, 'the SIGEV_SIGNAL timer fires after the restore').toBeGreaterThan(at.usr1 + 3);
    expect(now.thread, 'the SIGEV_THREAD_ID timer reaches its thread after the restore').toBeGreaterThan(at.thread + 3);
    expect(now.left, 'the one-shot timer kept its time left').toBeGreaterThan(990_000);
    expect(ids).not.toContain(now.newId);
  });

  it('locked memory (mlock, mlock2 on fault, mlockall(MCL_FUTURE)) and madvise state (DONTFORK, WIPEONFORK, HUGEPAGE, NOHUGEPAGE) are in force again after the restore', async () => {
    const dir = makeTempDir('task-locked');
    const { pid, stdout } = await runFixture(dir, [path.join(BUILD_DIR, 'locked')], { name: 'locked' });
    await waitForLine(stdout, /^ready$/);
    await waitForTick(stdout, 2);
    const lockedLine = () =>
      readLines(stdout)
        .filter((l) => l.startsWith('locked '))
        .at(-1);
    expect(lockedLine()).toBe('locked a=1 b=1 future=1');
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    await restoreOk(img, pid, 'locked');
    await waitForTick(stdout, lastTick(stdout) + 3);
    expect(readLines(stdout).filter((l) => l.startsWith('BAD'))).toEqual([]);
    expect(lockedLine(), 'what the restored process finds locked').toBe('locked a=1 b=1 future=1');
    const advice = readLines(stdout)
      .filter((l) => l.startsWith('advice '))
      .at(-1);
    expect(advice, 'the madvise state it finds').toBe('advice dc=1 wf=1 hg=1 nh=1');
  });

  it('credentials per thread: ids, groups, the five capability sets and securebits come back as each thread had them', async () => {
    const dir = makeTempDir('task-creds');
    const { pid, stdout } = await runFixture(dir, [path.join(BUILD_DIR, 'creds')], { name: 'creds' });
    await waitForLine(stdout, /^ready$/);
    await waitForTick(stdout, 2);
    const credLines = () => {
      const lines = readLines(stdout);
      return ['main', 'second'].map((who) => lines.filter((l) => l.startsWith(`creds ${who} `)).at(-1));
    };
    const before = credLines();
    expect(before[1]).toMatch(/Uid: 1234 1234 1234 1234 .*CapAmb: 0000000000000400/);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    await restoreOk(img, pid, 'creds');
    await waitForTick(stdout, lastTick(stdout) + 3);
    expect(readLines(stdout).filter((l) => l.startsWith('BAD'))).toEqual([]);
    expect(credLines(), 'what each restored thread reads about itself').toEqual(before);
  });

  // cgroup v1 hierarchies (pids; cpu for one thread alone) and the v2 unified one, made by the test.
  const CGROUP_ROOTS = ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified', '/sys/fs/cgroup/cpu'];
  const cgroupsMissing = CGROUP_ROOTS.filter((d) => !fs.existsSync(path.join(d, 'cgroup.procs')));
  if (cgroupsMissing.length) console.warn(`cgroup test not run: this machine does not mount ${cgroupsMissing.join(', ')}`);
  it.skipIf(cgroupsMissing.length > 0)(
    'cgroups: the process back in its v1 and v2 cgroups and a thread in its own; a cgroup gone stops the restore by name unless --cgroups create',
    async () => {
      const dir = makeTempDir('task-cgroups');
      const name = `ckpt-test-${process.pid}-${Date.now()}`;
      const [pids, v2, cpu] = CGROUP_ROOTS.map((r) => path.join(r, name));
      const thread = path.join(cpu, 'thread');
      const made = [pids, v2, thread];
      for (const d of made) fs.mkdirSync(d, { recursive: true });
      const removeCgroups = async () => {
        for (const d of [pids, v2, thread, cpu]) {
          await waitFor(
            () => {
              try {
                fs.rmdirSync(d);
              } catch (e) {
                return (e as NodeJS.ErrnoException).code === 'ENOENT';
              }
              return true;
            },
            10_000,
            () => `cannot remove cgroup ${d}`,
          );
        }
      };
      try {
        const reportFile = path.join(dir, 'report');
        const go = path.join(dir, 'go');
        const img = path.join(dir, 'img');
        fs.writeFileSync(reportFile, '');
        const { pid } = await runFixture(dir, [path.join(BUILD_DIR, 'cgroups'), reportFile, go, pids, v2, '--', thread], {
          name: 'cgroups',
          noNamespace: true,
        });
        await waitForLine(reportFile, /^ready \d+$/);
        expect(readLines(reportFile).filter((l) => l.startsWith('FAIL'))).toEqual([]);
        expect(fs.readFileSync(path.join(pids, 'cgroup.procs'), 'utf8').trim()).toBe(String(pid));
        await dumpOk(pid, img);
        await waitNotAlive(pid);
        // The pids cgroup is gone: the restore stops, naming it, and leaves nothing behind.
        await waitFor(
          () => {
            try {
              fs.rmdirSync(pids);
              return true;
            } catch {
              return false;
            }
          },
          10_000,
          () => `cannot remove ${pids}`,
        );
        const r = await ckpt(['restore', '-D', img, '--detach']);
        expectCleanError(r, new RegExp(`pid ${pid}`), `pids:/${name}`, /--cgroups create/);
        expect(procState(pid), 'nothing left behind').toBeNull();
        // Asked to, the restore makes it again; from inside, every cgroup reads as before.
        const from = readLines(reportFile).length;
        expectOk(await ckpt(['restore', '-D', img, '--detach', '--cgroups', 'create']));
        track(pid, 'cgroups');
        expect(fs.readFileSync(path.join(pids, 'cgroup.procs'), 'utf8').trim()).toBe(String(pid));
        fs.writeFileSync(go, '');
        await waitForLine(reportFile, /^done$/, 10_000, from);
        expect(readLines(reportFile).slice(from)).toEqual(['ok process-cgroups', 'ok thread-cgroups', 'done']);
        await cleanupProcesses();
      } finally {
        await removeCgroups();
      }
    },
  );

  it('seccomp: strict mode, filters shared by threads (TSYNC works after the restore), a filter of one thread, filters inherited by a child', async () => {
    const dir = makeTempDir('task-seccomp');
    const reportFile = path.join(dir, 'report');
    const go = path.join(dir, 'go');
    const img = path.join(dir, 'img');
    fs.writeFileSync(reportFile, '');
    const { pid } = await runFixture(dir, [path.join(BUILD_DIR, 'seccomp'), reportFile, go], { name: 'seccomp', noNamespace: true });
    const main = Number((await waitForLine(reportFile, /^ready (\d+)$/)).match[1]);
    expect(main).toBe(pid);
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    for (const k of kids) track(k, 'seccomp');
    const modes = () => [pid, ...kids].map((p) => /^Seccomp:\s*(\d)/m.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))![1]).join(',');
    const before = modes();
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const from = readLines(reportFile).length;
    await restoreOk(img, pid, 'seccomp');
    for (const k of kids) track(k, 'seccomp');
    expect(modes(), 'seccomp modes of the main process and its two children').toBe(before);
    fs.writeFileSync(go, '');
    await waitForLine(reportFile, /^done$/, 15_000, from);
    await waitForLine(reportFile, /^q1 done$/, 15_000, from);
    const lines = readLines(reportFile).slice(from);
    expect(
      lines.filter((l) => !l.startsWith('ok ') && !/done$/.test(l)),
      lines.join('\n'),
    ).toEqual([]);
    expect(lines.filter((l) => l.startsWith('ok ')).sort(), lines.join('\n')).toEqual(
      ['inherit-main', 'inherit-thread', 'shared-main', 'shared-t1', 'shared-t2', 'strict', 'tsync', 'tsync-t1', 'tsync-t2'].map((c) => `ok ${c}`),
    );
  });

  for (const [what, re] of [['deadline', /SCHED_DEADLINE/]] as const) {
    it(`${what}: refused by name before anything is copied; the process carries on`, async () => {
      const dir = makeTempDir(`task-${what}`);
      const { pid, stdout } = await runFixture(dir, [path.join(BUILD_DIR, 'refused'), what], { name: what });
      await waitForLine(stdout, /^ready$/);
      await waitForTick(stdout, 1);
      const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img')]);
      expectCleanError(r, new RegExp(`pid ${pid}`), re);
      expectRunningFree(pid, `${what} after the refused dump`);
      await waitForTick(stdout, lastTick(stdout) + 2);
    });
  }
});

describe('POSIX timer overruns', () => {
  it('the overrun count of each timer comes back (process- and thread-directed, with its next signal pending), and a running timer counts afresh', async () => {
    const { lines } = await checksAfterRestore('overrun');
    expect(lines, lines.join('\n')).toEqual(['ok overrun-a', 'ok overrun-b', 'ok overrun-c', 'ok thread-directed', 'ok pending', 'ok running', 'done']);
  });
});
