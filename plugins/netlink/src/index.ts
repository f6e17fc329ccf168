/**
 * @ckpt/plugin-netlink — netlink sockets (AF_NETLINK: route, generic, audit, uevent, ...).
 *
 * Dump (fds.dump): the socket's type and netlink protocol (SO_TYPE, SO_PROTOCOL), its port id and
 * peer (getsockname / getpeername in the process), its multicast groups (NETLINK_LIST_MEMBERSHIPS:
 * every group, the ones above 32 too), its flags (the NETLINK_* options getsockopt reads back),
 * and buffer sizes the program set (locked, SO_BUF_LOCK). Refused, naming the socket: messages
 * queued and unread (kernel replies and notifications cannot be queued again from user space)
 * and a socket of another network namespace.
 *
 * Restore (fds.restore): made inside the process (root until the credentials stage: it may join
 * any group), bound to its port id, joined to each group, connected, flags and sizes set; our
 * copy (pidfd_getfd) goes to core.
 */
import {
  CkptError,
  definePlugin,
  inOurNetns,
  remoteGetsockopt,
  takeFd,
  type FdClaim,
  type FdDumpRequest,
  type FdRecord,
  type ProcessDump,
  type ProcessRestore,
  type Tracee,
} from '@ckpt/core';
import { native, AF_NETLINK, SO_DOMAIN, SYS } from '@ckpt/native';
import { netlinkData, type NetlinkData } from './record.js';

export { netlinkData, type NetlinkData } from './record.js';

export const NAME = '@ckpt/plugin-netlink';

const SOL_SOCKET = 1,
  SOL_NETLINK = 270,
  SO_TYPE = 3,
  SO_PROTOCOL = 38,
  SO_SNDBUF = 7,
  SO_RCVBUF = 8,
  SO_BUF_LOCK = 72,
  SOCK_CLOEXEC = 0o2000000,
  POLLIN = 1,
  NETLINK_ADD_MEMBERSHIP = 1,
  NETLINK_LIST_MEMBERSHIPS = 9;
/** The NETLINK_* flags getsockopt reads back: PKTINFO, BROADCAST_ERROR, NO_ENOBUFS, LISTEN_ALL_NSID, CAP_ACK, EXT_ACK, GET_STRICT_CHK. */
const FLAGS = [3, 4, 5, 8, 10, 11, 12];
const PROTOCOLS: Record<number, string> = { 0: 'route', 4: 'sock_diag', 9: 'audit', 10: 'fib_lookup', 12: 'netfilter', 15: 'uevent', 16: 'generic' };

const describe = (d: Pick<NetlinkData, 'protocol' | 'portid'>) => `a netlink socket (${PROTOCOLS[d.protocol] ?? `protocol ${d.protocol}`}, port ${d.portid})`;

