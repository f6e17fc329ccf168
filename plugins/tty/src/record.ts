/** The schemas of this plugin's options and records (zod; core validates the records when the image is read). */
import { lazySchema, lazyOptions } from '@ckpt/core';
import { z } from 'zod';

export const NAME = '@ckpt/plugin-tty';

const uint = lazySchema(() => z.number().int().nonnegative());
/** Binary data (kernel structs) as base64. */
const base64 = lazySchema(() => z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/));

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
  z.strictObject({
    side: z.enum(['master', 'slave']),
    index: uint,
    path: z.string(),
    flags: z.number().int(),
    termios: base64.optional(),
    winsize: base64.optional(),
    devTty: z.boolean().optional(),
    packet: z.boolean().optional(),
    locked: z.boolean().optional(),
    hungUp: z.boolean().optional(),
    node: z.strictObject({ uid: uint, gid: uint, mode: uint }).optional(),
    queued: z.strictObject({ input: base64.optional(), output: base64.optional() }).optional(),
  }),
);

export const ttyProcessRecord = lazySchema(() =>
  z.strictObject({
    ctty: z.strictObject({ index: uint, leader: z.boolean(), tpgid: uint }),
  }),
);

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [Assert<Same<TtyFdData, z.infer<typeof ttyFdData>>>, Assert<Same<TtyProcessRecord, z.infer<typeof ttyProcessRecord>>>];
