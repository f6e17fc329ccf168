// npm run bench: how fast ckpt dumps and restores processes, and how long a user of its command
// line waits, next to references measured in the same run on this machine.
//
//   node scripts/bench.mjs [--sizes 64,1024] [--runs 3] [--only GROUPS] [--compare BIN] [--json]
//
//   --sizes 64,1024  heap sizes (MiB) of the memory workload, for the groups "sizes" and "downtime"
//   --runs N         runs of every measurement (default 3); tables give the median, min and max
//   --only GROUPS    a comma list of the groups to run (default: all of them, in this order):
//       startup   CLI start-up: `ckpt --version` and `ckpt --help` wall time next to `node -e 0`
//       cli       the command line on the 16 MiB (a small process) and the 64 MiB workload:
//                 `ckpt dump` (kills), `ckpt restore -d` and `ckpt dump --leave-running` run as
//                 child processes (packages/cli/bin/ckpt.js, the program npx and PATH run),
//                 wall time around the spawn, next to `node -e 0` (wall - node and wall / node)
//                 and to the same operations through the API
//       server    the same commands with a `ckpt server` running (started here, on a socket of its
//                 own): `ckpt dump` (kills), `ckpt restore -d` of its image and `ckpt dump
//                 --leave-running` of an idle process, the 16 and 64 MiB workloads, 200 threads,
//                 a process with 2000 open files, the 16-process tree, the 64-process
//                 copy-on-write tree and the memory workload of each --sizes above 64 MiB, in
//                 their own process (CKPT_SERVER=off) and served (through dist/ckpt-client, where
//                 built), next to `node -e 0` (and --compare's)
//       sizes     the memory workload (scripts/bench/workload.c) of each --sizes: dump and restore
//                 through the API next to memcpy and write() into the page cache
//       downtime  a --leave-running dump as the process sees it (scripts/bench/stall.c, a 1 ms loop
//                 that reports its longest stall), through the API and the command line
//       shapes    an idle process (the reference of this group), a 16-process tree, a 64-process
//                 copy-on-write tree (memory after / before), 32 and 200 threads, 2000 open files,
//                 a 1 GiB open file saved by content
//       python    python3 holding 500 MiB (scripts/bench/holder.py: random bytes, SHA-256 checked
//                 from inside after every operation, its own 1 ms stall loop for the downtime)
//       node      node serving HTTP (scripts/bench/http-server.cjs) with a keep-alive connection
//                 from this script, outside the dumped tree: dump --leave-running and dump+restore;
//                 the same connection must get an answer after each (needs nft, as ckpt does)
//       apps      servers of other runtimes, those installed: nginx (a master and two workers),
//                 Go's net/http (scripts/bench/goserver.go, built with go) and the JDK's HTTP
//                 server (scripts/bench/HelloServer.java, compiled with javac); each must answer
//                 a new connection (as the same pid) after every operation. An absent one is
//                 SKIPPED, saying which program is missing
//                 python, node and apps: each run is one process through dump --leave-running and
//                 dump+restore by the API, then the command line (then BIN), next to write() of
//                 the touched bytes (API), `node -e 0` (CLI), the calls (downtime seen inside)
//       lazy      restore --lazy of a 1 GiB process (scripts/bench/lazy.c): the time to its first
//                 instruction after the restore, seen from inside (its CLOCK_MONOTONIC against the
//                 restore's start), through the API and the command line, next to the eager
//                 restore's; the time until all its pages are in; references: read() of the
//                 page-cached blob size into fresh memory (ref.c), `node -e 0`
//       migrate   ckpt migrate of a 1 GiB process writing 1% of its memory a second
//                 (test/fixtures/migrant.c) between two network namespaces with an sshd each, on a
//                 veth bridge (scripts/hosts.mjs): a -> b, then back lazily, then to b lazily
//                 with the images through ssh itself (--no-direct); the downtime seen from inside
//                 (its longest stall, to a second after it runs there) and as the source reports
//                 it, the final round's send, the rounds, bytes sent, wall; reference: `ssh b
//                 true`. Then a dump of it to a page server on a,
//                 next to a same-run nc-style copy of its pages over the same link
//                 (scripts/bench/tcpcopy.py)
//   --compare BIN    also run the workloads' dump and restore through another checkpointer with
//                    CRIU's command line: `BIN dump -t PID -D DIR --shell-job` (+ --leave-running,
//                    + --tcp-established when there are connections), `BIN restore -D DIR
//                    --shell-job -d` (+ --tcp-established); its wall time sits in a column next to
//                    ckpt's command line's, with the ratio ckpt/BIN. When BIN fails, the cell says
//                    "failed: <its first error line>" and the bench goes on.
//   --json           after the tables, print every row (all groups) as one JSON line
//
// Workloads are started detached (via `ckpt run --no-namespace`, not timed), dumped and restored,
// checked (the restored heap, threads, fds, hash, the HTTP connection), killed and reaped (also on
// failure and SIGINT). API figures are measured around the in-process call (no Node start-up);
// CLI and BIN figures are the wall time around the child process. "image du" is the disk usage of
// the image directory (as du counts it), "touched" the anonymous memory of the dumped processes at
// the dump (the sum of their Pss_Anon: pages shared copy-on-write counted once). "downtime seen
// inside" is the longest stall the process's own 1 ms loop saw; for dump+restore, less the wait
// for the dumped pids to be reaped (by init when it is their parent: slow on some hosts), as the
// restore figures of "sizes" leave that wait out. A first, untimed, dump and restore of an idle
// process takes this process's one-time costs out of the first figures.
// Units: GB = 1e9 bytes, MB = 1e6 bytes; sizes are MiB (2^20).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  writeFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
} from 'node:fs';
import net from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import { createCkpt } from '../packages/api/dist/index.js';
import { makeHosts, sshdAvailable } from './hosts.mjs';
import { native } from '../native/dist/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'packages/cli/dist/bin.cjs');
/** The `ckpt` command as users run it (the package's bin). */
const ckptBin = join(root, 'packages/cli/bin/ckpt.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = 1 << 20;
const GiB = 1 << 30;

// ---- arguments --------------------------------------------------------------------------------
const GROUPS = ['startup', 'cli', 'server', 'sizes', 'downtime', 'shapes', 'python', 'node', 'apps', 'incremental', 'compress', 'periodic', 'lazy', 'migrate'];
const USAGE = `usage: node scripts/bench.mjs [--sizes 64,1024] [--runs 3] [--only ${GROUPS.join(',')}] [--compare BIN] [--json]`;
const args = process.argv.slice(2);
let sizes = [64, 1024];
let runs = 3;
let json = false;
let only = new Set(GROUPS);
let compareBin = null;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const value = () => {
    if (a.includes('=')) return a.slice(a.indexOf('=') + 1);
    if (i + 1 >= args.length) usage(`${a} needs a value`);
    return args[++i];
  };
  if (a === '--json') json = true;
  else if (a === '--sizes' || a.startsWith('--sizes=')) {
    sizes = value()
      .split(',')
      .map((s) => Number(s.trim()));
    if (!sizes.length || sizes.some((s) => !Number.isInteger(s) || s <= 0)) usage('--sizes takes positive integers (MiB), e.g. --sizes 64,256');
  } else if (a === '--runs' || a.startsWith('--runs=')) {
    runs = Number(value());
    if (!Number.isInteger(runs) || runs <= 0) usage('--runs takes a positive integer');
  } else if (a === '--only' || a.startsWith('--only=')) {
    const list = value()
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = list.filter((g) => !GROUPS.includes(g));
    if (!list.length || bad.length) usage(`--only takes a comma list of ${GROUPS.join(', ')}${bad.length ? ` (unknown: ${bad.join(', ')})` : ''}`);
    only = new Set(list);
  } else if (a === '--compare' || a.startsWith('--compare=')) {
    compareBin = value();
    if (!compareBin) usage('--compare takes the checkpointer to run (a path or a command on PATH)');
    if (compareBin.includes('/')) compareBin = resolve(compareBin);
  } else if (a === '-h' || a === '--help') usage();
  else usage(`unknown argument ${a}`);
}

function usage(msg) {
  if (msg) console.error(`bench: ${msg}`);
  console.error(USAGE);
  process.exit(msg ? 2 : 0);
}

// ---- state for cleanup ------------------------------------------------------------------------
const tmp = mkdtempSync(join(os.tmpdir(), 'ckpt-bench-'));
/**
 * Every workload process started or restored that may still be alive or unreaped: pid -> its start
 * time (field 22 of /proc/PID/stat), so that a pid reused by another process is never killed. Our
 * own children are reaped by us; the others (init's children) are killed and waited for until gone.
 */
const tracked = new Map();
/** Client connections of this script (the HTTP workload's). */
const sockets = new Set();

function startTime(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}
function track(pid) {
  const st = startTime(pid);
  if (st) tracked.set(pid, st);
}
function untrack(pid) {
  tracked.delete(pid);
}
/** The tracked process is still the one we tracked (not a reused pid). */
function stillTracked(pid) {
  return tracked.has(pid) && startTime(pid) === tracked.get(pid);
}

