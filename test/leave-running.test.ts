// dump --leave-running: the process must keep running untouched (not killed, not left traced or
// stopped), and the image must still restore it to the state it had at dump time.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bin,
  checksAfterRestore,
  ckpt,
  expectConsecutive,
  expectOk,
  expectRunningFree,
  isAlive,
  killAndWaitGone,
  lastTick,
  makeTempDir,
  readText,
  restoreOk,
  runFixture,
  startReporting,
  sleep,
  tail,
  ticks,
  useCleanup,
  waitFor,
  waitForLine,
  waitForTick,
  USR1_RE,
} from './helpers.js';

useCleanup();

/** cowsnap: the restored process stops writing soon after its restart (see the fixture). */
const stopWriting = ({ work }: { work: string }) => fs.rmSync(path.join(work, 'run'));

function sharedCounter(outdir: string): number {
  return Number(fs.readFileSync(path.join(outdir, 'shared.dat')).readBigUInt64LE(0));
}

function outNumbers(file: string): number[] {
  const t = readText(file);
  return t
    .slice(0, t.lastIndexOf('\n') + 1)
    .split('\n')
    .slice(0, -1)
    .map((l, i) => {
      if (!/^\d+$/.test(l)) throw new Error(`out.txt line ${i + 1} is ${JSON.stringify(l)}`);
      return Number(l);
    });
}

/** The state classes in a dump's and a restore's order (the stages of `ms.<stage>` in --json stats). */
const DUMP_CLASSES = ['pids', 'credentials', 'threads', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'registers'];
const RESTORE_CLASSES = ['files', 'sockets', 'sysvipc', 'signals', 'threads', 'credentials', 'registers'];
/** A --leave-running dump's stages. */
const LEFT_RUNNING_DUMP_STAGES = ['setup', 'freeze', 'fds', ...DUMP_CLASSES, 'records', 'thawed', 'commit', 'thaw'];

/**
 * A dump's or a restore's time by stage (`ms.<stage>` of its --json stats): exactly the stages
 * named, each a time, together no more than the whole.
 */
function stagesOf(stats: Record<string, number | string>, names: string[]): Record<string, number> {
  const stages = Object.fromEntries(
    Object.entries(stats)
      .filter(([k]) => k.startsWith('ms.'))
      .map(([k, v]) => [k.slice(3), Number(v)]),
  );
  expect(Object.keys(stages).sort(), JSON.stringify(stats)).toEqual([...names].sort());
  for (const v of Object.values(stages)) expect(v).toBeGreaterThanOrEqual(0);
  const sum = Object.values(stages).reduce((a, b) => a + b, 0);
  expect(sum, JSON.stringify(stats)).toBeLessThanOrEqual(Number(stats.wallMs) + 0.001);
  return stages;
}

