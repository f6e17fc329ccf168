/** The `ckpt` command (cli.ts runs it). Errors print as `ckpt: error: ...` (+ a hint), never as a stack trace. */
import { Command, CommanderError } from 'commander';
import { accessSync, closeSync, constants as FS, openSync, readFileSync, renameSync, rmSync, statSync, appendFileSync, fstatSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import {
  CkptError,
  KeyStore,
  NftNetworkLocks,
  VERSION,
  deadDumps,
  staleGuardMappings,
  enableLogging,
  parsePublicKey,
  publicKeyPem,
  readPublicKeyFile,
  type Ckpt,
  type CkptPlugin,
  type PluginFlag,
  type ProgressEvent,
} from '@ckpt/core';
import { native, initPath, CLONE_NEWPID, CLONE_NEWIPC } from '@ckpt/native';
import { checkpointerAlive, createCkpt, dumpTarget, listApps, mainOf, newAppId, registerApp, type AppEntry, type CreateOptions } from '@ckpt/api';
import { runCheck } from './check.js';
import { showImage } from './show.js';
import {
  checkpointNow,
  checkpointable,
  flagOptions,
  parseInterval,
  parseSignal,
  requestFile,
  runCheckpointer,
  startCheckpointer,
  trackMemOptions,
} from './periodic.js';
import { environ, runDir } from './runfiles.js';
import { registerRestored } from './restored.js';
import { migrate, receive } from './migrate.js';
import { ownAddress, parseAddress } from './address.js';
import { pageServer } from './pageserver.js';
import { SERVER_SOCKET, verbOf } from './served.js';
import { serve, serverStatus, withServerNodeFlags } from './server.js';

/** DEBUG as the user set it (enableLogging sets it for -v too). */
const USER_DEBUG = process.env.DEBUG;

const program = new Command();
program
  .name('ckpt')
  .description('Checkpoint running Linux processes to disk and restore them later.')
  .version(VERSION)
  .option('-c, --config <file>', 'config file (default: ckpt.config.json or ckpt.config.mjs in the current directory)')
  .option('-p, --plugin <module>', 'load an extra plugin (package name or path); repeatable', (v: string, prev: string[]) => [...prev, v], [] as string[])
  .option('-v, --verbose', 'log the pipeline (same as DEBUG=ckpt:*)')
  .option('--log-file <file>', 'write the log there instead of stderr (implies -v)')
  .configureOutput({ outputError: (str, write) => write(`ckpt: error: ${str.replace(/^error: /, '')}`) })
  .showHelpAfterError('(run ckpt help for the list of commands and options)')
  .exitOverride();

program.hook('preAction', (cmd, action) => {
  // The command run (its top-level name), for bin.ts: each has a code cache of its own.
  let top = action;
  while (top.parent && top.parent !== program) top = top.parent;
  (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.command')] = top.name();
  const o = cmd.opts() as { verbose?: boolean; logFile?: string };
  if (o.verbose || o.logFile) enableLogging(process.env.DEBUG || 'ckpt:*', o.logFile ? resolve(o.logFile) : undefined);
});

/**
 * The Ckpt of this invocation, made once: loaded before the command line is parsed when the
 * verb takes plugin flags (dump, restore) or describes plugins (show, plugins, help), so that
 * every loaded plugin's flags are real options of its command.
 */
let instance: Ckpt | undefined;
async function ckpt(): Promise<Ckpt> {
  if (!instance) {
    const argv = run.argv;
    const value = (short: string, long: string) => {
      const out: string[] = [];
      argv.forEach((a, i) => {
        if ((a === short || a === long) && argv[i + 1]) out.push(argv[i + 1]);
        else if (a.startsWith(`${long}=`)) out.push(a.slice(long.length + 1));
      });
      return out;
    };
    instance = await (run.makeCkpt ?? createCkpt)({ config: value('-c', '--config').at(-1), plugins: value('-p', '--plugin') });
  }
  return instance;
}

/** The run's options for each plugin, from the flags it declared. */
function pluginRunOptions(c: Ckpt, command: 'dump' | 'restore', o: Record<string, unknown>): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const p of c.plugins) {
    for (const f of p.flags ?? []) {
      if (f.command !== command) continue;
      const v = o[flagKey(f)];
      if (v === undefined || (Array.isArray(v) && !v.length)) continue;
      (out[p.name] ??= {})[f.option] = v;
    }
  }
  return out;
}

/** commander's attribute name for a flag: --tcp-close -> tcpClose. */
function flagKey(f: PluginFlag): string {
  const long = /--([a-z0-9-]+)/.exec(f.flags)?.[1] ?? f.option;
  return long.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Adds every loaded plugin's flags to its command (a flag two plugins declare is one option). */
function addPluginFlags(plugins: readonly CkptPlugin[]): void {
  for (const cmd of program.commands) {
    const name = cmd.name();
    if (name !== 'dump' && name !== 'pre-dump' && name !== 'restore') continue;
    const taken = new Set(cmd.options.map((o) => o.long));
    for (const p of plugins) {
      for (const f of p.flags ?? []) {
        // A pre-dump is a dump: it takes the dump's flags.
        if (f.command !== (name === 'pre-dump' ? 'dump' : name)) continue;
        const long = /--[a-z0-9-]+/.exec(f.flags)?.[0];
        if (taken.has(long)) continue;
        taken.add(long);
        const desc = `${f.description} [${p.name}]`;
        if (f.list) cmd.option(f.flags, desc, collect, []);
        else cmd.option(f.flags, desc);
      }
    }
  }
}

/**
 * SIGINT/SIGTERM during a dump or restore: stop between stages and undo, never die half-way. A
 * command run for a client of `ckpt server` is stopped by that client (its signals, its end).
 */
function interruptible(): AbortSignal {
  if (run.signal) return run.signal;
  const ac = new AbortController();
  const stop = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) return;
    process.stderr.write(`\nckpt: ${sig}: stopping after the current step and undoing\n`);
    ac.abort();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', stop);
  return ac.signal;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, ...v.split(/\s+/).filter(Boolean)];
}