function killQuietly(pid) {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

/** Polls tryWait until the child has exited or was killed. */
async function reap(pid, timeoutMs = 10_000) {
  const t0 = Date.now();
  for (;;) {
    let st;
    try {
      st = native.proc.tryWait(pid);
    } catch (e) {
      // ECHILD: not (or no longer) our child; nothing to reap.
      if (e.code === 'ECHILD') return null;
      throw e;
    }
    if (st && (st.kind === 'exited' || st.kind === 'killed')) return st;
    if (Date.now() - t0 > timeoutMs) throw new Error(`child ${pid} was not reaped within ${timeoutMs} ms (last status ${JSON.stringify(st)})`);
    await sleep(5);
  }
}

function isOurChild(pid) {
  try {
    const st = native.proc.tryWait(pid);
    return !(st && (st.kind === 'exited' || st.kind === 'killed'));
  } catch {
    return false; // ECHILD
  }
}

/** Reaps pid if it is our child and has ended (no error when it is not ours). */
function reapIfOurs(pid) {
  try {
    native.proc.tryWait(pid);
  } catch {}
}

/** Every pid of the tree under root (root first). */
function treePids(root) {
  const out = [root];
  for (let i = 0; i < out.length; i++) {
    try {
      out.push(...readFileSync(`/proc/${out[i]}/task/${out[i]}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Tracks a process and its descendants. */
function trackTree(pid) {
  for (const p of treePids(pid)) track(p);
}

/** Kills the tracked processes (with their descendants), reaps ours; returns the pids killed. */
function killTracked(pids) {
  const all = new Set();
  for (const p of pids) {
    reapIfOurs(p);
    if (!stillTracked(p)) {
      untrack(p); // gone (or its pid reused by another process)
      continue;
    }
    for (const q of treePids(p)) all.add(q);
  }
  for (const p of all) {
    if (!tracked.has(p)) track(p);
    killQuietly(p);
  }
  return [...all];
}

const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Synchronous best-effort cleanup (on SIGINT/SIGTERM): kill everything, reap, wait for init's reaping. */
function cleanupSync() {
  for (const s of sockets) s.destroy();
  sockets.clear();
  const pids = killTracked([...tracked.keys()]);
  const t0 = Date.now();
  while (Date.now() - t0 < 5000) {
    for (const p of [...tracked.keys()]) {
      reapIfOurs(p);
      if (!stillTracked(p)) untrack(p);
    }
    if (!tracked.size) break;
    sleepSync(10);
  }
  if (tracked.size) console.error(`bench: processes ${[...tracked.keys()].join(', ')} (of ${pids.length} killed) not gone yet`);
  reportLeftLocks();
  rmSync(tmp, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`\nbench: ${sig}, cleaning up`);
    cleanupSync();
    process.exit(130);
  });
}

/**
 * A dump that kills hands its TCP locks over to its image until the restore: when the bench stops
 * in between (failure, SIGINT), the lock of that connection is left (the image is gone with the
 * temporary directory). Says so, with the command that removes such stale locks.
 */
function reportLeftLocks() {
  const dir = '/run/ckpt/netlocks';
  let n = 0;
  try {
    for (const f of readdirSync(dir)) {
      try {
        if (JSON.parse(readFileSync(join(dir, f), 'utf8')).owner?.image?.startsWith(`${tmp}/`)) n++;
      } catch {}
    }
  } catch {
    return; // no lock recorded
  }
  if (n) console.error(`bench: ${n} network lock(s) of dumps interrupted before their restore are left; \`ckpt check --repair\` removes them`);
}

/** At the end: kill every tracked process, reap ours, and wait (bounded) until init reaped the others. */
async function cleanupAll() {
  for (const s of sockets) s.destroy();
  sockets.clear();
  killTracked([...tracked.keys()]);
  const t0 = Date.now();
  while (tracked.size && Date.now() - t0 < 20_000) {
    for (const p of [...tracked.keys()]) {
      reapIfOurs(p);
      if (!stillTracked(p)) untrack(p);
    }
    if (tracked.size) await sleep(10);
  }
  if (tracked.size) console.error(`bench: processes ${[...tracked.keys()].join(', ')} were killed but are not gone after 20 s (init has not reaped them)`);
  reportLeftLocks();
}

// ---- helpers ----------------------------------------------------------------------------------
function readLog(log) {
  try {
    return readFileSync(log, 'utf8');
  } catch {
    return '';
  }
}

async function waitForLine(log, pred, what, timeoutMs) {
  const t0 = Date.now();
  for (;;) {
    const text = readLog(log);
    const r = pred(text);
    if (r) return r;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} in ${log}; it holds:\n${text.slice(-500)}`);
    await sleep(5);
  }
}

/** 'alive', 'zombie' or 'gone'. */
function procState(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /\) [ZX] /.test(st) ? 'zombie' : 'alive';
  } catch {
    return 'gone';
  }
}

/**
 * After the dump the workload is a zombie until its parent reaps it. Its parent is init (`ckpt run`
 * detaches it), and some inits reap slowly (seconds), which `ckpt restore` would wait for at the
 * start of the timed call. So: wait until it is gone (up to reapTimeoutMs) so that the restore figure
 * is ckpt's own work; if init has still not reaped it by then, go ahead with the zombie (restore waits
 * for it, up to 10 s) and report that this run's restore time includes that wait. A process that is
 * our own child (restored through the API) is reaped here.
 * Returns { reapMs, zombie }.
 */
async function waitForPidRelease(pid, reapTimeoutMs = 15_000) {
  const t0 = performance.now();
  for (;;) {
    reapIfOurs(pid);
    const s = procState(pid);
    if (s === 'gone') {
      untrack(pid);
      return { reapMs: performance.now() - t0, zombie: false };
    }
    const waited = performance.now() - t0;
    if (s === 'alive' && waited > 10_000) throw new Error(`process ${pid} still alive ${Math.round(waited)} ms after the dump`);
    if (s === 'zombie' && waited > reapTimeoutMs) return { reapMs: waited, zombie: true };
    await sleep(2);
  }
}

/** waitForPidRelease for every pid of a dumped tree: { reapMs (all of them), zombie (any) }. */
async function waitForTreeRelease(pids) {
  const t0 = performance.now();
  let zombie = false;
  for (const p of pids) zombie = (await waitForPidRelease(p)).zombie || zombie;
  return { reapMs: performance.now() - t0, zombie };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const stats = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), all: xs });
const gbs = (bytes, ms) => bytes / (ms / 1000) / 1e9;
const r3 = (x) => (x === undefined || x === null ? x : Math.round(x * 1000) / 1000);

/** Anonymous memory of processes, shared pages counted once (the sum of Pss_Anon), in bytes. */
function anonPss(pids) {
  return pids.reduce((sum, p) => {
    try {
      return sum + 1024 * Number(/^Pss_Anon:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    } catch {
      return sum; // gone
    }
  }, 0);
}

/** Disk usage of a directory tree, as `du -s --block-size=1` counts it (allocated blocks). */
function duBytes(path) {
  let total = 0;
  const walk = (p) => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    total += st.blocks * 512;
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  walk(path);
  return total;
}

const firstLine = (s) =>
  String(s ?? '')
    .split('\n')
    .map((l) => l.trim())
    .find(Boolean) ?? '';

/** Runs a command to completion, stdin closed, output captured; ms = wall time around the spawn. */
function spawnWall(file, argv, timeoutMs = 300_000, env = process.env) {
  const t0 = performance.now();
  const r = spawnSync(file, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * MiB, env });
  return { ms: performance.now() - t0, code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

/**
 * The environment the ckpt program starts node in (packages/cli/bin/ckpt.js): without
 * NODE_EXTRA_CA_CERTS, whose certificates Node would parse before any script runs. The `node -e 0`
 * reference starts the same way, so that `wall - node` is ckpt's own cost; the startup group
 * also times it as this environment has it.
 */
const nodeEnv = { ...process.env };
delete nodeEnv.NODE_EXTRA_CA_CERTS;

/** Wall times of `node ARGV` over n spawns as ckpt starts node (with a first, warming, one dropped). */
function nodeWall(argv, n) {
  spawnWall(process.execPath, argv, undefined, nodeEnv);
  const t = [];
  for (let i = 0; i < n; i++) {
    const r = spawnWall(process.execPath, argv, undefined, nodeEnv);
    if (r.code !== 0) throw new Error(`node ${argv.join(' ')} failed: ${r.stderr}`);
    t.push(r.ms);
  }
  return t;
}

/**
 * Same-run references for a buffer of mib MiB (scripts/bench/ref.c): memcpy, write() into the page
 * cache (best of 3, and the first pass alone: a new file, as a dump writes), and read() of the
 * cached file into fresh anonymous memory (what a restore does at least).
 */
function writeRef(bins, mib, where) {
  const out = execFileSync(bins.ref, [String(mib), join(where, `ref-${mib}.dat`)], { encoding: 'utf8' }).trim();
  return JSON.parse(out.split('\n').at(-1));
}

/** Free bytes where the images go. */
function freeBytes() {
  const st = statfsSync(tmp);
  return Number(st.bavail) * Number(st.bsize);
}

let seq = 0;

/**
 * Starts argv detached through `ckpt run --no-namespace` (not timed) and waits until its output
 * matches readyRe (a process that dies before is an error). Returns { pid, log, match }.
 */
async function startDetached(name, argv, readyRe, timeoutMs = 120_000) {
  const log = join(tmp, `${name}-${++seq}.log`);
  const out = execFileSync(process.execPath, [cli, 'run', '--no-namespace', '--stdout', log, '--', ...argv], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  const pid = Number(out.split('\n').at(-1));
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`ckpt run printed ${JSON.stringify(out)}, not a pid`);
  track(pid);
  const match = await waitForLine(
    log,
    (t) => {
      const m = readyRe.exec(t);
      if (m) return m;
      if (procState(pid) !== 'alive') throw new Error(`${name} (pid ${pid}) ended before it was ready; its output:\n${t.slice(-800)}`);
      return null;
    },
    `${readyRe}`,
    timeoutMs,
  );
  trackTree(pid);
  return { pid, log, match };
}

/**
 * Sends sig to pid and waits for the next line of its log that matches re (a line that matched
 * before does not count); the process dying meanwhile is an error. Returns the match.
 */
async function askLine(pid, log, sig, re, what, timeoutMs = 60_000) {
  const all = (t) => t.split('\n').filter((l) => re.test(l));
  const before = all(readLog(log)).length;
  process.kill(pid, sig);
  const line = await waitForLine(
    log,
    (t) => {
      const lines = all(t);
      if (lines.length > before) return lines[before];
      if (procState(pid) !== 'alive') throw new Error(`process ${pid} ended before it answered ${what}`);
      return null;
    },
    what,
    timeoutMs,
  );
  return re.exec(line);
}

// ---- checkpointers ----------------------------------------------------------------------------
/** A failure of the --compare checkpointer: reported in its cell, the bench goes on. */
class OtherFailed extends Error {}

/** ckpt through the API, in this process. Restored processes stay our children (detached from ptrace). */
function apiTool(ck) {
  return {
    kind: 'api',
    async dump(pid, dir, { leaveRunning = false } = {}) {
      const t0 = performance.now();
      const d = await ck.dump({ pid, dir, leaveRunning });
      return { ms: performance.now() - t0, ownMs: d.ms, pids: d.pids };
    },
    async restore(dir, pids) {
      const t0 = performance.now();
      let r;
      try {
        r = await ck.restore({ dir, detach: true });
      } catch (e) {
        // The restore rolled back; a stub of ours that is left is killed and reaped by the cleanup.
        if (isOurChild(pids[0])) track(pids[0]);
        throw e;
      }
      const ms = performance.now() - t0;
      for (const p of r.pids) track(p);
      return { ms, ownMs: r.ms, pids: r.pids };
    },
  };
}

/** ckpt's command line, as a user runs it (the program, packages/cli/bin/ckpt.js): wall time around the spawn. */
function cliTool(configFile, server = undefined) {
  const pre = configFile ? ['--config', configFile] : [];
  // The command in its own process unless a server is given: not one a user may have running.
  const env = server ? { ...process.env, CKPT_SERVER_SOCKET: server } : { ...process.env, CKPT_SERVER: 'off' };
  const json = (r, what) => {
    if (r.code !== 0) throw new Error(`${what} failed (${r.error?.message ?? r.code ?? r.signal}):\n${r.stderr.trim()}`);
    try {
      return JSON.parse(r.stdout.trim().split('\n').at(-1));
    } catch {
      throw new Error(`${what} printed no JSON: ${r.stdout.slice(0, 300)}`);
    }
  };
  return {
    kind: server ? 'srv' : 'cli',
    async dump(pid, dir, { leaveRunning = false } = {}) {
      const argv = [...pre, 'dump', '-t', String(pid), '-D', dir, '--json', ...(leaveRunning ? ['--leave-running'] : [])];
      const r = spawnWall(ckptBin, argv, undefined, env);
      const j = json(r, `ckpt dump -t ${pid}${leaveRunning ? ' --leave-running' : ''}`);
      return { ms: r.ms, ownMs: j.ms, pids: j.pids };
    },
    async restore(dir) {
      const r = spawnWall(ckptBin, [...pre, 'restore', '-D', dir, '-d', '--json'], undefined, env);
      const j = json(r, 'ckpt restore -d');
      for (const p of j.pids) track(p); // init's children now
      return { ms: r.ms, ownMs: j.ms, pids: j.pids };
    },
  };
}

/** The --compare checkpointer, with CRIU's command line; its failures throw OtherFailed. */
function otherTool(bin) {
  const run = (argv) => {
    const r = spawnWall(bin, argv);
    if (r.error || r.code !== 0) {
      // Its first error line (CRIU's warnings come first), else its first line.
      const errorLine = (t) =>
        firstLine(
          String(t ?? '')
            .split('\n')
            .filter((l) => /error/i.test(l))
            .join('\n'),
        );
      const why =
        errorLine(r.stderr) ||
        firstLine(r.stderr) ||
        firstLine(r.stdout) ||
        (r.error ? String(r.error.message) : r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`);
      throw new OtherFailed(`failed: ${why}`);
    }
    return r;
  };
  return {
    kind: 'other',
    async dump(pid, dir, { leaveRunning = false, tcp = false } = {}) {
      mkdirSync(dir, { recursive: true });
      const r = run(['dump', '-t', String(pid), '-D', dir, '--shell-job', ...(leaveRunning ? ['--leave-running'] : []), ...(tcp ? ['--tcp-established'] : [])]);
      return { ms: r.ms };
    },
    async restore(dir, pids, { tcp = false } = {}) {
      let r;
      try {
        r = run(['restore', '-D', dir, '--shell-job', '-d', ...(tcp ? ['--tcp-established'] : [])]);
      } finally {
        // What it restored (or left behind) is ours to kill.
        for (const p of pids) if (procState(p) !== 'gone') track(p);
      }
      const dead = pids.filter((p) => procState(p) !== 'alive');
      if (dead.length) throw new OtherFailed(`failed: restore returned 0 but pid(s) ${dead.join(', ')} are not running`);
      return { ms: r.ms, pids };
    },
  };
}

const otherLabel = compareBin ? basename(compareBin) : null;

// ---- workloads --------------------------------------------------------------------------------
// A workload: start() -> handle { pid, log, ... }; check(h) after every dump or restore (throws
// when the process is not what it was; may return the ms of a request for the first answer);
// optionally stall(h) -> the longest stall (ms) it saw since the last call, and request(h) -> ms
// of a request before the dump; close(h) for what this script holds (a connection); tcp: it has
// established connections.

function heapWorkload(bins, mib) {
  return {
    name: `${mib} MiB workload`,
    start: () => startDetached(`heap${mib}`, [bins.workload, String(mib)], /^ready$/m),
    async check(h) {
      const m = await askLine(h.pid, h.log, 'SIGUSR1', /^verify .*$/, '"verify ..."');
      if (m[0] !== 'verify ok') throw new Error(`process ${h.pid} of ${mib} MiB: ${m[0]} (heap corrupted by dump/restore)`);
    },
  };
}

function shapeArgs(shape, n, extra) {
  return shape === 'idle' ? ['threads', '1'] : [shape, String(n), ...extra];
}

/** The structure of a shape process after a restore (or a --leave-running dump). */
function checkShape(shape, n, pid) {
  if (shape === 'threads' || shape === 'idle') {
    const threads = readdirSync(`/proc/${pid}/task`).length;
    if (threads !== n) throw new Error(`${shape}: ${threads} threads, expected ${n}`);
  }
  if (shape === 'tree' || shape === 'prefork') {
    const procs = treePids(pid).filter((p) => procState(p) === 'alive').length;
    if (procs !== n) throw new Error(`${shape}: ${procs} processes, expected ${n}`);
  }
  if (shape === 'files') {
    const fds = readdirSync(`/proc/${pid}/fd`).length;
    if (fds < n) throw new Error(`files: ${fds} fds, expected ${n}+`);
  }
}

function shapeWorkload(bins, shape, n, extra) {
  return {
    name: `${shape} ${n}`,
    start: () => startDetached(shape, [bins.shapes, ...shapeArgs(shape, n, extra)], /^ready$/m, 60_000),
    async check(h) {
      if (procState(h.pid) !== 'alive') throw new Error(`${shape}: process ${h.pid} is not running`);
      checkShape(shape, n, h.pid);
    },
  };
}

function pythonWorkload(py, mib) {
  return {
    name: `python3 ${mib} MiB`,
    start: () => startDetached('python', [py, join(root, 'scripts/bench/holder.py'), String(mib)], /^ready$/m, 300_000),
    async check(h) {
      const m = await askLine(h.pid, h.log, 'SIGUSR2', /^verify .*$/, '"verify ..."', 120_000);
      if (m[0] !== 'verify ok') throw new Error(`python3 ${h.pid}: ${m[0]} (its bytearray changed across the dump/restore)`);
    },
    async stall(h) {
      return Number((await askLine(h.pid, h.log, 'SIGUSR1', /^maxstall (\d+)$/, 'maxstall'))[1]) / 1000;
    },
  };
}

/** A minimal HTTP/1.1 client on one connection (requests one at a time, Content-Length bodies). */
class HttpConn {
  static open(port) {
    return new Promise((res, rej) => {
      const sock = net.connect(port, '127.0.0.1');
      sockets.add(sock);
      sock.once('error', rej);
      sock.once('connect', () => {
        sock.off('error', rej);
        res(new HttpConn(sock));
      });
    });
  }
  constructor(sock) {
    this.sock = sock;
    this.localPort = sock.localPort;
    this.buf = Buffer.alloc(0);
    this.pending = null;
    this.ended = null;
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.drain();
    });
    sock.on('error', (e) => {
      this.ended ??= `broken (${e.message})`;
      this.fail();
    });
    sock.on('close', () => {
      this.ended ??= 'closed';
      this.fail();
    });
  }
  drain() {
    if (!this.pending) return;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.buf.length < end + 4 + len) return;
    const body = this.buf.subarray(end + 4, end + 4 + len).toString('utf8');
    this.buf = this.buf.subarray(end + 4 + len);
    const p = this.pending;
    this.pending = null;
    clearTimeout(p.timer);
    p.resolve({ status: Number(head.split(' ')[1]), body, ms: performance.now() - p.t0 });
  }
  fail() {
    if (!this.pending) return;
    const p = this.pending;
    this.pending = null;
    clearTimeout(p.timer);
    p.reject(new Error(`the connection was ${this.ended} before the answer to GET ${p.path}`));
  }
  get(path, timeoutMs = 30_000) {
    if (this.ended) return Promise.reject(new Error(`the connection was ${this.ended} before GET ${path}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        reject(new Error(`no answer to GET ${path} within ${timeoutMs} ms on the connection from port ${this.localPort}`));
      }, timeoutMs);
      this.pending = { resolve, reject, timer, path, t0: performance.now() };
      this.sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    });
  }
  destroy() {
    this.sock.destroy();
    sockets.delete(this.sock);
  }
}

function httpWorkload() {
  /** GET /hit on the connection opened first: the answer must come from that connection (conn 1) and count on. */
  const hit = async (h) => {
    const r = await h.conn.get('/hit');
    let j;
    try {
      j = JSON.parse(r.body);
    } catch {
      throw new Error(`HTTP server: bad answer ${r.status} ${r.body.slice(0, 200)}`);
    }
    if (r.status !== 200 || j.pid !== h.pid || j.conn !== 1 || j.hits !== h.hits + 1) {
      throw new Error(`HTTP server: answer ${r.status} ${r.body}, expected pid ${h.pid}, conn 1, hits ${h.hits + 1}`);
    }
    h.hits = j.hits;
    return r.ms;
  };
  return {
    name: 'node HTTP server',
    tcp: true,
    async start() {
      const h = await startDetached('http', [process.execPath, join(root, 'scripts/bench/http-server.cjs')], /^listening (\d+)$/m, 60_000);
      h.port = Number(h.match[1]);
      h.conn = await HttpConn.open(h.port);
      h.hits = 0;
      await hit(h);
      return h;
    },
    check: hit,
    request: hit,
    async stall(h) {
      const r = await h.conn.get('/stall');
      return JSON.parse(r.body).maxstallUs / 1000;
    },
    close(h) {
      h.conn?.destroy();
    },
  };
}

/**
 * One checkpoint operation on a running workload: mode 'leave' (dump --leave-running) or 'kill'
 * (dump, wait until the dumped pids are free, restore). Measures the calls, the image (du), the
 * touched memory, the stall the process saw and the first answer after it; checks the process.
 */
async function runOp(wl, h, tool, mode) {
  const dir = join(tmp, `img-${++seq}`);
  const pids = treePids(h.pid);
  const res = { tool: tool.kind, mode, touchedBytes: anonPss(pids) };
  try {
    if (wl.request) res.rttBeforeMs = await wl.request(h);
    if (wl.stall) await wl.stall(h); // forget the gaps before the dump
    const d = await tool.dump(h.pid, dir, { leaveRunning: mode === 'leave', tcp: !!wl.tcp });
    res.dumpMs = d.ms;
    if (d.ownMs !== undefined) res.ownDumpMs = d.ownMs;
    res.imageDuBytes = duBytes(dir);
    if (mode === 'kill') {
      const rel = await waitForTreeRelease(pids);
      res.releaseMs = rel.reapMs;
      res.zombie = rel.zombie;
      const r = await tool.restore(dir, pids, { tcp: !!wl.tcp });
      res.restoreMs = r.ms;
      if (r.ownMs !== undefined) res.ownRestoreMs = r.ownMs;
      if (r.pids[0] !== h.pid) throw new Error(`restore gave pids ${r.pids.join(',')}, expected ${h.pid} first`);
    }
    const ms = await wl.check(h);
    if (typeof ms === 'number') res.rttAfterMs = ms;
    if (wl.stall) {
      // The gap the process saw spans the dump, the wait for its parent to reap the dumped pids
      // (init here: slow on some hosts, and not the checkpointer's doing) and the restore: the
      // figure is the gap less that wait (the whole gap is kept as rawDowntimeMs).
      const gap = await wl.stall(h);
      if (mode === 'kill') {
        res.rawDowntimeMs = gap;
        res.downtimeMs = Math.max(0, gap - res.releaseMs);
      } else res.downtimeMs = gap;
    }
  } catch (e) {
    if (!(e instanceof OtherFailed) && tool.kind !== 'other') throw e;
    res.failed = e instanceof OtherFailed ? e.message : `failed: ${firstLine(e.message)}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return res;
}

/** Kills the workload (its tree), reaps what is ours; init's children are waited for at the end. */
async function stopWorkload(wl, h) {
  wl.close?.(h);
  killTracked([h.pid]);
  await reap(h.pid, 5000); // returns at once when it is not our child
  if (procState(h.pid) === 'gone') untrack(h.pid);
}

/**
 * Runs ops ([tool, mode], in order) on one process of the workload; after a failure of the
 * --compare checkpointer the process may be gone: its remaining ops are marked failed too.
 */
async function runOps(wl, ops, label) {
  const h = await wl.start();
  const out = [];
  try {
    let broken = null;
    for (const [tool, mode] of ops) {
      if (broken) {
        out.push({ tool: tool.kind, mode, failed: `failed: not run (${broken})` });
        continue;
      }
      process.stderr.write(` ${tool.kind}:${mode}`);
      const res = await runOp(wl, h, tool, mode);
      out.push(res);
      if (res.failed) {
        process.stderr.write(`(${res.failed})`);
        // Is the process still there and sound? Otherwise the next ops cannot run on it.
        try {
          if (procState(h.pid) !== 'alive') throw new Error('process gone');
          await wl.check(h);
        } catch {
          broken = `${label} not running after the failure`;
        }
      }
    }
  } finally {
    await stopWorkload(wl, h);
  }
  return out;
}

/**
 * A kill and restore by each of `tools`, each on a fresh process of its own (workload()), the
 * first tool first in odd runs and last in even ones: the results of the run, as runOps's.
 */
async function inTurns(run, workload, tools, label) {
  const order = run % 2 ? tools : [...tools].reverse();
  const out = [];
  for (const tool of order) out.push(...(await runOps(workload(), [[tool, 'kill']], label)));
  return out;
}

/** Per tool:mode, the runs' figures: stats of each, failures. */
function aggregate(opsRuns) {
  const by = new Map();
  for (const res of opsRuns.flat()) {
    const k = `${res.tool}:${res.mode}`;
    if (!by.has(k)) by.set(k, []);
    by.get(k).push(res);
  }
  const agg = {};
  for (const [k, list] of by) {
    const ok = list.filter((r) => !r.failed);
    const a = { runs: list.length, ok: ok.length };
    const failed = list.filter((r) => r.failed).map((r) => r.failed);
    if (failed.length) a.failed = failed;
    for (const f of [
      'dumpMs',
      'ownDumpMs',
      'restoreMs',
      'ownRestoreMs',
      'releaseMs',
      'downtimeMs',
      'rttBeforeMs',
      'rttAfterMs',
      'imageDuBytes',
      'touchedBytes',
    ]) {
      const xs = ok.map((r) => r[f]).filter((x) => typeof x === 'number');
      if (xs.length) a[f] = stats(xs);
    }
    const zombies = ok.filter((r) => r.zombie).length;
    if (zombies) a.zombieRuns = zombies;
    agg[k] = a;
  }
  return agg;
}

/** The JSON of an aggregate: medians (and min/max of the times). */
function slimAgg(agg) {
  const out = {};
  for (const [k, a] of Object.entries(agg)) {
    const o = { runs: a.runs, ok: a.ok };
    if (a.failed) o.failed = a.failed;
    for (const [f, s] of Object.entries(a)) {
      if (!s || typeof s !== 'object' || !('median' in s)) continue;
      if (f.endsWith('Bytes')) o[f] = Math.round(s.median);
      else {
        o[f] = r3(s.median);
        o[`${f}Min`] = r3(s.min);
        o[`${f}Max`] = r3(s.max);
      }
    }
    if (a.zombieRuns) o.zombieRuns = a.zombieRuns;
    out[k] = o;
  }
  return out;
}

// ---- output helpers ---------------------------------------------------------------------------
const fms = (x) => (x === undefined ? '' : x.toFixed(1));
const fmb = (x) => (x === undefined ? '' : (x / 1e6).toFixed(1));
const fx = (x) => (x === undefined || !Number.isFinite(x) ? '' : x.toFixed(2));
const signed = (x) => (x === undefined ? '' : `${x >= 0 ? '+' : ''}${x.toFixed(1)}`);
const clip = (s, n = 70) => (s.length > n ? `${s.slice(0, n - 3)}...` : s);

/** Prints rows of cells: the first and the last column left-aligned, the others right-aligned. */
function printGrid(head, rows) {
  const all = [head, ...rows].map((r) => r.map((c) => String(c ?? '')));
  const ncol = Math.max(...all.map((r) => r.length));
  const w = [];
  for (let c = 0; c < ncol; c++) w[c] = Math.max(...all.map((r) => (r[c] ?? '').length));
  for (const r of all) {
    const cells = [];
    for (let c = 0; c < ncol; c++) {
      const v = r[c] ?? '';
      cells.push(c === 0 || c === ncol - 1 ? v.padEnd(w[c]) : v.padStart(w[c]));
    }
    console.log(cells.join('   ').trimEnd());
  }
}

/** The cell of the --compare checkpointer for one field: its median, or why it failed. */
function otherCell(a, field, scale = (x) => x, fmt = fms) {
  if (!a) return '';
  if (a[field]) return fmt(scale(a[field].median)) + (a.failed ? ` (${a.failed.length}/${a.runs} failed)` : '');
  if (a.failed) return clip(a.failed[0]);
  return '';
}

/**
 * The table of an ops group: for API rows the reference is the write() of the touched bytes into
 * the page cache (when given), for CLI rows `node -e 0`; --compare's columns sit next to the CLI
 * rows (both are commands, timed the same way); downtimes sit next to the calls they span.
 */
function printOpsTable(title, agg, ref) {
  const other = !!compareBin;
  const head = ['', 'median', 'min', 'max', 'reference', 'ratio', ...(other ? [otherLabel, `ckpt/${otherLabel}`] : []), 'reference is / notes'];
  const rows = [];
  const writeMs = (a) => (ref.writeGBs && a?.touchedBytes ? a.touchedBytes.median / (ref.writeGBs * 1e9) / 1e-3 : undefined);
  const row = (label, s, refMs, note, otherA, otherField) => {
    if (!s) return;
    const r = [label, fms(s.median), fms(s.min), fms(s.max), fms(refMs), refMs ? fx(s.median / refMs) : ''];
    if (other) {
      const o = otherField ? otherCell(otherA, otherField) : '';
      const ratio = otherField && otherA?.[otherField] ? fx(s.median / otherA[otherField].median) : '';
      r.push(o, ratio);
    }
    r.push(note);
    rows.push(r);
  };
  const node = ref.nodeMs;
  const wallNote = (s, api, own) =>
    s
      ? `node -e 0; wall - node ${signed(s.median - node)} ms${api ? `, wall / API ${fx(s.median / api.median)}` : ''}${own ? `; ckpt's own ms ${fms(own.median)}` : ''}`
      : '';
  const A = (k) => agg[k];
  const apiL = A('api:leave');
  const cliL = A('cli:leave');
  const othL = A('other:leave');
  const apiK = A('api:kill');
  const cliK = A('cli:kill');
  const othK = A('other:kill');
  // After a dump + restore (a: the API's or the command's figures): the downtime the process saw,
  // next to the two operations, and its first answer; with the --compare column for commands.
  const afterRestore = (a, what, compared) => {
    const span = a.dumpMs && a.restoreMs ? a.dumpMs.median + a.restoreMs.median : undefined;
    const o = compared ? othK : undefined;
    row(
      '  downtime seen inside ms',
      a.downtimeMs,
      span,
      `dump + restore ${what}, ${fms(a.releaseMs?.median)} ms, taken out)`,
      o,
      compared ? 'downtimeMs' : undefined,
    );
    row(
      '  first answer after restore ms',
      a.rttAfterMs,
      a.rttBeforeMs?.median,
      a.rttBeforeMs ? 'an answer before the dump, same connection' : 'on a new connection',
      o,
      compared ? 'rttAfterMs' : undefined,
    );
  };
  if (apiK) {
    row('dump (kills), API ms', apiK.dumpMs, writeMs(apiK), `write() of the touched bytes; ckpt's own ms ${fms(apiK.ownDumpMs?.median)}`);
    row('restore, API ms', apiK.restoreMs, writeMs(apiK), `write() of the touched bytes; ckpt's own ms ${fms(apiK.ownRestoreMs?.median)}`);
    afterRestore(apiK, 'calls (the wait for init to reap the dumped pids', false);
  }
  if (cliK) {
    row('dump (kills), CLI wall ms', cliK.dumpMs, node, wallNote(cliK.dumpMs, apiK?.dumpMs, cliK.ownDumpMs), othK, 'dumpMs');
    row('restore -d, CLI wall ms', cliK.restoreMs, node, wallNote(cliK.restoreMs, apiK?.restoreMs, cliK.ownRestoreMs), othK, 'restoreMs');
    afterRestore(cliK, 'commands (the wait for the dumped pids to be reaped', true);
  }
  if (apiL) {
    row('dump --leave-running, API ms', apiL.dumpMs, writeMs(apiL), `write() of the touched bytes; ckpt's own ms ${fms(apiL.ownDumpMs?.median)}`);
    row('  downtime seen inside ms', apiL.downtimeMs, apiL.dumpMs?.median, 'the dump call');
  }
  if (cliL) {
    row('dump --leave-running, CLI wall ms', cliL.dumpMs, node, wallNote(cliL.dumpMs, apiL?.dumpMs, cliL.ownDumpMs), othL, 'dumpMs');
    row('  downtime seen inside ms', cliL.downtimeMs, cliL.dumpMs?.median, 'the dump command', othL, 'downtimeMs');
  }
  // Image size next to the memory it holds (the first op that made one), and --compare's.
  const img = apiK ?? apiL ?? cliK ?? cliL;
  if (img?.imageDuBytes && img.touchedBytes) {
    const held = img.touchedBytes.median + (ref.extraBytes ?? 0);
    const r = [
      'image du MB',
      fmb(img.imageDuBytes.median),
      fmb(img.imageDuBytes.min),
      fmb(img.imageDuBytes.max),
      fmb(held),
      fx(img.imageDuBytes.median / held),
    ];
    if (other) {
      const o = othK ?? othL;
      r.push(
        otherCell(o, 'imageDuBytes', (x) => x, fmb),
        o?.imageDuBytes ? fx(img.imageDuBytes.median / o.imageDuBytes.median) : '',
      );
    }
    r.push(`touched MB: anonymous memory at the dump (Pss_Anon)${ref.extraNote ?? ''}`);
    rows.push(r);
  }
  console.log(`\n== ${title} ==`);
  printGrid(head, rows);
  const z = Object.entries(agg).filter(([, a]) => a.zombieRuns);
  for (const [k, a] of z)
    console.log(
      `WARNING: ${k}: in ${a.zombieRuns} run(s) init had not reaped the dumped processes after 15 s; those restore times include ckpt's wait for the zombies`,
    );
}

// ---- one size ---------------------------------------------------------------------------------
async function benchSize(ck, bins, mib) {
  const bytes = mib * MiB;
  const sizeDir = join(tmp, `s${mib}`);
  mkdirSync(sizeDir, { recursive: true });

  // Same-run references (the write() file goes where the image goes).
  process.stderr.write(`[${mib} MiB] references (memcpy, write)... `);
  const ref = writeRef(bins, mib, sizeDir);
  process.stderr.write(
    `memcpy ${ref.memcpyGBs} GB/s, write ${ref.writeGBs} GB/s (first pass ${ref.writeFirstGBs}), read into fresh memory ${ref.readFreshGBs} GB/s\n`,
  );

  const dumpMs = [];
  const restoreMs = [];
  const apiDumpMs = [];
  const apiRestoreMs = [];
  const readyMs = [];
  const reapMs = [];
  const duMs = [];
  const touched = [];
  let zombieRuns = 0;
  let imageBytes = 0;
  const compareRuns = [];

  for (let run = 1; run <= runs; run++) {
    const dir = join(sizeDir, `image-${run}`);
    process.stderr.write(`[${mib} MiB] run ${run}/${runs}: start`);

    const tStart = performance.now();
    const { pid, log } = await startDetached(`workload-${mib}`, [bins.workload, String(mib)], /^ready$/m);
    readyMs.push(performance.now() - tStart);
    touched.push(anonPss([pid]));

    // Dump (the process is killed after it).
    process.stderr.write(', dump');
    let t0 = performance.now();
    const d = await ck.dump({ pid, dir });
    const dMs = performance.now() - t0;
    dumpMs.push(dMs);
    apiDumpMs.push(d.ms);
    imageBytes = d.imageBytes;
    duMs.push(duBytes(dir));

    const rel = await waitForPidRelease(pid);
    reapMs.push(rel.reapMs);
    if (rel.zombie) zombieRuns++;

    // Restore (same pid, our child, detached from ptrace).
    process.stderr.write(', restore');
    t0 = performance.now();
    let r;
    try {
      r = await ck.restore({ dir, detach: true });
    } catch (e) {
      // The restore rolled back. If a stub of ours is left (still our child: its pid cannot have been
      // reused), the cleanup kills and reaps it.
      if (isOurChild(pid)) track(pid);
      throw e;
    }
    const rMs = performance.now() - t0;
    track(pid);
    restoreMs.push(rMs);
    apiRestoreMs.push(r.ms);
    if (!r.pids.includes(pid)) throw new Error(`restore gave pids ${r.pids.join(',')}, expected ${pid}`);

    // Check the heap of the restored process.
    process.stderr.write(', verify');
    const before = (readLog(log).match(/^verify /gm) || []).length;
    process.kill(pid, 'SIGUSR1');
    const verdict = await waitForLine(
      log,
      (t) => {
        const lines = t.split('\n').filter((l) => l.startsWith('verify '));
        if (lines.length > before) return lines[before];
        const st = native.proc.tryWait(pid);
        if (st && (st.kind === 'exited' || st.kind === 'killed')) {
          untrack(pid);
          throw new Error(`restored process ${pid} of ${mib} MiB died before verifying: ${JSON.stringify(st)}`);
        }
        return null;
      },
      '"verify ..."',
      60_000,
    );
    if (verdict !== 'verify ok') throw new Error(`restored process ${pid} of ${mib} MiB: ${verdict} (heap corrupted by dump/restore)`);

    killQuietly(pid);
    await reap(pid);
    untrack(pid);
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`: dump ${dMs.toFixed(1)} ms, restore ${rMs.toFixed(1)} ms, verify ok`);

    // --compare: the same workload through ckpt's command line and the other checkpointer.
    if (compareBin) {
      process.stderr.write('; commands:');
      // The two tools take turns at going first, each on a process of its own (a process CRIU
      // restored is in a time namespace of its own, which ckpt refuses): what the first frees (its
      // image, its process), the second gets as memory the host has backed, which at 1 GiB is
      // most of the spread.
      compareRuns.push(await inTurns(run, () => heapWorkload(bins, mib), [cliTool(), otherTool(compareBin)], `the ${mib} MiB workload`));
    }
    process.stderr.write('\n');
  }

  const dump = stats(dumpMs);
  const restore = stats(restoreMs);
  const dumpGBs = gbs(bytes, dump.median);
  const restoreGBs = gbs(bytes, restore.median);
  return {
    sizeMiB: mib,
    touchedBytes: bytes,
    runs,
    dumpMs: dump,
    restoreMs: restore,
    apiDumpMs: stats(apiDumpMs),
    apiRestoreMs: stats(apiRestoreMs),
    startToReadyMs: stats(readyMs),
    initReapMs: stats(reapMs),
    zombieRuns,
    imageBytes,
    imageDuBytes: stats(duMs),
    anonBytes: stats(touched),
    dumpGBs,
    dumpGBsRange: [gbs(bytes, dump.max), gbs(bytes, dump.min)],
    restoreGBs,
    restoreGBsRange: [gbs(bytes, restore.max), gbs(bytes, restore.min)],
    memcpyGBs: ref.memcpyGBs,
    writeGBs: ref.writeGBs,
    writeFirstGBs: ref.writeFirstGBs,
    readFreshGBs: ref.readFreshGBs,
    dumpPerWrite: dumpGBs / ref.writeGBs,
    dumpPerWriteFirst: dumpGBs / ref.writeFirstGBs,
    restorePerWrite: restoreGBs / ref.writeGBs,
    restorePerReadFresh: restoreGBs / ref.readFreshGBs,
    dumpPerMemcpy: dumpGBs / ref.memcpyGBs,
    ...(compareBin ? { compare: aggregate(compareRuns), nodeMs: median(nodeWall(['-e', '0'], 5)) } : {}),
  };
}

// ---- output -----------------------------------------------------------------------------------
function printTable(r) {
  const rows = [];
  const row = (name, med, min, max, note = '') => rows.push([name, med, min ?? '', max ?? '', note]);
  const ms = (x) => x.toFixed(1);
  const g = (x) => x.toFixed(2);
  row('dump ms', ms(r.dumpMs.median), ms(r.dumpMs.min), ms(r.dumpMs.max), `ckpt's own d.ms median ${ms(r.apiDumpMs.median)}`);
  row('restore ms', ms(r.restoreMs.median), ms(r.restoreMs.min), ms(r.restoreMs.max), `ckpt's own r.ms median ${ms(r.apiRestoreMs.median)}`);
  row('image MB', (r.imageBytes / 1e6).toFixed(1), null, null, `${(r.imageBytes / MiB).toFixed(1)} MiB for ${r.sizeMiB} MiB touched`);
  row(
    'image du MB',
    fmb(r.imageDuBytes.median),
    fmb(r.imageDuBytes.min),
    fmb(r.imageDuBytes.max),
    `disk usage of the image directory; touched ${fmb(r.anonBytes.median)} MB (Pss_Anon at the dump), du/touched ${fx(r.imageDuBytes.median / r.anonBytes.median)}`,
  );
  row('dump GB/s', g(r.dumpGBs), g(r.dumpGBsRange[0]), g(r.dumpGBsRange[1]), 'touched bytes / dump time');
  row('restore GB/s', g(r.restoreGBs), g(r.restoreGBsRange[0]), g(r.restoreGBsRange[1]), 'touched bytes / restore time');
  row('memcpy GB/s', g(r.memcpyGBs), null, null, 'reference: best of 3, pre-touched buffers');
  row('write GB/s', g(r.writeGBs), null, null, 'reference: page cache, 4 MiB writes, no fsync, best of 3');
  row('write 1st GB/s', g(r.writeFirstGBs), null, null, 'reference: the first of those 3 alone (a new file into page cache not just freed, as a dump writes)');
  row('read GB/s', g(r.readFreshGBs), null, null, 'reference: read() of the cached file into fresh anonymous memory, best of 3');
  row('dump/write', g(r.dumpPerWrite), null, null, 'throughput ratio');
  row('dump/write 1st', g(r.dumpPerWriteFirst), null, null, 'throughput ratio');
  row('restore/write', g(r.restorePerWrite), null, null, 'throughput ratio');
  row('restore/read', g(r.restorePerReadFresh), null, null, 'throughput ratio');
  row('dump/memcpy', g(r.dumpPerMemcpy), null, null, 'throughput ratio');

  const head = ['', `median`, 'min', 'max', ''];
  const w = [0, 1, 2, 3].map((c) => Math.max(head[c].length, ...rows.map((x) => String(x[c]).length)));
  const fmt = (x) => [x[0].padEnd(w[0]), ...[1, 2, 3].map((c) => String(x[c]).padStart(w[c])), x[4]].join('   ').trimEnd();
  console.log(`\n== ${r.sizeMiB} MiB workload, ${r.runs} run${r.runs > 1 ? 's' : ''} (median; min/max over runs) ==`);
  console.log(fmt(head));
  for (const x of rows) console.log(fmt(x));
  console.log(
    `(not timed: workload start to "ready" ${ms(r.startToReadyMs.median)} ms; init reaped the dumped process ` +
      `${ms(r.initReapMs.median)} ms after the dump, median, before the restore started)`,
  );
  if (r.zombieRuns) {
    console.log(`WARNING: in ${r.zombieRuns} run(s) init had not reaped the dumped process after 15 s; those restore times include ckpt's wait for the zombie`);
  }
  if (r.compare)
    printOpsTable(`${r.sizeMiB} MiB workload through the commands, ckpt vs ${otherLabel} (wall time around the spawn)`, r.compare, { nodeMs: r.nodeMs });
}

/** Dump and restore of a many-process tree or a many-thread process: fixed costs, not bandwidth. */
async function benchShape(ck, bins, shape, n, extra = [], configFile = undefined) {
  const dumpMs = [];
  const restoreMs = [];
  const memRatio = [];
  const du = [];
  const touched = [];
  const compareRuns = [];
  let lastImageBytes = 0;
  for (let run = 1; run <= runs; run++) {
    const dir = join(tmp, `${shape}-${run}`);
    process.stderr.write(`[${shape} ${n}] run ${run}/${runs}: start`);
    const { pid } = await startDetached(shape, [bins.shapes, ...shapeArgs(shape, n, extra)], /^ready$/m, 60_000);
    process.stderr.write(', dump');
    const pidsBefore = treePids(pid);
    const memBefore = anonPss(pidsBefore);
    touched.push(memBefore);
    let t0 = performance.now();
    const d = await ck.dump({ pid, dir });
    dumpMs.push(performance.now() - t0);
    lastImageBytes = d.imageBytes;
    du.push(duBytes(dir));
    if ((shape === 'tree' || shape === 'prefork') && d.pids.length !== n) throw new Error(`${shape}: dumped ${d.pids.length} processes, expected ${n}`);
    for (const p of d.pids) await waitForPidRelease(p);
    process.stderr.write(', restore');
    t0 = performance.now();
    let r;
    try {
      r = await ck.restore({ dir, detach: true });
    } catch (e) {
      if (isOurChild(pid)) track(pid);
      throw e;
    }
    restoreMs.push(performance.now() - t0);
    for (const p of r.pids) track(p);
    if ((shape === 'tree' || shape === 'prefork') && r.pids.length !== n) throw new Error(`restored ${r.pids.length} processes, expected ${n}`);
    checkShape(shape, n, pid);
    if (shape === 'prefork') memRatio.push(anonPss(r.pids) / memBefore);
    for (const p of r.pids) if (p !== pid) killQuietly(p);
    killQuietly(pid);
    await reap(pid);
    untrack(pid);
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(' ok');
    if (compareBin) {
      process.stderr.write('; commands:');
      compareRuns.push(await inTurns(run, () => shapeWorkload(bins, shape, n, extra), [cliTool(configFile), otherTool(compareBin)], `the ${shape} process`));
    }
    process.stderr.write('\n');
  }
  return {
    shape,
    n,
    runs,
    dumpMs: stats(dumpMs),
    restoreMs: stats(restoreMs),
    imageBytes: lastImageBytes,
    imageDuBytes: stats(du),
    anonBytes: stats(touched),
    ...(memRatio.length ? { memRatio: stats(memRatio) } : {}),
    ...(compareBin ? { compare: aggregate(compareRuns), nodeMs: median(nodeWall(['-e', '0'], 5)) } : {}),
  };
}

function printShape(res, idle) {
  const per = { tree: 'process', prefork: 'process', threads: 'thread', files: 'file', bigfile: 'MiB' }[res.shape];
  // The idle process has 1 thread and 3 fds: the shape's extra items over it.
  const items = res.shape === 'files' || res.shape === 'bigfile' ? res.n : res.n - 1;
  const title = {
    idle: 'idle process (1 thread, 3 fds, nothing allocated: the reference of the shapes)',
    tree: `${res.n}-process tree`,
    prefork: `${res.n}-process preforking server (16 MiB shared copy-on-write)`,
    threads: `${res.n}-thread process`,
    files: `process with ${res.n} open files`,
    bigfile: `${res.n} MiB open file saved by content`,
  }[res.shape];
  console.log(`\n== ${title}, ${res.runs} run${res.runs > 1 ? 's' : ''} (median; min/max) ==  image ${(res.imageBytes / 1e6).toFixed(1)} MB`);
  const rows = [];
  const timeRow = (label, s, ref) => {
    const r = [label, fms(s.median), fms(s.min), fms(s.max)];
    if (idle && res !== idle) {
      r.push(
        fms(ref.median),
        fx(s.median / ref.median),
        `idle process, same run; ${(s.median - ref.median) / items >= 0 ? '+' : ''}${((s.median - ref.median) / items).toFixed(3)} ms per ${per}`,
      );
    } else r.push('', '', res === idle ? 'the reference' : '');
    rows.push(r);
  };
  // What the image has to hold: the touched memory (and the content of the file saved by content).
  const held = res.anonBytes.median + (res.shape === 'bigfile' ? res.n * MiB : 0);
  timeRow('dump ms', res.dumpMs, idle?.dumpMs);
  timeRow('restore ms', res.restoreMs, idle?.restoreMs);
  rows.push([
    'image du MB',
    fmb(res.imageDuBytes.median),
    fmb(res.imageDuBytes.min),
    fmb(res.imageDuBytes.max),
    fmb(held),
    fx(res.imageDuBytes.median / held),
    res.shape === 'bigfile'
      ? `touched MB: anonymous memory at the dump (Pss_Anon sum) + the ${res.n} MiB of the file saved by content`
      : 'touched MB: anonymous memory at the dump (Pss_Anon sum)',
  ]);
  if (res.memRatio) {
    rows.push([
      'memory',
      fx(res.memRatio.median),
      fx(res.memRatio.min),
      fx(res.memRatio.max),
      '',
      '',
      'anonymous memory of the tree after the restore / at the dump (Pss_Anon sum)',
    ]);
  }
  printGrid(['', 'median', 'min', 'max', 'reference', 'ratio', ''], rows);
  if (res.compare) {
    const extra = res.shape === 'bigfile' ? { extraBytes: res.n * MiB, extraNote: ` + the ${res.n} MiB of the file (ckpt saves it by content)` } : {};
    printOpsTable(`${title} through the commands, ckpt vs ${otherLabel} (wall time around the spawn)`, res.compare, { nodeMs: res.nodeMs, ...extra });
  }
}

// ---- downtime ---------------------------------------------------------------------------------
/**
 * Downtime of a --leave-running dump as the process sees it: scripts/bench/stall.c wakes every
 * millisecond and reports its longest gap; the dump's own time is beside it. Through the API, the
 * command line, and --compare's checkpointer, one after the other on the same process.
 */
async function downtimeTable(ck, bins, mib) {
  const stalls = [];
  const calls = [];
  const opsRuns = [];
  const nodeMs = [];
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[downtime ${mib} MiB] run ${run}/${runs}:`);
    const h = await startDetached(`stall${mib}`, [bins.stall, String(mib)], /^ready$/m, 120_000);
    try {
      await sleep(300);
      const report = async () => Number((await askLine(h.pid, h.log, 'SIGUSR1', /^maxstall \d+$/, 'maxstall', 10_000))[0].split(' ')[1]) / 1000;
      await report(); // the gaps before the dump
      process.stderr.write(' api');
      const t0 = performance.now();
      await ck.dump({ pid: h.pid, dir: join(tmp, `stall-img-${mib}-${run}`), leaveRunning: true });
      calls.push(performance.now() - t0);
      await sleep(50);
      stalls.push(await report());
      rmSync(join(tmp, `stall-img-${mib}-${run}`), { recursive: true, force: true });
      // The command line (and --compare), through the ops runner, on the same process.
      const wl = {
        name: `stall ${mib}`,
        start: async () => h,
        async check(hh) {
          if (procState(hh.pid) !== 'alive') throw new Error(`stall process ${hh.pid} is not running`);
          await sleep(50);
        },
        stall: (hh) => report(hh),
      };
      const ops = [[cliTool(), 'leave']];
      if (compareBin) ops.push([otherTool(compareBin), 'leave']);
      const out = [];
      for (const [tool, mode] of ops) {
        process.stderr.write(` ${tool.kind}`);
        out.push(await runOp(wl, h, tool, mode));
      }
      opsRuns.push(out);
      nodeMs.push(...nodeWall(['-e', '0'], 3));
      process.stderr.write(' ok\n');
    } finally {
      killTracked([h.pid]);
    }
  }
  const res = { kind: 'downtime', sizeMiB: mib, runs, downtimeMs: stats(stalls), dumpMs: stats(calls), nodeMs: median(nodeMs), ops: aggregate(opsRuns) };
  console.log(`\n== downtime of a --leave-running dump, ${mib} MiB touched, ${runs} run${runs > 1 ? 's' : ''} (median; min/max) ==`);
  const other = !!compareBin;
  const cliL = res.ops['cli:leave'];
  const othL = res.ops['other:leave'];
  const rows = [];
  const row = (label, s, ref, note, o, of) => {
    const r = [label, fms(s?.median), fms(s?.min), fms(s?.max), fms(ref), s && ref ? fx(s.median / ref) : ''];
    if (other) r.push(of ? otherCell(o, of) : '', of && o?.[of] && s ? fx(s.median / o[of].median) : '');
    r.push(note);
    rows.push(r);
  };
  row('downtime ms', res.downtimeMs, res.dumpMs.median, 'longest stall the process saw (1 ms loop) / the dump call');
  row('dump ms', res.dumpMs, undefined, 'the dump call (API)');
  row('downtime, CLI dump ms', cliL?.downtimeMs, cliL?.dumpMs?.median, 'the same, dumped by `ckpt dump --leave-running` / its wall', othL, 'downtimeMs');
  row(
    'dump, CLI wall ms',
    cliL?.dumpMs,
    res.nodeMs,
    `node -e 0; wall - node ${signed(cliL?.dumpMs ? cliL.dumpMs.median - res.nodeMs : undefined)} ms`,
    othL,
    'dumpMs',
  );
  printGrid(['', 'median', 'min', 'max', 'reference', 'ratio', ...(other ? [otherLabel, `ckpt/${otherLabel}`] : []), ''], rows);
  return res;
}

// ---- incremental dumps --------------------------------------------------------------------------
/** The run options that turn a flag of a command on (dump --track-mem, --compress; restore --lazy) in the loaded plugins that declare it. */
function flagOptions(ck, flag, command = 'dump') {
  const out = {};
  for (const p of ck.plugins)
    for (const f of p.flags ?? []) if (f.command === command && f.flags.split(/[ ,]/).includes(flag)) (out[p.name] ??= {})[f.option] = true;
  return out;
}
const trackOptions = (ck) => flagOptions(ck, '--track-mem');

/**
 * zstd on a typical heap (node with 256 MiB of small objects: scripts/bench/heap.cjs): the same
 * process dumped (--leave-running) without and with --compress, then each image restored.
 */
async function compressTable(ck) {
  const mib = 256;
  const plugins = flagOptions(ck, '--compress');
  const r = { plainMs: [], zstdMs: [], plainBytes: [], zstdBytes: [], pageBytes: [], restorePlainMs: [], restoreZstdMs: [] };
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[compress: node heap of ${mib} MiB] run ${run}/${runs}:`);
    const h = await startDetached(`heap${mib}`, [process.execPath, join(root, 'scripts/bench/heap.cjs'), String(mib)], /^ready$/m, 300_000);
    const plain = join(tmp, `heap-plain-${run}`);
    const zstd = join(tmp, `heap-zstd-${run}`);
    try {
      for (const [dir, ms, bytes, opts] of [
        [plain, r.plainMs, r.plainBytes, {}],
        [zstd, r.zstdMs, r.zstdBytes, plugins],
      ]) {
        process.stderr.write(opts === plugins ? ' zstd' : ' plain');
        const t0 = performance.now();
        const d = await ck.dump({ pid: h.pid, dir, leaveRunning: true, plugins: opts });
        ms.push(performance.now() - t0);
        bytes.push(d.imageBytes);
        if (opts !== plugins) r.pageBytes.push(Number(d.stats['memory.pages']) * 4096);
      }
      for (const [dir, ms] of [
        [plain, r.restorePlainMs],
        [zstd, r.restoreZstdMs],
      ]) {
        killTracked([h.pid]);
        await waitForPidRelease(h.pid);
        const t0 = performance.now();
        const rr = await ck.restore({ dir, detach: true });
        ms.push(performance.now() - t0);
        for (const p of rr.pids) track(p);
      }
      process.stderr.write(' ok\n');
    } finally {
      killTracked([h.pid]);
      rmSync(plain, { recursive: true, force: true });
      rmSync(zstd, { recursive: true, force: true });
    }
  }
  const pages = median(r.pageBytes);
  const res = {
    kind: 'compress',
    heapMiB: mib,
    runs,
    pageBytes: pages,
    plainBytes: median(r.plainBytes),
    zstdBytes: median(r.zstdBytes),
    ratio: median(r.plainBytes) / median(r.zstdBytes),
    plainDumpMs: stats(r.plainMs),
    zstdDumpMs: stats(r.zstdMs),
    plainRestoreMs: stats(r.restorePlainMs),
    zstdRestoreMs: stats(r.restoreZstdMs),
  };
  console.log(`\n== zstd (--compress) on a node heap of ${mib} MiB of small objects, ${runs} run${runs > 1 ? 's' : ''} (median; min/max) ==`);
  const rows = [];
  const row = (label, s, ref, note) => rows.push([label, fms(s?.median), fms(s?.min), fms(s?.max), fms(ref), s && ref ? fx(s.median / ref) : '', note]);
  row('dump ms, plain', res.plainDumpMs, undefined, `${fx(gbs(pages, res.plainDumpMs.median))} GB/s of pages`);
  row('dump ms, --compress', res.zstdDumpMs, res.plainDumpMs.median, `${fx(gbs(pages, res.zstdDumpMs.median))} GB/s of pages; ratio to plain`);
  row('restore ms, plain', res.plainRestoreMs, undefined, '');
  row('restore ms, --compress', res.zstdRestoreMs, res.plainRestoreMs.median, 'ratio to plain');
  printGrid(['', 'median', 'min', 'max', 'reference', 'ratio', ''], rows);
  console.log(`  image: ${fmb(res.plainBytes)} MB plain, ${fmb(res.zstdBytes)} MB compressed: ${fx(res.ratio)}x smaller (${fmb(pages)} MB of pages)`);
  return res;
}

