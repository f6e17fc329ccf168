/**
 * Image signatures and the keys behind them.
 *
 * Every dump signs its image with this host's Ed25519 key, created on first use; a restore
 * accepts an image signed by this host's key or by a key it was told to trust. The key directory
 * (CKPT_KEY_DIR, else /etc/ckpt for root, else ${XDG_CONFIG_HOME:-~/.config}/ckpt):
 *
 *   host.key                  this host's private key (PKCS#8 PEM), 0600, in a 0700 directory
 *   host.pub                  its public key (SPKI PEM), what `ckpt key` prints
 *   trusted/<fingerprint>.pub the public keys of other hosts whose images this one restores
 *
 * A key's fingerprint is "SHA256:" + base64 (unpadded) of the SHA-256 of its raw 32 bytes, as
 * ssh-keygen shows keys; in file names '/' and '+' become '_' and '-'.
 *
 * The signature (manifest.sig, one line) covers the exact bytes of manifest.json, which lists
 * every other file of the image with its size and SHA-256:
 *
 *   ckpt-signature-v1 ed25519 <public key, base64 of 32 bytes> <signature, base64 of 64 bytes>
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { CkptError } from './errors.js';
import { fsyncPath } from './imagedir.js';
import { logger } from './log.js';
import { native } from '@ckpt/native';
import { randomHex, sha256Hex } from './random.js';

const log = logger('keys');

export const SIGNATURE_FILE = 'manifest.sig';
const SIGNATURE_TAG = 'ckpt-signature-v1 ed25519';
const HOST_KEY = 'host.key';
const HOST_PUB = 'host.pub';
const TRUSTED = 'trusted';

/** Where the keys are: CKPT_KEY_DIR, else /etc/ckpt for root, else ${XDG_CONFIG_HOME:-~/.config}/ckpt. */
export function defaultKeyDir(env: NodeJS.ProcessEnv = process.env, uid: number = process.geteuid?.() ?? 0, home: () => string = os.homedir): string {
  if (env.CKPT_KEY_DIR) return env.CKPT_KEY_DIR;
  if (uid === 0) return '/etc/ckpt';
  return join(env.XDG_CONFIG_HOME || join(home(), '.config'), 'ckpt');
}

/*
 * A dump signs and a restore verifies with the native engine's Ed25519 (raw keys), and the host
 * key is read and written in the one layout an Ed25519 key has in PKCS#8 and SPKI (the DER
 * prefix, then the 32 bytes): node:crypto, whose module costs 5-6 ms of a command's start, is
 * loaded only for other keys (the PEM parser tells what is wrong with them) and for KeyObjects.
 */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

/** The DER of a PEM block with this label, when the text is exactly one such block. */
function pemBody(text: string, label: string): Buffer | undefined {
  const m = new RegExp(`^-----BEGIN ${label}-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END ${label}-----\r?\n?$`).exec(text);
  return m ? Buffer.from(m[1].replace(/\s+/g, ''), 'base64') : undefined;
}

/** The 32 bytes after an Ed25519 DER prefix, when der is exactly that. */
function rawAfter(der: Buffer | undefined, prefix: Buffer): Buffer | undefined {
  return der && der.length === prefix.length + 32 && der.subarray(0, prefix.length).equals(prefix) ? der.subarray(prefix.length) : undefined;
}

/** An Ed25519 public key as `ckpt key` prints it (SPKI PEM, as Node's export writes it). */
export function publicKeyPem(raw: Buffer): string {
  return `-----BEGIN PUBLIC KEY-----\n${Buffer.concat([SPKI_ED25519, raw]).toString('base64')}\n-----END PUBLIC KEY-----\n`;
}

/** The raw 32 bytes of an Ed25519 public key. */
export function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  return Buffer.from(jwk.x!, 'base64url');
}

/** An Ed25519 public key from its raw 32 bytes. */
export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

