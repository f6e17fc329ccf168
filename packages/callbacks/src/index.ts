/**
 * @ckpt/callbacks — checkpoint callbacks for Node.js programs that ckpt checkpoints.
 *
 *   import { register } from '@ckpt/callbacks';
 *   await register({
 *     async prepare(req) {            // ckpt is about to checkpoint this process
 *       await flushLogs();
 *       await db.close();             // a connection to a service outside the checkpoint
 *       if (busy) req.veto('in the middle of a transaction');
 *     },
 *     async resume(event) {           // 'continue' | 'restart' | 'failed'
 *       if (event !== 'failed') await db.connect();
 *     },
 *   });
 *
 * The process listens on a unix socket with an abstract name starting with "ckpt-callbacks/",
 * which is how ckpt finds it; the listener and the connection do not keep the event loop alive.
 * Between `prepare` and `resume` the process runs on (it is frozen only for the dump itself).
 * Only ckpt running as root or as this user is answered, when @ckpt/native is there to read the
 * peer's credentials (SO_PEERCRED); without it any local process of this network namespace could
 * ask for a prepare. The wire protocol is in PROTOCOL.md.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

export const PREFIX = 'ckpt-callbacks/';

export type ResumeEvent = 'continue' | 'restart' | 'failed';

/** A checkpoint being prepared (valid until `prepare` returns). */
export interface Request {
  /** The process is killed once the checkpoint is made (a dump without --leave-running). */
  readonly willExit: boolean;
  /** Memory the image need not hold: [start, end), page-aligned addresses (it comes back zeroed). */
  exclude(start: number, end: number): void;
  /** An fd this process re-establishes itself after a restart (the image holds /dev/null there). */
  takeOver(fd: number): void;
  /** More time: the checkpoint waits ms more for `prepare` (bounded by ckpt). */
  delay(ms: number): void;
  /** Refuses this checkpoint; `resume` is not called for it. */
  veto(reason: string): void;
}

export interface Callbacks {
  prepare?(req: Request): void | Promise<void>;
  /** detail: why, for 'failed'. */
  resume?(event: ResumeEvent, detail: string): void | Promise<void>;
}

export interface Registration {
  /** The abstract name listened on (without its leading NUL). */
  readonly name: string;
  close(): void;
}

type PeerUid = (socket: net.Socket) => number | undefined;

/** SO_PEERCRED through @ckpt/native when it is installed; undefined: cannot tell. */
async function peerUidReader(): Promise<PeerUid> {
  try {
    const { native } = (await import('@ckpt/native')) as unknown as {
      native: { sock: { unixGetsockopt(fd: number, level: number, name: number, len: number): Buffer } };
    };
    return (socket) => {
      const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0) return undefined;
      // struct ucred { pid, uid, gid }; SOL_SOCKET 1, SO_PEERCRED 17.
      return native.sock.unixGetsockopt(fd, 1, 17, 12).readUInt32LE(4);
    };
  } catch {
    return () => undefined;
  }
}

function lines(socket: net.Socket, onLine: (line: string) => void): void {
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      onLine(line);
    }
  });
}

/** One connection of ckpt: PREPARE then RESUME, or (after a restart) RESUME alone. */
function serve(socket: net.Socket, cb: Callbacks): void {
  socket.unref();
  socket.on('error', () => socket.destroy());
  let queue = Promise.resolve();
  lines(socket, (line) => {
    queue = queue.then(async () => {
      const [word, , kind, ...rest] = line.trim().split(' ');
      if (word === 'PREPARE') {
        let vetoed = false;
        const send = (l: string) => socket.write(`${l}\n`);
        const req: Request = {
          willExit: line.includes(' exit '),
          exclude: (start, end) => send(`EXCLUDE ${start.toString(16)} ${end.toString(16)}`),
          takeOver: (fd) => send(`TAKEOVER ${fd}`),
          delay: (ms) => send(`DELAY ${Math.max(0, Math.round(ms))}`),
          veto: (reason) => {
            vetoed = true;
            send(`VETO ${reason.replace(/\n/g, ' ')}`);
          },
        };
        await cb.prepare?.(req);
        if (vetoed) socket.end();
        else socket.write('READY\n');
      } else if (word === 'RESUME') {
        const event: ResumeEvent = kind === 'restart' ? 'restart' : kind === 'failed' ? 'failed' : 'continue';
        await cb.resume?.(event, event === 'failed' ? rest.join(' ') : '');
        socket.end('DONE\n');
      }
    });
  });
}

/** Asks ckpt for checkpoint callbacks: starts listening. */
export async function register(cb: Callbacks): Promise<Registration> {
  const peerUid = await peerUidReader();
  const name = `${PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`;
  const me = process.getuid?.() ?? 0;
  const server = net.createServer((socket) => {
    const uid = peerUid(socket);
    if (uid !== undefined && uid !== 0 && uid !== me) return socket.destroy();
    serve(socket, cb);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: `\0${name}` }, () => resolve());
  });
  server.unref();
  return { name, close: () => server.close() };
}
