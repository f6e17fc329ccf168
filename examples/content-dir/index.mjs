/**
 * ckpt-plugin-content-dir: regular files opened under one directory (option `dir`) are saved
 * with their bytes in the image, and written back before the process gets them again.
 *
 *   dump:    fds.dump, default stage: user plugins are applied before the built-ins, so this tap
 *            sees every fd before theirs. A regular file under `dir` is claimed: its bytes go into
 *            a blob of the image, and its path, flags, offset and mode into the fd record.
 *   restore: fds.restore.for(NAME), once per open file description: the blob is read back
 *            (checksum verified), the file written over, and opened with the saved flags and
 *            offset; core installs the fd at its number in every process that held it.
 */
import { resolve, sep } from 'node:path';
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { STAGE, createSessionState, definePlugin, readThroughFd, remoteOpen } from '@ckpt/core';

const NAME = 'ckpt-plugin-content-dir';
const O_CLOEXEC = 0o2000000;

const options = z.strictObject({
  /** The directory whose open files are saved by content. */
  dir: z.string().min(1),
});

/** The data of each fd this plugin claims (core checks it when the image is read back). */
const fdData = z.strictObject({
  path: z.string(),
  flags: z.number().int(),
  pos: z.number().int().nonnegative(),
  mode: z.number().int().min(0).max(0o7777),
  blob: z.string().regex(/^[A-Za-z0-9._-]+$/),
});

/** Files already written back in this restore (two descriptions of one file: written once). */
const writtenBack = createSessionState(`${NAME}:written`, (_session) => new Set());

function isUnder(path, dir) {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

export default definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'regular files opened under a directory (option dir) saved with their content',
  options,
  flags: [{ command: 'dump', flags: '--content-dir <dir>', description: 'save the files open under DIR by content', option: 'dir' }],
  record: { version: 1, fd: fdData },
  claims: { fdKinds: ['file'] },
  show: { fdName: (record) => record.data?.path },

  apply(hooks, ctx) {
    // The tap's name is the claim's owner: it must be the plugin's name (see fds.restore.for below).
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.DEFAULT }, async (req, proc) => {
      if (req.kind !== 'file' || req.link.endsWith(' (deleted)')) return undefined;
      const dir = resolve(ctx.options(proc.session).dir);
      if (!isUnder(req.link, dir)) return undefined;
      const blob = `content-dir-${proc.pid}-${req.fd}.img`;
      proc.session.image.writeBlob(blob, readThroughFd(req));
      ctx.log('pid %d fd %d: %s saved (%d bytes)', proc.pid, req.fd, req.link, req.stat.size);
      return {
        kind: 'file',
        data: { path: req.link, flags: req.info.flags & ~O_CLOEXEC, pos: req.info.pos, mode: req.stat.mode & 0o7777, blob },
      };
    });

    hooks.fds.restore.for(NAME).tapPromise(NAME, async (record, proc) => {
      const { path: saved, flags, pos, mode, blob } = record.data;
      const path = proc.session.relocate(saved);
      const done = writtenBack.of(proc.session);
      if (!done.has(path)) {
        writeFileSync(path, proc.session.image.readBlob(blob), { mode });
        done.add(path);
      }
      return remoteOpen(path, { flags, pos, what: `fd ${record.fd} of pid ${proc.pid}` });
    });
  },
}));