/** "SHA256:<base64>", the way ssh-keygen -l names keys. */
export function fingerprint(key: KeyObject | Buffer): string {
  const raw = Buffer.isBuffer(key) ? key : rawPublicKey(key);
  return `SHA256:${Buffer.from(sha256Hex(raw), 'hex').toString('base64').replace(/=+$/, '')}`;
}

/** A fingerprint as a file name (no '/'). */
function fingerprintFile(fp: string): string {
  return `${fp.replace(/\//g, '_').replace(/\+/g, '-')}.pub`;
}

/** Accepts "SHA256:x", "x", and the file-name spelling of either. */
function normalizeFingerprint(s: string): string {
  const body = s
    .trim()
    .replace(/\.pub$/, '')
    .replace(/^SHA256:/i, '')
    .replace(/_/g, '/')
    .replace(/-/g, '+');
  return `SHA256:${body}`;
}

const PEM_BLOCK = /-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/;

/**
 * An Ed25519 public key from a key file's text: a PEM `PUBLIC KEY` block (what `ckpt key`
 * prints; other lines around it are ignored). `what` names the file in errors.
 */
export function parsePublicKey(text: string | Buffer, what: string): KeyObject {
  const s = Buffer.isBuffer(text) ? text.toString('utf8') : text;
  const pem = PEM_BLOCK.exec(s)?.[0];
  if (!pem) {
    const hint = /PRIVATE KEY-----/.test(s) ? ' (it is a private key: give the public key, `ckpt key` prints it)' : '';
    throw new CkptError('ERR_CKPT_KEY', `${what} is not a public key file: no "-----BEGIN PUBLIC KEY-----" block${hint}`, {
      hint: 'on the host whose images you want to trust, `ckpt key > host.pub` writes one',
    });
  }
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (e) {
    throw new CkptError('ERR_CKPT_KEY', `${what} holds a damaged public key (${(e as Error).message.split('\n')[0]})`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new CkptError('ERR_CKPT_KEY', `${what} holds a ${key.asymmetricKeyType} key; ckpt keys are Ed25519`);
  }
  return key;
}

/** Reads a key file given on the command line (`ckpt trust FILE`, `--trust-key FILE`). */
export function readPublicKeyFile(path: string): KeyObject {
  let text: Buffer;
  try {
    text = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
    throw new CkptError('ERR_CKPT_KEY', `cannot read key file ${path}: ${why}`);
  }
  return parsePublicKey(text, `key file ${path}`);
}

// ---- signatures ----

/** The line of manifest.sig for these manifest bytes. */
export function signatureLine(manifest: Buffer, key: HostKey): string {
  const sig = native.sign.ed25519Sign(key.seed, manifest);
  return `${SIGNATURE_TAG} ${key.raw.toString('base64')} ${sig.toString('base64')}\n`;
}

export interface Signature {
  /** The signer's raw public key and its fingerprint. */
  publicKey: Buffer;
  fingerprint: string;
  signature: Buffer;
}

const SIGNATURE_RE = /^ckpt-signature-v1 ed25519 ([A-Za-z0-9+/]{43}=) ([A-Za-z0-9+/]{86}==)\n?$/;

/** Parses manifest.sig (strictly: one line of the fixed format), or undefined when it is not one. */
export function parseSignature(text: string): Signature | undefined {
  const m = SIGNATURE_RE.exec(text);
  if (!m) return undefined;
  const publicKey = Buffer.from(m[1], 'base64');
  const signature = Buffer.from(m[2], 'base64');
  if (publicKey.length !== 32 || signature.length !== 64) return undefined;
  return { publicKey, fingerprint: fingerprint(publicKey), signature };
}

/** True when sig is a valid signature of data by its own key (not whether that key is trusted). */
export function signatureValid(data: Buffer, sig: Signature): boolean {
  // The same bytes and signature verify the same way every time: a verification that passed is
  // not done again (a restore of an image chain opens each image of the chain, a migration's
  // destination each image several times: 0.2 ms each here, more in a fresh process).
  const key = sha256Hex(data, sig.publicKey, sig.signature);
  if (verifiedSignatures.has(key)) return true;
  const ok = native.sign.ed25519Verify(sig.publicKey, data, sig.signature);
  if (ok) {
    verifiedSignatures.add(key);
    if (verifiedSignatures.size > VERIFIED_KEPT) verifiedSignatures.delete(verifiedSignatures.values().next().value!);
  }
  return ok;
}
const verifiedSignatures = new Set<string>();
const VERIFIED_KEPT = 256;

// ---- the key store ----

export interface HostKey {
  /** The private key's raw 32 bytes (its seed) and the public key's. */
  seed: Buffer;
  raw: Buffer;
  fingerprint: string;
  /** The same keys as KeyObjects (made when first read: they load node:crypto). */
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

/** A host key from its private seed. */
function hostKeyOf(seed: Buffer): HostKey {
  const raw = native.sign.ed25519Public(seed);
  let privateKey: KeyObject | undefined;
  let publicKey: KeyObject | undefined;
  return {
    seed,
    raw,
    fingerprint: fingerprint(raw),
    get privateKey() {
      privateKey ??= createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x: raw.toString('base64url') }, format: 'jwk' });
      return privateKey;
    },
    get publicKey() {
      publicKey ??= publicKeyFromRaw(raw);
      return publicKey;
    },
  };
}

