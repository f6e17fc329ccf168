/**
 * `ckpt server`: one resident ckpt process that runs the dumps and restores of the `ckpt` commands
 * of this host, so that they pay neither Node's loading of ckpt nor its cold code (its functions
 * compiled and optimized once, not at every command). The `ckpt` command (bin.ts) asks it first,
 * for `dump`, `pre-dump` and `restore -d` (served.ts: notServed); where it is not running, busy,
 * or differs in anything that the command's result depends on, the command runs in its own
 * process as ever.
 *
 * Wire (one connection per command, JSON lines): the client sends its request, then `{abort}` on
 * SIGINT/SIGTERM/SIGHUP; the server answers `{ok: pid}` or `{refuse: why}`, then `{o: 1|2, d}`
 * (output for the client's stdout or stderr) and last `{exit: status}`.
 *
 * What the command depends on, checked or carried per request:
 * - namespaces (mount, pid, net, ipc, uts, user, cgroup) and effective uid: the server's, or refused;
 * - the working directory, umask, and the environment ckpt reads (CKPT_*, HOME, TMPDIR): the
 *   client's, for the command's duration;
 * - DEBUG, NODE_PATH and CKPT_APPS_DIR (read once, at start): the server's, or refused; -v, --log-file, -c, -p and
 *   help run in the client's own process;
 * - the config: a JSON config (options only) is the client's, read anew; a config with plugins or
 *   code (a module's code would not be loaded again once changed) is refused;
 * - the ckpt itself: the same version and bundle (a rebuilt ckpt is refused by an older server).
 * - a restore's root is the command's child, as it would be had the command restored it itself
 *   (RestoreOptions.parent: forked from the command's process, which must be alive, untraced and
 *   in the server's namespaces, checked in /proc): its session and group, its cgroup and limits,
 *   its fds 0-2 and, once the command exits, its subreaper are the command's. A restore that
 *   waits for its processes (no -d), or that names fds of the command (--inherit-fd,
 *   --substitute), runs in its own process. Helpers a restore starts (a terminal's keeper, the
 *   lazy pager) are the server's children.
 *
 * One command at a time (a second is refused: it runs in its own process). A client that goes
 * away (killed, its connection closed) stops its dump as SIGINT does: between steps, undone, the
 * process left running as it was. The server killed mid-dump is ckpt killed mid-dump: the kernel
 * lets go of the processes, and the guard journals let the next dump repair what is left.
 */