/**
 * A 1 GiB process (stall.c) that writes 1% of its pages between checkpoints: a full tracked dump,
 * then CHAIN incremental dumps through the API (and one more by the CLI), each one's downtime
 * seen from inside and its image; then the restore of the whole chain next to the restore of the
 * full image alone.
 */
async function incrementalTable(ck, bins) {
  const mib = 1024;
  const CHAIN = 10;
  const plugins = trackOptions(ck);
  const full = { stall: [], ms: [], bytes: [] };
  const inc = { stall: [], ms: [], bytes: [] };
  const cli = { stall: [], ms: [] };
  const restoreChain = [];
  const restoreFull = [];
  const nodeMs = [];
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[incremental ${mib} MiB, 1% written between dumps] run ${run}/${runs}:`);
    const h = await startDetached(`dirty${mib}`, [bins.stall, String(mib), '10'], /^ready$/m, 120_000);
    const dir = join(tmp, `inc-${run}`);
    try {
      await sleep(300);
      const report = async () => Number((await askLine(h.pid, h.log, 'SIGUSR1', /^maxstall \d+$/, 'maxstall', 10_000))[0].split(' ')[1]) / 1000;
      const dirty = () => askLine(h.pid, h.log, 'SIGUSR2', /^dirtied \d+$/, 'dirtied', 10_000);
      await report();
      process.stderr.write(' full');
      let t0 = performance.now();
      let d = await ck.dump({ pid: h.pid, dir, leaveRunning: true, keep: 100, plugins });
      full.ms.push(performance.now() - t0);
      full.stall.push(await report());
      full.bytes.push(d.imageBytes);
      process.stderr.write(` ${CHAIN} increments`);
      for (let i = 0; i < CHAIN; i++) {
        await dirty();
        await report();
        t0 = performance.now();
        d = await ck.dump({ pid: h.pid, dir, leaveRunning: true, keep: 100, parent: dir, plugins });
        inc.ms.push(performance.now() - t0);
        inc.stall.push(await report());
        inc.bytes.push(d.imageBytes);
        if (!d.stats['memory.parentBytes']) throw new Error(`increment ${i + 1} was a full image: ${JSON.stringify(d.stats)}`);
      }
      // The same by the command line, into a directory of its own (the chain above stays 10 long).
      process.stderr.write(' cli');
      const cliDir = join(tmp, `inc-cli-${run}`);
      await ck.dump({ pid: h.pid, dir: cliDir, leaveRunning: true, plugins });
      await dirty();
      await report();
      const r = spawnWall(ckptBin, ['dump', '-R', '-t', String(h.pid), '-D', cliDir, '--parent', cliDir, '--json']);
      if (r.code !== 0) throw new Error(`ckpt dump --parent failed: ${r.stderr}`);
      cli.ms.push(r.ms);
      cli.stall.push(await report());
      rmSync(cliDir, { recursive: true, force: true });
      nodeMs.push(...nodeWall(['-e', '0'], 3));
      // Restores: the full image once untimed (on this kind of VM the first GiB of memory taken
      // again after a while costs ~4 s/GiB, whichever restore comes first), then the chain (its
      // newest image) and the full image alone, timed.
      process.stderr.write(' restores');
      for (const [generation, into] of [
        [1, []],
        [undefined, restoreChain],
        [1, restoreFull],
      ]) {
        killTracked([h.pid]);
        await waitForPidRelease(h.pid);
        t0 = performance.now();
        const rr = await ck.restore({ dir, generation, detach: true });
        into.push(performance.now() - t0);
        for (const p of rr.pids) track(p);
      }
      process.stderr.write(' ok\n');
    } finally {
      killTracked([h.pid]);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const res = {
    kind: 'incremental',
    sizeMiB: mib,
    runs,
    chain: CHAIN,
    fullDowntimeMs: stats(full.stall),
    fullDumpMs: stats(full.ms),
    fullBytes: median(full.bytes),
    incDowntimeMs: stats(inc.stall),
    incDumpMs: stats(inc.ms),
    incBytes: median(inc.bytes),
    cliDowntimeMs: stats(cli.stall),
    cliDumpMs: stats(cli.ms),
    nodeMs: median(nodeMs),
    restoreChainMs: stats(restoreChain),
    restoreFullMs: stats(restoreFull),
  };
  console.log(
    `\n== incremental dumps: ${mib} MiB, 1% of its pages written between dumps, chains of ${CHAIN}, ${runs} run${runs > 1 ? 's' : ''} (median; min/max) ==`,
  );
  const rows = [];
  const row = (label, s, ref, note) => rows.push([label, fms(s?.median), fms(s?.min), fms(s?.max), fms(ref), s && ref ? fx(s.median / ref) : '', note]);
  row('full dump: downtime ms', res.fullDowntimeMs, undefined, 'longest stall the process saw (1 ms loop), --leave-running --track-mem');
  row('full dump ms', res.fullDumpMs, undefined, 'the dump call (API)');
  row('increment: downtime ms', res.incDowntimeMs, res.fullDowntimeMs.median, `ratio to the full dump's; ${CHAIN} per run`);
  row('increment ms', res.incDumpMs, res.fullDumpMs.median, "the dump call (API); ratio to the full dump's");
  row('increment, CLI: downtime ms', res.cliDowntimeMs, undefined, 'dumped by `ckpt dump -R --parent`');
  row('increment, CLI wall ms', res.cliDumpMs, res.nodeMs, `node -e 0; wall - node ${signed(res.cliDumpMs.median - res.nodeMs)} ms`);
  row(
    'restore of the chain ms',
    res.restoreChainMs,
    res.restoreFullMs.median,
    `the newest of ${CHAIN} increments and the full image; ratio to the full image's alone`,
  );
  row('restore of the full image ms', res.restoreFullMs, undefined, '');
  printGrid(['', 'median', 'min', 'max', 'reference', 'ratio', ''], rows);
  console.log(
    `  image: full ${fmb(res.fullBytes)} MB, increment ${fmb(res.incBytes)} MB (${((100 * res.incBytes) / res.fullBytes).toFixed(2)}% of the full one; 1% of the pages was written)`,
  );
  return res;
}