export interface TrustedKey {
  fingerprint: string;
  path: string;
  key: KeyObject;
}

/** Why a key is trusted: this host's own key, a key in trusted/, or one given for this run. */
export type TrustReason = 'host' | 'trusted' | 'given';

function errnoReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return (
    { EACCES: 'permission denied', EPERM: 'permission denied', EROFS: 'read-only file system', ENOSPC: 'no space left', ENOTDIR: 'not a directory' }[
      code ?? ''
    ] ?? (e as Error).message
  );
}

/** lstat or undefined when absent. */
function lstatOrNone(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CkptError('ERR_CKPT_KEY', `cannot read ${p}: ${errnoReason(e)}`);
  }
}

/** Host keys parsed, by path, with the identity of the file they were parsed from (see loadHostKey). */
const parsedHostKeys = new Map<string, { id: string; key: HostKey }>();

export class KeyStore {
  readonly dir: string;

  constructor(dir: string = defaultKeyDir()) {
    this.dir = dir;
  }

  get hostKeyPath(): string {
    return join(this.dir, HOST_KEY);
  }

  get hostPubPath(): string {
    return join(this.dir, HOST_PUB);
  }

  get trustedDir(): string {
    return join(this.dir, TRUSTED);
  }

  /**
   * Who may change what is trusted decides what is restored: the directories must belong to this
   * user (or root), be real directories, and be writable by nobody else.
   */
  private checkDir(p: string, st: Stats): void {
    const uid = process.geteuid?.() ?? 0;
    if (!st.isDirectory()) throw new CkptError('ERR_CKPT_KEY', `${p} is not a directory (the ckpt key directory)`);
    if (st.uid !== uid && st.uid !== 0) {
      throw new CkptError('ERR_CKPT_KEY', `key directory ${p} belongs to uid ${st.uid}, not to this user (uid ${uid}); its keys are not used`, {
        hint: 'set CKPT_KEY_DIR to a directory of yours',
      });
    }
    if (st.mode & 0o022) {
      throw new CkptError('ERR_CKPT_KEY', `key directory ${p} is writable by others (mode ${(st.mode & 0o777).toString(8)}); its keys are not used`, {
        hint: `chmod go-w ${p}`,
      });
    }
  }

  /** Checks the key directory, if present; true when it exists. */
  private dirPresent(): boolean {
    const st = lstatOrNone(this.dir);
    if (!st) return false;
    this.checkDir(this.dir, st);
    return true;
  }

