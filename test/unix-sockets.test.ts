// Unix sockets (@ckpt/plugin-unix-socket): socketpairs (stream, seqpacket, datagram) between a
// parent and its child, a named listener with an accepted connection, an abstract seqpacket
// listener with an accepted and a not-yet-accepted connection, bound datagram sockets; data
// queued both ways at dump time arrives exactly once, in order, with its boundaries (and
// datagrams with their sender's address); options, O_NONBLOCK and shutdown state kept. A peer
// outside the tree is refused, or reconnected when declared with --external; file descriptors
// in flight are refused. Every refusal leaves the process running untouched.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  CLI,
  checksAfterRestore,
  ckpt,
  describeResult,
  expectCleanError,
  expectOk,
  expectRunningFree,
  isAlive,
  makeTempDir,
  numRe,
  readLines,
  restoreOk,
  runFixture,
  sleep,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const PAIRS = path.join(BUILD_DIR, 'unix_pairs');
const CLIENT = path.join(BUILD_DIR, 'unix_client');
const RIGHTS = path.join(BUILD_DIR, 'unix_rights');

function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

interface ShownSocket {
  family: string;
  type: string;
  state: string;
  holders: string[];
  local: string;
  remote: string;
  recvQ: number;
  recvMessages: number;
  sendQ: number;
}

async function shownSockets(img: string): Promise<ShownSocket[]> {
  const r = await ckpt(['show', img, '--json']);
  expectOk(r);
  return (JSON.parse(r.stdout) as { sockets: ShownSocket[] }).sockets;
}

/** The output lines written after the first `from` lines. */
function linesAfter(file: string, from: number): string[] {
  return readLines(file).slice(from);
}

/** What unix_pairs prints when every queue held exactly what was sent, once, in order. */
function expectedLines(dir: string, tag: string): string[] {
  return [
    'P sp ok 24 bytes',
    'P qp ok 3 messages [c2p-sq-1][c2p-sq-22][c2p-sq-333]',
    'P dp ok 3 messages [c2p-dg-1][][c2p-dg-3]',
    'P named ok 9 bytes then eof',
    'P abstract ok 2 messages [c2p-abs-1][c2p-abs-22]',
    `P dgram ok 3 messages [c2p-dgram-1][c2p-dgram-22][c2p-dgram-333] from @ckpt-${tag}-dgcli`,
    'P pending accepted 1',
    'P checked bad=0',
    'C sp ok 100000 bytes',
    'C qp ok 2 messages [p2c-sq-1][p2c-sq-22]',
    'C dp ok 2 messages [p2c-dg-1][p2c-dg-22]',
    'C named ok 15 bytes',
    'C named write after shutdown: EPIPE',
    'C abstract ok 1 messages [p2c-abs-1]',
    `C dgram ok 2 messages [p2c-dgram-1][p2c-dgram-22] from ${path.join(dir, 'dg.sock')}`,
    'C pending ok 0 messages ',
    'C checked bad=0',
  ];
}

