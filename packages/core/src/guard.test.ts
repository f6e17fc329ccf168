// The search for an rt_sigreturn restorer in a process's code (guard.ts: findGadgets, sigreturnIn),
// which reads an area a chunk at a time up to the first one found. Run on real memory: this test's
// own process, and a python3 child that maps a file the test laid out (a restorer across a chunk
// boundary, two kinds at different places, none).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '@ckpt/native';
import { findGadgets, sigreturnIn } from './guard.js';
import { readMaps } from './proc.js';

const MOV_RAX = Buffer.from([0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]); // mov $15, %rax; syscall
const MOV_EAX = Buffer.from([0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]); // mov $15, %eax; syscall
const CHUNK = 64 << 10;

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A python3 child with `bytes` mapped read-only from a file: its pid and the mapping's start. */
async function mapped(bytes: Buffer): Promise<{ pid: number; start: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'ckpt-gadgets-'));
  dirs.push(dir);
  const file = join(dir, 'code');
  writeFileSync(file, bytes);
  const py = 'import mmap,sys,time\nf=open(sys.argv[1],"rb")\nm=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\nprint("ok",flush=True)\ntime.sleep(60)';
  const child = spawn('python3', ['-c', py, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`python3 exited (${code}) before mapping the file`)));
  });
  const area = readMaps(child.pid!).find((v) => v.name === file);
  if (!area) throw new Error(`no mapping of ${file} in python3 ${child.pid}`);
  return { pid: child.pid!, start: area.start };
}

describe('the rt_sigreturn restorer search', () => {
  it('finds a restorer that straddles two chunks, and stops reading at the chunk that holds it', async () => {
    const bytes = Buffer.alloc(8 * CHUNK);
    const at = CHUNK - 4;
    MOV_RAX.copy(bytes, at);
    const { pid, start } = await mapped(bytes);
    const found = sigreturnIn(pid, start, bytes.length);
    expect(found.at).toBe(at);
    expect(found.read).toBeLessThan(2 * CHUNK + 16);
  });

  it('takes the first restorer of either kind, and reads the whole area when there is none', async () => {
    const bytes = Buffer.alloc(6 * CHUNK);
    MOV_EAX.copy(bytes, 3 * CHUNK + 100);
    MOV_RAX.copy(bytes, 5 * CHUNK + 7);
    const one = await mapped(bytes);
    expect(sigreturnIn(one.pid, one.start, bytes.length).at).toBe(3 * CHUNK + 100);
    const none = await mapped(Buffer.alloc(3 * CHUNK + 5));
    expect(sigreturnIn(none.pid, none.start, 3 * CHUNK + 5)).toEqual({ at: undefined, read: expect.any(Number) });
    expect(sigreturnIn(none.pid, none.start, 3 * CHUNK + 5).read).toBeGreaterThanOrEqual(3 * CHUNK + 5);
  });

  it('finds in a live process a vdso `syscall ... ret` and a restorer that is one', () => {
    const g = findGadgets(process.pid, readMaps(process.pid));
    expect(g).toBeDefined();
    const code = native.mem.readMem(process.pid, g!.sigreturn, MOV_RAX.length);
    expect(code.subarray(0, MOV_RAX.length).equals(MOV_RAX) || code.subarray(0, MOV_EAX.length).equals(MOV_EAX), code.toString('hex')).toBe(true);
    expect(native.mem.readMem(process.pid, g!.syscallRet, 2).toString('hex')).toBe('0f05');
    const vdso = readMaps(process.pid).find((v) => v.name === '[vdso]')!;
    expect(g!.syscallRet).toBeGreaterThanOrEqual(vdso.start);
    expect(g!.syscallRet).toBeLessThan(vdso.end);
  });
});
