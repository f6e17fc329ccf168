/**
 * @ckpt/plugin-unix-socket — AF_UNIX (AF_LOCAL) sockets: stream, datagram and seqpacket.
 *
 * Dump (fds.dump, for fds of kind "socket" whose SO_DOMAIN is AF_UNIX): the kernel's table of
 * unix sockets is read once per dump through NETLINK_SOCK_DIAG (name, peer, pending connections
 * of listeners, queue lengths, shutdown state), matched by inode with the fstat of our duplicate
 * of the fd. Each socket's receive queue is read without consuming it (MSG_PEEK walked with
 * SO_PEEK_OFF, put back afterwards): stream bytes as one run, datagrams and seqpacket messages
 * one by one with their sender's address. Options (SO_SNDBUF, SO_RCVBUF, SO_PASSCRED,
 * SO_PASSSEC, SO_PEEK_OFF, SO_RCVLOWAT, SO_RCVTIMEO, SO_SNDTIMEO) and O_NONBLOCK are saved.
 * The data in a socket's receive queue belongs to that socket: it is saved once, with it.
 *
 * Refused, with the pid, the fd and the address: a peer outside the checkpointed tree (unless
 * its address is declared with `--external unix:PATH` or `unix:@abstract`: the socket is then
 * connected to PATH afresh at restore; a connection accepted by the tree from an outside client
 * comes back as a connection whose client has gone: its queued bytes, then end of file); file
 * descriptors in flight (SCM_RIGHTS) in a receive queue; data sent on a connection a listener
 * of the tree has not accept()ed yet (it sits in a socket no fd reaches); sockets of another
 * network namespace.
 *
 * Restore builds every unix socket of the image at once, in the restorer, on the first socket
 * fd asked for (each process then gets a duplicate of its own, installed like any fd, shared
 * descriptions staying shared through core's fd table):
 *   1. sockets: socketpair() for pairs of unnamed sockets, socket() for the others;
 *   2. names: bind (a stale socket file at the image's own path is removed first, never a live
 *      one); relative names are bound in their directory, so getsockname() is unchanged;
 *      the file's mode and owner are put back; listen() with the saved backlog;
 *   3. connections: the client connects to its listener (the one of the image, or a temporary
 *      one at the same address when it is gone) and the accepted socket is taken from it;
 *   4. queued data: each socket's receive queue is written from its peer (or, for datagrams,
 *      from the socket bound to the sender's address, so recvfrom() sees the same sender),
 *      message by message, before any datagram socket connects;
 *   5. datagram sockets connect to their peers; clients queued on a listener (connected, not
 *      yet accepted) connect again, in their order, so they are pending again; external peers
 *      are connected afresh;
 *   6. shutdown state, closed peers (the other end is closed after the data, with a byte left
 *      in it when the socket had a pending ECONNRESET), options, flags; socket files the program
 *      had unlinked are unlinked again.
 *
 * SO_PEERCRED (the pid and effective ids of whoever made the peer end): a socketpair is made
 * again by its maker, a listener listens again in the process that had called listen(), and an
 * accepted connection is connected again by its client's process, each for the moment with the
 * ids it had then, when that process is in the image.
 * Not kept: the credentials attached to queued messages; SO_PEERCRED that names a process outside
 * the image, or of a connection still pending on a listener (the restorer made it: it names
 * ckpt restore); out-of-band data (MSG_OOB: refused);
 * outside clients queued on a listener, not accept()ed yet (dropped, logged); data received from
 * an external peer before the dump (dropped: the new connection cannot carry it); a pending
 * error on a datagram socket (read, and so cleared, by the dump). Empty datagrams and seqpacket
 * messages that were peeked before (MSG_PEEK by the program, or an earlier --leave-running
 * dump) are invisible to offset peeks unless first in the queue; empty seqpacket messages after
 * the peer shut down its side cannot be told from end of file.
 *
 * Files: record.ts (name, options, record schemas and types), names.ts (addresses, --external),
 * sockopts.ts (socket types and options), session.ts (state shared by dump and restore), dump.ts,
 * restore.ts (buildAll and its steps), build.ts (what a restore holds), check.ts (names free to
 * bind), fill.ts (queued data at restore), show.ts (`ckpt show`, descriptions).
 */
import { definePlugin, type DumpSession, type FdRecord, type PluginContext, type RestoreSession } from '@ckpt/core';
import { NAME, unixSocketData, unixSocketOptions, type UnixSocketData, type UnixSocketOptions } from './record.js';
import { sessionOptions } from './session.js';
import { makeAfterDump, makeDumpFd } from './dump.js';
import { checkNames } from './check.js';
import { makeRestoreFd } from './restore.js';
import { describeSocket, unixSocketRows } from './show.js';

export {
  NAME,
  unixSocketOptions,
  unixType,
  unixState,
  unixOptions,
  queuedMessage,
  unixSocketData,
  type UnixSocketOptions,
  type UnixType,
  type UnixState,
  type UnixOptions,
  type QueuedMessage,
  type UnixSocketData,
} from './record.js';
export { addrText } from './names.js';

export const unixSocketPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'AF_UNIX stream, datagram and seqpacket sockets: pairs, listeners, pending connections, queued data, options',
  options: unixSocketOptions,
  flags: [
    {
      command: 'dump' as const,
      flags: '--external <spec...>',
      description: 'accept a peer outside the tree, reconnected at restore: unix:PATH or unix:@ABSTRACT; repeatable',
      option: 'external',
      list: true,
    },
    {
      command: 'restore' as const,
      flags: '--external <spec...>',
      description: 'reconnect an external peer of the image elsewhere: unix:PATH=NEWPATH; repeatable',
      option: 'external',
      list: true,
    },
  ],
  record: { version: 1, fd: unixSocketData },
  claims: { fdKinds: ['unix'] },
  show: { sockets: unixSocketRows, fdName: (rec: FdRecord) => describeSocket(rec.data as UnixSocketData) },
  apply(hooks, ctx: PluginContext<UnixSocketOptions>) {
    const bind = async (session: DumpSession | RestoreSession) => {
      Object.assign(sessionOptions.of(session), ctx.options(session) ?? {});
    };
    hooks.session.beforeDump.tapPromise(NAME, bind);
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => req.kind === 'socket' }, makeDumpFd(ctx.log));
    hooks.session.fdsDumped.tapPromise(NAME, makeAfterDump(ctx.log));
    hooks.session.beforeRestore.tapPromise(NAME, async (session) => {
      await bind(session);
      checkNames(session);
    });
    hooks.fds.restore.for(NAME).tapPromise(NAME, makeRestoreFd(ctx.log));
  },
}));

export default unixSocketPlugin;
