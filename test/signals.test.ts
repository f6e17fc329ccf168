// Per-process and per-thread signal machinery beyond handlers and masks: an armed interval
// timer, an alternate signal stack, and resource limits, checked on a restored real process.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BUILD_DIR, ckpt, expectOk, makeTempDir, readLines, runFixture, useCleanup, waitFor, waitNotAlive } from './helpers.js';

useCleanup();

const ALT = path.join(BUILD_DIR, 'altstack');
const LINE = /^t (\d+) alarms (\d+) nofile (\d+)\/(\d+)$/;

function last(stdout: string) {
  const m = LINE.exec(
    readLines(stdout)
      .filter((l) => LINE.test(l))
      .at(-1) ?? '',
  );
  return m ? { t: Number(m[1]), alarms: Number(m[2]), soft: Number(m[3]), hard: Number(m[4]) } : undefined;
}

describe('signals', () => {
  it('an interval timer keeps firing, on the alternate signal stack, with the lowered rlimits', async () => {
    const dir = makeTempDir('altstack');
    const img = path.join(dir, 'img');
    const { pid, stdout } = await runFixture(dir, [ALT], { name: 'alt' });
    await waitFor(
      () => (last(stdout)?.alarms ?? 0) >= 5,
      10_000,
      () => readLines(stdout).slice(-3).join('\n'),
    );
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    const atDump = last(stdout)!;
    await waitNotAlive(pid);
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    await waitFor(
      () => (last(stdout)?.alarms ?? 0) >= atDump.alarms + 5,
      10_000,
      () => `the timer stopped firing:\n${readLines(stdout).slice(-3).join('\n')}`,
    );
    const now = last(stdout)!;
    expect(now.alarms - atDump.alarms, 'every alarm after the restore ran on the alternate stack').toBeLessThan(1000);
    expect([now.soft, now.hard]).toEqual([4096, 8192]);
  });
});
