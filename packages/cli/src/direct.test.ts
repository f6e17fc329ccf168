// A migration's direct channel (direct.ts) on loopback: what goes in comes out, sealed; a
// stranger's connection and a tampered record do not get through.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectDirect, type DirectListener, listenDirect } from './direct.js';

let listener: DirectListener | undefined;
afterEach(() => {
  listener?.close();
  listener = undefined;
});

/** Connects to the offer and writes raw bytes (not sealed with its key). */
async function rawConnect(port: number, bytes: Buffer): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  await new Promise((r) => s.once('connect', r));
  s.write(bytes);
  return s;
}

describe('direct channel', () => {
  it('carries the bytes written, in order, exactly', async () => {
    listener = await listenDirect('127.0.0.1');
    const w = await connectDirect(listener.offer);
    const r = await listener.accept();
    const parts = [randomBytes(10), randomBytes(1 << 20), randomBytes(70_000), Buffer.from('end')];
    const sent = Promise.all(parts.map((p) => w.write(p)));
    for (const p of parts) expect((await r.exact(p.length))!.equals(p)).toBe(true);
    await sent;
    w.end();
    expect(await r.exact(1)).toBeUndefined();
  });

  it('a connection without the key is dropped; the one with it becomes the channel', async () => {
    listener = await listenDirect('127.0.0.1');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(48);
    const stranger = await rawConnect(listener.offer.port, Buffer.concat([len, randomBytes(48)]));
    const closed = new Promise((r) => stranger.once('close', r));
    await closed;
    const w = await connectDirect(listener.offer);
    const r = await listener.accept();
    await w.write(Buffer.from('hello there'));
    expect((await r.exact(11))!.toString()).toBe('hello there');
    w.end();
  });

  it('a record changed on the way fails the reader, naming the channel', async () => {
    listener = await listenDirect('127.0.0.1');
    // A proxy that flips a bit in the second record's ciphertext.
    let records = 0;
    const proxy = net.createServer((inbound) => {
      const out = net.connect({ host: '127.0.0.1', port: listener!.offer.port });
      let buf = Buffer.alloc(0);
      inbound.on('data', (b: Buffer) => {
        buf = Buffer.concat([buf, b]);
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
          const n = 4 + buf.readUInt32BE(0);
          const rec = Buffer.from(buf.subarray(0, n));
          if (++records === 2) rec[6] ^= 1;
          out.write(rec);
          buf = buf.subarray(n);
        }
      });
      inbound.on('end', () => out.end());
    });
    await new Promise<void>((r) => proxy.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    try {
      const w = await connectDirect({ ...listener.offer, port: (proxy.address() as net.AddressInfo).port });
      const r = await listener.accept();
      await w.write(Buffer.from('payload'));
      await expect(r.exact(7)).rejects.toThrow(/direct channel broke: a record that does not open with the key/);
      w.end();
    } finally {
      proxy.close();
    }
  });

  it('close() fails a reader that waits for frames', async () => {
    listener = await listenDirect('127.0.0.1');
    const w = await connectDirect(listener.offer);
    const r = await listener.accept();
    const waiting = r.exact(4);
    listener.close();
    await expect(waiting).rejects.toThrow(/the source went away/);
    w.end();
  });
});
