// Unix socket addresses: text form for people and back, path names on disk, --external declarations.
import { describe, expect, it } from 'vitest';
import type { UnixSocketData } from './record.js';
import { addrText, bindsName, externals, isPath, parseAddrText, pathOf, rawOf, reachable } from './names.js';

const rec = (more: Partial<UnixSocketData>): UnixSocketData => ({
  ino: 1,
  type: 'stream',
  state: 'unconnected',
  flags: 0,
  shutdown: 0,
  queue: [],
  queuedBytes: 0,
  opts: { sndbuf: 0, rcvbuf: 0, passcred: false, passsec: false, peekOff: -1, rcvlowat: 1, rcvtimeo: [0, 0], sndtimeo: [0, 0] },
  ...more,
});

describe('addrText / parseAddrText', () => {
  it('paths as they are, abstract names as @name with \\xNN for odd bytes, unnamed as ""', () => {
    expect(addrText(Buffer.from('/run/x.sock'))).toBe('/run/x.sock');
    expect(addrText(Buffer.from('\0abc'))).toBe('@abc');
    expect(addrText(Buffer.from([0, 0x61, 0, 0x5c, 0xff, 0x20]))).toBe('@a\\x00\\x5c\\xff ');
    expect(addrText(Buffer.alloc(0))).toBe('');
  });

  it('round-trips every abstract name and path', () => {
    for (const raw of [
      Buffer.from('/run/x.sock'),
      Buffer.from('rel/y'),
      Buffer.from('\0abc'),
      Buffer.from([0, 0, 1, 0x5c, 0x78, 0x7f, 0x80, 0xff]),
      Buffer.from('\0@x'),
    ]) {
      expect(parseAddrText(addrText(raw)).equals(raw)).toBe(true);
    }
  });

  it('parses escapes in either case, and UTF-8 names', () => {
    expect(parseAddrText('@a\\x0A\\x0b')).toEqual(Buffer.from([0, 0x61, 0x0a, 0x0b]));
    expect(parseAddrText('@é')).toEqual(Buffer.from('\0é'));
  });
});

describe('rawOf / isPath', () => {
  it('decodes base64 fields, empty when absent', () => {
    expect(rawOf(Buffer.from('/x').toString('base64')).toString()).toBe('/x');
    expect(rawOf(undefined).length).toBe(0);
    expect(isPath(Buffer.from('/x'))).toBe(true);
    expect(isPath(Buffer.from('\0x'))).toBe(false);
    expect(isPath(Buffer.alloc(0))).toBe(false);
  });
});

describe('externals', () => {
  it('keeps the unix: entries, with their new address when one is given', () => {
    const m = externals(['unix:/run/a', 'unix:@b=/run/c', 'tcp:1.2.3.4:5', 'unix:', 'unix:/d=']);
    expect([...m]).toEqual([
      ['/run/a', '/run/a'],
      ['@b', '/run/c'],
      ['/d', ''],
    ]);
    expect(externals(undefined).size).toBe(0);
  });
});

describe('pathOf / reachable / bindsName', () => {
  it('resolves relative names in the directory they were bound in', () => {
    expect(pathOf(rec({ nameRaw: Buffer.from('s.sock').toString('base64'), dir: '/srv' }))).toBe('/srv/s.sock');
    expect(pathOf(rec({ nameRaw: Buffer.from('/abs.sock').toString('base64'), dir: '/srv' }))).toBe('/abs.sock');
    expect(pathOf(rec({ nameRaw: Buffer.from('\0abs').toString('base64') }))).toBeUndefined();
    expect(pathOf(rec({}))).toBeUndefined();
    expect(reachable(Buffer.from('s.sock'), rec({ dir: '/srv' })).toString()).toBe('/srv/s.sock');
    expect(reachable(Buffer.from('s.sock')).toString()).toBe('/s.sock');
    const abstract = Buffer.from('\0x');
    expect(reachable(abstract, rec({ dir: '/srv' }))).toBe(abstract);
  });

  it('a socket binds its name unless it inherited it from its listener', () => {
    expect(bindsName(rec({ nameRaw: 'AA==' }))).toBe(true);
    expect(bindsName(rec({ nameRaw: 'AA==', bound: true }))).toBe(true);
    expect(bindsName(rec({ nameRaw: 'AA==', bound: false }))).toBe(false);
    expect(bindsName(rec({}))).toBe(false);
  });
});