describe('dump --leave-running', () => {
  it('leaves the process running untraced, and the image restores the dump-time state', async () => {
    const dir = makeTempDir('leave');
    const outdir = path.join(dir, 'out');
    fs.mkdirSync(outdir);
    const img = path.join(dir, 'img');
    const workload = bin('workload');
    const { pid, stdout } = await runFixture(dir, [workload, '16', outdir], { name: 'workload' });
    await waitForTick(stdout, 5);

    const tickAtDumpStart = lastTick(stdout);
    // Watch the process while the dump runs: it must never die.
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
    const tickAtDumpEnd = lastTick(stdout);
    expect(diedDuringDump, 'the process died during dump --leave-running').toBe(false);

    // Untouched afterwards: not traced, not stopped, still ticking, ticks consecutive.
    expectRunningFree(pid, 'process after dump --leave-running');
    await waitForTick(stdout, tickAtDumpEnd + 3);
    expectRunningFree(pid, 'process after dump --leave-running');
    // Let it run well past the dump point, so a restore to the dump point is visibly "earlier".
    const lastBeforeKill = await waitForTick(stdout, tickAtDumpEnd + 30, 30_000);
    expectConsecutive(ticks(stdout), 1, 'ticks of the process left running');
    await killAndWaitGone(pid);
    const killedAt = lastTick(stdout);
    expect(killedAt).toBeGreaterThanOrEqual(lastBeforeKill);
    const sharedAtKill = sharedCounter(outdir);

    await restoreOk(img, pid, workload);

    // The restored process resumes from the dump point: its counter (written to the shared file each
    // tick) restarts from the dump-time value, below what the killed process had reached.
    const resumed = await waitFor(
      () => {
        const v = sharedCounter(outdir);
        return v !== sharedAtKill ? v : undefined;
      },
      15_000,
      () => `the restored process never wrote its counter to shared.dat (still ${sharedAtKill})`,
    );
    expect(resumed, 'counter after restore (from shared.dat)').toBeGreaterThan(tickAtDumpStart);
    expect(resumed, 'counter after restore (from shared.dat)').toBeLessThan(killedAt);

    const fromLen = readText(stdout).length;
    process.kill(pid, 'SIGUSR1');
    const usr1 = await waitFor(
      () => {
        const text = readText(stdout);
        // the restored stdout offset may be the dump-time one (overwriting) or the end (append):
        // look for the usr1 line anywhere
        const m = text
          .split('\n')
          .map((l) => l.match(USR1_RE))
          .find((x) => x);
        return m ?? undefined;
      },
      20_000,
      () => `no usr1 line (stdout length ${fromLen})\n${tail(stdout)}`,
    );
    const [, tick, heap, priv, shared, fpu, mask] = usr1;
    expect(Number(tick), usr1[0]).toBeGreaterThan(tickAtDumpStart);
    expect(Number(tick), `${usr1[0]}: the restored process did not resume from the dump point`).toBeLessThan(killedAt);
    expect({ heap, priv, shared, fpu, mask }, usr1[0]).toEqual({ heap: 'ok', priv: 'ok', shared: 'ok', fpu: 'ok', mask: 'ok' });
    expectRunningFree(pid, 'restored process');

    // out.txt (written by the program at its own file offset): the restored process rewrites the
    // same lines from the dump-time offset, so once it has passed the kill point the file is
    // still exactly 1..N.
    const outFile = path.join(outdir, 'out.txt');
    await waitFor(
      () => {
        const n = outNumbers(outFile);
        return sharedCounter(outdir) > killedAt + 2 && n.length > killedAt + 2;
      },
      30_000,
      () => `the restored process did not get past the kill point (counter ${sharedCounter(outdir)}, killed at ${killedAt})`,
    );
    expectConsecutive(outNumbers(outFile), 1, 'out.txt after restoring to an earlier point');
    expect(readText(stdout)).not.toMatch(/^(fpumismatch|sleepret|fatal|outerror)/m);
  });

  it("collects ckpt's own heap before the freeze only where the frozen stages may make V8 collect: not for a small process in the command's own process", async () => {
    const dir = makeTempDir('gcfreeze');
    const one = await runFixture(dir, [bin('sleeper'), 'nanosleep', '600'], { name: 'one', json: true, noNamespace: true });
    const r1 = await ckpt(['dump', '-t', String(one.pid), '-D', path.join(dir, 'img1'), '--leave-running', '--json']);
    expectOk(r1);
    expect(JSON.parse(r1.stdout).stats['gc.beforeFreeze'], r1.stdout).toMatch(/^skipped/);
    expectRunningFree(one.pid);
    // A tree (the sleeper's parent, with its child): collected.
    const tree = await runFixture(dir, ['sh', '-c', `${bin('sleeper')} nanosleep 600 & wait`], { name: 'tree', json: true, noNamespace: true });
    await waitFor(
      () => fs.readFileSync(`/proc/${tree.pid}/task/${tree.pid}/children`, 'utf8').trim() !== '',
      10_000,
      () => 'the child of the tree',
    );
    const r2 = await ckpt(['dump', '-t', String(tree.pid), '-D', path.join(dir, 'img2'), '--leave-running', '--json']);
    expectOk(r2);
    expect(JSON.parse(r2.stdout).stats['gc.beforeFreeze'], r2.stdout).toBe('collected');
    expectRunningFree(tree.pid);
  });

  it('reads memory from a copy-on-write snapshot: the image holds the freeze instant while the process writes on', async () => {
    const { lines, dump, restore } = await checksAfterRestore('cowsnap', stopWriting, {
      leaveRunning: true,
      // A pause between pieces of the copy, where the process writes on: a page read then would show.
      dumpEnv: { CKPT_FAULT: 'dump:pages:sleep=300' },
    });
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(lines).toEqual(['ok snapshot', 'ok dontfork-bytes', 'ok wipeonfork-bytes', 'ok dontfork-advice', 'ok wipeonfork-advice', 'done']);
    expect(dump.stats['memory.snapshots']).toBe(1);
    expect(Number(dump.stats.frozenMs)).toBeLessThan(Number(dump.stats.wallMs));
    // Where the time went, stage by stage: the pause injected into the copy is in the work done
    // once the process was thawed, not in the memory stage of the freeze.
    const dumpStages = stagesOf(dump.stats, LEFT_RUNNING_DUMP_STAGES);
    expect(dumpStages.thawed).toBeGreaterThanOrEqual(300);
    expect(dumpStages.memory).toBeLessThan(dumpStages.thawed);
    stagesOf(restore.stats, ['open', 'setup', 'pids+memory', ...RESTORE_CLASSES, 'resume']);
  });

  it('--frozen-copy reads memory while the process is frozen: the same image, no snapshot', async () => {
    const { lines, dump } = await checksAfterRestore('cowsnap', stopWriting, {
      leaveRunning: true,
      dumpArgs: ['--frozen-copy'],
      dumpEnv: { CKPT_FAULT: 'dump:pages:sleep=300' },
    });
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(lines.at(-1)).toBe('done');
    expect(dump.stats['memory.snapshots']).toBeUndefined();
    expect(dump.stats['memory.frozenCopy']).toMatch(/--frozen-copy/);
    // Read while frozen: the injected pause is in the memory stage, and nothing is left for after the thaw.
    const stages = stagesOf(dump.stats, LEFT_RUNNING_DUMP_STAGES);
    expect(stages.memory).toBeGreaterThanOrEqual(300);
    expect(stages.thawed).toBeLessThan(stages.memory);
  });
});

