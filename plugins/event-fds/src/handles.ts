/**
 * What inotify watches and fanotify marks watch, named by the kernel as an inode, its
 * filesystem (s_dev) and a file handle (fdinfo): resolved to a path at dump. The handle is opened
 * with open_by_handle_at (CAP_DAC_READ_SEARCH) relative to a mount of its filesystem (from
 * /proc/PID/mountinfo, by sdev, the whole filesystem's root preferred), readlink of the result
 * gives the path, and the path is checked to lead to the same inode.
 *
 * A deleted regular file is resolved to the file itself, saved with its content as core's
 * saved-once deleted files are (the same object as an fd or a mapping of it in the image): found
 * through its handle, or, when the handle no longer opens (ESTALE), through an fd of a process of
 * the tree that holds it. Restore watches the recreated file (through /proc/self/fd).
 */
import { closeSync, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, type Stats } from 'node:fs';
import { devName, saveShmem, type ProcessDump, type ShmemRef } from '@ckpt/core';
import { native, O_DIRECTORY, O_PATH, O_RDONLY } from '@ckpt/native';

/** What a watch or mark watches: a path, or a deleted file saved with the image. */
export type Watched = { path: string; ghost?: undefined } | { path: string; ghost: ShmemRef };

const unoctal = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** The mounts of pid's mount namespace: id, device (major:minor), root in the filesystem, mount point. */
export function mountsOf(pid: number): Array<{ id: number; dev: string; root: string; point: string }> {
  return readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f.length > 4)
    .map((f) => ({ id: Number(f[0]), dev: f[2], root: unoctal(f[3]), point: unoctal(f[4]) }));
}

/** The kernel's s_dev (major << 20 | minor) as mountinfo writes it. */
export const sdevName = (sdev: number) => `${sdev >>> 20}:${sdev & 0xfffff}`;

/** A directory of pid's mount namespace on the filesystem whose (kernel) s_dev is sdev: its mount fd. */
export function openMountOf(pid: number, sdev: number): number | undefined {
  const want = sdevName(sdev);
  const mounts = mountsOf(pid)
    .filter((m) => m.dev === want)
    .sort((a, b) => (a.root === '/' ? 0 : 1) - (b.root === '/' ? 0 : 1));
  for (const m of mounts) {
    let fd: number | undefined;
    try {
      fd = openSync(`/proc/${pid}/root${m.point}`, O_RDONLY | O_DIRECTORY);
      const dev = fstatSync(fd).dev;
      // Not hidden under another mount: the directory is on that filesystem.
      if (`${(dev >>> 8) & 0xfff}:${(dev & 0xff) | ((dev >>> 12) & 0xfff00)}` === want) return fd;
      closeSync(fd);
    } catch {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return undefined;
}

/** st_dev of the kernel's s_dev (major << 20 | minor), as stat returns it. */
const statDev = (sdev: number) => {
  const major = sdev >>> 20,
    minor = sdev & 0xfffff;
  return (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
};

/** Resolves file handles of one process's fdinfo to paths (or deleted files); close() when done. */
export class HandlePaths {
  private readonly mountFds = new Map<number, number | undefined>();
  private readonly pid: number;

  constructor(private readonly proc: ProcessDump) {
    this.pid = proc.procPid;
  }

  /** What the object is: its path, or the deleted file; else the error `fail` makes, saying why. */
  resolve(o: { ino: number; sdev: number; type?: string; handle?: string }, fail: (why: string) => Error): Watched {
    const obj = `inode ${o.ino} on dev ${sdevName(o.sdev)}`;
    if (!o.handle || o.type === undefined) throw fail(`(${obj}) is on a filesystem without file handles: its path cannot be found`);
    if (!this.mountFds.has(o.sdev)) this.mountFds.set(o.sdev, openMountOf(this.pid, o.sdev));
    const mountFd = this.mountFds.get(o.sdev);
    if (mountFd === undefined) throw fail(`(${obj}) is on a filesystem not mounted in the process's mount namespace`);
    let fd: number;
    try {
      fd = native.fd.openByHandleAt(mountFd, parseInt(o.type, 16), Buffer.from(o.handle, 'hex'), O_PATH);
    } catch (e) {
      const held = this.heldOpen(o);
      if (held !== undefined) return held;
      throw fail(`(${obj}) cannot be opened by its file handle, so its path cannot be found: ${(e as Error).message}`);
    }
    try {
      const st = fstatSync(fd);
      const path = readlinkSync(`/proc/self/fd/${fd}`);
      if (st.ino === o.ino && st.nlink === 0 && st.isFile() && path.endsWith(' (deleted)')) return this.ghost(fd, st, path);
      let ok = st.ino === o.ino && path.startsWith('/') && !path.endsWith(' (deleted)');
      if (ok) {
        try {
          const at = lstatSync(path);
          ok = at.ino === st.ino && at.dev === st.dev;
        } catch {
          ok = false;
        }
      }
      if (!ok) throw fail(`(${obj}) has no path that leads to it (${path}): deleted, or outside the mount`);
      return { path };
    } finally {
      closeSync(fd);
    }
  }

  /** A deleted file (fd: ours, any mode) saved with the image, once for every holder of it. */
  private ghost(fd: number, st: Stats, link: string): Watched {
    const path = link.slice(0, -' (deleted)'.length);
    const ghost = saveShmem(this.proc.session, `${devName(st.dev)}:${st.ino}`, path, fd, { deletedFile: path });
    return { path, ghost };
  }

  /** The deleted file through an fd of a process of the tree that holds it, if one does. */
  private heldOpen(o: { ino: number; sdev: number }): Watched | undefined {
    const dev = statDev(o.sdev);
    for (const p of this.proc.session.processes) {
      let fds: string[] = [];
      try {
        fds = readdirSync(`/proc/${p.procPid}/fd`);
      } catch {
        continue;
      }
      for (const n of fds) {
        const at = `/proc/${p.procPid}/fd/${n}`;
        let fd: number | undefined;
        try {
          fd = openSync(at, O_PATH);
          const st = fstatSync(fd);
          const link = readlinkSync(at);
          if (st.ino === o.ino && st.dev === dev && st.isFile() && st.nlink === 0) return this.ghost(fd, st, link);
        } catch {
          /* gone, or not openable */
        } finally {
          if (fd !== undefined) closeSync(fd);
        }
      }
    }
    return undefined;
  }

  close(): void {
    for (const fd of this.mountFds.values()) if (fd !== undefined) closeSync(fd);
    this.mountFds.clear();
  }
}