  /** This host's key; created (atomically) when missing unless create is false. */
  hostKey(opts: { create?: boolean } = {}): HostKey | undefined {
    const path = this.hostKeyPath;
    if (!this.dirPresent() || !lstatOrNone(path)) {
      if (opts.create === false) return undefined;
      this.createHostKey();
    }
    const key = this.loadHostKey();
    if (opts.create !== false) this.writeHostPub(key);
    return key;
  }

  private loadHostKey(): HostKey {
    const path = this.hostKeyPath;
    const st = lstatOrNone(path);
    if (!st?.isFile()) throw new CkptError('ERR_CKPT_KEY', `host key ${path} is not a regular file`);
    const uid = process.geteuid?.() ?? 0;
    if (st.uid !== uid) throw new CkptError('ERR_CKPT_KEY', `host key ${path} belongs to uid ${st.uid}, not to this user (uid ${uid})`);
    if (st.mode & 0o077) {
      throw new CkptError('ERR_CKPT_KEY', `host key ${path} is accessible to others (mode ${(st.mode & 0o777).toString(8)}); it is not used`, {
        hint: `chmod 600 ${path}, or remove it if others may have read it (a new one is made; hosts that trusted the old key must trust the new one)`,
      });
    }
    // Parsed once per file: a chain of images checks its key at every image.
    const id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    const cached = parsedHostKeys.get(path);
    if (cached?.id === id) return cached.key;
    let seed: Buffer | undefined;
    try {
      const text = readFileSync(path);
      // The layout ckpt writes (any PKCS#8 Ed25519 key without attributes); else Node's parser.
      seed = rawAfter(pemBody(text.toString('latin1'), 'PRIVATE KEY'), PKCS8_ED25519);
      if (!seed) {
        const privateKey = createPrivateKey(text);
        if (privateKey.asymmetricKeyType !== 'ed25519')
          throw new CkptError('ERR_CKPT_KEY', `host key ${path} is a ${privateKey.asymmetricKeyType} key, not Ed25519`);
        seed = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
      }
    } catch (e) {
      if (e instanceof CkptError) throw e;
      throw new CkptError('ERR_CKPT_KEY', `host key ${path} cannot be read (${errnoReason(e).split('\n')[0]})`);
    }
    const key = hostKeyOf(seed);
    parsedHostKeys.set(path, { id, key });
    return key;
  }

