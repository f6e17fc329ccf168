#!/usr/bin/env node
/**
 * The `ckpt` command's entry, CommonJS (dist/bin.cjs, loaded by bin/ckpt.js): Node's ES module
 * loader would cost some 15 ms at every start. `ckpt --version` answers from the version alone
 * (bundled in). Everything else runs dist/cli.cjs, the whole command in one CommonJS file,
 * compiled through a V8 code cache kept beside it, one per command (dist/cli.cjs.dump.cache...;
 * dist/cli.cjs.main.cache without one, dist/cli.cjs.help.cache for help) and per set of Node
 * flags (V8 rejects a cache made under other flags: `node --cpu-prof` or NODE_OPTIONS=... get
 * caches of their own, named with a hash of the flags, rather than each run replacing the
 * other's). A cache holds the functions compiled when it was made, after a run, so the functions
 * a dump runs are compiled once, not at every dump. Written after a successful run of the command
 * that had none, or whose cache V8 rejected (another Node, a rebuilt bundle), when the directory
 * is writable; a failed run leaves a partial one (runBundle). A command that ends soon maps the
 * bundle and its cache rather than reading them (mapBundle).
 *
 * `ckpt dump` and `ckpt pre-dump` first ask a `ckpt server` (server.ts), when one listens, to run
 * them: the dump then costs neither the bundle's load nor its cold code. Where it does not run
 * them (busy, another namespace, ...), they run here.
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import vm from 'node:vm';
import { VERSION } from '@ckpt/core/version';
import { ANSWER_MS, SENT_ENV, SERVER_SOCKET, bundleTime, lineReader, namespaces, notServed, verbOf } from './served.js';

const args = process.argv.slice(2);
// dist/ckpt-client (client/ckpt-client.c) asked the server already, which did not run the command.
const asked = process.env.CKPT_CLIENT_ASKED !== undefined;
delete process.env.CKPT_CLIENT_ASKED;
const bundle = join(__dirname, 'cli.cjs');
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
} else {
  const socket = serverSocket();
  if (socket) viaServer(socket);
  else runBundle(bundle);
}

/**
 * The socket of a `ckpt server` (server.ts) for this command, if it is one the server runs and a
 * server may listen: else the command runs here.
 */
function serverSocket(): string | undefined {
  if (process.env.CKPT_SERVER === 'off' || asked) return undefined;
  if (notServed(args)) return undefined;
  const path = process.env.CKPT_SERVER_SOCKET || SERVER_SOCKET;
  try {
    return statSync(path).isSocket() ? path : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The command run by the server: its output written here, its status this process's. Where the
 * server refuses it (busy, another namespace, ...) or cannot be reached, it runs here instead;
 * once the server has taken it, this process's SIGINT/SIGTERM/SIGHUP (or its death) stop it there.
 */
function viaServer(path: string): void {
  const net = require('node:net') as typeof import('node:net');
  const tty = require('node:tty') as typeof import('node:tty');
  let state: 'asking' | 'served' | 'done' | 'here' = 'asking';
  let serverPid = 0;
  const here = () => {
    if (state !== 'asking') return;
    state = 'here';
    clearTimeout(timer);
    sock.destroy();
    runBundle(bundle);
  };
  // A server that does not answer (stopped, or in a long step that holds its event loop) is not
  // waited for: the command runs here (and the server, should it answer later, finds us gone).
  const timer = setTimeout(here, ANSWER_MS);
  const sock = net.connect(path);
  sock.on('connect', () => sock.write(`${JSON.stringify(request())}\n`));
  sock.on('error', () => here());
  sock.on(
    'data',
    lineReader((line) => {
      let m: { ok?: number; refuse?: string; o?: number; d?: string; exit?: number };
      try {
        m = JSON.parse(line);
      } catch {
        return;
      }
      if (m.refuse !== undefined) return here();
      if (m.ok !== undefined && state === 'asking') {
        state = 'served';
        serverPid = m.ok;
        clearTimeout(timer);
        for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => sock.write(`${JSON.stringify({ abort: sig })}\n`));
      } else if ((m.o === 1 || m.o === 2) && typeof m.d === 'string') {
        writeOut(m.o, m.d);
      } else if (typeof m.exit === 'number' && state === 'served') {
        // The command's end: its output is written (synchronously), nothing is left to wait for.
        state = 'done';
        process.exit(m.exit);
      }
    }),
  );
  sock.on('close', () => {
    if (state === 'asking') return here();
    if (state !== 'served') return;
    // The server ended without the command's result: what a killed ckpt leaves.
    const message = `the ckpt server (pid ${serverPid}) ended during the command, before its result`;
    const hint = 'ckpt check says what a dump that was killed left (ckpt check --repair removes it)';
    if (args.includes('--json')) writeOut(1, `${JSON.stringify({ error: { code: 'ERR_CKPT_SERVER_LOST', message, hint } })}\n`);
    writeOut(2, `ckpt: error: ${message}\nckpt: hint: ${hint}\n`);
    process.exit(1);
  });

  function request() {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && SENT_ENV.test(k)) env[k] = v;
    return {
      v: 1,
      version: VERSION,
      bundle: bundleTime(bundle),
      argv: args,
      cwd: process.cwd(),
      pid: process.pid,
      env,
      uid: process.geteuid?.() ?? -1,
      umask: process.umask(),
      ns: namespaces(),
      tty: [tty.isatty(1), tty.isatty(2)],
    };
  }
}