/** A repeatable option taken whole (a path may hold spaces). */
function repeat(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/** A key file named on the command line; `-` is stdin. */
function keyFile(path: string) {
  if (path !== '-') return readPublicKeyFile(resolve(path));
  return parsePublicKey(readFileSync(0), 'the key on stdin');
}

function parsePairs(list: string[], flag: string): Array<[string, string]> {
  return list.map((item) => {
    const i = item.indexOf('=');
    if (i <= 0 || i === item.length - 1) throw new CkptError('ERR_CKPT_USAGE', `${flag} ${item}: expected OLD=NEW`);
    return [item.slice(0, i), item.slice(i + 1)];
  });
}

function parseSubstitutes(list: string[]): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const [id, what] of parsePairs(list, '--substitute')) out[id] = /^\d+$/.test(what) ? Number(what) : resolve(what);
  return out;
}

/** --inherit-fd N:RESOURCE (CRIU's form fd[N]:RESOURCE too): restorer fd N replaces RESOURCE. */
function parseInheritFds(list: string[]): Array<{ fd: number; resource: string }> {
  return list.map((v) => {
    const m = /^(?:fd\[(\d+)\]|(\d+)):(.+)$/.exec(v);
    if (!m)
      throw new CkptError('ERR_CKPT_USAGE', `--inherit-fd ${v}: expected FD:RESOURCE, e.g. 3:pipe:[12345]`, {
        hint: 'ckpt show DIR --files names the resources',
      });
    const fd = Number(m[1] ?? m[2]);
    try {
      fstatSync(fd);
    } catch {
      throw new CkptError('ERR_CKPT_USAGE', `--inherit-fd ${v}: fd ${fd} is not open in ckpt restore`, { hint: `open it in the shell, e.g. ${fd}>FILE` });
    }
    return { fd, resource: m[3] };
  });
}

/** Opens a file `ckpt run` gives the program as stdio, or says clearly why it cannot. */
function openStdio(path: string, flags: 'r' | 'a', flag: string): number {
  try {
    return openSync(path, flags, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? flags === 'r'
          ? 'no such file'
          : `no such directory: ${dirname(path)}`
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'it is a directory'
            : (e as Error).message;
    throw new CkptError('ERR_CKPT_USAGE', `cannot open ${flag} ${path}: ${why}`);
  }
}

/** A positive integer option (--keep, --generation). */
function parseCount(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) <= 0) throw new CkptError('ERR_CKPT_USAGE', `not a positive number: ${JSON.stringify(s)}`);
  return Number(s);
}

function parseCountOrZero(s: string): number {
  if (!/^\d+$/.test(s)) throw new CkptError('ERR_CKPT_USAGE', `not a number: ${JSON.stringify(s)}`);
  return Number(s);
}

function parsePid(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) <= 0) throw new CkptError('ERR_CKPT_USAGE', `not a pid: ${JSON.stringify(s)}`);
  return Number(s);
}

/** Progress on stderr for long work, only when stderr is a terminal: which process and stage, bytes done and total. */
function progress(enabled: boolean) {
  if (!enabled || !process.stderr.isTTY) return undefined;
  let last = 0;
  return ({ stage, pid, done, total }: ProgressEvent) => {
    const now = Date.now();
    if (now - last < 100 && done < total) return;
    last = now;
    const pct = total ? Math.floor((done / total) * 100) : 100;
    process.stderr.write(
      `\r${pid ? `pid ${pid} ` : ''}${stage}: ${(done / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB (${pct}%)   ${done >= total ? '\n' : ''}`,
    );
  };
}

