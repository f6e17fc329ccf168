/**
 * @ckpt/plugin-event-fds — the event file descriptors of event loops (libuv/Node, glib, ...):
 *
 *   eventfd   counter and semaphore mode;
 *   epoll     its watch list (fd, events, data) from fdinfo, re-registered in the restored
 *             process with its own fd numbers once every fd exists (session.fdsInstalled);
 *   signalfd  its signal mask;
 *   timerfd   clock, remaining time and interval (expirations not yet read are dropped);
 *   inotify   its watches: wd, mask and the watched object's path (see below);
 *   fanotify  its flags and marks (inode, mount, filesystem), each by path (fanotify.ts).
 *
 * Each object is created anew in the restorer and installed like any other fd.
 *
 * inotify. fdinfo lists each watch as `inotify wd:W ino:I sdev:D mask:M ignored_mask:0
 * fhandle-bytes:N fhandle-type:T f_handle:HEX` (hex numbers). At dump each watch is resolved to a
 * path: the file handle is opened with open_by_handle_at (CAP_DAC_READ_SEARCH) relative to a mount
 * of its filesystem (from /proc/PID/mountinfo, by sdev, the whole filesystem's root preferred),
 * readlink of the result gives the path, and the path is checked to lead to the same inode. A
 * watch that cannot be resolved (filesystem without file handles, deleted or unreachable object)
 * stops the dump, naming it. At restore the instance is created in the restorer (inotify_init1;
 * it is installed like any fd) and the watches added by path in the order of their wd, so the
 * kernel hands out the same wd numbers (watch descriptors are per instance, allocated cyclically
 * from 1): a gap left by a removed watch is consumed by a throwaway watch on a memfd of ours,
 * removed at once, and the IN_IGNORED events of those removals are read off the new queue before the
 * process runs again (so are events of the watches already added, caused during those few
 * milliseconds). Each watch is added with IN_DONT_FOLLOW (the saved path is the watched object
 * itself); a wd that comes back different (e.g. the path now leads to a file watched under another
 * wd) fails the restore. Events queued but not yet read at dump time are lost, and so are changes
 * made between the dump and the restore.
 */
import { closeSync, openSync, readdirSync, readSync } from 'node:fs';
import {
  CkptError,
  definePlugin,
  reapWithin,
  shmemFd,
  type FdClaim,
  type FdDumpRequest,
  type FdRecord,
  type ProcessDump,
  type ProcessRestore,
  type ShmemRef,
} from '@ckpt/core';
import { eventFdData } from './record.js';
import { HandlePaths } from './handles.js';
import { dumpFanotify, restoreFanotify, type FanotifyGroup } from './fanotify.js';
import { timespecNs } from './timespec.js';
import { native, SYS, O_CLOEXEC, O_EXCL, O_NONBLOCK, F_DUPFD_CLOEXEC, F_SETFL, EFD_SEMAPHORE, EPOLL_CTL_ADD, IN_DONT_FOLLOW } from '@ckpt/native';

export { timespecNs } from './timespec.js';

export const NAME = '@ckpt/plugin-event-fds';

type Kind = 'eventfd' | 'eventpoll' | 'signalfd' | 'timerfd' | 'inotify' | 'fanotify' | 'pidfd';

/** One inotify watch: its descriptor, event mask (incl. IN_ONESHOT / IN_EXCL_UNLINK) and path. */
export interface InotifyWatch {
  wd: number;
  mask: number;
  path: string;
  /** The watched file was deleted (held open by the tree): it is saved, and recreated deleted. */
  ghost?: ShmemRef;
}

export interface EventFdData {
  type: Kind;
  flags: number;
  count?: string;
  semaphore?: boolean;
  /**
   * epoll: each watch as the kernel keys it (the file, and the fd number it was added under).
   * `via`: where the watched file is now when fd `tfd` of the process no longer holds it (closed
   * after a dup, or reused): an fd of this process or another of the image.
   */
  watches?: Array<{ tfd: number; events: number; data: string; via?: { pid: number; fd: number } }>;
  sigmask?: string;
  clockid?: number;
  valueNs?: string;
  intervalNs?: string;
  inotify?: InotifyWatch[];
  fanotify?: FanotifyGroup;
  /** pidfd: the process (or thread: PIDFD_THREAD) it refers to; absent when it is gone and reaped. */
  pid?: number;
  thread?: boolean;
}

function kindOf(link: string): Kind | undefined {
  if (link === 'anon_inode:inotify') return 'inotify';
  const m = /^anon_inode:\[(eventfd|eventpoll|signalfd|timerfd|pidfd|fanotify)\]$/.exec(link);
  return m?.[1] as Kind | undefined;
}

