/**
 * Write tracking for incremental dumps, without soft-dirty (this kernel has none).
 *
 * A tracked process's private anonymous areas are registered, in write-protect mode, with a
 * userfaultfd of its address space in asynchronous mode (UFFD_FEATURE_WP_ASYNC): a write to a
 * protected page never waits for anyone, the kernel only clears the page's uffd-wp bit, which
 * /proc/PID/pagemap shows (PM_UFFD_WP). Each tracked dump reads the bits with the page list
 * (pagemapRuns `clean`), then protects every page again while the process is still frozen, so
 * the next dump sees exactly the pages written since this one.
 *
 * The userfaultfd is made by a task that shares the process's address space but not its fd table
 * (Tracee.userfaultfd): the process's fds never change. Between dumps it is held by a helper,
 * ckpt-memtrack (native/src/memtrack.c), with a pidfd of the process: the helper drops it when
 * the process exits. Each image's memory record names the helper and the fd number there (`track`);
 * the next dump with that image as its parent takes the userfaultfd from it (pidfd_getfd), ends
 * it, and hands the userfaultfd to a helper of its own once the image is committed.
 *
 * Why a page not written since the parent's dump is the parent's page, exactly:
 *  - the helper named by the parent's record is alive only until another tracked dump of the
 *    process takes its userfaultfds (or arms a new one): so its bits count from the parent's dump;
 *  - a dump that resets the bits and then fails hands them to no helper (its helper exits
 *    uncommitted), so the userfaultfd closes, and the kernel drops every registration with it;
 *  - an area mapped, moved (mremap) or remapped since is not registered with this userfaultfd
 *    any more, or its pages have no bit: all of it counts as written;
 *  - a process that exec'd has another address space: the old userfaultfd refuses (ESRCH), and
 *    a pid reused by another process has another start time;
 *  - areas registered with another userfaultfd (the program's own, or a monitor's) refuse the
 *    registration (EBUSY): they are saved whole at every dump;
 *  - and a page counts as the parent's only where the parent image holds it (its pages, or its
 *    own parent's), at the same address.
 * Memory that userfaultfd cannot track (file mappings' private pages, hugetlb, shared memory) is
 * saved whole at every dump.
 */
import { closeSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { createSessionState, logger, ownerAlive, procfs, selfOwner, sleepSync, spawnHelper, type DumpSession, type ProcessDump } from '@ckpt/core';
import { memtrackPath, native, type NativeError } from '@ckpt/native';

const log = logger('memory:track');

/** Where a process's userfaultfd waits between dumps (in its memory record). */
export interface TrackRef {
  /** The ckpt-memtrack helper holding it: pid, start time (clock ticks) and boot id. */
  holder: number;
  holderStart: number;
  boot: string;
  /** The userfaultfd's fd number in the helper. */
  fd: number;
  /** The tracked process's start time (a reused pid is another process). */
  start: number;
}

/** A process's tracking during a dump. */
export interface Tracking {
  /** Our copy of the userfaultfd. */
  uffd: number;
  /** Its bits count from the parent image's dump (taken from the helper that image names). */
  fromParent: boolean;
}

const EBUSY = 16;
const ESRCH = 3;

/** True while the helper a TrackRef names runs (same pid, start time and boot; a ckpt-memtrack, not a zombie). */
function holderAlive(ref: Pick<TrackRef, 'holder' | 'holderStart' | 'boot'>): boolean {
  if (!ownerAlive({ pid: ref.holder, start: ref.holderStart, boot: ref.boot })) return false;
  try {
    const st = procfs.readStat(ref.holder);
    return st.comm === 'ckpt-memtrack' && st.state !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Ends a helper (SIGKILL: once sent, it can no longer vouch for anything: holderAlive refuses a
 * dying or dead one). It is not our child: someone else reaps it.
 */
function endHolder(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** The helper this dump hands its userfaultfds to (one per dump, started at first use). */
class Holder {
  readonly pid: number;
  readonly start: number;
  readonly boot = selfOwner().boot;
  private channel: number;

  constructor() {
    const { pid: first, channel } = spawnHelper(memtrackPath, 'ckpt-memtrack');
    this.channel = channel;
    // The helper forks and its first process exits at once (nobody has to reap the helper).
    for (let i = 0; i < 1000 && !native.proc.tryWait(first); i++) sleepSync(1);
    this.pid = this.readInt('its pid');
    this.start = procfs.readStat(this.pid).startTime;
  }

  private readInt(what: string): number {
    const b = Buffer.alloc(4);
    if (readSync(this.channel, b, 0, 4, null) !== 4) throw new Error(`ckpt-memtrack did not send ${what}`);
    return b.readInt32LE(0);
  }

  /** Hands over a userfaultfd and a pidfd of its process: the fd number it has in the helper. */
  hold(pid: number, uffd: number, pidfd: number): number {
    const m = Buffer.alloc(5);
    m.write('H', 0, 'latin1');
    m.writeInt32LE(pid, 1);
    native.sock.unixSend(this.channel, m, null, [uffd, pidfd]);
    const fd = this.readInt('an fd number');
    if (fd < 0) throw new Error('ckpt-memtrack could not hold a userfaultfd');
    return fd;
  }

  /** The image is committed: the helper holds on after this dump. */
  commit(): void {
    native.sock.unixSend(this.channel, Buffer.from('C', 'latin1'));
    this.close();
  }

  /** The dump failed: the helper exits, and the tracking it was given ends. */
  close(): void {
    if (this.channel < 0) return;
    closeSync(this.channel);
    this.channel = -1;
  }
}

interface TrackState {
  /** Userfaultfds taken from the parent image's helpers, by pid (taken once per dump). */
  taken?: Map<number, number>;
  holder?: Holder;
  /** Our copies not yet handed to the holder. */
  open: Set<number>;
}

const states = createSessionState('memory:track', (_s: DumpSession): TrackState => ({ open: new Set() }), {
  dispose: (st) => {
    for (const fd of [...st.open, ...(st.taken?.values() ?? [])]) closeQuietly(fd);
    st.holder?.close();
  },
});

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

/**
 * Before the freeze (a tracked dump): starts this dump's helper, and takes every userfaultfd the
 * parent image's helpers hold for its processes that still run (same pid, same start time), then
 * ends those helpers: from now on their bits are this dump's, and a dump that fails after
 * resetting them must leave no helper that vouches for them.
 */
export function prepareTracking(session: DumpSession, parentTracks: ReadonlyMap<number, TrackRef>): void {
  const st = states.of(session);
  st.holder ??= new Holder();
  const taken = (st.taken ??= new Map());
  const holders = new Set<number>();
  for (const [pid, ref] of parentTracks) {
    if (!holderAlive(ref)) continue;
    holders.add(ref.holder);
    try {
      if (procfs.readStat(pid).startTime !== ref.start) continue;
    } catch {
      continue;
    }
    let pidfd = -1;
    try {
      pidfd = native.proc.pidfdOpen(ref.holder);
      taken.set(pid, native.proc.pidfdGetfd(pidfd, ref.fd));
    } catch (e) {
      log('pid %d: cannot take its userfaultfd from ckpt-memtrack %d: %s', pid, ref.holder, (e as Error).message);
    } finally {
      if (pidfd >= 0) closeSync(pidfd);
    }
  }
  for (const h of holders) endHolder(h);
}

/** The userfaultfds this dump took from the parent image's helpers (prepareTracking), by pid. */
export function takenTracking(session: DumpSession): ReadonlyMap<number, number> {
  return states.peek(session)?.taken ?? new Map();
}

/**
 * Ends every ckpt-memtrack helper that holds a userfaultfd of `pid` (its pidfd's fdinfo names it),
 * and waits (up to a second) until each has let go of its fds: the new userfaultfd registers the
 * areas the old one had.
 */
function endHoldersOf(pid: number): void {
  const ended: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let comm: string;
    try {
      comm = readFileSync(`/proc/${name}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (comm !== 'ckpt-memtrack') continue;
    try {
      const holds = readdirSync(`/proc/${name}/fdinfo`).some((fd) =>
        new RegExp(`^Pid:\\s+${pid}$`, 'm').test(readFileSync(`/proc/${name}/fdinfo/${fd}`, 'utf8')),
      );
      if (holds) {
        endHolder(Number(name));
        ended.push(Number(name));
      }
    } catch {
      /* gone */
    }
  }
  const gone = (h: number) => {
    try {
      return procfs.readStat(h).state === 'Z';
    } catch {
      return true;
    }
  };
  for (let i = 0; i < 1000 && !ended.every(gone); i++) sleepSync(1);
}

/**
 * The tracking of a process for this dump: the userfaultfd from the parent image's helper, or a
 * new one (then every page counts as written). Undefined, with the reason in the stats, when
 * the process cannot be tracked.
 */
export function startTracking(proc: ProcessDump): Tracking | undefined {
  const st = states.of(proc.session);
  const inherited = st.taken?.get(proc.pid);
  if (inherited !== undefined) {
    st.taken!.delete(proc.pid);
    st.open.add(inherited);
    return { uffd: inherited, fromParent: true };
  }
  return armNew(proc, st);
}

function armNew(proc: ProcessDump, st: TrackState): Tracking | undefined {
  const { session } = proc;
  // One tracker per process: an older one (of an image this dump does not add to) goes.
  endHoldersOf(proc.procPid);
  let uffd: number;
  try {
    uffd = session.services.processes.userfaultfd(proc.tracee);
  } catch (e) {
    trackingOff(session, proc.pid, `userfaultfd: ${(e as NativeError).code ?? (e as Error).message}`);
    return undefined;
  }
  st.open.add(uffd);
  try {
    native.mem.uffdApi(uffd);
  } catch (e) {
    st.open.delete(uffd);
    closeSync(uffd);
    trackingOff(session, proc.pid, `this kernel has no asynchronous userfaultfd write-protect (${(e as NativeError).code})`);
    return undefined;
  }
  return { uffd, fromParent: false };
}

function trackingOff(session: DumpSession, pid: number, why: string): void {
  const prev = session.stats['memory.trackingOff'];
  session.stats['memory.trackingOff'] = `${prev ? `${prev}; ` : ''}pid ${pid}: ${why}`;
  log('pid %d: not tracked: %s', pid, why);
}

/**
 * Registers the areas with the process's userfaultfd (an area already registered with it stays
 * as it is, bits and all): the starts of the areas tracked. An inherited userfaultfd whose
 * address space is gone (the process exec'd) is replaced by a new one.
 */
export function registerAreas(proc: ProcessDump, t: Tracking, areas: ReadonlyArray<{ start: number; end: number; name: string }>): Set<number> {
  const tracked = new Set<number>();
  for (const a of areas) {
    const r = native.mem.uffdRegisterWp(t.uffd, a.start, a.end - a.start);
    if (r === ESRCH && t.fromParent) {
      const st = states.of(proc.session);
      st.open.delete(t.uffd);
      closeSync(t.uffd);
      const fresh = armNew(proc, st);
      if (!fresh) return tracked;
      t.uffd = fresh.uffd;
      t.fromParent = false;
      tracked.clear();
      return registerAreas(proc, t, areas);
    }
    if (r === 0) tracked.add(a.start);
    else if (r === EBUSY)
      trackingOff(
        proc.session,
        proc.pid,
        `its area at 0x${a.start.toString(16)} (${a.name || 'anonymous'}) is registered with another userfaultfd: saved whole`,
      );
    else log('pid %d: area 0x%s not tracked (errno %d)', proc.pid, a.start.toString(16), r);
  }
  return tracked;
}

/** Hands the process's userfaultfd to this dump's helper: what its memory record says (`track`). */
export function handOver(proc: ProcessDump, t: Tracking): TrackRef {
  const st = states.of(proc.session);
  st.holder ??= new Holder();
  const pidfd = native.proc.pidfdOpen(proc.procPid);
  try {
    const fd = st.holder.hold(proc.pid, t.uffd, pidfd);
    return { holder: st.holder.pid, holderStart: st.holder.start, boot: st.holder.boot, fd, start: procfs.readStat(proc.procPid).startTime };
  } finally {
    closeSync(pidfd);
    st.open.delete(t.uffd);
    closeSync(t.uffd);
  }
}

/** The image is committed: the helper goes on holding the tracking. */
export function trackingCommitted(session: DumpSession): void {
  states.peek(session)?.holder?.commit();
}
