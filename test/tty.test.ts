// Terminals (@ckpt/plugin-tty), with real processes on real ptys:
//   - a program on a pty whose master is in the image too (a tiny terminal emulator, the
//     tty_launcher fixture, in a `ckpt run` application): restored on a new pty pair;
//   - a program running under util-linux `script` (the master stays outside the image):
//     restored on a fresh pty whose master `ckpt restore` keeps (output to its stdout, piped
//     stdin to the terminal), or with --detach hands to a keeper writing a log file;
//   - `ckpt restore --tty` run on a pty (python's pty.spawn): the program gets that terminal.
// In each case: stdio on a /dev/pts/N, its raw-mode termios kept, the window size, the
// controlling terminal (tty_nr, ps), the foreground process group, /dev/tty, input and output.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  checksAfterRestore,
  CLI,
  ckpt,
  describeResult,
  dumpOk,
  expectCleanError,
  expectOk,
  expectRunningFree,
  isAlive,
  makeTempDir,
  pidExists,
  procStat,
  readLines,
  readText,
  runFixture,
  sleep,
  tracerPid,
  track,
  useCleanup,
  waitFor,
  waitNotAlive,
  waitForLine,
  waitPidFree,
} from './helpers.js';

useCleanup();

const PROG = path.join(BUILD_DIR, 'tty_prog');
const LAUNCHER = path.join(BUILD_DIR, 'tty_launcher');
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

// fds of FIFOs the tests hold open (closed after each test).
const openFds: number[] = [];
afterEach(() => {
  for (const fd of openFds.splice(0)) fs.closeSync(fd);
});

/** A FIFO held open read-write by the test: writes never block, readers never see EOF. */
function fifo(dir: string, name: string): { path: string; fd: number; send: (s: string) => void } {
  const p = path.join(dir, name);
  execFileSync('mkfifo', [p]);
  const fd = fs.openSync(p, fs.constants.O_RDWR);
  openFds.push(fd);
  return { path: p, fd, send: (s) => void fs.writeSync(fd, s) };
}

/** Complete lines of terminal output (carriage returns dropped). */
function termLines(text: string): string[] {
  const lines = text.replace(/\r/g, '').split('\n');
  lines.pop();
  return lines;
}

/** key=value fields of a status line of tty_prog. */
function fields(line: string): Record<string, string> {
  return Object.fromEntries(
    line
      .split(' ')
      .slice(1)
      .map((kv) => kv.split('=') as [string, string]),
  );
}

/** Waits for the n-th (0-based) line starting with `prefix` in the output `read()` returns. */
async function waitLine(read: () => string, prefix: string, n = 0, timeoutMs = 15_000): Promise<string> {
  return waitFor(
    () => termLines(read()).filter((l) => l.startsWith(prefix))[n],
    timeoutMs,
    () => `no line #${n + 1} starting with ${JSON.stringify(prefix)} in:\n${read().slice(-3000)}`,
  );
}

function count(read: () => string, prefix: string): number {
  return termLines(read()).filter((l) => l.startsWith(prefix)).length;
}

/** All descendants of pid, parents first. */
function descendants(pid: number): number[] {
  const out = children(pid);
  for (let i = 0; i < out.length; i++) out.push(...children(out[i]));
  return out;
}

