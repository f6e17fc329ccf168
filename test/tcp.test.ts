// TCP and UDP sockets (@ckpt/plugin-tcp): established connections repaired with TCP_REPAIR
// (both ends in the tree, or one end outside it), listeners, data in flight both ways, IPv4 and
// IPv6, dump --leave-running, a failed dump, restore --tcp-close, UDP queues, and redis-server
// with a client that keeps its connection across dump, kill and restore.
// Loopback only. Needs nftables (nft) and redis-server: .ci/run installs them.
import { execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  checksAfterRestore,
  ckpt,
  describeResult,
  dumpOk,
  expectCleanError,
  expectOk,
  expectRunningFree,
  isAlive,
  killAndWaitGone,
  makeTempDir,
  processesMatching,
  readLines,
  restoreOk,
  runFixture,
  sleep,
  tail,
  track,
  useCleanup,
  waitFor,
  waitForLine,
} from './helpers.js';

useCleanup();

const TCPPEER = path.join(BUILD_DIR, 'tcppeer');
const TCPUDP = path.join(BUILD_DIR, 'tcpudp');
const LOOP = { 4: '127.0.0.1', 6: '::1' } as const;

function which(cmd: string): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

beforeAll(() => {
  // Not skipped: a machine without them fails here, saying what is missing.
  expect(
    which('nft'),
    'nft (nftables) is not installed: TCP connections are blocked with it during a checkpoint (apt-get install nftables; .ci/run does)',
  ).not.toBe('');
});

/** The elements of ckpt's nftables sets ('' when there is no table). */
function blocked(): string {
  try {
    return execFileSync('nft', ['list', 'table', 'inet', 'ckpt'], { encoding: 'utf8' });
  } catch {
    return '';
  }
}
const blocks = (port: number) => new RegExp(`\\. ${port}\\b|\\b${port} \\.`).test(blocked());

/** Lines "NAME info-WHEN state=.. opts=.. wscale=../.. nodelay=.." of a tcppeer output. */
function infoOf(file: string, name: string, when: string): string {
  const l = readLines(file).find((x) => x.startsWith(`${name} info-${when} `));
  return (l ?? '').replace(/^\S+ \S+ state=\d+ /, '');
}

/** Starts tcppeer as a client outside any checkpoint (a child of the test). */
function outsideClient(dir: string, fam: 4 | 6, port: number, send: number, expectBytes: number, go: string, env: Record<string, string> = {}) {
  const out = path.join(dir, 'client.out');
  const fd = fs.openSync(out, 'w');
  const child = spawn(TCPPEER, ['client', String(fam), String(port), String(send), String(expectBytes), go], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...env },
  });
  fs.closeSync(fd);
  track(child.pid!, TCPPEER);
  let exit: number | null | undefined;
  child.on('exit', (code, sig) => (exit = code ?? (sig ? 128 : -1)));
  return { out, pid: child.pid!, exitCode: () => exit };
}

async function startServer(dir: string, fam: 4 | 6, send: number, expectBytes: number, opts: { mode?: 'server' | 'pair' } = {}) {
  const go = path.join(dir, 'go');
  const r = await runFixture(dir, [TCPPEER, opts.mode ?? 'server', String(fam), '0', String(send), String(expectBytes), go], { name: 'server' });
  const port = Number((await waitForLine(r.stdout, /^listening (\d+)$/)).match[1]);
  return { ...r, port, go };
}

