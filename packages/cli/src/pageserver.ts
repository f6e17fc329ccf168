/**
 * `ckpt page-server`: receives images that dumps on other hosts write to it (`ckpt dump
 * --page-server HOST:PORT`), into an image directory of this host, one generation per dump. The
 * protocol is in packages/core/src/pageclient.ts. A dump is answered only when it proves it holds
 * a key this host trusts (`ckpt trust`: it signs a fresh nonce); its image is checked like a
 * restore would (the signature, by that same key, and every file's digest) before it becomes a
 * generation, atomically. A dump that goes away before its commit leaves nothing.
 *
 * The connection itself is not encrypted: images hold process memory. Run it on a link you trust,
 * or through a tunnel (ssh -L).
 */
import { verify, type KeyObject } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { CkptError, KeyStore, MANIFEST, SIGNATURE_FILE, VERSION, errorMessage, fingerprint, newNonce, parsePublicKey, removeStaleStaging } from '@ckpt/core';
import { FILE_NAME, IncomingImage, StreamReader, readHeader } from './wire.js';

export interface PageServerOptions {
  listen: string;
  dir: string;
  keep: number;
  /** Exit after the first image committed. */
  once?: boolean;
  /** A line for people about each image (stderr). */
  say: (line: string) => void;
  /** Called once listening, with the port (the one picked, for port 0). */
  listening: (port: number) => void;
}

export function pageServer(o: PageServerOptions): Promise<void> {
  const at = parseListen(o.listen);
  const dir = resolve(o.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  removeStaleStaging(dir);
  return new Promise((resolveDone, reject) => {
    const server = net.createServer((conn) => {
      session(conn, dir, o).then(
        (committed) => {
          if (committed && o.once) server.close(() => resolveDone());
        },
        () => undefined,
      );
    });
    server.on('error', (e) => reject(new CkptError('ERR_CKPT_USAGE', `cannot listen on ${o.listen}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    server.listen(at.port, at.host, () => o.listening((server.address() as net.AddressInfo).port));
  });
}

function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  if (!m || Number(m[3]) > 65535) throw new CkptError('ERR_CKPT_USAGE', `--listen ${spec}: expected ADDRESS:PORT (port 0: any free one)`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

/** One dump's connection; true when its image was committed. */
async function session(conn: net.Socket, dir: string, o: PageServerOptions): Promise<boolean> {
  const who = `${conn.remoteAddress}:${conn.remotePort}`;
  const answer = (r: Record<string, unknown>) => conn.write(`${JSON.stringify(r)}\n`);
  const r = new StreamReader(conn);
  const nonce = newNonce();
  let incoming: IncomingImage | undefined;
  try {
    answer({ ok: true, version: VERSION, nonce });
    const hello = await readHeader(r);
    if (hello?.op !== 'hello') throw new CkptError('ERR_CKPT_USAGE', 'protocol error: no hello');
    const key: KeyObject = parsePublicKey(String(hello.key), 'the key of the dump');
    const fp = fingerprint(key);
    if (!verify(null, Buffer.from(nonce, 'base64'), key, Buffer.from(String(hello.signature ?? ''), 'base64'))) {
      throw new CkptError('ERR_CKPT_IMAGE_UNTRUSTED', `the dump's signature of this connection's nonce does not verify with its key ${fp}`);
    }
    if (!new KeyStore().trustOf(fp)) {
      throw new CkptError('ERR_CKPT_IMAGE_UNTRUSTED', `this page server does not trust the key ${fp} of the dumping host`, {
        hint: "on the page server's host: ckpt trust FILE, FILE holding the dumping host's `ckpt key`",
      });
    }
    answer({ ok: true });
    for (;;) {
      const h = await readHeader(r);
      if (!h) throw new CkptError('ERR_CKPT_DUMP_FAILED', 'the dump went away before its commit');
      if (h.op === 'file' || h.op === 'chunk') {
        const name = String(h.name);
        if (!FILE_NAME.test(name)) throw new CkptError('ERR_CKPT_USAGE', `protocol error: file name ${JSON.stringify(name)}`);
        incoming ??= new IncomingImage(dir);
        if (h.op === 'file' && incoming.has(name)) throw new CkptError('ERR_CKPT_USAGE', `protocol error: file ${name} sent twice`);
        await incoming.take(r, name, h.size ?? 0);
      } else if (h.op === 'commit') {
        if (!incoming?.has(MANIFEST) || !incoming.has(SIGNATURE_FILE)) throw new CkptError('ERR_CKPT_USAGE', 'protocol error: a commit without a manifest');
        // Checked as a restore would: signed by the key that connected, every file as its digest says.
        const image = incoming.check([key]);
        if (image.signer.fingerprint !== fp)
          throw new CkptError('ERR_CKPT_IMAGE_UNTRUSTED', `the image is signed by ${image.signer.fingerprint}, not by the key that sent it`);
        const g = incoming.commit(o.keep);
        const path = join(dir, String(g));
        answer({ ok: true, generation: g, path });
        o.say(`generation ${g} of ${dir}: from ${who} (key ${fp}), ${image.manifest.processes.length} process(es)`);
        conn.end();
        return true;
      } else throw new CkptError('ERR_CKPT_USAGE', `protocol error: unknown op ${h.op}`);
    }
  } catch (e) {
    const err = e as CkptError;
    if (!conn.destroyed)
      answer({ ok: false, error: { code: err.code ?? 'ERR_CKPT_INTERNAL', message: errorMessage(e), ...(err.hint ? { hint: err.hint } : {}) } });
    o.say(`refused ${who}: ${errorMessage(e)}`);
    conn.end();
    return false;
  } finally {
    incoming?.drop();
  }
}
