// File locks (@ckpt/plugin-file-locks): an flock lock, POSIX record locks and an OFD lock held at
// dump time are held again by the restored process (same kinds, types and ranges in /proc/locks),
// and other processes are kept out of them; a lock someone else took meanwhile stops the restore
// with a clean error naming the file, and leaves nothing behind.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  allPids,
  ckpt,
  dumpOk,
  expectCleanError,
  expectRunningFree,
  isAlive,
  lastTick,
  makeTempDir,
  newSuspects,
  procStat,
  restoreOk,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitForTick,
  waitNotAlive,
  waitPidFree,
} from './helpers.js';

useCleanup();

const LOCKS = path.join(BUILD_DIR, 'locks');

interface Lock {
  kind: string;
  type: string;
  pid: number;
  ino: number;
  range: string;
}

/** Held locks (not waiters) of /proc/locks on the given inodes. */
function procLocks(inodes: number[]): Lock[] {
  const out: Lock[] = [];
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    const m = /^\d+:\s+(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s+(\d+\s+(?:\d+|EOF))$/.exec(line.trim());
    if (!m || !inodes.includes(Number(m[4]))) continue;
    out.push({ kind: m[1], type: m[2], pid: Number(m[3]), ino: Number(m[4]), range: m[5].replace(/\s+/, '-') });
  }
  return out;
}

/** The locks of pid on the three files, as "file kind type range" (OFD locks show pid -1). */
function locksOf(pid: number, files: string[]): string[] {
  const inodes = files.map((f) => fs.statSync(f).ino);
  return procLocks(inodes)
    .filter((l) => l.pid === pid || (l.kind === 'OFDLCK' && l.pid === -1))
    .map((l) => `${path.basename(files[inodes.indexOf(l.ino)])} ${l.kind} ${l.type} ${l.range}`)
    .sort();
}

const EXPECTED = ['f1 FLOCK WRITE 0-EOF', 'f2 POSIX READ 1000-EOF', 'f2 POSIX WRITE 100-149', 'f3 OFDLCK WRITE 0-9'];

// Tries locks from another process, without waiting: prints one word per attempt (ok / EAGAIN ...).
const PROBE = `
import errno, fcntl, struct, sys
out = []
for spec in sys.argv[1:]:
    how, path, kind, start, length = spec.split(':')
    f = open(path, 'r+')
    try:
        if how == 'flock':
            fcntl.flock(f, (fcntl.LOCK_EX if kind == 'w' else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        else:
            t = fcntl.F_WRLCK if kind == 'w' else fcntl.F_RDLCK
            cmd = fcntl.F_OFD_SETLK if how == 'ofd' else fcntl.F_SETLK
            fcntl.fcntl(f, cmd, struct.pack('hhqqi4x', t, 0, int(start), int(length), 0))
        out.append('ok')
    except OSError as e:
        out.append(errno.errorcode[e.errno])
    f.close()
print(' '.join(out))
`;

function probe(...specs: string[]): string[] {
  const r = spawnSync('python3', ['-c', PROBE, ...specs], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`lock probe failed: ${r.stderr}`);
  return r.stdout.trim().split(' ');
}

// A process holding a lock until killed: "flock" (LOCK_EX on the whole file) or "posix" (F_WRLCK on bytes 100-149).
const HOLDER = `
# ckpt-lock-holder
import fcntl, sys, time
f = open(sys.argv[2], 'r+')
if sys.argv[1] == 'flock':
    fcntl.flock(f, fcntl.LOCK_EX)
else:
    fcntl.lockf(f, fcntl.LOCK_EX, 50, 100)
print('held', flush=True)
time.sleep(300)
`;

