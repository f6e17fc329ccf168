/**
 * ckpt-plugin-my-plugin — a skeleton to start a ckpt plugin from. It works as it is:
 *
 *   - every regular file whose path is listed in the option `paths` is claimed at dump and
 *     reopened by path at restore, with its flags and offset (an fds.dump / fds.restore pair);
 *   - per process, a small record is written in the `files` state class (after core walked the
 *     fd table) and read back at restore.
 *
 * Rename NAME (and the package), then replace the bodies. docs/plugins.md of ckpt describes
 * every hook, what is valid inside it, and the helpers used here.
 */
import { z } from 'zod';
import { STAGE, createSessionState, definePlugin, remoteOpen } from '@ckpt/core';

/** The plugin's name: the package name. It names your records, your fds' owner and your options. */
const NAME = 'ckpt-plugin-my-plugin';
const O_CLOEXEC = 0o2000000;

// ---- options: any Standard Schema (zod 4, valibot, arktype). Core validates the configured
// options when ckpt starts, and each run's (flags) when a dump or restore starts; read them with
// ctx.options(session). Give every option a default, or ckpt refuses to load without it.
const options = z.strictObject({
  /** Paths of regular files this plugin saves (by reference: path, flags, offset). */
  paths: z.array(z.string()).default([]),
  /** Log more. */
  verbose: z.boolean().default(false),
});

// ---- record schemas: core checks what it reads back from an image before any hook sees it.
// Bump `version` when a change would mislead an older reader of the image.
const processRecord = z.strictObject({ fdCount: z.number().int().nonnegative(), claimed: z.array(z.number().int()) });
const fdData = z.strictObject({ path: z.string(), flags: z.number().int(), pos: z.number().int().nonnegative() });

// ---- typed per-session state: made on first use, dropped (dispose) when the session ends.
const claimedFds = createSessionState(`${NAME}:claimed`, (_session) => new Map(), {
  dispose: (_map) => {
    /* release what the session held (fds, temp files) */
  },
});

export default definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'WHAT IT SAVES AND RESTORES (shown by ckpt plugins)',
  options,
  // CLI flags: `ckpt dump --my-path P` sets option `paths` for one run (list: repeatable).
  flags: [{ command: 'dump', flags: '--my-path <path...>', description: 'save this file by path', option: 'paths', list: true }],
  record: { version: 1, schema: processRecord, fd: fdData },
  claims: { stateClasses: ['files'], fdKinds: ['file'] },
  // How `ckpt show` names the open files this plugin owns, and describes its record.
  show: {
    fdName: (record) => record.data?.path,
    process: (record) => [`my-plugin: ${record.fdCount} fds, claimed ${record.claimed.join(', ') || 'none'}`],
  },

  apply(hooks, ctx) {
    // Tap with the plugin's name: errors then name your plugin, and a claim's owner is the tap's name.

    // Dump, per open file description (the first fd that holds it), in the files stage. Return a
    // claim { kind, data } to own it, or undefined to leave it to the next plugin. The default
    // stage runs before the built-in handlers (user plugins are applied first).
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.DEFAULT }, async (req, proc) => {
      const opts = ctx.options(proc.session);
      if (req.kind !== 'file' || !opts.paths.includes(req.link)) return undefined;
      if (opts.verbose) ctx.log('pid %d fd %d: %s', proc.pid, req.fd, req.link);
      const mine = claimedFds.of(proc.session);
      mine.set(proc.pid, [...(mine.get(proc.pid) ?? []), req.fd]);
      // To save bytes: proc.session.image.writeBlob(`my-plugin-${proc.pid}-${req.fd}.img`, readThroughFd(req)).
      return { kind: 'file', data: { path: req.link, flags: req.info.flags & ~O_CLOEXEC, pos: req.info.pos } };
    });

    // Restore, once per description this plugin owns: return an fd of ours (the restorer's);
    // core installs it at its number in every process that held it, and closes ours later.
    hooks.fds.restore.for(NAME).tapPromise(NAME, async (record, proc) => {
      const { path, flags, pos } = record.data;
      return remoteOpen(proc.session.relocate(path), { flags, pos, what: `fd ${record.fd} of pid ${proc.pid}` });
    });

    // A state class: per process, after core filled proc.fds (start of the files stage).
    hooks.files.dump.tapPromise(NAME, async (proc) => {
      proc.put(NAME, { fdCount: proc.fds.length, claimed: claimedFds.of(proc.session).get(proc.pid) ?? [] });
      // A syscall in the frozen process: proc.tracee.syscall(SYS.getpid) (SYS from @ckpt/native).
    });
    hooks.files.restore.tapPromise(NAME, async (proc) => {
      const record = proc.get(NAME); // validated against `record.schema`
      if (record && ctx.options(proc.session).verbose) ctx.log('pid %d had %d fds', proc.pid, record.fdCount);
      // A syscall in the process being rebuilt: proc.stub.syscall(SYS.getpid).
    });

    // Session hooks: refuse early, or undo on failure.
    hooks.session.beforeDump.tapPromise(NAME, async (_session) => {
      /* nothing frozen yet */
    });
    hooks.session.dumpFailed.tapPromise(NAME, async (_session, _error) => {
      /* undo (errors are only logged) */
    });
  },
}));