// ---- lazy restore --------------------------------------------------------------------------------
/**
 * restore --lazy of a 1 GiB process (scripts/bench/lazy.c): when it runs its first instruction
 * after the restore (its own CLOCK_MONOTONIC, against process.hrtime taken just before the restore
 * starts: the same clock), when all its pages are in (its smaps, polled every 2 ms), and the same
 * for the eager restore; through the API, and the lazy one by the command line too.
 */
async function lazyTable(ck, bins) {
  const mib = 1024;
  const lazy = flagOptions(ck, '--lazy', 'restore');
  if (!Object.keys(lazy).length) throw new Error('no loaded plugin has restore --lazy');
  const r = { lazyFirst: [], lazyCall: [], lazyAllIn: [], eagerFirst: [], eagerCall: [], cliFirst: [], cliWall: [], resident: [] };
  const nodeMs = [];
  let refGBs = 0;
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[lazy restore of ${mib} MiB] run ${run}/${runs}:`);
    const go = join(tmp, `lazy-go-${run}`);
    const h = await startDetached(`lazy${mib}`, [bins.lazy, String(mib), go], /^ready$/m, 300_000);
    const dir = join(tmp, `lazy-${run}`);
    try {
      process.stderr.write(' dump');
      await ck.dump({ pid: h.pid, dir });
      await waitForPidRelease(h.pid);
      // One eager restore untimed first (memory this VM took back is slow to take again), then
      // lazy and eager through the API, then lazy by the command line.
      for (const [label, mode] of [
        ['warm-up', 'eager'],
        ['lazy', 'lazy'],
        ['eager', 'eager'],
        ['cli', 'cli'],
      ]) {
        process.stderr.write(` ${label}`);
        const from = readLog(h.log).length;
        writeFileSync(go, '');
        const t0 = process.hrtime.bigint();
        let callMs;
        if (mode === 'cli') {
          const c = spawnWall(ckptBin, ['restore', '-D', dir, '--detach', '--lazy']);
          if (c.code !== 0) throw new Error(`ckpt restore --lazy failed: ${c.stderr}`);
          callMs = c.ms;
        } else {
          const p0 = performance.now();
          const rr = await ck.restore({ dir, detach: true, ...(mode === 'lazy' ? { plugins: lazy } : {}) });
          callMs = performance.now() - p0;
          for (const p of rr.pids) track(p);
        }
        track(h.pid);
        const after = (re) => waitForLine(h.log, (t) => re.exec(t.slice(from)), `${re}`, 120_000);
        const first = Number(BigInt((await after(/^first (\d+)$/m))[1]) - t0) / 1e6;
        const resident = Number((await after(/^resident (-?\d+)$/m))[1]);
        const allIn = Number(BigInt((await after(/^allin (\d+)$/m))[1]) - t0) / 1e6;
        const done = await after(/^(ok|FAIL.*)$/m);
        if (done[1] !== 'ok') throw new Error(`${label} restore: the process says ${done[1]}`);
        if (mode === 'lazy') {
          r.lazyFirst.push(first);
          r.lazyCall.push(callMs);
          r.lazyAllIn.push(allIn);
          r.resident.push(resident * 1024);
        } else if (mode === 'cli') {
          r.cliFirst.push(first);
          r.cliWall.push(callMs);
        } else if (label === 'eager') {
          r.eagerFirst.push(first);
          r.eagerCall.push(callMs);
        }
        killTracked([h.pid]);
        await waitForPidRelease(h.pid);
        rmSync(go, { force: true });
        // The helper exits once every page is in: none may outlive its process for long.
        await waitForLine(h.log, () => (lazyHelpers().length ? null : true), 'ckpt-lazy helpers gone', 30_000);
      }
      nodeMs.push(...nodeWall(['-e', '0'], 3));
      if (!refGBs) refGBs = writeRef(bins, mib, tmp).readFreshGBs;
      process.stderr.write(' ok\n');
    } finally {
      killTracked([h.pid]);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const res = {
    kind: 'lazy',
    sizeMiB: mib,
    runs,
    lazyFirstMs: stats(r.lazyFirst),
    lazyCallMs: stats(r.lazyCall),
    lazyAllInMs: stats(r.lazyAllIn),
    residentAtFirstBytes: median(r.resident),
    eagerFirstMs: stats(r.eagerFirst),
    eagerCallMs: stats(r.eagerCall),
    cliFirstMs: stats(r.cliFirst),
    cliWallMs: stats(r.cliWall),
    nodeMs: median(nodeMs),
    readFreshMs: (mib * MiB) / (refGBs * 1e6),
  };
  console.log(`\n== restore --lazy: ${mib} MiB, ${runs} run${runs > 1 ? 's' : ''} (median; min/max) ==`);
  const rows = [];
  const row = (label, s, ref, note) => rows.push([label, fms(s?.median), fms(s?.min), fms(s?.max), fms(ref), s && ref ? fx(s.median / ref) : '', note]);
  row(
    'lazy: first instruction ms',
    res.lazyFirstMs,
    res.eagerFirstMs.median,
    "seen from inside, from the restore call's start (API); ratio to the eager restore's",
  );
  row('lazy: restore call ms', res.lazyCallMs, undefined, 'until ck.restore returned');
  row('lazy: all pages in ms', res.lazyAllInMs, res.readFreshMs, `the process's smaps; reference: read() of ${mib} MiB of page cache into fresh memory`);
  row('eager: first instruction ms', res.eagerFirstMs, res.readFreshMs, 'restore without --lazy (API); reference: read() into fresh memory');
  row('lazy, CLI: first instruction ms', res.cliFirstMs, res.nodeMs, '`ckpt restore --lazy -d`, from the spawn; reference: node -e 0');
  row('lazy, CLI: wall ms', res.cliWallMs, res.nodeMs, `node -e 0; wall - node ${signed(res.cliWallMs.median - res.nodeMs)} ms`);
  printGrid(['', 'median', 'min', 'max', 'reference', 'ratio', ''], rows);
  console.log(`  resident when it first ran: ${fmb(res.residentAtFirstBytes)} MB of ${fmb(mib * MiB)} MB`);
  return res;
}

