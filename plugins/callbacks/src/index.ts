/**
 * @ckpt/plugin-callbacks — checkpoint callbacks into the application, as BLCR's
 * cr_register_callback, Kerrighed's callbacks and Java's CRaC did them, language-neutral: a line
 * protocol over a unix socket (packages/callbacks/PROTOCOL.md; client libraries for C, Node and
 * Python beside it).
 *
 * A process asks for callbacks by listening on a unix stream socket bound to an abstract name
 * that starts with "ckpt-callbacks/": ckpt finds it among the process's sockets (sock_diag), so
 * any process can register, started by `ckpt run` or not, and an image restores it registered.
 *
 * Dump (before anything is frozen): ckpt connects to every such process of the tree and says
 * PREPARE. The process runs its callbacks (flush buffers, close a connection to a service outside
 * the checkpoint) and answers: EXCLUDE ranges of its memory the image need not hold, TAKEOVER fds
 * it re-establishes itself after a restart, DELAY to take longer (bounded), then READY, or VETO
 * with a reason (the dump fails, naming it; nothing was frozen). The connection stays open across
 * the dump: the process's end is saved as the callback channel, and its callback thread waits on
 * it for what comes next, as BLCR's cr_checkpoint() returns "continue" or "restart":
 *   - a --leave-running dump done: RESUME continue (or RESUME failed, when the dump failed); ckpt
 *     waits for DONE (its continue callbacks ran) before it returns;
 *   - a restore: the channel is restored as a socket whose other end ckpt holds, with RESUME
 *     restart already queued; ckpt waits for DONE before the restore returns.
 * An fd taken over is saved as a placeholder (/dev/null at its number, its flags), which the
 * process's restart callback replaces (dup2). A process that does not answer within `timeoutMs`
 * fails the dump, or, with `onTimeout: "proceed"`, is checkpointed unprepared (and said so in
 * --json). A process that never registered is checkpointed as before.
 */
