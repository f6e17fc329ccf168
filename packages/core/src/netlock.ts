/**
 * The network lock: keeps packets of TCP connections from reaching either end while ckpt holds
 * them (between the freeze and the moment a restored socket leaves repair mode), so that the
 * peer never sees a reset. A core service (NETWORK_LOCK), used by every socket plugin; the
 * default is nftables: a table `inet ckpt` with two sets of 4-tuples (`tcp4`, `tcp6`) dropping
 * matching packets in prerouting and output before conntrack (priority -300), entered in the
 * network namespace of the process when it is not ours.
 */
import { execFileSync } from 'node:child_process';
import { native } from '@ckpt/native';
import { randomHex } from './random.js';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CkptError } from './errors.js';
import { ownerAlive, selfOwner, type Owner } from './imagedir.js';

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
  /**
   * The blocks outlive this ckpt on purpose (a dump that killed its processes: the connections
   * wait for the restore): from now on they belong to the image, and stay while it exists.
   */
  handOver(imagePath: string): void;
}

/** A stale lock: its owner is gone. */
export interface StaleLock {
  owner: string;
  connections: number;
}

/** The service: hands out lock groups, and finds (and removes) the locks no owner holds any more. */
export interface NetworkLocks {
  group(): NetworkLock;
  /** Locks whose owner (a ckpt process, or an image) is gone; removed unless `dryRun`. */
  sweep(opts?: { dryRun?: boolean }): StaleLock[];
}

/**
 * Every lock group is recorded in LOCKS_DIR with its owner (pid, start time and boot of the ckpt
 * holding it, or the image it was handed over to) and its elements, so that any later ckpt can
 * tell a lock nobody holds (a killed dump) from one that waits for a restore.
 */
export const LOCKS_DIR = '/run/ckpt/netlocks';

interface LockFile {
  owner: Owner | { image: string };
  elements: Array<{ set: string; elem: string; nsPid?: number }>;
}

const describeOwner = (o: LockFile['owner']) => ('image' in o ? `image ${o.image}` : `ckpt pid ${o.pid}`);

export class NftNetworkLocks implements NetworkLocks {
  group(): NetworkLock {
    return new NftLockGroup();
  }