describe('unix sockets', () => {
  it('pairs, listeners and datagram sockets come back with their queued data, options and shutdown state', async () => {
    const dir = makeTempDir('unix');
    const img = path.join(dir, 'img');
    const tag = path
      .basename(dir)
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(-8);
    const { pid, stdout } = await runFixture(dir, [PAIRS, dir, tag], { name: 'pairs' });
    await waitForLine(stdout, /^P ready/);
    await waitForLine(stdout, /^C ready/);
    const [child] = childrenOf(pid);
    expect(child, 'the fixture forked its child').toBeGreaterThan(0);
    track(child, PAIRS);
    const optsBefore = readLines(stdout)
      .filter((l) => / opts /.test(l))
      .sort();
    expect(optsBefore).toHaveLength(2);

    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    await waitNotAlive(child);
    expect(fs.statSync(path.join(dir, 'srv.sock')).isSocket(), 'the dead listener left its socket file').toBe(true);

    // ckpt show lists every socket with family, type, state, addresses and bytes queued each way.
    const socks = await shownSockets(img);
    expect(socks.every((s) => s.family === 'unix')).toBe(true);
    expect(socks).toHaveLength(16);
    const pair = socks.find((s) => s.type === 'stream' && s.recvQ === 100000);
    expect(pair, 'the stream socketpair end with 100000 bytes queued').toBeDefined();
    expect(pair!.sendQ, 'and 24 bytes queued the other way').toBe(24);
    expect(pair!.holders).toEqual([`${child}:4`]);
    expect(socks.find((s) => s.type === 'stream' && s.state === 'listening')?.local).toBe(path.join(dir, 'srv.sock'));
    const accepted = socks.find((s) => s.type === 'stream' && s.state === 'connected' && s.local === path.join(dir, 'srv.sock'));
    expect({ recvQ: accepted?.recvQ, sendQ: accepted?.sendQ }).toEqual({ recvQ: 9, sendQ: 15 });
    expect(socks.find((s) => s.type === 'seqpacket' && s.state === 'pending')?.remote).toBe(`@ckpt-${tag}-listen`);
    const dgramServer = socks.find((s) => s.type === 'dgram' && s.local === path.join(dir, 'dg.sock'));
    expect(dgramServer?.recvMessages, 'three datagrams queued on the bound datagram socket').toBe(3);
    expect(dgramServer?.holders.sort(), 'one socket shared by parent and child').toEqual([`${pid}:16`, `${child}:16`].sort());
    const text = await ckpt(['show', img]);
    expectOk(text);
    expect(text.stdout).toMatch(/sockets/);
    expect(text.stdout).toMatch(new RegExp(`unix\\s+seqpacket\\s+listening.*@ckpt-${tag}-listen`));

    const mark = readLines(stdout).length;
    await restoreOk(img, pid, PAIRS);
    track(child, PAIRS);
    expect(isAlive(child), 'the child is back').toBe(true);
    expectRunningFree(pid);
    expectRunningFree(child);
    // The names are bound again, as socket files.
    expect(fs.statSync(path.join(dir, 'srv.sock')).isSocket()).toBe(true);
    expect(fs.statSync(path.join(dir, 'dg.sock')).isSocket()).toBe(true);

    // A second copy cannot take the same names while this one runs: refused, naming the address.
    expectCleanError(await ckpt(['restore', '-D', img, '--detach']), /srv\.sock|@ckpt-/, /in use|bound by a live socket/);

    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^P checked/, 15_000, mark);
    await waitForLine(stdout, /^C checked/, 15_000, mark);
    const after = linesAfter(stdout, mark);
    expect(
      after.filter((l) => /BAD|FAIL/.test(l)),
      'every check passed',
    ).toEqual([]);
    expect(after.filter((l) => / opts /.test(l)).sort(), 'options and O_NONBLOCK as before').toEqual(optsBefore);
    for (const line of expectedLines(dir, tag)) expect(after, `missing line ${JSON.stringify(line)}`).toContain(line);
    // Every connection still carries new traffic both ways (the pending one too, once accepted).
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^P live/, 15_000, mark);
    await waitForLine(stdout, /^C live/, 15_000, mark);
    const live = linesAfter(stdout, mark).filter((l) => / live /.test(l));
    expect(live.sort()).toEqual(['C live ok', 'P live ok']);
  });

  it('dump --leave-running reads every queue without consuming it; its image restores the dump-time state', async () => {
    const dir = makeTempDir('unixlr');
    const img = path.join(dir, 'img');
    const tag = path
      .basename(dir)
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(-8);
    const { pid, stdout } = await runFixture(dir, [PAIRS, dir, tag], { name: 'pairs' });
    await waitForLine(stdout, /^P ready/);
    await waitForLine(stdout, /^C ready/);
    const [child] = childrenOf(pid);
    track(child, PAIRS);
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running']));
    expectRunningFree(pid);
    expectRunningFree(child);
    // The running processes find every byte and message still queued.
    let mark = readLines(stdout).length;
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^P checked/, 15_000, mark);
    await waitForLine(stdout, /^C checked/, 15_000, mark);
    let after = linesAfter(stdout, mark);
    expect(after.filter((l) => /BAD|FAIL/.test(l))).toEqual([]);
    for (const line of expectedLines(dir, tag)) expect(after, `missing line ${JSON.stringify(line)}`).toContain(line);
    // Gone; the image brings back the state of the dump, queues full again. (The child may be gone
    // already: when the main process dies, ckpt-init exits and its pid namespace goes with it.)
    process.kill(pid, 'SIGKILL');
    try {
      process.kill(child, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
    await waitNotAlive(pid);
    await waitNotAlive(child);
    mark = readLines(stdout).length;
    await restoreOk(img, pid, PAIRS);
    track(child, PAIRS);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^P checked/, 15_000, mark);
    await waitForLine(stdout, /^C checked/, 15_000, mark);
    after = linesAfter(stdout, mark);
    expect(after.filter((l) => /BAD|FAIL/.test(l))).toEqual([]);
    for (const line of expectedLines(dir, tag)) expect(after, `missing line ${JSON.stringify(line)}`).toContain(line);
  });

  it('a connection to a server outside the tree is refused, or reconnected when declared --external', async () => {
    const dir = makeTempDir('unixext');
    const img = path.join(dir, 'img');
    const sock = path.join(dir, 'outside.sock');
    const log = path.join(dir, 'server.log');
    const server = `
import os, socket, sys, threading
path, log, label = sys.argv[1], sys.argv[2], sys.argv[3]
try: os.unlink(path)
except FileNotFoundError: pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(path); s.listen(8)
lock = threading.Lock()
def serve(c, k):
    buf = b''
    while True:
        d = c.recv(4096)
        if not d: return
        buf += d
        while b'\\n' in buf:
            line, buf = buf.split(b'\\n', 1)
            with lock:
                with open(log, 'a') as f: f.write('%s conn %d: %s\\n' % (label, k, line.decode()))
            c.sendall(b'echo ' + line + b'\\n')
n = 0
while True:
    c, _ = s.accept(); n += 1
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
`;
    const startServer = async (label: string) => {
      fs.rmSync(sock, { force: true }); // a killed server leaves its socket file behind
      const p = spawn('python3', ['-c', server, sock, log, label], { stdio: 'ignore' });
      track(p.pid!, sock);
      await waitFor(
        () => fs.existsSync(sock) && fs.statSync(sock).isSocket(),
        10_000,
        () => 'the outside server did not start',
      );
      return p;
    };
    let srv = await startServer('first');
    const { pid, stdout } = await runFixture(dir, [CLIENT, sock], { name: 'client' });
    await waitForLine(stdout, /^reply echo hello$/);
    const fd = Number((await waitForLine(stdout, /^connected fd (\d+)$/)).match[1]);

    const refused = await ckpt(['dump', '-t', String(pid), '-D', img]);
    expectCleanError(refused, sock, `fd ${fd}`, numRe(pid), /outside the checkpointed tree/, `--external unix:${sock}`);
    expect(fs.existsSync(img), 'no image, nor the directory it made, after a refused dump').toBe(false);
    // Untouched: the same connection still works.
    expectRunningFree(pid);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^reply echo tick 1$/);

    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img, '--external', `unix:${sock}`]));
    await waitNotAlive(pid);
    const shown = (await shownSockets(img)).filter((s) => s.type === 'stream');
    expect(shown.map((s) => ({ state: s.state, remote: s.remote }))).toEqual([{ state: 'connected (external)', remote: sock }]);

    // The server is gone: the restore says so and leaves nothing behind.
    srv.kill('SIGKILL');
    await waitFor(
      () => srv.exitCode !== null || srv.signalCode !== null,
      10_000,
      () => 'server did not stop',
    );
    expectCleanError(await ckpt(['restore', '-D', img, '--detach']), sock, /external/);
    expect(isAlive(pid)).toBe(false);

    srv = await startServer('second');
    await restoreOk(img, pid, CLIENT);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^reply echo tick 2$/);
    const conns = readLines(log);
    expect(conns).toEqual(['first conn 1: hello', 'first conn 1: tick 1', 'second conn 1: tick 2']);
    srv.kill('SIGKILL');

    // Or the restorer hands it a connection of its own (--substitute): no server needed, none dialed.
    process.kill(pid, 'SIGKILL');
    await waitNotAlive(pid);
    const echo = path.join(dir, 'echo.log');
    const helper = `
import socket, subprocess, sys
mine, theirs = socket.socketpair()
r = subprocess.run([sys.argv[5], sys.argv[1], 'restore', '-D', sys.argv[2], '--detach', '--substitute', sys.argv[3] + '=' + str(theirs.fileno())], pass_fds=[theirs.fileno()])
theirs.close()
print('restored', r.returncode, flush=True)
d = mine.recv(4096)
open(sys.argv[4], 'w').write(d.decode())
mine.sendall(b'echo from the restorer\\n')
`;
    const h = spawn('python3', ['-c', helper, CLI, img, `f${pid}.${fd}`, echo, process.execPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    let said = '';
    h.stdout!.on('data', (b: Buffer) => (said += b.toString()));
    await waitFor(
      () => /restored \d+/.test(said),
      20_000,
      () => `the helper's restore did not finish: ${said}`,
    );
    expect(said).toContain('restored 0');
    track(pid, CLIENT);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^reply echo from the restorer$/);
    expect(fs.readFileSync(echo, 'utf8'), 'the image was made after tick 1').toBe('tick 2\n');
    expect(readLines(log), 'no connection was made to the server path').toHaveLength(3);
  });

  it('relative and autobound names, a socket file the program unlinked, shutdown by the server (python)', async () => {
    const dir = makeTempDir('unixnames');
    const img = path.join(dir, 'img');
    const tag = path
      .basename(dir)
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(-8);
    const prog = `
import os, signal, socket, sys
d, tag = sys.argv[1], sys.argv[2]
os.chdir(d)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
L = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); L.bind('rel.sock'); L.listen(2)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect('rel.sock'); a, _ = L.accept()
os.unlink('rel.sock')
c.sendall(b'from-client'); a.sendall(b'from-server'); a.shutdown(socket.SHUT_WR)
x = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); x.bind('')
yname = ('\\0ckpt-%s-y' % tag).encode()
y = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); y.bind(yname)
for m in (b'd1', b'', b'd3'): x.sendto(m, yname)
def names(): return 'L=%r a=%r c.peer=%r x=%r' % (L.getsockname(), a.getsockname(), c.getpeername(), x.getsockname())
print('before', names(), flush=True)
signal.sigwait({signal.SIGUSR1})
print('after', names(), flush=True)
print('server got', a.recv(100), flush=True)
print('client got', c.recv(100), c.recv(100), flush=True)
ms = [y.recvfrom(100) for _ in range(3)]
print('dgram', ms == [(m, x.getsockname()) for m in (b'd1', b'', b'd3')], ms, flush=True)
print('file', os.path.exists('rel.sock'), flush=True)
signal.sigwait({signal.SIGUSR1})
`;
    const { pid, stdout } = await runFixture(dir, ['python3', '-c', prog, dir, tag], { name: 'names', marker: tag });
    const before = (await waitForLine(stdout, /^before (.*)$/)).match[1];
    expect(before).toMatch(/L='rel.sock'.*x=b'\\x00[0-9a-f]{5}'/);
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    await restoreOk(img, pid, tag);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^file /);
    const out = readLines(stdout);
    expect(out).toContain(`after ${before}`);
    expect(out).toContain("server got b'from-client'");
    expect(out).toContain("client got b'from-server' b''");
    expect(out.find((l) => l.startsWith('dgram '))).toMatch(/^dgram True /);
    expect(out).toContain('file False');
  });

  it('sockets whose peer closed before the dump: queued data, then the same end (reset, refused, end of file)', async () => {
    const dir = makeTempDir('unixclosed');
    const img = path.join(dir, 'img');
    const prog = `
import signal, socket
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
a, b = socket.socketpair(); a.sendall(b'last-words'); b.sendall(b'unread'); a.close()
c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); d.close()
e, f = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET); e.send(b'sq1'); e.send(b'sq2'); e.close()
print('ready', flush=True)
signal.sigwait({signal.SIGUSR1})
def rd(s):
    try: return s.recv(100)
    except OSError as x: return x.__class__.__name__
print('stream', rd(b), rd(b), rd(b), flush=True)
try: c.send(b'x'); print('dgram send ok', flush=True)
except OSError as x: print('dgram send', x.__class__.__name__, flush=True)
print('seqpacket', rd(f), rd(f), rd(f), flush=True)
signal.sigwait({signal.SIGUSR1})
`;
    const { pid, stdout } = await runFixture(dir, ['python3', '-c', prog, 'unix-closed-peers'], { name: 'closed', marker: 'unix-closed-peers' });
    await waitForLine(stdout, /^ready$/);
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    const socks = await shownSockets(img);
    expect(socks.map((s) => `${s.type} ${s.state} ${s.recvQ} ${s.remote}`).sort()).toEqual([
      'dgram disconnected 0 (closed)',
      'seqpacket disconnected 6 (closed)',
      'stream disconnected 10 (closed)',
    ]);
    await restoreOk(img, pid, 'unix-closed-peers');
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^seqpacket /);
    // As the same program sees it without a checkpoint.
    const out = readLines(stdout);
    expect(out).toContain("stream b'last-words' ConnectionResetError b''");
    expect(out).toContain('dgram send ConnectionRefusedError');
    expect(out).toContain("seqpacket b'sq1' b'sq2' b''");
  });

  it('data sent on a connection not yet accepted is refused; the listener then accepts it intact', async () => {
    const dir = makeTempDir('unixpend');
    const img = path.join(dir, 'img');
    const tag = path
      .basename(dir)
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(-8);
    const prog = `
import signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
name = ('\\0ckpt-%s-p' % sys.argv[1]).encode()
L = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); L.bind(name); L.listen(2)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(name); c.sendall(b'early')
print('ready fd', c.fileno(), flush=True)
signal.sigwait({signal.SIGUSR1})
a, _ = L.accept()
print('accepted got', a.recv(100), flush=True)
signal.sigwait({signal.SIGUSR1})
`;
    const { pid, stdout } = await runFixture(dir, ['python3', '-c', prog, tag], { name: 'pend', marker: tag });
    const fd = (await waitForLine(stdout, /^ready fd (\d+)$/)).match[1];
    const r = await ckpt(['dump', '-t', String(pid), '-D', img]);
    expectCleanError(r, `fd ${fd}`, numRe(pid), `@ckpt-${tag}-p`, /not accepted it yet/);
    expectRunningFree(pid);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^accepted got b'early'$/);
  });

  it('a client outside the tree of a listener in the tree: refused, or restored as gone with --external', async () => {
    const dir = makeTempDir('unixsrv');
    const img = path.join(dir, 'img');
    const sock = path.join(dir, 'srv.sock');
    const prog = `
import signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
L = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); L.bind(sys.argv[1]); L.listen(2)
print('listening', flush=True)
a, _ = L.accept()
print('accepted fd', a.fileno(), flush=True)
signal.sigwait({signal.SIGUSR1})
print('got', a.recv(100), a.recv(100), flush=True)
signal.sigwait({signal.SIGUSR1})
`;
    const { pid, stdout } = await runFixture(dir, ['python3', '-c', prog, sock], { name: 'srv', marker: sock });
    await waitForLine(stdout, /^listening$/);
    const client = spawn(
      'python3',
      ['-c', 'import socket, sys, time\ns = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"abc"); time.sleep(120)', sock, 'outside-client'],
      { stdio: 'ignore' },
    );
    track(client.pid!, 'outside-client');
    const fd = (await waitForLine(stdout, /^accepted fd (\d+)$/)).match[1];
    const refused = await ckpt(['dump', '-t', String(pid), '-D', img]);
    expectCleanError(refused, `fd ${fd}`, numRe(pid), sock, /accepted from a client/, numRe(client.pid!), `--external unix:${sock}`);
    expectRunningFree(pid);
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img, '--external', `unix:${sock}`]));
    await waitNotAlive(pid);
    client.kill('SIGKILL');
    await restoreOk(img, pid, sock);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^got b'abc' b''$/);
  });

  it('a dump that leaves the process running leaves its files in flight in the queue, and no fd behind', async () => {
    const dir = makeTempDir('unixrights');
    const img = path.join(dir, 'img');
    const { pid, stdout } = await runFixture(dir, [RIGHTS], { name: 'rights' });
    await waitForLine(stdout, /^sent fds (\d+) (\d+)$/);
    const before = fs.readdirSync(`/proc/${pid}/fd`).sort();
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running']));
    expect(fs.readdirSync(`/proc/${pid}/fd`).sort(), 'the fds the dump peeked in the process are closed').toEqual(before);
    expectRunningFree(pid);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^received fd ok$/);
  });
});

