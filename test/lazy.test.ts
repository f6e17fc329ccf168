// restore --lazy (post-copy, userfaultfd): the process runs before its memory is back, its faults
// served by ckpt-lazy from the image and the rest streamed in behind. The fixture (lazy.c) holds
// a pattern in 256 MiB, small areas, its heap and stack; after the restore it says how much of the
// big area was resident when it first ran (proof of laziness), then checks every byte, after a
// fork, a MADV_DONTNEED or an mremap of pages not yet in. Incremental chains restore lazily too; a
// helper killed mid-stream, or a damaged image, kills the process: it never runs on zeros or on
// bytes the image does not vouch for, nor to completion.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  cmdline,
  ckpt,
  expectOk,
  isAlive,
  killAndWaitGone,
  makeTempDir,
  readLines,
  runFixture,
  tail,
  track,
  useCleanup,
  waitFor,
  waitForLine,
} from './helpers.js';

useCleanup();

const MIB = 256;

interface Job {
  pid: number;
  work: string;
  report: string;
  img: string;
}

async function start(mib = MIB): Promise<Job> {
  const dir = makeTempDir('lazy');
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const report = path.join(dir, 'report');
  const fixture = path.join(BUILD_DIR, 'lazy');
  await runFixture(dir, [fixture, work, report, String(mib)], { noNamespace: true, name: 'lazy' });
  const pid = Number((await waitForLine(report, /^ready (\d+)$/)).match[1]);
  track(pid, fixture);
  return { pid, work, report, img: path.join(dir, 'img') };
}