// ---- migration and the page server ------------------------------------------------------------
/**
 * ckpt migrate between two network namespaces with a real sshd each (scripts/hosts.mjs), the
 * migrant writing 1% of its 1 GiB a second: eagerly, lazily, and lazily with the images through
 * ssh itself (--no-direct); then a dump of it to a page server on the other host,
 * next to an nc-style copy of as many bytes over the same link.
 */
async function migrateTable(bins) {
  const why = sshdAvailable();
  if (why) {
    console.log(`\n== migrate: SKIPPED (${why}) ==`);
    return { kind: 'migrate', skipped: why };
  }
  const mib = 1024;
  const H = await makeHosts(['a', 'b'], ckptBin);
  const [a, b] = H.hosts;
  const inNs = (h, file, argv, timeout) => spawnWall(H.inNs(h)[0], [...H.inNs(h).slice(1), file, ...argv], timeout);
  const cli = (h, argv, timeout) => inNs(h, ckptBin, argv, timeout);
  // eager a -> b and lazy b -> a over the direct channel (the default); lazy a -> b again with
  // the images through ssh itself (--no-direct), for the channel's share of the downtime.
  const MODES = ['eager', 'lazy', 'lazy-ssh'];
  const per = () => Object.fromEntries(MODES.map((m) => [m, []]));
  const r = { inside: per(), source: per(), wall: per(), rounds: per(), sent: per(), sendMs: per() };
  const ps = { ms: [], bytes: 0, refMs: [] };
  const ssh = [];
  try {
    for (let run = 1; run <= runs; run++) {
      process.stderr.write(`[migrate ${mib} MiB] run ${run}/${runs}:`);
      const report = join(tmp, `migrant-${run}`);
      const st = cli(a, ['run', '--json', '--stdout', join(tmp, `migrant-${run}.out`), '--', bins.migrant, String(mib), '10', report]);
      if (st.code !== 0) throw new Error(`ckpt run migrant: ${st.stderr}`);
      let app = JSON.parse(st.stdout);
      track(app.pid);
      track(app.init);
      await waitForLine(report, (t) => /^ready/m.test(t), 'ready', 120_000);
      let seen = 0;
      const verify = async (pid) => {
        seen++;
        process.kill(pid, 'SIGUSR1');
        const line = await waitForLine(report, (t) => t.split('\n').filter((l) => /^(ok|FAIL) verify/.test(l))[seen - 1], 'verify', 60_000);
        if (!line.startsWith('ok')) throw new Error(`the migrant says: ${line}`);
        return Number(/stall_ms=([\d.]+)/.exec(line)[1]);
      };
      await verify(app.pid);
      let pid = app.pid;
      for (const [mode, from, to] of [
        ['eager', a, b],
        ['lazy', b, a],
        ['lazy-ssh', a, b],
      ]) {
        process.stderr.write(` ${mode}`);
        await sleep(2000);
        const m = cli(from, [
          'migrate',
          '--app',
          app.app,
          '--to',
          to.name,
          '--ssh',
          H.ssh.join(' '),
          '--remote-ckpt',
          H.remoteCkpt(to).join(' '),
          '--json',
          ...(mode !== 'eager' ? ['--lazy'] : []),
          ...(mode === 'lazy-ssh' ? ['--no-direct'] : []),
        ]);
        if (m.code !== 0) throw new Error(`ckpt migrate (${mode}): ${m.stderr}`);
        const j = JSON.parse(m.stdout);
        for (const p of j.pids) track(p);
        await waitForPidRelease(pid);
        pid = j.main;
        app = { ...app, app: j.app ?? app.app, pid };
        // A second of running there first: its longest stall then counts what it waited for
        // just after it ran again (with --lazy: the pages it writes that are not in yet).
        await sleep(1000);
        r.inside[mode].push(await verify(pid));
        r.source[mode].push(j.downtimeMs);
        r.wall[mode].push(m.ms);
        r.rounds[mode].push(j.rounds.length);
        r.sent[mode].push(j.bytesSent);
        r.sendMs[mode].push(j.phases.sendMs);
        if ((mode === 'lazy-ssh') !== (j.channel === 'ssh')) throw new Error(`ckpt migrate (${mode}) sent over ${j.channel}: ${j.channelNote ?? ''}`);
      }
      ssh.push(inNs(a, H.ssh[0], [...H.ssh.slice(1), 'b', 'true']).ms);
      // The page server on b; the dump from a.
      process.stderr.write(' page-server');
      const psDir = join(tmp, `ps-${run}`);
      // The process is on b after the three migrations: the server on a.
      const server = spawnDetachedIn(a, [ckptBin, 'page-server', '--listen', `${a.addr}:0`, '-D', psDir, '--once', '--json']);
      const port = await server.port;
      const d = cli(b, ['dump', '--app', app.app, '--page-server', `${a.addr}:${port}`, '--leave-running', '--json']);
      if (d.code !== 0) throw new Error(`ckpt dump --page-server: ${d.stderr}`);
      ps.ms.push(d.ms);
      ps.bytes = JSON.parse(d.stdout).imageBytes;
      await server.done;
      const blob = readdirSync(join(psDir, '1')).find((n) => n.startsWith('pages-') && statSizeOf(join(psDir, '1', n)) > 100 * MiB);
      // The reference: the same bytes, page-cached, sent over the same link by sendfile, written to a file there.
      const recv = spawnDetachedIn(a, ['python3', join(root, 'scripts/bench/tcpcopy.py'), 'recv', a.addr, join(tmp, `copy-${run}`)], /^(\d+)$/m);
      const c = inNs(b, 'python3', [join(root, 'scripts/bench/tcpcopy.py'), 'send', a.addr, String(await recv.port), join(psDir, '1', blob)]);
      if (c.code !== 0) throw new Error(`tcpcopy: ${c.stderr}`);
      ps.refMs.push(Number(c.stdout.trim()) * (ps.bytes / statSizeOf(join(psDir, '1', blob))));
      await recv.done;
      rmSync(psDir, { recursive: true, force: true });
      rmSync(join(tmp, `copy-${run}`), { force: true });
      killTracked([pid, app.init]);
      process.stderr.write(' ok\n');
    }
  } finally {
    H.remove();
  }
  const res = {
    kind: 'migrate',
    sizeMiB: mib,
    runs,
    sshMs: median(ssh),
    ...Object.fromEntries(
      MODES.map((m) => [
        m,
        {
          insideMs: stats(r.inside[m]),
          sourceMs: stats(r.source[m]),
          wallMs: stats(r.wall[m]),
          rounds: median(r.rounds[m]),
          sentBytes: median(r.sent[m]),
          finalSendMs: stats(r.sendMs[m]),
        },
      ]),
    ),
    pageServer: { bytes: ps.bytes, ms: stats(ps.ms), refMs: median(ps.refMs) },
  };
  console.log(`\n== migrate: ${mib} MiB writing 1% a second, between two netns hosts over ssh, ${runs} run${runs > 1 ? 's' : ''} (median; min/max) ==`);
  const rows = [];
  const row = (label, s, ref, note) => rows.push([label, fms(s?.median), fms(s?.min), fms(s?.max), fms(ref), s && ref ? fx(s.median / ref) : '', note]);
  const how = { eager: 'a -> b', lazy: 'migrate --lazy, b -> a', 'lazy-ssh': 'migrate --lazy --no-direct, a -> b: the images through ssh' };
  for (const m of MODES) {
    const x = res[m];
    row(`${m}: downtime seen inside ms`, x.insideMs, res.sshMs, `its longest stall, to 1 s after; reference: ssh b true (${how[m]})`);
    row(`${m}: downtime (source) ms`, x.sourceMs, undefined, 'from the final freeze to "running" there, as ckpt migrate reports it');
    row(
      `${m}: final round sent ms`,
      x.finalSendMs,
      undefined,
      `the final image to the destination (${m === 'lazy-ssh' ? 'through ssh' : 'the direct channel'}), within the downtime`,
    );
    row(`${m}: wall ms`, x.wallMs, undefined, `${x.rounds} rounds, ${fmb(x.sentBytes)} MB sent`);
  }
  const gbs = (ms) => ps.bytes / (ms * 1e6);
  rows.push([
    'page server: dump GB/s',
    fx(gbs(res.pageServer.ms.median)),
    fx(gbs(res.pageServer.ms.max)),
    fx(gbs(res.pageServer.ms.min)),
    fx(gbs(res.pageServer.refMs)),
    fx(res.pageServer.refMs / res.pageServer.ms.median),
    `dump --page-server --leave-running (CLI wall) of ${fmb(ps.bytes)} MB; reference: sendfile of as many bytes over the same link into a file there`,
  ]);
  printGrid(['', 'median', 'min', 'max', 'reference', 'ratio', ''], rows);
  return res;
}

