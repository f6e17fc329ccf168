/**
 * @ckpt/plugin-event-fds — the event file descriptors of event loops (libuv/Node, glib, ...):
 *
 *   eventfd   counter and semaphore mode;
 *   epoll     its watch list (fd, events, data) from fdinfo, re-registered in the restored
 *             process with its own fd numbers once every fd exists (files.afterInstall);
 *   signalfd  its signal mask;
 *   timerfd   clock, remaining time and interval (expirations not yet read are dropped).
 *
 * Each object is created anew in the restorer and installed like any other fd.
 */
import { CkptError, definePlugin, type FdDumpRequest, type FdRecord, type ProcessDump, type ProcessRestore } from '@ckpt/core';
import { native, SYS } from '@ckpt/native';

export const NAME = '@ckpt/plugin-event-fds';

type Kind = 'eventfd' | 'eventpoll' | 'signalfd' | 'timerfd';

export interface EventFdData {
  type: Kind;
  flags: number;
  count?: string;
  semaphore?: boolean;
  watches?: Array<{ tfd: number; events: number; data: string }>;
  sigmask?: string;
  clockid?: number;
  valueNs?: string;
  intervalNs?: string;
}

const O_NONBLOCK = 0o4000, EFD_SEMAPHORE = 1, EPOLL_CTL_ADD = 1;

function kindOf(link: string): Kind | undefined {
  const m = /^anon_inode:\[(eventfd|eventpoll|signalfd|timerfd)\]$/.exec(link);
  return m?.[1] as Kind | undefined;
}

const timespecNs = (text: string | undefined): bigint => {
  const m = /\((\d+),\s*(\d+)\)/.exec(text ?? '');
  return m ? BigInt(m[1]) * 1_000_000_000n + BigInt(m[2]) : 0n;
};

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdRecord | undefined> {
  const type = kindOf(req.link);
  if (!type) return undefined;
  const x = req.info.extra;
  const data: EventFdData = { type, flags: req.info.flags & O_NONBLOCK };
  switch (type) {
    case 'eventfd':
      data.count = '0x' + (x['eventfd-count'] ?? '0').trim();
      data.semaphore = (x['eventfd-semaphore'] ?? '0').trim() === '1';
      break;
    case 'eventpoll':
      data.watches = [];
      for (const line of req.info.raw.split('\n')) {
        const m = /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/.exec(line);
        if (m) data.watches.push({ tfd: Number(m[1]), events: parseInt(m[2], 16), data: '0x' + m[3] });
      }
      break;
    case 'signalfd':
      data.sigmask = '0x' + (x.sigmask ?? '0').trim();
      break;
    case 'timerfd':
      data.clockid = Number(x.clockid ?? 1);
      data.valueNs = timespecNs(x.it_value).toString();
      data.intervalNs = timespecNs(x.it_interval).toString();
      break;
  }
  void proc;
  return { fd: req.fd, plugin: NAME, kind: type, cloexec: false, data };
}

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  if (rec.plugin !== NAME) return undefined;
  const d = rec.data as EventFdData;
  void proc;
  switch (d.type) {
    case 'eventfd':
      return native.eventfd(BigInt(d.count ?? '0'), (d.flags & O_NONBLOCK) | (d.semaphore ? EFD_SEMAPHORE : 0));
    case 'eventpoll': {
      const fd = native.epollCreate();
      if (d.flags & O_NONBLOCK) native.fcntl(fd, 4 /* F_SETFL */, O_NONBLOCK);
      return fd;
    }
    case 'signalfd':
      return native.signalfd(BigInt(d.sigmask ?? '0'), d.flags & O_NONBLOCK);
    case 'timerfd':
      return native.timerfd(d.clockid ?? 1, d.flags & O_NONBLOCK, 0, BigInt(d.valueNs ?? '0'), BigInt(d.intervalNs ?? '0'));
  }
}

/** epoll watch lists name fds by number: registered in the process itself, once all fds exist. */
async function afterInstall(proc: ProcessRestore): Promise<void> {
  const files = proc.get<{ fds: FdRecord[] }>('@ckpt/plugin-files');
  const stub = proc.stub;
  if (!files || !stub) return;
  for (const r of files.fds) {
    if (r.plugin !== NAME || (r.data as EventFdData).type !== 'eventpoll') continue;
    for (const w of (r.data as EventFdData).watches ?? []) {
      const ev = Buffer.alloc(12);
      ev.writeUInt32LE(w.events >>> 0, 0);
      ev.writeBigUInt64LE(BigInt(w.data), 4);
      try {
        stub.syscall(SYS.epoll_ctl, r.fd, EPOLL_CTL_ADD, w.tfd, stub.put(ev, 0));
      } catch (e) {
        throw new CkptError('ERR_CKPT_RESTORE_FAILED',
          `cannot re-register fd ${w.tfd} in epoll fd ${r.fd} of pid ${proc.pid}: ${(e as Error).message}`, { cause: e });
      }
    }
  }
}

export const eventFdsPlugin = definePlugin<void>(() => ({
  name: NAME,
  version: '0.1.0',
  apply(hooks) {
    hooks.files.dumpFd.tapPromise(NAME, dumpFd);
    hooks.files.restoreFd.tapPromise(NAME, restoreFd);
    hooks.files.afterInstall.tapPromise(NAME, afterInstall);
  },
}));

export default eventFdsPlugin;
