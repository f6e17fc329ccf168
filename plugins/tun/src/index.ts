/**
 * @ckpt/plugin-tun — tun/tap fds (/dev/net/tun attached to an interface with TUNSETIFF).
 *
 * Dump (fds.dump): an fd of /dev/net/tun whose fdinfo names an interface (`iff:`): TUNGETIFF
 * (name and flags: tun or tap, no packet info, vnet header, multi-queue, persistent...), the
 * vnet header size and send buffer, the owner and group the device admits, and the interface as
 * it is (MTU, up, queue length, a tap's MAC address, its IPv4 and IPv6 addresses; IPv6
 * link-local ones are made by the kernel). Packets the kernel queued for the process to read are
 * dropped, as a network drops packets (noted in the image). Refused, naming it: a device of
 * another network namespace.
 *
 * Restore (fds.restore): /dev/net/tun opened and attached again (TUNSETIFF with the name and
 * flags). When the interface is gone (a non-persistent device goes with the last fd: a dump that
 * killed its process), the attach makes it again, and it gets back its persistence, owner, group,
 * vnet header size, send buffer, MTU, queue length, MAC address, addresses and up state. An
 * interface that exists (persistent, or a multi-queue device another fd made first) is attached as
 * it is.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { CkptError, definePlugin, type FdClaim, type FdDumpRequest, type FdRecord, type ProcessDump, type ProcessRestore } from '@ckpt/core';
import { native, AF_INET, F_SETFL, O_NONBLOCK, O_RDWR, SOCK_DGRAM } from '@ckpt/native';
import { tunData, type TunData } from './record.js';

export { tunData, type TunData } from './record.js';

export const NAME = '@ckpt/plugin-tun';

const TUNSETIFF = 0x400454ca,
  TUNSETPERSIST = 0x400454cb,
  TUNSETOWNER = 0x400454cc,
  TUNSETGROUP = 0x400454ce,
  TUNGETIFF = 0x800454d2,
  TUNGETSNDBUF = 0x800454d3,
  TUNSETSNDBUF = 0x400454d4,
  TUNGETVNETHDRSZ = 0x800454d7,
  TUNSETVNETHDRSZ = 0x400454d8,
  TUNGETDEVNETNS = 0x54e3;
const SIOCSIFFLAGS = 0x8914,
  SIOCGIFFLAGS = 0x8913,
  SIOCSIFMTU = 0x8922,
  SIOCSIFHWADDR = 0x8924,
  SIOCSIFTXQLEN = 0x8943;
const IFF_TAP = 0x0002,
  IFF_UP = 0x1,
  IFF_PERSIST = 0x0800,
  ARPHRD_ETHER = 1,
  POLLIN = 1,
  O_CLOEXEC = 0o2000000;
/** TUNSETIFF takes these (IFF_PERSIST and the queue attach/detach bits are not its). */
const SETIFF_FLAGS = 0xf173; // TUN TAP NAPI NAPI_FRAGS NO_CARRIER MULTI_QUEUE NO_PI ONE_QUEUE VNET_HDR TUN_EXCL
const DEFAULT_VNET_HDR_SZ = 10,
  DEFAULT_SNDBUF = 0x7fffffff;

const describe = (d: Pick<TunData, 'name' | 'flags'>) => `a ${d.flags & IFF_TAP ? 'tap' : 'tun'} device fd (interface ${d.name})`;

/** struct ifreq (40 bytes): the name, then a union at 16. */
function ifreq(name: string): Buffer {
  const b = Buffer.alloc(40);
  b.write(name, 0, 15, 'latin1');
  return b;
}

const int32 = (v = 0) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};

const sysfs = (name: string, what: string) => readFileSync(`/sys/class/net/${name}/${what}`, 'utf8').trim();

async function dumpFd(req: FdDumpRequest, proc: ProcessDump): Promise<FdClaim<TunData> | undefined> {
  if (req.kind !== 'chr' || !req.info.extra.iff) return undefined;
  const ifr = ifreq('');
  native.fd.ioctlPtr(req.dupFd, TUNGETIFF, ifr);
  const name = ifr.toString('latin1', 0, 16).replace(/\0.*$/s, '');
  const flags = ifr.readUInt16LE(16);
  const base = { name, flags };
  const refuse = (why: string) => new CkptError('ERR_CKPT_UNSUPPORTED_FD', `cannot checkpoint pid ${proc.pid}: fd ${req.fd} is ${describe(base)} ${why}`);
  const ns = native.fd.ioctlVal(req.dupFd, TUNGETDEVNETNS, 0);
  try {
    if (fstatSync(ns).ino !== statSync('/proc/self/ns/net').ino) throw refuse('of another network namespace, which ckpt does not save');
  } finally {
    closeSync(ns);
  }
  const vnet = int32();
  native.fd.ioctlPtr(req.dupFd, TUNGETVNETHDRSZ, vnet);
  const snd = int32();
  native.fd.ioctlPtr(req.dupFd, TUNGETSNDBUF, snd);
  const owner = Number(sysfs(name, 'owner')),
    group = Number(sysfs(name, 'group'));
  const hwaddr = flags & IFF_TAP ? sysfs(name, 'address') : undefined;
  const queued = (native.fd.pollNow(req.dupFd, POLLIN) & POLLIN) !== 0;
  const data: TunData = {
    ...base,
    fileFlags: req.info.flags & O_NONBLOCK,
    ...(vnet.readInt32LE(0) !== DEFAULT_VNET_HDR_SZ ? { vnetHdrSz: vnet.readInt32LE(0) } : {}),
    ...(snd.readInt32LE(0) !== DEFAULT_SNDBUF ? { sndbuf: snd.readInt32LE(0) } : {}),
    ...(owner >= 0 ? { owner } : {}),
    ...(group >= 0 ? { group } : {}),
    device: {
      mtu: Number(sysfs(name, 'mtu')),
      up: (Number(sysfs(name, 'flags')) & IFF_UP) !== 0,
      txqlen: Number(sysfs(name, 'tx_queue_len')),
      ...(hwaddr ? { hwaddr } : {}),
      addrs: native.sock
        .netifAddrs()
        .filter((a) => a.name === name && !(a.family === 6 && /^fe[89ab]/i.test(a.addr)))
        .map(({ family, addr, prefix }) => ({ family, addr, prefix })),
    },
    ...(queued ? { note: 'packets queued for the process to read were dropped, as a network drops packets' } : {}),
  };
  return { kind: 'tun', data };
}

