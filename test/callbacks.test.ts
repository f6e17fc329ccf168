// Checkpoint callbacks into the application (@ckpt/plugin-callbacks, packages/callbacks): a
// program that registered is told before a checkpoint (PREPARE) and after it continues or is
// restarted (RESUME), from C, Node and Python (the module, and the C library through ctypes). Its
// prepare callback flushes a buffer, declares memory to exclude and an fd it takes over, vetoes or
// delays; a callback that hangs hits the timeout. Checked from inside the process.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  FIXTURES_DIR,
  REPO_ROOT,
  ckpt,
  expectCleanError,
  expectOk,
  isAlive,
  killAndWaitGone,
  makeTempDir,
  readLines,
  runFixture,
  track,
  useCleanup,
  waitForLine,
} from './helpers.js';

useCleanup();

interface Job {
  pid: number;
  dir: string;
  work: string;
  report: string;
  img: string;
}

async function start(cmd: (work: string, report: string) => string[], setup: (work: string) => void = () => {}): Promise<Job> {
  const dir = makeTempDir('callbacks');
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  fs.writeFileSync(path.join(work, 'conn'), 'conn data\n');
  setup(work);
  const report = path.join(dir, 'report');
  const argv = cmd(work, report);
  await runFixture(dir, argv, { noNamespace: true, name: 'callbacks' });
  const pid = Number((await waitForLine(report, /^ready (\d+)$/)).match[1]);
  track(pid, path.basename(argv[0]) === 'node' || argv[0].includes('python') ? argv[1] : argv[0]);
  return { pid, dir, work, report, img: path.join(dir, 'img') };
}

const cFixture =
  (mode = '') =>
  (work: string, report: string) => {
    if (mode) fs.writeFileSync(path.join(work, 'mode'), mode);
    return [path.join(BUILD_DIR, 'callbacks'), work, report];
  };

/** Kills the process, restores it, and returns the report lines the restore added (up to "done"). */
async function restoreAndReport(job: Job): Promise<string[]> {
  await killAndWaitGone(job.pid);
  const from = readLines(job.report).length;
  const r = await ckpt(['restore', '-D', job.img, '--detach']);
  expectOk(r);
  track(job.pid, 'callbacks');
  await waitForLine(job.report, /^done$/, 15_000, from);
  return readLines(job.report).slice(from);
}

function python3(): string {
  return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
}

