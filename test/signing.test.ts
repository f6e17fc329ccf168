// Authenticated images: a dump signs its manifest (which lists every file's BLAKE3) with the
// host key; a restore refuses an image that is unsigned, was modified after signing (records,
// pages), or was signed by a key this host does not trust, before creating any process; trust is
// given for one restore (--trust-key) or for good (ckpt trust). Another "host" is another
// CKPT_KEY_DIR. The digests are checked against b3sum's (Debian's b3sum, another implementation);
// an image of format 3 (SHA-256 digests) still restores.
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  allPids,
  bin,
  ckpt,
  CLI,
  describeResult,
  expectCleanError,
  expectOk,
  isAlive,
  KEY_DIR,
  lastTick,
  makeTempDir,
  newSuspects,
  REPO_ROOT,
  runFixture,
  sleep,
  track,
  useCleanup,
  waitForTick,
  waitPidFree,
} from './helpers.js';

useCleanup();

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
/** BLAKE3 as the reference tool computes it. */
const b3sum = (b: Buffer | string) => execFileSync('b3sum', ['--no-names'], { input: b }).toString().trim();
const FP_RE = /SHA256:[A-Za-z0-9+/]{43}/;

/** Starts the workload (small heap), dumps it (killing it) into dir/img, waits until its pid is free. */
async function dumpedWorkload(tag: string, env?: Record<string, string>) {
  const dir = makeTempDir(tag);
  const outdir = path.join(dir, 'out');
  fs.mkdirSync(outdir);
  const img = path.join(dir, 'img');
  const started = await runFixture(dir, [bin('workload'), '8', outdir], { name: 'workload' });
  await waitForTick(started.stdout, 3);
  const d = await ckpt(['dump', '-t', String(started.pid), '-D', img, '--json'], { env });
  expectOk(d);
  await waitPidFree(started.pid);
  return { dir, img, gen: path.join(img, '1'), dump: JSON.parse(d.stdout) as { signedBy: string }, ...started };
}

/** A copy of the image's generation, changed by mutate; returns its path. */
function tamperedCopy(gen: string, into: string, mutate: (copy: string) => void): string {
  fs.cpSync(gen, into, { recursive: true });
  mutate(into);
  return into;
}

/** Restore of `img` fails with a clean one-line error matching `mentions`, and creates no process. */
async function expectRefused(img: string, imagePid: number, mentions: RegExp[], extra: string[] = [], env?: Record<string, string>) {
  const before = new Set(allPids());
  const r = await ckpt(['restore', '-D', img, '--detach', ...extra], { env });
  track(imagePid, bin('workload')); // in case it wrongly succeeded
  expectCleanError(r, ...mentions);
  expect(r.stderr.split('\n').filter((l) => l.startsWith('ckpt: error:')).length, describeResult(r)).toBe(1);
  for (const delay of [0, 500]) {
    await sleep(delay);
    expect(isAlive(imagePid), `pid ${imagePid} runs after a refused restore`).toBe(false);
    // Processes of this checkout only (another checkout's tests may run on the machine too).
    const left = newSuspects(before, [bin('workload')], [CLI, 'ckpt-stub']).filter((p) => p.cmd.includes(REPO_ROOT));
    expect(left, 'processes left behind by a refused restore').toEqual([]);
  }
  return r;
}

/** Restores (detached), checks the pid comes back and ticks on, then kills it and waits until its pid is free. */
async function restoreAndKill(img: string, w: { pid: number; stdout: string }, extra: string[] = [], env?: Record<string, string>) {
  const last = lastTick(w.stdout);
  const r = await ckpt(['restore', '-D', img, '--detach', '--json', ...extra], { env });
  track(w.pid, bin('workload'));
  expectOk(r);
  const j = JSON.parse(r.stdout) as { pids: number[]; signedBy: { fingerprint: string; trust: string } };
  expect(j.pids[0]).toBe(w.pid);
  await waitForTick(w.stdout, last + 2);
  process.kill(w.pid, 'SIGKILL');
  await waitPidFree(w.pid);
  return j;
}

