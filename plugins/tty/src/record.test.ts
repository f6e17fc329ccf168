// The tty schemas: the fd data of a pty and the per-process controlling terminal record.
import { describe, expect, it } from 'vitest';
import { ttyFdData, ttyOptions, ttyProcessRecord, type TtyFdData, type TtyProcessRecord } from './record.js';

const termios = Buffer.alloc(36, 1).toString('base64');
const winsize = Buffer.from([24, 0, 80, 0, 0, 0, 0, 0]).toString('base64');

const slave = (): TtyFdData => ({ side: 'slave', index: 3, path: '/dev/pts/3', flags: 0o2, termios, winsize });
const master = (): TtyFdData => ({ side: 'master', index: 3, path: '/dev/ptmx', flags: 0o4002, termios, winsize, packet: true, locked: true });
const proc = (): TtyProcessRecord => ({ ctty: { index: 3, leader: true, tpgid: 4242 } });

describe('ttyFdData', () => {
  it('accepts a slave, a master, /dev/tty and a hung-up terminal as the dump writes them', () => {
    for (const d of [
      slave(),
      master(),
      { ...slave(), path: '/dev/tty', devTty: true },
      { side: 'slave', index: 0, path: '/dev/pts/0', flags: 0, hungUp: true },
    ]) {
      const json = JSON.parse(JSON.stringify(d));
      expect(ttyFdData.parse(json)).toEqual(json);
    }
  });

  it('refuses an unknown side, a wrong type and an unknown key', () => {
    expect(ttyFdData.safeParse({ ...slave(), side: 'peer' }).success).toBe(false);
    expect(ttyFdData.safeParse({ ...slave(), index: '3' }).success).toBe(false);
    expect(ttyFdData.safeParse({ ...slave(), index: -1 }).success).toBe(false);
    expect(ttyFdData.safeParse({ ...slave(), name: '/dev/pts/3' }).success).toBe(false);
  });

  it('refuses termios that is not base64', () => {
    expect(ttyFdData.safeParse({ ...slave(), termios: 'not base64!' }).success).toBe(false);
  });
});

describe('ttyProcessRecord', () => {
  it('accepts a record as the dump writes it (tpgid 0: no foreground group)', () => {
    expect(ttyProcessRecord.parse(proc())).toEqual(proc());
    expect(ttyProcessRecord.safeParse({ ctty: { index: 0, leader: false, tpgid: 0 } }).success).toBe(true);
  });

  it('refuses a missing ctty, a wrong type and an unknown key', () => {
    expect(ttyProcessRecord.safeParse({}).success).toBe(false);
    expect(ttyProcessRecord.safeParse({ ctty: { ...proc().ctty, leader: 1 } }).success).toBe(false);
    expect(ttyProcessRecord.safeParse({ ctty: { ...proc().ctty, sid: 1 } }).success).toBe(false);
    expect(ttyProcessRecord.safeParse({ ...proc(), extra: true }).success).toBe(false);
  });
});

describe('ttyOptions', () => {
  it('takes terminal, nothing else', () => {
    expect(ttyOptions.safeParse({ terminal: true }).success).toBe(true);
    expect(ttyOptions.safeParse({ tty: true }).success).toBe(false);
  });
});
