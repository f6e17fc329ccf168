// `ckpt server`: the dumps of `ckpt dump` and the restores of `ckpt restore -d` run in one resident process. What the command gives it
// (its directory, environment, output, status, its Ctrl-C and its death) is the command's own;
// what it cannot run as the command's own process would runs there instead; and neither the
// command's death nor the server's harms the process being dumped.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  type CliResult,
  ckpt,
  describeResult,
  expectCarriesOn,
  expectCleanError,
  expectOk,
  expectRunningFree,
  makeTempDir,
  readText,
  restoreOk,
  sleep,
  startWorkload,
  tail,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
  pidExists,
  procState,
  procStat,
  procStatusField,
  readLines,
  runFixture,
  bin,
  processesMatching,
  track,
  USR1_RE,
  expectNoImage,
} from './helpers.js';

useCleanup();

interface Server {
  child: ChildProcess;
  socket: string;
  log: string;
}

const servers: Server[] = [];
/**
 * Which client asks the server, for each describe below: the program (bin/ckpt.js), which runs
 * dist/ckpt-client (client/ckpt-client.c) where a socket is there, or Node's (bin.ts).
 */
let client: 'C' | 'Node' = 'C';
const CLIENT_BIN = path.join(path.dirname(CLI), 'ckpt-client');
const serverDirs: string[] = [];

/** `ckpt server --socket DIR/ckpt.sock`, its stderr in DIR/server.log, once it listens. */
async function startServer(tag: string, socketPath?: string): Promise<Server> {
  // Not a test's temp directory (removed after each test): the server outlives tests.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ckpt-test-${tag}-`));
  serverDirs.push(dir);
  const socket = socketPath ?? path.join(dir, 'ckpt.sock');
  const log = path.join(dir, 'server.log');
  const out = fs.openSync(log, 'a');
  // Its own fds 0-2 only: it must not carry what the test runner leaks.
  const child = spawn(process.execPath, [CLI, 'server', '--socket', socket], { stdio: ['ignore', out, out], env: { ...process.env, NODE_OPTIONS: '' } });
  fs.closeSync(out);
  const s = { child, socket, log };
  servers.push(s);
  await waitForLine(log, /listening on /);
  return s;
}

async function stopServer(s: Server): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  const gone = new Promise((r) => s.child.once('exit', r));
  s.child.kill('SIGTERM');
  await Promise.race([gone, sleep(10_000)]);
  if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
}

/** A command with this server's socket; its pid is in `.pid`. */
async function served(
  s: Server,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; prefix?: string[]; onSpawn?: (c: ChildProcess) => void } = {},
) {
  let pid = 0;
  const r = await ckpt(args, {
    ...opts,
    program: client === 'C',
    env: { CKPT_SERVER_SOCKET: s.socket, ...opts.env },
    onSpawn: (c) => {
      pid = c.pid!;
      opts.onSpawn?.(c);
    },
  });
  return Object.assign(r, { pid });
}

/** The server's log line about the command of client pid `pid` (undefined: none). */
function logLine(s: Server, pid: number): string | undefined {
  return readText(s.log)
    .split('\n')
    .find((l) => l.includes(`ckpt server: pid ${pid}: `));
}

/** The server's log line about the command of client pid `pid`, once written (after its reply). */
async function waitLogLine(s: Server, pid: number): Promise<string> {
  return (await waitFor(
    () => logLine(s, pid),
    10_000,
    () => `the server logged nothing about the command of pid ${pid}\n${tail(s.log)}`,
  ))!;
}

/** The command ran in the server, with this status. */
async function expectServed(s: Server, r: CliResult & { pid: number }, status = 0): Promise<void> {
  const line = await waitLogLine(s, r.pid);
  expect(line, `the server did not run it\n${describeResult(r)}\n${tail(s.log)}`).toMatch(new RegExp(`: exit ${status}\\b`));
  expect(line.endsWith('(C client)'), `asked by the ${client} client: ${line}`).toBe(client === 'C');
}

/** The workload's own check of its state (heap, private and shared mappings, FPU, signal mask). */
async function expectStateOk(pid: number, stdout: string, what: string): Promise<void> {
  const from = readText(stdout).length;
  process.kill(pid, 'SIGUSR1');
  const m = await waitFor(
    () =>
      readText(stdout)
        .slice(from)
        .split('\n')
        .map((l) => USR1_RE.exec(l))
        .find(Boolean),
    10_000,
    () => `${what}: no usr1 line\n${tail(stdout)}`,
  );
  const [, , heap, priv, shared, fpu, mask] = m!;
  expect({ heap, priv, shared, fpu, mask }, `${what}: ${m![0]}`).toEqual({ heap: 'ok', priv: 'ok', shared: 'ok', fpu: 'ok', mask: 'ok' });
}

