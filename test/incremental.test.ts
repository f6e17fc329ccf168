// Incremental dumps (write tracking with userfaultfd-wp, no soft-dirty): a pre-dump, then dumps
// with --parent that save only the pages written since, into a chain of images. The fixture
// (incremental.c) changes its memory step by step (1% of a 32 MiB area, pages dropped, an area
// mapped, moved, unmapped, the heap, a private file mapping) and checks every byte from inside
// after a restore against what its step must show. Every generation of the chain restores
// exactly; a chain with a parent missing or changed is refused; tracking that can no longer be
// trusted (another tracked dump since, a failed dump) gives a full image, never a wrong one.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startMigrant, verify } from './migrant.js';
import {
  BUILD_DIR,
  ckpt,
  expectCleanError,
  expectOk,
  killAndWaitGone,
  makeTempDir,
  readLines,
  runFixture,
  startReporting,
  track,
  useCleanup,
  waitFor,
  waitForLine,
} from './helpers.js';

useCleanup();

const FULL_PAGES = (32 + 4) * 256; // big and moved, at least

interface Job {
  pid: number;
  work: string;
  report: string;
  img: string;
}

async function start(): Promise<Job> {
  const dir = makeTempDir('incremental');
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const report = path.join(dir, 'report');
  const fixture = path.join(BUILD_DIR, 'incremental');
  await runFixture(dir, [fixture, work, report], { noNamespace: true, name: 'incremental' });
  const pid = Number((await waitForLine(report, /^ready (\d+)$/)).match[1]);
  track(pid, fixture);
  return { pid, work, report, img: path.join(dir, 'img') };
}

/** Live ckpt-memtrack helpers holding a pidfd of `pid`. */
function holdersOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      if (!stat.includes('(ckpt-memtrack)') || / Z /.test(stat)) continue;
      const fdinfo = fs.readdirSync(`/proc/${name}/fdinfo`).map((fd) => fs.readFileSync(`/proc/${name}/fdinfo/${fd}`, 'utf8'));
      if (fdinfo.some((t) => new RegExp(`^Pid:\\s+${pid}$`, 'm').test(t))) out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out;
}

async function step(job: Job, k: number): Promise<void> {
  fs.writeFileSync(path.join(job.work, `step-${k}`), '');
  await waitForLine(job.report, new RegExp(`^stepped ${k}$`));
}

type DumpJson = { generation: number; imageBytes: number; stats: Record<string, number | string> };

async function dump(job: Job, args: string[], env?: Record<string, string>): Promise<DumpJson> {
  const r = await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--keep', '20', '--json', ...args], { env });
  expectOk(r);
  return JSON.parse(r.stdout) as DumpJson;
}

/** Restores a generation (the process killed first) and returns what it says of its memory. */
async function restoreAndCheck(job: Job, generation: number): Promise<string> {
  await killAndWaitGone(job.pid);
  // The step files go (step() writes each anew): a process dumped just after it looked for
  // WORK/go (not there yet) would otherwise find its next step's file once restored, and take that
  // step before it checks.
  for (const f of fs.readdirSync(job.work)) if (/^step-\d+$/.test(f)) fs.rmSync(path.join(job.work, f));
  const go = path.join(job.work, 'go');
  fs.writeFileSync(go, '');
  const from = readLines(job.report).length;
  try {
    expectOk(await ckpt(['restore', '-D', job.img, '-g', String(generation), '--detach']));
    track(job.pid, 'incremental');
    return (await waitForLine(job.report, /^(ok|FAIL) step/, 15_000, from)).match.input!;
  } finally {
    fs.rmSync(go, { force: true });
  }
}

