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
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { CkptError } from '@ckpt/core';
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
    if (!(await this.fill(n))) return undefined;
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const b = (await this.some(n - at))!;
      b.copy(out, at);
      at += b.length;
    }
    return out;
  }

  /** One line (without its newline), or undefined at the end. */
  async line(): Promise<string | undefined> {
    for (;;) {
      const all = Buffer.concat(this.chunks);
      const i = all.indexOf(10);
      if (i >= 0) {
        this.chunks = i + 1 < all.length ? [all.subarray(i + 1)] : [];
        this.have = all.length - i - 1;
        return all.subarray(0, i).toString('utf8');
      }
      this.chunks = all.length ? [all] : [];
      if (!(await this.fill(all.length + 1))) return undefined;
    }
  }
}

/** Writes to a stream, waiting for it to drain; fails once the stream did. */
export class StreamWriter {
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
export async function sendFrame(w: StreamWriter, header: Header, file?: string): Promise<number> {
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
  let left = size;
  while (left > 0) {
    const b = await r.some(Math.min(CHUNK, left));
    if (!b) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the connection closed in the middle of a file');
    if (hash) native.hash.hashUpdate(hash, b);
    let at = 0;
    while (at < b.length) at += writeSync(fd, b, at, b.length - at);
    left -= b.length;
  }
}

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

/** The files of one image being received: where each goes, and its running BLAKE3. */
export class Incoming {
  private readonly files = new Map<string, { fd: number; hash: HashHandle }>();

  /** The open file `name` (created, 0600, in `dir`), or undefined when it was not started. */
  get(name: string): { fd: number; hash: HashHandle } | undefined {
    return this.files.get(name);
  }

  create(dir: string, name: string): { fd: number; hash: HashHandle } {
    const f = { fd: openSync(join(dir, name), 'wx', 0o600), hash: native.hash.hashNew('blake3') };
    this.files.set(name, f);
    return f;
  }

  has(name: string): boolean {
    return this.files.has(name);
  }

  /** Closes every file: their BLAKE3 digests, by name. */
  close(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [name, f] of this.files) {
      closeSync(f.fd);
      out.set(name, native.hash.hashDigest(f.hash));
    }
    this.files.clear();
    return out;
  }
}
