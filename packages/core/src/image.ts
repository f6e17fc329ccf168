/**
 * One image (a generation of an image directory, see imagedir.ts). Layout:
 *   manifest.json        versioned, self-checksummed; lists every other file with its size and
 *                        checksum (sha256 for records, crc32c for bulk blobs). Written last.
 *   proc-<pid>.json      one record per process: { pid, ..., fds, records: { <plugin name>: data } }
 *   <blob files>         raw bulk data (pages-<pid>.img, ...), named by the plugin that wrote them
 * Files are created 0600 in a private staging directory inside the image directory; at commit the
 * manifest is written last into it and the whole directory is renamed into place as the next
 * generation: an image without a valid manifest is never taken for a complete one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import os from 'node:os';
import { native } from '@ckpt/native';
import { CkptError } from './errors.js';
import { checkImageOwnership, commitGeneration, dirError, lockImageDir, resolveImage, stagingName } from './imagedir.js';
import type { FdRecord } from './context.js';

export const IMAGE_FORMAT = 'ckpt-image';
/** 2: core's fd table (`fds`, `layout`) in every process record; plugin record versions. */
export const IMAGE_VERSION = 2;
export const MANIFEST = 'manifest.json';

export interface FileEntry {
  size: number;
  sha256?: string;
  crc32c?: string;
}

export interface ProcessEntry {
  pid: number;
  ppid: number;
  file: string;
  comm: string;
}

export interface Manifest {
  format: string;
  version: number;
  createdAt: string;
  tool: string;
  host: { kernel: string; arch: string; hostname: string };
  root: number;
  processes: ProcessEntry[];
  zombies?: Array<{ pid: number; comm: string; ppid: number; pgid: number; sid: number; exitCode: number }>;
  /** The tree is a whole pid namespace: image pid -> pid inside it, for every task. */
  pidns?: { map: Record<string, number> };
  /** Application id (ckpt run). */
  app?: string;
  /** The plugins that wrote the image: package version, and the version of their record format. */
  plugins: Record<string, { version?: string; record?: number }>;
  /** Free-form facts plugins want checked before restore (xstate size, ...). */
  meta: Record<string, unknown>;
  files: Record<string, FileEntry>;
}

export interface ProcessRecord {
  pid: number;
  /** Parent, process group and session, as seen at the freeze (host pids, like pid). */
  ppid: number;
  pgid: number;
  sid: number;
  comm: string;
  /** Core's fd table (see FdRecord). */
  fds: FdRecord[];
  /** The address ranges the process had mapped ([start, end)), so core can place its trampoline. */
  layout?: Array<[number, number]>;
  /** Each plugin's record, under the plugin's name. */
  records: Record<string, unknown>;
}

function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

function manifestChecksum(body: Omit<Manifest, never>): string {
  return sha256(JSON.stringify(body));
}

/** A bulk blob being written: append with the fd, then close() records size and crc. */
export interface BlobWriter {
  readonly name: string;
  readonly fd: number;
  /** Running CRC32C of everything written so far (callers that write through native update it). */
  crc: number;
  size: number;
  write(data: Buffer): void;
}

export interface ImageWriterOptions {
  /** fsync every file before the manifest names it (survives power loss). */
  sync?: boolean;
  /** Generations to keep in the directory, this one included (default 1). */
  keep?: number;
  /** Write through a directory that is a symlink. */
  followSymlinks?: boolean;
}

export class ImageWriter {
  /** The image directory (generations live in it). */
  readonly dir: string;
  /** Once committed: the generation number and its directory. */
  generation?: number;
  path?: string;
  private readonly staging: string;
  private readonly opts: ImageWriterOptions;
  private readonly lock: { release: () => void; created: string | undefined };
  private readonly files: Record<string, FileEntry> = {};
  private readonly openBlobs = new Map<string, BlobWriter>();
  private done = false;

  /**
   * sync: fsync every file before the manifest names it (survives power loss). Without it the
   * image is complete for any crash of ckpt itself; a power loss may leave data files that fail
   * their checksums at restore (never silently wrong).
   */
  constructor(dir: string, opts: ImageWriterOptions | boolean = {}) {
    this.opts = typeof opts === 'boolean' ? { sync: opts } : opts;
    this.dir = resolve(dir);
    // Refuses a symlink, a directory another dump is writing, a directory we cannot write.
    this.lock = lockImageDir(this.dir, { followSymlinks: this.opts.followSymlinks });
    this.staging = join(this.dir, stagingName(randomBytes(4).toString('hex')));
    try {
      mkdirSync(this.staging, { mode: 0o700 });
    } catch (e) {
      this.release();
      throw dirError(this.dir, e, 'write into');
    }
  }

