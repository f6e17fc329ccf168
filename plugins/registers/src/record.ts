/** The schema of this plugin's per-process record (core's schema builder `s`; core validates it when the image is read). */
import { lazySchema } from '@ckpt/core';
import { s, type Infer } from '@ckpt/core';

const int = lazySchema(() => s.number().int());
const uint = lazySchema(() => int.nonnegative());
/** A 64-bit value as "0x..." (addresses, masks, flags). */
const hex = lazySchema(() => s.string().regex(/^0x[0-9a-f]+$/i));
/** Binary data (registers, siginfo) as base64. */
const base64 = lazySchema(() => s.string().regex(/^[A-Za-z0-9+/]*={0,2}$/));

export interface SigactionRecord {
  sig: number;
  handler: string;
  flags: string;
  restorer: string;
  mask: string;
}

/** Per-thread state. */
export interface ThreadRecord {
  tid: number;
  comm: string;
  gpr: string;
  xstate: string;
  sigmask: string;
  /** Signals pending for this thread only (siginfo, base64). */
  pending: string[];
  rseq: { pointer: string; size: number; signature: number } | null;
  robustList: { head: string; len: number };
  clearChildTid: string;
  /** The alternate signal stack (sigaltstack), when one is set. */
  altStack?: { sp: string; flags: number; size: number };
}

export interface RegistersRecord {
  xstateSize: number;
  xcr0: string;
  sigactions: SigactionRecord[];
  /** Signals pending for the whole process. */
  sharedPending: string[];
  /** The leader first. */
  threads: ThreadRecord[];
  /** Interval timers (setitimer: real, virtual, prof) that were armed: [which, interval us, value us] (value 0: expired, signal pending, periodic). */
  itimers?: Array<[number, number, number]>;
}

export const sigactionRecord = lazySchema(() =>
  s.strictObject({
    sig: int.min(1).max(64),
    handler: hex,
    flags: hex,
    restorer: hex,
    mask: hex,
  }),
);

export const threadRecord = lazySchema(() =>
  s.strictObject({
    tid: uint,
    comm: s.string(),
    gpr: base64,
    xstate: base64,
    sigmask: hex,
    pending: s.array(base64),
    rseq: s.strictObject({ pointer: hex, size: uint, signature: int }).nullable(),
    robustList: s.strictObject({ head: hex, len: uint }),
    clearChildTid: hex,
    altStack: s.strictObject({ sp: hex, flags: int, size: uint }).optional(),
  }),
);

export const registersRecord = lazySchema(() =>
  s.strictObject({
    xstateSize: uint,
    xcr0: hex,
    sigactions: s.array(sigactionRecord),
    sharedPending: s.array(base64),
    // The leader at least: a process with no thread could only be "restored" to crash.
    threads: s.array(threadRecord).min(1),
    itimers: s.array(s.tuple([int.min(0).max(2), uint, uint])).optional(),
  }),
);

// Compile-time checks: the interfaces and the schemas describe the same records.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
export type RecordChecks = [
  Assert<Same<SigactionRecord, Infer<typeof sigactionRecord>>>,
  Assert<Same<ThreadRecord, Infer<typeof threadRecord>>>,
  Assert<Same<RegistersRecord, Infer<typeof registersRecord>>>,
];
