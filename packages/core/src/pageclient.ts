/**
 * The dump's end of a page server (`ckpt dump --page-server HOST:PORT`, `ckpt page-server`): the
 * image is written to the server instead of this host's disk, file by file, pages streamed as
 * they are read. Synchronous, on a blocking TCP socket, like the local writer's file writes.
 *
 * The wire (the framing of `ckpt migrate`, see packages/cli/src/wire.ts):
 *   server -> dump   one JSON line per answer: {"ok": true, ...} or {"ok": false, "error": {...}};
 *                    the first, on connect: {"ok": true, "version", "nonce"}
 *   dump -> server   frames: u32 big-endian length, JSON header, then `size` bytes:
 *                      hello {key (PEM), signature (base64, of the nonce, by that key)}: the
 *                        server answers only keys it trusts (`ckpt trust` there)
 *                      file {name, size} + bytes        a whole file
 *                      chunk {name, size} + bytes       more bytes of a file (pages, as read)
 *                      commit                           manifest.json and its signature were the
 *                                                       last files: the server checks the signature
 *                                                       (the same key) and every file's digest, then
 *                                                       makes it its next generation: {generation, path}
 * A dump that fails or dies just closes the connection: the server drops what it had.
 */
import { closeSync, readSync, writeSync } from 'node:fs';
import { isIP } from 'node:net';
import { native } from '@ckpt/native';
import { CkptError } from './errors.js';
import { sleepSync } from './helpers.js';
import { type HostKey, publicKeyPem } from './keys.js';

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const POLLIN = 1;
const REPLY_TIMEOUT_MS = 120_000;

export interface PageServerAddress {
  host: string;
  port: number;
  family: 4 | 6;
}

/** HOST:PORT ([V6]:PORT; localhost is 127.0.0.1). */
export function parsePageServer(spec: string): PageServerAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  const host = m ? (m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2])) : '';
  const fam = isIP(host);
  const port = m ? Number(m[3]) : 0;
  if (!m || !fam || port < 1 || port > 65535) {
    throw new CkptError('ERR_CKPT_USAGE', `--page-server ${spec}: expected ADDRESS:PORT, the address numeric (192.0.2.7:7070, [2001:db8::7]:7070)`);
  }
  return { host, port, family: fam as 4 | 6 };
}

export class PageClient {
  private fd: number;
  private buf = Buffer.alloc(0);
  readonly label: string;
  /** Bytes sent so far. */
  sent = 0;

  constructor(spec: string, key: HostKey) {
    const a = parsePageServer(spec);
    this.label = `page server ${spec}`;
    this.fd = native.sock.inetSocket(a.family === 4 ? AF_INET : AF_INET6, SOCK_STREAM, 0);
    try {
      native.sock.sockConnect(this.fd, { family: a.family, addr: a.host, port: a.port });
    } catch (e) {
      closeSync(this.fd);
      const code = (e as NodeJS.ErrnoException).code;
      throw new CkptError(
        'ERR_CKPT_USAGE',
        `cannot connect to the ${this.label}: ${code === 'ECONNREFUSED' ? 'nobody listens there' : (code ?? (e as Error).message)}`,
        {
          hint: 'start it there: ckpt page-server --listen ADDRESS:PORT -D DIR',
        },
      );
    }
    try {
      const hi = this.reply('on connect');
      const nonce = Buffer.from(String(hi.nonce ?? ''), 'base64');
      if (nonce.length < 16) throw new CkptError('ERR_CKPT_DUMP_FAILED', `the ${this.label} is not a ckpt page server`);
      this.frame({
        op: 'hello',
        key: publicKeyPem(key.raw),
        signature: native.sign.ed25519Sign(key.seed, nonce).toString('base64'),
      });
      this.reply('to the key of this host');
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The connection, for native code to stream a chunk's bytes into (after its header). */
  get socket(): number {
    return this.fd;
  }

  /** Sends a frame: the header, then `body` if given. */
  frame(header: Record<string, unknown>, body?: Buffer): void {
    const h = Buffer.from(JSON.stringify(body ? { ...header, size: body.length } : header));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(h.length);
    this.write(Buffer.concat([len, h]));
    if (body) this.write(body);
  }

  /** Sends `size` bytes of fd from offset 0 as a chunk of file `name`, in pieces. */
  chunkFromFd(name: string, fd: number, size: number): void {
    this.frame({ op: 'chunk', name, size });
    const piece = Buffer.allocUnsafe(Math.min(size, 4 << 20));
    for (let at = 0; at < size; ) {
      const n = readSync(fd, piece, 0, Math.min(piece.length, size - at), at);
      if (n <= 0) throw new Error(`page server: short read of the scratch file of ${name}`);
      this.write(n === piece.length ? piece : piece.subarray(0, n));
      at += n;
    }
  }

  private write(b: Buffer): void {
    try {
      for (let at = 0; at < b.length; ) at += writeSync(this.fd, b, at, b.length - at);
    } catch (e) {
      throw new CkptError(
        'ERR_CKPT_DUMP_FAILED',
        `the ${this.label} went away: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${this.lastWords()}`,
      );
    }
    this.sent += b.length;
  }

  /** What the server said before it closed, if it said anything. */
  private lastWords(): string {
    try {
      if (native.fd.pollNow(this.fd, POLLIN) & POLLIN) this.reply('');
    } catch (e) {
      return `: ${(e as Error).message}`;
    }
    return '';
  }

  /** The next answer; a refusal throws with what the server said. */
  reply(what: string): { ok: boolean; [k: string]: unknown } {
    const t0 = Date.now();
    for (;;) {
      const nl = this.buf.indexOf(10);
      if (nl >= 0) {
        const text = this.buf.subarray(0, nl).toString('utf8');
        this.buf = this.buf.subarray(nl + 1);
        let r: { ok: boolean; error?: { message: string; hint?: string } };
        try {
          r = JSON.parse(text);
        } catch {
          throw new CkptError('ERR_CKPT_DUMP_FAILED', `the ${this.label} answered ${what} with something that is not ckpt's protocol`);
        }
        if (!r.ok) {
          throw new CkptError(
            'ERR_CKPT_DUMP_FAILED',
            `the ${this.label} refused ${what}: ${r.error?.message ?? 'no reason given'}`,
            r.error?.hint ? { hint: r.error.hint } : undefined,
          );
        }
        return r;
      }
      if (!(native.fd.pollNow(this.fd, POLLIN) & POLLIN)) {
        if (Date.now() - t0 > REPLY_TIMEOUT_MS)
          throw new CkptError('ERR_CKPT_DUMP_FAILED', `the ${this.label} did not answer ${what} within ${REPLY_TIMEOUT_MS / 1000} s`);
        sleepSync(1);
        continue;
      }
      const b = Buffer.allocUnsafe(65536);
      let n: number;
      try {
        n = readSync(this.fd, b, 0, b.length, null);
      } catch (e) {
        n = 0;
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      }
      if (n <= 0) throw new CkptError('ERR_CKPT_DUMP_FAILED', `the ${this.label} closed the connection ${what}`);
      this.buf = Buffer.concat([this.buf, b.subarray(0, n)]);
    }
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** A nonce for the server's greeting. */
export function newNonce(): string {
  return native.sign.randomBytes(32).toString('base64');
}