/**
 * The fd holding the file an epoll watch is on (kcmp KCMP_EPOLL_TFD): fd `tfd` of the process
 * itself, unless it was closed (or reused) after the watch was added; then any fd of the process
 * or of another process of the image that holds that file.
 */
function watchedFile(proc: ProcessDump, epfd: number, tfd: number, toff: number): { pid: number; fd: number } {
  // kcmp looks at each process's fd table through procPid (a live task).
  const holds = (task: number, fd: number) => {
    try {
      return native.proc.kcmpEpollTfd(task, fd, proc.procPid, epfd, tfd, toff) === 0;
    } catch {
      return false;
    }
  };
  if (holds(proc.procPid, tfd)) return { pid: proc.pid, fd: tfd };
  const order = [proc, ...proc.session.processes.filter((p) => p !== proc)];
  for (const p of order) {
    let fds: number[] = [];
    try {
      fds = readdirSync(`/proc/${p.procPid}/fd`).map(Number);
    } catch {
      continue;
    }
    for (const fd of fds) if (holds(p.procPid, fd)) return { pid: p.pid, fd };
  }
  throw new CkptError(
    'ERR_CKPT_UNSUPPORTED_FD',
    `cannot checkpoint pid ${proc.pid}: epoll fd ${epfd} watches a file under fd ${tfd} that no process of the checkpoint holds any more`,
  );
}

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<EventFdData> | undefined> {
  const type = kindOf(req.link);
  if (!type) return undefined;
  const x = req.info.extra;
  const data: EventFdData = { type, flags: req.info.flags & O_NONBLOCK };
  switch (type) {
    case 'eventfd':
      data.count = '0x' + (x['eventfd-count'] ?? '0').trim();
      data.semaphore = (x['eventfd-semaphore'] ?? '0').trim() === '1';
      break;
    case 'eventpoll':
      data.watches = [];
      for (const line of req.info.raw.split('\n')) {
        const m = /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/.exec(line);
        if (!m) continue;
        const w: NonNullable<EventFdData['watches']>[number] = { tfd: Number(m[1]), events: parseInt(m[2], 16), data: '0x' + m[3] };
        const toff = data.watches.filter((x) => x.tfd === w.tfd).length;
        const via = watchedFile(proc, req.fd, w.tfd, toff);
        if (via.pid !== proc.pid || via.fd !== w.tfd) w.via = via;
        data.watches.push(w);
      }
      break;
    case 'signalfd':
      data.sigmask = '0x' + (x.sigmask ?? '0').trim();
      break;
    case 'timerfd':
      data.clockid = Number(x.clockid ?? 1);
      data.valueNs = timespecNs(x.it_value).toString();
      data.intervalNs = timespecNs(x.it_interval).toString();
      // A timer that expired with nobody reading it shows it_value 0 (a periodic one restarts
      // only on the next read): re-arm it to expire at once, so the expiration is not lost and
      // a periodic timer keeps running. (How many expirations were pending is not kept: >= 1.)
      if (Number(x.ticks ?? 0) > 0 || (data.valueNs === '0' && data.intervalNs !== '0')) data.valueNs = '1';
      break;
    case 'inotify':
      data.inotify = dumpInotify(req, proc);
      break;
    case 'fanotify':
      data.fanotify = dumpFanotify(req, proc);
      break;
    case 'pidfd': {
      // Pid: the task as ckpt sees it; -1 once it is gone and reaped (the pidfd still polls readable).
      const pid = Number(x.Pid ?? -1);
      data.thread = (req.info.flags & O_EXCL) !== 0;
      if (pid > 0) {
        const inTree = proc.session.processes.some((p) => p.pid === pid || (data.thread && p.threads.some((t) => t.pid === pid)));
        if (!inTree) {
          throw new CkptError(
            'ERR_CKPT_UNSUPPORTED_FD',
            `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is a pidfd of pid ${pid}, which is not in the checkpoint`,
            {
              hint: 'checkpoint a tree that holds that process too',
            },
          );
        }
        data.pid = pid;
      }
      break;
    }
  }
  return { kind: type, data };
}

/**
 * A pidfd again: on the restored process (or thread), or, for one whose process was gone and
 * reaped, on a helper that exits and is reaped at once (the same: Pid -1, polls readable).
 */
