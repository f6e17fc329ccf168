/**
 * One image (a generation of an image directory, see imagedir.ts). Layout:
 *   manifest.json        versioned, self-checksummed; lists every other file with its size and
 *                        BLAKE3 digest (what `b3sum` prints). Written last.
 *   manifest.sig         the host key's Ed25519 signature of manifest.json's exact bytes (keys.ts)
 *   proc-<pid>.json      one record per process: { pid, ..., fds, records: { <plugin name>: data } }
 *   <blob files>         raw bulk data (pages-<pid>.img, ...), named by the plugin that wrote them
 * Files are created 0600 in a private staging directory inside the image directory; at commit the
 * manifest and its signature are written last into it and the whole directory is renamed into
 * place as the next generation: an image without a valid manifest is never taken for a complete one.
 *
 * Open verifies the signature over the manifest's bytes (and that its key is trusted) before
 * parsing them; every file is then checked against the manifest's digest as it is read (records
 * whole, blobs whole or while streaming: pages are hashed natively as they are copied). BLAKE3
 * rather than SHA-256 (format 3, still read): it is about twice as fast per core here, and the
 * digest of a 1 GiB page file is on the critical path of both dump and restore.
 */
import type { KeyObject } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  copyFileSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { PageClient } from './pageclient.js';
import os from 'node:os';
import { type HashAlgorithm, type HashHandle, native } from '@ckpt/native';
import { CkptError } from './errors.js';
import { randomHex, sha256Hex } from './random.js';
import { checkImageOwnership, commitGeneration, dirError, fsyncPath, lockImageDir, resolveImage, stagingName } from './imagedir.js';
import type { FdRecord } from './context.js';
import { type HostKey, KeyStore, parseSignature, SIGNATURE_FILE, signatureLine, signatureValid, type TrustReason } from './keys.js';

export const IMAGE_FORMAT = 'ckpt-image';
/**
 * 2: core's fd table (`fds`, `layout`) in every process record; plugin record versions.
 * 3: signed (manifest.sig); every file's SHA-256 in the manifest (blobs had CRC32C).
 * 4: every file's BLAKE3 in the manifest instead (format 3 images are still read).
 */
export const IMAGE_VERSION = 4;
/** The oldest format this ckpt reads. */
export const IMAGE_VERSION_MIN = 3;
export const MANIFEST = 'manifest.json';
export { SIGNATURE_FILE };

export interface FileEntry {
  size: number;
  /** Hex BLAKE3 of the file's bytes (format 4). */
  blake3?: string;
  /** Hex SHA-256 of the file's bytes (format 3). */
  sha256?: string;
}

/** The digest a manifest entry holds, and its algorithm. */
export function entryDigest(e: FileEntry): { alg: HashAlgorithm; hex: string } | undefined {
  if (typeof e.blake3 === 'string') return { alg: 'blake3', hex: e.blake3 };
  if (typeof e.sha256 === 'string') return { alg: 'sha256', hex: e.sha256 };
  return undefined;
}

export interface ProcessEntry {
  pid: number;
  ppid: number;
  file: string;
  comm: string;
}

export interface PidNamespaceRecord {
  map: Record<string, number>;
  initOutside?: boolean;
  hostIpc?: boolean;
}

/** An incremental image's link to the image it adds to (its parent), which a restore reads too. */
export interface ParentLink {
  /** The parent's directory, relative to this image's (../3 for a generation beside it), or absolute. */
  path: string;
  /** Hex BLAKE3 of the parent's manifest.json bytes: the parent exactly as it was, every file pinned by its digest. */
  manifest: string;
  /** Images in the chain above this one (1: the parent is a full image). */
  depth: number;
}