  private release(): void {
    this.lock.release();
    // A directory this dump created and left empty goes too.
    if (this.lock.created && !this.generation) {
      for (let d = this.dir; d.startsWith(this.lock.created); d = resolve(d, '..')) {
        try {
          rmdirSync(d);
        } catch {
          break;
        }
        if (d === this.lock.created) break;
      }
    }
  }

  private checkName(name: string): void {
    if (!/^[A-Za-z0-9._-]+$/.test(name) || name === MANIFEST || name.startsWith('.')) {
      throw new Error(`invalid image file name: ${name}`);
    }
    if (this.files[name] || this.openBlobs.has(name)) throw new Error(`image file written twice: ${name}`);
  }

  /** Writes a metadata record (JSON). */
  writeJson(name: string, value: unknown): void {
    this.checkName(name);
    const text = JSON.stringify(value, null, 1);
    writeFileSync(join(this.staging, name), text, { mode: 0o600 });
    this.files[name] = { size: Buffer.byteLength(text), sha256: sha256(text) };
  }

  /** Writes a whole blob at once (small data; use openBlob to stream). Returns its name. */
  writeBlob(name: string, data: Buffer): string {
    const b = this.openBlob(name);
    b.write(data);
    this.closeBlob(b);
    return name;
  }

  /** Opens a bulk blob for appending. */
  openBlob(name: string): BlobWriter {
    this.checkName(name);
    const fd = openSync(join(this.staging, name), 'w', 0o600);
    const blob: BlobWriter = {
      name,
      fd,
      crc: 0,
      size: 0,
      write(data: Buffer) {
        let off = 0;
        while (off < data.length) off += writeSync(fd, data, off);
        blob.crc = native.crc.crc32c(data, blob.crc);
        blob.size += data.length;
      },
    };
    this.openBlobs.set(name, blob);
    return blob;
  }

  closeBlob(blob: BlobWriter): void {
    const size = fstatSync(blob.fd).size;
    if (size !== blob.size) throw new Error(`blob ${blob.name}: wrote ${size} bytes, accounted ${blob.size}`);
    closeSync(blob.fd);
    this.openBlobs.delete(blob.name);
    this.files[blob.name] = { size, crc32c: blob.crc.toString(16).padStart(8, '0') };
  }

  /** Moves everything in place and writes the manifest last (atomically). */
  commit(body: Omit<Manifest, 'files' | 'format' | 'version' | 'createdAt' | 'host'>): Manifest {
    if (this.openBlobs.size) throw new Error(`blobs left open: ${[...this.openBlobs.keys()].join(', ')}`);
    const manifest: Manifest = {
      format: IMAGE_FORMAT,
      version: IMAGE_VERSION,
      createdAt: new Date().toISOString(),
      host: { kernel: os.release(), arch: process.arch, hostname: os.hostname() },
      ...body,
      files: this.files,
    };
    try {
      if (this.opts.sync) for (const name of Object.keys(this.files)) fsyncPath(join(this.staging, name));
      const text = JSON.stringify({ ...manifest, checksum: manifestChecksum(manifest) }, null, 1);
      writeFileSync(join(this.staging, MANIFEST), text, { mode: 0o600 });
      fsyncPath(join(this.staging, MANIFEST));
      fsyncPath(this.staging);
      // The generation appears whole (rename), then `latest` points at it, then old ones go.
      this.generation = commitGeneration(this.dir, this.staging, this.opts.keep ?? 1);
      this.path = join(this.dir, String(this.generation));
      fsyncPath(this.dir);
    } catch (e) {
      throw dirError(this.dir, e, 'commit the image in');
    }
    this.done = true;
    this.release();
    return manifest;
  }

  /** Drops everything written (the directory keeps no partial image). */
  abort(): void {
    if (this.done) return;
    for (const b of this.openBlobs.values()) {
      try {
        closeSync(b.fd);
      } catch {
        /* already closed */
      }
    }
    this.openBlobs.clear();
    rmSync(this.staging, { recursive: true, force: true });
    this.done = true;
    this.release();
  }
}

export class ImageReader {
  readonly dir: string;
  readonly manifest: Manifest;

