/**
 * The framing `ckpt migrate` speaks to `ckpt receive` over an SSH channel (stdin and stdout of the
 * remote command), byte-clean:
 *
 *   source -> destination   frames: u32 (big-endian) length, a JSON header of that length, then
 *                           `header.size` raw bytes when the header has a size (a file's content)
 *   destination -> source   replies: one JSON object per line, {"ok": true, ...} or
 *                           {"ok": false, "error": {"code", "message", "hint"?}}
 *
 * Both ends read with backpressure: a file is streamed through, never held whole, and hashed
 * (BLAKE3) as it is written, so that the check against the signed manifest need not read it again.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { CkptError, ImageReader, commitGeneration, stagingName } from '@ckpt/core';
import { type HashHandle, native } from '@ckpt/native';

const MAX_HEADER = 1 << 20;
const CHUNK = 1 << 20;

/** Reads exact byte counts from a stream, in order (a queue of the chunks it delivered). */
export class StreamReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private ended = false;
  private failed?: Error;
  private wake?: () => void;

  constructor(stream: Readable) {
    stream.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.have += b.length;
      if (this.have > 64 * CHUNK) stream.pause();
      this.poke();
    });
    stream.on('end', () => {
      this.ended = true;
      this.poke();
    });
    stream.on('error', (e) => {
      this.failed = e;
      this.poke();
    });
    this.resume = () => stream.resume();
  }

  private resume: () => void;

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Waits until `n` bytes are buffered; false at the end of the stream before that. */
  private async fill(n: number): Promise<boolean> {
    while (this.have < n) {
      if (this.failed) throw this.failed;
      if (this.ended) return false;
      this.resume();
      await new Promise<void>((r) => {
        this.wake = r;
      });
    }
    return true;
  }

  /** Up to `max` bytes that are there (at least one, unless the stream ended). */
  async some(max: number): Promise<Buffer | undefined> {
    if (!(await this.fill(1))) return undefined;
    const first = this.chunks[0];
    if (first.length <= max) {
      this.chunks.shift();
      this.have -= first.length;
      return first;
    }
    this.chunks[0] = first.subarray(max);
    this.have -= max;
    return first.subarray(0, max);
  }

  /** Exactly `n` bytes, or undefined when the stream ends first (at a boundary: cleanly). */
  async exact(n: number): Promise<Buffer | undefined> {
    const out = Buffer.allocUnsafe(n);
    return (await this.into(out, n)) ? out : undefined;
  }

  /** Exactly `n` bytes into the start of `out`; false when the stream ends first. */
  async into(out: Buffer, n: number): Promise<boolean> {
    if (!(await this.fill(n))) return false;
    for (let at = 0; at < n; ) {
      const b = (await this.some(n - at))!;
      b.copy(out, at);
      at += b.length;
    }
    return true;
  }

  /**
   * One line (without its newline), or undefined at the end. Only the chunks up to the newline
   * are looked at and joined: after a file's body, megabytes of the next one may be buffered.
   */
  async line(): Promise<string | undefined> {
    for (let searched = 0, bytes = 0; ; ) {
      for (; searched < this.chunks.length; bytes += this.chunks[searched++].length) {
        const c = this.chunks[searched];
        const i = c.indexOf(10);
        if (i < 0) continue;
        const text = Buffer.concat([...this.chunks.slice(0, searched), c.subarray(0, i)]).toString('utf8');
        this.chunks = i + 1 < c.length ? [c.subarray(i + 1), ...this.chunks.slice(searched + 1)] : this.chunks.slice(searched + 1);
        this.have -= bytes + i + 1;
        return text;
      }
      if (!(await this.fill(this.have + 1))) return undefined;
    }
  }
}

/** Where frames are written: a stream (StreamWriter), or the sealed direct channel (direct.ts). */
export interface FrameWriter {
  write(b: Buffer): Promise<void>;
  end(): void;
}

/** Writes to a stream, waiting for it to drain; fails once the stream did. */
export class StreamWriter implements FrameWriter {
  private failed?: Error;
  constructor(private readonly stream: Writable) {
    stream.on('error', (e) => {
      this.failed = e;
    });
  }

  async write(b: Buffer): Promise<void> {
    if (this.failed) throw this.failed;
    if (this.stream.write(b)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (e?: Error) => {
        this.stream.off('drain', done);
        this.stream.off('error', done);
        this.stream.off('close', closed);
        e ? reject(e) : resolve();
      };
      const closed = () => done(new Error('the connection closed'));
      this.stream.on('drain', done);
      this.stream.on('error', done);
      this.stream.on('close', closed);
    });
  }

  end(): void {
    this.stream.end();
  }
}

export type Header = { op: string; size?: number } & Record<string, unknown>;