/** Longest chain of incremental images a restore follows. */
export const MAX_CHAIN = 256;

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
  /**
   * The tree lived in a pid namespace of its own: each task's pid inside it. `initOutside`: the
   * namespace's init is not in the image (the root is not pid 1), restore gives the namespace an
   * init of its own. `hostIpc`: the tree shared ckpt's IPC namespace (else it gets a new one).
   */
  pidns?: PidNamespaceRecord;
  /** Application id (ckpt run). */
  app?: string;
  /** The image this one adds to (an incremental dump): its pages not saved here are there. */
  parent?: ParentLink;
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
  /** Files in flight (ProcessDump.dumpInFlight), ids (negative) as `fd`. */
  inFlight?: FdRecord[];
  /**
   * What it shares with its parent (the fd table, `files`; cwd, root and umask, `fs`): restore
   * clones it from its parent with CLONE_FILES / CLONE_FS, and installs a shared table's fds once.
   */
  sharesWithParent?: Array<'files' | 'fs'>;
  /** The leader thread had exited while others ran: restored, it exits once they are made. */
  leaderExited?: boolean;
  /** The address ranges the process had mapped ([start, end)), so core can place its trampoline. */
  layout?: Array<[number, number]>;
  /** Each plugin's record, under the plugin's name. */
  records: Record<string, unknown>;
}

function manifestChecksum(body: Omit<Manifest, never>): string {
  return sha256Hex(JSON.stringify(body));
}

const digestOf = (alg: HashAlgorithm, data: Buffer | string) => native.hash.hashOf(alg, typeof data === 'string' ? Buffer.from(data) : data);

/** A bulk blob being written: append with the fd, then closeBlob() records its size and digest. */
export interface BlobWriter {
  readonly name: string;
  readonly fd: number;
  /** Running BLAKE3 of everything written so far (native code writing to fd updates it too: dumpPages). */
  readonly hash: HashHandle;
  /** Bytes written so far (callers that write through native add theirs). */
  size: number;
  write(data: Buffer): void;
  /**
   * Callers that write to `fd` themselves (native) call this after each piece: a blob that goes
   * elsewhere (a page server) sends what fd holds, and fd starts empty again. Local: nothing.
   */
  drain(): void;
  /**
   * Where to write `bytes` bytes more, natively and in order, now: `fd` here; for a page server,
   * its connection, the chunk's header sent (drain() after, as for fd).
   */
  target(bytes: number): number;
  /** Appends [offset, offset + length) of file `fd`: read, hashed and written natively (pipelined). */
  copyFile(fd: number, offset: number, length: number): void;
}

export interface ImageWriterOptions {
  /** fsync every file before the manifest names it (survives power loss). */
  sync?: boolean;
  /**
   * An image that only passes through (ckpt migrate's copy on the source): nothing is fsynced,
   * not even the manifest and the directories. A crash of the machine may lose it; a commit
   * during other writes no longer waits for the disk.
   */
  transient?: boolean;
  /** Generations to keep in the directory, this one included (default 1). */
  keep?: number;
  /** Write through a directory that is a symlink. */
  followSymlinks?: boolean;
  /** The key store whose host key signs the image (default: this user's, see keys.ts). */
  keys?: KeyStore;
  /**
   * Write the image to this page server (HOST:PORT, `ckpt page-server`) instead of `dir` on this
   * host: nothing of it is written here (pages pass through a scratch memfd, one piece at a time).
   */
  pageServer?: string;
}

export interface ImageOpenOptions {
  /** The generation to open (default: the latest complete one). */
  generation?: number;
  /** Public keys trusted for this open only (restore --trust-key). */
  trust?: readonly KeyObject[];
  /** The key store saying which keys are trusted (default: this user's). */
  keys?: KeyStore;
  /** false: open an image signed by an untrusted key too (ckpt show); the signature must still be valid. */
  requireTrust?: boolean;
}

/** Who signed an image, and whether this host trusts that key. */
export interface ImageSigner {
  algorithm: 'ed25519';
  fingerprint: string;
  /** The raw public key, base64. */
  publicKey: string;
  /** Why it is trusted (this host's own key, in trusted/, given for this run), or null when it is not. */
  trust: TrustReason | null;
}

const SEEK_SET = 0;
const SEEK_CUR = 1;

export class ImageWriter {
  /** The image directory (generations live in it). */
  readonly dir: string;
  /** Once committed: the generation number and its directory. */
  generation?: number;
  path?: string;
  private readonly staging: string;
  private readonly opts: ImageWriterOptions;
  private readonly lock: { release: () => void; created: string | undefined };
  /** The page server the image goes to, when it does not go to dir. */
  private readonly remote?: PageClient;
  private readonly files: Record<string, FileEntry> = {};
  private readonly openBlobs = new Map<string, BlobWriter>();
  private readonly key: HostKey;
  private done = false;
  /** Files being made ahead (prepare): each thread's handle and names. */
  private readonly ahead: Array<{ handle: number; names: string[] }> = [];
  /** Files prepare made: those the image did not use go before the commit. */
  private readonly prepared = new Set<string>();