import { chmodSync, closeSync, existsSync, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { type Ckpt, CkptError, VERSION, collectGarbage, procfs, resetFaults, sleepSync } from '@ckpt/core';
import { native } from '@ckpt/native';
import { createCkpt, loadConfig } from '@ckpt/api';
import type { Invocation } from './main.js';
import { SERVER_NAMESPACES, bundleTime, lineReader, namespaces, notServed } from './served.js';

/**
 * Node flags the server runs with: a young generation (V8's semi-spaces) big enough for a
 * command's allocations. Node starts it at 1 MB and grows it slowly; a dump of 2000 files then
 * made 4-6 scavenges of 2-9 ms each, in the command's time (and a tree's dump more), where with
 * these it makes none: the collection between commands takes what the command left. Measured
 * here, servers with and without alternating (7 runs): 2000 files dump 153 -> 136 ms, 16 MiB
 * restore 61 -> 49, 64-process tree dump 523 -> 487. The cost is start-up (the 16 MB is
 * committed at once, about 14 ms), paid once, and no more memory resident after the commands
 * (64-74 MB either way here).
 */
export const SERVER_NODE_FLAGS = ['--min-semi-space-size=16', '--max-semi-space-size=64'];

/**
 * Makes this process a Node with SERVER_NODE_FLAGS (execve: the same pid, fds and arguments)
 * unless it has them, from its command line or NODE_OPTIONS, or CKPT_SERVER_NODE_FLAGS is `off`.
 * Called first, before anything is open or said. Where execve fails, the server runs as it is.
 */
export function withServerNodeFlags(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (process.env.CKPT_SERVER_NODE_FLAGS === 'off' || given.some((a) => /^--(min|max)-semi-space-size\b/.test(a))) return;
  try {
    native.proc.execve(
      process.execPath,
      [process.execPath, ...SERVER_NODE_FLAGS, ...process.execArgv, ...process.argv.slice(1)],
      Object.entries(process.env).map(([k, v]) => `${k}=${v}`),
    );
  } catch {
    /* runs with Node's defaults */
  }
}

/** What `ckpt check` learns of a running server. */
export interface ServerStatus {
  pid: number;
  version: string;
  /** When it started (ISO 8601). */
  since: string;
  /** Commands it has run. */
  served: number;
  busy: boolean;
}

/**
 * The server listening at `path`: its status; `stale` for the socket of a server that died (no one
 * listens), `unresponsive` for one that does not answer (stopped, or in a long step); undefined
 * where there is no socket.
 */
export async function serverStatus(path: string): Promise<ServerStatus | 'stale' | 'unresponsive' | undefined> {
  try {
    if (!lstatSync(path).isSocket()) return undefined;
  } catch {
    return undefined;
  }
  return new Promise((resolve) => {
    const c = net.connect(path);
    const timer = setTimeout(() => done('unresponsive'), 5000);
    const done = (v: ServerStatus | 'stale' | 'unresponsive') => {
      clearTimeout(timer);
      c.destroy();
      resolve(v);
    };
    c.on('connect', () => c.write(`${JSON.stringify({ status: 1 })}\n`));
    c.on(
      'data',
      lineReader((line) => {
        try {
          const m = JSON.parse(line) as { status?: ServerStatus };
          if (m.status) return done(m.status);
        } catch {}
        done('unresponsive');
      }),
    );
    // No one listens: the socket of a dead server.
    c.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' ? 'stale' : 'unresponsive'));
    c.on('close', () => done('unresponsive'));
  });
}

/** The environment carried per request (the rest is the server's). */
const CARRIED_ENV = /^(CKPT_|HOME$|TMPDIR$)/;
/** The longest request line the server reads (a longer one ends the connection). */
const REQUEST_MAX = 1 << 20;
/** Read once, at start: must be the server's. */
const FIXED_ENV = ['DEBUG', 'NODE_PATH', 'CKPT_APPS_DIR'];

export interface ServerRequest {
  v: 1;
  version: string;
  /** The mtime of the client's bundle (dist/cli.cjs, served.ts: bundleTime): a rebuilt ckpt is another ckpt. */
  bundle: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  /** The client's pid (for the log). */
  pid: number;
  uid: number;
  umask: number;
  ns: Record<string, string>;
  tty: [boolean, boolean];
  /** Which client sent it: `c` for dist/ckpt-client (client/ckpt-client.c), else bin.ts (for the log). */
  client?: string;
}

export interface ServeOptions {
  socket: string;
  /** Exit after this long without a command. */
  idleExitMs?: number;
  /** The bundle the server runs (its mtime is compared with the client's). */
  bundle: string;
  main: (inv: Invocation) => Promise<void>;
  say: (line: string) => void;
}

/** A served command, for the server's log: the client's pid and its arguments. */
function describe(r: ServerRequest): string {
  return `pid ${r?.pid}: ckpt ${Array.isArray(r?.argv) ? r.argv.join(' ') : '?'}`.slice(0, 300);
}

/** Listens until SIGTERM/SIGINT (a command running is finished first) or the idle time. */
export async function serve(o: ServeOptions): Promise<void> {
  const euid = process.geteuid?.() ?? -1;
  if (euid !== 0) throw new CkptError('ERR_CKPT_USAGE', 'ckpt server runs as root (a user runs ckpt in its own process)');
  const bundleNs = bundleTime(o.bundle);
  const ns = namespaces();
  const fixed = Object.fromEntries(FIXED_ENV.map((k) => [k, process.env[k] ?? '']));
  mkdirSync(dirname(o.socket), { recursive: true, mode: 0o700 });
  await takeSocketPath(o.socket);
  const ckpts = new Map<string, Ckpt>();
  let busy = false;
  let served = 0;
  const startedAt = new Date().toISOString();
  let idleTimer: NodeJS.Timeout | undefined;
  let stopping = false;
  let done!: () => void;
  const finished = new Promise<void>((r) => {
    done = r;
  });
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    sock.on('error', () => {});
    // The first line is the request; the lines after it, its command's {abort}s.
    let control: ((line: string) => void) | undefined;
    let first = true;
    sock.on(
      'data',
      lineReader(
        (line) => {
          if (!first) return control?.(line);
          first = false;
          accept(sock, line, (c) => {
            control = c;
          });
        },
        REQUEST_MAX,
        () => sock.destroy(),
      ),
    );
  });

  /** A connection's first line: answered (status, refusal), or the command run. */
  function accept(sock: net.Socket, line: string, listen: (control: (line: string) => void) => void): void {
    let req: ServerRequest;
    try {
      req = JSON.parse(line) as ServerRequest;
    } catch {
      reply(sock, { refuse: 'not a request' }, true);
      return;
    }
    if (!req || typeof req !== 'object') {
      reply(sock, { refuse: 'not a request' }, true);
      return;
    }
    // `ckpt check` asks how the server is.
    if ((req as { status?: unknown }).status === 1) {
      reply(sock, { status: { pid: process.pid, version: VERSION, since: startedAt, served, busy } satisfies ServerStatus }, true);
      return;
    }
    const why = busy ? 'busy with another command' : stopping ? 'stopping' : refusal(req, sock);
    if (why) {
      o.say(`${describe(req)}: runs in its own process: ${why}`);
      reply(sock, { refuse: why }, true);
      return;
    }
    busy = true;
    if (idleTimer) clearTimeout(idleTimer);
    void handle(sock, req, listen)
      .catch((e) => o.say(`${describe(req)}: ${(e as Error).message}`))
      .finally(() => {
        busy = false;
        reapChildren();
        if (stopping) return close();
        armIdle();
        // Between commands, rather than before the next dump's freeze (see collectGarbage): once
        // the command's connection is closed (its end waits for the loop), unless another came.
        setTimeout(() => {
          if (!busy) collectGarbage();
        }, 20).unref();
      });
  }

  /** Why this server cannot run the request as the client's own process would, or undefined. */
  function refusal(r: ServerRequest, sock: net.Socket): string | undefined {
    if (
      r?.v !== 1 ||
      !Array.isArray(r.argv) ||
      !r.argv.every((a) => typeof a === 'string') ||
      typeof r.cwd !== 'string' ||
      typeof r.umask !== 'number' ||
      typeof r.env !== 'object' ||
      r.env === null
    )
      return 'not a request of this version';
    if (r.version !== VERSION || r.bundle !== bundleNs)
      return `another ckpt (server: ${VERSION}, a bundle of ${new Date(Number(BigInt(bundleNs) / 1_000_000n)).toISOString()})`;
    if (r.uid !== euid) return `another user (uid ${r.uid})`;
    const not = notServed(r.argv);
    if (not) return not;
    if (r.argv.includes('restore')) {
      const why = parentProblem(r.pid, ns, sock);
      if (why) return why;
    }
    for (const k of SERVER_NAMESPACES) if (r.ns?.[k] !== ns[k]) return `another ${k} namespace`;
    for (const k of FIXED_ENV) if ((r.env?.[k] ?? '') !== fixed[k]) return `another ${k}`;
    // Read once by the native engine: a fault injected at a ptrace step is the command's own process's.
    if (r.env?.CKPT_FAULT_PTRACE_STEP !== undefined) return 'CKPT_FAULT_PTRACE_STEP';
    return undefined;
  }

  async function handle(sock: net.Socket, req: ServerRequest, listen: (control: (line: string) => void) => void): Promise<void> {
    const ac = new AbortController();
    const stop = (why: string) => {
      if (ac.signal.aborted) return;
      send(sock, { o: 2, d: `\nckpt: ${why}: stopping after the current step and undoing\n` });
      ac.abort();
    };
    // The client's end: its signals come as {abort}; its death or a closed connection is SIGINT's.
    listen((line) => {
      try {
        const m = JSON.parse(line) as { abort?: string };
        if (m.abort)
          stop(
            String(m.abort)
              .replace(/[^A-Z0-9+]/g, '')
              .slice(0, 12) || 'stop',
          );
      } catch {}
    });
    const onGone = () => stop('the command went away');
    sock.on('end', onGone);
    sock.on('close', onGone);
    let undo: () => void;
    try {
      undo = enter(req, (fd, d) => send(sock, { o: fd, d }));
    } catch (e) {
      // Its directory gone, say: the command's own process says why.
      o.say(`${describe(req)}: runs in its own process: ${(e as Error).message}`);
      return reply(sock, { refuse: (e as Error).message }, true);
    }
    let started = 0;
    // Said once the server's own stderr is back.
    let logLine: string | undefined;
    try {
      // The config as the client's own process would find it: options only, else its own process.
      const config = await loadConfig(undefined, req.cwd);
      if (config.plugins.length || (config.file && !/\.json$/.test(config.file))) {
        const why = `a config with plugins or code (${config.file})`;
        logLine = `${describe(req)}: runs in its own process: ${why}`;
        return reply(sock, { refuse: why }, true);
      }
      const key = JSON.stringify(config);
      send(sock, { ok: process.pid });
      served++;
      process.exitCode = undefined;
      resetFaults(() => stop('SIGINT'));
      started = performance.now();
      await o.main({
        argv: req.argv,
        signal: ac.signal,
        parent: req.pid,
        makeCkpt: async () => {
          let c = ckpts.get(key);
          if (!c) {
            c = await createCkpt({ cwd: req.cwd });
            if (ckpts.size >= 8) ckpts.clear();
            ckpts.set(key, c);
          }
          return c;
        },
      });
      const status = Number(process.exitCode ?? 0);
      reply(sock, { exit: status }, true);
      logLine = `${describe(req)}: exit ${status}${ac.signal.aborted ? ' (stopped by its client)' : ''}, ${(performance.now() - started).toFixed(0)} ms${req.client === 'c' ? ' (C client)' : ''}`;
    } catch (e) {
      // Only what main does not catch itself (it prints the command's errors).
      logLine = `${describe(req)}: failed: ${(e as Error).message}`;
      send(sock, { o: 2, d: `ckpt: error: ${(e as Error).message}\n` });
      reply(sock, { exit: 1 }, true);
    } finally {
      undo();
      if (logLine) o.say(logLine);
      resetFaults();
      process.exitCode = undefined;
      sock.off('end', onGone);
      sock.off('close', onGone);
    }
  }

  function armIdle(): void {
    if (!o.idleExitMs) return;
    idleTimer = setTimeout(() => {
      o.say(`idle for ${o.idleExitMs! / 1000}s: exiting`);
      stopping = true;
      close();
    }, o.idleExitMs);
    idleTimer.unref();
  }

  function close(): void {
    server.close();
    try {
      unlinkSync(o.socket);
    } catch {}
    done();
  }

  // A signal during the warm-up stops its dump (undone) and the server before it listens.
  const warming = new AbortController();
  let listening = false;
  const onSignal = (sig: NodeJS.Signals) => {
    o.say(`${sig}: ${busy ? 'finishing the command running, then exiting' : 'exiting'}`);
    stopping = true;
    warming.abort();
    if (!busy && listening) close();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onSignal);
  await warmUp(o, warming.signal);
  if (stopping) return;
  // The socket is root's alone from its creation (a request's uid is the client's word: only
  // root may connect at all), wherever --socket puts it.
  const umask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.socket, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(umask);
  }
  listening = true;
  // Later errors (accept failing: no fds left) are the server's log's, not its end.
  server.on('error', (e) => o.say(`listening: ${e.message}`));
  chmodSync(o.socket, 0o600);
  o.say(`listening on ${o.socket} (pid ${process.pid}): dump, pre-dump and restore -d run here`);
  armIdle();
  await finished;
}

