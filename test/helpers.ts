// Shared helpers of the integration tests: running the CLI as a child process, polling output files
// and /proc, and cleaning up every process and temp dir a test made (even when the test fails).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, inject } from 'vitest';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The CLI entry point; CKPT_CLI overrides it (e.g. to run the suite against another build). */
export const CLI = process.env.CKPT_CLI ?? path.join(REPO_ROOT, 'packages/cli/dist/bin.cjs');
/**
 * The `ckpt` program as a user runs it (npx, a PATH lookup): bin/ckpt.js, a shell script first,
 * which runs dist/ckpt-client where a server's socket is there (see there), else Node.
 */
export const PROGRAM = path.join(REPO_ROOT, 'packages/cli/bin/ckpt.js');
export const BUILD_DIR = path.join(REPO_ROOT, 'test/.build');
export const FIXTURES_DIR = path.join(REPO_ROOT, 'test/fixtures');

/**
 * This run's key directory (made by the global setup, removed after the run): every ckpt the
 * tests start, and the API in-process, sign and trust with it, never with the machine's keys.
 */
export const KEY_DIR = inject('ckptKeyDir');
process.env.CKPT_KEY_DIR = KEY_DIR;

/** Path of a compiled C fixture (built by test/setup/build-fixtures.ts). */
export function bin(name: 'workload' | 'sleeper' | 'fdkinds' | 'traced' | 'guarded'): string {
  return path.join(BUILD_DIR, name);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------------
// Running the CLI

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  args: string[];
}

/**
 * Runs `node CLI ...args` (with `program`, the PROGRAM itself), never throws; kills it (and fails
 * loudly) after timeoutMs.
 */
export function ckpt(
  args: string[],
  opts: { timeoutMs?: number; cwd?: string; env?: Record<string, string>; onSpawn?: (child: ChildProcess) => void; prefix?: string[]; program?: boolean } = {},
): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 50_000;
  // prefix: a command ckpt runs under (ip netns exec NS).
  const [cmd, ...pre] = [...(opts.prefix ?? []), ...(opts.program ? [PROGRAM] : [process.execPath, CLI])];
  return new Promise((resolve) => {
    const child = spawn(cmd, [...pre, ...args], {
      cwd: opts.cwd ?? REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '', ...opts.env },
    });
    opts.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[test harness] ckpt ${args.join(' ')} did not finish within ${timeoutMs} ms: killed\n`;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(err), args });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, args });
    });
  });
}

export function describeResult(r: CliResult): string {
  return (
    `ckpt ${r.args.join(' ')}\n  exit code: ${r.code} signal: ${r.signal}\n` +
    `  stdout: ${JSON.stringify(r.stdout.slice(0, 4000))}\n  stderr: ${JSON.stringify(r.stderr.slice(0, 4000))}`
  );
}

/** Asserts the command succeeded (exit 0). */
export function expectOk(r: CliResult): void {
  if (r.code !== 0) throw new Error(`expected success\n${describeResult(r)}`);
}

const STACK_LINE = /^\s+at /m;

/**
 * Asserts the contract's error shape: non-zero exit (not a crash by signal), a line starting with
 * `ckpt: error:` on stderr, no JavaScript stack trace, and every pattern in `mentions` matched by
 * stderr (strings are matched literally).
 */
export function expectCleanError(r: CliResult, ...mentions: (RegExp | string)[]): void {
  const ctx = describeResult(r);
  expect(r.signal, `killed by a signal\n${ctx}`).toBeNull();
  expect(r.code, `expected a non-zero exit code\n${ctx}`).not.toBe(0);
  expect(r.code, `expected an exit code\n${ctx}`).not.toBeNull();
  expect(r.stderr, `stderr has no "ckpt: error:" line\n${ctx}`).toMatch(/^ckpt: error:/m);
  expect(STACK_LINE.test(r.stderr), `stderr holds a stack trace\n${ctx}`).toBe(false);
  expect(STACK_LINE.test(r.stdout), `stdout holds a stack trace\n${ctx}`).toBe(false);
  for (const m of mentions) {
    if (typeof m === 'string') expect(r.stderr.includes(m), `stderr does not mention ${JSON.stringify(m)}\n${ctx}`).toBe(true);
    else expect(m.test(r.stderr), `stderr does not match ${m}\n${ctx}`).toBe(true);
  }
}

/** Word-boundary regexp for a number (so pid 12 does not match inside 3120). */
export function numRe(n: number): RegExp {
  return new RegExp(`(^|[^0-9])${n}([^0-9]|$)`, 'm');
}

// ------------------------------------------------------------------------------------------------
// Process tracking and cleanup

interface Tracked {
  pid: number;
  marker: string; // a string the process's cmdline contains; guards against killing a reused pid
}
const tracked: Tracked[] = [];
const tempDirs: string[] = [];

/** Remembers a process to kill in afterEach (only if its cmdline still contains `marker`). */
export function track(pid: number, marker: string): void {
  if (!tracked.some((t) => t.pid === pid && t.marker === marker)) tracked.push({ pid, marker });
}

/** Pids the tests of this file started (still tracked). */
export function trackedPids(): Set<number> {
  return new Set(tracked.map((t) => t.pid));
}

export async function cleanupProcesses(): Promise<void> {
  const list = tracked.splice(0);
  const killed: number[] = [];
  for (const t of list) {
    const cmd = cmdline(t.pid);
    if (cmd?.join('\0').includes(t.marker)) {
      try {
        process.kill(t.pid, 'SIGKILL');
        killed.push(t.pid);
      } catch {
        /* already gone */
      }
    }
  }
  // Gone, or a zombie without threads (a thread group's zombie leader outlives nothing).
  const threadsLeft = (pid: number) => {
    try {
      return fs.readdirSync(`/proc/${pid}/task`).length;
    } catch {
      return 0;
    }
  };
  for (const pid of killed)
    await waitFor(
      () => !isAlive(pid) && threadsLeft(pid) <= 1,
      15_000,
      () => `pid ${pid} did not die`,
    ).catch(() => {});
}

export function makeTempDir(tag = 'ckpt'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ckpt-test-${tag}-`));
  tempDirs.push(dir);
  return dir;
}

