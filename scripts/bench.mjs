// npm run bench: how fast ckpt dumps and restores a process with a large, fully touched heap,
// next to same-run references (memcpy and write() into the page cache) on this machine.
//
//   node scripts/bench.mjs [--sizes 64,1024] [--runs 3] [--json]
//
// For each size: start scripts/bench/workload.c detached (via `ckpt run`), wait for "ready", then
// dump and restore it in-process through the API (so Node start-up is not in the figures), check
// the restored heap (SIGUSR1 -> "verify ok"), kill and reap it. Repeat, report the median.
// Units: GB = 1e9 bytes, MB = 1e6 bytes; sizes are MiB (2^20).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import os from 'node:os';
import { createCkpt } from '../packages/api/dist/index.js';
import { native } from '../native/dist/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'packages/cli/dist/bin.js');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const MiB = 1 << 20;
const GiB = 1 << 30;

// ---- arguments --------------------------------------------------------------------------------
const args = process.argv.slice(2);
let sizes = [64, 1024];
let runs = 3;
let json = false;
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
  } else if (a === '-h' || a === '--help') usage();
  else usage(`unknown argument ${a}`);
}

function usage(msg) {
  if (msg) console.error(`bench: ${msg}`);
  console.error('usage: node scripts/bench.mjs [--sizes 64,1024] [--runs 3] [--json]');
  process.exit(msg ? 2 : 0);
}

// ---- state for cleanup ------------------------------------------------------------------------
const tmp = mkdtempSync(join(os.tmpdir(), 'ckpt-bench-'));
/** Workloads started by `ckpt run` (not our children) that may still be alive. */
const detached = new Set();
/** Restored workloads: our children, to kill and reap. */
const children = new Set();

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

/** Synchronous best-effort cleanup (also used on SIGINT/SIGTERM). */
function cleanupSync() {
  for (const pid of detached) killQuietly(pid);
  detached.clear();
  for (const pid of children) {
    killQuietly(pid);
    const t0 = Date.now();
    for (;;) {
      try {
        const st = native.proc.tryWait(pid);
        if (st && (st.kind === 'exited' || st.kind === 'killed')) break;
      } catch {
        break;
      }
      if (Date.now() - t0 > 2000) break;
    }
  }
  children.clear();
  rmSync(tmp, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    console.error(`\nbench: ${sig}, cleaning up`);
    cleanupSync();
    process.exit(130);
  });
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
 * for it, up to 10 s) and report that this run's restore time includes that wait.
 * Returns { reapMs, zombie }.
 */
async function waitForPidRelease(pid, reapTimeoutMs = 15_000) {
  const t0 = performance.now();
  for (;;) {
    const s = procState(pid);
    if (s === 'gone') return { reapMs: performance.now() - t0, zombie: false };
    const waited = performance.now() - t0;
    if (s === 'alive' && waited > 10_000) throw new Error(`process ${pid} still alive ${Math.round(waited)} ms after the dump`);
    if (s === 'zombie' && waited > reapTimeoutMs) return { reapMs: waited, zombie: true };
    await sleep(2);
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const stats = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), all: xs });
const gbs = (bytes, ms) => bytes / (ms / 1000) / 1e9;
const r3 = (x) => Math.round(x * 1000) / 1000;