// A --leave-running dump of a process with much memory reads its smaps (VmFlags) before the freeze
// too, and uses what it read there when the frozen layout is the same: the frozen read must then
// agree before the thaw, or the dump is made again from the frozen read alone. A thread of
// flagflip marks an area DONTDUMP and DODUMP in turn without end, so the two reads often disagree.
describe('--leave-running: area flags changed as the dump begins', () => {
  it('a dump whose two reads of the flags disagree is made again, saying why; every dump succeeds, the process runs on unharmed, and a dump made again restores it as it found it', async () => {
    const { dir, report, pid, fixture } = await startReporting('flagflip', 'flagflip');
    let first = 0;
    let again = 0;
    let madeAgain: { img: string; flip: string } | undefined;
    for (let i = 0; i < 40 && !(first >= 2 && again >= 2); i++) {
      const img = path.join(dir, `img-${i}`);
      const r = await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running', '--json']);
      expectOk(r);
      const { stats } = JSON.parse(r.stdout);
      if (stats['dump.again'] === undefined) first++;
      else {
        again++;
        madeAgain = { img, flip: stats['memory.dontdumpBytes'] ? 'zero' : 'pattern' };
        expect(stats['dump.again']).toMatch(
          /^pid \d+ \(flagflip\): memory area [0-9a-f]+-[0-9a-f]+ changed \(its flags, from "[a-z ]+" to "[a-z ]+"\) between the reads of its smaps before and during the freeze$/,
        );
      }
      // The flipping area left out (DONTDUMP at the freeze) or saved, nothing else left out.
      expect([undefined, 1024 * 1024], r.stdout).toContain(stats['memory.dontdumpBytes']);
      expectRunningFree(pid, `flagflip after dump ${i}`);
    }
    expect(first, `dumps made at the first attempt (${again} made again)`).toBeGreaterThan(0);
    expect(again, `dumps made again (${first} at the first attempt)`).toBeGreaterThan(0);
    // From inside: its memory intact, and its thread still turning.
    const from = readText(report).split('\n').length - 1;
    process.kill(pid, 'SIGUSR1');
    const { match } = await waitForLine(report, /^(ok|FAIL) ?(.*)$/, 15_000, from);
    expect(match[0]).toMatch(/^ok \d+ flip=pattern$/);
    expect(Number(match[2].split(' ')[0])).toBeGreaterThan(0);
    // A dump made again restores: the heap intact, the flipping area as that dump found it
    // (its pattern, or zeros where it was left out as DONTDUMP), its thread turning again.
    await killAndWaitGone(pid);
    const atKill = readText(report).split('\n').length - 1;
    await restoreOk(madeAgain!.img, pid, fixture);
    process.kill(pid, 'SIGUSR1');
    const restored = await waitForLine(report, /^(ok|FAIL) ?(.*)$/, 15_000, atKill);
    expect(restored.match[0]).toMatch(new RegExp(`^ok \\d+ flip=${madeAgain!.flip}$`));
    process.kill(pid, 'SIGUSR1');
    const later = await waitForLine(report, /^(ok|FAIL) ?(.*)$/, 15_000, atKill + 1);
    expect(later.match[0]).toMatch(/^ok \d+ flip=/);
    expect(Number(later.match[2].split(' ')[0]), 'turns of its thread after the restore').toBeGreaterThan(0);
  });
});