/** Removes the temp dirs of the test (kept, and listed, when CKPT_TEST_KEEP=1, for debugging). */
export function cleanupTempDirs(): void {
  const dirs = tempDirs.splice(0);
  if (process.env.CKPT_TEST_KEEP === '1') {
    if (dirs.length) console.warn(`CKPT_TEST_KEEP=1: kept ${dirs.join(' ')}`);
    return;
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}

/** Registers the afterEach cleanup (processes first, then temp dirs). Call once per test file. */
export function useCleanup(): void {
  afterEach(async () => {
    await cleanupProcesses();
    cleanupTempDirs();
  });
}

// ------------------------------------------------------------------------------------------------
// /proc

export function procStat(pid: number): string[] | null {
  let s: string;
  try {
    s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) state ..." where comm may hold spaces and parentheses
  const close = s.lastIndexOf(')');
  return [
    s.slice(0, s.indexOf(' ')),
    s.slice(s.indexOf('(') + 1, close),
    ...s
      .slice(close + 2)
      .trim()
      .split(' '),
  ];
}

/** The one-letter state of /proc/PID/stat (R, S, D, T, t, Z, X...), or null if there is no such pid. */
export function procState(pid: number): string | null {
  return procStat(pid)?.[2] ?? null;
}

/** Alive = exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const st = procState(pid);
  return st !== null && st !== 'Z' && st !== 'X';
}

export function pidExists(pid: number): boolean {
  return fs.existsSync(`/proc/${pid}`);
}

export function procStatusField(pid: number, field: string): string | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = s.match(new RegExp(`^${field}:\\s*(.*)$`, 'm'));
    return m ? m[1].trim() : null;
  } catch {
    return null;
  }
}

/** The pid as the process itself sees it (inside the pid namespace `ckpt run` gives it). */
export function nsPidOf(pid: number): number | null {
  const v = procStatusField(pid, 'NSpid');
  if (!v) return null;
  const ids = v.split(/\s+/).filter(Boolean).map(Number);
  return ids[ids.length - 1];
}

export function tracerPid(pid: number): number | null {
  const v = procStatusField(pid, 'TracerPid');
  return v === null ? null : Number(v);
}

export function cmdline(pid: number): string[] | null {
  try {
    let s = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    // A thread group whose main thread exited shows none: its live threads still do.
    for (const t of s === '' ? fs.readdirSync(`/proc/${pid}/task`) : []) {
      s = fs.readFileSync(`/proc/${pid}/task/${t}/cmdline`, 'utf8');
      if (s) break;
    }
    if (s === '') return [];
    return s.replace(/\0$/, '').split('\0');
  } catch {
    return null;
  }
}

export function exe(pid: number): string | null {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}

/** Syscall number the task is blocked in (/proc/PID/syscall), null when running or unknown. */
export function currentSyscall(pid: number): number | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').trim();
    const n = Number(s.split(' ')[0]);
    return Number.isInteger(n) && n >= 0 ? n : null;
  } catch {
    return null;
  }
}

