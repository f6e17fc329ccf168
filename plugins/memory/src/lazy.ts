/**
 * restore --lazy: post-copy restore. The process runs before its memory is back; its page faults
 * are served from the image, and the rest streams in behind it. Default: off.
 *
 * Lazy areas are private anonymous areas (not hugetlb, not AIO rings, not kept from the parent,
 * without guard regions) whose pages come from uncompressed blobs with BLAKE3 digests (an image
 * chain is fine: each page's blob and offset is planned). Everything else is filled eagerly as
 * without --lazy: pages of compressed blobs (decompression is sequential) and of images of
 * format 3 (SHA-256) too; `memory.lazyOff` says so.
 *
 * For each process, after the eager pages are written: a userfaultfd of its address space (made
 * by a remote syscall in the stub, taken with pidfd_getfd, closed in the stub), with the fork,
 * remap, remove and unmap events, and the lazy areas registered in MISSING mode. It goes to one
 * ckpt-lazy helper per restore (native/src/lazy.c) with a pidfd of the process, the blobs (fds)
 * and the plan (address runs -> blob, offset); the memory stage goes on only once the helper
 * serves it, so whatever touches the pages later (later stages, the process) is served.
 *
 * Digests: verified by the helper in the background, not before the process runs (that would
 * read the whole blob first, the time lazy restore saves). The helper hashes every blob as it
 * streams it; the eager bytes ckpt wrote from it are hashed here and compared with the same bytes
 * there; pages served to faults ahead of the stream are compared page by page when it gets
 * there. A mismatch kills the processes (SIGKILL). So a damaged image may run for up to the
 * length of the stream (about a second per GiB), never to completion.
 *
 * A helper that dies before it has put every page in: its watchdog (which holds the
 * userfaultfds, so that no fault ever reads zeros) kills the processes and their descendants.
 * A failed restore closes the channel: the helper and its watchdog exit, the stubs are killed.
 */
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CkptError, logger, procfs, reapWithin, sleepSync, spawnHelper, takeFd, type ImageReader, type ProcessRestore, type Tracee } from '@ckpt/core';
import { lazyPath, native, O_CLOEXEC, O_NONBLOCK, SYS, type NativeError } from '@ckpt/native';
import { pieces, runsBytes } from './ranges.js';
import type { MemoryRecord, VmaRecord } from './record.js';

const log = logger('memory:lazy');

/** One blob a process's pages come from, and what its runs ([addr, len] in blob order; address 0: bytes skipped) hold. */
export interface PagesSource {
  image: ImageReader;
  rec: MemoryRecord;
  runs: Float64Array;
}

/** Areas served lazily: private anonymous memory the helper can fill with UFFDIO_COPY. */
export function lazyArea(v: VmaRecord): boolean {
  return v.kind === 'anon' && !v.hugePageSize && !v.inherited && !v.guards?.length && !v.excluded;
}

/** Why a blob cannot be served lazily, or undefined: it can. */
export function notLazy(src: PagesSource): string | undefined {
  if (src.rec.compression === 'zstd') return 'compressed (zstd): filled before it runs';
  if (src.image.digestAlgorithm(src.rec.pagesFile) !== 'blake3') return 'an image of format 3 (SHA-256 digests): filled before it runs';
  return undefined;
}

/**
 * A blob's plan: its eager pieces (runs contiguous in the blob from `off`), its lazy runs (flat
 * [addr, len, off, id] quadruples, as ckpt-lazy takes them: tens of thousands for a chain
 * scattered by random writes), and the indices of the ranges they fall in.
 */
export interface BlobPlan {
  src: PagesSource;
  /** The blob's id for ckpt-lazy: the blobs handed to one helper are numbered from 0, in order. */
  id: number;
  eager: Array<{ off: number; runs: Float64Array }>;
  lazy: Float64Array;
  inRanges: Set<number>;
  lazyBytes: number;
  eagerBytes: number;
}

/**
 * Splits a blob's runs between the lazy ranges (sorted, apart, [start, end)) and the rest. Native
 * (native.mem.planRuns): a restore does it once per blob of the chain, in a command whose JS
 * loops still run in the interpreter (tens of milliseconds of a migration's downtime).
 */