program
  .command('run')
  .description('start a program detached in its own session, stdio to files, and print its PID')
  .option('--stdin <file>', 'stdin (default /dev/null)', '/dev/null')
  .option('--stdout <file>', 'stdout file (default: a log file in the temp directory)')
  .option('--stderr <file>', 'stderr file (default: the stdout file)')
  .option('--cwd <dir>', 'working directory')
  .option('--no-namespace', 'start it directly, without its own pid and IPC namespaces (its pids must be free to restore)')
  .option('--checkpoint-every <duration>', 'checkpoint the application on this schedule (30s, 10m, 2h) into -D, with --leave-running')
  .option('-D, --images-dir <dir>', 'with --checkpoint-every: the image directory (each checkpoint a new generation)')
  .option('--keep <n>', 'with --checkpoint-every: generations to keep (default 3)', parseCount)
  .option(
    '--checkpoint-signal <sig>',
    "with --checkpoint-every: this signal sent to the application's ckpt-init asks for a checkpoint now instead of reaching the program (USR1, RTMIN+2...: a batch system's warning before preemption)",
  )
  .option('--json', 'print {"pid", "app", "stdout", "stderr"} as JSON')
  .argument('<command...>', 'the program and its arguments (after --)')
  .action(
    async (
      command: string[],
      o: {
        stdin: string;
        stdout?: string;
        stderr?: string;
        cwd?: string;
        namespace: boolean;
        json?: boolean;
        checkpointEvery?: string;
        imagesDir?: string;
        keep?: number;
        checkpointSignal?: string;
      },
    ) => {
      const everyMs = o.checkpointEvery === undefined ? undefined : parseInterval(o.checkpointEvery);
      const requestSignal = o.checkpointSignal === undefined ? undefined : parseSignal(o.checkpointSignal);
      if (requestSignal !== undefined && everyMs === undefined) throw new CkptError('ERR_CKPT_USAGE', '--checkpoint-signal goes with --checkpoint-every');
      if (everyMs !== undefined && !o.imagesDir) throw new CkptError('ERR_CKPT_USAGE', '--checkpoint-every needs -D DIR, the image directory');
      if (everyMs !== undefined && !o.namespace)
        throw new CkptError('ERR_CKPT_USAGE', '--checkpoint-every checkpoints an application: not with --no-namespace');
      if (everyMs === undefined && (o.imagesDir || o.keep !== undefined)) throw new CkptError('ERR_CKPT_USAGE', '-D and --keep go with --checkpoint-every');
      let outPath = o.stdout ? resolve(o.stdout) : undefined;
      const tmpLog = outPath === undefined;
      if (!outPath) outPath = join(runDir(), `starting-${process.pid}-${Date.now()}.log`);
      const inFd = openStdio(resolve(o.stdin), 'r', '--stdin');
      const outFd = openStdio(outPath, 'a', '--stdout');
      const errPath = o.stderr ? resolve(o.stderr) : outPath;
      const errFd = o.stderr ? openStdio(errPath, 'a', '--stderr') : outFd;
      let pid: number;
      let app: AppEntry | undefined;
      try {
        const exe = resolveProgram(command[0]);
        const env = environ();
        const cwd = o.cwd ? resolve(o.cwd) : null;
        if (o.namespace) {
          // ckpt-init is pid 1 of a new pid (and IPC) namespace; the program is its child.
          const init = native.proc.spawnDetached(
            initPath,
            [
              initPath,
              ...(requestSignal !== undefined
                ? [
                    '--request-signal',
                    String(requestSignal),
                    '--request-file',
                    requestFile(`${process.pid}-${Date.now()}-${Math.random().toString(16).slice(2, 8)}`),
                  ]
                : []),
              '--',
              exe,
              ...command.slice(1),
            ],
            env,
            cwd,
            [inFd, outFd, errFd],
            CLONE_NEWPID | CLONE_NEWIPC,
          );
          let main: number | undefined;
          for (let i = 0; i < 200 && !(main = mainOf(init)); i++) await new Promise((r) => setTimeout(r, 5));
          if (!main) throw new Error('the application did not start');
          pid = main;
          app = registerApp({ id: newAppId(command), init, pid: main, command });
          if (everyMs !== undefined) app = startCheckpointer(app, { everyMs, dir: o.imagesDir!, keep: o.keep ?? 3 });
        } else {
          pid = native.proc.spawnDetached(exe, command, env, cwd, [inFd, outFd, errFd]);
        }
      } catch (e) {
        throw new CkptError('ERR_CKPT_USAGE', `cannot start ${command[0]}: ${(e as Error).message}`);
      }
      for (const fd of new Set([inFd, outFd, errFd])) closeSync(fd);
      if (tmpLog) {
        const final = join(runDir(), `${pid}.log`);
        renameSync(outPath, final);
        outPath = final;
      }
      const stderrPath = o.stderr ? errPath : outPath;
      const cp = app?.checkpointer;
      if (o.json)
        console.log(
          JSON.stringify({ pid, ...(app ? { app: app.id, init: app.init } : {}), ...(cp ? { checkpointer: cp } : {}), stdout: outPath, stderr: stderrPath }),
        );
      else {
        console.log(pid);
        if (app) console.error(`ckpt: application ${app.id} (pid ${pid}, in its own pid namespace)`);
        if (cp) console.error(`ckpt: checkpointed every ${o.checkpointEvery} into ${cp.dir} by pid ${cp.pid} (log ${cp.log})`);
        if (tmpLog) console.error(`ckpt: output of ${pid} goes to ${outPath}`);
      }
    },
  );

program
  .command('checkpoint')
  .description('checkpoint an application started with ckpt run --checkpoint-every now, by its checkpointer, and wait for the generation')
  .requiredOption('-a, --app <id>', 'the application')
  .option('--json', 'print {"app", "generation", "dir"} as JSON')
  .action(async (o: { app: string; json?: boolean }) => {
    const r = await checkpointNow(o.app);
    if (o.json) console.log(JSON.stringify({ app: o.app, ...r }));
    else console.log(`checkpointed application ${o.app}: generation ${r.generation} of ${r.dir}`);
  });

program
  .command('checkpointer', { hidden: true })
  .requiredOption('--app <id>')
  .requiredOption('-D, --images-dir <dir>')
  .requiredOption('--every-ms <ms>')
  .requiredOption('--keep <n>')
  .action(async (o: { app: string; imagesDir: string; everyMs: string; keep: string }) => {
    await runCheckpointer(await ckpt(), { app: o.app, dir: o.imagesDir, everyMs: Number(o.everyMs), keep: Number(o.keep) });
  });

/**
 * `ckpt dump` and `ckpt pre-dump`: a pre-dump is a dump that leaves the processes running and
 * tracks the memory they write after it (--track-mem), so that the final dump (--parent) freezes
 * them only to copy what changed since. Its image is whole: it restores like any other.
 */