describe('checkpoint callbacks from C', () => {
  it('prepare flushes, excludes memory and takes over an fd; continue after a --leave-running dump; restart after the restore', async () => {
    const job = await start(cFixture());
    const dump = await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img, '--json']);
    expectOk(dump);
    const stats = (JSON.parse(dump.stdout) as { stats: Record<string, number> }).stats;
    expect(stats['callbacks.processes']).toBe(1);
    expect(stats['memory.excludedBytes']).toBe(4 * 4096);
    // PREPARE ran before the dump, RESUME continue after it (the dump waited for DONE).
    expect(readLines(job.report).slice(1)).toEqual(['prepare 1 running', 'resume continue']);
    // The buffered output was flushed by the prepare callback: the program never flushed it.
    expect(fs.readFileSync(path.join(job.work, 'out'), 'utf8')).toBe('written before the checkpoint\n');
    const show = await ckpt(['show', job.img]);
    expectOk(show);
    expect(show.stdout).toMatch(/fd 4 +taken-over/);
    expect(show.stdout).toMatch(/callback-channel/);
    expect(await restoreAndReport(job)).toEqual(['resume restart', 'placeholder /dev/null', 'ok excluded', 'ok takeover', 'done']);
  });

  it('a veto fails the dump naming the reason; nothing was frozen and the process runs on', async () => {
    const job = await start(cFixture('veto'));
    const r = await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img]);
    expectCleanError(r, `pid ${job.pid} vetoed the checkpoint: busy right now`);
    expect(fs.existsSync(job.img)).toBe(false);
    expect(isAlive(job.pid)).toBe(true);
    expect(readLines(job.report).slice(1)).toEqual(['prepare 1 running']);
    // Asked again later, it may agree: the registration still stands.
    fs.writeFileSync(path.join(job.work, 'mode'), '');
    expect(isAlive(job.pid)).toBe(true);
  });

  it('DELAY gives a slow callback more time than the timeout; one that hangs fails the dump at the timeout, or is checkpointed unprepared with onTimeout "proceed"', async () => {
    const dir = makeTempDir('callbacks-cfg');
    const config = (o: Record<string, unknown>) => {
      const f = path.join(dir, `cfg-${Object.keys(o).join('-')}-${Object.values(o).join('-')}.json`);
      fs.writeFileSync(f, JSON.stringify({ options: { '@ckpt/plugin-callbacks': o } }));
      return f;
    };
    const slow = await start(cFixture('delay'));
    const ok = await ckpt(['--config', config({ timeoutMs: 500 }), 'dump', '-R', '-t', String(slow.pid), '-D', slow.img]);
    expectOk(ok);
    expect(readLines(slow.report).slice(1)).toEqual(['prepare 1 running', 'resume continue']);

    const stuck = await start(cFixture('hang'));
    const t0 = Date.now();
    const failed = await ckpt(['--config', config({ timeoutMs: 500 }), 'dump', '-R', '-t', String(stuck.pid), '-D', stuck.img]);
    expectCleanError(failed, `pid ${stuck.pid} did not answer PREPARE within 500 ms`);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(isAlive(stuck.pid)).toBe(true);
    const proceed = await ckpt([
      '--config',
      config({ timeoutMs: 500, onTimeout: 'proceed' }),
      'dump',
      '-R',
      '-t',
      String(stuck.pid),
      '-D',
      stuck.img,
      '--json',
    ]);
    expectOk(proceed);
    expect(String((JSON.parse(proceed.stdout) as { stats: Record<string, string> }).stats['callbacks.unprepared'])).toContain(`pid ${stuck.pid}`);
  });

  it('a dump that kills the process says so in PREPARE (exit) and sends no RESUME', async () => {
    const job = await start(cFixture());
    expectOk(await ckpt(['dump', '-t', String(job.pid), '-D', job.img]));
    expect(readLines(job.report).slice(1)).toEqual(['prepare 1 exit']);
    expect(await restoreAndReport(job)).toEqual(['resume restart', 'placeholder /dev/null', 'ok excluded', 'ok takeover', 'done']);
  });
});

describe('checkpoint callbacks from Node and Python', () => {
  const clients: Array<[string, (work: string, report: string) => string[], string]> = [
    ['Node (@ckpt/callbacks)', (work, report) => [process.execPath, path.join(FIXTURES_DIR, 'callbacks-node.mjs'), work, report], 'node says no'],
    ['Python (ckpt_callbacks.py)', (work, report) => [python3(), path.join(FIXTURES_DIR, 'callbacks.py'), REPO_ROOT, work, report, 'module'], 'python says no'],
    [
      'Python through ctypes (libckpt_callbacks.so)',
      (work, report) => [python3(), path.join(FIXTURES_DIR, 'callbacks.py'), REPO_ROOT, work, report, 'ctypes'],
      'python says no',
    ],
  ];
  for (const [what, cmd, no] of clients) {
    it(`${what}: prepare, continue, restart; a veto`, async () => {
      const job = await start(cmd);
      expectOk(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', job.img]));
      const lines = readLines(job.report).slice(1);
      expect(lines.map((l) => l.replace(/^prepare \d+ /, 'prepare '))).toEqual(['prepare running', 'resume continue']);
      fs.writeFileSync(path.join(job.work, 'veto'), '');
      expectCleanError(await ckpt(['dump', '-R', '-t', String(job.pid), '-D', `${job.img}-2`]), `vetoed the checkpoint: ${no}`);
      fs.rmSync(path.join(job.work, 'veto'));
      expect(await restoreAndReport(job)).toEqual(['resume restart', 'done']);
    });
  }
});
