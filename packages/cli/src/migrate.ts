/**
 * `ckpt migrate`: moves a running process tree (or an application) to another host over SSH, in
 * one step that either completes or leaves it where it was.
 *
 *   source (ckpt migrate)                          destination (ckpt receive, over ssh)
 *   hello: version, the source's public key   ->   an empty image directory; ok
 *   pre-copy rounds, the process running:
 *     dump --leave-running --track-mem
 *     [--parent previous], its files          ->   written, committed as that generation,
 *                                                  signature and every digest checked; ok
 *   (until what a round writes stops shrinking)
 *   final dump --parent, the process frozen
 *   and its connections silent; its files     ->   committed and checked; ok
 *   restore                                   ->   processes rebuilt, not yet running; ready
 *   go                                        ->   they run; running, with their pids
 *   the source's processes are killed
 *   done                                      ->   the image directory goes; ok
 *
 * Any failure before "running" (the network, the destination refusing, its restore failing, ckpt
 * interrupted) thaws the source's processes, which go on as if nothing happened, and the
 * destination, which sees its input end without "go", rolls its restore back and removes what it
 * received. The one window that cannot be closed is the "go" itself: should the connection break
 * after the destination got it but before the source heard back, the source thaws its processes
 * (ckpt never kills a process it is not sure runs elsewhere) and the destination's run too; the
 * error says so.
 *
 * Trust: the destination restores the images with the source's public key trusted for this
 * migration only (as `restore --trust-key` would), because whoever may run ckpt there through
 * SSH may restore whatever they like there anyway; the signatures still prove that what arrived
 * is what the source wrote, with every file's digest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import {
  CkptError,
  ImageReader,
  KeyStore,
  publicKeyPem,
  MANIFEST,
  NftNetworkLocks,
  SIGNATURE_FILE,
  type InetAddr,
  VERSION,
  collectGarbage,
  errorMessage,
  fault,
  logger,
  ownerAlive,
  parsePublicKey,
  selfOwner,
  type Owner,
  type Ckpt,
  type ProcessRecord,
  type DumpResult,
} from '@ckpt/core';
import type { KeyObject } from 'node:crypto';
import { FILE_NAME, type FrameWriter, IncomingImage, StreamReader, StreamWriter, readHeader, readReply, sendFrame, type Header } from './wire.js';
import { connectDirect, type DirectListener, type DirectOffer, listenDirect } from './direct.js';
import { registerRestored } from './restored.js';
import { addAddress, announce, placeAddress, removeAddress, type MovedAddress } from './address.js';

const log = logger('migrate');

/** Generations kept in a migration's image directories: all of them (a chain needs its parents). */
const KEEP_ALL = Number.MAX_SAFE_INTEGER;
/**
 * When pre-copy stops: after a round that wrote less than SMALL_ROUND, or more than SHRINK of the
 * round before it. Each round is one more image of the chain the destination restores from (its
 * records read, its runs planned: the restore's time, within the downtime), so a round that saves
 * little costs more than it saves.
 */
const SMALL_ROUND = 2 << 20;
const SHRINK = 0.5;

export interface MigrateOptions {
  pid: number;
  app?: string;
  host: string;
  /** The ssh command and its options (argv), e.g. ['ssh'] or ['ssh', '-F', 'config']. */
  ssh: string[];
  /** ckpt on the destination (argv), e.g. ['ckpt']. */
  remote: string[];
  /** Pre-copy rounds at most (0: none, a single frozen copy). */
  maxRounds: number;
  /** Restore lazily on the destination (restore --lazy): the processes run before all their memory is back. */
  lazy?: boolean;
  /** The images go over a direct TCP channel of their own, sealed (direct.ts), when one can be made (default); false: over SSH. */
  direct?: boolean;
  /** The destination keeps the image there instead of a temporary directory it removes. */
  remoteDir?: string;
  /** Service addresses that move with the processes (--move-address), as the source has them. */
  addresses: MovedAddress[];
  /** The interface each goes to on the destination (by address), when named. */
  addressDevs?: Record<string, string>;
  /** Run options per plugin for the dumps (their flags) and for the destination's restore. */
  dumpPlugins: Record<string, Record<string, unknown>>;
  restorePlugins: Record<string, Record<string, unknown>>;
  /** The plugin options that turn write tracking on for a dump (empty: no pre-copy possible). */
  track: Record<string, Record<string, unknown>>;
  signal?: AbortSignal;
  /** Progress lines for people (stderr). */
  say?: (line: string) => void;
}