export async function waitInSyscall(pid: number, nrs: number[], timeoutMs = 15_000): Promise<void> {
  await waitFor(
    () => {
      const n = currentSyscall(pid);
      return n !== null && nrs.includes(n) && ['S', 'D'].includes(procState(pid) ?? '');
    },
    timeoutMs,
    () => `pid ${pid} not blocked in syscall ${nrs.join('/')} (now: ${currentSyscall(pid)}, state ${procState(pid)})`,
  );
}

/** All pids in /proc. */
export function allPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number);
}

/** Live (non-zombie) processes whose cmdline contains `needle`, excluding `except`. */
export function processesMatching(needle: string, except: Set<number> = new Set()): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = [];
  for (const pid of allPids()) {
    if (except.has(pid) || pid === process.pid) continue;
    const cmd = cmdline(pid);
    if (!cmd || !isAlive(pid)) continue;
    const joined = cmd.join(' ');
    if (joined.includes(needle)) out.push({ pid, cmd: joined });
  }
  return out;
}

/**
 * Live processes that did not exist in `before` and that look like ours: their cmdline contains one of
 * `needles` (fixture paths), or they are orphans (parent init) whose cmdline contains one of
 * `orphanNeedles` (the CLI, a stub) or whose comm starts with "ckpt" — a helper left behind.
 */
export function newSuspects(before: Set<number>, needles: string[], orphanNeedles: string[] = []): { pid: number; ppid: number; cmd: string; comm: string }[] {
  const out: { pid: number; ppid: number; cmd: string; comm: string }[] = [];
  for (const pid of allPids()) {
    if (before.has(pid) || pid === process.pid || !isAlive(pid)) continue;
    const cmd = (cmdline(pid) ?? []).join(' ');
    const stat = procStat(pid);
    const comm = stat?.[1] ?? '';
    const ppid = Number(stat?.[3] ?? -1);
    const orphan = ppid === 1 || ppid === 0;
    if (needles.some((n) => cmd.includes(n)) || (orphan && (orphanNeedles.some((n) => cmd.includes(n)) || /^ckpt/i.test(comm)))) {
      out.push({ pid, ppid, cmd, comm });
    }
  }
  return out;
}

/** A pid number no process has right now (from the upper half of pid_max). */
export function freePid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()) || 32768;
  for (let i = 0; i < 1000; i++) {
    const pid = Math.floor(max / 2 + Math.random() * (max / 2 - 2));
    if (!pidExists(pid)) return pid;
  }
  throw new Error('no free pid found');
}

export async function waitNotAlive(pid: number, timeoutMs = 15_000): Promise<void> {
  await waitFor(
    () => !isAlive(pid),
    timeoutMs,
    () => `pid ${pid} still alive (state ${procState(pid)})`,
  );
}