describe('TCP: established connections and listeners', () => {
  for (const fam of [4, 6] as const) {
    it(`server and client both in the dumped tree, data in flight both ways (IPv${fam})`, async () => {
      const dir = makeTempDir(`tcp-pair${fam}`);
      const img = path.join(dir, 'img');
      const s = await startServer(dir, fam, 4_000_000, 3_000_000, { mode: 'pair' });
      await waitForLine(s.stdout, /^server ready$/);
      await waitForLine(s.stdout, /^client ready$/);
      await dumpOk(s.pid, img);
      expect(blocks(s.port), `the connection is blocked between dump and restore\n${blocked()}`).toBe(true);

      const show = await ckpt(['show', img]);
      expectOk(show);
      const conns = show.stdout.split('\n').filter((l) => /inet6? +tcp +ESTABLISHED/.test(l));
      expect(conns.length, show.stdout).toBe(2);
      for (const c of conns) {
        const [recvQ, sendQ] = c.trim().split(/\s+/).slice(4, 6).map(Number);
        expect(recvQ > 0 && sendQ > 0, `data queued both ways: ${c}`).toBe(true);
      }
      expect(show.stdout).toMatch(new RegExp(`tcp +LISTEN \\(backlog 7\\).*${fam === 6 ? '\\[::1\\]' : '127\\.0\\.0\\.1'}:${s.port}`));

      await restoreOk(img, s.pid, TCPPEER);
      expect(blocks(s.port), `the block is removed once restored\n${blocked()}`).toBe(false);
      fs.writeFileSync(s.go, '');
      await waitForLine(s.stdout, /^client verified 4000000$/, 30_000);
      await waitForLine(s.stdout, /^server verified 3000000$/, 30_000);
      await waitForLine(s.stdout, /^listener ok$/, 30_000);
      await waitForLine(s.stdout, /^client exited 0$/, 30_000);
      expect(
        readLines(s.stdout).filter((l) => /error|MISMATCH|eof|stalled/.test(l)),
        tail(s.stdout),
      ).toEqual([]);
      for (const who of ['server', 'client']) {
        expect(infoOf(s.stdout, who, 'after'), `${who}: TCP options after restore\n${tail(s.stdout)}`).toBe(infoOf(s.stdout, who, 'before'));
      }
    });

    it(`a server alone: its client outside the tree keeps its connection (IPv${fam})`, async () => {
      const dir = makeTempDir(`tcp-out${fam}`);
      const img = path.join(dir, 'img');
      const s = await startServer(dir, fam, 3_000_000, 2_000_000);
      const c = outsideClient(dir, fam, s.port, 2_000_000, 3_000_000, s.go);
      await waitForLine(s.stdout, /^server ready$/);
      await waitForLine(c.out, /^client ready$/);
      await dumpOk(s.pid, img);
      expect(blocks(s.port)).toBe(true);
      await sleep(1500); // the client retransmits into the block meanwhile: no reset may come back
      expect(isAlive(c.pid), 'the outside client is still there').toBe(true);
      await restoreOk(img, s.pid, TCPPEER);
      expect(blocks(s.port)).toBe(false);
      fs.writeFileSync(s.go, '');
      await waitForLine(c.out, /^client verified 3000000$/, 40_000);
      await waitForLine(s.stdout, /^server verified 2000000$/, 40_000);
      await waitForLine(c.out, /^client done$/, 30_000);
      await waitForLine(s.stdout, /^listener ok$/, 30_000);
      await waitFor(
        () => c.exitCode() !== undefined,
        10_000,
        () => 'client did not exit',
      );
      expect(c.exitCode(), tail(c.out)).toBe(0);
      expect(infoOf(s.stdout, 'server', 'after')).toBe(infoOf(s.stdout, 'server', 'before'));
    });
  }

  it('a server in CLOSE_WAIT: its client outside the tree shut down writing, and reads every byte the restored server sends, then EOF', async () => {
    const dir = makeTempDir('tcp-closewait');
    const img = path.join(dir, 'img');
    const s = await startServer(dir, 4, 3_000_000, 1000);
    const c = outsideClient(dir, 4, s.port, 1000, 3_000_000, s.go, { TCPPEER_HALFCLOSE: '1' });
    await waitForLine(s.stdout, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    await dumpOk(s.pid, img);
    await sleep(500);
    await restoreOk(img, s.pid, TCPPEER);
    fs.writeFileSync(s.go, '');
    await waitForLine(s.stdout, /^server verified 1000$/, 40_000);
    await waitForLine(c.out, /^client verified 3000000$/, 40_000);
    await waitForLine(c.out, /^client done$/, 30_000);
    await waitForLine(s.stdout, /^server done$/, 30_000);
    // CLOSE_WAIT (8) before the dump and after the restore.
    expect(
      readLines(s.stdout)
        .filter((l) => /^server info-(before|after) /.test(l))
        .map((l) => l.split(' ')[2]),
    ).toEqual(['state=8', 'state=8']);
  });

  it('dump --leave-running blocks the connection only while it is read', async () => {
    const dir = makeTempDir('tcp-leave');
    const s = await startServer(dir, 4, 1_000_000, 1_000_000);
    const c = outsideClient(dir, 4, s.port, 1_000_000, 1_000_000, s.go);
    await waitForLine(s.stdout, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    await dumpOk(s.pid, path.join(dir, 'img'), ['--leave-running']);
    expect(blocks(s.port), blocked()).toBe(false);
    expectRunningFree(s.pid, 'server after dump --leave-running');
    fs.writeFileSync(s.go, '');
    await waitForLine(c.out, /^client verified 1000000$/, 30_000);
    await waitForLine(s.stdout, /^server verified 1000000$/, 30_000);
    await waitForLine(s.stdout, /^listener ok$/, 30_000);
  });

  it('ckpt killed while it reads a connection in repair mode: the connection leaves repair mode and works once the block is swept', async () => {
    const dir = makeTempDir('tcp-killrepair');
    const s = await startServer(dir, 4, 1_000_000, 1_000_000);
    const c = outsideClient(dir, 4, s.port, 1_000_000, 1_000_000, s.go);
    await waitForLine(s.stdout, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    const d = await ckpt(['dump', '-t', String(s.pid), '-D', path.join(dir, 'img'), '--leave-running'], { env: { CKPT_FAULT: 'tcp:repair:kill' } });
    expect(d.signal, describeResult(d)).toBe('SIGKILL');
    expectRunningFree(s.pid, 'server after its ckpt died mid-read');
    expect(blocks(s.port), 'the dead ckpt left its block').toBe(true);
    expectOk(await ckpt(['check', '--repair']));
    expect(blocks(s.port), blocked()).toBe(false);
    fs.writeFileSync(s.go, '');
    await waitForLine(c.out, /^client verified 1000000$/, 30_000);
    await waitForLine(s.stdout, /^server verified 1000000$/, 30_000);
    await waitForLine(s.stdout, /^listener ok$/, 30_000);
  });

  it('a dump that fails after reading a connection leaves it working and unblocked', async () => {
    const dir = makeTempDir('tcp-fail');
    process.env.TCPPEER_UNSUPPORTED = '1';
    let s: Awaited<ReturnType<typeof startServer>>;
    try {
      s = await startServer(dir, 4, 1_000_000, 1_000_000);
    } finally {
      delete process.env.TCPPEER_UNSUPPORTED;
    }
    const c = outsideClient(dir, 4, s.port, 1_000_000, 1_000_000, s.go);
    await waitForLine(s.stdout, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    const d = await ckpt(['dump', '-t', String(s.pid), '-D', path.join(dir, 'img')]);
    expectCleanError(d, /socket/);
    expect(blocks(s.port), blocked()).toBe(false);
    expectRunningFree(s.pid, 'server after a failed dump');
    fs.writeFileSync(s.go, '');
    await waitForLine(c.out, /^client verified 1000000$/, 30_000);
    await waitForLine(s.stdout, /^server verified 1000000$/, 30_000);
  });

  it('a dump that fails at its very end (after every record is made) leaves the connection working', async () => {
    // An error injected once every plugin's afterDump has run, before the image is committed.
    const dir = makeTempDir('tcp-latefail');
    const go = path.join(dir, 'go');
    const out = path.join(dir, 'server.out');
    const sh = spawn('sh', ['-c', `${TCPPEER} server 4 0 1000000 1000000 ${go} | cat > ${out}`], { stdio: 'ignore' });
    track(sh.pid!, go);
    const srv = await waitFor(
      () => processesMatching(go).find((p) => p.cmd.startsWith(`${TCPPEER} server`)),
      10_000,
      () => 'no server',
    );
    track(srv.pid, go);
    const port = Number((await waitForLine(out, /^listening (\d+)$/)).match[1]);
    const c = outsideClient(dir, 4, port, 1_000_000, 1_000_000, go);
    await waitForLine(out, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    expectCleanError(
      await ckpt(['dump', '-t', String(srv.pid), '-D', path.join(dir, 'img')], { env: { CKPT_FAULT: 'dump:records:error' } }),
      /injected fault at dump:records/,
    );
    expect(blocks(port), blocked()).toBe(false);
    expectRunningFree(srv.pid, 'server after the failed dump');
    fs.writeFileSync(go, '');
    await waitForLine(c.out, /^client verified 1000000$/, 30_000);
    await waitForLine(out, /^server verified 1000000$/, 30_000);
    expect(
      readLines(out).filter((l) => /error|MISMATCH|stalled/.test(l)),
      tail(out),
    ).toEqual([]);
  });

  it('a restore that fails halfway leaves nothing behind and can be tried again; the client keeps its connection', async () => {
    const dir = makeTempDir('tcp-retry');
    const img = path.join(dir, 'img');
    process.env.TCPPEER_UDP = '1';
    let s: Awaited<ReturnType<typeof startServer>>;
    try {
      s = await startServer(dir, 4, 1_000_000, 1_000_000);
    } finally {
      delete process.env.TCPPEER_UDP;
    }
    const c = outsideClient(dir, 4, s.port, 1_000_000, 1_000_000, s.go);
    const udpPort = Number((await waitForLine(s.stdout, /^udp (\d+)$/)).match[1]);
    await waitForLine(s.stdout, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    await dumpOk(s.pid, img);
    // Someone takes the UDP port: the restore fails after the connection (an earlier fd) was
    // rebuilt in repair mode, and rolls back.
    const squatter = dgram.createSocket('udp4');
    await new Promise<void>((r) => squatter.bind(udpPort, '127.0.0.1', () => r()));
    try {
      expectCleanError(await ckpt(['restore', '-D', img, '--detach']), String(udpPort), /EADDRINUSE/);
    } finally {
      squatter.close();
    }
    expect(blocks(s.port), "the dump's block stays for the next try").toBe(true);
    // ...and still belongs to the image: the next ckpt (which sweeps stale locks first) keeps it.
    const report = JSON.parse((await ckpt(['check', '--json'])).stdout) as { staleLocks: unknown[] };
    expect(report.staleLocks, 'no lock of the failed restore is left for a sweep').toEqual([]);
    const left = execFileSync('ss', ['-tanH'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => new RegExp(`:${s.port}(\\s|$)`).test(l) && /ESTAB/.test(l));
    expect(left.length, `only the client's end of the connection exists:\n${left.join('\n')}`).toBe(1);
    await restoreOk(img, s.pid, TCPPEER);
    expect(blocks(s.port)).toBe(false);
    fs.writeFileSync(s.go, '');
    await waitForLine(c.out, /^client verified 1000000$/, 30_000);
    await waitForLine(s.stdout, /^server verified 1000000$/, 30_000);
  });

  it('restore --tcp-close: the connection comes back closed when its peer is gone (bytes it had received, then EOF; writes fail)', async () => {
    const dir = makeTempDir('tcp-close');
    const img = path.join(dir, 'img');
    const s = await startServer(dir, 6, 500_000, 500_000);
    const c = outsideClient(dir, 6, s.port, 500_000, 500_000, path.join(dir, 'never'));
    await waitForLine(s.stdout, /^server ready$/);
    await waitForLine(c.out, /^client ready$/);
    await dumpOk(s.pid, img);
    await killAndWaitGone(c.pid);
    const r = await ckpt(['restore', '-D', img, '--detach', '--tcp-close']);
    track(s.pid, TCPPEER);
    expectOk(r);
    expect(blocks(s.port), blocked()).toBe(false);
    fs.writeFileSync(s.go, '');
    await waitForLine(s.stdout, /^server (eof after \d+|error Broken pipe \(write\))$/, 20_000);
    expect(readLines(s.stdout).filter((l) => /MISMATCH|reset/.test(l))).toEqual([]);
    await waitForLine(s.stdout, /^listener ok$/, 20_000);
  });
});

describe('UDP', () => {
  for (const fam of [4, 6] as const) {
    it(`bound and connected sockets keep their queued datagrams and peer (IPv${fam})`, async () => {
      const dir = makeTempDir(`udp${fam}`);
      const img = path.join(dir, 'img');
      const type = fam === 6 ? 'udp6' : 'udp4';
      const host = LOOP[fam];
      const peer = dgram.createSocket(type);
      const s1 = dgram.createSocket(type);
      const s2 = dgram.createSocket(type);
      try {
        for (const s of [peer, s1, s2]) await new Promise<void>((r) => s.bind(0, host, () => r()));
        const go = path.join(dir, 'go');
        const u = await runFixture(dir, [TCPUDP, String(fam), String(peer.address().port), go], { name: 'udp' });
        const port = Number((await waitForLine(u.stdout, /^bound (\d+)$/)).match[1]);
        const bPort = Number((await waitForLine(u.stdout, /^connected (\d+)$/)).match[1]);
        await waitForLine(u.stdout, /^ready$/);
        const sent: string[] = [];
        for (let i = 0; i < 6; i++) {
          const from = i % 2 ? s1 : s2;
          const msg = `datagram ${i} ${'x'.repeat(i * 300)}`;
          sent.push(`dgram from ${host} ${from.address().port} ${msg.length} ${msg.slice(0, 40)}`);
          await new Promise<void>((r, j) => from.send(msg, port, host, (e) => (e ? j(e) : r())));
        }
        await sleep(100);
        await dumpOk(u.pid, img);
        const show = await ckpt(['show', img]);
        expectOk(show);
        expect(show.stdout).toMatch(new RegExp(`inet6? +udp +UNCONN +${sent.reduce((a, l) => a + Number(l.split(' ')[4]), 0)} `));
        expect(show.stdout).toMatch(/udp +CONNECTED/);
        await restoreOk(img, u.pid, TCPUDP);
        const replied = new Promise<{ msg: string; port: number }>((r) =>
          peer.once('message', (m, rinfo) => {
            peer.send('welcome back', rinfo.port, rinfo.address);
            r({ msg: m.toString(), port: rinfo.port });
          }),
        );
        fs.writeFileSync(go, '');
        await waitForLine(u.stdout, /^done$/, 20_000);
        const got = readLines(u.stdout).filter((l) => l.startsWith('dgram from'));
        expect(got, tail(u.stdout)).toEqual(sent);
        expect(readLines(u.stdout)).toContain('go rcvbuf 600000');
        const hello = await replied;
        expect(hello).toEqual({ msg: 'hello from B', port: bPort });
        expect(readLines(u.stdout)).toContain('reply welcome back');
      } finally {
        for (const s of [peer, s1, s2]) s.close();
      }
    });
  }
});

// ------------------------------------------------------------------------------------------------
// redis-server: the acceptance test

/** A minimal RESP client on one connection. */
class Resp {
  private buf = Buffer.alloc(0);
  private waiting: Array<(v: unknown) => void> = [];
  constructor(readonly sock: net.Socket) {
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        const r = parse(this.buf, 0);
        if (!r || !this.waiting.length) break;
        this.buf = this.buf.subarray(r[1]);
        this.waiting.shift()!(r[0]);
      }
    });
  }
  cmd(...args: string[]): Promise<unknown> {
    const wire = `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`redis: no answer to ${args[0]} within 20 s`)), 20_000);
      this.waiting.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
      this.sock.write(wire);
    });
  }
}

function parse(b: Buffer, off: number): [unknown, number] | undefined {
  const eol = b.indexOf('\r\n', off);
  if (eol < 0) return undefined;
  const line = b.toString('utf8', off + 1, eol);
  switch (String.fromCharCode(b[off])) {
    case '+':
      return [line, eol + 2];
    case '-':
      return [new Error(line), eol + 2];
    case ':':
      return [Number(line), eol + 2];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      if (b.length < eol + 2 + n + 2) return undefined;
      return [b.toString('utf8', eol + 2, eol + 2 + n), eol + 2 + n + 2];
    }
    case '*': {
      const n = Number(line);
      const out: unknown[] = [];
      let p = eol + 2;
      for (let i = 0; i < n; i++) {
        const r = parse(b, p);
        if (!r) return undefined;
        out.push(r[0]);
        p = r[1];
      }
      return [out, p];
    }
    default:
      throw new Error(`redis: bad reply ${JSON.stringify(b.toString('utf8', off, off + 40))}`);
  }
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** The test's own cut of one connection (as a network outage would be), in its own table. */
const CUT_TABLE = `ckpt_test_${process.pid}`;
function cut(localPort: number, peerPort: number): void {
  const script =
    `table inet ${CUT_TABLE} {\n` +
    ['prerouting', 'output']
      .map(
        (h) =>
          `  chain ${h} { type filter hook ${h} priority -300; policy accept;\n` +
          `    ip saddr 127.0.0.1 tcp sport ${localPort} tcp dport ${peerPort} drop\n` +
          `    ip saddr 127.0.0.1 tcp sport ${peerPort} tcp dport ${localPort} drop\n  }\n`,
      )
      .join('') +
    '}\n';
  execFileSync('nft', ['-f', '-'], { input: script });
}
function uncut(): void {
  try {
    execFileSync('nft', ['delete', 'table', 'inet', CUT_TABLE], { stdio: 'ignore' });
  } catch {
    /* not there */
  }
}

describe('redis-server', () => {
  afterEach(uncut);

  /** redis-server (in its own pid namespace, host network) and one client that wrote keys. */
  async function redisWithKeys(tag: string) {
    const redis = which('redis-server');
    expect(redis, 'redis-server is not installed (apt-get install redis-server; .ci/run does)').not.toBe('');
    const dir = makeTempDir(tag);
    const port = await freePort();
    const r = await runFixture(dir, [redis, '--save', '', '--appendonly', 'no', '--port', String(port), '--bind', '127.0.0.1', '--dir', dir], {
      name: 'redis',
      marker: 'redis-server',
    });
    await waitForLine(r.stdout, /Ready to accept connections/, 20_000);
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((res, rej) => sock.once('connect', () => res()).once('error', rej));
    const state: { error?: Error } = {};
    sock.on('error', (e) => (state.error = e));
    sock.on('close', () => (state.error ??= new Error('connection closed')));
    const db = new Resp(sock);
    for (let i = 0; i < 300; i++) expect(await db.cmd('SET', `key:${i}`, value(i))).toBe('OK');
    expect(await db.cmd('SET', 'big', BIG)).toBe('OK');
    expect(await db.cmd('INCRBY', 'counter', '41')).toBe(41);
    return { dir, img: path.join(dir, 'img'), port, r, sock, db, state };
  }
  const value = (i: number) => `value-${i}-${'v'.repeat(i % 50)}`;
  const BIG = 'B'.repeat(300_000);

  /** The same connection reads every key back and keeps writing; a new one sees the same data. */
  async function expectSameConnectionWorks(x: Awaited<ReturnType<typeof redisWithKeys>>): Promise<void> {
    const { db, port } = x;
    for (let i = 0; i < 300; i += 7) expect(await db.cmd('GET', `key:${i}`)).toBe(value(i));
    expect(await db.cmd('GET', 'big')).toBe(BIG);
    expect(await db.cmd('INCR', 'counter')).toBe(42);
    for (let i = 300; i < 400; i++) expect(await db.cmd('SET', `key:${i}`, value(i))).toBe('OK');
    expect(await db.cmd('DBSIZE')).toBe(402);
    expect(await db.cmd('GET', 'key:399')).toBe(value(399));
    expect(x.state.error, 'the client connection saw an error').toBeUndefined();
    const fresh = net.connect(port, '127.0.0.1');
    await new Promise<void>((res, rej) => fresh.once('connect', () => res()).once('error', rej));
    try {
      const db2 = new Resp(fresh);
      expect(await db2.cmd('GET', 'key:350')).toBe(value(350));
      expect(await db2.cmd('DBSIZE')).toBe(402);
    } finally {
      fresh.destroy();
    }
  }

  async function ping(port: number): Promise<unknown> {
    const s = net.connect(port, '127.0.0.1');
    await new Promise<void>((res, rej) => s.once('connect', () => res()).once('error', rej));
    try {
      return await new Resp(s).cmd('PING');
    } finally {
      s.destroy();
    }
  }

  it('a client keeps its connection across dump --leave-running, kill and restore: reads its keys back and keeps writing', async () => {
    const x = await redisWithKeys('redis-leave');
    try {
      // The checkpoint: redis goes on running (it answers others; our client stays idle, so
      // that the image and the client agree), then dies, and comes back from the image. The
      // client's connection is cut around the kill, as by an outage: otherwise the kernel's FIN
      // for the dying socket would tell the client the connection is over.
      expectOk(await ckpt(['dump', '-t', String(x.r.pid), '-D', x.img, '--leave-running']));
      expectRunningFree(x.r.pid, 'redis after dump --leave-running');
      expect(blocks(x.port)).toBe(false);
      expect(await ping(x.port)).toBe('PONG');
      cut(x.sock.localPort!, x.port);
      await killAndWaitGone(x.r.pid);
      // restore destroys what is left of the killed connection (FIN_WAIT1, no owner) first.
      await restoreOk(x.img, x.r.pid, 'redis-server');
      uncut();
      await expectSameConnectionWorks(x);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${tail(x.r.stdout)}\n${tail(x.r.stderr)}`, { cause: e });
    } finally {
      x.sock.destroy();
    }
  });

  it('a client keeps its connection across dump (which kills redis) and restore', async () => {
    const x = await redisWithKeys('redis-kill');
    try {
      await dumpOk(x.r.pid, x.img);
      expect(blocks(x.port), 'blocked from dump to restore').toBe(true);
      await restoreOk(x.img, x.r.pid, 'redis-server');
      expect(blocks(x.port)).toBe(false);
      await expectSameConnectionWorks(x);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${tail(x.r.stdout)}\n${tail(x.r.stderr)}`, { cause: e });
    } finally {
      x.sock.destroy();
    }
  });

  it('restore --help documents --tcp-close', async () => {
    const r = await ckpt(['restore', '--help']);
    expect(r.stdout + r.stderr, describeResult(r)).toMatch(/--tcp-close/);
  });
});

describe('socket state', () => {
  it('SO_REUSEPORT groups, free-bound listeners, a UDP socket shut down for writing, options (priority with IP_TOS, mark, buffer lock, no-check, TCP keepalive) and a classic BPF filter', async () => {
    const { lines } = await checksAfterRestore('sockopts');
    expect(lines, lines.join('\n')).toEqual([
      'ok reuseport',
      'ok reuseport-port',
      'ok freebind',
      'ok shutwr',
      'ok options',
      'ok filter',
      'ok unix-filter',
      'done',
    ]);
  });
});

/**
 * A process of its own listening on each port (on ::, IPv4 too), as an unrelated program that was
 * handed a port freed by a kill; resolves once every port is taken. Killed by the file's cleanup.
 */
async function takePorts(ports: number[]): Promise<void> {
  const code = [
    'import socket, sys',
    'held = []',
    'for p in sys.argv[2:]:',
    '    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)',
    '    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)',
    "    s.bind(('::', int(p)))",
    '    s.listen(1)',
    '    held.append(s)',
    "print('held', flush=True)",
    'sys.stdin.read()',
  ].join('\n');
  const child = spawn('python3', ['-c', code, 'ckpt-test-take-ports', ...ports.map(String)], { stdio: ['pipe', 'pipe', 'pipe'] });
  track(child.pid!, 'ckpt-test-take-ports');
  let err = '';
  child.stderr.on('data', (b: Buffer) => (err += b));
  await new Promise<void>((res, rej) => {
    child.stdout.once('data', () => res());
    child.once('exit', (c) => rej(new Error(`could not take ports ${ports.join(', ')} (exit ${c}): ${err.trim()}`)));
  });
}

describe('TCP connections in every state', () => {
  it('closing (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING, LAST_ACK), closed with unread bytes, reset, connecting (SYN_SENT, its port taken by another program meanwhile), and shut down unconnected; IPv4, IPv6, IPv4-mapped IPv6', async () => {
    // While the process is away, the ports its connecting sockets held are taken by listeners of
    // another process: the restored sockets still connect from them (the fixture checks the names).
    const { lines } = await checksAfterRestore('tcpstates', ({ work }) =>
      takePorts(fs.readFileSync(path.join(work, 'synsent-ports'), 'utf8').trim().split('\n').map(Number)),
    );
    const names = [
      'close-wait-state',
      'fin-wait1-state',
      'closing-state',
      'last-ack-state',
      'closed-state',
      'close-wait',
      'fin-wait1',
      'closing',
      'last-ack',
      'closed',
      'reset',
      'unconn-shut',
      'syn-sent',
    ];
    expect(lines, lines.join('\n')).toEqual([...['v4', 'v6', 'mapped'].flatMap((f) => names.map((n) => `ok ${f}-${n}`)), 'done']);
  });
});

describe('packet sockets', () => {
  it('raw and datagram packet sockets: version, auxdata, origdev, reserve, rings, fanout, memberships, binding, a classic BPF filter; one still receives', async () => {
    const { lines } = await checksAfterRestore('packet');
    expect(lines, lines.join('\n')).toEqual(['ok raw', 'ok dgram', 'ok filtered', 'done']);
  });
});

describe('tun/tap fds', () => {
  it('a tun device made again with its MTU, addresses and up state, carrying packets; a persistent multi-queue tap attached again by both its fds', async () => {
    let pid = 0;
    try {
      const r = await checksAfterRestore('tun', (p) => {
        pid = p.pid;
      });
      expect(r.lines, r.lines.join('\n')).toEqual(['ok tun', 'ok tap', 'done']);
    } finally {
      // The tap is persistent: removed here if the fixture could not end its persistence.
      for (const n of pid ? [`ckt${pid}n`, `ckt${pid}p`] : []) {
        try {
          execFileSync('ip', ['link', 'del', n], { stdio: 'ignore' });
        } catch {
          /* gone with the fixture */
        }
      }
    }
  });
});

describe('other inet sockets', () => {
  it('a UDP-Lite socket (bound, connected, checksum coverage), an ICMP ping socket with its identifier, a raw socket', async () => {
    // Ping sockets exist only for the groups net.ipv4.ping_group_range lets in: group 0 here, for the test.
    const RANGE = '/proc/sys/net/ipv4/ping_group_range';
    const before = fs.readFileSync(RANGE, 'utf8').trim();
    fs.writeFileSync(RANGE, '0 0');
    try {
      const { lines } = await checksAfterRestore('inetkinds');
      expect(lines, lines.join('\n')).toEqual(['ok udplite', 'ok ping', 'ok raw', 'done']);
    } finally {
      fs.writeFileSync(RANGE, before.replace(/\s+/, ' '));
    }
  });
});
