/**
 * ckpt-plugin-signal-marker: tells the processes a checkpoint is coming, and leaves a mark once
 * they run again.
 *
 *   session.beforeDump:  sends `signal` (default SIGUSR2) to the dumped process and each of its
 *                        descendants, then waits `waitMs` so that their handlers run (flush a
 *                        buffer, write a log line) before the freeze. Nothing is frozen yet here,
 *                        and session.processes is still empty: the tree is read from /proc.
 *   session.afterResume: writes a marker file per restored process (`marker`, a path in which
 *                        {pid} is replaced by the restored pid), holding that pid.
 */
import { constants } from 'node:os';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin, procfs } from '@ckpt/core';

const NAME = 'ckpt-plugin-signal-marker';

const options = z.strictObject({
  signal: z
    .string()
    .refine((s) => s in constants.signals, 'not a signal name (e.g. SIGUSR2)')
    .default('SIGUSR2'),
  waitMs: z.number().int().min(0).max(60_000).default(200),
  marker: z.string().min(1).default(join(tmpdir(), 'ckpt-restored-{pid}')),
});

export default definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'signals the processes before a dump; writes a marker file after a restore',
  options,
  flags: [
    { command: 'dump', flags: '--mark-signal <name>', description: 'signal sent before the dump (e.g. SIGUSR1)', option: 'signal' },
    { command: 'restore', flags: '--marker <path>', description: 'marker file written after the restore ({pid}: the pid)', option: 'marker' },
  ],

  apply(hooks, ctx) {
    hooks.session.beforeDump.tapPromise(NAME, async (session) => {
      const { signal, waitMs } = ctx.options(session);
      for (const { pid, state } of procfs.processTree(session.options.pid)) {
        if (state === 'Z') continue;
        ctx.log('sending %s to %d', signal, pid);
        process.kill(pid, signal);
      }
      await new Promise((r) => setTimeout(r, waitMs));
    });

    hooks.session.afterResume.tapPromise(NAME, async (session) => {
      const { marker } = ctx.options(session);
      for (const proc of session.processes) {
        const pid = proc.stub?.pid ?? proc.pid;
        const file = marker.replaceAll('{pid}', String(pid));
        writeFileSync(file, `${pid}\n`);
        ctx.log('marker %s written', file);
      }
    });
  },
}));
