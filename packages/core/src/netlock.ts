/**
 * The network lock: keeps packets of TCP connections from reaching either end while ckpt holds
 * them (between the freeze and the moment a restored socket leaves repair mode), so that the
 * peer never sees a reset. A core service (NETWORK_LOCK), used by every socket plugin; the
 * default is nftables: a table `inet ckpt` with two sets of 4-tuples (`tcp4`, `tcp6`) dropping
 * matching packets in prerouting and output before conntrack (priority -300), entered in the
 * network namespace of the process when it is not ours.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CkptError } from './errors.js';

/** An address as socket plugins record it. */
export interface InetAddr {
  family: 4 | 6;
  addr: string;
  port: number;
}

/** The connections one dump or restore blocked, so that it can unblock them. */
export interface NetworkLock {
  /** Blocks both directions of a connection (in the network namespace of nsPid, when given). */
  block(local: InetAddr, peer: InetAddr, nsPid?: number): void;
  unblock(local: InetAddr, peer: InetAddr, nsPid?: number): void;
  /** Unblocks everything this group blocked. */
  unblockAll(): void;
}

/** The service: hands out lock groups. */
export interface NetworkLocks {
  group(): NetworkLock;
}

export class NftNetworkLocks implements NetworkLocks {
  group(): NetworkLock {
    return new NftLockGroup();
  }
}

const TABLE = 'ckpt';

/** The nft set and its two elements (both directions) for a connection's 4-tuple. */
function elements(local: InetAddr, peer: InetAddr): { set: 'tcp4' | 'tcp6'; elems: string[] } {
  const v4mapped = (a: InetAddr) => (a.family === 6 && /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(a.addr) ? a.addr.slice(7) : undefined);
  const l4 = v4mapped(local),
    p4 = v4mapped(peer);
  const v4 = local.family === 4 || (l4 !== undefined && p4 !== undefined);
  const la = v4 ? (l4 ?? local.addr) : local.addr,
    pa = v4 ? (p4 ?? peer.addr) : peer.addr;
  return { set: v4 ? 'tcp4' : 'tcp6', elems: [`${la} . ${local.port} . ${pa} . ${peer.port}`, `${pa} . ${peer.port} . ${la} . ${local.port}`] };
}

/** A system command by absolute path when PATH lacks the sbin directories. */
const sbin = (name: string) => ['/usr/sbin/', '/sbin/', '/usr/bin/', '/bin/'].map((d) => d + name).find((p) => existsSync(p)) ?? name;

/** Runs an nft script, in the network namespace of `nsPid` when it is not ours. */
function nft(script: string, nsPid?: number): void {
  const args = ['-f', '-'];
  const [cmd, argv] = nsPid ? [sbin('nsenter'), [`--net=/proc/${nsPid}/ns/net`, sbin('nft'), ...args]] : [sbin('nft'), args];
  try {
    execFileSync(cmd, argv, { input: script, stdio: ['pipe', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') {
      throw new CkptError(
        'ERR_CKPT_UNSUPPORTED',
        `${nsPid ? 'nsenter or nft' : 'nft'} is not installed: TCP connections are blocked with nftables while they are checkpointed`,
        { hint: 'apt-get install nftables' },
      );
    }
    throw new Error(`nft: ${(err.stderr?.toString() ?? err.message).trim().split('\n').slice(0, 3).join(' | ')}`);
  }
}

function ensureTable(nsPid?: number): void {
  const rule = (hook: string) =>
    `add chain inet ${TABLE} ${hook} { type filter hook ${hook} priority -300; policy accept; }\n` +
    `add rule inet ${TABLE} ${hook} ip saddr . tcp sport . ip daddr . tcp dport @tcp4 drop\n` +
    `add rule inet ${TABLE} ${hook} ip6 saddr . tcp sport . ip6 daddr . tcp dport @tcp6 drop\n`;
  try {
    // One transaction: `create table` fails if the table exists, and then nothing is added twice.
    nft(
      `create table inet ${TABLE}\n` +
        `add set inet ${TABLE} tcp4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }\n` +
        `add set inet ${TABLE} tcp6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }\n` +
        rule('prerouting') +
        rule('output'),
      nsPid,
    );
  } catch (e) {
    if (e instanceof CkptError || !/exists/i.test((e as Error).message)) throw e;
  }
}

/** The connections one dump or restore blocked, so that it can unblock them. */
class NftLockGroup implements NetworkLock {
  private readonly held = new Map<string, { set: string; elem: string; nsPid?: number }>();
  private tableReady = new Set<string>();

  block(local: InetAddr, peer: InetAddr, nsPid?: number): void {
    const { set, elems } = elements(local, peer);
    const fresh = elems.filter((e) => !this.held.has(`${nsPid ?? 0}|${e}`));
    if (!fresh.length) return;
    if (!this.tableReady.has(String(nsPid ?? 0))) {
      ensureTable(nsPid);
      this.tableReady.add(String(nsPid ?? 0));
    }
    nft(`add element inet ${TABLE} ${set} { ${fresh.join(', ')} }\n`, nsPid);
    for (const e of fresh) this.held.set(`${nsPid ?? 0}|${e}`, { set, elem: e, nsPid });
  }

  unblock(local: InetAddr, peer: InetAddr, nsPid?: number): void {
    const { set, elems } = elements(local, peer);
    for (const e of elems) this.held.delete(`${nsPid ?? 0}|${e}`);
    unblock(set, elems, nsPid);
  }

  unblockAll(): void {
    const groups = new Map<string, { set: string; elems: string[]; nsPid?: number }>();
    for (const b of this.held.values()) {
      const key = `${b.nsPid ?? 0}|${b.set}`;
      const g = groups.get(key) ?? { set: b.set, elems: [], nsPid: b.nsPid };
      g.elems.push(b.elem);
      groups.set(key, g);
    }
    this.held.clear();
    for (const g of groups.values()) unblock(g.set, g.elems, g.nsPid);
  }
}

/** Removes elements (each on its own when the batch fails: one may be gone already). */
function unblock(set: string, elems: string[], nsPid?: number): void {
  try {
    nft(`delete element inet ${TABLE} ${set} { ${elems.join(', ')} }\n`, nsPid);
  } catch {
    for (const e of elems) {
      try {
        nft(`delete element inet ${TABLE} ${set} { ${e} }\n`, nsPid);
      } catch {
        /* not there (or no table): nothing to unblock */
      }
    }
  }
}
