/** How sockets of the tcp plugin are named in messages and shown by `ckpt show`. */
import type { FdRecord, SocketRow } from '@ckpt/core';
import { NAME, type InetAddr, type InetSocketData } from './record.js';

/** "1.2.3.4:80", "[::1]:6379"; "*" for none. */
export const fmtAddr = (a?: InetAddr) => (!a ? '*' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);

/** "tcp [::1]:6379 -> [::1]:50000" */
export function describeSocket(d: Pick<InetSocketData, 'proto' | 'family' | 'local' | 'peer'>): string {
  return `${d.proto}${d.family === 6 ? '6' : ''} ${fmtAddr(d.local)}${d.peer ? ` -> ${fmtAddr(d.peer)}` : ''}`;
}

/** `ckpt show`: one row per TCP/UDP socket of the image, with every pid:fd holding it. */
export function inetSocketRows(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>): SocketRow[] {
  const rows: SocketRow[] = [];
  const byHolder = new Map<string, SocketRow>();
  const addr = (a?: InetAddr) => (!a ? '' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);
  for (const p of procs) {
    for (const f of p.fds) {
      if (f.owner !== NAME) continue;
      if (f.sameAs) {
        byHolder.get(`${f.sameAs.pid}:${f.sameAs.fd}`)?.holders.push(`${p.pid}:${f.fd}`);
        continue;
      }
      const i = f.data as InetSocketData;
      const row: SocketRow = {
        family: i.family === 6 ? 'inet6' : 'inet',
        type: i.proto,
        state: i.state + (i.backlog !== undefined ? ` (backlog ${i.backlog})` : '') + (i.locked ? ' (blocked)' : ''),
        holders: [`${p.pid}:${f.fd}`],
        local: addr(i.local) || '*',
        remote: addr(i.peer),
        recvQ: i.recvQueue,
        recvMessages: i.datagrams?.length ?? 0,
        sendQ: i.sendQueue,
        ...(i.note ? { note: i.note } : {}),
      };
      rows.push(row);
      byHolder.set(`${p.pid}:${f.fd}`, row);
    }
  }
  return rows;
}