  /**
   * sync: fsync every file before the manifest names it (survives power loss). Without it the
   * image is complete for any crash of ckpt itself; a power loss may leave data files that fail
   * their checksums at restore (never silently wrong).
   */
  constructor(dir: string, opts: ImageWriterOptions | boolean = {}) {
    this.opts = typeof opts === 'boolean' ? { sync: opts } : opts;
    if (this.opts.pageServer !== undefined) {
      this.key = (this.opts.keys ?? new KeyStore()).hostKey()!;
      this.remote = new PageClient(this.opts.pageServer, this.key);
      this.dir = this.remote.label;
      this.staging = '';
      this.lock = { release: () => this.remote?.close(), created: undefined };
      return;
    }
    this.dir = resolve(dir);
    // Refuses a symlink, a directory another dump is writing, a directory we cannot write.
    this.lock = lockImageDir(this.dir, { followSymlinks: this.opts.followSymlinks });
    try {
      // The key first: a dump that cannot sign fails before anything is frozen or written.
      this.key = (this.opts.keys ?? new KeyStore()).hostKey()!;
    } catch (e) {
      this.release();
      throw e;
    }
    this.staging = join(this.dir, stagingName(randomHex(4)));
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
    if (!fileNameOk(name)) {
      throw new Error(`invalid image file name: ${name}`);
    }
    if (this.files[name] || this.openBlobs.has(name)) throw new Error(`image file written twice: ${name}`);
  }

  /**
   * The link an incremental image keeps to its parent: the parent's directory relative to this
   * image's (the staging directory sits where the generation will be), and its manifest's digest.
   */
  parentLink(parent: ImageReader): ParentLink {
    if (this.remote) throw new CkptError('ERR_CKPT_USAGE', `an image written to a ${this.remote.label} cannot add to another (--parent)`);
    return { path: relative(this.staging, parent.dir) || '.', manifest: parent.manifestDigest, depth: (parent.manifest.parent?.depth ?? 0) + 1 };
  }

  /** The fingerprint of the key that signs this image. */
  get signer(): string {
    return this.key.fingerprint;
  }

  /** Writes a metadata record (JSON). */
  writeJson(name: string, value: unknown): void {
    this.checkName(name);
    const text = JSON.stringify(value, null, 1);
    const data = Buffer.from(text);
    if (this.remote) {
      this.remote.frame({ op: 'file', name }, data);
      this.files[name] = { size: data.length, blake3: digestOf('blake3', data) };
      return;
    }
    const fd = openSync(join(this.staging, name), NEW_FILE, 0o600);
    try {
      writeFileSync(fd, data);
    } finally {
      closeSync(fd);
    }
    this.files[name] = { size: data.length, blake3: digestOf('blake3', data) };
  }

  /** Writes a whole blob at once (small data; use openBlob to stream). Returns its name. */
  writeBlob(name: string, data: Buffer): string {
    const b = this.openBlob(name);
    b.write(data);
    this.closeBlob(b);
    return name;
  }

  /**
   * Names of files the image is about to have (a tree's per-process files): created empty now, on
   * a thread of their own, while the dump goes on; writing one later opens it. A create costs
   * 0.2-0.3 ms on this VM's ext4, and a tree's dump makes two per process. A file made so and not
   * written is removed before the commit. Nothing for an image that goes to a page server.
   */
  prepare(names: readonly string[]): void {
    if (this.remote || this.done) return;
    const fresh = names.filter((n) => fileNameOk(n) && !this.has(n));
    if (!fresh.length) return;
    const handle = native.fd.createAhead(
      fresh.map((n) => join(this.staging, n)),
      0o600,
    );
    this.ahead.push({ handle, names: fresh });
  }

  /** Waits for prepare's threads: nothing creates files in the staging directory after this. */
  private settle(): void {
    for (const a of this.ahead.splice(0)) native.fd.createJoin(a.handle).forEach((made, i) => made && this.prepared.add(a.names[i]));
  }

