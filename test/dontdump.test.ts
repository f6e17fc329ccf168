// Memory exclusion: areas a process marked MADV_DONTDUMP are left out of the image, as a core dump
// leaves them out, and come back as fresh memory of their kind (zeros, or the mapped file's pages)
// with their DONTDUMP advice; everything else is intact. `--include-dontdump` saves them too.
// `--exclude` leaves out private memory by address range or mapping name. `ckpt show` and the
// dump's --json figures say what was left out; a bad --exclude is refused before anything is frozen.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BUILD_DIR, checksAfterRestore, ckpt, expectCleanError, expectOk, makeTempDir, runFixture, track, useCleanup, waitForLine } from './helpers.js';

useCleanup();

const ALL = ['ok kept', 'ok gone', 'ok split', 'ok file', 'ok range', 'ok named', 'ok advice', 'done'];
// Left out: the 1 MiB anonymous area, the 64 KiB middle of another, the 1 MiB private file mapping.
const EXCLUDED = 1024 * 1024 + 64 * 1024 + 1024 * 1024;

describe('MADV_DONTDUMP', () => {
  it('areas marked DONTDUMP are not saved and come back zeroed (anonymous) or as the file (private file mapping), still marked; the rest is intact', async () => {
    let img = '';
    const { lines, dump } = await checksAfterRestore('dontdump', ({ work }) => {
      img = path.join(path.dirname(work), 'img');
    });
    expect(lines, lines.join('\n')).toEqual(ALL);
    expect(dump.stats['memory.dontdumpBytes']).toBe(EXCLUDED);
    const show = await ckpt(['show', img]);
    expectOk(show);
    const marked = show.stdout.split('\n').filter((l) => l.includes('MADV_DONTDUMP: not saved'));
    expect(marked.length, show.stdout).toBe(3);
    expect(marked.filter((l) => l.includes('comes back zeroed')).length, show.stdout).toBe(2);
  });

  it('--include-dontdump saves them like any other memory', async () => {
    const { lines, dump } = await checksAfterRestore(
      'dontdump',
      ({ work }) => {
        fs.writeFileSync(path.join(work, 'mode'), 'included');
      },
      { dumpArgs: ['--include-dontdump'] },
    );
    expect(lines, lines.join('\n')).toEqual(ALL);
    expect(dump.stats['memory.dontdumpBytes']).toBeUndefined();
  });
});

describe('--exclude', () => {
  it('leaves out an address range (its pages come back zeroed) and a private file mapping by name (the file comes back), the rest intact', async () => {
    let img = '';
    const { lines, dump } = await checksAfterRestore(
      'dontdump',
      ({ work }) => {
        fs.writeFileSync(path.join(work, 'mode'), 'cut');
        img = path.join(path.dirname(work), 'img');
      },
      { dumpArgs: ['--exclude', '0x200000040000-0x200000080000', '--exclude', '*/exclude-me'] },
    );
    expect(lines, lines.join('\n')).toEqual(ALL);
    expect(dump.stats['memory.excludedBytes']).toBe(0x40000 + 1024 * 1024);
    expect(dump.stats['memory.dontdumpBytes']).toBe(EXCLUDED);
    const show = await ckpt(['show', img]);
    expectOk(show);
    expect(show.stdout).toMatch(/--exclude: 256 KiB of it not saved, comes back zeroed/);
    expect(show.stdout).toMatch(/exclude-me {2}\(--exclude: not saved, comes back as the file's pages\)/);
  });

  it('a bad --exclude is a one-line error naming it, before anything is frozen; one that covers memory that is not private is refused, and the process runs on', async () => {
    const dir = makeTempDir('exclude-bad');
    const work = path.join(dir, 'work');
    fs.mkdirSync(work);
    const report = path.join(dir, 'report');
    const fixture = path.join(BUILD_DIR, 'dontdump');
    await runFixture(dir, [fixture, work, report, path.join(dir, 'go')], { noNamespace: true, name: 'dontdump' });
    const pid = Number((await waitForLine(report, /^ready (\d+)$/)).match[1]);
    track(pid, fixture);
    for (const [spec, why] of [
      ['0x1000-0x1800', /page boundaries/],
      ['libc.so', /neither an address range/],
    ] as const) {
      const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img'), '--exclude', spec]);
      expectCleanError(r, why, new RegExp(spec.replace(/[.]/g, '\\.')));
    }
    // [vdso] is not private memory.
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img'), '--leave-running', '--exclude', '[vdso]']);
    expectCleanError(r, /--exclude \[vdso\] covers \[vdso\] of pid \d+ .*only private memory can be left out/);
    // Still there, untraced, after all that.
    expect(fs.readFileSync(`/proc/${pid}/status`, 'utf8')).toMatch(/TracerPid:\s+0\n/);
  });
});