function dumpCommand(name: 'dump' | 'pre-dump', description: string): void {
  const cmd = program
    .command(name)
    .description(description)
    .option('-t, --tree <pid>', 'the process to checkpoint, with all its descendants (a process of an application started by ckpt run: the whole application)')
    .option('-a, --app <id>', 'the application (as ckpt run printed its id) to checkpoint')
    .option('-D, --images-dir <dir>', 'image directory (created if missing)')
    .option(
      '--page-server <address:port>',
      "write the image to this page server (ckpt page-server, on a host that trusts this one's key) instead of -D: nothing of it is written on this host",
    );
  if (name === 'dump') cmd.option('-R, --leave-running', 'let the process continue after the dump');
  cmd
    .option(
      '--parent <dir>',
      'an earlier image of the same process (a directory: its latest generation): save only the memory written since it (it must have been dumped with --track-mem, or be a pre-dump); the image then needs it at restore',
    )
    .option('--sync', 'fsync the image before completing it (survives power loss; slower)')
    .option('--keep <n>', 'generations to keep in the image directory, the new one included (and the ones they add to)', parseCount, 1)
    .option('--follow-symlinks', 'write through an image directory that is a symbolic link')
    .option('--json', 'print the result as JSON')
    .option('--no-progress', 'no progress display')
    .action(
      async (
        o: {
          tree?: string;
          app?: string;
          imagesDir?: string;
          pageServer?: string;
          leaveRunning?: boolean;
          parent?: string;
          sync?: boolean;
          keep: number;
          followSymlinks?: boolean;
          json?: boolean;
          progress: boolean;
        } & Record<string, unknown>,
      ) => {
        if (!o.tree === !o.app) throw new CkptError('ERR_CKPT_USAGE', 'give the process to checkpoint: -t PID or --app ID (one of them)');
        if (!o.imagesDir === !o.pageServer)
          throw new CkptError('ERR_CKPT_USAGE', 'give where the image goes: -D DIR or --page-server ADDRESS:PORT (one of them)');
        const { pid, app } = o.app ? dumpTarget({ app: o.app }) : dumpTarget({ pid: parsePid(o.tree!) });
        const c = await ckpt();
        if (name === 'pre-dump') {
          if (!Object.keys(trackMemOptions(c)).length) {
            throw new CkptError('ERR_CKPT_USAGE', 'ckpt pre-dump needs a plugin that tracks memory (--track-mem): the memory plugin is not loaded');
          }
          o.trackMem = true;
          o.leaveRunning = true;
        }
        const r = await c.dump({
          pid,
          app,
          dir: o.imagesDir ?? '',
          pageServer: o.pageServer,
          leaveRunning: o.leaveRunning,
          parent: o.parent,
          sync: o.sync,
          keep: o.keep,
          followSymlinks: o.followSymlinks,
          plugins: pluginRunOptions(c, 'dump', o),
          signal: interruptible(),
          onProgress: progress(o.progress && !o.json),
        });
        if (o.json) console.log(JSON.stringify(r));
        else {
          const inc = r.stats.parent && !String(r.stats.parent).endsWith('a full image)') ? `, adding to ${r.stats.parent}` : '';
          console.log(
            `${name === 'pre-dump' ? 'pre-dumped' : 'dumped'} pid ${r.pids.join(', ')} to ${r.dir} (generation ${r.generation}${inc}): ${(r.imageBytes / 1e6).toFixed(1)} MB in ${r.ms.toFixed(0)} ms${r.leftRunning ? ' (left running)' : ''}`,
          );
        }
      },
    );
}

dumpCommand('dump', 'checkpoint a process into an image directory (the process is killed unless --leave-running)');
dumpCommand(
  'pre-dump',
  'copy the memory of a running process into an image and track what it writes next, leaving it running: a later `dump --parent` then copies only the changes (the pre-dump image restores on its own too)',
);

program
  .command('restore')
  .description('restore the processes of an image, with their PIDs')
  .requiredOption('-D, --images-dir <dir>', 'image directory')
  .option('-g, --generation <n>', 'the generation to restore (default: the latest complete one; ckpt show lists them)', parseCount)
  .option('-d, --detach', 'return once restored; the process is reparented to init')
  .option(
    '-s, --substitute <ID=FD|ID=PATH...>',
    'use fd FD of ckpt restore, or file PATH, instead of the open file ID (see ckpt show --files); repeatable',
    collect,
    [],
  )
  .option(
    '--inherit-fd <FD:RESOURCE...>',
    'give the restored processes fd FD of ckpt restore wherever they had RESOURCE (a name of ckpt show --files, e.g. pipe:[12345] whose other end was outside the tree); repeatable',
    collect,
    [],
  )
  .option('--relocate <OLD=NEW...>', 'paths under OLD (files, mappings, watches, socket paths) are opened under NEW; repeatable', collect, [])
  .option('--trust-key <file>', "trust this public key (another host's `ckpt key` output) for this restore only; repeatable", repeat, [])
  .option(
    '--checkpoint-every <duration>',
    'an application: checkpoint it again on this schedule (30s, 10m, 2h) into the same -D, as ckpt run --checkpoint-every',
  )
  .option('--keep <n>', 'with --checkpoint-every: generations to keep (default 3)', parseCount)
  .option('--json', 'print the result as JSON')
  .option('--no-progress', 'no progress display')
  .action(
    async (
      o: {
        imagesDir: string;
        generation?: number;
        detach?: boolean;
        checkpointEvery?: string;
        keep?: number;
        substitute: string[];
        inheritFd: string[];
        relocate: string[];
        trustKey: string[];
        json?: boolean;
        progress: boolean;
      } & Record<string, unknown>,
    ) => {
      // notServed lets only -d restores reach ckpt server: the root is then the command's child.
      if (run.parent !== undefined && !o.detach)
        throw new CkptError('ERR_CKPT_USAGE', 'ckpt server restores only with -d', { hint: 'CKPT_SERVER=off runs the restore in its own process' });
      const trustKeys = o.trustKey.map(keyFile);
      const everyMs = o.checkpointEvery === undefined ? undefined : parseInterval(o.checkpointEvery);
      if (everyMs === undefined && o.keep !== undefined) throw new CkptError('ERR_CKPT_USAGE', '--keep goes with --checkpoint-every');
      if (everyMs !== undefined) checkpointable(o.imagesDir, o.generation);
      const c = await ckpt();
      const r = await c.restore({
        trustKeys,
        dir: o.imagesDir,
        generation: o.generation,
        detach: o.detach,
        parent: run.parent,
        substitute: parseSubstitutes(o.substitute),
        inheritFds: parseInheritFds(o.inheritFd),
        relocate: parsePairs(o.relocate, '--relocate'),
        plugins: pluginRunOptions(c, 'restore', o),
        signal: interruptible(),
        onProgress: progress(o.progress && !o.json),
      });
      const { main, ordered, app } = registerRestored(r);
      const appId = app && (everyMs !== undefined ? startCheckpointer(app, { everyMs, dir: o.imagesDir, keep: o.keep ?? 3 }) : app).id;
      if (o.json) console.log(JSON.stringify({ ...r, pids: ordered, main, ...(appId ? { app: appId, init: r.pids[0] } : {}) }));
      else if (o.detach) console.log([main, ...r.pids.filter((p) => p !== main && p !== (appId ? r.pids[0] : -1))].join('\n'));
      else console.error(`ckpt: restored pid ${r.pids.join(', ')} in ${r.ms.toFixed(0)} ms; waiting for it to exit`);
      if (appId && !o.json) console.error(`ckpt: application ${appId} (pid ${main})`);
      const lazyBytes = Number(r.stats['memory.lazyBytes'] ?? 0);
      if (lazyBytes && !o.json)
        console.error(`ckpt: restored lazily: ${(lazyBytes / 1e6).toFixed(1)} MB come in behind it (ckpt-lazy pid ${r.stats['memory.lazyDaemon']})`);
      if (!o.detach) process.exitCode = await waitForExit(r.nsInit ?? r.pids[0]);
    },
  );