export function planBlob(src: PagesSource, ranges: ReadonlyArray<{ start: number; end: number }>, id: number): BlobPlan {
  const flat = new Float64Array(2 * ranges.length);
  ranges.forEach((r, i) => {
    flat[2 * i] = r.start;
    flat[2 * i + 1] = r.end;
  });
  const p = native.mem.planRuns(src.runs, flat, id);
  const eager: BlobPlan['eager'] = [];
  for (let i = 0, at = 0; i < p.eagerPieces.length; i += 2) {
    const n = 2 * p.eagerPieces[i + 1];
    eager.push({ off: p.eagerPieces[i], runs: p.eagerRuns.subarray(at, at + n) });
    at += n;
  }
  return { src, id, eager, lazy: p.lazy, inRanges: new Set(p.inRanges), lazyBytes: p.lazyBytes, eagerBytes: p.eagerBytes };
}

/** Writes a blob's eager pieces into the process: the BLAKE3 of those bytes, in blob order (the helper checks it). */
export async function fillEager(proc: ProcessRestore, stub: Tracee, plan: BlobPlan): Promise<string> {
  const hash = native.hash.hashNew('blake3');
  if (!plan.eager.length) return native.hash.hashDigest(hash);
  const fd = openSync(plan.src.image.path(plan.src.rec.pagesFile), 'r');
  try {
    let done = 0;
    for (const seg of plan.eager) {
      let off = seg.off;
      for (const piece of pieces(seg.runs)) {
        await proc.session.interruptionPoint();
        const n = native.mem.restorePages(stub.pid, piece, fd, off, hash).bytes;
        off += n;
        done += n;
        proc.session.progress({ stage: 'memory', pid: proc.pid, done, total: plan.eagerBytes });
      }
    }
    return native.hash.hashDigest(hash);
  } finally {
    closeSync(fd);
  }
}

/**
 * A userfaultfd of the stub's address space with the lazy events, the ranges registered in
 * MISSING mode; undefined (and why in `why`) when the kernel or the process refuses.
 */
export function lazyUffd(stub: Tracee, ranges: ReadonlyArray<{ start: number; end: number }>, why: { reason?: string }): number | undefined {
  let there: number;
  try {
    there = Number(stub.syscall(SYS.userfaultfd, O_CLOEXEC | O_NONBLOCK));
  } catch (e) {
    why.reason = `userfaultfd: ${(e as NativeError).code ?? (e as Error).message}`;
    return undefined;
  }
  let uffd: number;
  try {
    uffd = takeFd(stub, there);
  } finally {
    stub.syscall(SYS.close, there);
  }
  try {
    native.mem.uffdApiLazy(uffd);
    for (const r of ranges) {
      const err = native.mem.uffdRegisterMissing(uffd, r.start, r.end - r.start);
      if (err) throw new Error(`registering 0x${r.start.toString(16)}-0x${r.end.toString(16)}: errno ${err}`);
    }
    return uffd;
  } catch (e) {
    // Closed: the kernel drops the registrations made so far.
    closeSync(uffd);
    why.reason = (e as NativeError).code ?? (e as Error).message;
    return undefined;
  }
}

/** The restore's ckpt-lazy helper: started at first use, one per restore. */
export class LazyDaemon {
  private channel: number;
  /** The id the next blob handed over gets (the helper numbers them as they come). */
  private nextBlob = 0;
  /** The helper's first process, until the helper's pids are read; then those. */
  private first: number;
  private pids?: [number, number];

  /**
   * Starts the helper, without waiting for it: a lazy restore starts it as it begins (the helper
   * execs and sets up while the stubs are made), and takes it at its first lazy process.
   */
  constructor() {
    const { pid: first, channel } = spawnHelper(lazyPath, 'ckpt-lazy');
    this.channel = channel;
    this.first = first;
  }

  get pid(): number {
    return this.started()[0];
  }

  get watchdog(): number {
    return this.started()[1];
  }