function statSizeOf(p) {
  return statSync(p).size;
}

/**
 * Starts argv in host h's namespace, detached, stdout read for its port (a JSON "port", or the
 * first line matching `portRe`): { port: Promise<number>, done: Promise<void> (it exited) }.
 */
function spawnDetachedIn(h, argv, portRe = /"port":(\d+)/) {
  const child = spawn('nsenter', [`--net=/run/netns/${h.ns}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child.pid);
  let out = '';
  let err = '';
  child.stderr.on('data', (x) => (err += x));
  const port = new Promise((res, rej) => {
    child.stdout.on('data', (x) => {
      out += x;
      const m = portRe.exec(out);
      if (m) res(Number(m[1]));
    });
    child.on('exit', () => rej(new Error(`${argv.join(' ')} exited: ${err}`)));
  });
  const done = new Promise((res) => child.on('exit', () => res()));
  return { port, done };
}

/** Live ckpt-lazy helpers and watchdogs (any). */
function lazyHelpers() {
  const out = [];
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (/\((ckpt-lazy|ckpt-lazy-wd)\) [^Z]/.test(stat)) out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out;
}

// ---- periodic checkpoints -----------------------------------------------------------------------
/**
 * What periodic checkpoints cost a compute-bound application (scripts/bench/compute.c, 256 MiB,
 * writing about 1% of it per second): its rate of work over a window without checkpoints, with
 * `ckpt run --checkpoint-every 10s` (incremental after the first), and without again. Windows
 * minutes apart differ by several percent on a shared VM, more than the cost sought; so the cost
 * is also measured inside the window with checkpoints: the program counts its work per 250 ms
 * slice, and the work missing from the slices a checkpoint overlaps (the checkpointer's log
 * gives each one's start and end), against the median slice of the same window, is what the
 * checkpoints took from it.
 */
async function periodicTable(bins) {
  const WINDOW_MS = 40_000;
  const SLICE_MS = 250;
  const one = async (label, extra) => {
    process.stderr.write(` ${label}`);
    const log = join(tmp, `compute-${++seq}.log`);
    const out = execFileSync(process.execPath, [cli, 'run', '--json', '--stdout', log, ...extra, '--', bins.compute, '256', String(SLICE_MS)], {
      encoding: 'utf8',
    });
    const j = JSON.parse(out.trim().split('\n').at(-1));
    track(j.pid);
    if (j.checkpointer) track(j.checkpointer.pid);
    try {
      await waitForLine(log, (t) => /^ready$/m.test(t), 'ready', 60_000);
      const rounds = async () => Number((await askLine(j.pid, log, 'SIGUSR1', /^rounds \d+$/, 'rounds', 10_000))[0].split(' ')[1]);
      const r0 = await rounds();
      const t0 = performance.now();
      const from = Date.now();
      await sleep(WINDOW_MS);
      const r1 = await rounds();
      const to = Date.now();
      const rate = (r1 - r0) / ((performance.now() - t0) / 1000);
      const lines = j.checkpointer
        ? readLog(j.checkpointer.log)
            .split('\n')
            .filter((l) => /generation \d+/.test(l))
        : [];
      // Each checkpoint: [start, end] in wall-clock ms (the log line is written as the dump returns).
      const checkpoints = lines.map((l) => {
        const end = Date.parse(l.split(' ')[0]);
        return { start: end - Number(/ in (\d+) ms/.exec(l)?.[1] ?? 0), end, frozen: Number(/frozen (\d+) ms/.exec(l)?.[1] ?? 0) };
      });
      const slices = [];
      let prev;
      for (const m of readLog(log).matchAll(/^slice (\d+) (\d+)$/gm)) {
        const end = Number(m[1]);
        if (prev !== undefined && prev >= from && end <= to) slices.push({ start: prev, end, rounds: Number(m[2]) });
        prev = end;
      }
      return { rate, checkpoints, slices };
    } finally {
      killTracked([j.pid, ...(j.checkpointer ? [j.checkpointer.pid] : [])]);
      if (j.checkpointer) rmSync(j.checkpointer.log, { force: true });
    }
  };
  const dir = join(tmp, 'periodic-img');
  process.stderr.write(`[periodic checkpoints every 10 s, compute-bound, ${WINDOW_MS / 1000} s windows]:`);
  const a1 = await one('without', []);
  const b = await one('with', ['--checkpoint-every', '10s', '-D', dir, '--keep', '2']);
  const a2 = await one('without', []);
  process.stderr.write(' ok\n');
  rmSync(dir, { recursive: true, force: true });
  const base = (a1.rate + a2.rate) / 2;
  // Inside the window with checkpoints: the slices a checkpoint overlaps (or ends just before),
  // against the median rate of the others.
  const near = (sl) => b.checkpoints.some((c) => sl.start < c.end + SLICE_MS && sl.end > c.start);
  const rateOf = (sl) => sl.rounds / (sl.end - sl.start);
  const quiet = b.slices.filter((sl) => !near(sl)).map(rateOf);
  const quietRate = median(quiet);
  const span = b.slices.reduce((a, sl) => a + (sl.end - sl.start), 0);
  const lostMs = b.slices.filter(near).reduce((a, sl) => a + (sl.end - sl.start) - sl.rounds / quietRate, 0);
  const res = {
    kind: 'periodic',
    windowMs: WINDOW_MS,
    rateWithout: base,
    rateWith: b.rate,
    slowdown: 1 - b.rate / base,
    quietRate: quietRate * 1000,
    lostMs,
    cost: lostMs / span,
    checkpoints: b.checkpoints.length,
    frozenMs: b.checkpoints.map((c) => c.frozen),
    checkpointMs: b.checkpoints.map((c) => c.end - c.start),
  };
  console.log(`\n== periodic checkpoints (every 10 s, incremental after the first) of a compute-bound program, ${WINDOW_MS / 1000} s windows ==`);
  printGrid(
    ['', 'rounds/s', 'reference', 'ratio', ''],
    [
      ['without checkpoints', fx(base), '', '', `two windows: ${fx(a1.rate)}, ${fx(a2.rate)}`],
      [
        'with checkpoints',
        fx(b.rate),
        fx(base),
        fx(b.rate / base),
        `${b.checkpoints.length} checkpoints in the window (each ${res.checkpointMs.join(', ')} ms, frozen ${res.frozenMs.join(', ')} ms); this window ${Math.abs(100 * res.slowdown).toFixed(2)}% ${res.slowdown >= 0 ? 'slower' : 'faster'} than those without`,
      ],
      [
        '  between checkpoints',
        fx(res.quietRate),
        fx(base),
        fx(res.quietRate / base),
        `median of its ${quiet.length} slices of ${SLICE_MS} ms away from a checkpoint (the drift between windows, and write tracking)`,
      ],
      [
        '  cost of the checkpoints',
        '',
        '',
        '',
        `${(100 * res.cost).toFixed(2)}% of the window: ${lostMs.toFixed(0)} ms of its work missing from the ${b.slices.length - quiet.length} slices the checkpoints overlap, against the median slice`,
      ],
    ],
  );
  return res;
}

// ---- CLI start-up -------------------------------------------------------------------------------
/**
 * Wall time of the ckpt command for what costs no work (--version, --help), next to `node -e 0`
 * as ckpt starts node (the reference) and as this environment starts it, NODE_EXTRA_CA_CERTS
 * included when it is set.
 */
function startupTable() {
  const wall = (file, argv, env = process.env) => {
    const t = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      execFileSync(file, argv, { stdio: 'ignore', env });
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[3];
  };
  const node = wall(process.execPath, ['-e', '0'], nodeEnv);
  console.log('\n== CLI start-up, wall time (median of 7) ==');
  console.log(`node -e 0          ${node.toFixed(1).padStart(7)} ms   (reference; as ckpt starts node)`);
  const res = { kind: 'startup', nodeMs: node };
  if (process.env.NODE_EXTRA_CA_CERTS !== undefined) {
    res.nodeExtraCaMs = wall(process.execPath, ['-e', '0']);
    console.log(`node -e 0          ${res.nodeExtraCaMs.toFixed(1).padStart(7)} ms   (with NODE_EXTRA_CA_CERTS, as this environment sets it)`);
  }
  for (const [label, argv, key] of [
    ['ckpt --version', ['--version'], 'versionMs'],
    ['ckpt --help', ['--help'], 'helpMs'],
  ]) {
    const ms = wall(ckptBin, argv);
    res[key] = ms;
    console.log(`${label.padEnd(18)} ${ms.toFixed(1).padStart(7)} ms   node start-up + ${(ms - node).toFixed(1)} ms, ${(ms / node).toFixed(2)} x node`);
  }
  return res;
}

// ---- CLI wall times ---------------------------------------------------------------------------
/**
 * What a user of the command line waits for, on the memory workload of `mib` MiB (16: the issue's
 * small process): ckpt dump (kills), ckpt restore -d and ckpt dump --leave-running as child
 * processes, next to `node -e 0` and to the same operations through the API (same process, same
 * run), and --compare's.
 */
async function cliTable(ck, bins, mib) {
  const ref = writeRef(bins, mib, tmp);
  const wl = heapWorkload(bins, mib);
  const api = apiTool(ck);
  const cmd = cliTool();
  const ops = [
    [api, 'kill'],
    [cmd, 'kill'],
    [api, 'leave'],
    [cmd, 'leave'],
  ];
  if (compareBin) ops.push([otherTool(compareBin), 'leave'], [otherTool(compareBin), 'kill']);
  const opsRuns = [];
  const nodeMs = [];
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[cli ${mib} MiB] run ${run}/${runs}: node -e 0`);
    nodeMs.push(...nodeWall(['-e', '0'], 3));
    opsRuns.push(await runOps(wl, ops, `the ${mib} MiB workload`));
    process.stderr.write(' ok\n');
  }
  const res = { kind: 'cli', sizeMiB: mib, runs, nodeMs: stats(nodeMs), writeGBs: ref.writeGBs, ops: aggregate(opsRuns) };
  printOpsTable(`CLI wall time, ${mib} MiB workload (the heap checked after every operation), ${runs} run${runs > 1 ? 's' : ''} (median; min/max)`, res.ops, {
    nodeMs: res.nodeMs.median,
    writeGBs: ref.writeGBs,
  });
  console.log(
    `(node -e 0: ${fms(res.nodeMs.median)} ms, median of ${nodeMs.length}, min ${fms(res.nodeMs.min)}, max ${fms(res.nodeMs.max)}; ` +
      `write() reference: ${ref.writeGBs} GB/s into the page cache, ${mib} MiB)`,
  );
  return res;
}