program
  .command('migrate')
  .description(
    'move a running process tree (or an application) to another host over SSH: copied while it runs, frozen for the last changes, restored there, and killed here only once it runs there; on any failure it runs on here',
  )
  .option('-t, --tree <pid>', 'the process to migrate, with all its descendants')
  .option('-a, --app <id>', 'the application (ckpt run) to migrate')
  .requiredOption('--to <host>', 'the destination, as ssh names it (user@host, an alias of your ssh config)')
  .option('--ssh <command>', 'the ssh command and its options, split at spaces (default: $CKPT_SSH, else ssh)')
  .option('--remote-ckpt <command>', 'ckpt on the destination, split at spaces (default: $CKPT_REMOTE, else ckpt)')
  .option('--rounds <n>', 'pre-copy rounds at most, while the process runs (0: copy everything frozen)', parseCountOrZero, 8)
  .option('--lazy', 'restore lazily on the destination: the process runs before all its memory is back (restore --lazy)')
  .option('--remote-dir <dir>', 'keep the image on the destination in this (empty) directory; by default it is removed after the migration')
  .option(
    '--no-direct',
    'send the images over the SSH channel itself, not over a TCP connection of their own to the destination (sealed with a key agreed on through SSH: AES-256-GCM)',
  )
  .option(
    '--move-address <ADDR[/PREFIX][@DEV]...>',
    "a service address to move with the processes: taken off this host's interface while they are frozen, put on the destination's (DEV, else the one on its subnet) and announced there; their TCP connections on it go on. Repeatable",
    collect,
    [],
  )
  .option('--json', 'print the result as JSON')
  .action(
    async (o: {
      tree?: string;
      app?: string;
      to: string;
      ssh?: string;
      remoteCkpt?: string;
      rounds: number;
      lazy?: boolean;
      remoteDir?: string;
      direct: boolean;
      moveAddress: string[];
      json?: boolean;
    }) => {
      const specs = o.moveAddress.map(parseAddress);
      if (!o.tree === !o.app) throw new CkptError('ERR_CKPT_USAGE', 'give the process to migrate: -t PID or --app ID (one of them)');
      const { pid, app } = o.app ? dumpTarget({ app: o.app }) : dumpTarget({ pid: parsePid(o.tree!) });
      const words = (s: string) => s.split(/\s+/).filter(Boolean);
      const c = await ckpt();
      const r = await migrate(c, {
        pid,
        app,
        host: o.to,
        ssh: words(o.ssh ?? process.env.CKPT_SSH ?? 'ssh'),
        remote: words(o.remoteCkpt ?? process.env.CKPT_REMOTE ?? 'ckpt'),
        maxRounds: o.rounds,
        lazy: o.lazy,
        direct: o.direct,
        remoteDir: o.remoteDir,
        addresses: specs.map((a) => ownAddress({ ...a, dev: undefined })),
        addressDevs: Object.fromEntries(specs.filter((a) => a.dev).map((a) => [a.addr, a.dev!])),
        dumpPlugins: {},
        restorePlugins: {},
        track: trackMemOptions(c),
        signal: interruptible(),
        say: o.json ? undefined : (line) => process.stderr.write(`ckpt: ${line}\n`),
      });
      if (o.json) console.log(JSON.stringify(r));
      else
        console.log(
          `migrated pid ${r.from.join(', ')} to ${r.host} (pid ${r.pids.join(', ')}${r.app ? `, application ${r.app}` : ''}): ${r.rounds.length} round${r.rounds.length > 1 ? 's' : ''}, ${(r.bytesSent / 1e6).toFixed(1)} MB sent, down ${r.downtimeMs.toFixed(0)} ms${r.lazy ? ' (restored lazily)' : ''}`,
        );
    },
  );

