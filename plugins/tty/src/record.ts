/** The schemas of this plugin's options and records (options: zod; records: core's builder `s`; core validates the records when the image is read). */
import { lazySchema, lazyOptions, s, type Infer } from '@ckpt/core';
import { z } from 'zod';

export const NAME = '@ckpt/plugin-tty';

const uint = lazySchema(() => s.number().int().nonnegative());
/** Binary data (kernel structs) as base64. */
const base64 = lazySchema(() => s.string().regex(/^[A-Za-z0-9+/]*={0,2}$/));

/** Options: `terminal` (restore --tty): the restored processes get the restorer's own terminal. */
export const ttyOptions = lazyOptions(() => z.strictObject({ terminal: z.boolean().optional() }));
export type TtyOptions = z.infer<typeof ttyOptions>;

/** What this plugin stores per open description of a pty (FdRecord.data; kind "ptmx" or "pts"). */
export interface TtyFdData {
  side: 'master' | 'slave';
  /** The pty number at dump time (/dev/pts/N). */
  index: number;
  /** The fd as /proc showed it ("/dev/pts/3", "/dev/ptmx", "/dev/tty"). */
  path: string;
  /** Open flags (access mode, O_NONBLOCK, O_APPEND). */
  flags: number;
  /** Kernel struct termios of the slave (36 bytes, base64), as TCGETS returned it. */
  termios?: string;
  /** struct winsize (8 bytes, base64). */
  winsize?: string;
  /** Opened as /dev/tty (the controlling terminal). */
  devTty?: boolean;
  /** Master: packet mode (TIOCPKT) on. */
  packet?: boolean;
  /** Master: the slave was still locked (no unlockpt yet). */
  locked?: boolean;
  /** The terminal was hung up at dump time (its other end closed). */
  hungUp?: boolean;
  /** The slave's device node (/dev/pts/N): owner and permission bits (chown, chmod, grantpt). */
  node?: { uid: number; gid: number; mode: number };
  /** Master: bytes queued in the pty at dump time (see queue.ts). */
  queued?: { input?: string; output?: string };
}

/** Per process, only when its controlling terminal is a pty. */
export interface TtyProcessRecord {
  ctty: {
    /** The pty number of the controlling terminal. */
    index: number;
    /** This process is the session leader. */
    leader: boolean;
    /** The foreground process group of the terminal (image pid), 0 if none. */
    tpgid: number;
  };
}

export const ttyFdData = lazySchema(() =>
  s.strictObject({
    side: s.enum(['master', 'slave']),
    index: uint,
    path: s.string(),
    flags: s.number().int(),
    termios: base64.optional(),
    winsize: base64.optional(),
    devTty: s.boolean().optional(),
    packet: s.boolean().optional(),
    locked: s.boolean().optional(),
    hungUp: s.boolean().optional(),
    node: s.strictObject({ uid: uint, gid: uint, mode: uint }).optional(),
    queued: s.strictObject({ input: base64.optional(), output: base64.optional() }).optional(),
  }),
);

export const ttyProcessRecord = lazySchema(() =>
  s.strictObject({
    ctty: s.strictObject({ index: uint, leader: s.boolean(), tpgid: uint }),
  }),
);

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [Assert<Same<TtyFdData, Infer<typeof ttyFdData>>>, Assert<Same<TtyProcessRecord, Infer<typeof ttyProcessRecord>>>];