function restorePidfd(d: EventFdData, proc: ProcessRestore): number {
  let target: number;
  let helper = false;
  if (d.pid !== undefined) {
    const owner = proc.session.processes.find((p) => p.pid === d.pid || p.threads.some((t) => t.pid === d.pid));
    if (!owner?.stub) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `pid ${proc.pid}: a pidfd of pid ${d.pid}, which the image does not restore`);
    target = owner.pid === d.pid ? owner.stub.pid : d.pid;
  } else {
    const devnull = openSync('/dev/null', 'r+');
    try {
      target = native.proc.spawnDetached('/bin/true', ['true'], [], null, [devnull, devnull, devnull]);
    } finally {
      closeSync(devnull);
    }
    helper = true;
  }
  const fd = native.proc.pidfdOpen(target, d.thread ? O_EXCL : 0);
  if (helper) reapWithin(target, 1000);
  if (d.flags & O_NONBLOCK) native.fd.fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as EventFdData;
  switch (d.type) {
    case 'pidfd':
      return restorePidfd(d, proc);
    case 'eventfd':
      return native.events.eventfd(BigInt(d.count ?? '0'), (d.flags & O_NONBLOCK) | (d.semaphore ? EFD_SEMAPHORE : 0));
    case 'eventpoll': {
      const fd = native.events.epollCreate();
      if (d.flags & O_NONBLOCK) native.fd.fcntl(fd, F_SETFL, O_NONBLOCK);
      return fd;
    }
    case 'signalfd':
      return native.events.signalfd(BigInt(d.sigmask ?? '0'), d.flags & O_NONBLOCK);
    case 'timerfd':
      return native.events.timerfd(d.clockid ?? 1, d.flags & O_NONBLOCK, 0, BigInt(d.valueNs ?? '0'), BigInt(d.intervalNs ?? '0'));
    case 'inotify':
      return restoreInotify(rec, d, proc);
    case 'fanotify':
      return restoreFanotify(rec, d.fanotify!, (d.flags & O_NONBLOCK) !== 0, proc);
  }
}

// ---- inotify ----

const INOTIFY_RE =
  /^inotify\s+wd:([0-9a-f]+)\s+ino:([0-9a-f]+)\s+sdev:([0-9a-f]+)\s+mask:([0-9a-f]+)\s+ignored_mask:[0-9a-f]+(?:\s+fhandle-bytes:([0-9a-f]+)\s+fhandle-type:([0-9a-f]+)\s+f_handle:([0-9a-f]*))?/;

function dumpInotify(req: FdDumpRequest, proc: ProcessDump): InotifyWatch[] {
  const watches: InotifyWatch[] = [];
  const handles = new HandlePaths(proc);
  try {
    for (const line of req.info.raw.split('\n')) {
      if (!line.startsWith('inotify')) continue;
      const m = INOTIFY_RE.exec(line);
      const wd = m ? parseInt(m[1], 16) : NaN;
      const fail = (why: string) =>
        new CkptError(
          'ERR_CKPT_UNSUPPORTED_FD',
          `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is an inotify instance whose watch ${m ? `wd ${wd} ` : ''}${why}`,
          { hint: 'remove that watch (inotify_rm_watch) before the checkpoint' },
        );
      if (!m) throw fail(`cannot be read: ${line.trim()}`);
      const watched = handles.resolve({ ino: parseInt(m[2], 16), sdev: parseInt(m[3], 16), type: m[6], handle: m[7] }, fail);
      watches.push({ wd, mask: parseInt(m[4], 16), ...watched });
    }
  } finally {
    handles.close();
  }
  return watches.sort((a, b) => a.wd - b.wd);
}

/** Reads (discards) every event queued on a non-blocking inotify fd of ours. */
function drain(fd: number): void {
  const buf = Buffer.alloc(65536);
  for (;;) {
    try {
      if (readSync(fd, buf, 0, buf.length, null) <= 0) return;
    } catch {
      return; // EAGAIN: empty
    }
  }
}