/** The 16 MiB workload, dumped (killed) by a served dump into DIR/img: what a restore test starts from. */
async function dumpedWorkload(s: Server, tag: string) {
  const dir = makeTempDir(tag);
  const { pid, stdout } = await startWorkload(dir, 16);
  const img = path.join(dir, 'img');
  expectOk(await served(s, ['dump', '-t', String(pid), '-D', img]));
  await waitNotAlive(pid);
  return { dir, pid, stdout, img };
}

describe.each(['C', 'Node'] as const)('ckpt server, asked by the %s client', (asker) => {
  let srv: Server;
  beforeAll(async () => {
    client = asker;
    if (asker === 'C' && !fs.existsSync(CLIENT_BIN)) throw new Error(`${CLIENT_BIN} is not built (no C compiler?): npm run build makes it`);
    srv = await startServer('server');
  });
  afterAll(async () => {
    for (const s of servers) await stopServer(s);
    for (const d of serverDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('runs a dump for the command: its directory, output and status; the image restores whole', async () => {
    // Root's alone: a request's uid is the client's word, so only root may connect at all.
    expect(fs.statSync(srv.socket).mode & 0o777, 'the socket mode').toBe(0o600);
    // Started as `node CLI server`, it made itself a Node with its young generation's flags (the
    // same pid; its log, fd 2, still the file startServer reads).
    const argv = fs.readFileSync(`/proc/${srv.child.pid}/cmdline`, 'utf8').split('\0');
    expect(
      argv.filter((a) => a.includes('semi-space-size')),
      argv.join(' '),
    ).toEqual(['--min-semi-space-size=16', '--max-semi-space-size=64']);
    // A resident process reads its bundle (bin.ts: a build rewriting a mapped one in place would
    // make it fault), where a short command maps it.
    const maps = fs.readFileSync(`/proc/${srv.child.pid}/maps`, 'utf8');
    expect(maps, 'the server maps dist/cli.cjs').not.toMatch(/\/dist\/cli\.cjs$/m);
    const dir = makeTempDir('served-dump');
    const { pid, stdout } = await startWorkload(dir, 16);
    // A relative image directory is the command's: the server works in the command's directory.
    const r = await served(srv, ['dump', '-t', String(pid), '-D', 'img', '--json'], { cwd: dir });
    expectOk(r);
    await expectServed(srv, r);
    const out = JSON.parse(r.stdout) as { dir: string; pids: number[]; stats: Record<string, unknown> };
    expect(out.dir).toBe(path.join(dir, 'img'));
    expect(out.pids).toContain(pid);
    expect(typeof out.stats['ms.memory'], r.stdout).toBe('number');
    for (const f of fs.readdirSync(path.join(dir, 'img/1'))) expect(fs.statSync(path.join(dir, 'img/1', f)).mode & 0o777, f).toBe(0o600);
    await waitNotAlive(pid);
    await restoreOk(path.join(dir, 'img'), pid, 'workload');
    await expectCarriesOn(pid, stdout, 'the restored workload');
    await expectStateOk(pid, stdout, 'the restored workload');
  });

  it('a pre-dump and a dump adding to it, both served: the memory tracker outlives the command; the chain restores whole', async () => {
    const dir = makeTempDir('served-incremental');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    const pre = await served(srv, ['pre-dump', '-t', String(pid), '-D', img, '--keep', '5', '--json']);
    expectOk(pre);
    await expectServed(srv, pre);
    const preJson = JSON.parse(pre.stdout) as { pids: number[]; stats: Record<string, unknown> };
    // The application's ckpt-init and its program: each tracked.
    expect(preJson.stats['memory.trackedProcesses'], pre.stdout).toBe(preJson.pids.length);
    await expectCarriesOn(pid, stdout, 'after the pre-dump');
    const inc = await served(srv, ['dump', '-t', String(pid), '-D', img, '--parent', img, '--keep', '5', '--json']);
    expectOk(inc);
    await expectServed(srv, inc);
    expect(Number(JSON.parse(inc.stdout).stats['memory.parentBytes']), inc.stdout).toBeGreaterThan(8 << 20);
    await waitNotAlive(pid);
    await restoreOk(img, pid, 'workload');
    await expectCarriesOn(pid, stdout, 'restored from the increment');
    await expectStateOk(pid, stdout, 'restored from the increment');
  });

  it("errors are the command's: one line, its exit status, --json errors as JSON", async () => {
    const r = await served(srv, ['dump', '-t', '999999', '-D', makeTempDir('served-err'), '--json']);
    expectCleanError(r, /999999/);
    await expectServed(srv, r, 1);
    expect(JSON.parse(r.stdout).error.message, r.stdout).toMatch(/999999/);
  });

  it('what it cannot run as the command itself would runs in the command: -v, another mount namespace, a config with code', async () => {
    const dir = makeTempDir('served-not');
    const { pid, stdout } = await startWorkload(dir, 4);
    // -v logs through the command's own process (the server is not asked).
    const verbose = await served(srv, ['dump', '--leave-running', '-v', '-t', String(pid), '-D', path.join(dir, 'img-v')]);
    expectOk(verbose);
    expect(verbose.stderr, 'no log').toMatch(/ckpt:/);
    expect(logLine(srv, verbose.pid), 'the server ran a -v command').toBeUndefined();
    // Another mount namespace: the command's own process sees the workload in another than its
    // own, and refuses; the server, in the workload's, would have dumped it.
    const other = await served(srv, ['dump', '--leave-running', '-t', String(pid), '-D', path.join(dir, 'img-ns')], {
      prefix: ['unshare', '-m', '--propagation', 'unchanged'],
    });
    expectCleanError(other, /another mount namespace than ckpt/);
    // unshare execs node: the command's pid is unshare's.
    expect(await waitLogLine(srv, other.pid)).toMatch(/runs in its own process: another mnt namespace/);
    // Another DEBUG (which a process reads once, at its start).
    const debug = await served(srv, ['dump', '--leave-running', '-t', String(pid), '-D', path.join(dir, 'img-debug')], { env: { DEBUG: 'nothing:here' } });
    expectOk(debug);
    expect(await waitLogLine(srv, debug.pid)).toMatch(/runs in its own process: another DEBUG/);
    // A config that is code (a module loaded once could not be loaded again).
    const cfgDir = path.join(dir, 'cfg');
    fs.mkdirSync(cfgDir);
    fs.writeFileSync(path.join(cfgDir, 'ckpt.config.mjs'), 'export default {};\n');
    const coded = await served(srv, ['dump', '--leave-running', '-t', String(pid), '-D', path.join(dir, 'img-cfg')], { cwd: cfgDir });
    expectOk(coded);
    expect(await waitLogLine(srv, coded.pid)).toMatch(/runs in its own process: a config with plugins or code/);
    for (const img of ['img-v', 'img-debug', 'img-cfg']) expectOk(await ckpt(['show', '--verify', path.join(dir, img)]));
    await expectCarriesOn(pid, stdout, 'the workload');
    await expectStateOk(pid, stdout, 'the workload');
  });

  it('one command at a time: a second one meanwhile runs in its own process; both images are whole', async () => {
    const dir = makeTempDir('served-busy');
    const a = await startWorkload(dir, 4, 'a');
    const b = await startWorkload(dir, 4, 'b');
    // The first holds the server for 1.5 s (frozen: the injected pause is in the freeze).
    const first = served(srv, ['dump', '--leave-running', '-t', String(a.pid), '-D', path.join(dir, 'img-a')], {
      env: { CKPT_FAULT: 'dump:stage:memory:sleep=1500' },
    });
    await waitFor(
      () => fs.existsSync(path.join(dir, 'img-a')),
      10_000,
      () => 'the first dump did not start',
    );
    const second = await served(srv, ['dump', '--leave-running', '-t', String(b.pid), '-D', path.join(dir, 'img-b')]);
    const r1 = await first;
    expectOk(r1);
    expectOk(second);
    await expectServed(srv, r1);
    expect(await waitLogLine(srv, second.pid)).toMatch(/runs in its own process: busy/);
    for (const [w, img] of [
      [a, 'img-a'],
      [b, 'img-b'],
    ] as const) {
      await expectCarriesOn(w.pid, w.stdout, img);
      await expectStateOk(w.pid, w.stdout, img);
      const v = await ckpt(['show', '--verify', path.join(dir, img)]);
      expectOk(v);
    }
  });

  it("the command's SIGINT, and its death, stop its dump: the process carries on, untraced, unchanged, and no image is left", async () => {
    const dir = makeTempDir('served-stop');
    const { pid, stdout } = await startWorkload(dir, 16);
    // An injected SIGINT (the user's Ctrl-C) at a stage.
    const img1 = path.join(dir, 'img-sigint');
    const r1 = await served(srv, ['dump', '-t', String(pid), '-D', img1], { env: { CKPT_FAULT: 'dump:stage:files:sigint' } });
    expectCleanError(r1, /dump interrupted/);
    await expectServed(srv, r1, 1);
    await expectCarriesOn(pid, stdout, 'after an injected SIGINT');
    expectNoImage(img1, 'an injected SIGINT');
    // A real SIGINT to the command, and the command SIGKILLed, while the dump is paused frozen.
    for (const sig of ['SIGINT', 'SIGKILL'] as const) {
      const img = path.join(dir, `img-${sig}`);
      const r = await served(srv, ['dump', '-t', String(pid), '-D', img], {
        env: { CKPT_FAULT: 'dump:stage:memory:sleep=1000' },
        onSpawn: (c) => {
          void waitFor(
            () => fs.existsSync(img),
            10_000,
            () => 'no dump',
          ).then(() => sleep(300).then(() => c.kill(sig)));
        },
      });
      if (sig === 'SIGINT') {
        expectCleanError(r, /stopping after the current step/, /dump interrupted/);
      } else {
        expect(r.signal, describeResult(r)).toBe('SIGKILL');
      }
      expect(await waitLogLine(srv, r.pid)).toMatch(/exit 1 \(stopped by its client\)/);
      await expectCarriesOn(pid, stdout, `after the command's ${sig}`);
      expectNoImage(img, sig);
    }
    await expectStateOk(pid, stdout, 'the workload after three stopped dumps');
    // And the server serves the next one.
    const next = await served(srv, ['dump', '--leave-running', '-t', String(pid), '-D', path.join(dir, 'img')]);
    expectOk(next);
    await expectServed(srv, next);
  });

  it("runs a restore -d for the command: the restored root is the command's child, then its subreaper's; the workload checks its own state", async () => {
    const { dir, pid, stdout, img } = await dumpedWorkload(srv, 'served-restore');
    // The command runs under a subreaper (as under a supervisor) that says, once the command has
    // exited, whose children the restored processes are: a root made by the server would be the
    // server's child, not the subreaper's.
    const wrapper = path.join(dir, 'subreaper.py');
    fs.writeFileSync(
      wrapper,
      [
        'import ctypes, json, os, subprocess, sys',
        'ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER',
        'r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)',
        'sys.stdout.buffer.write(r.stdout)',
        'pids = json.loads(r.stdout)["pids"] if r.returncode == 0 else []',
        'ppid = {p: int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) for p in pids}',
        'print(json.dumps({"me": os.getpid(), "ppid": ppid}), file=sys.stderr)',
        'sys.exit(r.returncode)',
      ].join('\n'),
    );
    const r = await served(srv, ['restore', '-d', '-D', img, '--json'], { prefix: ['python3', wrapper] });
    expectOk(r);
    const restored = JSON.parse(r.stdout) as { pids: number[] };
    for (const p of restored.pids) track(p, 'workload');
    expect(restored.pids).toContain(pid);
    // The server ran it (its log names the command's pid, the wrapper's child: found by the image).
    expect(
      readText(srv.log)
        .split('\n')
        .find((l) => l.includes(`ckpt restore -d -D ${img} --json`)),
      tail(srv.log),
    ).toMatch(/: exit 0, /);
    const seen = JSON.parse(r.stderr.trim().split('\n').at(-1)!) as { me: number; ppid: Record<string, number> };
    const roots = restored.pids.filter((p) => !restored.pids.includes(seen.ppid[p]));
    expect(roots.length, r.stderr).toBeGreaterThan(0);
    for (const p of roots) expect(seen.ppid[p], `the parent of restored root ${p} once the command exited (the subreaper is ${seen.me})`).toBe(seen.me);
    await expectCarriesOn(pid, stdout, 'the workload restored by the server');
    await expectStateOk(pid, stdout, 'the workload restored by the server');
    // A process of the host's pid namespace (no application, no new namespace; a session leader,
    // whose root calls setsid): the same.
    const host = await runFixture(dir, [bin('sleeper'), 'nanosleep', '600'], { name: 'sleeper', noNamespace: true });
    await waitForLine(host.stdout, /^start$/);
    const hostImg = path.join(dir, 'img-host');
    expectOk(await served(srv, ['dump', '-t', String(host.pid), '-D', hostImg]));
    await waitNotAlive(host.pid);
    const r2 = await served(srv, ['restore', '-d', '-D', hostImg, '--json'], { prefix: ['python3', wrapper] });
    expectOk(r2);
    const seen2 = JSON.parse(r2.stderr.trim().split('\n').at(-1)!) as { me: number; ppid: Record<string, number> };
    expect(JSON.parse(r2.stdout).pids, r2.stdout).toEqual([host.pid]);
    track(host.pid, 'sleeper');
    expect(seen2.ppid[host.pid], `the parent of the restored ${host.pid} once the command exited (the subreaper is ${seen2.me})`).toBe(seen2.me);
    expect(procStat(host.pid)?.[5], 'the restored session leader leads its session again').toBe(String(host.pid));
    expect(readLines(host.stdout), 'the restored sleeper woke').toEqual(['start']);
  });

  it('a restore request naming a pid that does not hold the connection is refused: that process is not touched', async () => {
    const dir = makeTempDir('served-forged');
    const victim = spawn('sleep', ['100'], { stdio: 'ignore' });
    track(victim.pid!, 'sleep');
    const version = (await ckpt(['--version'])).stdout.trim();
    const ns: Record<string, string> = {};
    for (const k of ['mnt', 'pid', 'net', 'ipc', 'uts', 'user', 'cgroup']) ns[k] = fs.readlinkSync(`/proc/self/ns/${k}`);
    const env: Record<string, string> = {};
    for (const k of ['DEBUG', 'NODE_PATH', 'CKPT_APPS_DIR']) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    // What the command sends (bin.ts), but with another process's pid.
    const request = {
      v: 1,
      version,
      bundle: fs.statSync(path.join(path.dirname(CLI), 'cli.cjs'), { bigint: true }).mtimeNs.toString(),
      argv: ['restore', '-d', '-D', path.join(dir, 'img')],
      cwd: dir,
      pid: victim.pid,
      env,
      uid: 0,
      umask: 0o22,
      ns,
      tty: [false, false],
    };
    const answer = await new Promise<string>((resolve, reject) => {
      const c = net.createConnection(srv.socket);
      let got = '';
      c.on('data', (d) => {
        got += d;
        if (got.includes('\n')) {
          c.destroy();
          resolve(got.split('\n')[0]);
        }
      });
      c.on('error', reject);
      c.write(`${JSON.stringify(request)}\n`);
    });
    expect(JSON.parse(answer), answer).toEqual({ refuse: `pid ${victim.pid} does not hold the connection's other end` });
    expect(procStatusField(victim.pid!, 'TracerPid'), 'the named process was not traced').toBe('0');
    expect(procState(victim.pid!)).toBe('S');
    expect(fs.readFileSync(`/proc/${victim.pid}/task/${victim.pid}/children`, 'utf8').trim(), 'it got no child').toBe('');
    victim.kill('SIGKILL');
  });

  it('a served restore that fails, is interrupted, or whose command is killed leaves nothing behind; the next one restores', async () => {
    const { pid, stdout, img } = await dumpedWorkload(srv, 'served-restore-fail');
    const stubs = () => processesMatching('ckpt-stub');
    const nothingLeft = async (what: string) => {
      await waitFor(
        () => !pidExists(pid) && stubs().length === 0,
        10_000,
        () => `${what}: left pid ${pid} (${procState(pid)}) or stubs ${JSON.stringify(stubs())}`,
      );
    };
    // A failure at a stage after the root was forked from the command (the workload is an
    // application: its root is the init of a fresh pid namespace, forked with CLONE_NEWPID).
    const failed = await served(srv, ['restore', '-d', '-D', img, '--json'], { env: { CKPT_FAULT: 'restore:stage:files:error' } });
    expectCleanError(failed, /injected fault at restore:stage:files/);
    expect(JSON.parse(failed.stdout).error.message, failed.stdout).toMatch(/injected fault/);
    await expectServed(srv, failed, 1);
    await nothingLeft('a failed restore');
    // An injected SIGINT there: rolled back.
    const stopped = await served(srv, ['restore', '-d', '-D', img], { env: { CKPT_FAULT: 'restore:stage:files:sigint' } });
    expectCleanError(stopped, /restore interrupted/);
    await expectServed(srv, stopped, 1);
    await nothingLeft('an interrupted restore');
    // The command SIGKILLed while its restore is paused (its stubs made): the server stops it and
    // undoes it.
    const killed = await served(srv, ['restore', '-d', '-D', img], {
      env: { CKPT_FAULT: 'restore:stage:memory:sleep=1500' },
      onSpawn: (c) => {
        void waitFor(
          () => stubs().length > 0,
          10_000,
          () => 'the restore made no stub',
        ).then(() => sleep(200).then(() => c.kill('SIGKILL')));
      },
    });
    expect(killed.signal, describeResult(killed)).toBe('SIGKILL');
    expect(await waitLogLine(srv, killed.pid)).toMatch(/exit 1 \(stopped by its client\)/);
    await nothingLeft('a restore whose command was killed');
    // And the next restore is whole.
    const again = await served(srv, ['restore', '-d', '-D', img, '--json']);
    expectOk(again);
    await expectServed(srv, again);
    for (const p of (JSON.parse(again.stdout) as { pids: number[] }).pids) track(p, 'workload');
    await expectCarriesOn(pid, stdout, 'restored after three failed restores');
    await expectStateOk(pid, stdout, 'restored after three failed restores');
  });

  it('the server killed mid-dump: the command says so in one line; the process carries on; the next command runs in its own process', async () => {
    const dir = makeTempDir('served-killed');
    const s = await startServer('server-killed');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    const r = await served(s, ['dump', '-t', String(pid), '-D', img, '--json'], { env: { CKPT_FAULT: 'dump:stage:memory:kill' } });
    expectCleanError(r, new RegExp(`the ckpt server \\(pid ${s.child.pid}\\) ended during the command`), /ckpt check/);
    expect(JSON.parse(r.stdout).error.code, r.stdout).toBe('ERR_CKPT_SERVER_LOST');
    await waitFor(
      () => s.child.signalCode,
      5000,
      () => 'the server is still running',
    );
    expectRunningFree(pid, 'the workload after its server was killed');
    // What the killed server left (a guard mapping in the process) is repaired as after a killed ckpt.
    expectOk(await ckpt(['check', '--repair']));
    await expectCarriesOn(pid, stdout, 'after the server was killed');
    await expectStateOk(pid, stdout, 'after the server was killed');
    // Its socket is left: ckpt check says so, and the next command finds no one there and runs
    // in its own process.
    expect(fs.existsSync(s.socket)).toBe(true);
    const check = await ckpt(['check', '--json'], { env: { CKPT_SERVER_SOCKET: s.socket } });
    expect(JSON.parse(check.stdout).server, check.stdout).toEqual({ socket: s.socket, state: 'stale' });
    const next = await served(s, ['dump', '--leave-running', '-t', String(pid), '-D', path.join(dir, 'img2')]);
    expectOk(next);
    // A new server takes the dead one's socket.
    const again = await startServer('server-again', s.socket);
    const served2 = await served(again, ['dump', '--leave-running', '-t', String(pid), '-D', path.join(dir, 'img3')]);
    expectOk(served2);
    await expectServed(again, served2);
    const running = await ckpt(['check', '--json'], { env: { CKPT_SERVER_SOCKET: again.socket } });
    expect(JSON.parse(running.stdout).server, running.stdout).toMatchObject({
      socket: again.socket,
      state: 'running',
      pid: again.child.pid,
      served: 1,
      busy: false,
    });
    const busy = spawn(process.execPath, [CLI, 'server', '--socket', again.socket], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    busy.stderr!.on('data', (d) => (err += d));
    const code = await new Promise((res) => busy.on('exit', res));
    expect(code, err).not.toBe(0);
    expect(err).toMatch(/ckpt: error: a ckpt server already listens on/);
    await stopServer(again);
    expect(again.child.exitCode, 'the server stopped by SIGTERM: its exit status').toBe(0);
    expect(fs.existsSync(again.socket), 'the socket of a server stopped by SIGTERM').toBe(false);
    // A dead server's socket is removed by ckpt check --repair.
    const dead = await startServer('server-dead');
    dead.child.kill('SIGKILL');
    await waitFor(
      () => dead.child.signalCode,
      5000,
      () => 'the server is still running',
    );
    const repair = await ckpt(['check', '--repair'], { env: { CKPT_SERVER_SOCKET: dead.socket } });
    expect(repair.stdout).toContain(`fixed  ${dead.socket} is the socket of a ckpt server that died: removed`);
    expect(fs.existsSync(dead.socket)).toBe(false);
  });
});