describe('files in flight, ckpt killed', () => {
  it('ckpt killed while a queue is read at a moved SO_PEEK_OFF: the socket guard puts the offset back; no fd is left; the files still arrive', async () => {
    const dir = makeTempDir('unixrights-kill');
    const { pid, stdout } = await runFixture(dir, [RIGHTS], { name: 'rights' });
    await waitForLine(stdout, /^sent fds (\d+) (\d+)$/);
    const before = fs.readdirSync(`/proc/${pid}/fd`).sort();
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img'), '--leave-running'], { env: { CKPT_FAULT: 'unix:inflight:kill' } });
    expect(r.signal, describeResult(r)).toBe('SIGKILL');
    await sleep(200); // the guard sees its channel close
    expect(fs.readdirSync(`/proc/${pid}/fd`).sort(), 'no fd left behind').toEqual(before);
    // Every socket of the process has its peek offset as before (off: -1), read through a copy of it.
    const peekOffsets = execFileSync(
      'python3',
      [
        '-c',
        [
          'import ctypes, os, socket, sys',
          'pid = int(sys.argv[1]); libc = ctypes.CDLL(None, use_errno=True); pfd = os.pidfd_open(pid); out = []',
          "for fd in sorted(os.listdir(f'/proc/{pid}/fd'), key=int):",
          "    if not os.readlink(f'/proc/{pid}/fd/{fd}').startswith('socket:'): continue",
          '    ours = libc.syscall(438, pfd, int(fd), 0)',
          '    s = socket.socket(fileno=ours)',
          "    out.append(f'{fd}={s.getsockopt(socket.SOL_SOCKET, 42)}')",
          'print(" ".join(out))',
        ].join('\n'),
        String(pid),
      ],
      { encoding: 'utf8' },
    ).trim();
    expect(
      peekOffsets.split(' ').filter((x) => !x.endsWith('=-1')),
      peekOffsets,
    ).toEqual([]);
    expectRunningFree(pid);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^received fd ok$/);
  });
});