  /** Opens a bulk blob for appending. */
  openBlob(name: string): BlobWriter {
    this.checkName(name);
    const remote = this.remote;
    const fd = remote ? native.fd.memfdCreate(`ckpt-${name}`) : openSync(join(this.staging, name), NEW_FILE, 0o600);
    const hash = native.hash.hashNew('blake3');
    let sent = 0;
    let streamed = 0;
    const blob: BlobWriter & { sent(): number } = {
      name,
      fd,
      hash,
      size: 0,
      write(data: Buffer) {
        blob.drain();
        native.hash.hashUpdate(hash, data);
        blob.size += data.length;
        if (remote) {
          remote.frame({ op: 'chunk', name }, data);
          sent += data.length;
          return;
        }
        let off = 0;
        while (off < data.length) off += writeSync(fd, data, off);
      },
      target(bytes: number) {
        if (!remote) return fd;
        blob.drain();
        remote.frame({ op: 'chunk', name, size: bytes });
        streamed = bytes;
        return remote.socket;
      },
      drain() {
        if (!remote) return;
        sent += streamed;
        remote.sent += streamed;
        streamed = 0;
        // What native wrote since the last drain: from 0 to the offset. The scratch keeps its
        // pages for the next piece (fresh pages cost more than the copy here).
        const n = native.fd.lseek(fd, 0, SEEK_CUR);
        if (!n) return;
        remote.chunkFromFd(name, fd, n);
        sent += n;
        native.fd.lseek(fd, 0, SEEK_SET);
      },
      copyFile(src: number, offset: number, length: number) {
        const out = blob.target(length);
        native.fd.copyHashed(src, offset, length, out, hash);
        blob.size += length;
        blob.drain();
      },
      sent: () => sent,
    };
    // The server knows the file from its first (possibly empty) chunk.
    remote?.frame({ op: 'chunk', name }, Buffer.alloc(0));
    this.openBlobs.set(name, blob);
    return blob;
  }

  closeBlob(blob: BlobWriter): void {
    blob.drain();
    const size = this.remote ? (blob as BlobWriter & { sent(): number }).sent() : fstatSync(blob.fd).size;
    if (size !== blob.size) throw new Error(`blob ${blob.name}: wrote ${size} bytes, accounted ${blob.size}`);
    closeSync(blob.fd);
    this.openBlobs.delete(blob.name);
    this.files[blob.name] = { size, blake3: native.hash.hashDigest(blob.hash) };
  }

  /**
   * Drops a closed blob whose content another blob of the image holds already (a file's content
   * saved once): false when it cannot (an image going to a page server keeps both).
   */
  dropBlob(name: string): boolean {
    if (this.remote || !this.files[name] || this.openBlobs.has(name)) return false;
    rmSync(join(this.staging, name), { force: true });
    delete this.files[name];
    return true;
  }

  /** Whether the image has (or is writing) a file of that name. */
  has(name: string): boolean {
    return !!this.files[name] || this.openBlobs.has(name);
  }