async function holdLock(kind: 'flock' | 'posix', file: string): Promise<ChildProcess> {
  const child = spawn('python3', ['-c', HOLDER, kind, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  track(child.pid!, 'ckpt-lock-holder');
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  await waitFor(
    () => out.includes('held'),
    10_000,
    () => `the ${kind} lock holder did not take its lock`,
  );
  return child;
}

async function killHolder(child: ChildProcess): Promise<void> {
  child.kill('SIGKILL');
  await waitPidFree(child.pid!);
}

function setup(tag: string) {
  const dir = makeTempDir(tag);
  const files = ['f1', 'f2', 'f3'].map((n) => path.join(dir, n));
  for (const f of files) fs.writeFileSync(f, 'x'.repeat(4096));
  return { dir, files, img: path.join(dir, 'img') };
}

async function start(dir: string, files: string[]) {
  const s = await runFixture(dir, [LOCKS, ...files], { name: 'locks' });
  await waitForLine(s.stdout, /^locked /);
  await waitForTick(s.stdout, 2);
  return s;
}

describe('file locks', () => {
  it('flock, POSIX and OFD locks are held again by the restored process, and keep others out', async () => {
    const { dir, files, img } = setup('locks');
    const { pid, stdout } = await start(dir, files);
    expect(locksOf(pid, files), 'the fixture holds its locks').toEqual(EXPECTED);

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    await waitFor(
      () => locksOf(pid, files).length === 0,
      10_000,
      () => `locks still held after the dump: ${locksOf(pid, files)}`,
    );
    expect(probe('flock:' + files[0] + ':w:0:0'), 'free while the process is gone').toEqual(['ok']);

    await restoreOk(img, pid, LOCKS);
    expect(locksOf(pid, files), 'the restored process holds the same locks').toEqual(EXPECTED);

    // Another process is kept out: flock(LOCK_NB), F_SETLK, F_OFD_SETLK on the locked ranges fail;
    // outside them (and a read lock on the read-locked range) they succeed.
    expect(
      probe(
        `flock:${files[0]}:r:0:0`,
        `posix:${files[1]}:w:120:10`,
        `posix:${files[1]}:r:100:1`,
        `posix:${files[1]}:w:5000:10`,
        `posix:${files[1]}:r:2000:10`,
        `ofd:${files[2]}:r:5:1`,
        `posix:${files[2]}:w:0:1`,
        `posix:${files[1]}:w:0:100`,
        `ofd:${files[2]}:w:10:10`,
      ),
    ).toEqual(['EAGAIN', 'EAGAIN', 'EAGAIN', 'EAGAIN', 'ok', 'EAGAIN', 'EAGAIN', 'ok', 'ok']);
    const flock = spawnSync('flock', ['-n', files[0], 'true']);
    expect(flock.status, 'util-linux flock -n on the flock-locked file').not.toBe(0);

    expectRunningFree(pid, 'restored lock holder');
    await waitForTick(stdout, lastTick(stdout) + 3);
    expect(locksOf(pid, files)).toEqual(EXPECTED);
  });

  it('a lock taken by another process meanwhile stops the restore, naming the file and the lock; nothing is left behind', async () => {
    const { dir, files, img } = setup('locks-busy');
    const { pid } = await start(dir, files);
    const init = Number(procStat(pid)![3]); // ckpt-init, pid 1 of the application's namespace
    await dumpOk(pid, img);
    await waitNotAlive(pid);

    for (const [kind, file, what] of [
      ['flock', files[0], /flock exclusive/],
      ['posix', files[1], /POSIX write lock on bytes 100-149/],
    ] as const) {
      const holder = await holdLock(kind, file);
      await waitPidFree(pid);
      const before = new Set(allPids());
      const r = await ckpt(['restore', '-D', img, '--detach']);
      expectCleanError(r, file, what, new RegExp(`pid ${holder.pid}`));
      await waitFor(
        () => !isAlive(pid) && !isAlive(init),
        10_000,
        () => `pid ${pid} or ${init} is alive after a failed restore`,
      );
      const left = newSuspects(before, [LOCKS]);
      expect(left, `processes left behind: ${JSON.stringify(left)}`).toEqual([]);
      await killHolder(holder);
    }

    await waitPidFree(pid);
    await restoreOk(img, pid, LOCKS);
    expect(locksOf(pid, files)).toEqual(EXPECTED);
  });
});