function restoreInotify(rec: FdRecord, d: EventFdData, proc: ProcessRestore): number {
  const fd = native.events.inotifyInit(O_NONBLOCK);
  let spare: number | undefined;
  try {
    let next = 1; // the wd the instance hands out next (fresh instance: 1, then each last + 1)
    let gaps = false;
    for (const w of d.inotify ?? []) {
      const path = w.ghost ? `/proc/self/fd/${shmemFd(proc.session, w.ghost)}` : proc.session.relocate(w.path);
      const where = `watch wd ${w.wd} on ${w.ghost ? `the deleted ${w.path}` : path} (inotify fd ${rec.fd} of pid ${proc.pid})`;
      // wds of removed watches: taken and given back by a throwaway watch.
      while (next < w.wd) {
        spare ??= native.fd.memfdCreate('ckpt-inotify-gap');
        const got = native.events.inotifyAddWatch(fd, `/proc/self/fd/${spare}`, 0x2 /* IN_MODIFY */);
        native.events.inotifyRmWatch(fd, got);
        gaps = true;
        if (got < next) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore the ${where}: the kernel gave wd ${got} instead of ${next}`);
        next = got + 1;
      }
      let wd: number;
      try {
        // The recreated deleted file is reached through our fd's magic link: followed.
        wd = native.events.inotifyAddWatch(fd, path, (w.ghost ? w.mask : w.mask | IN_DONT_FOLLOW) >>> 0);
      } catch (e) {
        const code = (e as { code?: string }).code;
        throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot restore the ${where}: ${code ?? (e as Error).message}`, {
          cause: e,
          hint: code === 'ENOENT' ? 'watched files and directories must exist at restore, as at dump time' : undefined,
        });
      }
      if (wd !== w.wd) {
        throw new CkptError(
          'ERR_CKPT_RESTORE_FAILED',
          `cannot restore the ${where}: the kernel gave it wd ${wd} (${wd < w.wd ? 'the path leads to an object already watched under that wd' : 'wd numbers out of order'})`,
        );
      }
      next = wd + 1;
    }
    if (gaps) drain(fd);
    if (!(d.flags & O_NONBLOCK)) native.fd.fcntl(fd, F_SETFL, 0);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  } finally {
    if (spare !== undefined) closeSync(spare);
  }
}

/**
 * A watch whose file is no longer at its fd number: the file is put at that number for the
 * moment of EPOLL_CTL_ADD (whatever the process has there now is set aside and put back), so
 * that the watch has its old key (file, number) again.
 */
function addUnderNumber(proc: ProcessRestore, epfd: number, tfd: number, via: { pid: number; fd: number }, ev: Buffer): void {
  const stub = proc.stub!;
  const holder = proc.session.processes.find((p) => p.pid === via.pid);
  const ours = holder?.restorerFd(via.fd);
  if (ours === undefined) {
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `the file epoll fd ${epfd} of pid ${proc.pid} watches is fd ${via.fd} of pid ${via.pid}, not restored before it`,
    );
  }
  const lent = proc.borrowFd(ours);
  const present = proc.fds.find((f) => f.fd === tfd);
  const aside = present ? Number(stub.syscall(SYS.fcntl, tfd, F_DUPFD_CLOEXEC, 0)) : undefined;
  try {
    stub.syscall(SYS.dup3, lent, tfd, 0);
    stub.syscall(SYS.epoll_ctl, epfd, EPOLL_CTL_ADD, tfd, stub.put(ev, 0));
  } finally {
    if (aside !== undefined) {
      stub.syscall(SYS.dup3, aside, tfd, present!.cloexec ? O_CLOEXEC : 0);
      stub.syscall(SYS.close, aside);
    } else stub.syscallRaw(SYS.close, tfd);
    stub.syscall(SYS.close, lent);
  }
}

/** epoll watch lists name fds by number: registered in the process itself, once all fds exist. */
async function afterInstall(proc: ProcessRestore): Promise<void> {
  const stub = proc.stub;
  if (!stub) return;
  for (const r of proc.fds) {
    if (r.owner !== NAME || r.sameAs || (r.data as EventFdData).type !== 'eventpoll') continue;
    for (const w of (r.data as EventFdData).watches ?? []) {
      const ev = Buffer.alloc(12);
      ev.writeUInt32LE(w.events >>> 0, 0);
      ev.writeBigUInt64LE(BigInt(w.data), 4);
      try {
        if (w.via) addUnderNumber(proc, r.fd, w.tfd, w.via, ev);
        else stub.syscall(SYS.epoll_ctl, r.fd, EPOLL_CTL_ADD, w.tfd, stub.put(ev, 0));
      } catch (e) {
        throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot re-register fd ${w.tfd} in epoll fd ${r.fd} of pid ${proc.pid}: ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
  }
}

export const eventFdsPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'eventfd, epoll (watch lists), signalfd, timerfd, inotify (watches), fanotify (groups and marks), pidfds',
  record: { version: 2, fd: eventFdData },
  claims: { fdKinds: ['eventfd', 'eventpoll', 'signalfd', 'timerfd', 'inotify', 'fanotify', 'pidfd'] },
  show: { fdName: (rec: FdRecord) => `anon_inode:[${rec.kind}]` },
  apply(hooks) {
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => kindOf(req.link) !== undefined }, dumpFd);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
    hooks.session.fdsInstalled.tapPromise(NAME, afterInstall);
  },
}));

export default eventFdsPlugin;