export interface MigrateRound {
  round: number;
  /** 'pre-copy' rounds ran with the process running; 'final' with it frozen. */
  kind: 'pre-copy' | 'final';
  bytes: number;
  /** How long the dump kept the process frozen, and the round's wall time (dump and transfer). */
  frozenMs: number;
  ms: number;
}

export interface MigrateResult {
  host: string;
  /** The source's pids, now gone. */
  from: number[];
  /** The pids on the destination: the main one first. */
  pids: number[];
  main: number;
  app?: string;
  rounds: MigrateRound[];
  bytesSent: number;
  /** From the freeze of the final round to the destination's "running" (as the source sees it). */
  downtimeMs: number;
  /**
   * Where the downtime went: the final dump (frozen until its image was whole), sending it, the
   * destination's check of it (signature, digests), its restore up to the processes built (as
   * the source waited for it, and as the destination timed it), and their start (a round trip).
   */
  phases: { dumpMs: number; sendMs: number; checkMs: number; restoreMs: number; destRestoreMs: number; resumeMs: number };
  /** How the rehearsal of the restore on the destination went (before the final freeze): its time, or why it failed. */
  rehearsal?: string;
  wallMs: number;
  lazy: boolean;
  /** How the images went: 'direct' (a TCP connection of their own, sealed with AES-256-GCM) or 'ssh'; and why not direct. */
  channel: 'direct' | 'ssh';
  channelNote?: string;
  /** Why there was no pre-copy, when there was none. */
  note?: string;
}

/** A word of a remote command line, quoted for the remote shell. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The connection to `ckpt receive` on the destination. */
class Remote {
  readonly reader: StreamReader;
  /** Where frames go: the SSH channel, or the direct channel once it is made (direct.ts). */
  private writer: FrameWriter;
  private readonly ssh: StreamWriter;
  private stderr = '';
  private readonly child: ChildProcess;
  private readonly exit: Promise<number | null>;
  sent = 0;

  constructor(o: MigrateOptions) {
    const command = [...o.remote, 'receive', ...(o.remoteDir ? ['-D', o.remoteDir] : [])].map(shellQuote).join(' ');
    const child = spawn(o.ssh[0], [...o.ssh.slice(1), '-T', o.host, command], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.reader = new StreamReader(child.stdout!);
    this.ssh = new StreamWriter(child.stdin!);
    this.writer = this.ssh;
    child.stderr!.on('data', (b: Buffer) => {
      this.stderr = (this.stderr + b.toString('utf8')).slice(-4096);
    });
    this.exit = new Promise((res) => {
      child.on('error', (e) => {
        this.stderr += `\n${o.ssh[0]}: ${e.message}`;
        res(null);
        child.stdout!.destroy();
      });
      child.on('exit', (code) => {
        res(code);
      });
    });
  }

  /** What the other side last said on stderr (ssh's or ckpt's error), one line. */
  lastWords = (): string => {
    const lines = this.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    return (lines.find((l) => l.startsWith('ckpt: error:')) ?? lines.at(-1) ?? '').replace(/^ckpt: error: /, '');
  };

  async send(h: Header, file?: string): Promise<void> {
    try {
      this.sent += await sendFrame(this.writer, h, file);
    } catch (e) {
      // The destination failed and closed its end: what it said is the cause, not the broken write.
      const said = await Promise.race([
        readReply(this.reader, 'while the images went there', this.lastWords).then(
          () => undefined,
          (err: unknown) => err,
        ),
        new Promise((r) => setTimeout(r, 2000, undefined)),
      ]);
      throw said ?? e;
    }
  }

  reply(what: string) {
    return readReply(this.reader, what, this.lastWords);
  }

  /**
   * Sends the frames from here on over the direct channel the destination offers (direct.ts):
   * undefined once it does, else why not (they go over SSH).
   */
  async direct(offer: DirectOffer): Promise<string | undefined> {
    let w: FrameWriter;
    try {
      w = await connectDirect(offer);
    } catch (e) {
      return errorMessage(e);
    }
    await this.send({ op: 'direct' });
    this.writer = w;
    return undefined;
  }

  /** Ends the conversation; waits a while for the remote side to exit, then kills ssh. */
  async close(): Promise<number | null> {
    if (this.writer !== this.ssh) this.writer.end();
    this.ssh.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exit;
    clearTimeout(timer);
    return code;
  }
}

/** Sends a committed generation of `dir`: its files, manifest and signature last, then commit. */
async function sendGeneration(remote: Remote, dir: string, generation: number, signal?: AbortSignal): Promise<number> {
  const g = join(dir, String(generation));
  const names = readdirSync(g).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  for (const name of names) {
    if (signal?.aborted) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'interrupted');
    fault('migrate:file');
    const path = join(g, name);
    await remote.send({ op: 'file', generation, name, size: statSync(path).size }, path);
  }
  await remote.send({ op: 'commit', generation });
  return Number((await remote.reply(`to take generation ${generation}`)).checkMs ?? 0);
}

