/**
 * A service address that moves with a migration (`ckpt migrate --move-address`): removed from
 * its interface on the source once the processes are frozen and their connections silent, added
 * on the destination before the restore rebuilds those connections on it, and announced there
 * (a gratuitous ARP for IPv4) so that the link's neighbours send to the new host. A migration that
 * fails puts it back on the source, announced again. In the network namespace ckpt runs in, with
 * rtnetlink (no `ip` command needed).
 */
import { isIP } from 'node:net';
import { CkptError } from '@ckpt/core';
import { native } from '@ckpt/native';

export interface MovedAddress {
  addr: string;
  family: 4 | 6;
  prefix: number;
  /** The interface: the source's, then the destination's. */
  dev: string;
}

export interface AddressSpec {
  addr: string;
  family: 4 | 6;
  prefix?: number;
  dev?: string;
}

/** ADDR[/PREFIX][@DEV] */
export function parseAddress(spec: string): AddressSpec {
  const m = /^([^/@]+)(?:\/(\d{1,3}))?(?:@([^/@\s]+))?$/.exec(spec);
  const fam = m ? isIP(m[1]) : 0;
  if (!m || !fam || (m[2] !== undefined && Number(m[2]) > (fam === 4 ? 32 : 128))) {
    throw new CkptError('ERR_CKPT_USAGE', `--move-address ${spec}: expected ADDR[/PREFIX][@DEV], e.g. 10.0.0.100/24 or 10.0.0.100@eth0`);
  }
  return { addr: m[1], family: fam as 4 | 6, ...(m[2] !== undefined ? { prefix: Number(m[2]) } : {}), ...(m[3] ? { dev: m[3] } : {}) };
}

/** The address as this host has it (source side): it must be one of ours. */
export function ownAddress(s: AddressSpec): MovedAddress {
  const have = native.sock.netifAddrs().filter((a) => a.family === s.family && sameAddr(a.addr, s.addr) && (!s.dev || a.name === s.dev));
  if (!have.length) {
    throw new CkptError('ERR_CKPT_USAGE', `--move-address ${s.addr}: no interface${s.dev ? ` ${s.dev}` : ''} of this host has that address`, {
      hint: 'the address to move must be on the source host (ip addr add ADDR/PREFIX dev DEV), where the service listens',
    });
  }
  return { addr: s.addr, family: s.family, prefix: s.prefix ?? have[0].prefix, dev: s.dev ?? have[0].name };
}

/**
 * Where the address goes on this host (destination side): the interface named, else the one with
 * an address in the same subnet. It must not be here already.
 */
export function placeAddress(a: MovedAddress, dev?: string): MovedAddress {
  const all = native.sock.netifAddrs();
  if (all.some((x) => x.family === a.family && sameAddr(x.addr, a.addr))) {
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `the address ${a.addr} to move is on the destination already`);
  }
  const on = dev ?? all.find((x) => x.family === a.family && x.name !== 'lo' && inSubnet(x.addr, a.addr, a.prefix, a.family))?.name;
  if (!on || !native.sock.netifIndex(on)) {
    throw new CkptError('ERR_CKPT_MIGRATE_FAILED', `no interface of the destination ${dev ? `named ${dev}` : `is on the subnet of ${a.addr}/${a.prefix}`}`, {
      hint: 'name the interface: --move-address ADDR/PREFIX@DEV',
    });
  }
  return { ...a, dev: on };
}

export function addAddress(a: MovedAddress): void {
  native.sock.netifAddAddr(native.sock.netifIndex(a.dev), a.family, a.addr, a.prefix);
}

export function removeAddress(a: MovedAddress): void {
  native.sock.netifDelAddr(native.sock.netifIndex(a.dev), a.family, a.addr, a.prefix);
}

/** A gratuitous ARP (IPv4): the neighbours' caches point at this host. IPv6 neighbours find it by themselves. */
export function announce(a: MovedAddress): void {
  if (a.family === 4) native.sock.arpAnnounce(a.dev, a.addr);
}

function sameAddr(x: string, y: string): boolean {
  return x === y || x.toLowerCase() === y.toLowerCase();
}

function inSubnet(x: string, y: string, prefix: number, family: 4 | 6): boolean {
  const bits = (s: string): bigint => {
    if (family === 4) return s.split('.').reduce((acc, o) => (acc << 8n) | BigInt(Number(o)), 0n);
    const [head, tail] = s.split('::');
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
    return groups.reduce((acc, g) => (acc << 16n) | BigInt(Number.parseInt(g || '0', 16)), 0n);
  };
  const width = family === 4 ? 32 : 128;
  const shift = BigInt(width - prefix);
  return bits(x) >> shift === bits(y) >> shift;
}
