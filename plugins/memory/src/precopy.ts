/**
 * Pre-copy: an increment's pages read before the freeze.
 *
 * An incremental dump (a parent image whose tracking it takes, track.ts) walks the tracked areas
 * once more just before it freezes the process: the pages written since the parent's dump are
 * write-protected again in that walk (pagemapScan with reprotect, the process stopped for the walk
 * alone: a few milliseconds a GiB), then read while the process runs. Frozen, the dump then reads
 * only the pages written since this walk, usually a handful, and takes the others from here.
 *
 * Why a page still clean at the freeze is as the pre-copy read it: its bit was set by the walk
 * before it was read, and anything that changes it since (a write, a move, a remap, a discard
 * and a new fault) leaves it without the bit, as track.ts argues for the bits between dumps.
 * Conversely the pages protected again here are no longer the parent's (they may differ from
 * what the parent image holds): `reset` lists them, and the dump leaves none of them to its
 * parent, whether it takes them from here or reads them again.
 */
import { type DumpSession, fault, logger, procfs, type Vma } from '@ckpt/core';
import { native } from '@ckpt/native';
import { intersectRuns, runsBytes, subtractRuns } from './ranges.js';

const log = logger('memory:precopy');

export interface Precopy {
  /**
   * Sorted flat runs of every page protected again (an area whose walk failed: all of it), as a
   * Float64Array: the frozen memory stage takes it through run sets area by area.
   */
  reset: Float64Array;
  /** The bytes of `reset`'s pages in that order, read while the process ran; undefined: not read (too many, or the read failed). */
  pages?: Buffer;
  /** The pages read that the freeze found still clean (collected by the memory stage): taken from `pages`. */
  used: number[];
}

/** At most this many bytes are read ahead (more stays with the frozen read or the snapshot). */
const PRECOPY_MAX = 64 << 20;

/**
 * The pre-copy of a process (host pid) whose userfaultfd the dump took: its tracked areas
 * (`trackable`, registered with `uffd`; an area of another userfaultfd is skipped) walked, their
 * written pages protected again and read.
 */
export function precopy(session: DumpSession, pid: number, uffd: number, trackable: (v: Vma) => boolean): Precopy {
  const pre: Precopy = { reset: new Float64Array(0), used: [] };
  let areas: Vma[];
  try {
    areas = procfs.readMaps(pid).filter((v) => trackable(v) && native.mem.uffdRegisterWp(uffd, v.start, v.end - v.start) === 0);
  } catch {
    return pre; // gone: the freeze says so
  }
  if (!areas.length) return pre;
  // The walk that protects the written pages again runs with the process stopped: walking while
  // it writes lost writes here (Linux 6.18, about one dump in ten of a process writing 10 pages
  // a millisecond: a page written once after the walk stayed protected, as if never written).
  const t = performance.now();
  const reset: number[] = [];
  let walked = true;
  try {
    session.services.processes.whileStopped(pid, () => {
      fault('dump:precopy');
      for (const v of areas) {
        try {
          const r = native.mem.pagemapScan(pid, v.start, v.end, false, true);
          for (const x of r.clean?.length ? subtractRuns(r, r.clean) : r) reset.push(x);
        } catch {
          // Some of it may be protected again, which pages unknown: none of it is the parent's.
          reset.push(v.start, v.end - v.start);
        }
      }
    });
  } catch (e) {
    log('pid %d: no pre-copy: %s', pid, (e as Error).message);
    walked = false;
  }
  pre.reset = Float64Array.from(reset);
  if (!walked) return pre; // not stopped, or stopped before the walk: the freeze says why, if it fails too
  const stopped = performance.now() - t;
  session.stats['memory.precopyStoppedMs'] = Math.max(Number(session.stats['memory.precopyStoppedMs'] ?? 0), stopped);
  const bytes = runsBytes(pre.reset);
  if (!bytes || bytes > PRECOPY_MAX) return pre;
  try {
    pre.pages = native.mem.readPages(pid, pre.reset);
  } catch {
    return pre; // an area unmapped meanwhile: all of it is read again while frozen
  }
  session.stats['memory.precopyBytes'] = Number(session.stats['memory.precopyBytes'] ?? 0) + bytes;
  return pre;
}

/** The pages of `clean` (an area's, at the freeze) the pre-copy has: noted as used. */
export function notePrecopied(pre: Precopy, clean: ArrayLike<number>): void {
  if (!pre.pages) return;
  for (const x of intersectRuns(clean, pre.reset)) pre.used.push(x);
}