/** Gives a device made again by the attach what it had: persistence, owners, sizes, link settings, addresses, up. */
function configure(fd: number, d: TunData, what: string): void {
  const step = (name: string, fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: ${name}: ${(e as Error).message}`, { cause: e });
    }
  };
  if (d.flags & IFF_PERSIST) step('TUNSETPERSIST', () => native.fd.ioctlVal(fd, TUNSETPERSIST, 1));
  if (d.owner !== undefined) step('TUNSETOWNER', () => native.fd.ioctlVal(fd, TUNSETOWNER, d.owner!));
  if (d.group !== undefined) step('TUNSETGROUP', () => native.fd.ioctlVal(fd, TUNSETGROUP, d.group!));
  if (d.vnetHdrSz !== undefined) step('TUNSETVNETHDRSZ', () => native.fd.ioctlPtr(fd, TUNSETVNETHDRSZ, int32(d.vnetHdrSz)));
  if (d.sndbuf !== undefined) step('TUNSETSNDBUF', () => native.fd.ioctlPtr(fd, TUNSETSNDBUF, int32(d.sndbuf)));
  const s = native.sock.inetSocket(AF_INET, SOCK_DGRAM, 0);
  try {
    const dev = d.device;
    const withInt = (v: number) => {
      const r = ifreq(d.name);
      r.writeInt32LE(v, 16);
      return r;
    };
    step('MTU', () => native.fd.ioctlPtr(s, SIOCSIFMTU, withInt(dev.mtu)));
    step('queue length', () => native.fd.ioctlPtr(s, SIOCSIFTXQLEN, withInt(dev.txqlen)));
    if (dev.hwaddr) {
      const r = ifreq(d.name);
      r.writeUInt16LE(ARPHRD_ETHER, 16);
      Buffer.from(dev.hwaddr.replace(/:/g, ''), 'hex').copy(r, 18);
      step('MAC address', () => native.fd.ioctlPtr(s, SIOCSIFHWADDR, r));
    }
    const index = Number(sysfs(d.name, 'ifindex'));
    for (const a of dev.addrs) step(`address ${a.addr}/${a.prefix}`, () => native.sock.netifAddAddr(index, a.family, a.addr, a.prefix));
    if (dev.up) {
      const r = ifreq(d.name);
      native.fd.ioctlPtr(s, SIOCGIFFLAGS, r);
      r.writeUInt16LE(r.readUInt16LE(16) | IFF_UP, 16);
      step('up', () => native.fd.ioctlPtr(s, SIOCSIFFLAGS, r));
    }
  } finally {
    closeSync(s);
  }
}

async function restoreFd(rec: FdRecord, proc: ProcessRestore): Promise<number | undefined> {
  const d = rec.data as TunData;
  const what = `fd ${rec.fd} of pid ${proc.pid} (${describe(d)})`;
  const gone = !existsSync(`/sys/class/net/${d.name}`);
  const fd = openSync('/dev/net/tun', O_RDWR | O_CLOEXEC);
  try {
    const ifr = ifreq(d.name);
    ifr.writeUInt16LE(d.flags & SETIFF_FLAGS, 16);
    try {
      native.fd.ioctlPtr(fd, TUNSETIFF, ifr);
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${what}: cannot attach to the interface: ${(e as Error).message}`, {
        cause: e,
        hint: gone ? undefined : `an interface named ${d.name} exists and is not a ${d.flags & IFF_TAP ? 'tap' : 'tun'} device with these flags, or is held`,
      });
    }
    if (gone) configure(fd, d, what);
    native.fd.fcntl(fd, F_SETFL, d.fileFlags & O_NONBLOCK);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

export const tunPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.1.0',
  description: 'tun/tap fds: the interface, its flags, owner and addresses; the device made again when it is gone',
  record: { version: 1, fd: tunData },
  claims: { fdKinds: ['tun'] },
  show: { fdName: (rec: FdRecord) => describe(rec.data as TunData) + ((rec.data as TunData).note ? ` — ${(rec.data as TunData).note}` : '') },
  apply(hooks) {
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => req.kind === 'chr' }, dumpFd);
    hooks.fds.restore.for(NAME).tapPromise(NAME, restoreFd);
  },
}));

export default tunPlugin;
