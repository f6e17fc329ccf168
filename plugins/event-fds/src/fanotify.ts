/**
 * fanotify groups: their init flags and event flags, and their marks, from fdinfo:
 *
 *   fanotify flags:F event-flags:E
 *   fanotify ino:I sdev:D mflags:M mask:K ignored_mask:G fhandle-bytes:N fhandle-type:T f_handle:H
 *   fanotify mnt_id:ID mflags:M mask:K ignored_mask:G
 *   fanotify sdev:D mflags:M mask:K ignored_mask:G
 *
 * (an inode, a mount, a filesystem mark; hex numbers). Each mark is saved with a path: the inode's
 * (its file handle resolved, handles.ts), the mount's mount point, a mount of the filesystem. At
 * restore the group is made in the restorer (fanotify_init) and each mark added by path, its mask
 * and its ignore mask (with the same mark flags). Events queued but not yet read at dump time are
 * not kept (as for inotify): the group starts with an empty queue.
 */
import { CkptError, shmemFd, type FdDumpRequest, type FdRecord, type ProcessDump, type ProcessRestore, type ShmemRef } from '@ckpt/core';
import { native } from '@ckpt/native';
import { HandlePaths, mountsOf, openMountOf, sdevName, type Watched } from './handles.js';
import { closeSync, readlinkSync } from 'node:fs';

export interface FanotifyMark {
  /** What is marked: an inode, the mount at a mount point, the filesystem of a path. */
  type: 'inode' | 'mount' | 'filesystem';
  path: string;
  /** An inode mark on a deleted file (held open by the tree): saved, and recreated deleted. */
  ghost?: ShmemRef;
  /** FAN_MARK_* flags of the mark (FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE, FAN_MARK_IGNORE). */
  mflags: number;
  mask: number;
  ignoredMask: number;
}

export interface FanotifyGroup {
  flags: number;
  eventFlags: number;
  marks: FanotifyMark[];
}

const FAN_NONBLOCK = 0x2;
const FAN_MARK_ADD = 0x1;
const FAN_MARK_DONT_FOLLOW = 0x4;
const FAN_MARK_IGNORED_MASK = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY = 0x40;
const FAN_MARK_MOUNT = 0x10;
const FAN_MARK_FILESYSTEM = 0x100;
const FAN_MARK_EVICTABLE = 0x200;
const FAN_MARK_IGNORE = 0x400;

const GROUP_RE = /^fanotify flags:([0-9a-f]+) event-flags:([0-9a-f]+)/;
const MARK_RE =
  /^fanotify (?:ino:([0-9a-f]+) sdev:([0-9a-f]+)|mnt_id:([0-9a-f]+)|sdev:([0-9a-f]+)) mflags:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+)(?: fhandle-bytes:[0-9a-f]+ fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*))?/;

export function dumpFanotify(req: FdDumpRequest, proc: ProcessDump): FanotifyGroup {
  const fail = (why: string) =>
    new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is a fanotify group whose ${why}`, {
      hint: 'remove that mark (fanotify_mark FAN_MARK_REMOVE) before the checkpoint',
    });
  let group: FanotifyGroup | undefined;
  const marks: FanotifyMark[] = [];
  const handles = new HandlePaths(proc);
  try {
    for (const line of req.info.raw.split('\n')) {
      if (!line.startsWith('fanotify')) continue;
      const g = GROUP_RE.exec(line);
      if (g) {
        group = { flags: parseInt(g[1], 16), eventFlags: parseInt(g[2], 16), marks };
        continue;
      }
      const m = MARK_RE.exec(line);
      if (!m) throw fail(`mark cannot be read: ${line.trim()}`);
      const [mflags, mask, ignoredMask] = [m[5], m[6], m[7]].map((x) => parseInt(x, 16));
      const mark = (type: FanotifyMark['type'], watched: Watched) => marks.push({ type, ...watched, mflags, mask, ignoredMask });
      if (m[1] !== undefined) {
        mark(
          'inode',
          handles.resolve({ ino: parseInt(m[1], 16), sdev: parseInt(m[2], 16), type: m[8], handle: m[9] }, (why) => fail(`inode mark ${why}`)),
        );
      } else if (m[3] !== undefined) {
        const id = parseInt(m[3], 16);
        const mount = mountsOf(proc.procPid).find((x) => x.id === id);
        if (!mount) throw fail(`mount mark is on mount ${id}, which is not in the process's mount namespace`);
        mark('mount', { path: mount.point });
      } else {
        const sdev = parseInt(m[4], 16);
        const fd = openMountOf(proc.procPid, sdev);
        if (fd === undefined) throw fail(`filesystem mark is on dev ${sdevName(sdev)}, which is not mounted in the process's mount namespace`);
        try {
          mark('filesystem', { path: readlinkSync(`/proc/self/fd/${fd}`) });
        } finally {
          closeSync(fd);
        }
      }
    }
  } finally {
    handles.close();
  }
  if (!group) throw fail(`fdinfo has no "fanotify flags" line`);
  return group;
}

export function restoreFanotify(rec: FdRecord, g: FanotifyGroup, nonblock: boolean, proc: ProcessRestore): number {
  const fd = native.events.fanotifyInit((g.flags & ~FAN_NONBLOCK) | (nonblock ? FAN_NONBLOCK : 0), g.eventFlags);
  try {
    // fdinfo lists the newest mark first: added oldest first, they list as they did.
    for (const m of [...g.marks].reverse()) {
      // A deleted file recreated is reached through our fd's magic link: followed.
      const path = m.ghost ? `/proc/self/fd/${shmemFd(proc.session, m.ghost)}` : proc.session.relocate(m.path);
      const type = m.type === 'mount' ? FAN_MARK_MOUNT : m.type === 'filesystem' ? FAN_MARK_FILESYSTEM : m.ghost ? 0 : FAN_MARK_DONT_FOLLOW;
      const base = FAN_MARK_ADD | type | (m.mflags & FAN_MARK_EVICTABLE);
      const add = (flags: number, mask: number) => {
        try {
          native.events.fanotifyMark(fd, flags, mask, path);
        } catch (e) {
          const code = (e as { code?: string }).code;
          throw new CkptError(
            'ERR_CKPT_RESTORE_FAILED',
            `cannot restore the fanotify ${m.type} mark on ${path} (fd ${rec.fd} of pid ${proc.pid}): ${code ?? (e as Error).message}`,
            {
              cause: e,
              hint: code === 'ENOENT' ? 'marked files and mounts must exist at restore, as at dump time' : undefined,
            },
          );
        }
      };
      if (m.mask) add(base, m.mask);
      if (m.ignoredMask) {
        const ignore = m.mflags & FAN_MARK_IGNORE ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK;
        add(base | ignore | (m.mflags & FAN_MARK_IGNORED_SURV_MODIFY), m.ignoredMask);
      }
    }
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}
