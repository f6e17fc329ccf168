/**
 * ckpt page-server and dump --page-server, on loopback: the image goes to the server's directory
 * and nowhere on the dumping side, checked and committed there; a server that does not trust the
 * dumping host's key refuses it before anything is frozen; a dump killed while streaming pages
 * leaves the process running and nothing on the server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, KEY_DIR, ckpt, describeResult, expectOk, isAlive, makeTempDir, procStatusField, track, useCleanup, waitFor, waitNotAlive } from './helpers.js';
import { startMigrant, verify } from './migrant.js';

useCleanup();

const servers: ChildProcess[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.kill('SIGKILL');
});

/** A page server on a free loopback port, with the keys of `keyDir` (default: the test run's, which the dumps sign with). */
async function startServer(dir: string, keyDir = KEY_DIR): Promise<{ port: number; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'page-server', '--listen', '127.0.0.1:0', '-D', dir, '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CKPT_KEY_DIR: keyDir },
  });
  servers.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const port = await waitFor(
    () => {
      const m = /"port":(\d+)/.exec(out);
      return m ? Number(m[1]) : undefined;
    },
    15_000,
    () => `the page server did not start: ${err}`,
  );
  return { port, log: () => err };
}

describe('page server', () => {
  it("dump --page-server: the image is made a generation of the server's directory, nothing is written here, and it restores from there", async () => {
    const srv = makeTempDir('pagesrv');
    const s = await startServer(srv);
    const m = await startMigrant(48, 0);
    await verify(m.pid, m.report);
    const cwd = makeTempDir('pagesrv-cwd');
    const r = await ckpt(['dump', '--app', m.app, '--page-server', `127.0.0.1:${s.port}`, '--json'], { cwd });
    expectOk(r);
    const j = JSON.parse(r.stdout) as { generation: number; path: string; imageBytes: number };
    expect(j.generation).toBe(1);
    expect(j.imageBytes).toBeGreaterThan(48 << 20);
    await waitNotAlive(m.pid);
    expect(fs.existsSync(path.join(srv, '1', 'manifest.json')), s.log()).toBe(true);
    expect(fs.readdirSync(cwd), 'nothing written where the dump ran').toEqual([]);
    const back = await ckpt(['restore', '-D', srv, '--detach', '--json']);
    expectOk(back);
    const k = JSON.parse(back.stdout) as { main: number; pids: number[] };
    for (const p of k.pids) track(p, 'migrant');
    await verify(k.main, m.report);
    // And a second image, compressed (its pages pass through the scratch memfd), the next generation; every digest checks.
    const again = await ckpt(['dump', '--app', JSON.parse(back.stdout).app, '--page-server', `127.0.0.1:${s.port}`, '--leave-running', '--compress', '--json']);
    expectOk(again);
    expect(JSON.parse(again.stdout).generation).toBe(2);
    await verify(k.main, m.report);
    const shown = await ckpt(['show', srv, '--verify']);
    expectOk(shown);
    expect(shown.stdout).toMatch(/every file matches its digest/);
    expect(fs.readdirSync(path.join(srv, '2')).some((n) => n.endsWith('.img.zst'))).toBe(true);
  }, 90_000);

  it('a page server that does not trust the dumping host refuses it before anything is frozen', async () => {
    const srv = makeTempDir('pagesrv');
    const otherKeys = makeTempDir('pagesrv-keys');
    fs.chmodSync(otherKeys, 0o700);
    const s = await startServer(srv, otherKeys);
    const m = await startMigrant(8, 0);
    const r = await ckpt(['dump', '--app', m.app, '--page-server', `127.0.0.1:${s.port}`]);
    expect(r.code, describeResult(r)).toBe(1);
    expect(r.stderr).toMatch(/^ckpt: error: .*page server 127\.0\.0\.1:\d+ refused .*does not trust the key/m);
    expect(r.stderr).toMatch(/ckpt: hint: .*ckpt trust/);
    expect(isAlive(m.pid)).toBe(true);
    expect(procStatusField(m.pid, 'TracerPid')).toBe('0');
    await verify(m.pid, m.report);
    expect(fs.readdirSync(srv).filter((n) => !n.startsWith('.lock'))).toEqual([]);
  }, 60_000);

  it('a dump killed while it streams pages: the process runs on, the server keeps nothing of it', async () => {
    const srv = makeTempDir('pagesrv');
    const s = await startServer(srv);
    const m = await startMigrant(160, 10);
    const r = await ckpt(['dump', '--app', m.app, '--page-server', `127.0.0.1:${s.port}`], { env: { CKPT_FAULT: 'dump:pages:kill@2' } });
    expect(r.signal, describeResult(r)).toBe('SIGKILL');
    await waitFor(
      () => procStatusField(m.pid, 'TracerPid') === '0',
      10_000,
      () => 'the process stayed traced',
    );
    await verify(m.pid, m.report);
    await waitFor(
      () => fs.readdirSync(srv).length === 0,
      10_000,
      () => `the server kept ${fs.readdirSync(srv).join(', ')}\n${s.log()}`,
    );
  }, 60_000);
});
