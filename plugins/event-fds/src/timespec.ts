/** Parsing of timerfd's fdinfo (pure, unit-tested). */

/** A timespec as timerfd's fdinfo prints it, "(sec, nsec)", in nanoseconds; 0n when absent or unreadable. */
export const timespecNs = (text: string | undefined): bigint => {
  const m = /\((\d+),\s*(\d+)\)/.exec(text ?? '');
  return m ? BigInt(m[1]) * 1_000_000_000n + BigInt(m[2]) : 0n;
};