describe('incremental dumps', () => {
  it('a pre-dump, then dumps with --parent saving only what changed: every generation of the chain restores every byte', async () => {
    const job = await start();
    const pre = await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img, '--keep', '20', '--json']);
    expectOk(pre);
    const full = JSON.parse(pre.stdout) as DumpJson;
    expect(full.stats['memory.trackedProcesses']).toBe(1);
    expect(Number(full.stats['memory.pages'])).toBeGreaterThan(FULL_PAGES);
    const gens: DumpJson[] = [full];
    for (let k = 1; k <= 5; k++) {
      await step(job, k);
      gens.push(await dump(job, ['--parent', job.img]));
    }
    // Step 1 wrote 1% of big (82 pages) and the heap: a few hundred pages at most, the rest is
    // left to the chain. Step 3 moved 4 MiB (mremap): those count as written.
    const pages = gens.map((g) => Number(g.stats['memory.pages']));
    expect(pages[1], pages.join(' ')).toBeLessThan(FULL_PAGES / 20);
    expect(pages[3], pages.join(' ')).toBeGreaterThanOrEqual(1024);
    expect(pages[5], pages.join(' ')).toBeLessThan(FULL_PAGES / 20);
    for (const g of gens.slice(1)) expect(Number(g.stats['memory.parentBytes'])).toBeGreaterThan(30 << 20);
    const show = await ckpt(['show', job.img, '--verify']);
    expectOk(show);
    expect(show.stdout).toMatch(/incremental: adds to .*\/5; the chain \(5 images above this one\)/);
    expect(show.stdout).toContain('in every image of the chain');
    // The latest, one in the middle, the first: each is exactly its step.
    expect(await restoreAndCheck(job, 6)).toBe('ok step 5');
    expect(await restoreAndCheck(job, 4)).toBe('ok step 3');
    expect(await restoreAndCheck(job, 2)).toBe('ok step 1');
    expect(await restoreAndCheck(job, 1)).toBe('ok step 0');
  });

  it('ckpt image compact makes the chain one full image, which restores on its own and can be added to', async () => {
    const job = await start();
    expectOk(await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img, '--keep', '20']));
    for (let k = 1; k <= 4; k++) {
      await step(job, k);
      expectOk(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--parent', job.img, '--keep', '20']));
    }
    const r = await ckpt(['image', 'compact', '-D', job.img, '--keep', '1', '--json']);
    expectOk(r);
    const c = JSON.parse(r.stdout) as { generation: number; chain: number; from: string };
    expect(c).toMatchObject({ generation: 6, chain: 4, from: path.join(job.img, '5') });
    // The chain went (--keep 1): the new generation stands alone.
    expect(fs.readdirSync(job.img).filter((n) => /^\d+$/.test(n))).toEqual(['6']);
    const show = await ckpt(['show', job.img, '--verify']);
    expectOk(show);
    expect(show.stdout).not.toContain('incremental:');
    // A dump may add to the whole image, as to the one it was made from.
    await step(job, 5);
    const next = await dump(job, ['--parent', job.img]);
    expect(Number(next.stats['memory.parentBytes'])).toBeGreaterThan(30 << 20);
    expect(await restoreAndCheck(job, next.generation)).toBe('ok step 5');
    expect(await restoreAndCheck(job, 6)).toBe('ok step 4');
  });

  it('--compress: zstd blobs (checked by the zstd tool too), a compressed chain restores every byte, and compacts', async () => {
    const job = await start();
    expectOk(await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img, '--keep', '20', '--compress']));
    for (let k = 1; k <= 2; k++) {
      await step(job, k);
      expectOk(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--parent', job.img, '--keep', '20', '--compress']));
    }
    for (const g of ['1', '2', '3']) {
      const blobs = fs.readdirSync(path.join(job.img, g)).filter((n) => n.startsWith('pages-'));
      expect(blobs.length).toBe(1);
      expect(blobs[0]).toMatch(/\.img\.zst$/);
      execFileSync('zstd', ['-tq', path.join(job.img, g, blobs[0])]);
    }
    expect(await restoreAndCheck(job, 3)).toBe('ok step 2');
    expectOk(await ckpt(['image', 'compact', '-D', job.img]));
    expect(await restoreAndCheck(job, 4)).toBe('ok step 2');
    expect(await restoreAndCheck(job, 2)).toBe('ok step 1');
  });

  it('a chain whose parent is changed or missing is refused, naming it; --keep keeps what kept generations add to', async () => {
    const job = await start();
    expectOk(await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img, '--keep', '2']));
    for (let k = 1; k <= 3; k++) {
      await step(job, k);
      expectOk(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--parent', job.img, '--keep', '2']));
    }
    // Generations 3 and 4 are kept, and 1 and 2 because 3 adds to them.
    expect(
      fs
        .readdirSync(job.img)
        .filter((n) => /^\d+$/.test(n))
        .sort(),
    ).toEqual(['1', '2', '3', '4']);
    await killAndWaitGone(job.pid);
    // A page of generation 2 changed: its digest no longer matches.
    const pages2 = fs.readdirSync(path.join(job.img, '2')).find((n) => n.startsWith('pages-'))!;
    const file = path.join(job.img, '2', pages2);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from('tampered'), 0, 8, 100);
    fs.closeSync(fd);
    expectCleanError(await ckpt(['restore', '-D', job.img, '--detach']), /pages-\d+\.img does not match its BLAKE3 digest/);
    // Generation 1 gone: the chain is broken, and the restore says which image it needs.
    fs.rmSync(path.join(job.img, '1'), { recursive: true });
    expectCleanError(await ckpt(['restore', '-D', job.img, '--detach']), /is an increment of .*\/1, which cannot be read/);
    expectCleanError(await ckpt(['show', job.img]), /is an increment of .*\/1/);
  });

  it('tracking that cannot be trusted gives a full image: an older parent after a newer tracked dump, a failed dump; a plain dump in between does not matter', async () => {
    const job = await start();
    const other = `${job.img}-other`;
    expectOk(await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img, '--keep', '20'])); // 1
    await step(job, 1);
    // A plain dump elsewhere does not touch the tracking.
    expectOk(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', other]));
    const two = await dump(job, ['--parent', job.img]); // 2, adds to 1
    expect(Number(two.stats['memory.parentBytes'])).toBeGreaterThan(30 << 20);
    await step(job, 2);
    // Adding to 1 again: the tracking now counts from 2, so nothing can be left to 1.
    const three = await dump(job, ['--parent', path.join(job.img, '1')]); // 3
    expect(three.stats['memory.parentBytes']).toBeUndefined();
    expect(String(three.stats.parent)).toMatch(/not used: a full image/);
    // The tracking of 2 was ended before the new one registered the areas: all of them tracked.
    expect(three.stats['memory.trackingOff']).toBeUndefined();
    await step(job, 3);
    // A dump that fails after it reset the tracking: the next one cannot add to 3.
    const failed = await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--parent', job.img], { env: { CKPT_FAULT: 'dump:records:error' } });
    expect(failed.code).not.toBe(0);
    const four = await dump(job, ['--parent', job.img]); // 4: full
    expect(four.stats['memory.parentBytes']).toBeUndefined();
    await step(job, 4);
    const five = await dump(job, ['--parent', job.img]); // 5, adds to 4
    expect(Number(five.stats['memory.parentBytes'])).toBeGreaterThan(30 << 20);
    expect(await restoreAndCheck(job, 5)).toBe('ok step 4');
    expect(await restoreAndCheck(job, 3)).toBe('ok step 2');
    expect(await restoreAndCheck(job, 2)).toBe('ok step 1');
  });

  it('a ckpt killed during a tracked dump (its pre-copy holding the process stopped, or later) leaves the process running untouched and no helper behind; the next dump is full and exact', async () => {
    for (const point of ['dump:precopy', 'dump:records']) {
      const job = await start();
      expectOk(await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img, '--keep', '20']));
      await step(job, 1);
      const killed = await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--parent', job.img], { env: { CKPT_FAULT: `${point}:kill` } });
      expect(killed.signal, `ckpt was killed at ${point}`).toBe('SIGKILL');
      // Not left stopped or traced (the pre-copy stops it under ptrace, which ends with ckpt).
      await waitFor(
        () => /^TracerPid:\s+0$/m.test(fs.readFileSync(`/proc/${job.pid}/status`, 'utf8')),
        5000,
        () => `pid ${job.pid} is still traced after a kill at ${point}`,
      );
      // The helper of the killed dump exits (nothing committed), the parent's was ended.
      await waitFor(
        () => holdersOf(job.pid).length === 0,
        5000,
        () => `a ckpt-memtrack still holds the tracking of ${job.pid}: ${holdersOf(job.pid).join(', ')}`,
      );
      const smaps = fs.readFileSync(`/proc/${job.pid}/smaps`, 'utf8');
      expect(smaps, 'no area is left registered with a userfaultfd').not.toMatch(/^VmFlags:.* uw/m);
      await step(job, 2);
      const next = await dump(job, ['--parent', job.img]);
      expect(next.stats['memory.parentBytes']).toBeUndefined();
      expect(await restoreAndCheck(job, next.generation)).toBe('ok step 2');
      await killAndWaitGone(job.pid);
    }
  });

  it('pages written between the pre-copy and the freeze are saved as the freeze found them: a process rewriting its memory fast restores exactly', async () => {
    // The rewriter rewrites a page at every step, as fast as it can, and counts its steps in its
    // memory and in an fd's offset (the kernel's): an increment that took a page from its
    // pre-copy after the process wrote it again would come back older than the offset.
    const { dir, report, pid, fixture } = await startReporting('rewriter', 'incremental-precopy');
    const img = path.join(dir, 'img');
    const at = ['-t', String(pid), '-D', img, '--keep', '20', '--json'];
    expectOk(await ckpt(['pre-dump', ...at]));
    const gens: DumpJson[] = [];
    for (let k = 1; k <= 4; k++) {
      const r = await ckpt(['dump', '-R', '--parent', img, ...at]);
      expectOk(r);
      const g = JSON.parse(r.stdout) as DumpJson;
      // Read ahead while it ran (what it wrote since the last dump: at 16 pages a millisecond,
      // megabytes), then only what it wrote since, while frozen.
      expect(Number(g.stats['memory.precopyBytes']), JSON.stringify(g.stats)).toBeGreaterThan(1 << 20);
      expect(Number(g.stats['memory.precopyUsedBytes']), JSON.stringify(g.stats)).toBeGreaterThan(1 << 20);
      expect(Number(g.stats['memory.parentBytes'])).toBeGreaterThan(0);
      gens.push(g);
    }
    const r = await ckpt(['dump', '--parent', img, ...at]);
    expectOk(r);
    gens.push(JSON.parse(r.stdout) as DumpJson);
    for (const g of [gens[4], gens[1]]) {
      await killAndWaitGone(pid);
      const from = readLines(report).length;
      expectOk(await ckpt(['restore', '-D', img, '-g', String(g.generation), '--detach']));
      track(pid, fixture);
      process.kill(pid, 'SIGUSR1');
      expect((await waitForLine(report, /^(ok|FAIL) rewriter/, 15_000, from)).match.input).toMatch(/^ok rewriter steps=\d+$/);
    }
  });

  it('no write is lost to the pre-copy: a process writing 16 pages a millisecond, each page once, restores every page from a chain of increments', async () => {
    // The migrant writes 6% of its 1 GiB a second (16 pages a millisecond, a page a second time
    // only after 16 s): a write the pre-copy's walk missed would stay missed, and the page
    // come back as the chain held it before. Its versions (in its memory too) say what each page
    // must hold.
    const m = await startMigrant(1024, 60);
    const img = path.join(makeTempDir('incremental-precopy-writes'), 'img');
    const at = ['--app', m.app, '-D', img, '--keep', '20', '--json'];
    expectOk(await ckpt(['pre-dump', ...at]));
    for (let k = 1; k <= 10; k++) {
      const r = await ckpt(['dump', '-R', '--parent', img, ...at]);
      expectOk(r);
      expect(Number((JSON.parse(r.stdout) as DumpJson).stats['memory.precopyBytes'])).toBeGreaterThan(0);
    }
    const r = await ckpt(['dump', '--parent', img, ...at]);
    expectOk(r);
    await waitFor(
      () => !fs.existsSync(`/proc/${m.pid}`),
      5000,
      () => `pid ${m.pid} still runs after its dump`,
    );
    const back = await ckpt(['restore', '-D', img, '--detach', '--json']);
    expectOk(back);
    const j = JSON.parse(back.stdout) as { pids: number[]; main: number };
    for (const p of j.pids) track(p, 'migrant');
    await verify(j.main, m.report);
    // Twelve dumps of a 1 GiB process that writes all the while: 22 s alone, 42-61 s beside the
    // other test files (CI), where 60 s was the limit.
  }, 180_000);

  it('no write is lost to a walk of the page tables done in pieces: writes scattered over more regions than one call returns, or than the kernel buffers, restore exactly', async () => {
    // Step 1 leaves 8192 regions (written or not) in the area, more than one PAGEMAP_SCAN call
    // returns; step 2 leaves 1265, which the kernel walks in pieces of 512 and returns at once
    // (Linux 6.18 then gives a walk_end short of the end: continued from there, the second walk
    // found the last pages clean, protected by the first, and their writes were lost); step 3
    // writes the last page alone, which the chain must then hold as step 3 wrote it.
    const { dir, report, pid, fixture } = await startReporting('scatter', 'incremental-scatter');
    const img = path.join(dir, 'img');
    const at = ['-t', String(pid), '-D', img, '--keep', '20'];
    expectOk(await ckpt(['dump', '-R', '--track-mem', ...at]));
    for (let k = 1; k <= 3; k++) {
      const from = readLines(report).length;
      process.kill(pid, 'SIGUSR2');
      await waitForLine(report, new RegExp(`^stepped ${k}$`), 10_000, from);
      expectOk(await ckpt(['dump', '--parent', img, ...(k < 3 ? ['-R'] : []), ...at]));
    }
    await waitFor(
      () => !fs.existsSync(`/proc/${pid}`),
      5000,
      () => `pid ${pid} still runs after its dump`,
    );
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    track(pid, fixture);
    const from = readLines(report).length;
    process.kill(pid, 'SIGUSR1');
    expect((await waitForLine(report, /^(ok|FAIL) scatter/, 10_000, from)).match.input).toBe('ok scatter steps=3');
  });

  it('--parent of another process, or of no image, is refused before anything is frozen', async () => {
    const a = await start();
    const b = await start();
    expectOk(await ckpt(['pre-dump', '-t', String(a.pid), '-D', a.img]));
    expectCleanError(await ckpt(['dump', '-R', '-t', String(b.pid), '-D', b.img, '--parent', a.img]), `is an image of pid ${a.pid}, not of pid ${b.pid}`);
    expectCleanError(await ckpt(['dump', '-R', '-t', String(b.pid), '-D', b.img, '--parent', `${a.img}-nothing`]), /no image at/);
  });
});
