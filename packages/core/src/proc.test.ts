// parseSmaps reads an area's three lines of interest by their first character: it must give what
// a line-by-line match gives, on real smaps texts and on names that look like fields.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type Vma, parseMaps, parseSmaps } from './proc.js';

/** Each line split off and matched: the plain reading parseSmaps must agree with. */
function lineByLine(text: string): Vma[] {
  const vmas: Vma[] = [];
  let cur: Vma | undefined;
  for (const line of text.split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      cur = parseMaps(line)[0];
      if (cur) vmas.push(cur);
    } else if (cur && line.startsWith('VmFlags:')) {
      cur.flags = line.slice(8).trim().split(/\s+/);
    } else if (cur && line.startsWith('KernelPageSize:')) {
      cur.pageSize = Number.parseInt(line.slice(15), 10) * 1024;
    }
  }
  return vmas;
}

describe('parseSmaps', () => {
  it("reads the kernel's smaps as a line-by-line match does", () => {
    // Node's own (a JIT, threads, many areas) and python's (libraries mapped from files).
    const python = spawnSync('python3', ['-c', 'import sys; sys.stdout.write(open("/proc/self/smaps").read())'], { encoding: 'utf8' });
    expect(python.status, python.stderr).toBe(0);
    for (const [pid, text] of [
      ['self', readFileSync('/proc/self/smaps', 'utf8')],
      ['python3', python.stdout],
    ]) {
      const got = parseSmaps(text);
      expect(got.length, `areas of /proc/${pid}/smaps`).toBeGreaterThan(3);
      expect(
        got.every((v) => v.flags?.length && v.pageSize),
        'every area has its flags and page size',
      ).toBe(true);
      expect(got).toEqual(lineByLine(text));
    }
  });

  it('names with spaces and field-like words, huge pages, a last line without its newline', () => {
    const area = (head: string, kps: number, flags: string) =>
      `${head}\nSize:                  8 kB\nKernelPageSize:     ${kps} kB\nMMUPageSize:        ${kps} kB\nRss:                   0 kB\nVmFlags: ${flags}\n`;
    const text = [
      area('7f0000000000-7f0000002000 rw-s 00000000 00:01 1234                       /dev/shm/VmFlags: x (deleted)', 4, 'rd wr sh mr mw me ms sd'),
      area('7f0000200000-7f0000400000 rw-p 00000000 00:00 0 ', 2048, 'rd wr mr mw me ac ht'),
      area('7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]', 4, 'rd wr mr mw me gd ac'),
    ]
      .join('')
      .trimEnd();
    const got = parseSmaps(text);
    expect(got).toEqual(lineByLine(text));
    expect(got.map((v) => [v.name, v.pageSize, v.flags?.length])).toEqual([
      ['/dev/shm/VmFlags: x (deleted)', 4096, 8],
      ['', 2 << 20, 7],
      ['[stack]', 4096, 7],
    ]);
  });
});
