/** dev_t decoding: which device numbers are ptys (pure functions, unit-tested). */

/** Unix98 pty slaves: majors 136..143 (UNIX98_PTY_MAJOR_COUNT 8). */
export const PTS_MAJOR_FIRST = 136,
  PTS_MAJOR_LAST = 143;

/** dev_t as the kernel encodes it for userspace (st_rdev, tty_nr, TIOCGDEV). */
export function devParts(dev: number): { major: number; minor: number } {
  return { major: (dev >>> 8) & 0xfff, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

/** The pty number of a slave device, or undefined when dev is not a Unix98 pty slave. */
export function ptsIndex(dev: number): number | undefined {
  const { major, minor } = devParts(dev);
  if (major < PTS_MAJOR_FIRST || major > PTS_MAJOR_LAST) return undefined;
  return (major - PTS_MAJOR_FIRST) * 256 + minor;
}
