// SysV IPC: two processes passing messages over a queue and sharing counters in a shm segment
// guarded by a semaphore, dumped mid-exchange (messages queued), restored, and finishing the
// exchange with the right totals. In an application's own IPC namespace (ckpt run), and on the
// host with keys (taken key: clean error; taken id: --ipc-remap).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  ckpt,
  expectCleanError,
  expectOk,
  makeTempDir,
  readLines,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const IPC = path.join(BUILD_DIR, 'ipc');
const K = 60;
const TOTAL = (K * (K + 1)) / 2;

const last = (file: string, re: RegExp) =>
  readLines(file)
    .filter((l) => re.test(l))
    .at(-1);
const num = (line: string | undefined, key: string) => Number(new RegExp(`${key}=(\\d+)`).exec(line ?? '')?.[1] ?? -1);

/** Waits until messages are queued: the sender is well ahead of the receiver. */
async function waitQueued(stdout: string): Promise<void> {
  await waitFor(
    () => num(last(stdout, /^child sent/), 'sent') >= num(last(stdout, /^parent got/), 'got') + 6 && num(last(stdout, /^parent got/), 'got') >= 3,
    20_000,
    () => `no backlog:\n${readLines(stdout).slice(-6).join('\n')}`,
  );
}

function checkFinished(stdout: string): void {
  const lines = readLines(stdout);
  expect(
    lines.filter((l) => /ORDER|=bad/.test(l)),
    'messages out of order, or the removed segment lost',
  ).toEqual([]);
  const got = lines.filter((l) => l.startsWith('parent got=')).map((l) => num(l, 'got'));
  got.forEach((g, i) => expect(g, 'every message received once, in order').toBe(i + 1));
}

/** Removes the host objects of the fixture run with key base (queue, semaphores, segment), if still there. */
function removeObjects(base: number): void {
  for (const [flag, k] of [
    ['-Q', base],
    ['-S', base + 1],
    ['-M', base + 2],
  ] as const) {
    try {
      execFileSync('ipcrm', [flag, `0x${k.toString(16)}`], { stdio: 'ignore' });
    } catch {
      /* removed by the program at its end, or by the test */
    }
  }
}

function sysvMaps(pid: number): string[] {
  return fs
    .readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((l) => l.includes('/SYSV'));
}