  /**
   * The helper's pids, once it has sent them. It forks and its first process exits at once
   * (nobody has to reap the helper): by the time the helper has sent its pids, so it is reaped
   * without a wait.
   */
  private started(): [number, number] {
    if (!this.pids) {
      try {
        const [pid, watchdog] = this.readInts(2, 'its pids');
        this.pids = [pid, watchdog];
      } finally {
        reapWithin(this.first, 1000);
      }
      // Before it is handed any process: a dump then finds it (lazyHelpers).
      try {
        mkdirSync(LAZY_DIR, { recursive: true, mode: 0o700 });
        writeFileSync(join(LAZY_DIR, String(this.pids[0])), '', { mode: 0o600 });
      } catch (e) {
        throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot note ckpt-lazy ${this.pids[0]} in ${LAZY_DIR}: ${(e as Error).message}`);
      }
    }
    return this.pids;
  }

  /** One message of n int32s (a seqpacket message is read whole). */
  private readInts(n: number, what: string): number[] {
    const b = Buffer.alloc(4 * n);
    if (readSync(this.channel, b, 0, b.length, null) !== b.length) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `ckpt-lazy did not send ${what}`);
    return Array.from({ length: n }, (_, i) => b.readInt32LE(4 * i));
  }

  /** One message; while the channel is full (the helper still taking the ones before), it waits. */
  private send(m: Buffer, fds?: number[]): void {
    for (let waited = 0; ; waited++) {
      try {
        native.sock.unixSend(this.channel, m, null, fds);
        return;
      } catch (e) {
        if ((e as NativeError).code !== 'EAGAIN' || waited >= SEND_WAIT_MS) throw e;
      }
      sleepSync(1);
    }
  }

  /** Hands a blob over (its manifest size and digest, the eager bytes' offsets and digest): its id. */
  blob(plan: BlobPlan, eagerDigest: string): void {
    this.started();
    const { image, rec } = plan.src;
    const entry = image.entry(rec.pagesFile);
    const id = plan.id;
    if (id !== this.nextBlob++)
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `blob ${rec.pagesFile} planned as ckpt-lazy's blob ${id}, handed over as ${this.nextBlob - 1}`);
    const m = Buffer.alloc(1 + 4 + 8 + 64);
    m.write('B', 0, 'latin1');
    m.writeUInt32LE(id, 1);
    m.writeBigUInt64LE(BigInt(entry.size), 5);
    Buffer.from(entry.blake3!, 'hex').copy(m, 13);
    Buffer.from(eagerDigest, 'hex').copy(m, 45);
    const fd = openSync(image.path(rec.pagesFile), 'r');
    try {
      this.send(m, [fd]);
    } finally {
      closeSync(fd);
    }
    // The eager bytes: [off, len] in blob order, merged where they touch.
    const spans: number[] = [];
    for (const seg of plan.eager) {
      const len = runsBytes(seg.runs);
      const n = spans.length;
      if (n && spans[n - 2] + spans[n - 1] === seg.off) spans[n - 1] += len;
      else spans.push(seg.off, len);
    }
    for (let i = 0; i < spans.length; i += 2 * BATCH) {
      const part = Float64Array.from(spans.slice(i, i + 2 * BATCH));
      const e = Buffer.alloc(9);
      e.write('E', 0, 'latin1');
      e.writeUInt32LE(id, 1);
      e.writeUInt32LE(part.length / 2, 5);
      this.send(Buffer.concat([e, Buffer.from(part.buffer)]));
    }
  }

  /**
   * Hands a process over: its pidfd and (with lazy areas) its userfaultfd and plan ([addr, len,
   * off, blob id] quadruples), and waits until the helper serves it.
   */
  target(pid: number, uffd: number | undefined, plan: Float64Array): void {
    this.started();
    const t0 = performance.now();
    const pidfd = native.proc.pidfdOpen(pid);
    try {
      const t = Buffer.alloc(5);
      t.write('T', 0, 'latin1');
      t.writeInt32LE(pid, 1);
      this.send(t, uffd === undefined ? [pidfd] : [pidfd, uffd]);
    } finally {
      closeSync(pidfd);
    }
    if (plan.length) {
      // The quadruples' bytes as doubles, as they are (ckpt-lazy takes them so), in a memfd.
      const fd = native.fd.memfdCreate('ckpt-lazy-plan');
      try {
        const bytes = Buffer.from(plan.buffer, plan.byteOffset, plan.byteLength);
        for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at, bytes.length - at);
        const p = Buffer.alloc(5);
        p.write('P', 0, 'latin1');
        p.writeUInt32LE(plan.length / 4, 1);
        this.send(p, [fd]);
      } finally {
        closeSync(fd);
      }
    }
    this.send(Buffer.from('R', 'latin1'));
    const t1 = performance.now();
    if (this.readInts(1, 'that it serves the process')[0] !== 0) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `ckpt-lazy refused pid ${pid}`);
    log('pid %d: %d runs handed to ckpt-lazy in %s ms, taken %s ms later', pid, plan.length / 4, (t1 - t0).toFixed(1), (performance.now() - t1).toFixed(1));
  }

