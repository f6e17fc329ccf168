// Network locks outlive no owner: a dump killed after it blocked a live TCP connection leaves an
// nftables block owned by a dead ckpt; `ckpt check` reports it, `ckpt check --repair` (or any
// later dump or restore) removes it, and the connection carries on. A block handed to an image
// (a dump that killed its process) stays while the image exists.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ckpt, expectOk, expectRunningFree, makeTempDir, portBlocked, track, useCleanup, waitNotAlive } from './helpers.js';

useCleanup();

/** A server in this test, and a python3 client (outside any namespace) that echoes every line back. */
async function echoPair() {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const code = [
    'import os, socket',
    'os.closerange(3, 4096)',
    `s = socket.create_connection(("127.0.0.1", ${port}))`,
    'f = s.makefile("rwb", buffering=0)',
    'for line in f: f.write(b"echo " + line)',
  ].join('\n');
  const child = spawn('python3', ['-c', code], { stdio: 'ignore' });
  track(child.pid!, 'socket.create_connection');
  const conn = await accepted;
  let got = '';
  conn.setEncoding('utf8').on('data', (d: string) => (got += d));
  const roundTrip = async (msg: string, timeoutMs: number) => {
    conn.write(`${msg}\n`);
    const end = Date.now() + timeoutMs;
    while (!got.includes(`echo ${msg}`) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    return got.includes(`echo ${msg}`);
  };
  expect(await roundTrip('hello', 5000), 'the pair talks').toBe(true);
  return {
    server,
    port,
    child,
    conn,
    roundTrip,
    close: () => {
      conn.destroy();
      server.close();
    },
  };
}

describe('network locks', () => {
  it('a lock left by a killed dump is reported by check, removed by check --repair, and the connection carries on', async () => {
    const dir = makeTempDir('netlock');
    const p = await echoPair();
    try {
      // Killed right after the fd table was read: the connection is blocked, its ckpt is gone.
      const killed = await ckpt(['dump', '-t', String(p.child.pid), '-D', path.join(dir, 'img')], { env: { CKPT_FAULT: 'dump:stage:pids:kill' } });
      expect(killed.signal).toBe('SIGKILL');
      expectRunningFree(p.child.pid!, 'the client after its ckpt was killed');
      expect(portBlocked(p.port), 'the connection is blocked').toBe(true);
      expect(await p.roundTrip('blocked', 800), 'nothing gets through the block').toBe(false);
      const check = await ckpt(['check', '--json']);
      const report = JSON.parse(check.stdout) as { staleLocks: Array<{ owner: string; connections: number }> };
      expect(report.staleLocks).toEqual([expect.objectContaining({ owner: expect.stringMatching(/^ckpt pid \d+$/), connections: 1 })]);
      expect(portBlocked(p.port), 'check alone removes nothing').toBe(true);
      const repair = await ckpt(['check', '--repair']);
      expect(repair.stdout).toMatch(/fixed .*network lock of ckpt pid \d+ \(gone\) blocks 1 TCP connection/);
      expect(portBlocked(p.port), 'the block is gone').toBe(false);
      expect(await p.roundTrip('after', 15_000), 'the connection works again (retransmitted)').toBe(true);
    } finally {
      p.close();
      p.child.kill('SIGKILL');
    }
  });

  it('a block handed to an image stays while the image exists, and goes with it', async () => {
    const dir = makeTempDir('netlock-img');
    const p = await echoPair();
    const img = path.join(dir, 'img');
    try {
      expectOk(await ckpt(['dump', '-t', String(p.child.pid), '-D', img]));
      await waitNotAlive(p.child.pid!);
      expect(portBlocked(p.port), 'blocked until the restore').toBe(true);
      let report = JSON.parse((await ckpt(['check', '--json'])).stdout) as { staleLocks: unknown[] };
      expect(report.staleLocks, 'the image holds it').toEqual([]);
      fs.rmSync(img, { recursive: true, force: true });
      report = JSON.parse((await ckpt(['check', '--json', '--repair'])).stdout) as { staleLocks: unknown[] };
      expect(report.staleLocks).toHaveLength(1);
      expect(portBlocked(p.port), 'gone with its image').toBe(false);
    } finally {
      p.close();
    }
  });
});
