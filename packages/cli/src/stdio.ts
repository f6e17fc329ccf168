/**
 * The command's stdout and stderr.
 *
 * Output to a pipe or a file goes out through a plain synchronous writer, not Node's stream:
 * Node makes process.stdout for a pipe a net.Socket, which loads `net` and opens a pipe handle
 * (3-3.5 ms of every command whose output is read by a program, for a line or two), and writes
 * to it synchronously anyway (Linux). The writer writes every byte before it returns, as Node's
 * does. A terminal gets Node's own stream (its size, its colors).
 *
 * Output whose reader has gone (`ckpt dump -v 2>&1 | head -1`, `ckpt show DIR | less` quit
 * early): Node reports the closed pipe as an 'error' event (EPIPE), which, unheard, ends the
 * command at once: a dump stopped half-way by its log's reader (the target left as it was, but no
 * image, and no word of why, since stderr is the closed pipe). The command's work matters more
 * than its words: what is written after is dropped, and the command goes on to its own end and
 * exit status.
 *
 * Each is made at its first use, as Node makes its own: a command that never writes to stderr does
 * not open it.
 */
import { EventEmitter } from 'node:events';
import { fstatSync, writeSync } from 'node:fs';
import { sleepSync } from '@ckpt/core';

type Out = NodeJS.WriteStream;
/** The major number of Linux's memory devices (/dev/null, /dev/zero, /dev/full...): none is a terminal. */
const MEM_MAJOR = 1;
const opened = new Map<'stdout' | 'stderr', Out>();

/** Whether stdout or stderr (those made so far) still holds output the kernel has not taken. */
export function outputPending(): boolean {
  return [...opened.values()].some((s) => s.writableLength > 0);
}

/** A write(2) loop on fd, for a pipe or a file: what Node's stdio stream does there, without a stream. */
class PlainOutput extends EventEmitter {
  readonly isTTY = false;
  readonly writable = true;
  readonly writableLength = 0;
  private closed = false;

  constructor(readonly fd: number) {
    super();
  }

  write(chunk: string | Uint8Array, encoding?: BufferEncoding | ((e?: Error | null) => void), cb?: (e?: Error | null) => void): boolean {
    const done = typeof encoding === 'function' ? encoding : cb;
    if (!this.closed) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8') : chunk;
      for (let off = 0; off < buf.length; ) {
        try {
          off += writeSync(this.fd, buf, off);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          // A non-blocking pipe (its flags are the writer's who made it) that is full: wait for room.
          if (code === 'EAGAIN') {
            sleepSync(1);
            continue;
          }
          this.closed = true;
          // The reader has gone: nothing more to say (see above), unless someone listens for it
          // (the tty forwarder stops copying). Anything else is Node's 'error'.
          if (code !== 'EPIPE' || this.listenerCount('error')) process.nextTick(() => this.emit('error', e));
          break;
        }
      }
    }
    if (done) process.nextTick(done, null);
    return true;
  }

  end(chunk?: string | Uint8Array | (() => void), cb?: () => void): this {
    if (chunk && typeof chunk !== 'function') this.write(chunk);
    const done = typeof chunk === 'function' ? chunk : cb;
    if (done) process.nextTick(done);
    return this;
  }

  cork(): void {}
  uncork(): void {}
  hasColors(): boolean {
    return false;
  }
  getColorDepth(): number {
    return 1;
  }
}

/**
 * A pipe, a socket, a file or one of the memory devices (major 1: /dev/null, where a benchmark or a
 * script sends what it does not read), which Node writes to synchronously on Linux: never a
 * terminal. Node's own stream for /dev/null is a file's, whose module costs 3 ms to load.
 */
function plainTarget(fd: number): boolean {
  try {
    const st = fstatSync(fd);
    return st.isFIFO() || st.isFile() || st.isSocket() || (st.isCharacterDevice() && ((st.rdev >> 8) & 0xfff) === MEM_MAJOR);
  } catch {
    return false;
  }
}

export function setUpOutput(): void {
  for (const [name, fd] of [
    ['stdout', 1],
    ['stderr', 2],
  ] as const) {
    const desc = Object.getOwnPropertyDescriptor(process, name);
    if (!desc?.get || !desc.configurable) continue;
    const make = desc.get;
    let stream: Out | undefined;
    Object.defineProperty(process, name, {
      configurable: true,
      enumerable: desc.enumerable,
      get() {
        if (!stream) {
          if (plainTarget(fd)) {
            stream = new PlainOutput(fd) as unknown as Out;
          } else {
            stream = make.call(process) as Out;
            stream.on('error', (e: NodeJS.ErrnoException) => {
              if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
            });
          }
          opened.set(name, stream);
        }
        return stream;
      },
    });
  }
}