/** Waits until the pid has no /proc entry at all (dead and reaped), so it can be taken again. */
export async function waitPidFree(pid: number, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    () => !pidExists(pid),
    timeoutMs,
    () => `pid ${pid} still exists (state ${procState(pid)})`,
  );
}

/** SIGKILLs pid and waits until it is reaped. */
export async function killAndWaitGone(pid: number, timeoutMs = 20_000): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone already */
  }
  await waitPidFree(pid, timeoutMs);
}

// ------------------------------------------------------------------------------------------------
// Polling files

export async function waitFor<T>(fn: () => T | undefined | null | false, timeoutMs: number, what: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== null && v !== false) return v as T;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what()}`);
    await sleep(50);
  }
}

export function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Complete lines of a file (a trailing partial line is left out). */
export function readLines(file: string): string[] {
  const t = readText(file);
  const lines = t.split('\n');
  lines.pop(); // partial or empty tail
  return lines;
}

export function tail(file: string, n = 25): string {
  const l = readText(file).split('\n');
  return `--- last lines of ${file} ---\n${l.slice(-n).join('\n')}\n---`;
}

/**
 * Waits for a complete line matching `re` in `file`, at line index >= fromLine. Returns the match and
 * the line index.
 */
export async function waitForLine(file: string, re: RegExp, timeoutMs = 15_000, fromLine = 0): Promise<{ match: RegExpMatchArray; index: number }> {
  return waitFor(
    () => {
      const lines = readLines(file);
      for (let i = fromLine; i < lines.length; i++) {
        const m = lines[i].match(re);
        if (m) return { match: m, index: i };
      }
      return undefined;
    },
    timeoutMs,
    () => `no line matching ${re} in ${file} (from line ${fromLine})\n${tail(file)}`,
  );
}

/** Numbers captured by the first group of `re` on each complete line, in file order. */
export function numbersOf(file: string, re: RegExp): number[] {
  const out: number[] = [];
  for (const l of readLines(file)) {
    const m = l.match(re);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

export const TICK_RE = /^tick (\d+)$/;

export function ticks(file: string): number[] {
  return numbersOf(file, TICK_RE);
}

export function lastTick(file: string): number {
  const t = ticks(file);
  return t.length ? t[t.length - 1] : 0;
}

export async function waitForTick(file: string, atLeast: number, timeoutMs = 20_000, re = TICK_RE): Promise<number> {
  return waitFor(
    () => {
      const t = numbersOf(file, re);
      const last = t.length ? t[t.length - 1] : 0;
      return last >= atLeast ? last : undefined;
    },
    timeoutMs,
    () => `no ${re} >= ${atLeast} in ${file}\n${tail(file)}`,
  );
}

/** Asserts xs is exactly first, first+1, ..., with a readable message showing where it breaks. */
export function expectConsecutive(xs: number[], first: number, what: string): void {
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] !== first + i) {
      throw new Error(
        `${what}: not consecutive at index ${i}: expected ${first + i}, got ${xs[i]} ` + `(around: ${xs.slice(Math.max(0, i - 5), i + 5).join(',')})`,
      );
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Starting fixtures and restoring

export interface Started {
  pid: number;
  stdout: string;
  stderr: string;
  run: CliResult;
}

/** Parses a pid from plain CLI output: the first integer on the first non-empty line. */
export function parsePid(out: string): number | null {
  const line = out.split('\n').find((l) => l.trim() !== '');
  const m = line?.match(/\d+/);
  return m ? Number(m[0]) : null;
}

/**
 * `ckpt run --stdout F --stderr F -- ...cmd` in `dir`; returns the pid (tracked for cleanup with
 * `marker`, by default cmd[0]).
 */
export async function runFixture(
  dir: string,
  cmd: string[],
  opts: { json?: boolean; marker?: string; name?: string; stdin?: string; cwd?: string; noNamespace?: boolean } = {},
): Promise<Started> {
  const name = opts.name ?? 'proc';
  const stdout = path.join(dir, `${name}.stdout`);
  const stderr = path.join(dir, `${name}.stderr`);
  const args = ['run', '--stdout', stdout, '--stderr', stderr];
  if (opts.stdin) args.push('--stdin', opts.stdin);
  if (opts.cwd) args.push('--cwd', opts.cwd);
  if (opts.json) args.push('--json');
  if (opts.noNamespace) args.push('--no-namespace');
  args.push('--', ...cmd);
  const run = await ckpt(args);
  expectOk(run);
  let pid: number | null;
  if (opts.json) {
    let j: unknown;
    try {
      j = JSON.parse(run.stdout);
    } catch (e) {
      throw new Error(`ckpt run --json printed no JSON: ${e}\n${describeResult(run)}`);
    }
    pid = (j as { pid?: unknown }).pid as number;
    expect(Number.isInteger(pid), `ckpt run --json: no integer "pid"\n${describeResult(run)}`).toBe(true);
  } else {
    pid = parsePid(run.stdout);
    expect(pid, `ckpt run printed no pid\n${describeResult(run)}`).not.toBeNull();
  }
  track(pid!, opts.marker ?? cmd[0]);
  return { pid: pid!, stdout, stderr, run };
}

/** `ckpt dump -t pid -D dir [...extra]`, asserting success. */
export async function dumpOk(pid: number, dir: string, extra: string[] = []): Promise<CliResult> {
  const r = await ckpt(['dump', '-t', String(pid), '-D', dir, ...extra]);
  expectOk(r);
  return r;
}

/**
 * `ckpt restore -D dir --detach [--json]`, asserting success and that the printed pid is
 * `expectPid`; the restored process is tracked for cleanup with `marker`.
 */
export async function restoreOk(dir: string, expectPid: number, marker: string, json = false): Promise<CliResult> {
  const r = await ckpt(['restore', '-D', dir, '--detach', ...(json ? ['--json'] : [])]);
  track(expectPid, marker);
  expectOk(r);
  let pid: number | null;
  if (json) {
    let j: { pids?: unknown };
    try {
      j = JSON.parse(r.stdout);
    } catch (e) {
      throw new Error(`ckpt restore --json printed no JSON: ${e}\n${describeResult(r)}`);
    }
    expect(Array.isArray(j.pids), `no "pids" array\n${describeResult(r)}`).toBe(true);
    pid = (j.pids as unknown[])[0] as number;
  } else {
    pid = parsePid(r.stdout);
  }
  expect(pid, `restore printed pid ${pid}, expected the original ${expectPid}\n${describeResult(r)}`).toBe(expectPid);
  expect(isAlive(expectPid), `restored pid ${expectPid} is not alive (state ${procState(expectPid)})`).toBe(true);
  return r;
}

/** Regular files under dir (recursively) with size and mode. */
export function imageFiles(dir: string): { file: string; size: number; mode: number }[] {
  const out: { file: string; size: number; mode: number }[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const st = fs.statSync(p);
        out.push({ file: p, size: st.size, mode: st.mode & 0o7777 });
      }
    }
  };
  walk(dir);
  return out;
}

/** Asserts the process runs free: alive, not stopped, not traced. */
export function expectRunningFree(pid: number, what = `pid ${pid}`): void {
  const st = procState(pid);
  expect(isAlive(pid), `${what} is not alive (state ${st})`).toBe(true);
  expect(['t', 'T'].includes(st ?? ''), `${what} is stopped (state ${st})`).toBe(false);
  expect(tracerPid(pid), `${what} is traced`).toBe(0);
}

// ------------------------------------------------------------------------------------------------
// A ticking workload, and the network lock table

/** The C workload (`ckpt run`) with `mib` MiB of heap, ticking; its output in `out-<name>/`. */
export async function startWorkload(dir: string, mib: number, name = 'workload'): Promise<Started> {
  const outdir = path.join(dir, `out-${name}`);
  fs.mkdirSync(outdir, { recursive: true });
  const p = await runFixture(dir, [bin('workload'), String(mib), outdir], { name });
  await waitForLine(p.stdout, /^start pid=/);
  await waitForTick(p.stdout, 2);
  return p;
}

/** The process goes on as before: free (not stopped, not traced), and ticking past where it was. */
export async function expectCarriesOn(pid: number, stdout: string, what: string): Promise<void> {
  expectRunningFree(pid, what);
  await waitForTick(stdout, lastTick(stdout) + 2, 10_000);
}

/** The C workload's answer to SIGUSR1: its tick and its own check of heap, mappings, FPU and signal mask. */
export const USR1_RE = /^usr1 tick=(\d+) heap=(\w+) priv=(\w+) shared=(\w+) fpu=(\w+) mask=(\w+)$/;

/** Nothing of an image was left: the directory the dump made is gone with everything in it. */
export function expectNoImage(dir: string, what: string): void {
  const left = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  expect(left, `${what}: left in the image directory`).toEqual([]);
  expect(fs.existsSync(dir), `${what}: the image directory the dump made is still there`).toBe(false);
}

/** ckpt's nftables table as `nft list` prints it ('' when there is none). */
export function nftCkptTable(): string {
  try {
    return execFileSync('nft', ['list', 'table', 'inet', 'ckpt'], { encoding: 'utf8' });
  } catch {
    return '';
  }
}

/** True when a connection with this port is blocked by ckpt. */
export const portBlocked = (port: number): boolean => new RegExp(`\\. ${port}\\b|\\b${port} \\.`).test(nftCkptTable());

/**
 * A fixture that takes only its report file (FIXTURE REPORT) and says "ready PID" there, started
 * outside any namespace in a fresh directory (tagged `tag`): its directory, report, pid (tracked)
 * and path.
 */
export async function startReporting(name: string, tag: string): Promise<{ dir: string; report: string; pid: number; fixture: string }> {
  const dir = makeTempDir(tag);
  const report = path.join(dir, 'report');
  const fixture = path.join(BUILD_DIR, name);
  await runFixture(dir, [fixture, report], { noNamespace: true, name });
  const pid = Number((await waitForLine(report, /^ready (\d+)$/)).match[1]);
  track(pid, fixture);
  return { dir, report, pid, fixture };
}

/**
 * A check fixture (FIXTURE WORK REPORT GO, see test/fixtures/report.h) started in a fresh
 * directory and dumped (which kills it and its children); `between` runs before the restore. The
 * restored process runs its checks once GO exists: their lines (up to "done") are returned.
 */
export async function checksAfterRestore(
  name: string,
  between: (p: { pid: number; work: string }) => void | Promise<void> = () => {},
  opts: { leaveRunning?: boolean; dumpArgs?: string[]; dumpEnv?: Record<string, string> } = {},
) {
  const dir = makeTempDir(name);
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const reportFile = path.join(dir, 'report');
  const go = path.join(dir, 'go');
  const img = path.join(dir, 'img');
  const fixture = path.join(BUILD_DIR, name);
  await runFixture(dir, [fixture, work, reportFile, go], { noNamespace: true, name });
  const pid = Number((await waitForLine(reportFile, /^ready (\d+)$/)).match[1]);
  const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  for (const p of [pid, ...children]) track(p, fixture);
  // --leave-running: the process runs on during the dump, then is killed for the restore.
  const dump = await ckpt(['dump', '-t', String(pid), '-D', img, '--json', ...(opts.leaveRunning ? ['--leave-running'] : []), ...(opts.dumpArgs ?? [])], {
    env: opts.dumpEnv,
  });
  expectOk(dump);
  if (opts.leaveRunning) for (const p of [pid, ...children]) await killAndWaitGone(p);
  await waitNotAlive(pid);
  await between({ pid, work });
  const from = readLines(reportFile).length;
  const restore = await ckpt(['restore', '-D', img, '--detach', '--json']);
  expectOk(restore);
  for (const p of [pid, ...children]) track(p, fixture);
  fs.writeFileSync(go, '');
  await waitForLine(reportFile, /^done$/, 15_000, from);
  type Stats = { stats: Record<string, number | string> };
  return { pid, work, lines: readLines(reportFile).slice(from), dump: JSON.parse(dump.stdout) as Stats, restore: JSON.parse(restore.stdout) as Stats };
}
