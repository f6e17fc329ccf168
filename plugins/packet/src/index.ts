/**
 * @ckpt/plugin-packet — packet sockets (AF_PACKET, SOCK_RAW and SOCK_DGRAM).
 *
 * Dump (fds.dump): sock_diag (packetDiag) tells what getsockopt cannot read back — the protocol,
 * the interface it is bound to, whether it receives, the TPACKET version, reserve, copy threshold,
 * timestamp source, flags (auxdata, origdev, vnet header, loss), multicast / promiscuous
 * memberships, ring settings and fanout — and getsockopt the rest (qdisc bypass, ignore outgoing,
 * tx offset, vnet header size), with a classic BPF filter and buffer sizes the program set.
 * Interfaces are kept by index and by name (the name wins at restore, as on another host).
 * Refused, naming the socket: a ring mapped into the process (the memory plugin refuses the
 * mapping), a fanout group steered by a BPF program (it cannot be read back), a socket of another
 * network namespace. Packets received and not yet read are dropped, as a network drops packets
 * (the image notes how many bytes; `ckpt show` prints it).
 *
 * Restore (fds.restore): made in the restorer (root): socket, the options that must come before a
 * ring (version, reserve, vnet header), the rest, rings, bind, memberships, fanout (it needs a
 * socket that receives), filter; our fd goes to core.
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import {
  attachSocketFilter,
  CkptError,
  definePlugin,
  inOurNetns,
  readSocketFilter,
  type FdClaim,
  type FdDumpRequest,
  type FdRecord,
  type ProcessDump,
  type ProcessRestore,
} from '@ckpt/core';
import { native, SO_DOMAIN } from '@ckpt/native';
import { packetData, type PacketData } from './record.js';

export { packetData, packetRing, type PacketData } from './record.js';

export const NAME = '@ckpt/plugin-packet';

const AF_PACKET = 17,
  SOL_SOCKET = 1,
  SOL_PACKET = 263,
  SO_SNDBUF = 7,
  SO_RCVBUF = 8,
  SO_BUF_LOCK = 72;
const PACKET_ADD_MEMBERSHIP = 1,
  PACKET_RX_RING = 5,
  PACKET_COPY_THRESH = 7,
  PACKET_AUXDATA = 8,
  PACKET_ORIGDEV = 9,
  PACKET_VERSION = 10,
  PACKET_RESERVE = 12,
  PACKET_TX_RING = 13,
  PACKET_LOSS = 14,
  PACKET_VNET_HDR = 15,
  PACKET_TIMESTAMP = 17,
  PACKET_FANOUT = 18,
  PACKET_TX_HAS_OFF = 19,
  PACKET_QDISC_BYPASS = 20,
  PACKET_IGNORE_OUTGOING = 23,
  PACKET_VNET_HDR_SZ = 24;
/** pdi_flags. */
const PDI_RUNNING = 1,
  PDI_AUXDATA = 2,
  PDI_ORIGDEV = 4,
  PDI_VNETHDR = 8,
  PDI_LOSS = 16;
const FANOUT_CBPF = 6,
  FANOUT_EBPF = 7,
  FANOUT_FLAG_UNIQUEID = 0x20; // in the flags byte (bits 24..31 of the value)
/** Options read with getsockopt (a fresh socket has 0). */
const GETSOCKOPT = [PACKET_TX_HAS_OFF, PACKET_QDISC_BYPASS, PACKET_IGNORE_OUTGOING];

const TYPES: Record<number, string> = { 2: 'datagram', 3: 'raw' };
const describe = (d: Pick<PacketData, 'type' | 'protocol' | 'ifindex' | 'ifname'>) =>
  `a packet socket (${TYPES[d.type] ?? `type ${d.type}`}, protocol 0x${d.protocol.toString(16).padStart(4, '0')}, ${
    d.ifindex ? `interface ${d.ifname ?? d.ifindex}` : 'every interface'
  })`;

