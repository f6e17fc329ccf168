/** How unix sockets are named in messages and shown by `ckpt show`. */
import { openDescriptions, type FdRecord, type SocketRow } from '@ckpt/core';
import { NAME, type UnixSocketData } from './record.js';

/** "a unix stream socket (/run/x.sock)" */
export function describeSocket(d: Pick<UnixSocketData, 'type' | 'name'>): string {
  return `a unix ${d.type} socket${d.name ? ` (${d.name})` : ''}`;
}

/** `ckpt show`: one row per unix socket of the image (every pid:fd holding it), with the bytes queued each way. */
export function unixSocketRows(procs: ReadonlyArray<{ pid: number; fds: readonly FdRecord[] }>): SocketRow[] {
  const socks = openDescriptions<UnixSocketData>(procs, NAME).map(({ record, holders }) => ({ d: record.data!, holders }));
  const byIno = new Map(socks.map((s) => [s.d.ino, s]));
  return socks.map(({ d, holders }) => {
    const peer = d.peer ? byIno.get(d.peer) : undefined;
    return {
      family: 'unix',
      type: d.type,
      state: d.state + (d.external ? ' (external)' : d.pending?.length ? ` (${d.pending.length} pending)` : ''),
      holders,
      local: d.name ?? '',
      remote: d.external ?? d.peerName ?? (peer ? `[${peer.holders[0]}]` : d.state === 'disconnected' ? '(closed)' : ''),
      recvQ: d.queuedBytes,
      recvMessages: d.queue.length,
      sendQ: peer?.d.queuedBytes ?? 0,
    };
  });
}
