/**
 * Image chains of the memory plugin (incremental dumps): where an incremental image's pages that
 * are not in its own blob are (the images above it), and `ckpt image compact`, which writes them
 * all into one blob of a whole image.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CkptError, validate, type Compaction, type ImageReader, type ProcessRecord } from '@ckpt/core';
import { native } from '@ckpt/native';
import { memoryRecord, NAME, type MemoryRecord } from './record.js';
import { intersectRuns, PROGRESS_CHUNK, type Runs, sortRuns, subtractRuns, takeFromBlob } from './ranges.js';

/**
 * The memory record an image (of a chain) has for a process, checked against the schema as core
 * checks the image's own; undefined: none. Read-only: the records of the last chains read are
 * kept, by the digest the (verified) manifest gives their file, for the next restore or dump of
 * the chain (a migration's rehearsal, then its restore; a checkpoint every few minutes).
 */
export function memoryRecordOf(image: ImageReader, pid: number): MemoryRecord | undefined {
  const entry = image.manifest.processes.find((p) => p.pid === pid);
  if (!entry) return undefined;
  const e = image.entry(entry.file);
  const key = `${e.blake3 ?? e.sha256}:${pid}`;
  if (recordsRead.has(key)) return recordsRead.get(key);
  const raw = image.readJson<{ records?: Record<string, unknown> }>(entry.file).records?.[NAME];
  let rec: MemoryRecord | undefined;
  if (raw !== undefined) {
    const v = validate(memoryRecord, raw);
    if (!v.ok) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${image.dir}: the memory record of pid ${pid} is malformed (${v.path}: ${v.message})`);
    rec = v.value;
  }
  if (e.blake3 ?? e.sha256) {
    recordsRead.set(key, rec);
    if (recordsRead.size > RECORDS_KEPT) recordsRead.delete(recordsRead.keys().next().value!);
  }
  return rec;
}

/** Memory records read from images, by their file's digest and pid (memoryRecordOf). */
const recordsRead = new Map<string, MemoryRecord | undefined>();
const RECORDS_KEPT = 64;

/**
 * A process's pages blob, in blob order: each area's pages start at its blobOffset. Kept with the
 * record, as sortedRuns: the records of a chain are read once and read-only (memoryRecordOf).
 */
export function blobRuns(rec: MemoryRecord): Float64Array {
  let runs = blobRunsOf.get(rec);
  if (runs) return runs;
  let n = 0;
  for (const v of rec.vmas) n += 2 * v.runs.length;
  // One array of the final size: a chain's records have tens of thousands of runs, and a
  // restore's garbage is collected while the process waits.
  runs = new Float64Array(n);
  let i = 0;
  for (const v of [...rec.vmas].sort((a, b) => a.blobOffset - b.blobOffset)) {
    for (const [a, l] of v.runs) {
      runs[i++] = a;
      runs[i++] = l;
    }
  }
  blobRunsOf.set(rec, runs);
  return runs;
}
const blobRunsOf = new WeakMap<MemoryRecord, Float64Array>();

/**
 * Where the pages of an incremental image that are not in its own blob come from: each image
 * above it in the chain that holds some, its record for the process, and the pages taken from it
 * (sorted runs). Every page must be in exactly one of them.
 */
export function chainSources(image: ImageReader, pid: number, rec: MemoryRecord): Array<{ image: ImageReader; rec: MemoryRecord; take: Runs }> {
  let wanted: Runs = sortedRuns(rec).parent;
  const out: Array<{ image: ImageReader; rec: MemoryRecord; take: Runs }> = [];
  for (let up = image.parent(); wanted.length; up = up.parent()) {
    const broken = (why: string) =>
      new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${image.dir}: pages of pid ${pid} that its chain should hold are missing: ${why}`);
    if (!up) throw broken('its chain ends first');
    const upRec = memoryRecordOf(up, pid);
    if (!upRec) throw broken(`image ${up.dir} has no memory of pid ${pid}`);
    const runs = sortedRuns(upRec);
    const take = intersectRuns(wanted, runs.blob);
    wanted = subtractRuns(wanted, take);
    if (take.length) out.push({ image: up, rec: upRec, take });
    if (wanted.length && subtractRuns(wanted, runs.parent).length) {
      throw broken(`image ${up.dir} neither holds some of them nor leaves them to its parent`);
    }
  }
  return out;
}

/**
 * A record's pages as sorted flat runs: those of its blob, and those it leaves to its parent.
 * Kept with the record (records of a chain are read once and read-only, memoryRecordOf): an
 * increment scattered over a GiB has tens of thousands of runs, and its parent's even more holes.
 */
