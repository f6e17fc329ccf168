// The dump's batched first look at a process's fds (takeFds): each duplicate's status must be what
// fs.fstatSync says of the fd, field for field, and its SIGIO owner what fcntl says. Run on real
// fds of this process (a file, a directory, a pipe, a socket pair, a device, an O_PATH fd), which
// the test opens and closes itself.
import { closeSync, constants as C, fstatSync, mkdtempSync, openSync, rmSync, Stats, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { F_GETFL, F_GETSIG, F_SETSIG, native, O_PATH } from '@ckpt/native';
import { takeFds } from './fdtable.js';

const F_SETOWN = 8;
const FIELDS = ['dev', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'blksize', 'ino', 'size', 'blocks', 'atimeMs', 'mtimeMs', 'ctimeMs', 'birthtimeMs'] as const;

const opened: number[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const fd of opened.splice(0)) closeSync(fd);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function keep(fd: number): number {
  opened.push(fd);
  return fd;
}

describe('takeFds', () => {
  it('gives each fd our duplicate, fstat status field for field, and its SIGIO owner and signal', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ckpt-take-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'f'), 'some bytes');
    const file = keep(openSync(join(dir, 'f'), 'r'));
    const directory = keep(openSync(dir, C.O_RDONLY | C.O_DIRECTORY));
    const [pr, pw] = native.fd.pipe();
    keep(pr);
    keep(pw);
    const [sa, sb] = native.sock.unixSocketpair(1); // SOCK_STREAM
    keep(sa);
    keep(sb);
    const dev = keep(openSync('/dev/null', 'r'));
    const path = keep(openSync(dir, O_PATH));
    native.fd.fcntl(pr, F_SETOWN, process.pid);
    native.fd.fcntl(pr, F_SETSIG, 10);
    const fds = [file, directory, pr, pw, sa, sb, dev, path];
    const pidfd = native.proc.pidfdOpen(process.pid);
    const taken = takeFds(pidfd, [...fds, 1_000_000]);
    try {
      expect(taken.fds).toHaveLength(fds.length + 1);
      expect(taken.fds.at(-1)).toBeUndefined(); // no such fd
      fds.forEach((fd, i) => {
        const t = taken.fds[i]!;
        expect(t, `fd ${fd}`).toBeDefined();
        expect(t.dupFd).not.toBe(fd);
        const want = fstatSync(fd);
        for (const f of FIELDS) expect(t.stat[f], `fd ${fd} ${f}`).toBe(want[f]);
        expect(t.stat).toBeInstanceOf(Stats);
        expect(t.stat.mtime.getTime()).toBe(want.mtime.getTime());
        expect([t.stat.isFile(), t.stat.isDirectory(), t.stat.isFIFO(), t.stat.isSocket(), t.stat.isCharacterDevice()]).toEqual([
          want.isFile(),
          want.isDirectory(),
          want.isFIFO(),
          want.isSocket(),
          want.isCharacterDevice(),
        ]);
        // The duplicate is of the same description: its status flags are the fd's.
        expect(native.fd.fcntl(t.dupFd, F_GETFL, 0)).toBe(native.fd.fcntl(fd, F_GETFL, 0));
      });
      expect(taken.fds[2]!.own).toEqual({ type: 1, pid: process.pid, sig: native.fd.fcntl(pr, F_GETSIG, 0) });
      expect(taken.fds[2]!.own!.sig).toBe(10);
      fds.forEach((fd, i) => {
        let want: { type: number; pid: number; sig: number } | undefined;
        try {
          want = { ...native.fd.getOwnerEx(fd), sig: native.fd.fcntl(fd, F_GETSIG, 0) };
        } catch {}
        expect(taken.fds[i]!.own, `fd ${fd}`).toEqual(want);
      });
    } finally {
      const dups = taken.fds.flatMap((t) => (t ? [t.dupFd] : []));
      taken.close();
      for (const d of dups) expect(() => fstatSync(d), `duplicate ${d} closed`).toThrow();
      closeSync(pidfd);
    }
  });
});
