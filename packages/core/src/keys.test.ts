// The key store (host key created once, atomically; trusted keys; fingerprints) and signatures.
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CkptError } from './errors.js';
import { defaultKeyDir, fingerprint, KeyStore, parsePublicKey, parseSignature, publicKeyPem, rawPublicKey, signatureLine, signatureValid } from './keys.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ckpt-keys-unit-'));
  dirs.push(d);
  return d;
}
const pem = (k = generateKeyPairSync('ed25519').publicKey) => k.export({ type: 'spki', format: 'pem' }) as string;

describe('key directory', () => {
  it('CKPT_KEY_DIR, else /etc/ckpt for root, else the XDG config directory', () => {
    expect(defaultKeyDir({ CKPT_KEY_DIR: '/k' }, 0)).toBe('/k');
    expect(defaultKeyDir({}, 0)).toBe('/etc/ckpt');
    expect(defaultKeyDir({ XDG_CONFIG_HOME: '/x' }, 1000)).toBe('/x/ckpt');
    expect(defaultKeyDir({}, 1000, () => '/home/u')).toBe('/home/u/.config/ckpt');
  });
});

describe('fingerprints', () => {
  it('are SHA256: + unpadded base64 of the raw 32-byte key, as ssh-keygen -l shows', () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const raw = rawPublicKey(publicKey);
    expect(raw.length).toBe(32);
    // The SPKI DER of an Ed25519 key ends with the raw key.
    expect(publicKey.export({ type: 'spki', format: 'der' }).subarray(-32)).toEqual(raw);
    const want = `SHA256:${createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')}`;
    expect(fingerprint(publicKey)).toBe(want);
    expect(fingerprint(raw)).toBe(want);
  });
});

describe('host key', () => {
  it('is created on first use: 0600 in a 0700 directory, with host.pub; later uses load the same', () => {
    const dir = join(tempDir(), 'a', 'ckpt');
    const store = new KeyStore(dir);
    expect(store.hostKey({ create: false })).toBeUndefined();
    const k = store.hostKey()!;
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(store.hostKeyPath).mode & 0o777).toBe(0o600);
    expect(readFileSync(store.hostKeyPath, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(parsePublicKey(readFileSync(store.hostPubPath), 'host.pub').equals(k.publicKey)).toBe(true);
    expect(new KeyStore(dir).hostKey()!.fingerprint).toBe(k.fingerprint);
    expect(readdirSync(dir).sort()).toEqual(['host.key', 'host.pub']);
  });

  it('two first uses at once end with one key, used by both', () => {
    const dir = join(tempDir(), 'race');
    // Eight processes create the key at the same moment.
    const script = `
      import { KeyStore } from ${JSON.stringify(join(import.meta.dirname, '..', 'dist', 'index.js'))};
      const at = Number(process.argv[1]);
      while (Date.now() < at) {}
      console.log(new KeyStore(process.argv[2]).hostKey().fingerprint);`;
    const at = Date.now() + 800;
    const runs = Array.from({ length: 8 }, () =>
      import('node:child_process').then(
        ({ execFile }) =>
          new Promise<string>((res, rej) =>
            execFile(process.execPath, ['--input-type=module', '-e', script, String(at), dir], (e, out) => (e ? rej(e) : res(out.trim()))),
          ),
      ),
    );
    return Promise.all(runs).then((fps) => {
      expect(new Set(fps).size).toBe(1);
      expect(fps[0]).toBe(new KeyStore(dir).hostKey()!.fingerprint);
      expect(readdirSync(dir).sort()).toEqual(['host.key', 'host.pub']);
    });
  }, 30_000); // eight node start-ups at once: seconds on a loaded 2-core machine

  it('a host key others can read is refused, naming the fix', () => {
    const store = new KeyStore(join(tempDir(), 'k'));
    store.hostKey();
    chmodSync(store.hostKeyPath, 0o644);
    expect(() => store.hostKey()).toThrow(/accessible to others \(mode 644\)/);
  });

  it('a key directory others can write is refused', () => {
    const dir = join(tempDir(), 'k');
    new KeyStore(dir).hostKey();
    chmodSync(dir, 0o777);
    expect(() => new KeyStore(dir).trustOf('SHA256:x')).toThrow(/writable by others/);
  });
});

describe('host key without node:crypto (the native engine signs, the PEM is read as bytes)', () => {
  it("signs as node:crypto does, and node:crypto verifies it; host.pub is Node's SPKI PEM", () => {
    const store = new KeyStore(tempDir());
    const key = store.hostKey()!;
    const manifest = Buffer.from('{"files":[]}');
    const line = signatureLine(manifest, key);
    const sig = parseSignature(line)!;
    // Ed25519 signatures are deterministic: the same bytes as Node's, and valid for it.
    expect(sig.signature.equals(sign(null, manifest, key.privateKey))).toBe(true);
    expect(verify(null, manifest, key.publicKey, sig.signature)).toBe(true);
    expect(signatureValid(manifest, sig)).toBe(true);
    expect(signatureValid(Buffer.from('{"files":[1]}'), sig)).toBe(false);
    expect(publicKeyPem(key.raw)).toBe(key.publicKey.export({ type: 'spki', format: 'pem' }));
    expect(readFileSync(store.hostPubPath, 'utf8')).toBe(publicKeyPem(key.raw));
    expect(key.fingerprint).toBe(fingerprint(key.publicKey));
  });

  it('a host key in another PKCS#8 layout (CRLF lines; attributes) is read through node:crypto, the same key', () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const plain = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    const d = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
    // PKCS#8 v1 with an empty attribute set [0] {}: 50 bytes, not the 48 ckpt writes.
    const der = Buffer.concat([Buffer.from('3030020100300506032b657004220420', 'hex'), d, Buffer.from('a000', 'hex')]);
    const withAttributes = `-----BEGIN PRIVATE KEY-----\n${der.toString('base64')}\n-----END PRIVATE KEY-----\n`;
    expect(createPrivateKey(withAttributes).asymmetricKeyType, 'the test key is valid PKCS#8').toBe('ed25519');
    for (const text of [plain.replace(/\n/g, '\r\n'), withAttributes]) {
      const dir = tempDir();
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(dir, 'host.key'), text, { mode: 0o600 });
      const key = new KeyStore(dir).hostKey()!;
      expect(key.seed.equals(d)).toBe(true);
      expect(key.fingerprint).toBe(fingerprint(rawPublicKey(privateKey)));
    }
  });
});

