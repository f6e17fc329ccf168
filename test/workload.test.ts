// The main workload: 64 MiB heap, private and shared file mappings, files with offsets, a signal
// handler and mask, FPU/AVX registers held across the sleeping syscall. Dump (which kills it), restore
// with the same pid, and check that every piece of state carried on.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  nsPidOf,
  bin,
  cmdline,
  dumpOk,
  exe,
  expectConsecutive,
  expectRunningFree,
  imageFiles,
  isAlive,
  lastTick,
  makeTempDir,
  numbersOf,
  readLines,
  readText,
  restoreOk,
  runFixture,
  tail,
  ticks,
  useCleanup,
  waitFor,
  waitForLine,
  waitForTick,
  waitNotAlive,
  USR1_RE,
} from './helpers.js';

useCleanup();

const READ_RE = /^read line (\d+)$/;
const BAD_LINE_RE = /^(fpumismatch|sleepret|fatal|outerror|read error|read EOF)/;

/** out.txt holds "1\n2\n...": returns its numbers, failing on anything that is not such a line. */
function outNumbers(file: string): number[] {
  const text = readText(file);
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .slice(0, -1)
    .map((l, i) => {
      if (!/^\d+$/.test(l)) throw new Error(`out.txt line ${i + 1} is ${JSON.stringify(l)}, not a number (overwritten?)`);
      return Number(l);
    });
}

describe('workload: dump, then restore with the same pid', () => {
  it('continues ticks, file offsets, memory, signal state and FPU registers', async () => {
    const dir = makeTempDir('workload');
    const outdir = path.join(dir, 'out');
    fs.mkdirSync(outdir);
    const img = path.join(dir, 'img');
    const workload = bin('workload');
    const argv = [workload, '64', outdir];

    const p = await runFixture(dir, argv, { name: 'workload' });
    const { pid, stdout } = p;
    const start = await waitForLine(stdout, /^start pid=(\d+) fpu=(\w+)/);
    // ckpt run gives the program its own pid namespace: it sees itself as nsPidOf(pid).
    expect(Number(start.match[1]), 'the program reports a pid other than its own (in its namespace)').toBe(nsPidOf(pid));
    if (start.match[2] !== 'avx512') {
      console.warn(`workload: this CPU has no usable AVX-512 (mode ${start.match[2]}); only the ${start.match[2]} registers are checked`);
    }
    await waitForTick(stdout, 5);
    expect(cmdline(pid)).toEqual(argv);

    await dumpOk(pid, img);
    await waitNotAlive(pid);

    // What the process had done when it was dumped.
    const before = readText(stdout);
    const ticksBefore = ticks(stdout);
    const lastBefore = lastTick(stdout);
    expect(lastBefore).toBeGreaterThanOrEqual(5);
    expectConsecutive(ticksBefore, 1, 'ticks before the dump');
    const readsBefore = numbersOf(stdout, READ_RE);
    expectConsecutive(readsBefore, 0, 'reads before the dump');
    const outBefore = outNumbers(path.join(outdir, 'out.txt'));
    expectConsecutive(outBefore, 1, 'out.txt before the dump');

    // Image files are private to root.
    const files = imageFiles(img);
    expect(files.length, 'the image directory is empty').toBeGreaterThan(0);
    for (const f of files) {
      expect((f.mode & 0o777).toString(8), `mode of ${f.file}`).toBe('600');
    }

    await restoreOk(img, pid, workload);

    // Ticks continue from the dump point: exactly lastBefore + 1 next, and onwards.
    await waitForTick(stdout, lastBefore + 5, 20_000);
    const after = readText(stdout);
    expect(after.startsWith(before), `stdout was not continued at its offset (overwritten or truncated)\n${tail(stdout)}`).toBe(true);
    const ticksAfter = ticks(stdout);
    expect(ticksAfter[ticksBefore.length], `first tick after restore\n${tail(stdout)}`).toBe(lastBefore + 1);
    expectConsecutive(ticksAfter, 1, 'ticks across the restore');

    // in.txt offset continues: read line K follows consecutively.
    const reads = numbersOf(stdout, READ_RE);
    expect(reads.length).toBeGreaterThan(readsBefore.length);
    expectConsecutive(reads, 0, 'in.txt lines read across the restore');

    // out.txt offset continues: lines consecutive, no hole, no overwrite.
    const outFile = path.join(outdir, 'out.txt');
    await waitFor(
      () => outNumbers(outFile).length >= outBefore.length + 3,
      10_000,
      () => `out.txt did not grow\n${tail(outFile)}`,
    );
    const outAfter = outNumbers(outFile);
    expectConsecutive(outAfter, 1, 'out.txt across the restore');
    expect(readText(outFile).includes('\0'), 'out.txt has a hole of NUL bytes').toBe(false);

    // The restored process is the same program, running free.
    expect(isAlive(pid)).toBe(true);
    expectRunningFree(pid, 'restored workload');
    expect(cmdline(pid), '/proc/PID/cmdline of the restored process').toEqual(argv);
    expect(exe(pid), '/proc/PID/exe of the restored process').toBe(workload);

    // Full state check inside the process.
    const nLines = readLines(stdout).length;
    process.kill(pid, 'SIGUSR1');
    const usr1 = await waitForLine(stdout, USR1_RE, 20_000, nLines);
    const [, tick, heap, priv, shared, fpu, mask] = usr1.match;
    expect(Number(tick)).toBeGreaterThan(lastBefore);
    const mismatches = readLines(stdout).filter((l) => /^(fpumismatch|sleepret)/.test(l));
    expect({ heap, priv, shared, fpu, mask }, `state check after restore: ${usr1.match[0]}\n${mismatches.join('\n')}`).toEqual({
      heap: 'ok',
      priv: 'ok',
      shared: 'ok',
      fpu: 'ok',
      mask: 'ok',
    });

    // Shared mapping really is shared with the file: the file holds the current counter.
    const sharedWord = fs.readFileSync(path.join(outdir, 'shared.dat')).readBigUInt64LE(0);
    expect(Number(sharedWord)).toBeGreaterThan(lastBefore);

    // A few more ticks, then nothing bad ever printed, nothing on stderr.
    await waitForTick(stdout, Number(tick) + 3, 20_000);
    expect(isAlive(pid)).toBe(true);
    const bad = readLines(stdout).filter((l) => BAD_LINE_RE.test(l));
    expect(bad, `bad lines in the workload's output\n${tail(stdout)}`).toEqual([]);
    expect(readText(p.stderr), 'workload stderr').toBe('');
  });
});