/** Writes all of text to fd 1 or 2 (a full non-blocking pipe waited for; a closed one dropped). */
const closedOut = new Set<number>();
function writeOut(fd: number, text: string): void {
  if (closedOut.has(fd)) return;
  const buf = Buffer.from(text, 'utf8');
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      closedOut.add(fd);
      return;
    }
  }
}

function runBundle(file: string): void {
  // The command, as far as a look at the arguments tells (main.ts says which one ran).
  const verb = verbOf(args);
  const name = args.includes('--help') || args.includes('-h') ? 'help' : verb && /^[a-z][a-z-]{0,23}$/.test(verb) ? verb : 'main';
  const base = `${file}.${name}${flagsTag()}`;
  const cacheFile = `${base}.cache`;
  const partialFile = `${base}.partial.cache`;
  const mapper = shortLived(name) ? addonMapper(file) : undefined;
  const { source, cachedData, full } = mapper ? mapBundle(mapper, file, cacheFile, partialFile) : readBundle(file, cacheFile, partialFile);
  const script = new vm.Script(source, { filename: file, cachedData });
  const used = !!cachedData && !script.cachedDataRejected;
  // import() in the bundle (of the user's plugins, see share.ts) is this module's.
  (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.esmImport')] = (url: string) => import(url);
  if (!used || !full) {
    process.once('exit', (code) => {
      const ran = (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.command')] ?? 'main';
      if (ran !== name) return;
      // A successful run's cache is the command's. A failed run (no such pid, a bad image) stops
      // early, so what it compiled is only part of the command: it is kept as a partial cache,
      // used until a successful run writes the full one, so that errors answer fast too.
      // A cache V8 rejected (another Node, a rebuilt bundle) is of no use to any run: replaced.
      if (code === 0) {
        saveCache(script, cacheFile);
        if (!full && cachedData) rmQuietly(partialFile);
      } else if (!used) {
        saveCache(script, partialFile);
        if (full) rmQuietly(cacheFile);
      }
    });
  }
  const M = Module as unknown as { _nodeModulePaths(dir: string): string[] };
  const mod = new Module(file) as Module & { filename: string; paths: string[] };
  mod.filename = file;
  mod.paths = M._nodeModulePaths(dirname(file));
  const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
  run(mod.exports, createRequire(file), mod, file, dirname(file));
}

/**
 * Whether the command ends soon after it starts (it may read its bundle through mapBundle): not
 * the server, the periodic checkpointer of `ckpt run`, a restore that waits for its processes
 * (without -d) or serves their pages (--lazy), a page server, a migration, or its receiving end.
 */
function shortLived(name: string): boolean {
  if (name === 'restore') return (args.includes('-d') || args.includes('--detach')) && !args.some((a) => a.startsWith('--lazy'));
  // Not 'main': a line whose verb bin.ts does not find.
  return ['dump', 'pre-dump', 'show', 'check', 'plugins', 'help', 'key', 'trust', 'apps', 'image'].includes(name);
}

type Mapper = { mapFileLatin1(path: string): string; mapFileBuffer(path: string): Buffer };

/**
 * The addon's file mappers, where the addon is built in @ckpt/native's directory (beside this
 * package, as npm installs both, or in the repository): the bundle's own load of the addon then
 * finds it loaded (one require, by the same real path). Undefined elsewhere (a prebuilt addon
 * node-gyp-build picks): the bundle is read.
 */
function addonMapper(file: string): Mapper | undefined {
  for (const dir of [join(dirname(file), '../../native'), join(dirname(file), '../../../native')]) {
    const addon = join(dir, 'build/Release/ckpt_native.node');
    try {
      statSync(addon);
    } catch {
      continue;
    }
    try {
      const m = require(addon) as Partial<Mapper>;
      return typeof m.mapFileLatin1 === 'function' && typeof m.mapFileBuffer === 'function' ? (m as Mapper) : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/**
 * readBundle's result without a copy: the source an external string over a private mapping of the
 * bundle, the cache a Buffer over one of its file (the addon's mapFileLatin1, mapFileBuffer). The
 * 2 MB then stay in the page cache's pages, where a copy would fill fresh memory, whose first
 * touch is slow on this project's VMs (0.3 GB/s): A/B here, 10 runs each, a dump of a small
 * process 162 -> 150 ms, its restore 153 -> 139, `ckpt help` 119 -> 111. Only for a command
 * that ends soon (shortLived): a bundle rewritten in place (a build) while one runs would make it
 * fault (SIGBUS) at the next function compiled from the source, where a read copy is immune.
 */
function mapBundle(m: Mapper, file: string, cacheFile: string, partialFile: string): { source: string; cachedData?: Buffer; full: boolean } {
  let source: string;
  try {
    source = m.mapFileLatin1(file);
  } catch {
    return readBundle(file, cacheFile, partialFile);
  }
  for (const [path, full] of [
    [cacheFile, true],
    [partialFile, false],
  ] as const) {
    try {
      const cachedData = m.mapFileBuffer(path);
      return cachedData.length ? { source, cachedData, full } : { source, full: false };
    } catch {}
  }
  return { source, full: false };
}

/** '' when node runs without flags, else `.` and 8 hex digits of a hash (FNV-1a) of them. */
function flagsTag(): string {
  const flags = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' ').trim();
  if (!flags) return '';
  let h = 0x811c9dc5;
  for (let i = 0; i < flags.length; i++) h = Math.imul(h ^ flags.charCodeAt(i), 0x01000193);
  return `.${(h >>> 0).toString(16).padStart(8, '0')}`;
}

/**
 * The bundle's source and its code cache (if any). The bundle is written wrapped already, as
 * Node's Module.wrap would (the build's banner and footer: `(function (exports, require, module,
 * __filename, __dirname) { ... })`), so its text goes to V8 as read, not as a 1 MB concatenation
 * that V8 then copies flat once more. Read as latin1: esbuild writes ASCII (non-ASCII characters
 * escaped), so each byte is a character, and the string is made by a copy, without UTF-8 decoding.
 * The cache is read into the same buffer after the source's string is made: fresh memory costs its
 * page faults at first touch (0.3 GB/s on this project's VMs), and the two files are 2 MB together.
 * Measured here (A/B, 4 runs each): read and compile 25 -> 18 ms.
 */
function readBundle(file: string, cacheFile: string, partialFile: string): { source: string; cachedData?: Buffer; full: boolean } {
  const fd = openSync(file, 'r');
  let cfd: number | undefined;
  let full = true;
  try {
    try {
      cfd = openSync(cacheFile, 'r');
    } catch {
      full = false;
      try {
        cfd = openSync(partialFile, 'r');
      } catch {}
    }
    const size = fstatSync(fd).size;
    const csize = cfd === undefined ? 0 : fstatSync(cfd).size;
    const buf = Buffer.allocUnsafeSlow(Math.max(size, csize));
    const source = buf.toString('latin1', 0, readAll(fd, buf, size));
    if (cfd === undefined || !csize) return { source, full: false };
    return { source, cachedData: buf.subarray(0, readAll(cfd, buf, csize)), full };
  } finally {
    closeSync(fd);
    if (cfd !== undefined) closeSync(cfd);
  }
}

/** Reads up to size bytes of fd from its start into buf; how many it read (fewer at an end of file). */
function readAll(fd: number, buf: Buffer, size: number): number {
  let off = 0;
  while (off < size) {
    const n = readSync(fd, buf, off, size - off, off);
    if (n === 0) break;
    off += n;
  }
  return off;
}

function rmQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

/** After the run, so the functions it compiled are in the cache; best effort, atomic. */
function saveCache(script: vm.Script, cacheFile: string): void {
  try {
    const tmp = `${cacheFile}.${process.pid}`;
    writeFileSync(tmp, script.createCachedData(), { mode: 0o644 });
    renameSync(tmp, cacheFile);
  } catch {}
}
