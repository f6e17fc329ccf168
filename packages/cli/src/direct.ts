/**
 * A migration's direct data channel: the frames `ckpt migrate` sends (the images) over a TCP
 * connection of their own instead of the SSH channel, sealed with a key the two ends agreed on
 * through that SSH channel. SSH carries the session (who may run ckpt there, the replies, the
 * end of the conversation); the bytes go the direct way. Measured here between two network
 * namespaces: SSH moved about 170 MB/s whatever the cipher (its channel windows and four processes
 * on two CPUs), a TCP connection of the same link over 1 GB/s; the final round's few megabytes are
 * part of the downtime.
 *
 *   destination (ckpt receive)                          source (ckpt migrate)
 *   hello (direct offered)                        <-
 *   listens on the address the SSH client reached
 *   (SSH_CONNECTION), a fresh 256-bit key          ->   hello reply: {host, port, key}
 *                                                 <-   connects; its first record: HELLO
 *   a connection whose first record opens with
 *   the key is the channel (others are dropped)
 *                                                 <-   (over SSH) {op: "direct"}: frames go the
 *                                                      direct way from here
 *
 * Records: u32 (big-endian) length, then AES-256-GCM ciphertext and its 16-byte tag; the nonce of
 * the n-th record is n (96 bits, big-endian), so a record dropped, replayed or reordered does not
 * open. Any record that does not open ends the migration. Where no connection can be made (a
 * firewall), the frames go over SSH as before, and the result says why.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { CkptError } from '@ckpt/core';
import { type FrameWriter, StreamReader, StreamWriter } from './wire.js';

const HELLO = Buffer.from('ckpt-direct-1');
/** The largest record accepted (frames are written a MiB at a time at most). */
const RECORD_MAX = (4 << 20) + 16;
/** How long the source's connection may take, and the destination's wait for it. */
export const CONNECT_MS = 3000;

function nonce(n: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUIntBE(n, 6, 6);
  return b;
}

/** Writes sealed records to a socket. */
class SealedWriter implements FrameWriter {
  private n = 0;
  constructor(
    private readonly w: StreamWriter,
    private readonly key: Buffer,
    private readonly sock: net.Socket,
  ) {}

  async write(b: Buffer): Promise<void> {
    const c = createCipheriv('aes-256-gcm', this.key, nonce(this.n++));
    const body = c.update(b);
    c.final();
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length + 16);
    await this.w.write(Buffer.concat([len, body, c.getAuthTag()]));
  }

  end(): void {
    this.sock.end();
  }
}

/** What the destination offers in its hello reply. */
export interface DirectOffer {
  host: string;
  port: number;
  key: string;
}

/** The source's side: connects to the offer and proves it has the key; a writer for the frames. */
export async function connectDirect(offer: DirectOffer): Promise<FrameWriter> {
  const key = Buffer.from(offer.key, 'base64');
  if (key.length !== 32 || !Number.isInteger(offer.port)) throw new Error('a malformed offer');
  const sock = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: offer.host, port: offer.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no connection to ${offer.host} port ${offer.port} within ${CONNECT_MS / 1000} s`));
    }, CONNECT_MS);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  sock.setNoDelay(true);
  const w = new SealedWriter(new StreamWriter(sock), key, sock);
  await w.write(HELLO);
  return w;
}

/** The destination's side: a listener for one channel, and the frames' reader once it is there. */
export interface DirectListener {
  offer: DirectOffer;
  /** The reader of the frames, once the source's connection proved it has the key. */
  accept(): Promise<StreamReader>;
  /** Stops listening and drops the channel: its reader fails ('the source went away'). */
  close(): void;
}

/** Listens on `host` (the address the SSH client reached this host on) for the source's connection. */
export async function listenDirect(host: string): Promise<DirectListener> {
  const key = randomBytes(32);
  const sockets = new Set<net.Socket>();
  let found: ((r: StreamReader) => void) | undefined;
  let channel: StreamReader | undefined;
  let chosen: PassThrough | undefined;
  const server = net.createServer((sock) => {
    if (channel) return sock.destroy();
    sockets.add(sock);
    const plain = new PassThrough();
    void openRecords(sock, key, plain, () => {
      // Its first record opened: this is the channel; nothing else is let in.
      channel = new StreamReader(plain);
      chosen = plain;
      server.close();
      for (const s of sockets) if (s !== sock) s.destroy();
      found?.(channel);
    }).catch(() => {
      sock.destroy();
      sockets.delete(sock);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0 }, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    offer: { host, port, key: key.toString('base64') },
    accept: () =>
      channel
        ? Promise.resolve(channel)
        : new Promise<StreamReader>((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the source said it connected directly, and no connection came')),
              CONNECT_MS,
            );
            found = (r) => {
              clearTimeout(timer);
              resolve(r);
            };
          }),
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
      // A reader waiting for frames learns that none will come.
      if (chosen && !chosen.destroyed) chosen.destroy(new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the source went away'));
    },
  };
}

/**
 * Opens the records of `sock` into `out`: the first must be HELLO (then `hello` is called), any
 * record that does not open with the key fails (the socket is destroyed, `out` ends with the
 * error), the socket's end ends `out`.
 */
async function openRecords(sock: net.Socket, key: Buffer, out: PassThrough, hello: () => void): Promise<void> {
  const r = new StreamReader(sock);
  let n = 0;
  try {
    for (; ; n++) {
      const len = await r.exact(4);
      if (!len) {
        if (n === 0) throw new Error('closed before its hello');
        out.end();
        return;
      }
      const size = len.readUInt32BE(0);
      if (size < 16 || size > RECORD_MAX) throw new Error(`a record of ${size} bytes`);
      const rec = await r.exact(size);
      if (!rec) throw new Error('closed in the middle of a record');
      const d = createDecipheriv('aes-256-gcm', key, nonce(n));
      d.setAuthTag(rec.subarray(size - 16));
      let plain: Buffer;
      try {
        plain = d.update(rec.subarray(0, size - 16));
        d.final(); // nothing more (GCM is a stream cipher); throws when the tag does not match
      } catch {
        throw new Error('a record that does not open with the key');
      }
      if (n === 0) {
        if (!plain.equals(HELLO)) throw new Error('not a ckpt migration');
        hello();
        continue;
      }
      if (!out.write(plain)) await new Promise((resolve) => out.once('drain', resolve));
    }
  } catch (e) {
    // Once it is the channel, the frames' reader fails with it.
    if (n > 0) out.destroy(new CkptError('ERR_CKPT_MIGRATE_FAILED', `the direct channel broke: ${(e as Error).message}`));
    throw e;
  }
}