  private constructor(dir: string, manifest: Manifest) {
    this.dir = dir;
    this.manifest = manifest;
  }

  /** Opens and validates an image: manifest checksum, version, every file's presence and size. */
  /** Opens and validates the image of a directory: its latest complete generation, or the one asked for. */
  static open(dir: string, opts: { generation?: number } = {}): ImageReader {
    const top = resolve(dir);
    if (!existsSync(top)) throw new CkptError('ERR_CKPT_IMAGE_MISSING', `no image at ${top}: the directory does not exist`);
    const abs = resolveImage(top, opts.generation);
    const mpath = join(abs, MANIFEST);
    if (!existsSync(mpath)) {
      throw new CkptError('ERR_CKPT_IMAGE_MISSING', `no image at ${abs}: no complete generation and no ${MANIFEST} (not an image, or an incomplete dump)`);
    }
    checkImageOwnership(abs === top ? [abs] : [top, abs]);
    let parsed: Manifest & { checksum?: string };
    try {
      parsed = JSON.parse(readFileSync(mpath, 'utf8'));
    } catch (e) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${abs}: ${MANIFEST} is not valid JSON (${(e as Error).message})`);
    }
    const { checksum, ...body } = parsed;
    if (parsed.format !== IMAGE_FORMAT) {
      throw new CkptError('ERR_CKPT_IMAGE_INCOMPATIBLE', `image ${abs}: not a ckpt image (format ${JSON.stringify(parsed.format)})`);
    }
    if (checksum !== manifestChecksum(body as Manifest)) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${abs}: ${MANIFEST} checksum mismatch (the file was modified or damaged)`);
    }
    if (parsed.version !== IMAGE_VERSION) {
      throw new CkptError('ERR_CKPT_IMAGE_INCOMPATIBLE', `image ${abs}: format version ${parsed.version}, this ckpt reads version ${IMAGE_VERSION}`, {
        hint: parsed.version < IMAGE_VERSION ? `restore it with the ckpt that wrote it (${parsed.tool}), or dump the process again` : 'update ckpt',
      });
    }
    const reader = new ImageReader(abs, body as Manifest);
    reader.checkFiles();
    return reader;
  }

  private checkFiles(): void {
    for (const [name, entry] of Object.entries(this.manifest.files)) {
      const p = join(this.dir, name);
      if (!existsSync(p)) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: file ${name} is missing`);
      const size = statSync(p).size;
      if (size !== entry.size) {
        throw new CkptError(
          'ERR_CKPT_IMAGE_CORRUPT',
          `image ${this.dir}: ${name} is ${size < entry.size ? 'truncated' : 'too long'} (${size} bytes, expected ${entry.size})`,
        );
      }
    }
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  entry(name: string): FileEntry {
    const e = this.manifest.files[name];
    if (!e) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: no file ${name} in the manifest`);
    return e;
  }

  /** Reads and verifies a JSON record. */
  readJson<T>(name: string): T {
    const e = this.entry(name);
    const text = readFileSync(this.path(name));
    if (e.sha256 && sha256(text) !== e.sha256) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: ${name} checksum mismatch (the file was modified or damaged)`);
    }
    return JSON.parse(text.toString('utf8')) as T;
  }

  /** Reads a whole blob, its checksum verified (small blobs: file contents, queues; pages stream instead). */
  readBlob(name: string): Buffer {
    const data = readFileSync(this.path(name));
    const e = this.entry(name);
    if (data.length !== e.size) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: ${name} has ${data.length} bytes, expected ${e.size}`);
    this.checkCrc(name, native.crc.crc32c(data, 0));
    return data;
  }

  /** Checks a blob's CRC32C in full (used by `ckpt show --verify` and when no streaming check applies). */
  verifyBlob(name: string): void {
    const e = this.entry(name);
    const fd = openSync(this.path(name), 'r');
    try {
      const crc = native.crc.crc32cFile(fd, 0, e.size, 0);
      this.checkCrc(name, crc);
    } finally {
      closeSync(fd);
    }
  }

  /** Compares a CRC computed while streaming a blob with the manifest's. */
  checkCrc(name: string, crc: number): void {
    const e = this.entry(name);
    if (e.crc32c !== undefined && parseInt(e.crc32c, 16) !== crc) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: ${name} checksum mismatch (the file was modified or damaged)`);
    }
  }

  processes(): ProcessRecord[] {
    return this.manifest.processes.map((p) => this.readJson<ProcessRecord>(p.file));
  }
}