/**
 * Before it listens, the server dumps a process of its own (`sleep`, in its own session) twice
 * through the dump command, leaving it running then killing it: the first command it serves then
 * runs compiled, warmed code, as the ones after it do (the first dump of a process is 2-3 times
 * its next). Where there is no sleep program or the dumps fail, the server starts cold, and says so.
 */
async function warmUp(o: ServeOptions, signal: AbortSignal): Promise<void> {
  const t0 = performance.now();
  const sleep = ['/usr/bin/sleep', '/bin/sleep'].find((p) => existsSync(p));
  if (!sleep) return o.say('no sleep program to warm up with: the first commands run cold');
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-server-warm-up-'));
  const devnull = openSync('/dev/null', 'r+');
  let pid = 0;
  try {
    pid = native.proc.spawnDetached(sleep, ['sleep', '3600'], [], null, [devnull, devnull, devnull]);
    const req = { cwd: process.cwd(), umask: process.umask(), env: {}, tty: [false, false] } as unknown as ServerRequest;
    for (const [argv, n] of [
      [['--leave-running'], 1],
      [[], 2],
    ] as const) {
      const undo = enter({ ...req, env: { ...process.env } as Record<string, string> }, () => {});
      try {
        process.exitCode = undefined;
        if (signal.aborted) throw new Error('stopped');
        await o.main({ argv: ['dump', ...argv, '-t', String(pid), '-D', join(dir, String(n)), '--json'], signal });
        if (process.exitCode) throw new Error(`dump ${n} exited ${process.exitCode}`);
      } finally {
        undo();
        process.exitCode = undefined;
      }
    }
    o.say(`warmed up: two dumps of a sleep of its own in ${(performance.now() - t0).toFixed(0)} ms`);
    // As after every command (see collectGarbage).
    collectGarbage();
  } catch (e) {
    o.say(signal.aborted ? 'warm-up stopped' : `warm-up: ${(e as Error).message}: the first commands run cold`);
  } finally {
    closeSync(devnull);
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
      try {
        for (let i = 0; i < 1000 && !native.proc.tryWait(pid); i++) sleepSync(1);
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The socket path, free: a live server there is an error; a dead one's socket is removed. */
async function takeSocketPath(path: string): Promise<void> {
  let st: ReturnType<typeof lstatSync> | undefined;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new CkptError('ERR_CKPT_USAGE', `${path} exists and is not a socket`);
  // Asked as `ckpt check` asks: only a socket no one listens on is taken over.
  const there = await serverStatus(path);
  if (there !== 'stale') {
    const stop = typeof there === 'object' ? `kill ${there.pid}` : 'kill its pid';
    throw new CkptError('ERR_CKPT_USAGE', `a ckpt server already listens on ${path}`, { hint: `stop it first (${stop}), or give --socket` });
  }
  unlinkSync(path);
}

/**
 * Why a restore's root cannot be made the child of the command's process `pid` (what the request
 * says; it is checked here, not taken on trust): it must hold the other end of this connection,
 * be alive, in the server's namespaces (read from /proc, not from the request) and not traced by
 * another.
 */
function parentProblem(pid: number, ns: Record<string, string>, sock: net.Socket): string | undefined {
  if (!Number.isInteger(pid) || pid <= 1) return 'no command pid';
  if (!holdsPeer(pid, sock)) return `pid ${pid} does not hold the connection's other end`;
  let tracer: number;
  try {
    tracer = Number(procfs.readStatus(pid).TracerPid ?? 0);
  } catch {
    return `the command (pid ${pid}) is gone`;
  }
  if (tracer) return `the command (pid ${pid}) is traced`;
  const theirs = namespaces(pid);
  const other = SERVER_NAMESPACES.find((k) => theirs[k] !== ns[k]);
  return other && `the command (pid ${pid}) is in another ${other} namespace`;
}

/**
 * Whether process `pid` has the other end of `sock` among its fds: the connection's peer inode
 * (sock_diag), looked for in /proc/PID/fd. A request's pid is otherwise only its sender's word.
 */
function holdsPeer(pid: number, sock: net.Socket): boolean {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return false;
  try {
    const ino = fstatSync(fd).ino;
    const peer = native.sock.unixDiag().find((e) => e.ino === ino)?.peer;
    if (!peer) return false;
    const want = `socket:[${peer}]`;
    return procfs.listFds(pid).some((n) => {
      try {
        return procfs.fdLink(pid, n) === want;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

function send(sock: net.Socket, m: object): void {
  if (!sock.destroyed && sock.writable) sock.write(`${JSON.stringify(m)}\n`);
}

function reply(sock: net.Socket, m: object, last: boolean): void {
  send(sock, m);
  if (last) sock.end();
}

/**
 * The client's working directory, umask, environment and output for the command; returns what
 * puts the server's back.
 */
function enter(req: ServerRequest, out: (fd: 1 | 2, text: string) => void): () => void {
  const cwd = process.cwd();
  process.chdir(req.cwd);
  const umask = process.umask(req.umask & 0o777);
  const savedEnv: Record<string, string | undefined> = {};
  const keys = new Set([...Object.keys(process.env), ...Object.keys(req.env ?? {})].filter((k) => CARRIED_ENV.test(k)));
  for (const k of keys) {
    savedEnv[k] = process.env[k];
    const v = req.env?.[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = String(v);
  }
  const streams = [process.stdout, process.stderr] as const;
  const saved = streams.map((s, i) => {
    const own = Object.getOwnPropertyDescriptor(s, 'isTTY');
    const write = s.write;
    Object.defineProperty(s, 'isTTY', { value: !!req.tty?.[i], configurable: true, writable: true });
    s.write = ((chunk: string | Uint8Array, enc?: unknown, cb?: unknown) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      out((i + 1) as 1 | 2, text);
      const done = typeof enc === 'function' ? enc : cb;
      if (typeof done === 'function') process.nextTick(done as (e: null) => void, null);
      return true;
    }) as typeof s.write;
    return { own, write };
  });
  return () => {
    streams.forEach((s, i) => {
      s.write = saved[i].write;
      if (saved[i].own) Object.defineProperty(s, 'isTTY', saved[i].own!);
      else delete (s as { isTTY?: boolean }).isTTY;
    });
    for (const k of keys) {
      if (savedEnv[k] === undefined) delete process.env[k];
      else process.env[k] = savedEnv[k];
    }
    process.umask(umask);
    process.chdir(cwd);
  };
}

/**
 * Reaps the children a command left to exit (helpers a dump starts detached, as children of
 * whoever ran it): between commands, when nothing is traced.
 */
function reapChildren(): void {
  let pids: number[] = [];
  try {
    pids = native.proc
      .readTexts([`/proc/self/task/${process.pid}/children`])
      .flatMap((t) => (t ?? '').split(/\s+/))
      .filter(Boolean)
      .map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      native.proc.tryWait(pid);
    } catch {}
  }
}
