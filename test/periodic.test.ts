// Periodic checkpoints (issue 14): `ckpt run --checkpoint-every` starts an application and a
// checkpointer that dumps it with --leave-running on schedule into generations of -D, keeping
// --keep of them; `ckpt checkpoint --app ID` asks for one now and waits for it; the checkpointer
// stops with the application; `ckpt restore -D DIR` takes the newest generation, and the program
// counts on from there; `ckpt restore --checkpoint-every` puts a restored application back on a
// schedule. Bad input is a one-line error.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  bin,
  ckpt,
  expectCleanError,
  expectOk,
  isAlive,
  lastTick,
  makeTempDir,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForTick,
  waitPidFree,
} from './helpers.js';

useCleanup();

// The checkpointers' logs ($TMPDIR/ckpt-run/ID.checkpoints.log) stay after them, for their user:
// those of the tests' go with the tests.
const logs: string[] = [];
afterEach(() => {
  for (const f of logs.splice(0)) fs.rmSync(f, { force: true });
});

const generations = (img: string) =>
  fs
    .readdirSync(img)
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
const latest = (img: string) => {
  try {
    return Number(fs.readlinkSync(path.join(img, 'latest')));
  } catch {
    return 0;
  }
};

describe('periodic checkpoints', () => {
  it('checkpoints on schedule and on request, keeps the newest generations, stops with the application; the newest restores', async () => {
    const dir = makeTempDir('periodic');
    const img = path.join(dir, 'img');
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    const stdout = path.join(dir, 'workload.stdout');
    const run = await ckpt(['run', '--checkpoint-every', '1s', '-D', img, '--keep', '2', '--stdout', stdout, '--json', '--', bin('workload'), '8', out]);
    expectOk(run);
    const j = JSON.parse(run.stdout) as { pid: number; app: string; init: number; checkpointer: { pid: number; dir: string; keep: number; log: string } };
    track(j.pid, bin('workload'));
    track(j.checkpointer.pid, 'checkpointer');
    logs.push(j.checkpointer.log);
    expect(j.checkpointer).toMatchObject({ dir: img, keep: 2 });
    await waitForTick(stdout, 2);

    // On schedule: generations appear, no more than 2 kept.
    await waitFor(
      () => latest(img) >= 3,
      20_000,
      () => `generations of ${img}: ${generations(img).join(' ')}\n${fs.readFileSync(j.checkpointer.log, 'utf8')}`,
    );
    // The 2 newest, and the generations they add to (incremental checkpoints), nothing else.
    const newestTwo = generations(img).slice(-2);
    const chainOf = (g: number): number[] => {
      const parent = (JSON.parse(fs.readFileSync(path.join(img, String(g), 'manifest.json'), 'utf8')) as { parent?: { path: string } }).parent;
      return parent ? [g, ...chainOf(Number(path.basename(path.resolve(img, String(g), parent.path))))] : [g];
    };
    expect(generations(img)).toEqual([...new Set(newestTwo.flatMap(chainOf))].sort((a, b) => a - b));
    expect(fs.readFileSync(j.checkpointer.log, 'utf8'), 'checkpoints after the first add to the one before').toMatch(/\(on schedule, adding to /);
    const apps = await ckpt(['apps']);
    expect(apps.stdout).toMatch(new RegExp(`${j.app}.*checkpointed every 1s into ${img.replace(/[.]/g, '\\.')}`));

    // On request.
    const before = latest(img);
    const now = await ckpt(['checkpoint', '--app', j.app, '--json']);
    expectOk(now);
    const got = JSON.parse(now.stdout) as { generation: number; dir: string };
    expect(got.generation).toBeGreaterThan(before);
    expect(got.dir).toBe(img);
    expect(fs.readFileSync(j.checkpointer.log, 'utf8')).toMatch(new RegExp(`generation ${got.generation} \\(on request`));

    // The application goes: its checkpointer follows.
    process.kill(j.pid, 'SIGKILL');
    await waitPidFree(j.pid);
    await waitFor(
      () => !isAlive(j.checkpointer.pid),
      10_000,
      () => `checkpointer ${j.checkpointer.pid} still runs after its application ended`,
    );
    expect(fs.readFileSync(j.checkpointer.log, 'utf8')).toMatch(/is gone: stopping/);

    // The newest generation restores, and the program counts on from where it was.
    const newest = latest(img);
    const ticks = lastTick(stdout);
    const r = await ckpt(['restore', '-D', img, '--detach', '--json']);
    expectOk(r);
    expect((JSON.parse(r.stdout) as { pids: number[] }).pids[0]).toBe(j.pid);
    track(j.pid, bin('workload'));
    await waitForTick(stdout, ticks + 2);
    // What restore takes by default is what show calls the latest: the newest generation.
    const shown = await ckpt(['show', img, '--json']);
    expectOk(shown);
    expect((JSON.parse(shown.stdout) as { latest: number }).latest).toBe(newest);
  });

  it('restore --checkpoint-every: the restored application is checkpointed on schedule again, into the same directory', async () => {
    const dir = makeTempDir('periodic-restore');
    const img = path.join(dir, 'img');
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    const stdout = path.join(dir, 'workload.stdout');
    const run = await ckpt(['run', '--stdout', stdout, '--json', '--', bin('workload'), '8', out]);
    expectOk(run);
    const j = JSON.parse(run.stdout) as { pid: number; app: string };
    track(j.pid, bin('workload'));
    await waitForTick(stdout, 2);
    expectOk(await ckpt(['dump', '--app', j.app, '-D', img]));
    await waitPidFree(j.pid);
    const r = await ckpt(['restore', '-D', img, '--detach', '--json', '--checkpoint-every', '1s', '--keep', '2']);
    expectOk(r);
    const back = JSON.parse(r.stdout) as { main: number; app: string };
    track(back.main, bin('workload'));
    const apps = JSON.parse((await ckpt(['apps', '--json'])).stdout) as Array<{ id: string; checkpointer?: { pid: number; dir: string; log: string } }>;
    const cp = apps.find((a) => a.id === back.app)?.checkpointer;
    expect(cp, JSON.stringify(apps)).toMatchObject({ dir: img });
    track(cp!.pid, 'checkpointer');
    logs.push(cp!.log);
    await waitFor(
      () => latest(img) >= 3,
      20_000,
      () => `generations of ${img}: ${generations(img).join(' ')}\n${fs.readFileSync(cp!.log, 'utf8')}`,
    );
    await waitForTick(stdout, lastTick(stdout) + 2);
    process.kill(back.main, 'SIGKILL');
    await waitFor(
      () => !isAlive(cp!.pid),
      10_000,
      () => `checkpointer ${cp!.pid} still runs after its application ended`,
    );
  });

  it("--checkpoint-signal: that signal sent to the application's ckpt-init asks for a checkpoint now, and does not reach the program", async () => {
    const dir = makeTempDir('periodic-signal');
    const img = path.join(dir, 'img');
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    const stdout = path.join(dir, 'workload.stdout');
    const run = await ckpt([
      'run',
      '--checkpoint-every',
      '1h',
      '--checkpoint-signal',
      'USR2',
      '-D',
      img,
      '--stdout',
      stdout,
      '--json',
      '--',
      bin('workload'),
      '8',
      out,
    ]);
    expectOk(run);
    const j = JSON.parse(run.stdout) as { pid: number; init: number; checkpointer: { pid: number; log: string } };
    track(j.pid, bin('workload'));
    track(j.checkpointer.pid, 'checkpointer');
    logs.push(j.checkpointer.log);
    await waitForTick(stdout, 2);
    // A batch system's warning: SIGUSR2 (which would kill the program) to ckpt-init.
    process.kill(j.init, 'SIGUSR2');
    await waitFor(
      () => latest(img) >= 1,
      20_000,
      () => `no generation in ${img}\n${fs.readFileSync(j.checkpointer.log, 'utf8')}`,
    );
    expect(fs.readFileSync(j.checkpointer.log, 'utf8')).toMatch(/generation 1 \(on signal/);
    const ticks = lastTick(stdout);
    await waitForTick(stdout, ticks + 2);
    expect(isAlive(j.pid), 'the program never got SIGUSR2').toBe(true);
    expectCleanError(await ckpt(['run', '--checkpoint-signal', 'USR2', '--', bin('workload'), '8', out]), '--checkpoint-signal goes with --checkpoint-every');
    expectCleanError(
      await ckpt(['run', '--checkpoint-every', '1h', '-D', img, '--checkpoint-signal', 'KILL', '--', bin('workload'), '8', out]),
      'not a signal ckpt-init can take',
    );
  });

  it('bad schedules, a missing -D, and checkpoint requests without a checkpointer are one-line errors', async () => {
    const dir = makeTempDir('periodic-bad');
    const img = path.join(dir, 'img');
    for (const [args, why] of [
      [['--checkpoint-every', '10x', '-D', img], /--checkpoint-every 10x: not a duration/],
      [['--checkpoint-every', '100ms', '-D', img], /at least 1s between checkpoints/],
      [['--checkpoint-every', '1s'], /needs -D DIR/],
      [['--checkpoint-every', '1s', '-D', img, '--no-namespace'], /not with --no-namespace/],
      [['-D', img], /-D and --keep go with --checkpoint-every/],
    ] as const) {
      const r = await ckpt(['run', ...args, '--', bin('workload'), '8', dir]);
      expectCleanError(r, why);
    }
    expect(fs.existsSync(img)).toBe(false);
    expectCleanError(await ckpt(['checkpoint', '--app', 'no-such-app-0']), /no running application "no-such-app-0"/);
    // restore --checkpoint-every of an image that is not an application's: refused before anything is restored.
    const loose = await runFixture(dir, [bin('workload'), '8', dir], { noNamespace: true, name: 'loose' });
    const looseImg = path.join(dir, 'loose-img');
    expectOk(await ckpt(['dump', '-t', String(loose.pid), '-D', looseImg, '--leave-running']));
    expectCleanError(await ckpt(['restore', '-D', looseImg, '--detach', '--checkpoint-every', '1s']), /is not an application's/);
    expectCleanError(await ckpt(['restore', '-D', looseImg, '--detach', '--keep', '2']), /--keep goes with --checkpoint-every/);
    const plain = await runFixture(dir, [bin('workload'), '8', dir], { json: true, name: 'plain' });
    const app = (JSON.parse(plain.run.stdout) as { app: string }).app;
    const r = await ckpt(['checkpoint', '--app', app]);
    expectCleanError(r, new RegExp(`application ${app} has no periodic checkpointer running`));
    expect(r.stderr).toMatch(/hint: .*ckpt run --checkpoint-every/);
  });
});