  /**
   * Copies a file of another image into this one, checked: the copy's digest must be the one the
   * other image's signed manifest gives (a damaged source is refused, naming it).
   */
  copyFrom(from: ImageReader, name: string): void {
    this.checkName(name);
    if (this.remote) throw new CkptError('ERR_CKPT_USAGE', `copying image files to a ${this.remote.label} is not supported`);
    const dest = join(this.staging, name);
    copyFileSync(from.path(name), dest);
    chmodSync(dest, 0o600);
    const fd = openSync(dest, 'r');
    try {
      const size = fstatSync(fd).size;
      const alg = from.digestAlgorithm(name);
      const hex = native.hash.hashFile(alg, fd, 0, size);
      from.checkDigest(name, hex);
      this.files[name] = { size, blake3: alg === 'blake3' ? hex : native.hash.hashFile('blake3', fd, 0, size) };
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Writes the manifest and its signature last, then moves the whole generation in place
   * (atomically). `host`: the host the processes ran on (default this one; a compacted image
   * keeps its own).
   */
  commit(body: Omit<Manifest, 'files' | 'format' | 'version' | 'createdAt' | 'host'>, host?: Manifest['host']): Manifest {
    if (this.openBlobs.size) throw new Error(`blobs left open: ${[...this.openBlobs.keys()].join(', ')}`);
    const manifest: Manifest = {
      format: IMAGE_FORMAT,
      version: IMAGE_VERSION,
      createdAt: new Date().toISOString(),
      host: host ?? { kernel: os.release(), arch: process.arch, hostname: os.hostname() },
      ...body,
      files: this.files,
    };
    if (this.remote) {
      const text = Buffer.from(JSON.stringify({ ...manifest, checksum: manifestChecksum(manifest) }, null, 1));
      this.remote.frame({ op: 'file', name: MANIFEST }, text);
      this.remote.frame({ op: 'file', name: SIGNATURE_FILE }, Buffer.from(signatureLine(text, this.key)));
      this.remote.frame({ op: 'commit' });
      const r = this.remote.reply('the image');
      this.generation = Number(r.generation);
      this.path = `${this.remote.label}: ${String(r.path)}`;
      this.done = true;
      this.release();
      return manifest;
    }
    try {
      this.settle();
      for (const name of this.prepared) if (!this.files[name]) rmSync(join(this.staging, name), { force: true });
      if (this.opts.sync) for (const name of Object.keys(this.files)) fsyncPath(join(this.staging, name));
      const text = Buffer.from(JSON.stringify({ ...manifest, checksum: manifestChecksum(manifest) }, null, 1));
      writeFileSync(join(this.staging, MANIFEST), text, { mode: 0o600 });
      writeFileSync(join(this.staging, SIGNATURE_FILE), signatureLine(text, this.key), { mode: 0o600 });
      if (!this.opts.transient) {
        fsyncPath(join(this.staging, MANIFEST));
        fsyncPath(join(this.staging, SIGNATURE_FILE));
        fsyncPath(this.staging);
      }
      // The generation appears whole (rename), then `latest` points at it, then old ones go.
      this.generation = commitGeneration(this.dir, this.staging, this.opts.keep ?? 1);
      this.path = join(this.dir, String(this.generation));
      if (!this.opts.transient) fsyncPath(this.dir);
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
    this.settle();
    if (!this.remote) rmSync(this.staging, { recursive: true, force: true });
    this.done = true;
    this.release();
  }
}

/**
 * How an image file is opened for writing: created, or opened as prepare() made it (empty: the
 * staging directory is the dump's own), never truncated. ext4 flushes a file truncated by its open
 * when it is closed (auto_da_alloc, for programs that replace a file without fsync), and the
 * commit's fsync of the manifest then waited for those pages: a 16 MiB dump took 20 ms more.
 */
const NEW_FILE = fsConstants.O_WRONLY | fsConstants.O_CREAT;

/** Whether a plugin may name an image file so (not the manifest's, not hidden, no path). */
function fileNameOk(name: string): boolean {
  return /^[A-Za-z0-9._-]+$/.test(name) && name !== MANIFEST && name !== SIGNATURE_FILE && !name.startsWith('.');
}

/** The refusal of an image whose format version this ckpt does not read. */
function versionError(abs: string, version: unknown, tool: unknown): CkptError {
  return new CkptError(
    'ERR_CKPT_IMAGE_INCOMPATIBLE',
    `image ${abs}: format version ${version}, this ckpt reads versions ${IMAGE_VERSION_MIN}-${IMAGE_VERSION}`,
    {
      hint:
        typeof version === 'number' && version < IMAGE_VERSION_MIN
          ? `restore it with the ckpt that wrote it (${tool}), or dump the process again`
          : 'update ckpt',
    },
  );
}

/**
 * The signature of manifest.json's bytes, checked before anything reads them. An image without
 * one is refused; when its manifest says it is of an older format (which had no signatures) the
 * refusal says that instead (the manifest is only looked at to choose the message).
 */
function checkSignature(abs: string, manifest: Buffer): { fingerprint: string; publicKey: Buffer } {
  let text: string;
  try {
    text = readFileSync(join(abs, SIGNATURE_FILE), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let old: { format?: unknown; version?: unknown; tool?: unknown } | undefined;
    try {
      old = JSON.parse(manifest.toString('utf8'));
    } catch {
      /* not even JSON: unsigned is the answer */
    }
    if (old?.format === IMAGE_FORMAT && typeof old.version === 'number' && old.version < IMAGE_VERSION_MIN) throw versionError(abs, old.version, old.tool);
    throw new CkptError('ERR_CKPT_IMAGE_UNSIGNED', `image ${abs} is not signed (no ${SIGNATURE_FILE}): ckpt restores only signed images`, {
      hint: 'ckpt signs every image it dumps; this one lost its signature or was not made by ckpt: dump the process again',
    });
  }
  const sig = parseSignature(text);
  if (!sig) {
    throw new CkptError('ERR_CKPT_IMAGE_TAMPERED', `image ${abs}: ${SIGNATURE_FILE} is not a ckpt signature (it was damaged or replaced)`);
  }
  if (!signatureValid(manifest, sig)) {
    throw new CkptError(
      'ERR_CKPT_IMAGE_TAMPERED',
      `image ${abs}: ${MANIFEST} was modified after it was signed (the signature of ${sig.fingerprint} does not match it); refusing it`,
    );
  }
  return sig;
}

export class ImageReader {
  readonly dir: string;
  readonly manifest: Manifest;
  /** Who signed the image (the signature is valid), and whether that key is trusted here. */
  readonly signer: ImageSigner;
  /** Hex BLAKE3 of manifest.json's bytes (what an incremental image's ParentLink pins). */
  readonly manifestDigest: string;
  private readonly opts: ImageOpenOptions;
  private parentReader?: ImageReader | null;

  private constructor(dir: string, manifest: Manifest, signer: ImageSigner, manifestDigest: string, opts: ImageOpenOptions) {
    this.dir = dir;
    this.manifest = manifest;
    this.signer = signer;
    this.manifestDigest = manifestDigest;
    this.opts = opts;
  }

  /**
   * The image this one adds to (an incremental image), opened and checked like this one (its
   * signature and key's trust, every file's presence and size) and pinned: its manifest must be
   * the one this image was made against. Undefined for a full image.
   */
  parent(): ImageReader | undefined {
    if (this.parentReader !== undefined) return this.parentReader ?? undefined;
    const link = this.manifest.parent;
    if (!link) {
      this.parentReader = null;
      return undefined;
    }
    if (typeof link.path !== 'string' || typeof link.manifest !== 'string' || !(link.depth >= 1 && link.depth <= MAX_CHAIN)) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: the manifest's parent link is malformed`);
    }
    const where = resolve(this.dir, link.path);
    let parent: ImageReader;
    try {
      parent = ImageReader.open(where, { ...this.opts, generation: undefined });
    } catch (e) {
      const why = e instanceof CkptError ? e.message : String(e);
      throw new CkptError(
        e instanceof CkptError && e.code !== 'ERR_CKPT_IMAGE_MISSING' ? e.code : 'ERR_CKPT_IMAGE_MISSING',
        `image ${this.dir} is an increment of ${where}, which cannot be read: ${why}`,
        { hint: 'an incremental image needs every image of its chain, where they were (ckpt image compact makes it whole)' },
      );
    }
    if (parent.dir !== where || parent.manifestDigest !== link.manifest) {
      throw new CkptError(
        'ERR_CKPT_IMAGE_CORRUPT',
        `image ${this.dir} is an increment of ${where}, which is not the image it was made against (that image was replaced or changed)`,
        { hint: 'an incremental image needs the very images of its chain' },
      );
    }
    if ((parent.manifest.parent?.depth ?? 0) !== link.depth - 1) {
      throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: its chain is not as long as its manifest says (${link.depth})`);
    }
    this.parentReader = parent;
    return parent;
  }

  /** This image and every image above it, this one first. */
  chain(): ImageReader[] {
    const out: ImageReader[] = [];
    for (let r: ImageReader | undefined = this; r; r = r.parent()) out.push(r);
    return out;
  }

  /**
   * Opens and validates the image of a directory (its latest complete generation, or the one
   * asked for): the signature over manifest.json and its key's trust, then the manifest
   * (format, checksum, version), then every file's presence and size.
   */
  static open(dir: string, opts: ImageOpenOptions = {}): ImageReader {
    const top = resolve(dir);
    if (!existsSync(top)) throw new CkptError('ERR_CKPT_IMAGE_MISSING', `no image at ${top}: the directory does not exist`);
    const abs = resolveImage(top, opts.generation);
    const mpath = join(abs, MANIFEST);
    if (!existsSync(mpath)) {
      throw new CkptError('ERR_CKPT_IMAGE_MISSING', `no image at ${abs}: no complete generation and no ${MANIFEST} (not an image, or an incomplete dump)`);
    }
    checkImageOwnership(abs === top ? [abs] : [top, abs]);
    // The bytes verified are the bytes parsed: read once.
    const bytes = readFileSync(mpath);
    const sig = checkSignature(abs, bytes);
    const trust = (opts.keys ?? new KeyStore()).trustOf(sig.fingerprint, opts.trust) ?? null;
    if (!trust && opts.requireTrust !== false) {
      throw new CkptError('ERR_CKPT_IMAGE_UNTRUSTED', `image ${abs} is signed by key ${sig.fingerprint}, which this host does not trust`, {
        hint: "if it comes from a host you trust: ckpt trust KEYFILE (that host's `ckpt key` output), or ckpt restore --trust-key KEYFILE for this restore only",
      });
    }
    let parsed: Manifest & { checksum?: string };
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
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
    if (typeof parsed.version !== 'number' || parsed.version < IMAGE_VERSION_MIN || parsed.version > IMAGE_VERSION)
      throw versionError(abs, parsed.version, parsed.tool);
    const signer: ImageSigner = { algorithm: 'ed25519', fingerprint: sig.fingerprint, publicKey: sig.publicKey.toString('base64'), trust };
    const reader = new ImageReader(abs, body as Manifest, signer, digestOf('blake3', bytes), opts);
    reader.checkFiles();
    return reader;
  }

  private checkFiles(): void {
    for (const [name, entry] of Object.entries(this.manifest.files)) {
      const d = entry && entryDigest(entry);
      if (
        !/^[A-Za-z0-9._-]+$/.test(name) ||
        name.startsWith('.') ||
        !d ||
        (d.alg === 'sha256') !== this.manifest.version < 4 ||
        typeof entry.size !== 'number'
      ) {
        throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: the manifest's entry for ${JSON.stringify(name)} is malformed`);
      }
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

  /** Reads and verifies a JSON record (the bytes hashed are the bytes parsed). */
  readJson<T>(name: string): T {
    const text = readFileSync(this.path(name));
    this.checkDigest(name, digestOf(this.digestAlgorithm(name), text));
    return JSON.parse(text.toString('utf8')) as T;
  }

  /** Reads a whole blob, its digest verified (small blobs: file contents, queues; pages stream instead). */
  readBlob(name: string): Buffer {
    const data = readFileSync(this.path(name));
    const e = this.entry(name);
    if (data.length !== e.size) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${this.dir}: ${name} has ${data.length} bytes, expected ${e.size}`);
    this.checkDigest(name, digestOf(this.digestAlgorithm(name), data));
    return data;
  }

  /** Checks a file's digest in full (natively, through one buffer): before a blob is read in pieces, and by `ckpt show --verify`. */
  verifyBlob(name: string): void {
    const e = this.entry(name);
    const fd = openSync(this.path(name), 'r');
    try {
      this.checkDigest(name, native.hash.hashFile(this.digestAlgorithm(name), fd, 0, e.size));
    } finally {
      closeSync(fd);
    }
  }

  /** Checks every file of the image against its digest. */
  verifyAll(streamed?: ReadonlyMap<string, string>): void {
    for (const name of Object.keys(this.manifest.files)) {
      // A BLAKE3 computed as the file was received (a page server, a migration) is not computed again.
      const hex = streamed?.get(name);
      if (hex !== undefined && this.digestAlgorithm(name) === 'blake3' && statSync(this.path(name)).size === this.entry(name).size) this.checkDigest(name, hex);
      else this.verifyBlob(name);
    }
  }

  /** The algorithm of a file's digest in the manifest (BLAKE3; SHA-256 in format 3): what to hash it with. */
  digestAlgorithm(name: string): HashAlgorithm {
    return entryDigest(this.entry(name))!.alg;
  }

  /** Compares a digest (hex, of digestAlgorithm(name)) computed while streaming a file with the manifest's. */
  checkDigest(name: string, hex: string): void {
    const d = entryDigest(this.entry(name))!;
    if (d.hex !== hex) {
      throw new CkptError(
        'ERR_CKPT_IMAGE_CORRUPT',
        `image ${this.dir}: ${name} does not match its ${d.alg === 'blake3' ? 'BLAKE3' : 'SHA-256'} digest in the signed manifest (it was modified or damaged after the dump)`,
      );
    }
  }

  processes(): ProcessRecord[] {
    return this.manifest.processes.map((p) => this.readJson<ProcessRecord>(p.file));
  }
}