// ---- ckpt server -------------------------------------------------------------------------------
/** Waits (up to 2 s) until process pid has used no CPU time for 40 ms: its work after a command is done. */
async function quiet(pid) {
  const cpu = () => {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return Number(f[11]) + Number(f[12]); // utime + stime, every thread's
    } catch {
      return -1;
    }
  };
  await sleep(40);
  let last = cpu();
  for (const end = Date.now() + 2000; Date.now() < end; ) {
    await sleep(40);
    const now = cpu();
    if (now === last) return;
    last = now;
  }
}

/**
 * The command line with `ckpt server` running: the dumps and restores of an idle process, the
 * 16 and 64 MiB workloads, 200 threads, 2000 open files and the 16- and 64-process trees, each in
 * the command's own process and served, on the same process, alternating; next to `node -e 0` and
 * --compare's. The server's log must name every served command (else the figure is not what it
 * says), and says which were asked through dist/ckpt-client.
 */
async function serverTable(bins) {
  const sock = join(tmp, 'ckpt.sock');
  const log = join(tmp, 'server.log');
  const out = openSync(log, 'w');
  const server = spawn(ckptBin, ['server', '--socket', sock], { stdio: ['ignore', out, out], env: nodeEnv });
  closeSync(out);
  try {
    await waitForLine(log, (t) => /listening on /.test(t), 'ckpt server listening', 30_000);
    const own = cliTool();
    // After each command the server collects its heap (server.ts: 20 ms later, some 20-60 ms on
    // both CPUs): the next command, in its own process, waits for that to end rather than start
    // beside it (the own-process rows were 10-40 ms above the same commands timed alone).
    const asked = cliTool(undefined, sock);
    const served = {
      ...asked,
      async dump(...a) {
        const r = await asked.dump(...a);
        await quiet(server.pid);
        return r;
      },
      async restore(...a) {
        const r = await asked.restore(...a);
        await quiet(server.pid);
        return r;
      },
    };
    const filesDir = join(tmp, 'server-files');
    mkdirSync(filesDir, { recursive: true });
    const workloads = [
      ['idle process', shapeWorkload(bins, 'idle', 1, [])],
      ['16 MiB workload', heapWorkload(bins, 16)],
      ['64 MiB workload', heapWorkload(bins, 64)],
      ['200 threads', shapeWorkload(bins, 'threads', 200, [])],
      ['2000 open files', shapeWorkload(bins, 'files', 2000, [filesDir])],
      ['16-process tree', shapeWorkload(bins, 'tree', 16, [])],
      ['64-process copy-on-write tree', shapeWorkload(bins, 'prefork', 64, [])],
      // The larger --sizes too (1 GiB by default): where the copy, not the start-up, is the cost.
      ...sizes.filter((mib) => mib > 64).map((mib) => [`${mib} MiB workload`, heapWorkload(bins, mib)]),
    ];
    const rows = [];
    const res = { kind: 'server', runs, workloads: {} };
    const nodeMs = [];
    for (const [label, wl] of workloads) {
      const opsRuns = [];
      for (let run = 1; run <= runs; run++) {
        process.stderr.write(`[server: ${label}] run ${run}/${runs}:`);
        nodeMs.push(...nodeWall(['-e', '0'], 2));
        const ops = [
          [own, 'leave'],
          [served, 'leave'],
          [own, 'kill'],
          [served, 'kill'],
        ];
        if (compareBin) ops.push([otherTool(compareBin), 'leave'], [otherTool(compareBin), 'kill']);
        opsRuns.push(await runOps(wl, run % 2 ? ops : [ops[1], ops[0], ops[3], ops[2], ...ops.slice(4)], `the ${label}`));
        process.stderr.write(' ok\n');
      }
      res.workloads[label] = slimAgg(aggregate(opsRuns));
      rows.push([label, aggregate(opsRuns)]);
    }
    const servedLines = readLog(log)
      .split('\n')
      .filter((l) => /: exit 0,/.test(l));
    const servedCount = servedLines.length;
    // The program asks through dist/ckpt-client where it was built (the server's log says so).
    const byClient = servedLines.filter((l) => l.endsWith('(C client)')).length;
    res.servedByCClient = byClient;
    // Two dumps and a restore per run and workload.
    const expected = workloads.length * runs * 3;
    if (servedCount < expected) throw new Error(`ckpt server ran ${servedCount} commands, expected ${expected}:\n${readLog(log).slice(-2000)}`);
    const node = median(nodeMs);
    res.nodeMs = node;
    const other = !!compareBin;
    console.log(`\n== the command line with ckpt server running, ${runs} run${runs > 1 ? 's' : ''} (median; wall time around the spawn) ==`);
    const head = [
      '',
      'own process',
      'served',
      'node -e 0',
      'served - node',
      'served / own',
      ...(other ? [otherLabel, `served/${otherLabel}`] : []),
      'own - node',
      "served: ckpt's own ms",
    ];
    const grid = [];
    for (const [label, agg] of rows) {
      for (const [mode, what, key, own] of [
        ['leave', 'dump --leave-running', 'dumpMs', 'ownDumpMs'],
        ['kill', 'dump (kills)', 'dumpMs', 'ownDumpMs'],
        ['kill', 'restore -d', 'restoreMs', 'ownRestoreMs'],
      ]) {
        const o = agg[`cli:${mode}`]?.[key]?.median;
        const v = agg[`srv:${mode}`]?.[key]?.median;
        const oth = agg[`other:${mode}`];
        const r = [`${label}, ${what} ms`, fms(o), fms(v), fms(node), signed(v - node), fx(v / o)];
        if (other) r.push(otherCell(oth, key), oth?.[key] ? fx(v / oth[key].median) : '');
        r.push(signed(o - node), fms(agg[`srv:${mode}`]?.[own]?.median));
        grid.push(r);
      }
    }
    printGrid(head, grid);
    console.log(`(node -e 0: ${fms(node)} ms, median of ${nodeMs.length}; each restore is of the dump that killed the process before it, by the same way)`);
    console.log(
      `(served commands asked through dist/ckpt-client, without Node: ${byClient} of ${servedCount}${byClient < servedCount ? '; the others through Node: is dist/ckpt-client built?' : ''})`,
    );
    return res;
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => {
      if (server.exitCode !== null || server.signalCode !== null) r();
      else server.once('exit', r);
    });
  }
}