// ---- one size ---------------------------------------------------------------------------------
async function benchSize(ck, bins, mib) {
  const bytes = mib * MiB;
  const sizeDir = join(tmp, `s${mib}`);
  mkdirSync(sizeDir, { recursive: true });

  // Same-run references (the write() file goes where the image goes).
  process.stderr.write(`[${mib} MiB] references (memcpy, write)... `);
  const refOut = execFileSync(bins.ref, [String(mib), join(sizeDir, 'ref.dat')], { encoding: 'utf8' }).trim();
  const ref = JSON.parse(refOut.split('\n').at(-1));
  process.stderr.write(`memcpy ${ref.memcpyGBs} GB/s, write ${ref.writeGBs} GB/s\n`);

  const dumpMs = [];
  const restoreMs = [];
  const apiDumpMs = [];
  const apiRestoreMs = [];
  const readyMs = [];
  const reapMs = [];
  let zombieRuns = 0;
  let imageBytes = 0;

  for (let run = 1; run <= runs; run++) {
    const log = join(sizeDir, `workload-${run}.log`);
    const dir = join(sizeDir, `image-${run}`);
    process.stderr.write(`[${mib} MiB] run ${run}/${runs}: start`);

    const tStart = performance.now();
    const out = execFileSync(process.execPath, [cli, 'run', '--no-namespace', '--stdout', log, '--', bins.workload, String(mib)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    const pid = Number(out.split('\n').at(-1));
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`ckpt run printed ${JSON.stringify(out)}, not a pid`);
    detached.add(pid);
    await waitForLine(log, (t) => /^ready$/m.test(t), '"ready"', 120_000);
    readyMs.push(performance.now() - tStart);

    // Dump (the process is killed after it).
    process.stderr.write(', dump');
    let t0 = performance.now();
    const d = await ck.dump({ pid, dir });
    const dMs = performance.now() - t0;
    dumpMs.push(dMs);
    apiDumpMs.push(d.ms);
    imageBytes = d.imageBytes;

    const rel = await waitForPidRelease(pid);
    reapMs.push(rel.reapMs);
    if (rel.zombie) zombieRuns++;
    detached.delete(pid);

    // Restore (same pid, our child, detached from ptrace).
    process.stderr.write(', restore');
    children.add(pid);
    t0 = performance.now();
    let r;
    try {
      r = await ck.restore({ dir, detach: true });
    } catch (e) {
      // The restore rolled back. If a stub of ours is left (still our child: its pid cannot have been
      // reused), the cleanup kills and reaps it; otherwise forget the pid.
      if (!isOurChild(pid)) children.delete(pid);
      throw e;
    }
    const rMs = performance.now() - t0;
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
          children.delete(pid);
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
    children.delete(pid);
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`: dump ${dMs.toFixed(1)} ms, restore ${rMs.toFixed(1)} ms, verify ok\n`);
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
    dumpGBs,
    dumpGBsRange: [gbs(bytes, dump.max), gbs(bytes, dump.min)],
    restoreGBs,
    restoreGBsRange: [gbs(bytes, restore.max), gbs(bytes, restore.min)],
    memcpyGBs: ref.memcpyGBs,
    writeGBs: ref.writeGBs,
    dumpPerWrite: dumpGBs / ref.writeGBs,
    restorePerWrite: restoreGBs / ref.writeGBs,
    dumpPerMemcpy: dumpGBs / ref.memcpyGBs,
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
  row('dump GB/s', g(r.dumpGBs), g(r.dumpGBsRange[0]), g(r.dumpGBsRange[1]), 'touched bytes / dump time');
  row('restore GB/s', g(r.restoreGBs), g(r.restoreGBsRange[0]), g(r.restoreGBsRange[1]), 'touched bytes / restore time');
  row('memcpy GB/s', g(r.memcpyGBs), null, null, 'reference: best of 3, pre-touched buffers');
  row('write GB/s', g(r.writeGBs), null, null, 'reference: page cache, 4 MiB writes, no fsync, best of 3');
  row('dump/write', g(r.dumpPerWrite), null, null, 'throughput ratio');
  row('restore/write', g(r.restorePerWrite), null, null, 'throughput ratio');
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
}

/** Dump and restore of a many-process tree or a many-thread process: fixed costs, not bandwidth. */
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

/** Anonymous memory of processes, shared pages counted once (the sum of Pss_Anon), in bytes. */
function anonPss(pids) {
  return pids.reduce((sum, p) => sum + 1024 * Number(/^Pss_Anon:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))?.[1] ?? 0), 0);
}