describe('trusted keys', () => {
  it('trust, list, trustOf, untrust', () => {
    const store = new KeyStore(join(tempDir(), 'k'));
    const host = store.hostKey()!;
    const other = generateKeyPairSync('ed25519').publicKey;
    const fp = fingerprint(other);
    expect(store.trustOf(fp)).toBeUndefined();
    expect(store.trustOf(host.fingerprint)).toBe('host');
    expect(store.trustOf(fp, [other])).toBe('given');
    const t = store.trust(other);
    expect(t).toMatchObject({ fingerprint: fp, added: true, host: false });
    expect(t.path).not.toMatch(/\/.*\/.*SHA256:.*\//);
    expect(existsSync(t.path)).toBe(true);
    expect(store.trust(other).added).toBe(false);
    expect(store.trust(host.publicKey)).toMatchObject({ added: false, host: true });
    expect(store.trusted().map((k) => k.fingerprint)).toEqual([fp]);
    expect(store.trustOf(fp)).toBe('trusted');
    expect(() => store.untrust(host.fingerprint)).toThrow(/this host's own key/);
    expect(() => store.untrust('SHA256:nope')).toThrow(/no trusted key has fingerprint SHA256:nope/);
    // Without the prefix, too.
    expect(store.untrust(fp.slice('SHA256:'.length))).toEqual([t.path]);
    expect(store.trustOf(fp)).toBeUndefined();
  });

  it('key files: a PEM public key (text around it ignored); anything else is a one-line error', () => {
    const k = generateKeyPairSync('ed25519').publicKey;
    expect(parsePublicKey(`# from host a\n${pem(k)}fingerprint ...\n`, 'f').equals(k)).toBe(true);
    const bad = (text: string) => {
      try {
        parsePublicKey(text, 'key file f');
      } catch (e) {
        expect(e).toBeInstanceOf(CkptError);
        expect((e as CkptError).code).toBe('ERR_CKPT_KEY');
        expect((e as Error).message).not.toMatch(/\n/);
        return (e as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad('hello')).toMatch(/key file f is not a public key file/);
    const priv = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expect(bad(priv)).toMatch(/it is a private key/);
    expect(bad(pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey))).toMatch(/holds a rsa key; ckpt keys are Ed25519/);
    expect(bad('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n')).toMatch(/damaged public key/);
  });

  it('openssl reads the key files (standard PEM)', () => {
    const store = new KeyStore(join(tempDir(), 'k'));
    store.hostKey();
    let out: string;
    try {
      out = execFileSync('openssl', ['pkey', '-pubin', '-in', store.hostPubPath, '-noout', '-text'], { encoding: 'utf8' });
    } catch {
      return; // no openssl command here
    }
    expect(out).toMatch(/ED25519 Public-Key/);
  });
});

describe('signatures', () => {
  it('cover the exact bytes; the line is strictly parsed', () => {
    const store = new KeyStore(join(tempDir(), 'k'));
    const key = store.hostKey()!;
    const data = Buffer.from('{"a": 1}');
    const line = signatureLine(data, key);
    expect(line).toMatch(/^ckpt-signature-v1 ed25519 \S{44} \S{88}\n$/);
    const sig = parseSignature(line)!;
    expect(sig.fingerprint).toBe(key.fingerprint);
    expect(signatureValid(data, sig)).toBe(true);
    expect(signatureValid(Buffer.from('{"a": 2}'), sig)).toBe(false);
    expect(signatureValid(Buffer.from('{"a": 1} '), sig)).toBe(false);
    expect(parseSignature(line.replace('v1', 'v2'))).toBeUndefined();
    expect(parseSignature(`${line}x`)).toBeUndefined();
    expect(parseSignature('')).toBeUndefined();
  });
});