program
  .command('page-server')
  .description(
    'receive the images that dumps on other hosts write here (ckpt dump --page-server), each a new generation of -D once its signature and every digest check out; only hosts whose key this one trusts (ckpt trust) are answered',
  )
  .requiredOption('--listen <address:port>', 'where to listen (port 0: any free port, printed)')
  .requiredOption('-D, --images-dir <dir>', 'the image directory the images go to')
  .option('--keep <n>', 'generations to keep in it (default 3)', parseCount, 3)
  .option('--once', 'exit after the first image')
  .option('--json', 'print {"listening", "port"} as JSON once listening')
  .action(async (o: { listen: string; imagesDir: string; keep: number; once?: boolean; json?: boolean }) => {
    await pageServer({
      listen: o.listen,
      dir: o.imagesDir,
      keep: o.keep,
      once: o.once,
      say: (line) => process.stderr.write(`ckpt page-server: ${line}\n`),
      listening: (port) => {
        if (o.json) console.log(JSON.stringify({ listening: o.listen.replace(/:\d+$/, `:${port}`), port }));
        else process.stderr.write(`ckpt page-server: listening on ${o.listen.replace(/:\d+$/, `:${port}`)}, images into ${resolve(o.imagesDir)}\n`);
      },
    });
  });

program
  .command('server')
  .description(
    "run the dumps of this host's ckpt commands (dump, pre-dump) in this one resident process, so that they pay neither Node's loading of ckpt nor its cold code; a command it cannot run exactly as its own process would runs in its own process as ever. Stops on SIGTERM or SIGINT, after the command running",
  )
  .option('--socket <path>', 'where to listen (default: /run/ckpt/ckpt.sock; commands find it there, or at $CKPT_SERVER_SOCKET)')
  .option('--idle-exit <duration>', 'exit after this long without a command (30s, 10m, 2h)')
  .action(async (o: { socket?: string; idleExit?: string }) => {
    withServerNodeFlags();
    await serve({
      socket: resolve(o.socket ?? process.env.CKPT_SERVER_SOCKET ?? SERVER_SOCKET),
      idleExitMs: o.idleExit === undefined ? undefined : parseInterval(o.idleExit, '--idle-exit', 'at least 1s'),
      bundle: join(__dirname, 'cli.cjs'),
      main,
      // Straight to fd 2 (process.stderr is a served command's while it runs); a log that cannot
      // be written does not stop the server.
      say: (line) => {
        try {
          writeSync(2, `${new Date().toISOString()} ckpt server: ${line}\n`);
        } catch {}
      },
    });
  });

program
  .command('receive', { hidden: true })
  .description('the destination side of ckpt migrate, on stdin and stdout (run by migrate over ssh)')
  .option('-D, --images-dir <dir>', 'keep the image in this empty directory (default: a temporary one, removed at the end)')
  .action(async (o: { imagesDir?: string }) => {
    const c = await ckpt();
    process.exitCode = await receive(c, { dir: o.imagesDir, lazyOptions: flagOptions(c, 'restore', '--lazy') });
  });

program
  .command('apps')
  .description('list the applications started with ckpt run (or restored) that are running')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const apps = listApps();
    if (o.json) console.log(JSON.stringify(apps));
    else if (!apps.length) console.log('no applications running');
    else
      for (const a of apps) {
        const cp =
          a.checkpointer && checkpointerAlive(a.checkpointer) ? `  [checkpointed every ${a.checkpointer.everyMs / 1000}s into ${a.checkpointer.dir}]` : '';
        console.log(`${a.id.padEnd(28)} pid ${String(a.pid).padEnd(8)} init ${String(a.init).padEnd(8)} ${a.command.join(' ')}${cp}`);
      }
  });

program
  .command('show')
  .description('describe what an image holds')
  .argument('<dir>', 'image directory')
  .option('--json', 'machine-readable output')
  .option('--verify', 'also verify the checksum of every bulk file')
  .option('--files', 'list the open files, one line per open description: type|id|name|pid:fd,...')
  .option('-g, --generation <n>', 'the generation to describe (default: the latest complete one)', parseCount)
  .action(async (dir: string, o: { json?: boolean; verify?: boolean; files?: boolean; generation?: number }) => {
    console.log(showImage(await ckpt(), dir, o));
  });

const image = program.command('image').description('work on image directories');
image
  .command('compact')
  .description(
    'make an incremental image whole: a new generation of its directory that holds every page itself and needs no other image (the chain stays unless --keep removes it)',
  )
  .requiredOption('-D, --images-dir <dir>', 'image directory')
  .option('-g, --generation <n>', 'the generation to make whole (default: the latest complete one)', parseCount)
  .option('--keep <n>', 'generations to keep after, the new one included (and those kept ones add to); default: all', parseCount)
  .option('--json', 'print the result as JSON')
  .option('--no-progress', 'no progress display')
  .action(async (o: { imagesDir: string; generation?: number; keep?: number; json?: boolean; progress: boolean }) => {
    const c = await ckpt();
    const r = await c.compact({ dir: o.imagesDir, generation: o.generation, keep: o.keep, onProgress: progress(o.progress && !o.json) });
    if (o.json) console.log(JSON.stringify(r));
    else
      console.log(
        `${r.from}${r.chain ? ` (and the ${r.chain} image${r.chain > 1 ? 's' : ''} it adds to)` : ''} made whole as generation ${r.generation} of ${r.dir}: ${(r.imageBytes / 1e6).toFixed(1)} MB in ${r.ms.toFixed(0)} ms`,
      );
  });