describe('SysV IPC', () => {
  it('an application (own IPC namespace): queue, semaphore, shared and removed-but-attached segments', async () => {
    const dir = makeTempDir('ipc');
    const img = path.join(dir, 'img');
    const { pid, stdout } = await runFixture(dir, [IPC, String(K)], { name: 'ipc' });
    await waitQueued(stdout);
    const child = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]);
    track(child, IPC);
    const mapsBefore = sysvMaps(child)
      .map((l) => l.split(/\s+/).slice(0, 2).join(' '))
      .sort();

    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    const atDump = num(last(stdout, /^parent got/), 'got');
    await waitNotAlive(pid);
    const show = await ckpt(['show', img, '--json']);
    expectOk(show);
    const ipc = JSON.parse(show.stdout).ipc as { namespace: boolean; objects: Array<{ kind: string; amount: string; destroyed: boolean }> };
    expect(ipc.namespace).toBe(true);
    expect(ipc.objects.map((o) => o.kind).sort()).toEqual(['msg', 'sem', 'shm', 'shm']);
    expect(Number(ipc.objects.find((o) => o.kind === 'msg')!.amount.split(' ')[0]), 'messages were queued at dump time').toBeGreaterThan(3);
    expect(
      ipc.objects.some((o) => o.destroyed),
      'the removed segment is known as removed',
    ).toBe(true);

    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    // Attachments are back at their addresses, read-only where they were.
    expect(
      sysvMaps(child)
        .map((l) => l.split(/\s+/).slice(0, 2).join(' '))
        .sort(),
    ).toEqual(mapsBefore);
    const got = readLines(stdout)
      .filter((l) => l.startsWith('parent got='))
      .map((l) => num(l, 'got'));
    expect(got.at(-1), 'the exchange resumed from the dump point').toBeGreaterThanOrEqual(atDump);
    await waitForLine(stdout, new RegExp(`^done count=${K} total=${TOTAL}$`), 30_000);
    checkFinished(stdout);
  });

  it('on the host: the segment the dump left behind, unattached and unchanged, is taken over by the restore', async () => {
    const dir = makeTempDir('ipcadopt');
    const img = path.join(dir, 'img');
    const base = 0x7f000 + Math.floor(Math.random() * 0x3000) * 4;
    const keyHex = (k: number) => '0x' + k.toString(16);
    const { pid, stdout } = await runFixture(dir, [IPC, String(K), keyHex(base)], { name: 'ipc', noNamespace: true });
    try {
      await waitQueued(stdout);
      const child = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]);
      track(child, IPC);
      expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
      await waitNotAlive(pid);
      await waitNotAlive(child);
      expect(execFileSync('ipcs', ['-m'], { encoding: 'utf8' }), 'the segment is left on the host').toMatch(new RegExp(`0x0*${(base + 2).toString(16)}\\s`));
      expectOk(await ckpt(['restore', '-D', img, '--detach']));
      await waitForLine(stdout, new RegExp(`^done count=${K} total=${TOTAL}$`), 30_000);
      checkFinished(stdout);
    } finally {
      removeObjects(base);
    }
  });

  it('on the host: a key another segment took stops the restore naming the object; a taken id is remapped with --ipc-remap', async () => {
    const dir = makeTempDir('ipchost');
    const img = path.join(dir, 'img');
    const base = 0x7c000 + Math.floor(Math.random() * 0x3000) * 4;
    const keyHex = (k: number) => '0x' + k.toString(16);
    const { pid, stdout } = await runFixture(dir, [IPC, String(K), keyHex(base)], { name: 'ipc', noNamespace: true });
    try {
      await waitQueued(stdout);
      const shmid = Number(/shm=(\d+)/.exec(readLines(stdout)[0])![1]);
      const child = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]);
      track(child, IPC);
      expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
      await waitNotAlive(pid);
      await waitNotAlive(child);

      // The segment outlives the killed processes; someone removes it and makes another under
      // its key: the restore stops, naming it (the one the dump left would be taken over: below).
      execFileSync('ipcrm', ['-M', keyHex(base + 2)]);
      execFileSync('python3', ['-c', `import ctypes; assert ctypes.CDLL(None).shmget(${base + 2}, 8192, 0o1600) >= 0`]);
      const r1 = await ckpt(['restore', '-D', img, '--detach']);
      expectCleanError(r1, keyHex(base + 2), /in use/);
      expect(fs.existsSync(`/proc/${pid}`) && !/\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')), 'a refused restore leaves no process').toBe(false);

      // Remove it; another segment takes its id (but not its key): --ipc-remap gives a new id.
      execFileSync('ipcrm', ['-M', keyHex(base + 2)]);
      fs.writeFileSync('/proc/sys/kernel/shm_next_id', String(shmid));
      const squatter = Number(/(\d+)/.exec(execFileSync('ipcmk', ['-M', '4096'], { encoding: 'utf8' }))![1]);
      try {
        expect(squatter).toBe(shmid);
        const r2 = await ckpt(['restore', '-D', img, '--detach']);
        expectCleanError(r2, new RegExp(`id ${shmid}`), /--ipc-remap/);
        const r3 = await ckpt(['restore', '-D', img, '--detach', '--ipc-remap']);
        expectOk(r3);
        // Other segments of the image may be remapped too (a test running beside this one may hold
        // their ids): the keyed one must be among them, wherever the report lists it.
        expect(r3.stderr, `the remap is reported\n${r3.stderr}`).toMatch(
          new RegExp(`ckpt: --ipc-remap: .*shared memory segment id ${shmid} key ${keyHex(base + 2)} -> id \\d+`),
        );
        await waitForLine(stdout, new RegExp(`^done count=${K} total=${TOTAL}$`), 30_000);
        checkFinished(stdout);
      } finally {
        try {
          execFileSync('ipcrm', ['-m', String(squatter)], { stdio: 'ignore' });
        } catch {
          /* gone already */
        }
      }
    } finally {
      removeObjects(base);
    }
  });
});