/** Interface names by index (from /sys/class/net), in our network namespace. */
function interfaces(): Map<number, string> {
  const m = new Map<number, string>();
  for (const name of readdirSync('/sys/class/net')) {
    try {
      m.set(Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8')), name);
    } catch {
      /* gone meanwhile */
    }
  }
  return m;
}

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<PacketData> | undefined> {
  if (req.kind !== 'socket' || native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_DOMAIN) !== AF_PACKET) return undefined;
  const refuse = (why: string) => new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is ${why}`);
  if (!inOurNetns(req.dupFd)) throw refuse('a packet socket of another network namespace, which ckpt does not save');
  const diag = native.sock.packetDiag(req.stat.ino);
  if (!diag) throw refuse('a packet socket sock_diag does not know (is the af_packet_diag module loaded?)');
  const names = interfaces();
  const ifindex = diag.ifindex ?? 0;
  const base = { type: diag.type, protocol: diag.protocol, ifindex, ...(names.get(ifindex) ? { ifname: names.get(ifindex) } : {}) };
  const what = describe(base);
  // Set again in this order: version, reserve and the vnet header before any ring.
  const opts: Array<[number, number]> = [];
  const flags = diag.flags ?? 0;
  if (diag.version) opts.push([PACKET_VERSION, diag.version]);
  if (diag.reserve) opts.push([PACKET_RESERVE, diag.reserve]);
  if (flags & PDI_VNETHDR) {
    const sz = native.sock.sockGetInt(req.dupFd, SOL_PACKET, PACKET_VNET_HDR_SZ);
    opts.push(sz && sz !== 10 ? [PACKET_VNET_HDR_SZ, sz] : [PACKET_VNET_HDR, 1]);
  }
  if (flags & PDI_AUXDATA) opts.push([PACKET_AUXDATA, 1]);
  if (flags & PDI_ORIGDEV) opts.push([PACKET_ORIGDEV, 1]);
  if (flags & PDI_LOSS) opts.push([PACKET_LOSS, 1]);
  if (diag.tstamp) opts.push([PACKET_TIMESTAMP, diag.tstamp]);
  if (diag.copyThresh) opts.push([PACKET_COPY_THRESH, diag.copyThresh]);
  for (const o of GETSOCKOPT) {
    const v = native.sock.sockGetInt(req.dupFd, SOL_PACKET, o);
    if (v) opts.push([o, v]);
  }
  if (diag.fanout !== undefined) {
    const type = (diag.fanout >>> 16) & 0xff;
    if (type === FANOUT_CBPF || type === FANOUT_EBPF) {
      throw refuse(`${what} in a fanout group steered by a BPF program (PACKET_FANOUT_DATA), which cannot be read back`);
    }
  }
  const lock = native.sock.sockGetInt(req.dupFd, SOL_SOCKET, SO_BUF_LOCK) ?? 0;
  const size = (name: number) => (native.sock.sockGetInt(req.dupFd, SOL_SOCKET, name) ?? 0) >> 1;
  const filter = readSocketFilter(proc, req.fd, `pid ${proc.pid} fd ${req.fd} (${what})`);
  const data: PacketData = {
    ...base,
    running: (flags & PDI_RUNNING) !== 0,
    opts,
    mclist: diag.mclist.map((m) => ({
      ifindex: m.ifindex,
      ...(names.get(m.ifindex) ? { ifname: names.get(m.ifindex) } : {}),
      type: m.type,
      addr: m.addr.toString('base64'),
      count: m.count,
    })),
    ...(diag.rxRing ? { rxRing: diag.rxRing } : {}),
    ...(diag.txRing ? { txRing: diag.txRing } : {}),
    ...(diag.fanout !== undefined ? { fanout: diag.fanout } : {}),
    ...(filter ? { filter } : {}),
    ...(lock & 1 ? { sndbuf: size(SO_SNDBUF) } : {}),
    ...(lock & 2 ? { rcvbuf: size(SO_RCVBUF) } : {}),
    ...(diag.rmem ? { note: `packets received and not read (${diag.rmem} bytes of buffer) were dropped, as a network drops packets` } : {}),
  };
  return { kind: 'packet', data };
}

/** An interface index at restore: the saved name's (the host may number them otherwise), else the saved index. */
function indexOf(ifindex: number, ifname: string | undefined, what: string): number {
  if (!ifindex || !ifname) return ifindex;
  try {
    return Number(readFileSync(`/sys/class/net/${ifname}/ifindex`, 'utf8'));
  } catch {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: network interface ${ifname} does not exist on this host`, {
      hint: `create it (ip link add ${ifname} ...) and restore again`,
    });
  }
}