describe('signed images', () => {
  it('a dump signs the image with the host key; restore verifies it; show names the signer', async () => {
    const w = await dumpedWorkload('sign');
    const sig = fs.readFileSync(path.join(w.gen, 'manifest.sig'), 'utf8');
    expect(sig).toMatch(/^ckpt-signature-v1 ed25519 [A-Za-z0-9+/]{43}= [A-Za-z0-9+/]{86}==\n$/);
    expect(fs.statSync(path.join(w.gen, 'manifest.sig')).mode & 0o777).toBe(0o600);
    // Every file is listed with its BLAKE3 (b3sum's), the manifest's own digest aside.
    const manifest = JSON.parse(fs.readFileSync(path.join(w.gen, 'manifest.json'), 'utf8')) as {
      version: number;
      files: Record<string, { size: number; blake3: string }>;
    };
    expect(manifest.version).toBe(4);
    const onDisk = fs.readdirSync(w.gen).filter((n) => n !== 'manifest.json' && n !== 'manifest.sig');
    expect(Object.keys(manifest.files).sort()).toEqual(onDisk.sort());
    for (const [name, e] of Object.entries(manifest.files)) expect(b3sum(fs.readFileSync(path.join(w.gen, name))), name).toBe(e.blake3);

    const key = await ckpt(['key', '--json']);
    expectOk(key);
    const host = JSON.parse(key.stdout) as { fingerprint: string };
    expect(w.dump.signedBy).toBe(host.fingerprint);

    const show = await ckpt(['show', w.img, '--verify']);
    expectOk(show);
    expect(show.stdout).toContain(`signed by ${host.fingerprint} (ed25519, this host's key)`);
    expect(show.stdout).toMatch(/signature valid; every file matches its digest/);
    const sj = await ckpt(['show', w.img, '--json']);
    expectOk(sj);
    expect(JSON.parse(sj.stdout).signature).toMatchObject({ algorithm: 'ed25519', fingerprint: host.fingerprint, trust: 'host', trusted: true });

    const r = await restoreAndKill(w.img, w);
    expect(r.signedBy).toEqual({ fingerprint: host.fingerprint, trust: 'host' });
  });

  it('changes after signing are refused before any process is created: a record (sums redone), a page, the signature', async () => {
    const w = await dumpedWorkload('tamper');
    const proc = `proc-${w.pid}.json`;

    // A record edited, its digest and the manifest's checksum recomputed: only the signature tells.
    const edited = tamperedCopy(w.gen, path.join(w.dir, 'edited'), (copy) => {
      const rec = JSON.parse(fs.readFileSync(path.join(copy, proc), 'utf8'));
      rec.comm = 'evil';
      const text = JSON.stringify(rec, null, 1);
      fs.writeFileSync(path.join(copy, proc), text);
      const mpath = path.join(copy, 'manifest.json');
      const { checksum: _old, ...body } = JSON.parse(fs.readFileSync(mpath, 'utf8'));
      body.files[proc] = { size: Buffer.byteLength(text), blake3: b3sum(text) };
      fs.writeFileSync(mpath, JSON.stringify({ ...body, checksum: sha256(JSON.stringify(body)) }, null, 1));
    });
    await expectRefused(edited, w.pid, [/manifest\.json was modified after it was signed/, FP_RE]);
    const show = await ckpt(['show', edited]);
    expectCleanError(show, /modified after it was signed/);

    // One byte of the pages changed (sizes unchanged): its BLAKE3 no longer matches the signed manifest.
    const pages = `pages-${w.pid}.img`;
    const flipped = tamperedCopy(w.gen, path.join(w.dir, 'flipped'), (copy) => {
      const fd = fs.openSync(path.join(copy, pages), 'r+');
      const size = fs.fstatSync(fd).size;
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, Math.floor(size / 2));
      b[0] ^= 0x40;
      fs.writeSync(fd, b, 0, 1, Math.floor(size / 2));
      fs.closeSync(fd);
    });
    await expectRefused(flipped, w.pid, [new RegExp(`${pages} does not match its BLAKE3 digest in the signed manifest`)]);
    const verify = await ckpt(['show', flipped, '--verify']);
    expectCleanError(verify, new RegExp(`${pages} does not match its BLAKE3 digest`));

    // The signature removed.
    const unsigned = tamperedCopy(w.gen, path.join(w.dir, 'unsigned'), (copy) => fs.rmSync(path.join(copy, 'manifest.sig')));
    await expectRefused(unsigned, w.pid, [/is not signed \(no manifest\.sig\)/]);
    // An image of format 2 (before signatures) is refused for its version, as before.
    const v2 = tamperedCopy(w.gen, path.join(w.dir, 'v2'), (copy) => {
      fs.rmSync(path.join(copy, 'manifest.sig'));
      const mpath = path.join(copy, 'manifest.json');
      const { checksum: _old, ...body } = JSON.parse(fs.readFileSync(mpath, 'utf8'));
      body.version = 2;
      fs.writeFileSync(mpath, JSON.stringify({ ...body, checksum: sha256(JSON.stringify(body)) }, null, 1));
    });
    const old = await expectRefused(v2, w.pid, [/format version 2, this ckpt reads versions 3-4/]);
    expect(old.stderr).toMatch(/^ckpt: hint: restore it with the ckpt that wrote it/m);

    // Another key's signature of the same manifest: not the signature of the image's key (a fixed
    // format line whose signature bytes are changed).
    const badsig = tamperedCopy(w.gen, path.join(w.dir, 'badsig'), (copy) => {
      const p = path.join(copy, 'manifest.sig');
      const [tag, alg, key, sig] = fs.readFileSync(p, 'utf8').trim().split(' ');
      const s = Buffer.from(sig, 'base64');
      s[10] ^= 1;
      fs.writeFileSync(p, `${tag} ${alg} ${key} ${s.toString('base64')}\n`);
    });
    await expectRefused(badsig, w.pid, [/modified after it was signed/]);
    const garbage = tamperedCopy(w.gen, path.join(w.dir, 'garbage'), (copy) => fs.writeFileSync(path.join(copy, 'manifest.sig'), 'hello\n'));
    await expectRefused(garbage, w.pid, [/manifest\.sig is not a ckpt signature/]);

    // The pristine image still restores.
    await restoreAndKill(w.img, w);
  });

  it('an image of format 3 (SHA-256 digests, signed) still restores, and its digests are checked', async () => {
    const env = { CKPT_KEY_DIR: path.join(makeTempDir('v3keys'), 'keys') };
    const w = await dumpedWorkload('v3', env);
    // The image as the previous ckpt wrote it: version 3, SHA-256 digests, signed by the same key.
    const asV3 = (into: string, mutate: (copy: string) => void = () => {}) =>
      tamperedCopy(w.gen, path.join(w.dir, into), (copy) => {
        mutate(copy);
        const mpath = path.join(copy, 'manifest.json');
        const { checksum: _old, ...body } = JSON.parse(fs.readFileSync(mpath, 'utf8'));
        body.version = 3;
        for (const name of Object.keys(body.files)) {
          const data = fs.readFileSync(path.join(w.gen, name));
          body.files[name] = { size: data.length, sha256: sha256(data) };
        }
        const text = JSON.stringify({ ...body, checksum: sha256(JSON.stringify(body)) }, null, 1);
        fs.writeFileSync(mpath, text);
        const key = createPrivateKey(fs.readFileSync(path.join(env.CKPT_KEY_DIR, 'host.key')));
        const raw = Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x!, 'base64url');
        const sig = sign(null, Buffer.from(text), key);
        fs.writeFileSync(path.join(copy, 'manifest.sig'), `ckpt-signature-v1 ed25519 ${raw.toString('base64')} ${sig.toString('base64')}\n`);
      });
    const pages = `pages-${w.pid}.img`;
    // Its pages changed after signing: refused by their SHA-256.
    const flipped = asV3('v3flipped', (copy) => {
      const fd = fs.openSync(path.join(copy, pages), 'r+');
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, 4096);
      b[0] ^= 0x40;
      fs.writeSync(fd, b, 0, 1, 4096);
      fs.closeSync(fd);
    });
    await expectRefused(flipped, w.pid, [new RegExp(`${pages} does not match its SHA-256 digest in the signed manifest`)], [], env);
    const v3 = asV3('v3');
    const verify = await ckpt(['show', v3, '--verify'], { env });
    expectOk(verify);
    expect(verify.stdout).toMatch(/sha256 [0-9a-f]{16}/);
    await restoreAndKill(v3, w, [], env);
  });

  it('an image of another host is refused as untrusted, accepted with --trust-key, then after ckpt trust', async () => {
    const keys = makeTempDir('hosts');
    const src = { CKPT_KEY_DIR: path.join(keys, 'src') };
    const dst = { CKPT_KEY_DIR: path.join(keys, 'dst') };
    const w = await dumpedWorkload('otherhost', src);
    const srcKey = await ckpt(['key'], { env: src });
    expectOk(srcKey);
    const fp = srcKey.stderr.match(FP_RE)?.[0];
    expect(fp, describeResult(srcKey)).toBe(w.dump.signedBy);
    const pub = path.join(w.dir, 'src.pub');
    fs.writeFileSync(pub, srcKey.stdout);

    // The destination's own key exists (first use) and is not the source's.
    const dstKey = await ckpt(['key'], { env: dst });
    expectOk(dstKey);
    expect(dstKey.stderr.match(FP_RE)?.[0]).not.toBe(fp);

    const refused = await expectRefused(w.img, w.pid, [new RegExp(`signed by key ${fp!.replace(/[+/]/g, '\\$&')}, which this host does not trust`)], [], dst);
    expect(refused.stderr).toMatch(/^ckpt: hint: .*ckpt trust KEYFILE.*--trust-key KEYFILE/m);
    const json = await ckpt(['restore', '-D', w.img, '--detach', '--json'], { env: dst });
    expectCleanError(json);
    expect(JSON.parse(json.stdout).error.code).toBe('ERR_CKPT_IMAGE_UNTRUSTED');

    // show works on it, and says the key is not trusted here.
    const show = await ckpt(['show', w.img], { env: dst });
    expectOk(show);
    expect(show.stdout).toContain(`signed by ${fp} (ed25519, NOT trusted here`);
    const sj = await ckpt(['show', w.img, '--json'], { env: dst });
    expect(JSON.parse(sj.stdout).signature).toMatchObject({ fingerprint: fp, trust: null, trusted: false });

    // Trusted for one restore (a bad key file first: one line).
    const bad = path.join(w.dir, 'bad.pub');
    fs.writeFileSync(bad, 'not a key\n');
    await expectRefused(w.img, w.pid, [/key file .*bad\.pub is not a public key file/], ['--trust-key', bad], dst);
    const once = await restoreAndKill(w.img, w, ['--trust-key', pub], dst);
    expect(once.signedBy).toEqual({ fingerprint: fp, trust: 'given' });
    expect(fs.existsSync(path.join(dst.CKPT_KEY_DIR, 'trusted')), '--trust-key trusted the key for good').toBe(false);
    await expectRefused(w.img, w.pid, [/does not trust/], [], dst);

    // Trusted for good.
    const t = await ckpt(['trust', pub], { env: dst });
    expectOk(t);
    expect(t.stdout).toContain(`trusted: ${fp}`);
    const list = await ckpt(['trust', '--list', '--json'], { env: dst });
    expectOk(list);
    expect((JSON.parse(list.stdout) as Array<{ fingerprint: string; host: boolean }>).map((k) => [k.fingerprint, k.host])).toEqual([
      [dstKey.stderr.match(FP_RE)?.[0], true],
      [fp, false],
    ]);
    const ok = await restoreAndKill(w.img, w, [], dst);
    expect(ok.signedBy).toEqual({ fingerprint: fp, trust: 'trusted' });

    // And no longer.
    const rm = await ckpt(['trust', '--remove', fp!], { env: dst });
    expectOk(rm);
    await expectRefused(w.img, w.pid, [/does not trust/], [], dst);
  });
});