describe('files in flight', () => {
  it('SCM_RIGHTS in stream, datagram and seqpacket queues: a pipe only in flight, a file shared with a held fd, an eventfd in two messages, a socket with its own queue', async () => {
    const { lines } = await checksAfterRestore('scm');
    expect(lines, lines.join('\n')).toEqual([
      'ok stream-pipe',
      'ok stream-file',
      'ok stream-tail',
      'ok dgram-eventfd',
      'ok dgram-two',
      'ok seqpacket-socket',
      'done',
    ]);
  });
});

describe('netlink sockets', () => {
  it('a route socket with its port, groups (above 32 too) and flags, still answered; a generic socket keeps its autobound port', async () => {
    const { lines } = await checksAfterRestore('netlink');
    expect(lines, lines.join('\n')).toEqual(['ok route', 'ok generic', 'done']);
  });
});

describe('unix sockets whose partner or name is gone', () => {
  it('datagrams of a socketpair partner closed since come back in order; a listener whose socket file was replaced by another file keeps its name, the file its content; the SO_PEERCRED of a socketpair and of both ends of a connection name their makers and ids', async () => {
    const { lines } = await checksAfterRestore('unixgone');
    expect(lines, lines.join('\n')).toEqual(['ok partner', 'ok replaced', 'ok peercred', 'ok listener', 'done']);
  });
});