program
  .command('key')
  .description("print this host's public key, which signs the images it dumps (created on first use); the fingerprint goes to stderr")
  .option('--json', 'print {"fingerprint", "publicKey", "dir"} as JSON')
  .action((o: { json?: boolean }) => {
    const store = new KeyStore();
    const key = store.hostKey()!;
    const pem = publicKeyPem(key.raw);
    if (o.json) console.log(JSON.stringify({ fingerprint: key.fingerprint, algorithm: 'ed25519', publicKey: pem, dir: store.dir }));
    else {
      process.stdout.write(pem);
      console.error(`ckpt: ${key.fingerprint} (ed25519), this host's key (${store.hostKeyPath})`);
      if (process.stdout.isTTY) console.error('ckpt: on another host, `ckpt trust FILE` with this key in FILE lets it restore the images of this one');
    }
  });

program
  .command('trust')
  .description("trust another host's key: restore accepts the images it signed (KEYFILE: that host's `ckpt key` output, - for stdin)")
  .argument('[keyfile]', 'the public key file to trust')
  .option('--list', "list this host's key and the trusted keys")
  .option('--remove <fingerprint>', 'stop trusting the key with this fingerprint')
  .option('--json', 'machine-readable output')
  .action((file: string | undefined, o: { list?: boolean; remove?: string; json?: boolean }) => {
    if ([file !== undefined, !!o.list, o.remove !== undefined].filter(Boolean).length !== 1) {
      throw new CkptError('ERR_CKPT_USAGE', 'give one of: a KEYFILE to trust, --list, or --remove FINGERPRINT');
    }
    const store = new KeyStore();
    if (o.list) {
      const host = store.hostKey({ create: false });
      const rows = [
        ...(host ? [{ fingerprint: host.fingerprint, path: store.hostKeyPath, host: true }] : []),
        ...store.trusted().map((t) => ({ fingerprint: t.fingerprint, path: t.path, host: false })),
      ];
      if (o.json) console.log(JSON.stringify(rows, null, 1));
      else if (!rows.length) console.log(`no keys in ${store.dir} (the first dump creates this host's)`);
      else for (const r of rows) console.log(`${r.fingerprint}  ${r.host ? "this host's key" : r.path}`);
      return;
    }
    if (o.remove !== undefined) {
      const removed = store.untrust(o.remove);
      if (o.json) console.log(JSON.stringify({ removed }));
      else for (const p of removed) console.log(`removed ${p}`);
      return;
    }
    const r = store.trust(keyFile(file!));
    if (o.json) console.log(JSON.stringify(r));
    else if (r.host) console.log(`${r.fingerprint} is this host's own key (always trusted)`);
    else console.log(`${r.added ? 'trusted' : 'already trusted'}: ${r.fingerprint} (${r.path})`);
  });

program
  .command('plugins')
  .description('list the loaded plugins: version, state classes, fd kinds and options each claims')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }) => {
    const rows = (await ckpt()).plugins.map((p) => ({
      name: p.name,
      version: p.version ?? '',
      description: p.description ?? '',
      stateClasses: p.claims?.stateClasses ?? [],
      fdKinds: p.claims?.fdKinds ?? [],
      flags: (p.flags ?? []).map((f) => ({ command: f.command, flags: f.flags, option: f.option })),
      record: p.record?.version,
    }));
    if (o.json) return console.log(JSON.stringify(rows, null, 1));
    for (const r of rows) {
      console.log(`${r.name} ${r.version}${r.description ? ` — ${r.description}` : ''}`);
      if (r.stateClasses.length) console.log(`  state classes: ${r.stateClasses.join(', ')}`);
      if (r.fdKinds.length) console.log(`  fd kinds: ${r.fdKinds.join(', ')}`);
      for (const f of r.flags) console.log(`  ckpt ${f.command} ${f.flags}  (option ${f.option})`);
    }
  });