async function benchShape(ck, bins, shape, n, extra = []) {
  const dumpMs = [];
  const restoreMs = [];
  const memRatio = [];
  let lastImageBytes = 0;
  for (let run = 1; run <= runs; run++) {
    const dir = join(tmp, `${shape}-${run}`);
    const log = join(tmp, `${shape}-${run}.log`);
    process.stderr.write(`[${shape} ${n}] run ${run}/${runs}: start`);
    const out = execFileSync(process.execPath, [cli, 'run', '--no-namespace', '--stdout', log, '--', bins.shapes, shape, String(n), ...extra], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    const pid = Number(out.split('\n').at(-1));
    detached.add(pid);
    await waitForLine(log, (t) => /^ready$/m.test(t), '"ready"', 60_000);
    process.stderr.write(', dump');
    const memBefore = shape === 'prefork' ? anonPss(treePids(pid)) : 0;
    let t0 = performance.now();
    const d = await ck.dump({ pid, dir });
    dumpMs.push(performance.now() - t0);
    lastImageBytes = d.imageBytes;
    if ((shape === 'tree' || shape === 'prefork') && d.pids.length !== n) throw new Error(`${shape}: dumped ${d.pids.length} processes, expected ${n}`);
    for (const p of d.pids) await waitForPidRelease(p);
    detached.delete(pid);
    process.stderr.write(', restore');
    children.add(pid);
    t0 = performance.now();
    const r = await ck.restore({ dir, detach: true });
    restoreMs.push(performance.now() - t0);
    const threads = readdirSync(`/proc/${pid}/task`).length;
    if (shape === 'threads' && threads !== n) throw new Error(`restored ${threads} threads, expected ${n}`);
    if ((shape === 'tree' || shape === 'prefork') && r.pids.length !== n) throw new Error(`restored ${r.pids.length} processes, expected ${n}`);
    if (shape === 'prefork') memRatio.push(anonPss(r.pids) / memBefore);
    if (shape === 'files' && readdirSync(`/proc/${pid}/fd`).length < n)
      throw new Error(`restored ${readdirSync(`/proc/${pid}/fd`).length} fds, expected ${n}+`);
    for (const p of r.pids) if (p !== pid) killQuietly(p);
    killQuietly(pid);
    await reap(pid);
    children.delete(pid);
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(' ok\n');
  }
  return {
    shape,
    n,
    runs,
    dumpMs: stats(dumpMs),
    restoreMs: stats(restoreMs),
    imageBytes: lastImageBytes,
    ...(memRatio.length ? { memRatio: stats(memRatio) } : {}),
  };
}

// ---- downtime ---------------------------------------------------------------------------------
/**
 * Downtime of a --leave-running dump as the process sees it: scripts/bench/stall.c wakes every
 * millisecond and reports its longest gap; the dump's own time is beside it.
 */
async function downtimeTable(ck, bins, mib) {
  const stalls = [];
  const calls = [];
  for (let run = 1; run <= runs; run++) {
    const log = join(tmp, `stall-${mib}-${run}.log`);
    const out = execFileSync(process.execPath, [cli, 'run', '--no-namespace', '--stdout', log, '--', bins.stall, String(mib)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
    const pid = Number(out.split('\n').at(-1));
    detached.add(pid);
    try {
      await waitForLine(log, (t) => /^ready$/m.test(t), '"ready"', 120_000);
      await sleep(300);
      const report = async (n) => {
        process.kill(pid, 'SIGUSR1');
        await waitForLine(log, (t) => (t.match(/^maxstall \d+$/gm) ?? []).length >= n, 'maxstall', 10_000);
        return (
          Number(
            readFileSync(log, 'utf8')
              .match(/^maxstall (\d+)$/gm)
              .at(n - 1)
              .split(' ')[1],
          ) / 1000
        );
      };
      await report(1); // the gaps before the dump
      const t0 = performance.now();
      await ck.dump({ pid, dir: join(tmp, `stall-img-${mib}-${run}`), leaveRunning: true });
      calls.push(performance.now() - t0);
      await sleep(50);
      stalls.push(await report(2));
      rmSync(join(tmp, `stall-img-${mib}-${run}`), { recursive: true, force: true });
    } finally {
      killQuietly(pid);
      detached.delete(pid);
    }
  }
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log(`\n== downtime of a --leave-running dump, ${mib} MiB touched, ${runs} runs (median; min/max) ==`);
  console.log(
    `downtime ms ${med(stalls).toFixed(1).padStart(8)} ${Math.min(...stalls)
      .toFixed(1)
      .padStart(8)} ${Math.max(...stalls)
      .toFixed(1)
      .padStart(8)}   longest stall the process saw (1 ms loop)`,
  );
  console.log(
    `dump ms     ${med(calls).toFixed(1).padStart(8)} ${Math.min(...calls)
      .toFixed(1)
      .padStart(8)} ${Math.max(...calls)
      .toFixed(1)
      .padStart(8)}   the dump call`,
  );
}

// ---- CLI start-up -------------------------------------------------------------------------------
/** Wall time of the ckpt command for what costs no work (--version, --help), next to `node -e 0`. */
function startupTable() {
  const wall = (argv) => {
    const t = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      execFileSync(process.execPath, argv, { stdio: 'ignore' });
      t.push(performance.now() - t0);
    }
    return t.sort((a, b) => a - b)[3];
  };
  const node = wall(['-e', '0']);
  const bin = join(root, 'packages/cli/bin/ckpt.js');
  console.log('\n== CLI start-up, wall time (median of 7) ==');
  console.log(`node -e 0          ${node.toFixed(1).padStart(7)} ms   (reference)`);
  for (const [label, argv] of [
    ['ckpt --version', [bin, '--version']],
    ['ckpt --help', [bin, '--help']],
  ]) {
    const ms = wall(argv);
    console.log(`${label.padEnd(18)} ${ms.toFixed(1).padStart(7)} ms   node start-up + ${(ms - node).toFixed(1)} ms`);
  }
}

// ---- main -------------------------------------------------------------------------------------
const results = [];
let failed = false;
try {
  console.log(`ckpt bench: sizes ${sizes.join(', ')} MiB, ${runs} run(s) each, images in ${tmp}`);
  console.log(
    `host: ${os.cpus().length} CPU(s) ${os.cpus()[0]?.model ?? ''}, ${(os.totalmem() / GiB).toFixed(1)} GiB RAM, Linux ${os.release()}, Node ${process.version}`,
  );
  console.log('units: GB = 1e9 B, MB = 1e6 B, sizes in MiB; times are measured around the API call (performance.now)');

  startupTable();

  const bins = { workload: join(tmp, 'workload'), ref: join(tmp, 'ref'), shapes: join(tmp, 'shapes'), stall: join(tmp, 'stall') };
  for (const [name, out] of Object.entries(bins)) {
    execFileSync('gcc', ['-O2', '-Wall', '-pthread', '-o', out, join(root, 'scripts/bench', `${name}.c`)], { stdio: ['ignore', 'inherit', 'inherit'] });
  }

  const ck = await createCkpt();
  for (const mib of sizes) {
    const st = statfsSync(tmp);
    const free = Number(st.bavail) * Number(st.bsize);
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
  for (const mib of sizes) await downtimeTable(ck, bins, mib);
  const filesDir = join(tmp, 'files');
  mkdirSync(filesDir);
  // The 1 GiB file is saved by content: a config rule says so.
  const cfg = join(tmp, 'ckpt.config.json');
  writeFileSync(cfg, JSON.stringify({ files: { rules: [{ match: { path: '**/big.dat' }, method: 'content', policy: 'image' }] } }));
  const ckContent = await createCkpt({ config: cfg });
  const bigFree = Number(statfsSync(tmp).bavail) * Number(statfsSync(tmp).bsize) > 4 * GiB;
  const shapes = [
    ['tree', 16, ck, []],
    ['prefork', 64, ck, []],
    ['threads', 32, ck, []],
    ['files', 1000, ck, [filesDir]],
  ];
  if (bigFree) shapes.push(['bigfile', 1024, ckContent, [join(tmp, 'big.dat')]]);
  else console.log('\n== 1 GiB file by content: SKIPPED (less than 4 GiB free) ==');
  for (const [shape, n, c, extra] of shapes) {
    const res = await benchShape(c, bins, shape, n, extra);
    results.push(res);
    const title = {
      tree: `${n}-process tree`,
      prefork: `${n}-process preforking server (16 MiB shared copy-on-write)`,
      threads: `${n}-thread process`,
      files: `process with ${n} open files`,
      bigfile: `${n} MiB open file saved by content`,
    }[shape];
    console.log(`\n== ${title}, ${runs} runs (median; min/max) ==  image ${(res.imageBytes / 1e6).toFixed(1)} MB`);
    console.log(`dump ms     ${res.dumpMs.median.toFixed(1).padStart(8)} ${res.dumpMs.min.toFixed(1).padStart(8)} ${res.dumpMs.max.toFixed(1).padStart(8)}`);
    console.log(
      `restore ms  ${res.restoreMs.median.toFixed(1).padStart(8)} ${res.restoreMs.min.toFixed(1).padStart(8)} ${res.restoreMs.max.toFixed(1).padStart(8)}`,
    );
    if (res.memRatio) {
      console.log(
        `memory      ${res.memRatio.median.toFixed(2).padStart(8)} ${res.memRatio.min.toFixed(2).padStart(8)} ${res.memRatio.max.toFixed(2).padStart(8)}   anonymous memory of the tree after the restore / at the dump (Pss_Anon sum)`,
      );
    }
  }
} catch (e) {
  failed = true;
  console.error(`\nbench FAILED: ${e?.stack ?? e}`);
  process.exitCode = 1;
} finally {
  for (const pid of detached) killQuietly(pid);
  detached.clear();
  for (const pid of [...children]) {
    killQuietly(pid);
    try {
      await reap(pid, 5000);
    } catch (e) {
      console.error(`bench: ${e.message}`);
    }
    children.delete(pid);
  }
  rmSync(tmp, { recursive: true, force: true });
  if (existsSync(tmp)) console.error(`bench: could not remove ${tmp}`);
}

if (!failed) {
  const skipped = results.filter((r) => r.skipped);
  if (skipped.length) console.log(`\nskipped: ${skipped.map((r) => `${r.sizeMiB} MiB (${r.skipped})`).join('; ')}`);
  if (json) {
    const slim = results.map((r) =>
      r.skipped
        ? r
        : r.shape
          ? {
              shape: r.shape,
              n: r.n,
              runs: r.runs,
              dumpMs: r3(r.dumpMs.median),
              restoreMs: r3(r.restoreMs.median),
              ...(r.memRatio ? { memRatio: r3(r.memRatio.median) } : {}),
            }
          : {
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
              dumpGBs: r3(r.dumpGBs),
              restoreGBs: r3(r.restoreGBs),
              memcpyGBs: r.memcpyGBs,
              writeGBs: r.writeGBs,
              dumpPerWrite: r3(r.dumpPerWrite),
              restorePerWrite: r3(r.restorePerWrite),
              dumpPerMemcpy: r3(r.dumpPerMemcpy),
            },
    );
    console.log(JSON.stringify(slim));
  }
}