  sweep(opts: { dryRun?: boolean } = {}): StaleLock[] {
    const stale: StaleLock[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(LOCKS_DIR).filter((n) => n.endsWith('.json'));
    } catch {
      return stale; // no lock was ever recorded
    }
    for (const name of names) {
      const file = join(LOCKS_DIR, name);
      let lock: LockFile;
      try {
        lock = JSON.parse(readFileSync(file, 'utf8')) as LockFile;
      } catch {
        continue; // being written
      }
      const alive = 'image' in lock.owner ? existsSync(join(lock.owner.image, 'manifest.json')) : ownerAlive(lock.owner);
      if (alive) continue;
      stale.push({ owner: describeOwner(lock.owner), connections: lock.elements.length / 2 });
      if (opts.dryRun) continue;
      for (const e of lock.elements) {
        // A namespace that was a dead process's only: gone with it, and its blocks too.
        if (e.nsPid && !existsSync(`/proc/${e.nsPid}/ns/net`)) continue;
        unblock(e.set, [e.elem], e.nsPid);
      }
      rmSync(file, { force: true });
    }
    return stale;
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

/**
 * Runs an nft script, in the network namespace of `nsPid` when it is not ours: through
 * libnftables in this process (0.2-3 ms a script here), or where it cannot be loaded the nft
 * command (15-24 ms a run: a process and nft's start, most of a TCP connection's block and
 * unblock, all of it while the process is frozen).
 */
function nft(script: string, nsPid?: number): void {
  const r = native.sock.nftRun(script, nsPid);
  if (r === null) return;
  if (typeof r === 'string') throw new Error(`nft: ${r.trim().split('\n').slice(0, 3).join(' | ')}`);
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

/**
 * Packets a restore sends itself to replay what a peer had sent (a FIN, an ACK, a reset: see
 * the tcp plugin) carry this SO_MARK, and pass the block.
 */
export const REPLAY_MARK = 0x636b7074; // 'ckpt'

function ensureTable(nsPid?: number): void {
  const rules = (hook: string) =>
    `add rule inet ${TABLE} ${hook} meta mark != ${REPLAY_MARK} ip saddr . tcp sport . ip daddr . tcp dport @tcp4 drop\n` +
    `add rule inet ${TABLE} ${hook} meta mark != ${REPLAY_MARK} ip6 saddr . tcp sport . ip6 daddr . tcp dport @tcp6 drop\n`;
  const rule = (hook: string) => `add chain inet ${TABLE} ${hook} { type filter hook ${hook} priority -300; policy accept; }\n` + rules(hook);
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
    // The table is there (another ckpt's, or an older one's): its rules are made current in one
    // transaction, so no packet ever meets the chains without them; the sets are left as they are.
    nft(['prerouting', 'output'].map((h) => `flush chain inet ${TABLE} ${h}\n${rules(h)}`).join(''), nsPid);
  }
}

/** The connections one dump or restore blocked, so that it can unblock them. */
class NftLockGroup implements NetworkLock {
  private readonly held = new Map<string, { set: string; elem: string; nsPid?: number }>();
  private tableReady = new Set<string>();
  private owner: LockFile['owner'] = selfOwner();
  private readonly file = join(LOCKS_DIR, `${process.pid}-${randomHex(4)}.json`);

  /** Records the group (owner and elements) before nft changes, so a crash in between leaves it findable. */
  private record(): void {
    if (!this.held.size) {
      rmSync(this.file, { force: true });
      return;
    }
    mkdirSync(LOCKS_DIR, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify({ owner: this.owner, elements: [...this.held.values()] } satisfies LockFile), { mode: 0o600 });
    renameSync(tmp, this.file);
  }

  handOver(imagePath: string): void {
    this.owner = { image: imagePath };
    this.record();
  }

  block(local: InetAddr, peer: InetAddr, nsPid?: number): void {
    const { set, elems } = elements(local, peer);
    const fresh = elems.filter((e) => !this.held.has(`${nsPid ?? 0}|${e}`));
    if (!fresh.length) return;
    if (!this.tableReady.has(String(nsPid ?? 0))) {
      ensureTable(nsPid);
      this.tableReady.add(String(nsPid ?? 0));
    }
    for (const e of fresh) this.held.set(`${nsPid ?? 0}|${e}`, { set, elem: e, nsPid });
    this.record();
    nft(`add element inet ${TABLE} ${set} { ${fresh.join(', ')} }\n`, nsPid);
  }

  unblock(local: InetAddr, peer: InetAddr, nsPid?: number): void {
    const { set, elems } = elements(local, peer);
    for (const e of elems) this.held.delete(`${nsPid ?? 0}|${e}`);
    unblock(set, elems, nsPid);
    this.record();
    forgetElsewhere(elems);
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
    this.record();
    forgetElsewhere([...groups.values()].flatMap((g) => g.elems));
  }
}

/** Elements unblocked by one group (a restore) are no longer another's (the dump's, handed to its image). */
function forgetElsewhere(elems: string[]): void {
  if (!elems.length) return;
  const gone = new Set(elems);
  let names: string[] = [];
  try {
    names = readdirSync(LOCKS_DIR).filter((n) => n.endsWith('.json'));
  } catch {
    return;
  }
  for (const name of names) {
    const file = join(LOCKS_DIR, name);
    try {
      const lock = JSON.parse(readFileSync(file, 'utf8')) as LockFile;
      const left = lock.elements.filter((e) => !gone.has(e.elem));
      if (left.length === lock.elements.length) continue;
      if (!left.length) rmSync(file, { force: true });
      else writeFileSync(file, JSON.stringify({ ...lock, elements: left }), { mode: 0o600 });
    } catch {
      /* being written by its owner */
    }
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