function children(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function link(pid: number, fd: number): string {
  return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
}

/** tty_nr (field 7) and tpgid (field 8) of /proc/PID/stat. */
function ttyOf(pid: number): { ttyNr: number; tpgid: number; sid: number; pgid: number } {
  const st = procStat(pid)!;
  return { pgid: Number(st[4]), sid: Number(st[5]), ttyNr: Number(st[6]), tpgid: Number(st[7]) };
}

/** What ps shows as the controlling terminal ("pts/3", or "?"). */
function psTty(pid: number): string {
  return execFileSync('ps', ['-o', 'tty=', '-p', String(pid)])
    .toString()
    .trim();
}

/**
 * Asserts pid is on a pty slave as stdio, has it as controlling terminal and its process group is
 * that terminal's foreground group; a session leader unless `leader` is false. Returns "/dev/pts/N".
 */
function expectOnPty(pid: number, what: string, leader = true): string {
  const pts = link(pid, 0);
  expect(pts, `${what}: fd 0`).toMatch(/^\/dev\/pts\/\d+$/);
  for (const fd of [1, 2]) expect(link(pid, fd), `${what}: fd ${fd}`).toBe(pts);
  const rdev = fs.statSync(pts).rdev;
  const t = ttyOf(pid);
  // For pty slaves (major 136, small minors) st_rdev and tty_nr encode the device alike.
  expect(t.ttyNr, `${what}: controlling terminal (tty_nr) is ${pts}`).toBe(rdev);
  expect(psTty(pid), `${what}: ps -o tty=`).toBe(pts.slice('/dev/'.length));
  if (leader) expect(t.sid, `${what}: session leader`).toBe(pid);
  else expect(t.sid, `${what}: not a session leader`).not.toBe(pid);
  expect(t.tpgid, `${what}: foreground process group of its terminal`).toBe(t.pgid);
  return pts;
}

/** The termios and window state tty_prog set up before the checkpoint. */
function expectRawMode(f: Record<string, string>, what: string, winsize?: { rows: string; cols: string }, leader = true): void {
  expect({ isatty: f.isatty, echo: f.echo, icanon: f.icanon, vmin: f.vmin, vkill: f.vkill }, what).toEqual({
    isatty: '1',
    echo: '0',
    icanon: '0',
    vmin: '1',
    vkill: '11',
  });
  if (winsize) expect({ rows: f.rows, cols: f.cols }, `${what}: window size`).toEqual(winsize);
  expect(f.tpgrp, `${what}: foreground group (tcgetpgrp)`).toBe(f.pgrp);
  if (leader) expect(f.sid, `${what}: session`).toBe(f.pid);
}

interface Spawned {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnTracked(cmd: string, args: string[], marker: string): Spawned {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  track(child.pid!, marker);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, out: () => out, err: () => err, exited };
}

async function exitsWithin<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until the restored pid runs free (restored, detached). */
async function waitRestored(pid: number, what: () => string): Promise<void> {
  // Untraced and on a pty is not enough: the stub that becomes the process (its pid already, fd 0
  // ckpt restore's terminal, in ckpt restore's process group) is both between its clone and its
  // PTRACE_TRACEME. Its name is the program's (every one restored here is tty_prog) once restored.
  const ok = () => {
    try {
      if (fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== path.basename(PROG)) return false;
      return isAlive(pid) && tracerPid(pid) === 0 && link(pid, 0).startsWith('/dev/pts/');
    } catch {
      return false;
    }
  };
  await waitFor(ok, 20_000, () => `pid ${pid} not restored\n${what()}`);
}

/**
 * tty_prog under `script -qfc` (the master is script's, outside the image), checkpointed alone.
 * Returns its pid and the image; the original terminal's name and status line before the dump.
 */
async function progUnderScriptDumped(tag: string, command = `exec ${PROG}`, leader = true) {
  const dir = makeTempDir(tag);
  const input = fifo(dir, 'script.in');
  const started = await runFixture(dir, ['script', '-qfc', command, '/dev/null'], {
    noNamespace: true,
    stdin: input.path,
    name: 'script',
    marker: 'script',
  });
  const out = () => readText(started.stdout);
  await waitLine(out, 'ready ');
  const cmdOf = (pid: number) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  };
  const prog = await waitFor(
    () => descendants(started.pid).find((c) => cmdOf(c).startsWith(PROG)),
    10_000,
    () => 'tty_prog did not start under script',
  );
  track(prog, PROG);
  const oldPts = expectOnPty(prog, 'under script', leader);
  input.send('stat\n');
  const before = fields(await waitLine(out, 'stat '));
  expectRawMode(before, 'under script', undefined, leader);
  expect(before.tty).toBe(oldPts);
  const img = path.join(dir, 'img');
  await dumpOk(prog, img);
  await waitPidFree(prog); // its parent reaps it
  return { dir, prog, img, before };
}