/** The manifest and its signature go last: a generation is complete when they are there. */
function rank(name: string): number {
  return name === MANIFEST ? 1 : name === SIGNATURE_FILE ? 2 : 0;
}

export async function migrate(c: Ckpt, o: MigrateOptions): Promise<MigrateResult> {
  const t0 = performance.now();
  const say = o.say ?? (() => {});
  sweepOrphans(SENT);
  const work = mkdtempSync(join(os.tmpdir(), SENT));
  writeFileSync(join(work, OWNER), JSON.stringify(selfOwner()), { mode: 0o600 });
  const remote = new Remote(o);
  const rounds: MigrateRound[] = [];
  let downtimeMs = 0;
  let restored: { pids: number[]; main: number; app?: string } | undefined;
  let note: string | undefined;
  let rehearsal: string | undefined;
  let channelNote: string | undefined;
  const phases: MigrateResult['phases'] = { dumpMs: 0, sendMs: 0, checkMs: 0, restoreMs: 0, destRestoreMs: 0, resumeMs: 0 };
  try {
    const key = new KeyStore().hostKey()!;
    await remote.send({
      op: 'hello',
      version: VERSION,
      key: publicKeyPem(key.raw),
      lazy: !!o.lazy,
      addresses: o.addresses.map((a) => ({ ...a, dev: o.addressDevs?.[a.addr] })),
      direct: o.direct !== false,
    });
    const hello = await remote.reply(`to connect (ssh ${o.host})`);
    say(`connected to ckpt ${hello.version} on ${o.host}`);
    if (o.direct === false) channelNote = 'not asked for (--no-direct)';
    else if (!hello.direct) channelNote = `the destination offers none${hello.directNote ? ` (${String(hello.directNote)})` : ''}`;
    else {
      channelNote = await remote.direct(hello.direct as DirectOffer);
      if (channelNote) say(`no direct channel (${channelNote}): the images go over ssh`);
    }
    let parent: string | undefined;
    let prevBytes = Number.POSITIVE_INFINITY;
    if (!Object.keys(o.track).length) note = 'no pre-copy: no loaded plugin tracks written memory (--track-mem)';
    else if (o.maxRounds === 0) note = 'no pre-copy (--rounds 0)';
    /** One pre-copy round: a dump that leaves the process running, sent there. Its image bytes. */
    const preCopy = async (): Promise<number> => {
      const t = performance.now();
      const round = rounds.length + 1;
      fault('migrate:round');
      const r = await c.dump({
        pid: o.pid,
        app: o.app,
        dir: work,
        leaveRunning: true,
        keep: KEEP_ALL,
        transient: true,
        parent,
        plugins: merge(o.dumpPlugins, o.track),
        signal: o.signal,
      });
      await sendGeneration(remote, work, r.generation, o.signal);
      rounds.push({ round, kind: 'pre-copy', bytes: r.imageBytes, frozenMs: Number(r.stats.frozenMs ?? 0), ms: performance.now() - t });
      say(`round ${round}: ${mb(r.imageBytes)} sent in ${(performance.now() - t).toFixed(0)} ms (process running)`);
      parent = r.path;
      return r.imageBytes;
    };
    for (let round = 1; round <= o.maxRounds && !note; round++) {
      const bytes = await preCopy();
      if (bytes < SMALL_ROUND || bytes > SHRINK * prevBytes) break;
      prevBytes = bytes;
    }
    // A rehearsal there while the processes run here: the last image restored up to the point
    // before its processes would run, then rolled back. What would fail the restore there is
    // said now, and the restore that counts runs warm (its code compiled, its schemas built).
    if (parent) {
      await remote.send({ op: 'rehearse', generation: rounds.length, lazy: !!o.lazy, plugins: o.restorePlugins });
      const rh = await remote.reply('to rehearse the restore');
      rehearsal = rh.skipped ? `skipped: ${String(rh.skipped)}` : rh.error ? `failed: ${String(rh.error)}` : `${Number(rh.ms).toFixed(0)} ms`;
      if (rh.error) say(`warning: the rehearsal of the restore there failed (${String(rh.error)}); migrating anyway`);
      // What the process wrote during the rehearsal (a few hundred ms) goes now, while it runs:
      // the final round then has only what it writes during this one (1 GiB, 1%/s: 1-2 MB, not
      // 5-7; its freeze 23-47 ms instead of 30-68, its send 6-15 instead of 15-48).
      await preCopy();
    }
    const t = performance.now();
    let final: DumpResult | undefined;
    await c.dump({
      pid: o.pid,
      app: o.app,
      dir: work,
      keep: KEEP_ALL,
      transient: true,
      parent,
      plugins: o.dumpPlugins,
      signal: o.signal,
      handover: async (r) => {
        final = r;
        const t1 = performance.now();
        const frozenAt = t1 - Number(r.stats.frozenMs ?? 0);
        phases.dumpMs = t1 - frozenAt;
        phases.checkMs = await sendGeneration(remote, work, r.generation, o.signal);
        const t2 = performance.now();
        phases.sendMs = t2 - t1 - phases.checkMs;
        fault('migrate:sent');
        // The service addresses leave with the processes (their connections are silent, in
        // repair mode), and come back should the destination fail.
        const removed: MovedAddress[] = [];
        try {
          for (const a of o.addresses) {
            removeAddress(a);
            removed.push(a);
          }
          await remote.send({ op: 'restore', generation: r.generation, lazy: !!o.lazy, plugins: o.restorePlugins });
          const ready = await remote.reply('to restore');
          const t3 = performance.now();
          phases.restoreMs = t3 - t2;
          phases.destRestoreMs = Number(ready.ms ?? 0);
          fault('migrate:restored');
          await remote.send({ op: 'go' });
          const rep = await remote.reply('to start the restored processes (it may have started them: check the destination)');
          downtimeMs = performance.now() - frozenAt;
          phases.resumeMs = performance.now() - t3;
          restored = { pids: rep.pids as number[], main: rep.main as number, app: rep.app as string | undefined };
        } catch (e) {
          for (const a of removed) {
            try {
              addAddress(a);
              announce(a);
            } catch (err) {
              say(`warning: could not put ${a.addr}/${a.prefix} back on ${a.dev}: ${errorMessage(err)}`);
            }
          }
          throw e;
        }
      },
    });
    rounds.push({ round: rounds.length + 1, kind: 'final', bytes: final!.imageBytes, frozenMs: downtimeMs, ms: performance.now() - t });
    say(`final round: ${mb(final!.imageBytes)} sent; down ${downtimeMs.toFixed(0)} ms; running on ${o.host} as pid ${restored!.main}`);
    try {
      await remote.send({ op: 'done' });
      await remote.reply('to finish');
    } catch (e) {
      say(`warning: the destination did not confirm the end (${errorMessage(e)}); the process runs there`);
    }
    await remote.close();
    return {
      host: o.host,
      from: final!.pids,
      pids: restored!.pids,
      main: restored!.main,
      ...(restored!.app ? { app: restored!.app } : {}),
      rounds,
      bytesSent: remote.sent,
      downtimeMs,
      phases,
      ...(rehearsal ? { rehearsal } : {}),
      wallMs: performance.now() - t0,
      lazy: !!o.lazy,
      channel: channelNote ? 'ssh' : 'direct',
      ...(channelNote ? { channelNote } : {}),
      ...(note ? { note } : {}),
    };
  } catch (e) {
    await remote.close().catch(() => undefined);
    const why = e instanceof CkptError && e.code === 'ERR_CKPT_MIGRATE_FAILED' ? e.message : errorMessage(e);
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `migration of pid ${o.pid} to ${o.host} failed: ${why}; it runs on here, unchanged`, {
      cause: e,
      ...((e as CkptError).hint ? { hint: (e as CkptError).hint } : {}),
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
    // The connections' blocks the final dump handed to its image (here, gone): they wait for no restore.
    new NftNetworkLocks().sweep();
  }
}

function merge(a: Record<string, Record<string, unknown>>, b: Record<string, Record<string, unknown>>): Record<string, Record<string, unknown>> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = { ...(out[k] ?? {}), ...v };
  return out;
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

// ---- the destination ----

/** Replies go to stdout, one JSON line each; nothing else may write there. */
function reply(r: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

function fail(e: unknown): void {
  const err = e as CkptError;
  reply({ ok: false, error: { code: err.code ?? 'ERR_CKPT_INTERNAL', message: errorMessage(e), ...(err.hint ? { hint: err.hint } : {}) } });
}

/** What ends a rehearsal's restore where the real one would let the processes run. */
class Rehearsed extends Error {}
const RECEIVED = 'ckpt-receive-';
const SENT = 'ckpt-migrate-';
const OWNER = '.owner';

/**
 * What a migration's source or destination killed before its end left in the temporary directory
 * (named by `prefix`) goes: its owner, recorded in the directory, is gone.
 */
function sweepOrphans(prefix: string): void {
  for (const n of readdirSync(os.tmpdir())) {
    if (!n.startsWith(prefix)) continue;
    const d = join(os.tmpdir(), n);
    try {
      if (ownerAlive(JSON.parse(readFileSync(join(d, OWNER), 'utf8')) as Owner)) continue;
    } catch {
      /* no owner file: not finished making, or not ours; an owner file is written first */
      continue;
    }
    rmSync(d, { recursive: true, force: true });
  }
}

/**
 * `ckpt receive`: the destination of a migration, on stdin and stdout (see the top of this file).
 * Everything it received goes when the source goes away before the end, and after a successful
 * migration too unless it was given a directory to keep the image in.
 */
export async function receive(c: Ckpt, o: { dir?: string; lazyOptions: Record<string, Record<string, unknown>> }): Promise<number> {
  // The frames come over SSH (stdin), or over the direct channel once the source says so.
  let r = new StreamReader(process.stdin);
  let direct: DirectListener | undefined;
  let dir: string;
  if (o.dir) {
    dir = resolve(o.dir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (readdirSync(dir).length) throw new CkptError('ERR_CKPT_USAGE', `${dir} is not empty: a migration needs an empty image directory`);
  } else {
    sweepOrphans(RECEIVED);
    dir = mkdtempSync(join(os.tmpdir(), RECEIVED));
    writeFileSync(join(dir, OWNER), JSON.stringify(selfOwner()), { mode: 0o600 });
  }
  let keep = !!o.dir;
  const staging = new Map<number, IncomingImage>();
  let trust: KeyObject | undefined;
  let ran = false;
  let addresses: MovedAddress[] = [];
  const added: MovedAddress[] = [];
  // The image's TCP connections, blocked here from the moment they are known (each generation
  // committed) until the restore is over: once a moving address is here, a packet of a peer that
  // came before its connection is rebuilt would meet no socket, and the kernel would answer it
  // with a reset. The restore rebuilds each connection blocked, and unblocks it once it is whole;
  // what is left (connections the final image no longer has, a failed restore) goes at the end.
  const held = new NftNetworkLocks().group();
  const holdConnections = (processes: ProcessRecord[]) => {
    for (const p of processes)
      for (const f of p.fds) {
        const d = f.kind === 'tcp' ? (f.data as { local?: InetAddr; peer?: InetAddr } | undefined) : undefined;
        if (d?.local && d.peer) held.block(d.local, d.peer);
      }
  };
  try {
    for (;;) {
      const h = await readHeader(r);
      if (!h) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the source went away');
      if (h.op === 'hello') {
        trust = parsePublicKey(String(h.key), "the source's key");
        // Where each moving address will go: checked now, before anything is frozen.
        addresses = ((h.addresses as Array<MovedAddress & { dev?: string }>) ?? []).map((a) => placeAddress({ ...a, dev: '' }, a.dev || undefined));
        let directNote: string | undefined;
        if (h.direct) {
          // The address the source's SSH client reached: the source can reach it.
          const here = process.env.SSH_CONNECTION?.split(' ')[2];
          if (!here) directNote = 'not run by sshd (no SSH_CONNECTION)';
          else {
            try {
              direct = await listenDirect(here);
            } catch (e) {
              directNote = `cannot listen on ${here}: ${errorMessage(e)}`;
            }
          }
        }
        reply({ ok: true, version: VERSION, dir, addresses, ...(direct ? { direct: direct.offer } : directNote ? { directNote } : {}) });
      } else if (h.op === 'direct') {
        if (!direct) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'protocol error: direct without an offer');
        const channel = direct;
        r = await channel.accept();
        // SSH holds the session: when it goes, so does the source.
        if (process.stdin.readableEnded) channel.close();
        else process.stdin.once('end', () => channel.close());
      } else if (h.op === 'file') {
        const g = Number(h.generation);
        const name = String(h.name);
        if (!Number.isSafeInteger(g) || g <= 0 || !FILE_NAME.test(name))
          throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `protocol error: file ${name} of generation ${h.generation}`);
        let s = staging.get(g);
        if (!s) staging.set(g, (s = new IncomingImage(dir)));
        fault('receive:file');
        if (s.has(name)) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `protocol error: file ${name} of generation ${g} sent twice`);
        const t = performance.now();
        await s.take(r, name, h.size ?? 0);
        log('generation %d: %s, %d bytes in %s ms', g, name, h.size ?? 0, (performance.now() - t).toFixed(1));
      } else if (h.op === 'commit') {
        const g = Number(h.generation);
        const s = staging.get(g);
        if (!s) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `protocol error: generation ${g} committed with no files`);
        // Signature (with the source's key), the chain, every file's digest: checked now, before it
        // is a generation and while the source runs, rather than found wrong at the restore.
        const t = performance.now();
        const processes = s.check(trust ? [trust] : []).processes();
        staging.delete(g);
        const n = s.commit(KEEP_ALL);
        holdConnections(processes);
        if (n !== g) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `generation ${g} arrived as generation ${n} of ${dir}`);
        reply({ ok: true, generation: g, checkMs: performance.now() - t });
      } else if (h.op === 'rehearse') {
        // Not with TCP sockets: a connection rebuilt here, then dropped, could speak to its peer
        // (a reset) while the real one still serves it from the source.
        const image = ImageReader.open(dir, { generation: Number(h.generation), trust: trust ? [trust] : [] });
        if (image.processes().some((p) => p.fds.some((f) => f.kind === 'tcp'))) {
          reply({ ok: true, skipped: 'the processes hold TCP sockets' });
          continue;
        }
        const t = performance.now();
        const plugins = { ...((h.plugins as Record<string, Record<string, unknown>>) ?? {}), ...(h.lazy ? o.lazyOptions : {}) };
        try {
          await c.restore({
            dir,
            generation: Number(h.generation),
            detach: true,
            trustKeys: trust ? [trust] : [],
            plugins,
            confirm: async () => {
              throw new Rehearsed();
            },
          });
        } catch (e) {
          if (!((e as Error).cause instanceof Rehearsed) && !(e instanceof Rehearsed)) {
            reply({ ok: true, error: errorMessage(e) });
            continue;
          }
        }
        reply({ ok: true, ms: performance.now() - t });
        // The rehearsal's garbage goes now, while the source copies once more: a collection
        // during the restore that counts took 5-13 ms of the downtime.
        collectGarbage();
      } else if (h.op === 'restore') {
        fault('receive:restore');
        const t = performance.now();
        // The connections are held since their generations were committed, before the
        // addresses come here.
        const plugins = { ...((h.plugins as Record<string, Record<string, unknown>>) ?? {}), ...(h.lazy ? o.lazyOptions : {}) };
        if (h.lazy && !Object.keys(o.lazyOptions).length) throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'no loaded plugin restores lazily (--lazy) here');
        for (const a of addresses) {
          addAddress(a);
          added.push(a);
          announce(a);
        }
        const res = await c.restore({
          dir,
          generation: Number(h.generation),
          detach: true,
          trustKeys: trust ? [trust] : [],
          plugins,
          confirm: async (pids) => {
            reply({ ok: true, ready: true, pids, ms: performance.now() - t });
            const go = await readHeader(r);
            if (go?.op !== 'go') throw new CkptError('ERR_CKPT_MIGRATE_FAILED', 'the source called the migration off: its processes run on there');
          },
        });
        ran = true;
        // Again, now that the connections answer from here.
        for (const a of added.splice(0)) announce(a);
        const { main, ordered, app } = registerRestored(res);
        reply({ ok: true, running: true, pids: ordered, main, ...(app ? { app: app.id } : {}), ms: res.ms });
      } else if (h.op === 'done') {
        reply({ ok: true, kept: keep ? dir : undefined });
        break;
      } else throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `protocol error: unknown op ${h.op}`);
    }
    return 0;
  } catch (e) {
    for (const a of added) {
      try {
        removeAddress(a);
      } catch {
        /* gone already */
      }
    }
    fail(e);
    // What arrived goes, unless the processes run from it (a lazy restore may still read it).
    if (ran) keep = true;
    process.stderr.write(`ckpt: error: ${errorMessage(e)}\n`);
    return 1;
  } finally {
    direct?.close();
    for (const s of staging.values()) s.drop();
    if (!keep && existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    try {
      held.unblockAll();
    } catch {
      /* no nft any more: its lock file names it for the next sweep */
    }
  }
}
