/**
 * @ckpt/plugin-tcp — TCP and UDP sockets, IPv4 and IPv6.
 *
 * TCP
 *   listening    address, port, backlog and options; recreated with bind + listen. Connections
 *                waiting in the accept queue at dump time are not saved: the kernel resets them
 *                when the dumped listener dies (noted in the image, `ckpt show` prints it).
 *   established  TCP_REPAIR (the peer never notices): sequence numbers, the receive queue (unread
 *                data) and the send queue (unacknowledged data, the never-sent tail kept apart),
 *                window (TCP_REPAIR_WINDOW), MSS, window scaling, SACK, timestamps (the
 *                timestamp clock goes on from where it was, plus the time the dump was away, so
 *                the peer's PAWS check passes) and socket options. Restore creates the socket in
 *                the restorer in repair mode, sets where each queue starts, binds, connects (no
 *                packet is sent in repair mode), sets the options, refills both queues, sets the
 *                window, and leaves repair mode once every process of the image is built
 *                (session.beforeResume), so that two ends restored together never meet half-built.
 *   closing      FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING, LAST_ACK, and CLOSE with the bytes
 *                still unread (the peer is kept: SO_PEERNAME): read like an established one
 *                (the sequence numbers count each FIN exchanged, the queues hold bytes only),
 *                rebuilt ESTABLISHED, then taken to their state the way TCP got there: our FIN
 *                by shutdown(SHUT_WR) in repair mode (marked sent when the peer had acknowledged
 *                it), the peer's FIN, its ACK of ours, or a reset (a closed connection with an
 *                error pending) replayed as bare segments from the peer's address through a raw
 *                socket, marked (REPLAY_MARK) so that they pass the network lock. See closingPlan.
 *   other        unconnected sockets (bound or not) are recreated with their options, shut down
 *                for reading when they were (POLLRDHUP); a connect in progress (SYN_SENT) is
 *                issued again to its peer from its port (bound in repair mode: another socket may
 *                have been given that port since). SYN_RECV (a Fast Open child) is refused.
 *   --tcp-close  (restore) connections come back closed, as if both FINs had crossed: the
 *                application reads the bytes it had received, then EOF; writes fail (EPIPE).
 * UDP
 *   bound and connected sockets with their options, and every queued datagram with its source
 *   address (peeked with SO_PEEK_OFF, sent back into the new socket from the same address and
 *   port through a raw socket).
 *
 * Blocking the peer (the choice): nftables. Between the dump and the moment the restored
 * socket leaves repair mode nothing of the old connection may reach a peer (a FIN, a RST), and
 * nothing of the peer may reach the kernel while no socket owns the connection (the kernel
 * would answer with a RST). A table `inet ckpt` holds two sets of 4-tuples (`tcp4`, `tcp6`)
 * and drops every TCP packet matching one, in prerouting and output, before conntrack
 * (priority -300). Each established connection is added (both directions) right before its
 * socket enters repair mode at dump, in the network namespace of the dumped process.
 *   - dump (the process is killed): the connection stays blocked; the socket is put back in
 *     repair mode at session.imageCommitted, just before the kill, so the kill closes it silently (no
 *     FIN, no RST) and frees its 4-tuple. The restore removes the block once the new socket has
 *     left repair mode (and, with --tcp-close, at the end of the restore).
 *   - dump --leave-running: the repair window is as short as it can be (enter, read, leave within
 *     fds.dump) and the block is removed at once: the connection is blocked only while it
 *     is read.
 *   - a failed dump (session.dumpFailed, before core thaws anything): sockets are taken out of
 *     repair mode and blocks removed before anything runs again.
 *   - restore blocks the connection too (a no-op when the dump left it blocked) from before the
 *     socket exists until it has left repair mode. A failed restore closes the half-built
 *     sockets in repair mode (silently) and keeps the blocks the dump made, so that a second
 *     try can succeed; it removes the blocks it made itself.
 *   - the 4-tuple may still be held by the orphaned remains of the old socket (the process was
 *     killed after a --leave-running dump and its FIN never got an answer): restore destroys
 *     such an orphan (sock_diag SOCK_DESTROY; its RST is dropped by the block) and connects
 *     again. A 4-tuple held by a live socket of some process is an error.
 * A network namespace per application would spare nftables, but the requirement is that
 * `ckpt run` keeps the host's network, and clients outside the tree (and outside any namespace
 * we could make) must keep their connection. If `ckpt` is killed mid-dump, its blocks
 * are owned by a dead process: the next ckpt (or `ckpt check --repair`) removes them.
 *
 * An error pending on a closed connection cannot be read without clearing it (SO_ERROR, a read):
 * it is seen with poll (POLLERR) and restored as a reset, so the reader gets ECONNRESET (a
 * timeout's ETIMEDOUT, or a refused connect's ECONNREFUSED not yet collected, come back so too).
 * Not saved: out-of-order segments the kernel held (not acknowledged, so the peer sends them
 * again), urgent data, TCP_MD5SIG keys, TCP_FASTOPEN cookies, multicast memberships; buffer
 * sizes (SO_SNDBUF/SO_RCVBUF) of TCP connections (they autotune; listeners and UDP keep theirs).
 *
 * Files: record.ts (name, options, record schemas and types), options.ts (socket options: which
 * are saved, reading and setting them), dump.ts, restore.ts, show.ts (`ckpt show`, descriptions).
 */
import { definePlugin, type FdRecord, type PluginContext } from '@ckpt/core';
import { NAME, inetSocketData, tcpOptions, type InetSocketData, type TcpOptions } from './record.js';
import { imageCommitted, makeDumpFd, undoDump } from './dump.js';
import { afterRestore, restoreFd } from './restore.js';
import { describeSocket, inetSocketRows } from './show.js';

export {
  NAME,
  TCP_STATES,
  tcpOptions,
  inetAddr,
  tcpConnData,
  inetSocketData,
  type InetAddr,
  type TcpConnData,
  type InetSocketData,
  type TcpOptions,
} from './record.js';
export { describeSocket } from './show.js';

export const tcpPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'TCP listeners and connections (TCP_REPAIR, behind the network lock), UDP sockets with queued datagrams; IPv4 and IPv6',
  options: tcpOptions,
  flags: [
    {
      command: 'restore' as const,
      flags: '--tcp-close',
      description: 'restore TCP connections as closed (the application reads what it had received, then EOF), for when the peer is gone',
      option: 'close',
    },
  ],
  record: { version: 1, fd: inetSocketData },
  claims: { fdKinds: ['tcp', 'udp', 'udplite', 'ping', 'raw'] },
  show: { sockets: inetSocketRows, fdName: (rec: FdRecord) => describeSocket(rec.data as InetSocketData) },
  apply(hooks, ctx: PluginContext<TcpOptions>) {
    hooks.fds.dump.tapPromise({ name: NAME, when: (req) => req.kind === 'socket' }, makeDumpFd(ctx));
    hooks.session.imageCommitted.tapPromise(NAME, imageCommitted);
    hooks.session.dumpFailed.tapPromise(NAME, (session) => undoDump(session, ctx));
    hooks.fds.restore.for(NAME).tapPromise(NAME, (rec, proc) => restoreFd(ctx, rec, proc));
    hooks.session.beforeResume.tapPromise(NAME, afterRestore);
  },
}));

export default tcpPlugin;