// ---- real programs ----------------------------------------------------------------------------
/** The real python3 interpreter (not a wrapper script such as a pyenv shim, which would exec). */
function realPython() {
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** Leave-running and kill+restore through the API, the command line and --compare's, on one process per run. */
function realOps(ck) {
  const ops = [
    [apiTool(ck), 'leave'],
    [cliTool(), 'leave'],
    [apiTool(ck), 'kill'],
    [cliTool(), 'kill'],
  ];
  if (compareBin) ops.push([otherTool(compareBin), 'leave'], [otherTool(compareBin), 'kill']);
  return ops;
}

async function pythonTable(ck, bins) {
  const mib = 500;
  const py = realPython();
  if (!py) {
    console.log('\n== python3: SKIPPED (python3 not found on PATH) ==');
    return { kind: 'python', skipped: 'python3 not found on PATH' };
  }
  const need = 3 * mib * MiB;
  if (freeBytes() < need) {
    const msg = `only ${(freeBytes() / GiB).toFixed(2)} GiB free in ${os.tmpdir()}, need ${(need / GiB).toFixed(2)} GiB`;
    console.log(`\n== python3: SKIPPED (${msg}) ==`);
    return { kind: 'python', skipped: msg };
  }
  const wl = pythonWorkload(py, mib);
  const opsRuns = [];
  const nodeMs = [];
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[python ${mib} MiB] run ${run}/${runs}:`);
    opsRuns.push(await runOps(wl, realOps(ck), 'python3'));
    nodeMs.push(...nodeWall(['-e', '0'], 3));
    process.stderr.write(' ok\n');
  }
  const agg = aggregate(opsRuns);
  const touchedMiB = Math.max(1, Math.ceil((agg['api:kill']?.touchedBytes?.median ?? mib * MiB) / MiB));
  const ref = writeRef(bins, touchedMiB, tmp);
  const res = { kind: 'python', python: py, sizeMiB: mib, runs, nodeMs: median(nodeMs), writeGBs: ref.writeGBs, ops: agg };
  printOpsTable(
    `python3 holding ${mib} MiB (bytearray, SHA-256 checked from inside after each operation), ${runs} run${runs > 1 ? 's' : ''} (median; min/max)`,
    agg,
    { nodeMs: res.nodeMs, writeGBs: ref.writeGBs },
  );
  console.log(`(write() reference: ${ref.writeGBs} GB/s into the page cache, ${touchedMiB} MiB; node -e 0: ${fms(res.nodeMs)} ms)`);
  return res;
}

function hasNft() {
  return spawnSync('nft', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function nodeTable(ck, bins) {
  if (!hasNft()) {
    const msg = 'nft (nftables) is not installed: ckpt blocks TCP connections with it during a checkpoint';
    console.log(`\n== node HTTP server: SKIPPED (${msg}) ==`);
    return { kind: 'node', skipped: msg };
  }
  const wl = httpWorkload();
  const opsRuns = [];
  const nodeMs = [];
  for (let run = 1; run <= runs; run++) {
    process.stderr.write(`[node http] run ${run}/${runs}:`);
    opsRuns.push(await runOps(wl, realOps(ck), 'the HTTP server'));
    nodeMs.push(...nodeWall(['-e', '0'], 3));
    process.stderr.write(' ok\n');
  }
  const agg = aggregate(opsRuns);
  const touchedMiB = Math.max(1, Math.ceil((agg['api:kill']?.touchedBytes?.median ?? 32 * MiB) / MiB));
  const ref = writeRef(bins, touchedMiB, tmp);
  const res = { kind: 'node', node: process.execPath, runs, nodeMs: median(nodeMs), writeGBs: ref.writeGBs, ops: agg };
  printOpsTable(
    `node serving HTTP, a keep-alive connection from outside the tree answered after each operation, ${runs} run${runs > 1 ? 's' : ''} (median; min/max)`,
    agg,
    { nodeMs: res.nodeMs, writeGBs: ref.writeGBs },
  );
  console.log(
    `(write() reference: ${ref.writeGBs} GB/s into the page cache, ${touchedMiB} MiB; node -e 0: ${fms(res.nodeMs)} ms; downtime: the server's 1 ms timer)`,
  );
  return res;
}

// ---- apps: nginx, Go, the JVM ----------------------------------------------------------------
/** A port on 127.0.0.1 nothing listens on now (the kernel's pick, let go). */
function freePort() {
  return new Promise((res, rej) => {
    const srv = net.createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** GET / on a new connection, closed after the answer: { status, body, ms }. */
function httpGet(port) {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const sock = net.connect(port, '127.0.0.1');
    sockets.add(sock);
    let data = '';
    const timer = setTimeout(() => sock.destroy(new Error('no answer in 5 s')), 5000);
    sock.setEncoding('latin1');
    sock.on('connect', () => sock.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'));
    sock.on('data', (d) => {
      data += d;
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      sockets.delete(sock);
      rej(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      sockets.delete(sock);
      const head = data.slice(0, data.indexOf('\r\n\r\n'));
      res({ status: Number(/^HTTP\/1\.[01] (\d+)/.exec(head)?.[1] ?? 0), body: data.slice(head.length + 4), ms: performance.now() - t0 });
    });
  });
}

/**
 * A server of another runtime as a workload: started by argv (a function of the port, for one
 * that takes it), ready at readyRe in its output; checked by GET / on a new connection, whose
 * answer must start with "hello" (and name the server's pid, where samePid says it does).
 */
function appWorkload(name, argv, readyRe, samePid) {
  const check = async (h) => {
    let last;
    for (let i = 0; i < 50; i++) {
      try {
        const r = await httpGet(h.port);
        if (r.status === 200 && r.body.startsWith('hello') && (!samePid || r.body.trim() === `hello ${h.pid}`)) return r.ms;
        last = `answer ${r.status} ${JSON.stringify(r.body.slice(0, 80))}`;
      } catch (e) {
        last = e.message;
      }
      await sleep(20);
    }
    throw new Error(`${name} (pid ${h.pid}) on port ${h.port}: ${last}`);
  };
  return {
    name,
    async start() {
      const port = await freePort();
      const h = await startDetached(name.split(' ')[0], argv(port), readyRe, 120_000);
      h.port = port;
      const m = /listening (\d+)/.exec(readLog(h.log));
      if (m) h.port = Number(m[1]);
      await check(h);
      return h;
    },
    check,
  };
}

/** The installed programs of group apps: [name, workload] or [name, undefined, why skipped]. */
function appWorkloads() {
  const found = (cmd, arg = '--version') => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0;
  const out = [];
  const nginx = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p));
  if (!nginx) out.push(['nginx', undefined, 'nginx not installed (Debian: nginx-light)']);
  else {
    const conf = (port) => {
      const dir = join(tmp, `nginx-${port}`);
      mkdirSync(dir, { recursive: true });
      const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${dir}/${t};`).join(' ');
      writeFileSync(
        join(dir, 'nginx.conf'),
        `daemon off; master_process on; worker_processes 2; pid ${dir}/nginx.pid; error_log stderr notice;
events { worker_connections 64; }
http { access_log off; ${temps} server { listen 127.0.0.1:${port}; location / { return 200 "hello\n"; } } }
`,
      );
      return [nginx, '-p', dir, '-c', join(dir, 'nginx.conf')];
    };
    out.push(['nginx', appWorkload('nginx (a master, 2 workers)', conf, /start worker process \d+[\s\S]*start worker process \d+/, false)]);
  }
  if (!found('go', 'version')) out.push(['go', undefined, 'go not installed (Debian: golang-go)']);
  else {
    const exe = join(tmp, 'goserver');
    try {
      execFileSync('go', ['build', '-o', exe, join(root, 'scripts/bench/goserver.go')], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, GOFLAGS: '' },
      });
      out.push(['go', appWorkload('Go net/http server', () => [exe], /^listening \d+$/m, true)]);
    } catch (e) {
      out.push(['go', undefined, `go build failed: ${firstLine(String(e.stderr ?? e.message))}`]);
    }
  }
  if (!found('javac', '-version') || !found('java', '-version')) out.push(['java', undefined, 'no JDK (javac, java) installed (Debian: default-jdk-headless)']);
  else {
    const dir = join(tmp, 'java');
    try {
      execFileSync('javac', ['-d', dir, join(root, 'scripts/bench/HelloServer.java')], { stdio: ['ignore', 'ignore', 'pipe'] });
      out.push(['java', appWorkload('JVM HttpServer', () => ['java', '-Xmx256m', '-cp', dir, 'HelloServer'], /^listening \d+$/m, true)]);
    } catch (e) {
      out.push(['java', undefined, `javac failed: ${firstLine(String(e.stderr ?? e.message))}`]);
    }
  }
  return out;
}

async function appsTables(ck, bins) {
  const results = [];
  for (const [name, wl, why] of appWorkloads()) {
    if (!wl) {
      console.log(`\n== ${name}: SKIPPED (${why}) ==`);
      results.push({ kind: 'app', app: name, skipped: why });
      continue;
    }
    const opsRuns = [];
    const nodeMs = [];
    for (let run = 1; run <= runs; run++) {
      process.stderr.write(`[${name}] run ${run}/${runs}:`);
      opsRuns.push(await runOps(wl, realOps(ck), wl.name));
      nodeMs.push(...nodeWall(['-e', '0'], 3));
      process.stderr.write(' ok\n');
    }
    const agg = aggregate(opsRuns);
    const touchedMiB = Math.max(1, Math.ceil((agg['api:kill']?.touchedBytes?.median ?? 16 * MiB) / MiB));
    const ref = writeRef(bins, touchedMiB, tmp);
    const res = { kind: 'app', app: name, runs, nodeMs: median(nodeMs), writeGBs: ref.writeGBs, ops: agg };
    printOpsTable(`${wl.name}, GET / on a new connection answered after each operation, ${runs} run${runs > 1 ? 's' : ''} (median; min/max)`, agg, {
      nodeMs: res.nodeMs,
      writeGBs: ref.writeGBs,
    });
    console.log(`(write() reference: ${ref.writeGBs} GB/s into the page cache, ${touchedMiB} MiB; node -e 0: ${fms(res.nodeMs)} ms)`);
    results.push(res);
  }
  return results;
}

/**
 * One untimed dump and restore of an idle process through the API first, so that the first timed
 * figure of the run (whichever group comes first) does not carry this process's one-time costs
 * (module loading, JIT).
 */
async function warmUp(ck, bins) {
  process.stderr.write('[warm-up] dump and restore of an idle process (not timed)');
  const wl = shapeWorkload(bins, 'idle', 1, []);
  await runOps(wl, [[apiTool(ck), 'kill']], 'the idle process');
  process.stderr.write(' ok\n');
}

// ---- main -------------------------------------------------------------------------------------
const results = [];
let failed = false;
try {
  console.log(
    `ckpt bench: groups ${[...GROUPS].filter((g) => only.has(g)).join(', ')}; sizes ${sizes.join(', ')} MiB, ${runs} run(s) each, images in ${tmp}` +
      (compareBin ? `; compared with ${compareBin}` : ''),
  );
  console.log(
    `host: ${os.cpus().length} CPU(s) ${os.cpus()[0]?.model ?? ''}, ${(os.totalmem() / GiB).toFixed(1)} GiB RAM, Linux ${os.release()}, Node ${process.version}`,
  );
  console.log(
    'units: GB = 1e9 B, MB = 1e6 B, sizes in MiB; API times are measured around the in-process call (performance.now), CLI and --compare times around the child process (wall)',
  );

  if (only.has('startup')) results.push(startupTable());

  const bins = {
    workload: join(tmp, 'workload'),
    ref: join(tmp, 'ref'),
    shapes: join(tmp, 'shapes'),
    stall: join(tmp, 'stall'),
    compute: join(tmp, 'compute'),
    lazy: join(tmp, 'lazy'),
    migrant: join(tmp, 'migrant'),
  };
  for (const [name, out] of Object.entries(bins)) {
    // The migration's workload is the tests' (it checks every page from inside).
    const src = name === 'migrant' ? join(root, 'test/fixtures/migrant.c') : join(root, 'scripts/bench', `${name}.c`);
    execFileSync('gcc', ['-O2', '-Wall', '-Wno-unused-function', '-pthread', '-o', out, src], { stdio: ['ignore', 'inherit', 'inherit'] });
  }

  const ck = await createCkpt();
  if ([...only].some((g) => g !== 'startup')) await warmUp(ck, bins);
  if (only.has('cli')) for (const mib of [16, 64]) results.push(await cliTable(ck, bins, mib));
  if (only.has('server')) results.push(await serverTable(bins));
  if (only.has('sizes')) {
    for (const mib of sizes) {
      const free = freeBytes();
      // The image (about the size of the heap) plus the reference write() file, with margin: 3x the size
      // (3 GiB for the 1 GiB workload).
      const need = 3 * mib * MiB;
      if (free < need) {
        const msg = `only ${(free / GiB).toFixed(2)} GiB free in ${os.tmpdir()}, need ${(need / GiB).toFixed(2)} GiB`;
        console.log(`\n== ${mib} MiB workload: SKIPPED (${msg}) ==`);
        results.push({ sizeMiB: mib, skipped: msg });
        continue;
      }
      const res = await benchSize(ck, bins, mib);
      results.push(res);
      printTable(res);
    }
  }
  if (only.has('downtime')) for (const mib of sizes) results.push(await downtimeTable(ck, bins, mib));
  if (only.has('shapes')) {
    const filesDir = join(tmp, 'files');
    mkdirSync(filesDir);
    // The 1 GiB file is saved by content: a config rule says so.
    const cfg = join(tmp, 'ckpt.config.json');
    writeFileSync(cfg, JSON.stringify({ files: { rules: [{ match: { path: '**/big.dat' }, method: 'content', policy: 'image' }] } }));
    const ckContent = await createCkpt({ config: cfg });
    const bigFree = freeBytes() > 4 * GiB;
    const shapes = [
      ['idle', 1, ck, []],
      ['tree', 16, ck, []],
      ['prefork', 64, ck, []],
      ['threads', 32, ck, []],
      ['threads', 200, ck, []],
      ['files', 2000, ck, [filesDir]],
    ];
    if (bigFree) shapes.push(['bigfile', 1024, ckContent, [join(tmp, 'big.dat')], cfg]);
    else console.log('\n== 1 GiB file by content: SKIPPED (less than 4 GiB free) ==');
    let idle = null;
    for (const [shape, n, c, extra, config] of shapes) {
      const res = await benchShape(c, bins, shape, n, extra, config);
      if (shape === 'idle') idle = res;
      results.push(res);
      printShape(res, idle);
    }
  }
  if (only.has('python')) results.push(await pythonTable(ck, bins));
  if (only.has('node')) results.push(await nodeTable(ck, bins));
  if (only.has('apps')) for (const r of await appsTables(ck, bins)) results.push(r);
  if (only.has('incremental')) results.push(await incrementalTable(ck, bins));
  if (only.has('compress')) results.push(await compressTable(ck));
  if (only.has('periodic')) results.push(await periodicTable(bins));
  if (only.has('lazy')) results.push(await lazyTable(ck, bins));
  if (only.has('migrate')) results.push(await migrateTable(bins));
} catch (e) {
  failed = true;
  console.error(`\nbench FAILED: ${e?.stack ?? e}`);
  process.exitCode = 1;
} finally {
  try {
    await cleanupAll();
  } catch (e) {
    console.error(`bench: cleanup: ${e?.message ?? e}`);
  }
  rmSync(tmp, { recursive: true, force: true });
  if (existsSync(tmp)) console.error(`bench: could not remove ${tmp}`);
}

if (!failed) {
  const skipped = results.filter((r) => r.skipped);
  if (skipped.length) console.log(`\nskipped: ${skipped.map((r) => `${r.kind ?? `${r.sizeMiB} MiB`} (${r.skipped})`).join('; ')}`);
  if (json) {
    const statsOf = (s) => (s ? { median: r3(s.median), min: r3(s.min), max: r3(s.max) } : undefined);
    const slim = results.map((r) => {
      if (r.skipped) return r;
      if (r.kind === 'startup')
        return {
          kind: 'startup',
          nodeMs: r3(r.nodeMs),
          ...(r.nodeExtraCaMs !== undefined ? { nodeExtraCaMs: r3(r.nodeExtraCaMs) } : {}),
          versionMs: r3(r.versionMs),
          helpMs: r3(r.helpMs),
        };
      if (r.kind === 'cli' || r.kind === 'python' || r.kind === 'node' || (r.kind === 'app' && r.ops)) {
        const { ops, nodeMs, ...rest } = r;
        return {
          ...rest,
          nodeMs: typeof nodeMs === 'number' ? r3(nodeMs) : statsOf(nodeMs),
          ops: slimAgg(ops),
          ...(compareBin ? { compareWith: compareBin } : {}),
        };
      }
      if (r.kind === 'incremental' || r.kind === 'compress' || r.kind === 'periodic' || r.kind === 'lazy') {
        const m = (x) => (typeof x === 'number' ? r3(x) : r3(x.median));
        return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, !Array.isArray(v) && (typeof v === 'object' || typeof v === 'number') ? m(v) : v]));
      }
      // Already figures (medians, min and max) by mode.
      if (r.kind === 'migrate') return r;
      if (r.kind === 'downtime') {
        return {
          kind: 'downtime',
          sizeMiB: r.sizeMiB,
          runs: r.runs,
          downtimeMs: r3(r.downtimeMs.median),
          dumpMs: r3(r.dumpMs.median),
          nodeMs: r3(r.nodeMs),
          ops: slimAgg(r.ops),
          ...(compareBin ? { compareWith: compareBin } : {}),
        };
      }
      const compare = r.compare ? { compareWith: compareBin, nodeMs: r3(r.nodeMs), compare: slimAgg(r.compare) } : {};
      if (r.shape) {
        return {
          shape: r.shape,
          n: r.n,
          runs: r.runs,
          dumpMs: r3(r.dumpMs.median),
          restoreMs: r3(r.restoreMs.median),
          imageBytes: r.imageBytes,
          imageDuBytes: Math.round(r.imageDuBytes.median),
          touchedBytes: Math.round(r.anonBytes.median),
          ...(r.memRatio ? { memRatio: r3(r.memRatio.median) } : {}),
          ...compare,
        };
      }
      return {
        sizeMiB: r.sizeMiB,
        runs: r.runs,
        dumpMs: r3(r.dumpMs.median),
        dumpMsMin: r3(r.dumpMs.min),
        dumpMsMax: r3(r.dumpMs.max),
        restoreMs: r3(r.restoreMs.median),
        restoreMsMin: r3(r.restoreMs.min),
        restoreMsMax: r3(r.restoreMs.max),
        apiDumpMs: r3(r.apiDumpMs.median),
        apiRestoreMs: r3(r.apiRestoreMs.median),
        initReapMs: r3(r.initReapMs.median),
        zombieRuns: r.zombieRuns,
        imageBytes: r.imageBytes,
        imageDuBytes: Math.round(r.imageDuBytes.median),
        touchedBytes: Math.round(r.anonBytes.median),
        dumpGBs: r3(r.dumpGBs),
        restoreGBs: r3(r.restoreGBs),
        memcpyGBs: r.memcpyGBs,
        writeGBs: r.writeGBs,
        writeFirstGBs: r.writeFirstGBs,
        readFreshGBs: r.readFreshGBs,
        dumpPerWrite: r3(r.dumpPerWrite),
        dumpPerWriteFirst: r3(r.dumpPerWriteFirst),
        restorePerWrite: r3(r.restorePerWrite),
        restorePerReadFresh: r3(r.restorePerReadFresh),
        dumpPerMemcpy: r3(r.dumpPerMemcpy),
        ...compare,
      };
    });
    console.log(JSON.stringify(slim));
  }
}
