/**
 * Periodic checkpoints of an application (the DMTCP `-i` use): `ckpt run --checkpoint-every 10m
 * -D DIR --keep 3 -- CMD` starts CMD as an application, then a checkpointer: a ckpt process of its
 * own (its own session, its log a file), registered with the application, that dumps it with
 * --leave-running into a new generation of DIR on that schedule, keeping the newest ones, and on
 * demand: SIGUSR1 (what `ckpt checkpoint --app ID` sends; a batch system's warning before
 * preemption can send it too; or, with `ckpt run --checkpoint-signal SIG`, SIG sent to the
 * application's ckpt-init). It stops when the application is gone, or on SIGTERM (after the
 * checkpoint under way, if any, is stopped and undone). A checkpoint that fails is logged and the
 * next one is tried on schedule. `ckpt restore -D DIR` takes the newest complete generation.
 *
 * Checkpoints are incremental: each tracks the memory the application writes after it
 * (--track-mem) and the next saves only that, adding to the previous generation (--parent), up to
 * CHAIN_MAX increments; then a full one starts a new chain. Generations that kept ones add to are
 * kept with them.
 */
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { environ, runDir } from './runfiles.js';
import { join, resolve } from 'node:path';
import { CkptError, collectGarbage, latestGeneration, procfs, resolveImage, type Ckpt } from '@ckpt/core';
import { native } from '@ckpt/native';
import { type AppEntry, checkpointerAlive, findApp, resolveApp, writeApp } from '@ckpt/api';

/** Increments in a row before a full checkpoint starts a new chain (a restore reads the whole chain). */
export const CHAIN_MAX = 10;

/** The run options that turn a boolean flag on: every loaded plugin's that declares `flag` for `command` (empty: none does). */
export function flagOptions(c: Ckpt, command: 'dump' | 'restore', flag: string): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const p of c.plugins) {
    for (const f of p.flags ?? []) if (f.command === command && /--[a-z0-9-]+/.exec(f.flags)?.[0] === flag) (out[p.name] ??= {})[f.option] = true;
  }
  return out;
}

/** The run options that turn write tracking on: every loaded plugin's --track-mem flag (the memory plugin's). */
export function trackMemOptions(c: Ckpt): Record<string, Record<string, unknown>> {
  return flagOptions(c, 'dump', '--track-mem');
}

/** The generation of DIR a checkpoint adds to: the latest, unless its chain is CHAIN_MAX long already. */
function parentOf(dir: string): string | undefined {
  const latest = latestGeneration(dir);
  if (latest === undefined) return undefined;
  const path = join(dir, String(latest));
  try {
    const depth = (JSON.parse(readFileSync(join(path, 'manifest.json'), 'utf8')) as { parent?: { depth?: number } }).parent?.depth ?? 0;
    return depth < CHAIN_MAX ? path : undefined;
  } catch {
    return undefined;
  }
}

/** Shortest schedule: a dump of a small application takes a good part of a second. */
const MIN_INTERVAL_MS = 1000;

/** "30s", "10m", "2h", "1500ms" (a number alone: seconds) -> milliseconds. */
export function parseInterval(s: string, flag = '--checkpoint-every', atLeast = 'at least 1s between checkpoints'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new CkptError('ERR_CKPT_USAGE', `${flag} ${s}: not a duration`, { hint: 'e.g. 30s, 10m, 2h' });
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  if (ms < MIN_INTERVAL_MS) throw new CkptError('ERR_CKPT_USAGE', `${flag} ${s}: ${atLeast}`);
  return ms;
}

/**
 * `ckpt restore --checkpoint-every`: the image must be an application's (made under ckpt run), as
 * its manifest says; refused before anything is restored otherwise. Only the `app` field is looked
 * at here: the restore checks the signature before it trusts anything.
 */
export function checkpointable(dir: string, generation?: number): void {
  let app: unknown;
  try {
    app = (JSON.parse(readFileSync(join(resolveImage(dir, generation), 'manifest.json'), 'utf8')) as { app?: unknown }).app;
  } catch (e) {
    if (e instanceof CkptError) throw e;
    return; // unreadable: the restore says what is wrong with it
  }
  if (typeof app !== 'string') {
    throw new CkptError('ERR_CKPT_USAGE', `--checkpoint-every: the image in ${dir} is not an application's (it was not started with ckpt run)`, {
      hint: 'checkpoint it with ckpt dump -t PID --leave-running once restored',
    });
  }
}

/** Starts the checkpointer of a freshly started (or restored) application and records it in its entry. */
export function startCheckpointer(app: AppEntry, o: { everyMs: number; dir: string; keep: number }): AppEntry {
  const dir = resolve(o.dir);
  const log = join(runDir(), `${app.id}.checkpoints.log`);
  const null_ = openSync('/dev/null', 'r');
  const out = openSync(log, 'a', 0o600);
  let pid: number;
  try {
    const argv = [process.execPath, process.argv[1], 'checkpointer', '--app', app.id, '-D', dir, '--every-ms', String(o.everyMs), '--keep', String(o.keep)];
    pid = native.proc.spawnDetached(process.execPath, argv, environ(), null, [null_, out, out]);
  } finally {
    closeSync(null_);
    closeSync(out);
  }
  const entry: AppEntry = { ...app, checkpointer: { pid, startTime: procfs.readStat(pid).startTime, everyMs: o.everyMs, dir, keep: o.keep, log } };
  writeApp(entry);
  return entry;
}