  /**
   * A new key, written to a temporary file and linked into place: of two first dumps at once,
   * one link wins and both use its key (link fails with EEXIST, never replaces).
   */
  private createHostKey(): void {
    const fail = (e: unknown): never => {
      throw new CkptError('ERR_CKPT_KEY', `cannot create this host's signing key in ${this.dir}: ${errnoReason(e)}`, {
        hint: 'images are signed with it; set CKPT_KEY_DIR to a writable directory of yours',
      });
    };
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      fail(e);
    }
    this.dirPresent();
    const { privateKey } = generateKeyPairSync('ed25519');
    const tmp = join(this.dir, `.${HOST_KEY}.${process.pid}.${randomHex(4)}`);
    try {
      writeSync0600(tmp, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
      try {
        linkSync(tmp, this.hostKeyPath);
        log('created host key %s', this.hostKeyPath);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      fsyncPath(this.dir);
    } catch (e) {
      fail(e);
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /** host.pub, for `ckpt key` and people: replaced (atomically) when missing or not the key's. */
  private writeHostPub(key: HostKey): void {
    const pem = publicKeyPem(key.raw);
    try {
      if (readFileSync(this.hostPubPath, 'utf8') === pem) return;
    } catch {
      /* missing */
    }
    const tmp = join(this.dir, `.${HOST_PUB}.${process.pid}.${randomHex(4)}`);
    try {
      writeFileSync(tmp, pem, { mode: 0o644, flag: 'wx' });
      renameSync(tmp, this.hostPubPath);
    } catch (e) {
      rmSync(tmp, { force: true });
      // Only a convenience copy: signing and trust use host.key itself.
      log('cannot write %s: %s', this.hostPubPath, errnoReason(e));
    }
  }

  /** The keys in trusted/ (files that hold no Ed25519 public key are skipped, and logged). */
  trusted(): TrustedKey[] {
    if (!this.dirPresent()) return [];
    const dir = this.trustedDir;
    const st = lstatOrNone(dir);
    if (!st) return [];
    this.checkDir(dir, st);
    const out: TrustedKey[] = [];
    for (const name of readdirSync(dir).sort()) {
      if (!name.endsWith('.pub') || name.startsWith('.')) continue;
      const path = join(dir, name);
      try {
        const fst = lstatSync(path);
        if (!fst.isFile() || fst.mode & 0o022) throw new Error(fst.isFile() ? 'writable by others' : 'not a regular file');
        const key = parsePublicKey(readFileSync(path), path);
        out.push({ fingerprint: fingerprint(key), path, key });
      } catch (e) {
        log('ignoring trusted key %s: %s', path, (e as Error).message);
      }
    }
    return out;
  }

  /** Adds a key to trusted/ (atomically); `added` is false when it was trusted already or is this host's. */
  trust(key: KeyObject): { fingerprint: string; path: string; added: boolean; host: boolean } {
    const fp = fingerprint(key);
    const host = this.hostKey({ create: false });
    if (host?.fingerprint === fp) return { fingerprint: fp, path: this.hostPubPath, added: false, host: true };
    const known = this.trusted().find((t) => t.fingerprint === fp);
    if (known) return { fingerprint: fp, path: known.path, added: false, host: false };
    const path = join(this.trustedDir, fingerprintFile(fp));
    const tmp = join(this.trustedDir, `.${process.pid}.${randomHex(4)}.tmp`);
    try {
      mkdirSync(this.trustedDir, { recursive: true, mode: 0o700 });
      this.dirPresent();
      this.checkDir(this.trustedDir, lstatSync(this.trustedDir));
      writeSync0600(tmp, key.export({ type: 'spki', format: 'pem' }) as string);
      renameSync(tmp, path);
      fsyncPath(this.trustedDir);
    } catch (e) {
      rmSync(tmp, { force: true });
      if (e instanceof CkptError) throw e;
      throw new CkptError('ERR_CKPT_KEY', `cannot add the key to ${this.trustedDir}: ${errnoReason(e)}`);
    }
    return { fingerprint: fp, path, added: true, host: false };
  }

  /** Removes a trusted key by fingerprint; returns the files removed (none: an error naming what is trusted). */
  untrust(fp: string): string[] {
    const want = normalizeFingerprint(fp);
    const host = this.hostKey({ create: false });
    if (host?.fingerprint === want) {
      throw new CkptError('ERR_CKPT_USAGE', `${want} is this host's own key, always trusted`, { hint: `to replace it, remove ${this.hostKeyPath}` });
    }
    const matches = this.trusted().filter((t) => t.fingerprint === want);
    if (!matches.length) {
      throw new CkptError('ERR_CKPT_USAGE', `no trusted key has fingerprint ${want}`, { hint: 'ckpt trust --list shows the trusted keys' });
    }
    for (const m of matches) unlinkSync(m.path);
    return matches.map((m) => m.path);
  }

  /**
   * Why the key with this fingerprint is trusted here (this host's own, trusted/, or one of
   * `given`, keys trusted for this run only), or undefined when it is not.
   */
  trustOf(fp: string, given: readonly KeyObject[] = []): TrustReason | undefined {
    if (given.some((k) => fingerprint(k) === fp)) return 'given';
    if (this.hostKey({ create: false })?.fingerprint === fp) return 'host';
    if (this.trusted().some((t) => t.fingerprint === fp)) return 'trusted';
    return undefined;
  }
}

function writeSync0600(path: string, text: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeFileSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
