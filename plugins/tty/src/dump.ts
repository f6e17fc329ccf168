/** Dump: pty fds (master, slave, /dev/tty on a pty) and the controlling terminal of each process. */
import { readFileSync, statSync, type Stats } from 'node:fs';
import { CkptError, type FdClaim, type FdDumpRequest, type ProcessDump } from '@ckpt/core';
import { devParts, ptsIndex } from './dev.js';
import { ioctlRead, KEEP_FLAGS, TCGETS, TERMIOS_SIZE, TIOCGDEV, TIOCGPKT, TIOCGPTLCK, TIOCGPTN, TIOCGWINSZ, WINSIZE_SIZE } from './ioctl.js';
import { NAME, type TtyFdData, type TtyProcessRecord } from './record.js';
import { takeQueued } from './queue.js';

/** tty_nr and tpgid of /proc/PID/stat (fields 7 and 8). */
function cttyOf(pid: number): { ttyNr: number; tpgid: number; sid: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = text
    .slice(text.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  // f[0] is field 3 (state): field N is f[N - 3].
  return { sid: Number(f[3]), ttyNr: Number(f[4]), tpgid: Number(f[5]) };
}

/** Claims an fd on a pty (files.dumpFd): its side, pty number, flags and terminal settings. */
export async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<TtyFdData> | undefined> {
  if (req.kind !== 'chr') return undefined;
  const t = proc.tracee;
  const { major, minor } = devParts(req.stat.rdev);
  let side: 'master' | 'slave';
  let index: number | undefined;
  let devTty = false;
  if (ptsIndex(req.stat.rdev) !== undefined) {
    side = 'slave';
    index = ptsIndex(req.stat.rdev);
  } else if (major === 5 && minor === 2) {
    side = 'master';
    const fromInfo = req.info.extra['tty-index'];
    index = fromInfo !== undefined ? Number(fromInfo) : ioctlRead(t, req.fd, TIOCGPTN, 4, 0)?.readUInt32LE(0);
    if (index === undefined || !Number.isInteger(index)) {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED_FD',
        `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is a pty master (${req.link}) whose pty number cannot be read`,
      );
    }
  } else if (major === 5 && minor === 0) {
    // /dev/tty: really the terminal it was opened on (TIOCGDEV names it); ours when it is a pty.
    const dev = ioctlRead(t, req.fd, TIOCGDEV, 4, 0)?.readUInt32LE(0);
    index = dev === undefined ? undefined : ptsIndex(dev);
    if (index === undefined) return undefined;
    side = 'slave';
    devTty = true;
  } else {
    return undefined;
  }
  // termios and window size: on a master, TCGETS/TIOCGWINSZ answer for its slave.
  const termios = ioctlRead(t, req.fd, TCGETS, TERMIOS_SIZE, 0);
  const winsize = ioctlRead(t, req.fd, TIOCGWINSZ, WINSIZE_SIZE, 64);
  const data: TtyFdData = { side, index: index!, path: req.link, flags: req.info.flags & KEEP_FLAGS };
  if (termios) data.termios = termios.toString('base64');
  else data.hungUp = true;
  if (winsize) data.winsize = winsize.toString('base64');
  if (devTty) data.devTty = true;
  const node = side === 'slave' && !devTty ? req.stat : slaveNode(proc, index!);
  if (node) data.node = { uid: node.uid, gid: node.gid, mode: node.mode & 0o7777 };
  if (side === 'master') {
    if (ioctlRead(t, req.fd, TIOCGPKT, 4, 128)?.readInt32LE(0)) data.packet = true;
    if (ioctlRead(t, req.fd, TIOCGPTLCK, 4, 136)?.readInt32LE(0)) data.locked = true;
    // Bytes queued either way (read and put back at once): once per pty, by its first master description.
    if (termios && !data.locked) {
      const queued = takeQueued(req.dupFd, termios, !!data.packet);
      if (queued) data.queued = queued;
    }
  }
  return { kind: side === 'master' ? 'ptmx' : 'pts', data };
}

/** The device node of slave `index` as the process sees it (a master's slave may never have been opened). */
function slaveNode(proc: ProcessDump, index: number): Stats | undefined {
  try {
    return statSync(`/proc/${proc.procPid}/root/dev/pts/${index}`);
  } catch {
    return undefined;
  }
}

/**
 * The controlling terminal of the process, a pty's slave (the kernel makes a master's slave the
 * controlling terminal when TIOCSCTTY is called on the master). Any other terminal (a console, a virtual or serial terminal) of a session the image makes
 * again (its leader is in it) is refused: ckpt does not give it back. A process of a session led
 * from outside (a shell job) joins the session of ckpt restore, and its terminal, as before.
 */
export async function dumpProcess(proc: ProcessDump): Promise<void> {
  const st = cttyOf(proc.procPid);
  if (!st.ttyNr) return;
  const index = ptsIndex(st.ttyNr);
  if (index === undefined) {
    if (st.sid !== proc.pid) return;
    const { major, minor } = devParts(st.ttyNr);
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED',
      `cannot checkpoint pid ${proc.pid} (${proc.comm}): its controlling terminal is the terminal device ${major}:${minor}, not a pty, which ckpt does not give back`,
      { hint: 'run the program on a pty (e.g. under script, tmux or ssh), or detach it from its terminal (setsid)' },
    );
  }
  proc.put(NAME, { ctty: { index, leader: st.sid === proc.pid, tpgid: st.tpgid > 0 ? st.tpgid : 0 } } satisfies TtyProcessRecord);
}