import { closeSync, fstatSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { z } from 'zod';
import {
  CkptError,
  createSessionState,
  definePlugin,
  lazyOptions,
  procfs,
  STAGE,
  type DumpSession,
  type FdDumpRequest,
  type FdRecord,
  type PluginContext,
  type ProcessDump,
  type ProcessRestore,
  type RestoreSession,
} from '@ckpt/core';
import { F_SETFL, native, O_NONBLOCK } from '@ckpt/native';

export const NAME = '@ckpt/plugin-callbacks';
/** The abstract socket names (without their leading NUL) that mean "call me back". */
export const PREFIX = 'ckpt-callbacks/';
/** The protocol's version, first field of PREPARE and RESUME. */
export const PROTOCOL = 1;
const SOCK_STREAM = 1;
const TCP_LISTEN = 10;

export const callbackOptions = lazyOptions(() =>
  z.strictObject({
    /** How long a process may take to answer (PREPARE, RESUME), ms. */
    timeoutMs: z.number().int().positive().optional(),
    /** The longest a process may DELAY a checkpoint, in all, ms. */
    maxDelayMs: z.number().int().nonnegative().optional(),
    /** A process that does not answer in time: the dump fails (default), or goes on with it unprepared. */
    onTimeout: z.enum(['fail', 'proceed']).optional(),
  }),
);
export type CallbackOptions = z.infer<typeof callbackOptions>;

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_DELAY_MS = 60_000;

/** A line-at-a-time reader over a socket, with a deadline. */
class Channel {
  private buf = '';
  private lines: string[] = [];
  private waiting?: () => void;
  private ended = false;
  private error?: Error;

  constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      let i = this.buf.indexOf('\n');
      while (i >= 0) {
        this.lines.push(this.buf.slice(0, i));
        this.buf = this.buf.slice(i + 1);
        i = this.buf.indexOf('\n');
      }
      this.waiting?.();
    });
    socket.on('end', () => {
      this.ended = true;
      this.waiting?.();
    });
    socket.on('error', (e) => {
      this.error = e;
      this.waiting?.();
    });
  }

  /** The next line; undefined at the deadline (or when the other end closed). */
  async next(deadline: () => number): Promise<string | undefined> {
    for (;;) {
      if (this.lines.length) return this.lines.shift();
      if (this.ended || this.error) return undefined;
      const left = deadline() - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiting = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiting = undefined;
    }
  }

  send(line: string): void {
    if (!this.socket.destroyed) this.socket.write(`${line}\n`);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A process prepared for the dump: what it asked for, and its channel. */
interface Prepared {
  pid: number;
  channel: Channel;
  /** Our socket's inode, and the process's end of the channel (its inode). */
  ours: number;
  theirs?: number;
  exclude: Array<{ start: number; end: number }>;
  takeover: Set<number>;
  /** It did not answer in time (onTimeout: proceed). */
  unprepared?: boolean;
}

const dumps = createSessionState('callbacks:dump', (_s: DumpSession) => new Map<number, Prepared>(), {
  dispose: (m) => {
    for (const p of m.values()) p.channel.close();
  },
});
const restores = createSessionState('callbacks:restore', (_s: RestoreSession) => new Map<number, Channel>(), {
  dispose: (m) => {
    for (const c of m.values()) c.close();
  },
});

/** The socket inodes a process holds (its fds). */
function socketInodes(pid: number): Set<number> {
  const out = new Set<number>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(Number(m[1]));
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** The callback listener addresses (raw sun_path: a NUL, the name) of each of the pids that has one. */
export function listeners(pids: readonly number[] | (() => readonly number[])): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let all: ReturnType<typeof native.sock.unixDiag>;
  try {
    all = native.sock.unixDiag();
  } catch {
    // No sock_diag here: no process can be found registered (the unix plugin says what it cannot do).
    return out;
  }
  const named = all.filter(
    (e) => e.type === SOCK_STREAM && e.state === TCP_LISTEN && e.name?.[0] === 0 && e.name.subarray(1).toString('latin1').startsWith(PREFIX),
  );
  if (!named.length) return out;
  for (const pid of typeof pids === 'function' ? pids() : pids) {
    const inodes = socketInodes(pid);
    const mine = named.find((e) => inodes.has(e.ino));
    if (mine) out.set(pid, mine.name!);
  }
  return out;
}

/**
 * Connects to a listener by its exact address bytes (as sock_diag shows them: a library may bind
 * the name with or without a trailing NUL), then hands the fd to node.
 */
function connect(addr: Buffer): net.Socket {
  const fd = native.sock.unixSocket(SOCK_STREAM);
  try {
    native.sock.unixConnect(fd, addr);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return new net.Socket({ fd, readable: true, writable: true });
}

/** Our end's inode (the fd behind the net.Socket). */
function inodeOf(s: net.Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fstatSync(fd).ino : 0;
}

/** PREPARE one process, and read its answer. Throws on a veto, or a timeout that fails the dump. */
async function prepare(session: DumpSession, pid: number, addr: Buffer, o: Required<CallbackOptions>): Promise<Prepared> {
  const name = addr.subarray(1).toString('latin1').replace(/\0+$/, '');
  const timedOut = (what: string) => {
    const msg = `pid ${pid} did not ${what} within ${o.timeoutMs} ms (its checkpoint callback, ${name})`;
    if (o.onTimeout === 'fail')
      throw new CkptError('ERR_CKPT_DUMP_FAILED', msg, {
        hint: 'the process may be stuck; set timeoutMs, or onTimeout: "proceed", in the options of @ckpt/plugin-callbacks',
      });
    session.stats['callbacks.unprepared'] = `${session.stats['callbacks.unprepared'] ? `${session.stats['callbacks.unprepared']}; ` : ''}${msg}`;
  };
  let socket: net.Socket;
  try {
    socket = connect(addr);
  } catch (e) {
    // A listener that takes no connection: like no answer.
    timedOut(`accept the connection (${(e as Error).message})`);
    return { pid, channel: new Channel(new net.Socket()), ours: 0, exclude: [], takeover: new Set(), unprepared: true };
  }
  const p: Prepared = { pid, channel: new Channel(socket), ours: inodeOf(socket), exclude: [], takeover: new Set() };
  try {
    let deadline = Date.now() + o.timeoutMs;
    const latest = Date.now() + o.timeoutMs + o.maxDelayMs;
    p.channel.send(`PREPARE ${PROTOCOL} ${session.options.leaveRunning ? 'running' : 'exit'} ${o.timeoutMs}`);
    for (;;) {
      const line = await p.channel.next(() => deadline);
      if (line === undefined) {
        p.unprepared = true;
        timedOut('answer PREPARE');
        break;
      }
      const [word, ...rest] = line.trim().split(' ');
      if (word === 'READY') break;
      if (word === 'VETO') {
        throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${pid} vetoed the checkpoint: ${rest.join(' ') || 'no reason given'}`, {
          hint: 'it asked not to be checkpointed now (its checkpoint callback): try again later',
        });
      }
      if (word === 'DELAY') deadline = Math.min(latest, Date.now() + Math.max(0, Number(rest[0]) || 0));
      else if (word === 'EXCLUDE') {
        const [start, end] = rest.map((x) => Number.parseInt(x, 16));
        if (!(start < end) || start % 4096 || end % 4096) throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${pid} declared a bad range to exclude: ${line}`);
        p.exclude.push({ start, end });
      } else if (word === 'TAKEOVER') {
        const fd = Number(rest[0]);
        if (!Number.isInteger(fd) || fd < 0) throw new CkptError('ERR_CKPT_DUMP_FAILED', `pid ${pid} declared a bad fd to take over: ${line}`);
        p.takeover.add(fd);
      } else
        throw new CkptError(
          'ERR_CKPT_DUMP_FAILED',
          `pid ${pid} answered its checkpoint callback with ${JSON.stringify(line.slice(0, 80))}, which is not in the protocol`,
        );
    }
  } catch (e) {
    // Refused, or failed: the connection goes (a callback waiting on it sees it close).
    p.channel.close();
    throw e;
  }
  // The process's end of the channel: the unix socket whose peer is ours.
  if (p.ours) p.theirs = native.sock.unixDiag().find((e) => e.peer === p.ours)?.ino;
  return p;
}

async function beforeDump(session: DumpSession, o: Required<CallbackOptions>): Promise<void> {
  // The tree is listed only when some process of the system registered (most dumps: none).
  const found = listeners(() => procfs.processTree(session.options.pid).map((n) => n.pid));
  if (!found.size) return;
  const t0 = performance.now();
  const prepared = dumps.of(session);
  // One at a time, parents first: a process may wait for its children in its callback.
  for (const [pid, addr] of found) prepared.set(pid, await prepare(session, pid, addr, o));
  session.stats['callbacks.processes'] = prepared.size;
  session.stats['callbacks.prepareMs'] = performance.now() - t0;
}

/** The memory the processes declared (before the memory stage reads it). */
async function declare(proc: ProcessDump): Promise<void> {
  const p = dumps.peek(proc.session)?.get(proc.pid);
  for (const r of p?.exclude ?? []) proc.memoryExclusions.push({ ...r, by: `pid ${proc.pid} (its checkpoint callback)` });
}

/** The callback channel, and the fds a process takes over, are ours. */
async function claimFd(req: FdDumpRequest, proc: ProcessDump): Promise<{ kind: string; data: Record<string, never> } | undefined> {
  const p = dumps.peek(proc.session)?.get(proc.pid);
  if (!p) return undefined;
  if (req.kind === 'socket' && p.theirs !== undefined && req.stat.ino === p.theirs) return { kind: 'callback-channel', data: {} };
  if (p.takeover.has(req.fd)) return { kind: 'taken-over', data: {} };
  return undefined;
}

/** After the dump: RESUME to every prepared process (continue or failed); waits for DONE when they run. */
async function resumeAll(session: DumpSession, o: Required<CallbackOptions>, kind: string, wait: boolean): Promise<void> {
  const prepared = dumps.peek(session);
  if (!prepared) return;
  await Promise.all(
    [...prepared.values()].map(async (p) => {
      if (p.unprepared) return p.channel.close();
      p.channel.send(`RESUME ${PROTOCOL} ${kind}`);
      if (wait) {
        const deadline = Date.now() + o.timeoutMs;
        const line = await p.channel.next(() => deadline);
        if (line?.trim() !== 'DONE') session.stats['callbacks.notDone'] = `pid ${p.pid}: no DONE after RESUME ${kind}`;
      }
      p.channel.close();
    }),
  );
}

async function restoreFd(record: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  if (record.kind === 'taken-over') {
    // A placeholder at its number: the process's restart callback puts its own file there.
    return openSync('/dev/null', 'r+');
  }
  if (record.kind === 'callback-channel') {
    const [ours, theirs] = native.sock.unixSocketpair(SOCK_STREAM);
    if (record.flags & O_NONBLOCK) native.fd.fcntl(theirs, F_SETFL, O_NONBLOCK);
    const channel = new Channel(new net.Socket({ fd: ours, readable: true, writable: true }));
    channel.send(`RESUME ${PROTOCOL} restart`);
    restores.of(proc.session).set(proc.pid, channel);
    return theirs;
  }
  return undefined;
}

/**
 * The restored processes run: the restore returns once each has run its restart callbacks (DONE),
 * or after timeoutMs (logged: the processes run, the restore has happened).
 */
async function afterResume(session: RestoreSession, o: Required<CallbackOptions>, ctx: PluginContext<CallbackOptions>): Promise<void> {
  const chans = restores.peek(session);
  if (!chans) return;
  await Promise.all(
    [...chans.entries()].map(async ([pid, c]) => {
      const deadline = Date.now() + o.timeoutMs;
      const line = await c.next(() => deadline);
      c.close();
      if (line?.trim() !== 'DONE') ctx.log('pid %d did not say DONE after RESUME restart within %d ms', pid, o.timeoutMs);
    }),
  );
}

function resolved(o: CallbackOptions | undefined): Required<CallbackOptions> {
  return { timeoutMs: o?.timeoutMs ?? DEFAULT_TIMEOUT_MS, maxDelayMs: o?.maxDelayMs ?? DEFAULT_MAX_DELAY_MS, onTimeout: o?.onTimeout ?? 'fail' };
}

export const callbacksPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'checkpoint callbacks into the application: prepare (veto, delay, exclude memory, take over fds), continue, restart',
  options: callbackOptions,
  claims: { fdKinds: ['callback-channel', 'taken-over'] },
  show: {
    fdName: (r: FdRecord) =>
      r.kind === 'callback-channel'
        ? 'checkpoint callback channel'
        : r.kind === 'taken-over'
          ? 'taken over by the process (/dev/null until it reopens it)'
          : undefined,
  },
  apply(hooks, ctx: PluginContext<CallbackOptions>) {
    hooks.session.beforeDump.tapPromise(NAME, (s) => beforeDump(s, resolved(ctx.options(s))));
    hooks.pids.dump.tapPromise(NAME, declare);
    // Only a process that answered the checkpoint's callbacks has fds of ckpt's to claim.
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.EARLY, when: (_req, proc) => !!dumps.peek(proc.session)?.has(proc.pid) }, claimFd);
    hooks.session.imageCommitted.tapPromise(NAME, (s) => resumeAll(s, resolved(ctx.options(s)), 'continue', !!s.options.leaveRunning));
    hooks.session.dumpFailed.tapPromise(NAME, (s, e) => resumeAll(s, resolved(ctx.options(s)), `failed ${e.message.replace(/\n/g, ' ').slice(0, 200)}`, false));
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
    hooks.session.afterResume.tapPromise(NAME, (s) => afterResume(s, resolved(ctx.options(s)), ctx));
  },
}));

export default callbacksPlugin;
