/**
 * @ckpt/plugin-tty — terminals: pseudo-terminals (ptys) and the controlling terminal.
 *
 * Dump (files.dumpFd, asked before the built-in file handler):
 *   - pty slaves (/dev/pts/N, char major 136-143) and pty masters (/dev/ptmx, 5:2; their index
 *     from fdinfo `tty-index`) are claimed: the pty index, the open flags, the terminal settings
 *     (termios, by a remote TCGETS in the process), the window size, the slave node's owner and
 *     mode, and for a master its packet mode, whether its slave is still locked, and the bytes
 *     queued in the pty both ways (read and put back at once, queue.ts). An fd opened on /dev/tty (5:0) is recorded as
 *     a slave fd of the pty it was opened on (TIOCGDEV), when that is a pty. Other character
 *     devices (/dev/null, consoles, a /dev/tty of a console, ...) are left to @ckpt/plugin-files.
 *   - per process whose controlling terminal is a pty (/proc/PID/stat tty_nr; TIOCSCTTY on a
 *     master makes its slave the terminal): which pty, whether the process leads that session, and the terminal's
 *     foreground process group (tpgid). Stored under this plugin's name only for such processes.
 *     A session leader whose controlling terminal is not a pty (a console, a virtual or serial
 *     terminal) is refused.
 *
 * Restore: every pty the image names becomes a new pty pair (open /dev/ptmx, unlock, the saved
 * termios and window size and packet mode). Each saved open description of the master gets that
 * new master; each description of the slave a new open of the new slave (TIOCGPTPEER, same
 * flags); descriptions shared by several fds or processes stay shared (@ckpt/plugin-files). The
 * new slave node gets the saved owner and mode; the queued bytes go back in. The new pty usually
 * has another number: programs that kept the old name (ttyname) in memory keep the old name. Once
 * every fd is in place (session.fdsInstalled) the session leader takes the new slave
 * as controlling terminal again (TIOCSCTTY, run in the process, on its own fd or on one opened
 * for the moment: with the master in the image the terminal lives on without any slave fd), and
 * the foreground process group is restored (TIOCSPGRP). A controlling terminal whose master was
 * outside the image and whose slave no process of the image holds (its only holder, e.g.
 * `script`, was outside) is not restored: the master ckpt would keep goes when ckpt (or its
 * keeper) does, and that hangup would kill the session; the process goes on without one.
 *
 * A pty whose master was not part of the image (the program ran under `script`, ssh, tmux or a
 * terminal emulator, none of them dumped) is restored on a fresh pty whose master ckpt keeps:
 *   - `ckpt restore` (waiting for the process): what the program writes to its terminal is
 *     copied to ckpt's standard output, and when ckpt's standard input is a pipe or a file (not
 *     a terminal: use --tty for that), what comes from it is written to the terminal, i.e. is the
 *     program's keyboard input. When ckpt exits the master is closed: processes still holding the
 *     terminal see a hangup (SIGHUP), as after closing a terminal window.
 *   - `ckpt restore --detach`: the master goes to a small keeper process (`cat`, in its own
 *     session) that appends the terminal's output to $TMPDIR/ckpt-run/PID.tty.log (PID: the
 *     first restored process on that terminal; ckpt prints the path on stderr). The program keeps
 *     its terminal (no hangup) but gets no input; the keeper exits when the last process closes
 *     the terminal.
 * A terminal that had already been hung up at dump time (its master closed) is hung up again.
 *
 * `ckpt restore --tty`: the image's terminal — the controlling terminal of the first process
 * (parents first) that has a pty as controlling terminal, else the pty on fd 0-2 of the first
 * process holding one — is replaced by ckpt restore's own terminal (its stdin, else stdout, else
 * stderr; the restore fails naming this when none is a terminal): every fd that pointed to that
 * pty's slave (or to /dev/tty) gets a new open of ckpt's terminal with the saved flags, the saved
 * termios are applied to it (a program that had put its terminal in raw mode finds it in raw
 * mode; the window size stays the real one, and when it differs from the saved one the
 * foreground group gets a SIGWINCH as after a resize), and:
 *   - a restored session leader takes it as controlling terminal (TIOCSCTTY; when it is already
 *     the controlling terminal of ckpt's own session — the shell's — it is taken over from that
 *     session, which then has no controlling terminal, as with CAP_SYS_ADMIN's steal), and sets
 *     its foreground process group;
 *   - a restored process that was not a session leader (a shell job) is in ckpt's session,
 *     whose controlling terminal this is: its process group becomes the foreground group when it
 *     was the foreground group at dump time.
 * Other ptys of the image (and the master of the replaced pty, if it was in the image) are
 * restored as new pty pairs as above. Without a pty in the image, --tty changes nothing.
 *
 * Files: record.ts (options and record schemas), dev.ts (dev_t decoding), ioctl.ts (terminal
 * ioctls in the process), dump.ts, plan.ts (the restore plan and state), restore.ts (new ptys,
 * their fds, controlling terminals), keeper.ts (the masters ckpt keeps after the restore).
 */
import { definePlugin, STAGE, type FdRecord, type PluginContext } from '@ckpt/core';
import { dumpFd, dumpProcess } from './dump.js';
import { makeAfterRestore } from './keeper.js';
import { startRestore } from './plan.js';
import { NAME, ttyFdData, ttyOptions, ttyProcessRecord, type TtyFdData, type TtyOptions } from './record.js';
import { makeAfterInstall, makeRestoreFd } from './restore.js';

export { NAME, ttyFdData, ttyOptions, ttyProcessRecord, type TtyFdData, type TtyOptions, type TtyProcessRecord } from './record.js';
export { devParts, ptsIndex, PTS_MAJOR_FIRST, PTS_MAJOR_LAST } from './dev.js';

export const ttyPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'ptys recreated as new pairs: termios, window size, packet mode, controlling terminal, foreground group',
  options: ttyOptions,
  flags: [
    {
      command: 'restore' as const,
      flags: '--tty',
      description: "give the restored processes this terminal (ckpt restore's own) as their terminal",
      option: 'terminal',
    },
  ],
  record: { version: 1, schema: ttyProcessRecord, fd: ttyFdData },
  claims: { fdKinds: ['ptmx', 'pts'] },
  show: { fdName: (rec: FdRecord) => (rec.data as TtyFdData | undefined)?.path },
  apply(hooks, ctx: PluginContext<TtyOptions>) {
    const log = ctx.log;
    hooks.files.dump.tapPromise(NAME, dumpProcess);
    hooks.fds.dump.tapPromise({ name: NAME, stage: STAGE.DEFAULT, when: (req) => req.kind === 'chr' }, dumpFd);
    hooks.session.beforeRestore.tapPromise(NAME, async (session) => startRestore(session, ctx.options(session) ?? {}, log));
    hooks.fds.restore.for(NAME).tapPromise(NAME, makeRestoreFd(log));
    hooks.session.fdsInstalled.tapPromise(NAME, makeAfterInstall(log));
    hooks.session.beforeResume.tapPromise(NAME, makeAfterRestore(log));
  },
}));

export default ttyPlugin;