/** Live helpers (ckpt-lazy and its watchdog) that hold a pidfd of `pid`. */
function helpersOf(pid: number): Array<{ pid: number; comm: string }> {
  const out: Array<{ pid: number; comm: string }> = [];
  for (const name of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const comm = /\((ckpt-lazy(?:-wd)?)\) (\S)/.exec(stat);
      if (!comm || comm[2] === 'Z') continue;
      const fdinfo = fs.readdirSync(`/proc/${name}/fdinfo`).map((fd) => fs.readFileSync(`/proc/${name}/fdinfo/${fd}`, 'utf8'));
      if (fdinfo.some((t) => new RegExp(`^Pid:\\s+${pid}$`, 'm').test(t))) out.push({ pid: Number(name), comm: comm[1] });
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Every live ckpt-lazy helper and watchdog. */
function allLazyHelpers(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return /\((ckpt-lazy|ckpt-lazy-wd)\) [^Z]/.test(fs.readFileSync(`/proc/${n}/stat`, 'utf8'));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/**
 * Restores the image (the process killed first) with WORK/mode = mode: the report's lines from
 * the restore on, once `until` shows (or the process is gone).
 */
async function restore(job: Job, mode: string, args: string[] = ['--lazy'], until = /^(ok|FAIL) all/): Promise<{ lines: string[]; residentKb: number }> {
  await killAndWaitGone(job.pid);
  fs.writeFileSync(path.join(job.work, 'mode'), mode);
  fs.writeFileSync(path.join(job.work, 'go'), '');
  const from = readLines(job.report).length;
  try {
    const r = await ckpt(['restore', '-D', job.img, '--detach', '--json', ...args]);
    expectOk(r);
    track(job.pid, 'lazy');
    // --json says how it was restored: the bytes left to ckpt-lazy, and those written first.
    const stats = (JSON.parse(r.stdout) as { stats: Record<string, number | string> }).stats;
    if (args.includes('--lazy')) expect(Number(stats['memory.lazyBytes']) + Number(stats['memory.eagerBytes']), r.stdout).toBeGreaterThan(0);
    else expect(stats['memory.lazyBytes'], r.stdout).toBeUndefined();
    await waitForLine(job.report, until, 60_000, from);
    const lines = readLines(job.report).slice(from);
    const resident = lines.map((l) => /^resident (\d+) of (\d+)$/.exec(l)).find(Boolean);
    return { lines, residentKb: Number(resident?.[1] ?? -1) };
  } finally {
    fs.rmSync(path.join(job.work, 'go'), { force: true });
  }
}

/** Waits until no helper holds the process any more (every page in, the helper gone). */
async function helpersDone(pid: number): Promise<void> {
  await waitFor(
    () => helpersOf(pid).length === 0,
    30_000,
    () => `helpers still hold pid ${pid}: ${JSON.stringify(helpersOf(pid))}`,
  );
}

describe('restore --lazy', () => {
  it('runs before its memory is back, and every byte is there (a fresh full image; the default stays eager)', async () => {
    const job = await start();
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    const lazy = await restore(job, 'check');
    expect(lazy.lines, lazy.lines.join('\n')).toContain('ok all');
    // Most of big was not there yet when the process first ran.
    expect(lazy.residentKb, lazy.lines.join('\n')).toBeGreaterThanOrEqual(0);
    expect(lazy.residentKb, lazy.lines.join('\n')).toBeLessThan((MIB << 10) / 2);
    await helpersDone(job.pid);
    // The process runs on once the helper is gone (its areas unregistered): checked again.
    expect(isAlive(job.pid)).toBe(true);
    // Without --lazy: all of it is there before it runs.
    const eager = await restore(job, 'check', []);
    expect(eager.lines).toContain('ok all');
    expect(eager.residentKb).toBeGreaterThanOrEqual((MIB << 10) - 1024);
    expect(helpersOf(job.pid)).toEqual([]);
  });

  it('a fork right after the restore: the child gets every byte too', async () => {
    const job = await start();
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    const r = await restore(job, 'fork');
    expect(r.lines, r.lines.join('\n')).toContain('ok child');
    expect(r.lines).toContain('ok all');
    expect(r.residentKb).toBeLessThan((MIB << 10) / 2);
    await helpersDone(job.pid);
  });

  it.each([
    ['MADV_DONTNEED on pages not yet in: they read as zeros, never the image data, and the rest is whole', 'dontneed'],
    ['mremap of pages not yet in: they are filled at their new place', 'mremap'],
  ])('%s', async (_name, mode) => {
    const job = await start();
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    const r = await restore(job, mode);
    expect(r.lines, r.lines.join('\n')).toContain('ok all');
    const untouched = r.lines.map((l) => /^untouched (\d+) of (\d+)$/.exec(l)).find(Boolean);
    expect(Number(untouched?.[1]), r.lines.join('\n')).toBeGreaterThan(0);
    await helpersDone(job.pid);
  });

  it('an incremental chain restores lazily: each page from the image of the chain that holds it', async () => {
    const job = await start();
    expectOk(await ckpt(['pre-dump', '-t', String(job.pid), '-D', job.img]));
    fs.writeFileSync(path.join(job.work, 'step'), '');
    await waitForLine(job.report, /^stepped$/);
    const d = await ckpt(['dump', '-t', String(job.pid), '-D', job.img, '--parent', job.img, '--json']);
    expectOk(d);
    expect(Number(JSON.parse(d.stdout).stats['memory.parentBytes'])).toBeGreaterThan((MIB / 2) << 20);
    const r = await restore(job, 'check');
    expect(r.lines, r.lines.join('\n')).toContain('ok all');
    expect(r.residentKb).toBeLessThan((MIB << 10) / 2);
    await helpersDone(job.pid);
  });

  it('a preforked tree (prefork.c): each process reads what it had, and what the children share with the parent stays shared', async () => {
    const dir = makeTempDir('lazy-prefork');
    const report = path.join(dir, 'report');
    const go = path.join(dir, 'go');
    const img = path.join(dir, 'img');
    fs.writeFileSync(report, '');
    const prefork = path.join(BUILD_DIR, 'prefork');
    const { pid } = await runFixture(dir, [prefork, report, go], { name: 'prefork', noNamespace: true });
    await waitForLine(report, /^ready \d+$/);
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    for (const k of kids) track(k, prefork);
    const pssKb = () => [pid, ...kids].reduce((sum, p) => sum + Number(/^Pss_Anon:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))![1]), 0);
    const before = pssKb();
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await killAndWaitGone(pid);
    expectOk(await ckpt(['restore', '-D', img, '--detach', '--lazy']));
    for (const p of [pid, ...kids]) track(p, prefork);
    const from = readLines(report).length;
    fs.writeFileSync(go, '');
    await waitForLine(report, /^done$/, 20_000, from);
    expect(readLines(report).slice(from).sort()).toEqual(['done', 'ok child0', 'ok child1', 'ok child2', 'ok child3', 'ok parent']);
    await helpersDone(pid);
    const after = pssKb();
    expect(after, `anonymous memory of the tree: ${before} kB at the dump, ${after} kB after the restore`).toBeLessThan(before * 1.25 + 4096);
  });

  it('a dump while the lazy restore is still streaming waits for it: the new image holds every page', async () => {
    const job = await start(1024);
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    await restore(job, 'idle', ['--lazy'], /^idle$/);
    const streaming = helpersOf(job.pid).length > 0;
    // Its arguments were written before it ran: ps reads them while the rest streams in.
    expect(cmdline(job.pid)?.[0]).toBe(path.join(BUILD_DIR, 'lazy'));
    const again = { ...job, img: path.join(path.dirname(job.img), 'img2') };
    expectOk(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', again.img]));
    expect(helpersOf(job.pid)).toEqual([]);
    const r = await restore(again, 'check', []);
    expect(r.lines, r.lines.join('\n')).toContain('ok all');
    // Not a proof otherwise (the stream ended before the dump began): say so.
    expect(streaming, 'ckpt-lazy was done before the dump started').toBe(true);
  });

  it('a lazy restore that fails, or whose ckpt is killed, leaves nothing behind: no process, no helper; the image restores after', async () => {
    const job = await start(64);
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    await killAndWaitGone(job.pid);
    fs.writeFileSync(path.join(job.work, 'mode'), 'check');
    for (const f of ['restore:resume:error', 'restore:stage:files:error', 'restore:stage:signals:kill']) {
      const before = new Set(allLazyHelpers());
      const r = await ckpt(['restore', '-D', job.img, '--detach', '--lazy'], { env: { CKPT_FAULT: f } });
      expect(r.code, f).not.toBe(0);
      await waitFor(
        () => allLazyHelpers().every((h) => before.has(h)),
        15_000,
        () => `${f}: ckpt-lazy helpers left: ${allLazyHelpers().filter((h) => !before.has(h))}`,
      );
      await waitFor(
        () => !isAlive(job.pid),
        15_000,
        () => `${f}: pid ${job.pid} left running`,
      );
    }
    const r = await restore(job, 'check');
    expect(r.lines, r.lines.join('\n')).toContain('ok all');
    await helpersDone(job.pid);
  });

  it('a compressed image restores with --lazy too, filled before it runs', async () => {
    const job = await start(64);
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img, '--compress']));
    const r = await restore(job, 'check');
    expect(r.lines, r.lines.join('\n')).toContain('ok all');
    expect(r.residentKb).toBeGreaterThanOrEqual((64 << 10) - 1024);
    expect(helpersOf(job.pid)).toEqual([]);
  });

  it('ckpt-lazy killed mid-stream: the process is killed, it never reads zeros where data was', async () => {
    const job = await start();
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    await killAndWaitGone(job.pid);
    fs.writeFileSync(path.join(job.work, 'mode'), 'slow');
    fs.writeFileSync(path.join(job.work, 'go'), '');
    const from = readLines(job.report).length;
    expectOk(await ckpt(['restore', '-D', job.img, '--detach', '--lazy']));
    track(job.pid, 'lazy');
    const daemon = helpersOf(job.pid).find((h) => h.comm === 'ckpt-lazy');
    expect(daemon, 'no ckpt-lazy holds the process').toBeDefined();
    process.kill(daemon!.pid, 'SIGKILL');
    await waitFor(
      () => !isAlive(job.pid),
      15_000,
      () => `pid ${job.pid} still runs after its ckpt-lazy was killed\n${tail(job.report)}`,
    );
    const lines = readLines(job.report).slice(from);
    expect(
      lines.filter((l) => l.startsWith('FAIL')),
      lines.join('\n'),
    ).toEqual([]);
    expect(lines).not.toContain('ok all');
    await helpersDone(job.pid);
    // The restore noted the helper for dumps to find (/run/ckpt/lazy); killed, it left its note,
    // which the next dump's look removes.
    const note = `/run/ckpt/lazy/${daemon!.pid}`;
    expect(fs.existsSync(note), note).toBe(true);
    const other = await start(1);
    expectOk(await ckpt(['dump', '-t', String(other.pid), '-D', other.img, '--leave-running']));
    expect(fs.existsSync(note), `${note} after a dump`).toBe(false);
  });

  it('a pages blob damaged after the dump: the process is killed once the stream reaches the damage, never runs to completion', async () => {
    const job = await start();
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    const gen = path.join(job.img, fs.readdirSync(job.img).find((n) => /^\d+$/.test(n))!);
    const blob = path.join(gen, fs.readdirSync(gen).find((n) => n.startsWith('pages-'))!);
    // One byte near the end (the stream reaches it last; the slow check would, much later).
    const fd = fs.openSync(blob, 'r+');
    const size = fs.fstatSync(fd).size;
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, size - 4096 * 3 - 5);
    b[0] ^= 0xff;
    fs.writeSync(fd, b, 0, 1, size - 4096 * 3 - 5);
    fs.closeSync(fd);
    await killAndWaitGone(job.pid);
    fs.writeFileSync(path.join(job.work, 'mode'), 'slow');
    fs.writeFileSync(path.join(job.work, 'go'), '');
    const from = readLines(job.report).length;
    expectOk(await ckpt(['restore', '-D', job.img, '--detach', '--lazy']));
    track(job.pid, 'lazy');
    await waitFor(
      () => !isAlive(job.pid),
      15_000,
      () => `pid ${job.pid} still runs on a damaged image\n${tail(job.report)}`,
    );
    expect(readLines(job.report).slice(from)).not.toContain('ok all');
    await helpersDone(job.pid);
  });
});
