// Memory exclusion: areas a process marked MADV_DONTDUMP are left out of the image, as a core dump
// leaves them out, and come back as fresh memory of their kind (zeros, or the mapped file's pages)
// with their DONTDUMP advice; everything else is intact. `--include-dontdump` saves them too.
// `ckpt show` and the dump's --json figures say what was left out.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checksAfterRestore, ckpt, expectOk, useCleanup } from './helpers.js';

useCleanup();

const ALL = ['ok kept', 'ok gone', 'ok split', 'ok file', 'ok advice', 'done'];
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