describe('terminals', () => {
  it('a pty pair held inside the tree is restored as a new pair: termios, window, ctty, /dev/tty, input and output', async () => {
    const dir = makeTempDir('tty-pair');
    const input = fifo(dir, 'keys');
    const screen = path.join(dir, 'screen.out');
    const started = await runFixture(dir, [LAUNCHER, screen, input.path, PROG], { name: 'launcher', marker: LAUNCHER });
    const launcher = started.pid;
    const init = Number(procStat(launcher)![3]);
    track(init, 'ckpt-init');
    const out = () => readText(screen);
    await waitLine(out, 'ready ');
    const prog = children(launcher)[0];
    track(prog, PROG);
    const oldPts = expectOnPty(prog, 'before');
    expect(link(prog, 3), 'tty_prog keeps an fd on /dev/tty').toBe('/dev/tty');
    input.send('stat\n');
    const before = fields(await waitLine(out, 'stat '));
    expectRawMode(before, 'before', { rows: '30', cols: '100' });
    expect(before.tty).toBe(oldPts);
    await waitLine(out, 'devtty stat');

    const img = path.join(dir, 'img');
    await dumpOk(launcher, img);
    await waitNotAlive(prog);
    const show = await ckpt(['show', img, '--files']);
    expectOk(show);
    expect(show.stdout, 'ckpt show --files names the pty ends').toMatch(/^ptmx\|.*\|\/dev\/ptmx\|/m);
    expect(show.stdout).toMatch(/^pts\|.*\|\/dev\/pts\/\d+\|/m);
    expect(show.stdout).toMatch(/^pts\|.*\|\/dev\/tty\|/m);

    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    await waitRestored(prog, () => out());
    expectRunningFree(prog, 'restored tty_prog');
    expectRunningFree(launcher, 'restored launcher');
    const pts = expectOnPty(prog, 'restored');
    expect(link(prog, 3), 'the /dev/tty fd is on the new terminal').toBe(pts);
    // The launcher holds the master of that very pty.
    const masterFd = fs
      .readdirSync(`/proc/${launcher}/fd`)
      .map(Number)
      .find((fd) => link(launcher, fd) === '/dev/ptmx');
    expect(masterFd, 'the launcher has a /dev/ptmx fd again').toBeDefined();
    const info = fs.readFileSync(`/proc/${launcher}/fdinfo/${masterFd}`, 'utf8');
    expect(Number(/^tty-index:\s*(\d+)/m.exec(info)?.[1]), 'its master is the pty of tty_prog').toBe(Number(pts.split('/').pop()));

    // Keyboard input through the master reaches the program; its output comes back through it.
    input.send('stat\n');
    const after = fields(await waitLine(out, 'stat ', 1));
    expectRawMode(after, 'restored', { rows: '30', cols: '100' });
    expect(after.tty, 'ttyname(0) names the new pty').toBe(pts);
    expect(after.pid).toBe(before.pid);
    await waitLine(out, 'devtty stat', 1);
    input.send('hello pty\n');
    await waitLine(out, 'echo hello pty');
    process.kill(prog, 'SIGUSR1');
    expectRawMode(fields(await waitLine(out, 'report ')), 'report after SIGUSR1');
    await waitLine(out, 'devtty report');
    expect(count(out, 'ready '), 'the program was not restarted').toBe(1);
    input.send('quit\n');
    await waitLine(out, 'bye');
    await waitNotAlive(prog);
  });

  it('under script (master outside the image): ckpt restore keeps a new master, output to its stdout, piped stdin as input', async () => {
    const { prog, img, before } = await progUnderScriptDumped('tty-script');
    const r = spawnTracked(process.execPath, [CLI, 'restore', '-D', img], 'restore');
    await waitRestored(prog, () => r.err());
    const pts = expectOnPty(prog, 'restored');
    expect(link(prog, 3)).toBe(pts);
    // Output: through the new master, to ckpt restore's stdout.
    process.kill(prog, 'SIGUSR1');
    const rep = fields(await waitLine(r.out, 'report '));
    expectRawMode(rep, 'restored', { rows: before.rows, cols: before.cols });
    expect(rep.tty).toBe(pts);
    expect(rep.pid).toBe(String(prog));
    await waitLine(r.out, 'devtty report');
    // Input: ckpt restore's stdin (a pipe) is the terminal's keyboard.
    r.child.stdin!.write('stat\n');
    expectRawMode(fields(await waitLine(r.out, 'stat ')), 'stat after restore');
    r.child.stdin!.write('typed\n');
    await waitLine(r.out, 'echo typed');
    // The program exits: ckpt restore follows with its status, though its stdin stays open.
    r.child.stdin!.write('quit\n');
    await waitLine(r.out, 'bye');
    const st = await exitsWithin(r.exited, 15_000, 'ckpt restore after the program quit');
    expect(st, `ckpt restore exit\n${r.err()}`).toEqual({ code: 0, signal: null });
  });

  it('under script, restored with --detach: a keeper writes the terminal output to a log file', async () => {
    const { prog, img } = await progUnderScriptDumped('tty-detach');
    const r = await ckpt(['restore', '-D', img, '--detach']);
    track(prog, PROG);
    expectOk(r);
    const log = /its output goes to (\S+)/.exec(r.stderr)?.[1];
    expect(log, `stderr names the log file\n${r.stderr}`).toBeDefined();
    try {
      await waitRestored(prog, () => r.stderr);
      const pts = expectOnPty(prog, 'restored --detach');
      const read = () => readText(log!);
      process.kill(prog, 'SIGUSR1');
      const rep = fields(await waitLine(read, 'report '));
      expectRawMode(rep, 'restored --detach');
      expect(rep.tty).toBe(pts);
      await waitLine(read, 'devtty report');
      // The keeper holds the master until the last process closes the terminal, then exits.
      const index = pts.split('/').pop();
      const holders = () =>
        fs
          .readdirSync('/proc')
          .filter((p) => /^\d+$/.test(p))
          .filter((p) => {
            try {
              return fs.readdirSync(`/proc/${p}/fd`).some((fd) => {
                try {
                  return (
                    fs.readlinkSync(`/proc/${p}/fd/${fd}`) === '/dev/ptmx' &&
                    new RegExp(`^tty-index:\\s*${index}$`, 'm').test(fs.readFileSync(`/proc/${p}/fdinfo/${fd}`, 'utf8'))
                  );
                } catch {
                  return false;
                }
              });
            } catch {
              return false;
            }
          });
      expect(holders().length, 'one keeper holds the master').toBe(1);
      process.kill(prog, 'SIGKILL');
      await waitFor(
        () => holders().length === 0,
        15_000,
        () => `the keeper still holds the master: ${holders()}`,
      );
    } finally {
      fs.rmSync(log!, { force: true });
    }
  });

  it('restore --tty: the program gets the terminal of ckpt restore as stdio and controlling terminal; without one it fails cleanly', async () => {
    const { prog, img } = await progUnderScriptDumped('tty-own');
    // No terminal at all (the harness gives ckpt pipes): a clear error, nothing restored.
    const bad = await ckpt(['restore', '--tty', '-D', img, '--detach']);
    expectCleanError(bad, '--tty', /no terminal/);
    expect(pidExists(prog), 'nothing was restored').toBe(false);

    // ckpt restore --tty on a pty of its own: python's pty.spawn (its stdin pipe feeds the pty),
    // a terminal of 50x132 (under script the program had a 0x0 window).
    const py = spawnTracked(
      PYTHON,
      [
        '-c',
        'import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)',
        'sh',
        '-c',
        'stty rows 50 cols 132 && exec "$0" "$@"',
        process.execPath,
        CLI,
        'restore',
        '--tty',
        '-D',
        img,
      ],
      'pty.spawn',
    );
    await waitRestored(prog, () => py.out() + py.err());
    track(prog, PROG);
    const restorer = children(py.child.pid!)[0];
    expect(restorer, 'pty.spawn runs ckpt restore').toBeDefined();
    const own = link(restorer, 0);
    expect(own, "ckpt restore's stdin is a pty").toMatch(/^\/dev\/pts\/\d+$/);
    const pts = expectOnPty(prog, 'restored --tty');
    expect(pts, "the program's terminal is ckpt restore's own").toBe(own);
    expect(link(prog, 3), '/dev/tty fd too').toBe(own);
    // Typing reaches the program; the saved raw mode was applied to this terminal.
    // Told of the new window size as after a resize.
    expect(await waitLine(py.out, 'winch '), 'SIGWINCH with the real window size').toBe('winch rows=50 cols=132');
    py.child.stdin!.write('stat\n');
    const f = fields(await waitLine(py.out, 'stat '));
    expectRawMode(f, 'restored --tty', { rows: '50', cols: '132' });
    expect(f.tty).toBe(own);
    await waitLine(py.out, 'devtty stat');
    py.child.stdin!.write('on my tty\n');
    await waitLine(py.out, 'echo on my tty');
    expect(py.out(), 'no echo of the typed input (ECHO off)').not.toMatch(/^on my tty/m);
    py.child.stdin!.write('quit\n');
    await waitLine(py.out, 'bye');
    const st = await exitsWithin(py.exited, 15_000, 'pty.spawn(ckpt restore --tty)');
    expect(st, `exit\n${py.out()}\n${py.err()}`).toEqual({ code: 0, signal: null });
  });
  it('restore --tty of a shell job (not a session leader): it joins the session of ckpt restore, as its foreground group', async () => {
    // An interactive bash (job control) under script runs tty_prog as a foreground job.
    const { prog, img } = await progUnderScriptDumped('tty-job', `bash --norc --noprofile -ic '${PROG}; echo done'`, false);
    const py = spawnTracked(
      PYTHON,
      ['-c', 'import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)', process.execPath, CLI, 'restore', '--tty', '-D', img, '--log-file', `${img}.log`],
      'pty.spawn',
    );
    await waitRestored(prog, () => py.out() + py.err());
    track(prog, PROG);
    const restorer = children(py.child.pid!)[0];
    const own = link(restorer, 0);
    expect(expectOnPty(prog, 'restored job', false), "the job's terminal is ckpt restore's own").toBe(own);
    const t = ttyOf(prog);
    expect(t.sid, "in ckpt restore's session (pty.spawn made it a session leader)").toBe(restorer);
    expect(t.pgid, 'its own process group again').toBe(prog);
    const log = () =>
      readText(`${img}.log`)
        .split('\n')
        .filter((l) => /plugin:tty|pgid|pid \d+:/.test(l))
        .join('\n');
    expect(t.tpgid, `the foreground group of the terminal (restorer ${restorer})\n${log()}`).toBe(prog);
    py.child.stdin!.write('stat\n');
    const f = fields(await waitLine(py.out, 'stat '));
    expectRawMode(f, 'restored job', undefined, false);
    expect({ sid: f.sid, pgrp: f.pgrp, tty: f.tty }).toEqual({ sid: String(restorer), pgrp: String(prog), tty: own });
    py.child.stdin!.write('quit\n');
    await waitLine(py.out, 'bye');
    const st = await exitsWithin(py.exited, 15_000, 'pty.spawn(ckpt restore --tty)');
    expect(st, `exit\n${py.out()}\n${py.err()}`).toEqual({ code: 0, signal: null });
  });
});