/** Sends one frame; with `file`, its `size` bytes follow the header. */
export async function sendFrame(w: FrameWriter, header: Header, file?: string): Promise<number> {
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  await w.write(Buffer.concat([len, h]));
  if (file === undefined) return h.length + 4;
  const size = header.size ?? 0;
  const fd = openSync(file, 'r');
  try {
    let at = 0;
    while (at < size) {
      const b = Buffer.allocUnsafe(Math.min(CHUNK, size - at));
      const n = readSync(fd, b, 0, b.length, at);
      if (n <= 0) throw new Error(`${file} is shorter than ${size} bytes`);
      await w.write(n === b.length ? b : b.subarray(0, n));
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.length + 4 + size;
}

/** The next frame's header (its body, if any, is to be taken with takeBody), or undefined at a clean end. */
export async function readHeader(r: StreamReader): Promise<Header | undefined> {
  const len = await r.exact(4);
  if (!len) return undefined;
  const n = len.readUInt32BE(0);
  if (n === 0 || n > MAX_HEADER) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `protocol error: a frame header of ${n} bytes`);
  const body = await r.exact(n);
  if (!body) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the connection closed in the middle of a frame');
  let h: unknown;
  try {
    h = JSON.parse(body.toString('utf8'));
  } catch {
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'protocol error: a frame header that is not JSON');
  }
  if (!h || typeof (h as Header).op !== 'string') throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'protocol error: a frame without an op');
  const size = (h as Header).size;
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `protocol error: size ${size}`);
  return h as Header;
}

/** Writes a frame's body (`size` bytes) into fd, and into the running hash `hash` if given. */
export async function takeBody(r: StreamReader, size: number, fd: number, hash?: HashHandle): Promise<void> {
  // Hashed and written in big pieces: a piece of 64 KiB hashes its last chunks one by one (the
  // tree's edge) and costs a write of its own. A big chunk as it came (the direct channel's
  // records, a MiB each) goes as it is; small ones (a socket's reads, 64 KiB each) are gathered
  // into a CHUNK first.
  let piece: Buffer | undefined;
  let have = 0;
  const put = (b: Buffer) => {
    if (hash) native.hash.hashUpdate(hash, b);
    for (let at = 0; at < b.length; ) at += writeSync(fd, b, at, b.length - at);
  };
  for (let left = size; left > 0; ) {
    const b = await r.some(Math.min(CHUNK, left));
    if (!b) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the connection closed in the middle of a file');
    left -= b.length;
    if (!have && (b.length >= BIG_CHUNK || !left)) {
      put(b);
      continue;
    }
    piece ??= Buffer.allocUnsafe(Math.min(CHUNK, size));
    const n = Math.min(b.length, piece.length - have);
    b.copy(piece, have, 0, n);
    have += n;
    if (have === piece.length || !left) {
      put(piece.subarray(0, have));
      have = 0;
    }
    if (n < b.length) {
      b.copy(piece, 0, n);
      have = b.length - n;
      if (!left) {
        put(piece.subarray(0, have));
        have = 0;
      }
    }
  }
}

/** From this size on, a chunk is hashed and written as it came, not gathered first. */
const BIG_CHUNK = 256 << 10;

export interface Reply {
  ok: boolean;
  error?: { code?: string; message: string; hint?: string };
  [k: string]: unknown;
}

/** The next reply line, parsed; a failure reply, or the end, throws with what the other side said. */
export async function readReply(r: StreamReader, what: string, lastWords: () => string): Promise<Reply> {
  const line = await r.line();
  if (line === undefined) {
    const said = lastWords();
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `the destination went away ${what}${said ? `: ${said}` : ''}`);
  }
  let rep: Reply;
  try {
    rep = JSON.parse(line) as Reply;
  } catch {
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `the destination answered ${what} with something that is not ckpt's protocol: ${line.slice(0, 120)}`, {
      hint: 'is the remote command a ckpt of this version? (--remote-ckpt); does the login print anything?',
    });
  }
  if (!rep.ok) {
    const e = rep.error ?? { message: 'failed' };
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `the destination failed ${what}: ${e.message}`, e.hint ? { hint: e.hint } : undefined);
  }
  return rep;
}

/** A file name an image may hold (no path, no dot files): what a receiver accepts. */
export const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * One image being received (a migration's generation, a page server's dump): its files in a
 * staging directory of the image directory `top`, each hashed (BLAKE3) as it arrives; checked as a
 * restore would check it before it becomes a generation.
 */
export class IncomingImage {
  readonly staging: string;
  private readonly files = new Map<string, { fd: number; hash: HashHandle }>();
  private committed = false;

  constructor(private readonly top: string) {
    this.staging = join(top, stagingName(randomBytes(4).toString('hex')));
    mkdirSync(this.staging, { mode: 0o700 });
  }

  has(name: string): boolean {
    return this.files.has(name);
  }

  /** A frame's body (`size` bytes) as file `name`, or as more of it. */
  async take(r: StreamReader, name: string, size: number): Promise<void> {
    let f = this.files.get(name);
    if (!f) {
      f = { fd: openSync(join(this.staging, name), 'wx', 0o600), hash: native.hash.hashNew('blake3') };
      this.files.set(name, f);
    }
    await takeBody(r, size, f.fd, f.hash);
  }

  /**
   * The image received, checked as a restore would: signed by a key of `trust`, its chain, and
   * every file's digest (those computed as it arrived, not read again).
   */
  check(trust: KeyObject[]): ImageReader {
    const image = ImageReader.open(this.staging, { trust });
    image.chain();
    image.verifyAll(this.close());
    return image;
  }

  /** Makes it the next generation of the image directory: its number. */
  commit(keep: number): number {
    this.close();
    const n = commitGeneration(this.top, this.staging, keep);
    this.committed = true;
    return n;
  }

  /** What was received goes (unless committed). */
  drop(): void {
    this.close();
    if (!this.committed) rmSync(this.staging, { recursive: true, force: true });
  }

  /** Closes every file: their BLAKE3 digests, by name. */
  private close(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [name, f] of this.files) {
      closeSync(f.fd);
      out.set(name, native.hash.hashDigest(f.hash));
    }
    this.files.clear();
    return out;
  }
}