function ringReq(r: NonNullable<PacketData['rxRing']>, v3: boolean): Buffer {
  const fields = [r.blockSize, r.blockNr, r.frameSize, r.frameNr, ...(v3 ? [r.retireTmo, r.sizeofPriv, r.features] : [])];
  const b = Buffer.alloc(fields.length * 4);
  fields.forEach((f, i) => b.writeUInt32LE(f, i * 4));
  return b;
}

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as PacketData;
  const what = `fd ${rec.fd} of pid ${proc.pid} (${describe(d)})`;
  const step = <T>(name: string, fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: ${name}: ${(e as Error).message}`, { cause: e });
    }
  };
  const htons = (v: number) => ((v & 0xff) << 8) | ((v >> 8) & 0xff);
  const fd = step('socket', () => native.sock.inetSocket(AF_PACKET, d.type, d.running || d.ifindex ? htons(d.protocol) : 0));
  try {
    for (const [o, v] of d.opts) step(`packet option ${o}`, () => native.sock.sockSetInt(fd, SOL_PACKET, o, v));
    const v3 = d.opts.some(([o, v]) => o === PACKET_VERSION && v === 2);
    if (d.rxRing) step('PACKET_RX_RING', () => native.sock.sockSetBytes(fd, SOL_PACKET, PACKET_RX_RING, ringReq(d.rxRing!, v3)));
    if (d.txRing) step('PACKET_TX_RING', () => native.sock.sockSetBytes(fd, SOL_PACKET, PACKET_TX_RING, ringReq(d.txRing!, v3)));
    if (d.ifindex) {
      // struct sockaddr_ll: family, protocol (network order), ifindex.
      const sa = Buffer.alloc(20);
      sa.writeUInt16LE(AF_PACKET, 0);
      sa.writeUInt16BE(d.protocol, 2);
      sa.writeInt32LE(indexOf(d.ifindex, d.ifname, what), 4);
      step('bind', () => native.sock.sockBindRaw(fd, sa));
    }
    for (const m of d.mclist) {
      // struct packet_mreq: ifindex, type, alen, address[8].
      const addr = Buffer.from(m.addr, 'base64');
      const mr = Buffer.alloc(16);
      mr.writeInt32LE(indexOf(m.ifindex, m.ifname, what), 0);
      mr.writeUInt16LE(m.type, 4);
      mr.writeUInt16LE(addr.length, 6);
      addr.copy(mr, 8, 0, 8);
      for (let i = 0; i < m.count; i++) step('PACKET_ADD_MEMBERSHIP', () => native.sock.sockSetBytes(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mr));
    }
    if (d.fanout !== undefined) {
      const v = (d.fanout & ~(FANOUT_FLAG_UNIQUEID << 24)) >>> 0;
      step('PACKET_FANOUT', () => native.sock.sockSetInt(fd, SOL_PACKET, PACKET_FANOUT, v | 0));
    }
    if (d.sndbuf !== undefined) native.sock.sockSetInt(fd, SOL_SOCKET, SO_SNDBUF, d.sndbuf);
    if (d.rcvbuf !== undefined) native.sock.sockSetInt(fd, SOL_SOCKET, SO_RCVBUF, d.rcvbuf);
    if (d.filter) attachSocketFilter(proc, fd, d.filter, what);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

export const packetPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'packet sockets (AF_PACKET): protocol, interface, TPACKET version and rings, fanout, memberships, options',
  record: { version: 1, fd: packetData },
  claims: { fdKinds: ['packet'] },
  show: { fdName: (rec: FdRecord) => describe(rec.data as PacketData) + ((rec.data as PacketData).note ? ` — ${(rec.data as PacketData).note}` : '') },
  apply(hooks) {
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => req.kind === 'socket' }, dumpFd);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
  },
}));

export default packetPlugin;