/** The checkpointer's loop (the hidden `ckpt checkpointer` command). */
export async function runCheckpointer(c: Ckpt, o: { app: string; dir: string; everyMs: number; keep: number }): Promise<void> {
  const say = (msg: string) => console.log(`${new Date().toISOString()} ${msg}`);
  let requested = false;
  let stopping = false;
  let wake: (() => void) | undefined;
  const ac = new AbortController();
  process.on('SIGUSR1', () => {
    requested = true;
    wake?.();
  });
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(sig, () => {
      stopping = true;
      ac.abort();
      wake?.();
    });
  }
  say(`checkpointing application ${o.app} every ${o.everyMs} ms into ${o.dir}, keeping ${o.keep} generations (pid ${process.pid}; SIGUSR1: now)`);
  let due = Date.now() + o.everyMs;
  let signalled = false;
  for (;;) {
    // Wait for the schedule or a request, looking every quarter second whether the application
    // still runs and whether its ckpt-init was signalled for a checkpoint (--checkpoint-signal).
    while (!stopping && !requested && Date.now() < due) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(250, due - Date.now()));
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = undefined;
      const running = findApp(o.app, false);
      if (!running) {
        say(`application ${o.app} is gone: stopping`);
        return;
      }
      if (takeRequest(running.init)) requested = signalled = true;
    }
    if (stopping) {
      say('stopping (signal)');
      return;
    }
    const why = signalled ? 'on signal' : requested ? 'on request' : 'on schedule';
    requested = signalled = false;
    due = Date.now() + o.everyMs;
    const app = findApp(o.app, false);
    if (!app) {
      say(`application ${o.app} is gone: stopping`);
      return;
    }
    try {
      const parent = parentOf(o.dir);
      const r = await c.dump({
        pid: app.init,
        app: o.app,
        dir: o.dir,
        leaveRunning: true,
        keep: o.keep,
        parent,
        plugins: trackMemOptions(c),
        signal: ac.signal,
      });
      const inc = r.stats['memory.parentBytes'] ? `, adding to ${parent}` : '';
      say(
        `generation ${r.generation} (${why}${inc}): ${(r.imageBytes / 1e6).toFixed(1)} MB in ${r.ms.toFixed(0)} ms, frozen ${Number(r.stats?.frozenMs ?? 0).toFixed(0)} ms`,
      );
    } catch (e) {
      say(`checkpoint ${why} failed: ${(e as Error).message}`);
    }
    // Now, while the application runs, rather than before the next freeze (see collectGarbage).
    collectGarbage();
  }
}

/**
 * Whether the application's ckpt-init was signalled for a checkpoint (`ckpt run
 * --checkpoint-signal`): it then created the request file its command line names, which this
 * takes (removes). Read from its command line each time, so a restored application's is found too.
 */
function takeRequest(init: number): boolean {
  let file: string | undefined;
  try {
    const argv = readFileSync(`/proc/${init}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('--request-file');
    file = i >= 0 ? argv[i + 1] : undefined;
  } catch {
    return false;
  }
  if (!file || !existsSync(file)) return false;
  rmSync(file, { force: true });
  return true;
}

/** "USR1", "SIGUSR2", "RTMIN+2" or a number: the signal number (not one ckpt-init must forward or cannot catch). */
export function parseSignal(s: string): number {
  const name = s.trim().toUpperCase().replace(/^SIG/, '');
  const rt = /^RTMIN(?:\+(\d+))?$/.exec(name);
  const n = /^\d+$/.test(name) ? Number(name) : rt ? 34 + Number(rt[1] ?? 0) : (osConstants.signals as Record<string, number>)[`SIG${name}`];
  if (!n || n >= 65 || n === 9 || n === 19) {
    throw new CkptError('ERR_CKPT_USAGE', `--checkpoint-signal ${s}: not a signal ckpt-init can take`, { hint: 'e.g. USR1, USR2, RTMIN+2 or a number' });
  }
  return n;
}

/** Where an application's ckpt-init signals a checkpoint request (a file in ckpt's run directory). */
export function requestFile(token: string): string {
  return join(runDir(), `${token}.checkpoint-request`);
}

/**
 * `ckpt checkpoint --app ID`: asks the application's checkpointer for a checkpoint now and waits
 * for the generation it makes. Returns its number and directory.
 */
export async function checkpointNow(id: string, timeoutMs = 600_000): Promise<{ generation: number; dir: string }> {
  const app = resolveApp(id);
  const cp = app.checkpointer;
  if (!cp || !checkpointerAlive(cp)) {
    throw new CkptError('ERR_CKPT_USAGE', `application ${id} has no periodic checkpointer running`, {
      hint: `start it with ckpt run --checkpoint-every, or checkpoint it with ckpt dump --app ${id} -D DIR --leave-running`,
    });
  }
  const before = latestGeneration(cp.dir) ?? 0;
  const logFrom = sizeOf(cp.log);
  process.kill(cp.pid, 'SIGUSR1');
  const t0 = Date.now();
  for (;;) {
    const now = latestGeneration(cp.dir) ?? 0;
    if (now > before) return { generation: now, dir: cp.dir };
    const failed = /checkpoint on request failed: (.*)/.exec(readFrom(cp.log, logFrom));
    if (failed) throw new CkptError('ERR_CKPT_DUMP_FAILED', `the checkpoint of ${id} failed: ${failed[1]}`);
    if (!checkpointerAlive(cp))
      throw new CkptError('ERR_CKPT_DUMP_FAILED', `the checkpointer of ${id} (pid ${cp.pid}) exited before checkpointing; see ${cp.log}`);
    if (Date.now() - t0 > timeoutMs) throw new CkptError('ERR_CKPT_DUMP_FAILED', `no new generation in ${cp.dir} after ${timeoutMs / 1000} s; see ${cp.log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

function readFrom(file: string, offset: number): string {
  try {
    return readFileSync(file).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}