/** sockaddr_nl of the socket (peer: of its peer): port id and first 32 groups. */
function remoteName(t: Tracee, fd: number, peer: boolean): { portid: number; groups: number } {
  const base = t.scratch();
  const l = Buffer.alloc(4);
  l.writeUInt32LE(12);
  t.put(l, 0);
  t.syscall(peer ? SYS.getpeername : SYS.getsockname, fd, base + 64, base);
  const sa = t.read(base + 64, 12);
  return { portid: sa.readUInt32LE(4), groups: sa.readUInt32LE(8) };
}

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<NetlinkData> | undefined> {
  if (req.kind !== 'socket' || native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_DOMAIN) !== AF_NETLINK) return undefined;
  const t = proc.tracee;
  const type = native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_TYPE) ?? 0;
  const protocol = native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_PROTOCOL) ?? 0;
  const own = remoteName(t, req.fd, false);
  const what = `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is ${describe({ protocol, portid: own.portid })}`;
  if (!inOurNetns(req.dupFd)) {
    throw new CkptError('ERR_CKPT_UNSUPPORTED_FD', `${what} of another network namespace, which ckpt does not save`);
  }
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(req.fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  if (t.syscall(SYS.poll, t.put(pfd, 0), 1, 0) > 0n) {
    throw new CkptError('ERR_CKPT_UNSUPPORTED_FD', `${what} with messages queued and unread, which cannot be queued again`, {
      hint: 'checkpoint once the process has read them (retry in a moment)',
    });
  }
  const bitmap = remoteGetsockopt(t, req.fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, 128) ?? Buffer.alloc(0);
  const groups: number[] = [];
  for (let w = 0; w + 4 <= bitmap.length; w += 4) {
    const v = bitmap.readUInt32LE(w);
    for (let b = 0; b < 32; b++) if (v & (1 << b)) groups.push(w * 8 + b + 1);
  }
  const peer = remoteName(t, req.fd, true);
  const flags: Array<[number, number]> = [];
  for (const f of FLAGS) {
    const v = remoteGetsockopt(t, req.fd, SOL_NETLINK, f, 4)?.readInt32LE(0);
    if (v) flags.push([f, v]);
  }
  const lock = native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_BUF_LOCK) ?? 0;
  const size = (name: number) => (native.sock.sockGetInt(req.dupFd, SOL_SOCKET, name) ?? 0) >> 1;
  const data: NetlinkData = {
    type,
    protocol,
    portid: own.portid,
    groups,
    ...(peer.portid || peer.groups ? { peer: { portid: peer.portid, group: peer.groups } } : {}),
    flags,
    ...(lock & 1 ? { sndbuf: size(SO_SNDBUF) } : {}),
    ...(lock & 2 ? { rcvbuf: size(SO_RCVBUF) } : {}),
  };
  return { kind: 'netlink', data };
}

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as NetlinkData;
  const t = proc.stub;
  if (!t) throw new Error(`pid ${proc.pid}: no process to make a netlink socket in`);
  const what = `fd ${rec.fd} of pid ${proc.pid} (${describe(d)})`;
  const fail = (step: string, r: bigint, hint?: string) =>
    new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: ${step} failed (errno ${-r})`, hint ? { hint } : undefined);
  const s = t.syscallRaw(SYS.socket, AF_NETLINK, d.type | SOCK_CLOEXEC, d.protocol);
  if (s < 0n) throw fail('socket', s, 'this kernel may lack that netlink protocol');
  const fd = Number(s);
  try {
    const int = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v);
      return t.put(b, 32);
    };
    if (d.portid) {
      const sa = Buffer.alloc(12);
      sa.writeUInt16LE(AF_NETLINK, 0);
      sa.writeUInt32LE(d.portid, 4);
      const r = t.syscallRaw(SYS.bind, fd, t.put(sa, 0), 12);
      if (r < 0n) throw fail(`bind to port ${d.portid}`, r, r === -98n ? 'another netlink socket of this host has that port id now' : undefined);
    }
    for (const g of d.groups) {
      const r = t.syscallRaw(SYS.setsockopt, fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, int(g), 4);
      if (r < 0n) throw fail(`joining group ${g}`, r);
    }
    if (d.peer) {
      const sa = Buffer.alloc(12);
      sa.writeUInt16LE(AF_NETLINK, 0);
      sa.writeUInt32LE(d.peer.portid, 4);
      sa.writeUInt32LE(d.peer.group, 8);
      const r = t.syscallRaw(SYS.connect, fd, t.put(sa, 0), 12);
      if (r < 0n) throw fail('connect', r);
    }
    for (const [name, v] of d.flags) {
      const r = t.syscallRaw(SYS.setsockopt, fd, SOL_NETLINK, name, int(v), 4);
      if (r < 0n) throw fail(`netlink option ${name}`, r);
    }
    if (d.sndbuf !== undefined) t.syscall(SYS.setsockopt, fd, SOL_SOCKET, SO_SNDBUF, int(d.sndbuf), 4);
    if (d.rcvbuf !== undefined) t.syscall(SYS.setsockopt, fd, SOL_SOCKET, SO_RCVBUF, int(d.rcvbuf), 4);
    return takeFd(t, fd);
  } finally {
    t.syscallRaw(SYS.close, fd);
  }
}

export const netlinkPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'netlink sockets: protocol, port id, multicast groups, peer, flags',
  record: { version: 1, fd: netlinkData },
  claims: { fdKinds: ['netlink'] },
  show: { fdName: (rec: FdRecord) => describe(rec.data as NetlinkData) },
  apply(hooks) {
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => req.kind === 'socket' }, dumpFd);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
  },
}));

export default netlinkPlugin;