export function sortedRuns(rec: MemoryRecord): { blob: Float64Array; parent: Float64Array } {
  let s = sortedOf.get(rec);
  if (!s) {
    s = {
      blob: Float64Array.from(sortRuns(rec.vmas.flatMap((v) => v.runs))),
      parent: Float64Array.from(sortRuns(rec.vmas.flatMap((v) => v.parentRuns ?? []))),
    };
    sortedOf.set(rec, s);
  }
  return s;
}
const sortedOf = new WeakMap<MemoryRecord, { blob: Float64Array; parent: Float64Array }>();

// ---- ckpt image compact ----

/**
 * Makes a process's memory whole in a compacted image: every page, its own and those its chain
 * holds, into a new pages blob, area by area in address order; the records' runs merged, without
 * parentRuns. Every blob read is checked against its digest first.
 */
async function compactProcess(c: Compaction, proc: ProcessRecord, rec: MemoryRecord): Promise<void> {
  const scratch: string[] = [];
  try {
    await compactInto(c, proc, rec, scratch);
  } finally {
    for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
  }
}

/** compactProcess, decompressing compressed blobs into directories it lists in `scratch`. */
async function compactInto(c: Compaction, proc: ProcessRecord, rec: MemoryRecord, scratch: string[]): Promise<void> {
  const sources = [{ image: c.image, rec, take: sortedRuns(rec).blob }, ...chainSources(c.image, proc.pid, rec)];
  // Every page: where it is (file, offset), by address.
  const segs: Array<{ addr: number; len: number; path: string; off: number }> = [];
  for (const src of sources) {
    src.image.verifyBlob(src.rec.pagesFile);
    let path = src.image.path(src.rec.pagesFile);
    if (src.rec.compression === 'zstd') {
      // Read at random offsets below: a compressed blob is decompressed whole first, beside.
      const dir = mkdtempSync(join(tmpdir(), 'ckpt-compact-'));
      scratch.push(dir);
      path = join(dir, 'pages');
      const [inFd, outFd] = [openSync(src.image.path(src.rec.pagesFile), 'r'), openSync(path, 'w', 0o600)];
      try {
        native.mem.zstdDecompressFile(inFd, outFd, native.hash.hashNew('blake3'));
      } finally {
        closeSync(inFd);
        closeSync(outFd);
      }
    }
    let off = 0;
    const runs = blobRuns(src.rec);
    const take = takeFromBlob(runs, src.take);
    for (let i = 0; i < take.length; i += 2) {
      if (take[i]) segs.push({ addr: take[i], len: take[i + 1], path, off });
      off += take[i + 1];
    }
  }
  segs.sort((a, b) => a.addr - b.addr);
  // Written whole and uncompressed: the compressed source is not carried over.
  const name = rec.pagesFile.replace(/\.zst$/, '');
  c.replaced.add(rec.pagesFile);
  const blob = c.writer.openBlob(name);
  const fds = new Map<string, number>();
  try {
    const buf = Buffer.allocUnsafe(PROGRESS_CHUNK);
    let k = 0;
    const vmas = [...rec.vmas].sort((a, b) => a.start - b.start);
    for (const v of vmas) {
      v.blobOffset = blob.size;
      const runs: Array<[number, number]> = [];
      for (; k < segs.length && segs[k].addr < v.end; k++) {
        const s = segs[k];
        let fd = fds.get(s.path);
        if (fd === undefined) fds.set(s.path, (fd = openSync(s.path, 'r')));
        for (let done = 0; done < s.len; ) {
          const n = Math.min(buf.length, s.len - done);
          const got = readSync(fd, buf, 0, n, s.off + done);
          if (got !== n) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `${s.path}: short read at ${s.off + done}`);
          blob.write(buf.subarray(0, n));
          done += n;
        }
        const last = runs[runs.length - 1];
        if (last && last[0] + last[1] === s.addr) last[1] += s.len;
        else runs.push([s.addr, s.len]);
        c.progress({ stage: 'memory', pid: proc.pid, done: blob.size, total: 0 });
      }
      v.runs = runs;
      delete v.parentRuns;
    }
    if (k !== segs.length) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${c.image.dir}: pages of pid ${proc.pid} lie outside its memory areas`);
    rec.vmas = vmas;
    blobRunsOf.delete(rec);
    sortedOf.delete(rec);
    rec.pagesFile = name;
    rec.pagesBytes = blob.size;
    delete rec.compression;
    // `track` stays: the whole image holds the memory the tracking counts from, so a dump may add to it.
    c.writer.closeBlob(blob);
  } finally {
    for (const fd of fds.values()) closeSync(fd);
  }
}

export async function compact(c: Compaction): Promise<void> {
  if (!c.image.parent()) return;
  for (const proc of c.records) {
    const rec = proc.records[NAME] as MemoryRecord | undefined;
    if (rec) await compactProcess(c, proc, rec);
  }
}
