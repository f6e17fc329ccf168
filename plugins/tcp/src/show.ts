/** How sockets of the tcp plugin are named in messages and shown by `ckpt show`. */
import { openDescriptions, type FdRecord, type SocketRow } from '@ckpt/core';
import { NAME, type InetAddr, type InetSocketData } from './record.js';

/** "1.2.3.4:80", "[::1]:6379"; "*" for none. */
export const fmtAddr = (a?: InetAddr) => (!a ? '*' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);

/** "tcp [::1]:6379 -> [::1]:50000" */
export function describeSocket(d: Pick<InetSocketData, 'proto' | 'family' | 'local' | 'peer'>): string {
  return `${d.proto}${d.family === 6 ? '6' : ''} ${fmtAddr(d.local)}${d.peer ? ` -> ${fmtAddr(d.peer)}` : ''}`;
}

/** `ckpt show`: one row per TCP/UDP socket of the image, with every pid:fd holding it. */
export function inetSocketRows(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>): SocketRow[] {
  const addr = (a?: InetAddr) => (!a ? '' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);
  return openDescriptions<InetSocketData>(procs, NAME).map(({ record, holders }) => {
    const i = record.data!;
    return {
      family: i.family === 6 ? 'inet6' : 'inet',
      type: i.proto,
      state: i.state + (i.backlog !== undefined ? ` (backlog ${i.backlog})` : '') + (i.locked ? ' (blocked)' : ''),
      holders,
      local: addr(i.local) || '*',
      remote: addr(i.peer),
      recvQ: i.recvQueue,
      recvMessages: i.datagrams?.length ?? 0,
      sendQ: i.sendQueue,
      ...(i.note ? { note: i.note } : {}),
    };
  });
}