  /** The restore succeeded: the helper goes on until every page is in. */
  commit(): void {
    if (this.channel < 0) return;
    this.send(Buffer.from('C', 'latin1'));
    this.close();
  }

  /** The restore failed (or the helper was not needed): it and its watchdog exit (after killing what they were given); waited for, up to a second. */
  abort(why = 'restore failed'): void {
    if (!this.pids && this.channel >= 0) {
      try {
        this.started();
      } catch {
        /* it never started: nothing of it to wait for */
        this.close();
        return;
      }
    }
    this.close();
    const gone = (pid: number) => {
      try {
        return procfs.readStat(pid).state === 'Z';
      } catch {
        return true;
      }
    };
    for (let i = 0; i < 1000 && !(gone(this.pid) && gone(this.watchdog)); i++) sleepSync(1);
    log('ckpt-lazy %d ended (%s)', this.pid, why);
  }

  private close(): void {
    if (this.channel < 0) return;
    closeSync(this.channel);
    this.channel = -1;
  }
}

/** Eager spans per message (seqpacket messages stay well under the socket's buffer). */
const BATCH = 2000;
/** How long a message to ckpt-lazy may wait for room in the channel (the helper takes them as they come). */
const SEND_WAIT_MS = 10_000;

/**
 * Where each ckpt-lazy helper is noted (an empty file named by its pid) by the restore that starts
 * it, before it is handed a process: a dump finds the helpers there, not by reading the name of
 * every process of the host (7 ms a dump with 700 processes here). The helper removes its note as
 * it ends; one a kill left goes at the next look (its pid gone, a zombie, or no longer a ckpt-lazy).
 */
export const LAZY_DIR = '/run/ckpt/lazy';

/** The live ckpt-lazy helpers noted in LAZY_DIR (the notes of those gone are removed). */
function notedHelpers(): number[] {
  let names: string[];
  try {
    names = readdirSync(LAZY_DIR);
  } catch {
    return []; // none ever started here
  }
  return names.flatMap((name) => {
    const pid = Number(name);
    let live = false;
    try {
      const st = procfs.readStat(pid);
      live = st.comm === 'ckpt-lazy' && st.state !== 'Z';
    } catch {
      /* gone */
    }
    if (Number.isInteger(pid) && pid > 0 && live) return [pid];
    rmSync(join(LAZY_DIR, name), { force: true });
    return [];
  });
}

/** The processes each live ckpt-lazy helper holds a pidfd of, by helper pid. */
function lazyHelpers(): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const helper of notedHelpers()) {
    try {
      const pids: number[] = [];
      for (const fd of readdirSync(`/proc/${helper}/fdinfo`)) {
        const m = /^Pid:\s+(\d+)$/m.exec(readFileSync(`/proc/${helper}/fdinfo/${fd}`, 'utf8'));
        if (m) pids.push(Number(m[1]));
      }
      out.set(helper, pids);
    } catch {
      /* gone */
    }
  }
  return out;
}

/** pid and its ancestors (host pids, up to init). */
function lineage(pid: number): number[] {
  const out: number[] = [];
  for (let p = pid; p > 1 && out.length < 4096; ) {
    out.push(p);
    try {
      p = procfs.readStat(p).ppid;
    } catch {
      break;
    }
  }
  return out;
}

/**
 * Before a dump of the tree at `root`: waits (up to `ms`) for the ckpt-lazy helpers still filling
 * a process of it (the root, one of its descendants, or an ancestor it was forked from since its
 * restore). Pages not yet in are not present: a dump would take them for pages never touched.
 */
export function waitLazyRestored(root: number, ms = 60_000): void {
  const concerned = () =>
    [...lazyHelpers()].filter(([, pids]) => pids.some((p) => p === root || lineage(p).includes(root) || lineage(root).includes(p))).map(([h]) => h);
  let helpers = concerned();
  if (!helpers.length) return;
  log('pid %d: waiting for ckpt-lazy %o to put its memory back first', root, helpers);
  for (let waited = 0; helpers.length; waited += 10) {
    if (waited >= ms) {
      throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${root} is still being restored lazily (ckpt-lazy ${helpers.join(', ')} is putting its memory back)`, {
        hint: 'dump it once its restore --lazy is complete',
      });
    }
    sleepSync(10);
    helpers = helpers.filter((h) => {
      try {
        return procfs.readStat(h).state !== 'Z';
      } catch {
        return false;
      }
    });
  }
}
