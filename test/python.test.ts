// A real interpreter: python3 with a 200k-entry dict mutated every tick, checkpointed and restored.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  cmdline,
  dumpOk,
  expectConsecutive,
  expectRunningFree,
  FIXTURES_DIR,
  makeTempDir,
  numbersOf,
  readLines,
  readText,
  restoreOk,
  runFixture,
  tail,
  useCleanup,
  waitForTick,
  waitNotAlive,
} from './helpers.js';

useCleanup();

const COUNT_RE = /^count (\d+) size \d+ check \w+$/;

/** The real python3 interpreter (not a wrapper script such as a pyenv shim, which would exec). */
function python3(): string {
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

describe('python3 counter', () => {
  it('continues counting with its dict intact after dump and restore', async () => {
    const py = python3();
    expect(py, 'python3 not found on PATH').not.toBe('');
    const script = path.join(FIXTURES_DIR, 'counter.py');
    const dir = makeTempDir('python');
    const img = path.join(dir, 'img');
    const { pid, stdout, stderr } = await runFixture(dir, [py, script], { json: true, marker: script, name: 'counter' });
    await waitForTick(stdout, 20, 30_000, COUNT_RE);

    await dumpOk(pid, img);
    await waitNotAlive(pid);
    const before = numbersOf(stdout, COUNT_RE);
    const last = before[before.length - 1];
    expectConsecutive(before, 1, 'counts before the dump');

    await restoreOk(img, pid, script, true);
    expect(cmdline(pid)).toEqual([py, script]);
    await waitForTick(stdout, last + 20, 30_000, COUNT_RE);
    expectRunningFree(pid, 'restored python');

    const counts = numbersOf(stdout, COUNT_RE);
    expect(counts[before.length], `first count after restore\n${tail(stdout)}`).toBe(last + 1);
    expectConsecutive(counts, 1, 'counts across the restore');
    const lines = readLines(stdout).filter((l) => COUNT_RE.test(l));
    const notOk = lines.filter((l) => !/ size 200000 check ok$/.test(l));
    expect(notOk, `dict check failed\n${tail(stdout)}`).toEqual([]);
    expect(readText(stderr), 'python stderr').toBe('');
    expect(fs.existsSync(`/proc/${pid}`)).toBe(true);
  });
});
