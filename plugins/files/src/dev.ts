/** dev_t decoding (pure, unit-tested). */

/** st_dev as /proc/PID/maps prints it (major:minor in hex), so fds and mappings of one object agree. */
export function devName(dev: number): string {
  const major = (dev >>> 8) & 0xfff,
    minor = (dev & 0xff) | ((dev >>> 12) & 0xfff00);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
}