describe('ckpt key and ckpt trust', () => {
  it('key prints the same public key each time; trust validates key files with one-line errors', async () => {
    const env = { CKPT_KEY_DIR: path.join(makeTempDir('keycmd'), 'keys') };
    const a = await ckpt(['key'], { env });
    const b = await ckpt(['key'], { env });
    expectOk(a);
    expect(a.stdout).toMatch(/^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/);
    expect(b.stdout).toBe(a.stdout);
    expect(a.stderr).toMatch(FP_RE);
    expect(fs.statSync(path.join(env.CKPT_KEY_DIR, 'host.key')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(env.CKPT_KEY_DIR).mode & 0o777).toBe(0o700);

    // Its own key: nothing to add.
    const own = path.join(path.dirname(env.CKPT_KEY_DIR), 'own.pub');
    fs.writeFileSync(own, a.stdout);
    const t = await ckpt(['trust', own], { env });
    expectOk(t);
    expect(t.stdout).toMatch(/is this host's own key/);

    const dir = path.dirname(env.CKPT_KEY_DIR);
    const cases: Array<[string, string | null, RegExp]> = [
      ['missing.pub', null, /cannot read key file .*missing\.pub: no such file/],
      ['text.pub', 'hello\n', /is not a public key file/],
      ['priv.pem', fs.readFileSync(path.join(env.CKPT_KEY_DIR, 'host.key'), 'utf8'), /it is a private key/],
      ['rsa.pub', null, /holds a rsa key; ckpt keys are Ed25519/],
    ];
    const { generateKeyPairSync } = await import('node:crypto');
    for (const [name, text, re] of cases) {
      const p = path.join(dir, name);
      if (name === 'rsa.pub') fs.writeFileSync(p, generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }));
      else if (text !== null) fs.writeFileSync(p, text);
      const r = await ckpt(['trust', p], { env });
      expectCleanError(r, re);
      expect(r.stderr.split('\n').filter((l) => l.startsWith('ckpt: error:')).length).toBe(1);
    }
    expectCleanError(await ckpt(['trust'], { env }), /give one of: a KEYFILE to trust, --list, or --remove FINGERPRINT/);
    expectCleanError(await ckpt(['trust', '--remove', 'SHA256:nothing'], { env }), /no trusted key has fingerprint SHA256:nothing/);
    // Nothing was added by the failures.
    expect(fs.existsSync(path.join(env.CKPT_KEY_DIR, 'trusted'))).toBe(false);
  });

  it('the tests never touch the machine key directory', () => {
    expect(process.env.CKPT_KEY_DIR).toBe(KEY_DIR);
    expect(KEY_DIR.startsWith('/etc')).toBe(false);
  });
});
