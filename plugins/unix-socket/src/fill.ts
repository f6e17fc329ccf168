/** Queued data at restore: each receive queue written again from the socket's peer or from its senders. */
import { unlinkSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import type { Logger } from '@ckpt/core';
import { native, type NativeError, SOCK_DGRAM, SOCK_NONBLOCK } from '@ckpt/native';
import type { QueuedMessage } from './record.js';
import { bindsName, isPath, rawOf, reachable } from './names.js';
import { roomToSend } from './sockopts.js';
import { closeQuietly, restoreError, type Build, type Sock } from './build.js';

/** Our fds of the files in flight with message m (passed along with it, SCM_RIGHTS), if any. */
function fdsOf(b: Build, s: Sock, m: QueuedMessage): number[] | undefined {
  if (!m.fds?.length) return undefined;
  return m.fds.map((id) => {
    const fd = b.inFlight.get(`${s.pid}:${id}`);
    if (fd === undefined) throw restoreError(s, 'files in flight', new Error(`file ${id} was not made`));
    return fd;
  });
}

/** Stream and seqpacket: the queue written from the peer (or the closer standing for a closed one). */
export function fillStream(b: Build, s: Sock): void {
  const from = s.closer ?? (s.d.peer ? b.socks.get(s.d.peer)?.rfd : undefined);
  if (from === undefined) throw restoreError(s, 'queued data', new Error('no peer to send it from'));
  roomToSend(from, s.d.queuedBytes + 4096 * s.d.queue.length);
  for (const m of s.d.queue) {
    try {
      native.sock.unixSend(from, Buffer.from(m.data, 'base64'), undefined, fdsOf(b, s, m));
    } catch (e) {
      throw restoreError(s, `writing back ${s.d.queuedBytes} queued bytes`, e);
    }
  }
}

/**
 * The socket a datagram is sent from: the socket of the image bound to its sender's address, the
 * socketpair partner for an unnamed sender, or a stand-in (bound to the sender's address if it is free).
 */
function senderOf(b: Build, s: Sock, m: QueuedMessage, partner: Sock | undefined, temps: Map<string, number>, log: Logger): number {
  const fromRaw = rawOf(m.fromRaw);
  let sender: number | undefined;
  // The socket of the image bound to the sender's address, so that recvfrom() names it.
  if (fromRaw.length) sender = [...b.socks.values()].find((x) => x.d.type === 'dgram' && bindsName(x.d) && x.d.nameRaw === m.fromRaw)?.rfd;
  if (sender === undefined && !fromRaw.length && partner) sender = partner.rfd;
  // A gone partner's datagrams: from the stand-in at the other end of its socketpair.
  if (sender === undefined && !fromRaw.length && s.closer !== undefined) sender = s.closer;
  if (sender === undefined) {
    const key = m.fromRaw ?? '';
    sender = temps.get(key);
    if (sender === undefined) {
      sender = native.sock.unixSocket(SOCK_DGRAM | SOCK_NONBLOCK);
      temps.set(key, sender);
      if (fromRaw.length) {
        try {
          // A sender outside the image: a stand-in bound to its address, if it is free.
          if (isPath(fromRaw) && !isAbsolute(fromRaw.toString('utf8'))) throw new Error('relative');
          native.sock.unixBind(sender, fromRaw);
          if (isPath(fromRaw)) unlinkSync(fromRaw.toString('utf8'));
        } catch {
          log('pid %d fd %d: a datagram from %s comes back from an unnamed sender', s.pid, s.fd, m.from);
        }
      }
    }
  }
  return sender;
}

/** Datagrams: each one sent again from its sender, to the socket's address (or through its socketpair). */
export function fillDatagrams(b: Build, s: Sock, log: Logger): void {
  const own = reachable(rawOf(s.d.nameRaw), s.d);
  const partner = s.pairedWith !== undefined ? b.socks.get(s.pairedWith) : undefined;
  const temps = new Map<string, number>();
  try {
    for (const m of s.d.queue) {
      const data = Buffer.from(m.data, 'base64');
      const sender = senderOf(b, s, m, partner, temps, log);
      roomToSend(sender, data.length + 4096);
      const toPartner = (partner && sender === partner.rfd) || sender === s.closer;
      if (!toPartner && !own.length) {
        throw restoreError(s, 'queued datagrams', new Error(`the socket has no address, and the sender ${m.from ?? '(unnamed)'} is not its peer`));
      }
      try {
        native.sock.unixSend(sender, data, toPartner ? null : own, fdsOf(b, s, m));
      } catch (e) {
        throw restoreError(
          s,
          `writing back ${s.d.queue.length} queued datagrams`,
          e,
          (e as NativeError).code === 'EAGAIN' ? 'more datagrams were queued than net.unix.max_dgram_qlen lets a socket other than its peer queue' : undefined,
        );
      }
    }
  } finally {
    for (const t of temps.values()) closeQuietly(t);
  }
}
