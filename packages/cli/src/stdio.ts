/**
 * Output whose reader has gone: `ckpt dump -v 2>&1 | head -1`, `ckpt show DIR | less` quit early.
 * Node reports the closed pipe as an 'error' event on process.stdout or process.stderr (EPIPE),
 * which, unheard, ends the command at once: a dump stopped half-way by its log's reader (the
 * target left as it was, but no image, and no word of why, since stderr is the closed pipe). The
 * command's work matters more than its words: the stream drops what is written after, and the
 * command goes on to its own end and exit status.
 *
 * Node makes each stream at its first use; the listener is added then, so that a command that
 * never writes to stderr does not pay for opening it.
 */
const opened = new Map<'stdout' | 'stderr', NodeJS.WriteStream>();

/** Whether stdout or stderr (those made so far) still holds output the kernel has not taken. */
export function outputPending(): boolean {
  return [...opened.values()].some((s) => s.writableLength > 0);
}

export function tolerateClosedOutput(): void {
  for (const name of ['stdout', 'stderr'] as const) {
    const desc = Object.getOwnPropertyDescriptor(process, name);
    if (!desc?.get || !desc.configurable) continue;
    const make = desc.get;
    let stream: NodeJS.WriteStream | undefined;
    Object.defineProperty(process, name, {
      configurable: true,
      enumerable: desc.enumerable,
      get() {
        if (!stream) {
          stream = make.call(process) as NodeJS.WriteStream;
          opened.set(name, stream);
          stream.on('error', (e: NodeJS.ErrnoException) => {
            if (e.code !== 'EPIPE' && e.code !== 'ERR_STREAM_DESTROYED') throw e;
          });
        }
        return stream;
      },
    });
  }
}
