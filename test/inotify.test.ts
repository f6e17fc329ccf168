// inotify (@ckpt/plugin-event-fds): the watches of an inotify instance come back with the same wd
// numbers (a gap left by a removed watch included), masks, flags and watched objects, and report
// new events; a watched path that is gone at restore stops it cleanly; a watch whose path cannot be
// found (a /proc directory: no usable file handle) refuses the dump and leaves the process running.
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
  makeTempDir,
  newSuspects,
  procStat,
  readLines,
  restoreOk,
  runFixture,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const INOTIFY = path.join(BUILD_DIR, 'inotify');

function setup(tag: string) {
  const dir = makeTempDir(tag);
  const watched = path.join(dir, 'watched');
  fs.mkdirSync(watched);
  const file = path.join(dir, 'file.txt');
  fs.writeFileSync(file, 'hello\n');
  const spare = path.join(dir, 'spare');
  fs.writeFileSync(spare, '');
  return { dir, watched, file, spare, img: path.join(dir, 'img') };
}

async function start(dir: string, watched: string, file: string, spare: string) {
  const s = await runFixture(dir, [INOTIFY, watched, file, spare], { name: 'inotify' });
  const m = await waitForLine(s.stdout, /^watching fd=(\d+) dir=(\d+) file=(\d+) removed=(\d+)$/);
  expect(m.match.slice(2).map(Number), 'wds dir, file, removed').toEqual([1, 3, 2]);
  await waitForLine(s.stdout, /^event wd=2 mask=8000 name=$/); // IN_IGNORED of the removed watch, read
  return { ...s, fd: Number(m.match[1]) };
}

/** The flags line and the watches (wd, inode, dev, mask) of an inotify fd, from fdinfo. */
function inotifyInfo(pid: number, fd: number): { flags: string; watches: string[] } {
  const text = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  return {
    flags: /^flags:\s*(\S+)$/m.exec(text)![1],
    watches: text
      .split('\n')
      .filter((l) => l.startsWith('inotify '))
      .map((l) => l.replace(/\s+ignored_mask.*$/, ''))
      .sort(),
  };
}

/** Makes an event and waits for the fixture to print it; returns the line. */
async function provoke(stdout: string, act: () => void, re: RegExp): Promise<string> {
  const from = readLines(stdout).length;
  act();
  const m = await waitForLine(stdout, re, 10_000, from);
  return m.match[0];
}

describe('inotify', () => {
  it('watches come back with the same wds (gap included), masks and flags, and report new events', async () => {
    const { dir, watched, file, spare, img } = setup('inotify');
    const { pid, stdout, fd } = await start(dir, watched, file, spare);
    expect(await provoke(stdout, () => fs.writeFileSync(path.join(watched, 'before.txt'), ''), /^event wd=\d+ mask=100 name=before\.txt$/)).toBe(
      'event wd=1 mask=100 name=before.txt',
    );
    expect(await provoke(stdout, () => fs.appendFileSync(file, 'before\n'), /^event wd=\d+ mask=2 name=$/)).toBe('event wd=3 mask=2 name=');
    const info = inotifyInfo(pid, fd);
    expect(info.watches.length).toBe(2);
    expect(parseInt(info.flags, 8) & 0o2000000, 'the fixture uses IN_CLOEXEC').not.toBe(0);

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    await restoreOk(img, pid, INOTIFY);
    expect(inotifyInfo(pid, fd), 'same watches (wd, inode, dev, mask) and flags').toEqual(info);

    const seen = readLines(stdout).length;
    expect(await provoke(stdout, () => fs.writeFileSync(path.join(watched, 'after.txt'), ''), /^event wd=\d+ mask=100 name=after\.txt$/)).toBe(
      'event wd=1 mask=100 name=after.txt',
    );
    expect(await provoke(stdout, () => fs.appendFileSync(file, 'after\n'), /^event wd=\d+ mask=2 name=$/)).toBe('event wd=3 mask=2 name=');
    expect(readLines(stdout).slice(seen), 'no other event (e.g. IN_IGNORED of the wd gap) reached the process').toEqual([
      'event wd=1 mask=100 name=after.txt',
      'event wd=3 mask=2 name=',
    ]);
    expectRunningFree(pid, 'restored inotify process');
  });

  it('a watched directory that is gone at restore stops it, naming the path; nothing is left behind', async () => {
    const { dir, watched, file, spare, img } = setup('inotify-gone');
    const { pid } = await start(dir, watched, file, spare);
    const init = Number(procStat(pid)![3]); // ckpt-init, pid 1 of the application's namespace
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    fs.rmSync(watched, { recursive: true });
    const before = new Set(allPids());
    const r = await ckpt(['restore', '-D', img, '--detach']);
    expectCleanError(r, watched, /inotify/, /wd 1/);
    await waitFor(
      () => !isAlive(pid) && !isAlive(init),
      10_000,
      () => `pid ${pid} or ${init} is alive after a failed restore`,
    );
    const left = newSuspects(before, [INOTIFY]);
    expect(left, `processes left behind: ${JSON.stringify(left)}`).toEqual([]);
  });

  it('a watch whose path cannot be found refuses the dump, naming it, and the process runs on', async () => {
    const { dir, file, spare, img } = setup('inotify-proc');
    const { pid, stdout } = await start(dir, '/proc/sys/kernel', file, spare);
    const r = await ckpt(['dump', '-t', String(pid), '-D', img]);
    expectCleanError(r, /inotify/, /wd 1/, new RegExp(`pid ${pid}`));
    expectRunningFree(pid, 'inotify process after a refused dump');
    expect(await provoke(stdout, () => fs.appendFileSync(file, 'still\n'), /^event wd=\d+ mask=2 name=$/)).toBe('event wd=3 mask=2 name=');
  });
});