program
  .command('check')
  .description('report which kernel features ckpt relies on are present, and what killed dumps left (network locks, staging directories, guard mappings)')
  .option('--json', 'machine-readable output')
  .option('--repair', 'remove what killed dumps left: network locks whose owner is gone, staging directories, guard mappings in processes')
  .action(async (o: { json?: boolean; repair?: boolean }) => {
    // Any stale lock blocks a live connection: reported, and removed with --repair.
    const staleLocks = new NftNetworkLocks().sweep({ dryRun: !o.repair });
    const dead = deadDumps({ dryRun: !o.repair });
    const staleGuards = staleGuardMappings({ repair: o.repair });
    // The dumps' server (ckpt server), if any: a dead one's socket is removed with --repair.
    const socket = resolve(process.env.CKPT_SERVER_SOCKET || SERVER_SOCKET);
    const srv = await serverStatus(socket);
    if (srv === 'stale' && o.repair) rmSync(socket, { force: true });
    const server = srv === undefined ? null : typeof srv === 'string' ? { socket, state: srv } : { socket, state: 'running', ...srv };
    const r = { ...runCheck(), staleLocks, deadDumps: dead, staleGuards, server, repaired: !!o.repair };
    if (o.json) console.log(JSON.stringify(r, null, 1));
    else {
      for (const d of dead) {
        const left = [...d.staging, ...(d.lock ? ['.lock'] : [])].join(', ') || 'nothing';
        console.log(
          `${o.repair ? 'fixed' : 'warn'}  a dump into ${d.dir} by ckpt pid ${d.pid} died, leaving ${left}${o.repair ? ': removed' : ': ckpt check --repair removes it'}`,
        );
      }
      for (const g of staleGuards) {
        console.log(
          `${o.repair ? 'fixed' : 'warn'}  pid ${g.pid} (${g.comm}) holds a ${g.size >> 10} KiB guard mapping at 0x${g.addr.toString(16)} a killed dump left${o.repair ? ': removed' : ': ckpt check --repair removes it (so does its next dump)'}`,
        );
      }
      for (const s of staleLocks) {
        console.log(
          `${o.repair ? 'fixed' : 'warn'}  a network lock of ${s.owner} (gone) blocks ${s.connections} TCP connection(s)${o.repair ? ': removed' : ': ckpt check --repair removes it'}`,
        );
      }
      if (srv === 'stale') {
        console.log(
          `${o.repair ? 'fixed' : 'warn'}  ${socket} is the socket of a ckpt server that died${o.repair ? ': removed' : ' (commands run in their own process): ckpt check --repair removes it'}`,
        );
      } else if (srv === 'unresponsive') console.log(`warn  the ckpt server on ${socket} does not answer (commands run in their own process after 10 s)`);
      else if (srv)
        console.log(
          `ok    ckpt server pid ${srv.pid} (${srv.version}) on ${socket} since ${srv.since}: ${srv.served} commands served${srv.busy ? ', one running' : ''}`,
        );
      for (const c of r.checks) console.log(`${c.ok ? 'ok  ' : c.required ? 'FAIL' : 'warn'}  ${c.name}${c.detail ? ` — ${c.detail}` : ''}`);
      console.log(r.ok ? 'all required features present' : 'some required features are missing');
      const c = r.can;
      console.log(
        `as uid ${c.uid}: dump --leave-running ${c.dumpLeaveRunning ? 'yes (your own processes; others need CAP_SYS_PTRACE)' : 'no'}; ` +
          `dump (kills) ${c.dump ? 'yes' : 'no: it would be refused, you could not restore'}; restore ${c.restore ? 'yes' : 'no (needs root or CAP_CHECKPOINT_RESTORE)'}`,
      );
    }
    if (!r.ok) process.exitCode = 1;
  });

/** Finds a program like execvp does: a path as is, a bare name along $PATH. */
function resolveProgram(name: string): string {
  const ok = (p: string) => {
    try {
      accessSync(p, FS.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (name.includes('/')) {
    if (!ok(name)) throw new Error(`${name}: not an executable file`);
    return resolve(name);
  }
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = join(dir || '.', name);
    if (ok(p)) return resolve(p);
  }
  throw new Error(`${name}: no such program in PATH`);
}

/** Waits for a restored child to exit; forwards SIGINT/SIGTERM to it; returns a shell-style status. */
async function waitForExit(pid: number): Promise<number> {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.removeAllListeners(sig);
    process.on(sig, () => process.kill(pid, sig));
  }
  for (;;) {
    const st = native.proc.tryWait(pid);
    if (st && (st.kind === 'exited' || st.kind === 'killed')) return st.kind === 'exited' ? st.code! : 128 + st.signal!;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Verbs whose options or output depend on the loaded plugins. */
const PLUGIN_VERBS = new Set(['dump', 'pre-dump', 'restore', 'show', 'plugins', 'help']);

/**
 * One run of the command: its arguments (after `ckpt`); for a client of `ckpt server`
 * (server.ts), the server's Ckpt and the client's stop.
 */
export interface Invocation {
  argv: string[];
  makeCkpt?: (o: CreateOptions) => Promise<Ckpt>;
  signal?: AbortSignal;
  /** The command's process, when it is not this one: a restore's root becomes its child. */
  parent?: number;
}
let run: Invocation = { argv: process.argv.slice(2) };

/**
 * Runs the command line; errors are printed (one line, a hint) and set the exit code, never thrown.
 * Runs again in the same process for each client of `ckpt server` (commander parses anew).
 */
export async function main(given?: Invocation): Promise<void> {
  if (given) {
    run = given;
    instance = undefined;
  }
  try {
    const args = run.argv;
    if (args.some((a) => PLUGIN_VERBS.has(a)) || args.includes('--help') || args.includes('-h')) addPluginFlags((await ckpt()).plugins);
    await program.parseAsync(args, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      // No action ran: for bin.ts, the command the line named (its code cache), if it names one.
      // Help (ckpt help, ckpt --help, ckpt dump --help) is one command, whichever way asked.
      const named = verbOf(run.argv);
      const top = program.commands.find((c) => c.name() === named);
      const help = e.code === 'commander.help' || e.code === 'commander.helpDisplayed';
      (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.command')] = help ? 'help' : (top?.name() ?? 'main');
      return;
    }
    const err = e as Error & { code?: string; hint?: string };
    // --json: the error is JSON on stdout too, for programs; people read stderr.
    if (run.argv.includes('--json')) {
      process.stdout.write(
        `${JSON.stringify({ error: { code: err.code ?? 'ERR_CKPT_INTERNAL', message: err.message, ...(err.hint ? { hint: err.hint } : {}) } })}\n`,
      );
    }
    process.stderr.write(`ckpt: error: ${err.message}\n`);
    if (err.hint) process.stderr.write(`ckpt: hint: ${err.hint}\n`);
    // The stack is for whoever debugs: on stderr when DEBUG was set by the user, in the log file
    // with --log-file; never for -v alone.
    const logFile = (program.opts() as { logFile?: string }).logFile;
    if (USER_DEBUG) process.stderr.write(`${err.stack}\n`);
    else if (logFile) appendFileSync(resolve(logFile), `${err.stack}\n`);
    process.exitCode = 1;
  }
}