describe('pty state', () => {
  it("a slave's owner and mode, packet mode, a locked slave, a slave never opened, bytes queued both ways, and a controlling terminal whose slave no process holds", async () => {
    const { lines } = await checksAfterRestore('ptys');
    expect(lines, lines.join('\n')).toEqual(['ok owner', 'ok packet', 'ok locked', 'ok unopened', 'ok queued', 'ok ctty', 'done']);
  });

  it('ckpt killed while the bytes queued in a pty are being read and put back: the process keeps every byte and its terminal settings', async () => {
    const dir = makeTempDir('ptys-kill');
    const work = path.join(dir, 'work');
    fs.mkdirSync(work);
    const report = path.join(dir, 'report');
    const go = path.join(dir, 'go');
    const fixture = path.join(BUILD_DIR, 'ptys');
    await runFixture(dir, [fixture, work, report, go], { noNamespace: true, name: 'ptys' });
    const pid = Number((await waitForLine(report, /^ready (\d+)$/)).match[1]);
    for (const p of [pid, ...fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)]) track(p, fixture);
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img'), '--leave-running'], { env: { CKPT_FAULT: 'tty:queue:kill' } });
    expect(r.signal, describeResult(r)).toBe('SIGKILL');
    await sleep(300);
    fs.writeFileSync(go, '');
    await waitForLine(report, /^done$/, 15_000);
    expect(readLines(report).slice(1)).toEqual(['ok owner', 'ok packet', 'ok locked', 'ok unopened', 'ok queued', 'ok ctty', 'done']);
  });
});
