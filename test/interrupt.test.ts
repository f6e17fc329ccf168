// Interruption and injected faults (CKPT_FAULT): a dump stopped at any step, by an error or by
// Ctrl-C, leaves the process running, untraced, with its state going on, and no partial image; a
// restore stopped at any step leaves nothing behind, and the next restore of the same image works.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bin,
  expectCarriesOn,
  startWorkload,
  ckpt,
  dumpOk,
  expectCleanError,
  expectRunningFree,
  makeTempDir,
  pidExists,
  restoreOk,
  track,
  useCleanup,
  waitNotAlive,
  waitPidFree,
  expectNoImage,
} from './helpers.js';

useCleanup();

const DUMP_POINTS = [
  'dump:frozen',
  ...['pids', 'credentials', 'threads', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'registers'].map((s) => `dump:stage:${s}`),
  // Before the hooks that ask every process at once (dumpAll), after others did.
  ...['credentials', 'signals'].map((s) => `dump:stage:${s}:all`),
  'dump:pages',
  'dump:records',
];
const RESTORE_POINTS = [
  'restore:validated',
  ...['pids', 'memory', 'files', 'sockets', 'sysvipc', 'signals', 'threads', 'credentials', 'registers'].map((s) => `restore:stage:${s}`),
  'restore:stage:registers:all',
  'restore:created',
  'restore:pages',
  'restore:resume',
];

describe('an interrupted or failing dump harms nothing', () => {
  it('an injected error at every step: the process carries on, untraced, and no image is left', async () => {
    const dir = makeTempDir('fault-dump');
    const { pid, stdout } = await startWorkload(dir, 16);
    for (const point of DUMP_POINTS) {
      const img = path.join(dir, `img-${point.replace(/:/g, '-')}`);
      const r = await ckpt(['dump', '-t', String(pid), '-D', img], { env: { CKPT_FAULT: `${point}:error` } });
      expectCleanError(r, `injected fault at ${point}`);
      await expectCarriesOn(pid, stdout, `workload after a fault at ${point}`);
      expectNoImage(img, point);
    }
    // And a dump after all that is whole.
    await dumpOk(pid, path.join(dir, 'img'), ['--leave-running']);
    await expectCarriesOn(pid, stdout, 'workload after the last dump');
  });

  it('Ctrl-C (SIGINT) at every step stops the dump and thaws the process', async () => {
    const dir = makeTempDir('sigint-dump');
    const { pid, stdout } = await startWorkload(dir, 16);
    for (const point of DUMP_POINTS) {
      const img = path.join(dir, `img-${point.replace(/:/g, '-')}`);
      const r = await ckpt(['dump', '-t', String(pid), '-D', img], { env: { CKPT_FAULT: `${point}:sigint` } });
      expectCleanError(r, /dump interrupted/);
      await expectCarriesOn(pid, stdout, `workload after SIGINT at ${point}`);
      expectNoImage(img, point);
    }
  });

  it('ckpt dump SIGKILLed at every named step (between stages, mid page copy): the process carries on, untraced, with no mapping added', async () => {
    const dir = makeTempDir('kill-dump');
    const { pid, stdout } = await startWorkload(dir, 16);
    const ranges = () =>
      fs
        .readFileSync(`/proc/${pid}/maps`, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' ')[0]);
    const before = ranges();
    for (const point of [...DUMP_POINTS, 'dump:committed']) {
      const img = path.join(dir, `img-${point.replace(/:/g, '-')}`);
      const r = await ckpt(['dump', '-t', String(pid), '-D', img], { env: { CKPT_FAULT: `${point}:kill` } });
      expect(r.signal, `ckpt dump was killed at ${point}`).toBe('SIGKILL');
      await expectCarriesOn(pid, stdout, `workload after ckpt was killed at ${point}`);
      expect(ranges(), `the mappings of the process after a kill at ${point}`).toEqual(before);
    }
    // The next dump cleans what the killed ones left (locks, staging directories) and works.
    await dumpOk(pid, path.join(dir, 'img-dump-frozen'), ['--leave-running']);
    await expectCarriesOn(pid, stdout, 'workload after the last dump');
  });

  it('ckpt dump SIGKILLed once its image is committed and handed over: the process goes with it, and the image restores', async () => {
    const dir = makeTempDir('kill-handover');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    const r = await ckpt(['dump', '-t', String(pid), '-D', img], { env: { CKPT_FAULT: 'dump:handover:kill' } });
    expect(r.signal).toBe('SIGKILL');
    await waitNotAlive(pid);
    await restoreOk(img, pid, 'workload');
    await expectCarriesOn(pid, stdout, 'workload restored from the image of a dump killed at its hand-over');
  });

  it('SIGINT and SIGTERM in the middle of the page copy of 1 GiB stop the dump within a second or two', async () => {
    const dir = makeTempDir('sigint-pages');
    const { pid, stdout } = await startWorkload(dir, 1024);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const img = path.join(dir, `img-${sig}`);
      let sentAt = 0;
      // Once pages are being written, send the signal from outside, as a user would.
      const pagesWritten = () => {
        const staging = fs.existsSync(img) ? fs.readdirSync(img).find((f) => f.startsWith('.staging')) : undefined;
        const pages = staging && path.join(img, staging, `pages-${pid}.img`);
        return !!pages && fs.existsSync(pages) && fs.statSync(pages).size > 0;
      };
      const r = await ckpt(['dump', '-t', String(pid), '-D', img], {
        onSpawn: (child) => {
          const timer = setInterval(() => {
            if (!pagesWritten()) return;
            clearInterval(timer);
            sentAt = Date.now();
            child.kill(sig);
          }, 5);
          child.on('close', () => clearInterval(timer));
        },
      });
      const took = Date.now() - sentAt;
      expect(sentAt, `${sig}: the page copy was never seen`).toBeGreaterThan(0);
      expectCleanError(r, /dump interrupted/);
      expect(took, `${sig}: ckpt took ${took} ms to stop`).toBeLessThan(2500);
      await expectCarriesOn(pid, stdout, `workload after ${sig} during the copy`);
      expectNoImage(img, sig);
    }
  });
});

describe('an interrupted or failing restore leaves nothing behind', () => {
  it('an injected error, or SIGINT, at every step: no process is left, and the next restore works', async () => {
    const dir = makeTempDir('fault-restore');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    for (const point of RESTORE_POINTS) {
      for (const action of ['error', 'sigint']) {
        const r = await ckpt(['restore', '-D', img, '--detach'], { env: { CKPT_FAULT: `${point}:${action}` } });
        expectCleanError(r, action === 'error' ? `injected fault at ${point}` : /restore interrupted/);
        await waitPidFree(pid);
        expect(pidExists(pid), `pid ${pid} exists after a ${action} at ${point}`).toBe(false);
      }
    }
    await restoreOk(img, pid, bin('workload'));
    await expectCarriesOn(pid, stdout, 'workload restored after the faults');
  });

  it('ckpt restore killed (SIGKILL) at every step: nothing half-built survives, and the next restore works', async () => {
    const dir = makeTempDir('kill-restore');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    for (const point of RESTORE_POINTS) {
      const r = await ckpt(['restore', '-D', img, '--detach'], { env: { CKPT_FAULT: `${point}:kill` } });
      expect(r.signal, `ckpt restore was killed at ${point}`).toBe('SIGKILL');
      // Every stub was traced with PTRACE_O_EXITKILL: it died with its tracer.
      await waitPidFree(pid);
      expect(pidExists(pid), `pid ${pid} exists after a kill at ${point}`).toBe(false);
    }
    await restoreOk(img, pid, bin('workload'));
    await expectCarriesOn(pid, stdout, 'workload restored after the kills');
  });
});

describe('a dump that will be refused finds out before it copies memory', () => {
  /** python3 holding 512 MiB, every fd but 0-2 closed; prints "ready" once its memory is touched. */
  const BIG = [
    'import os, sys',
    'os.closerange(3, 4096)',
    'heap = bytearray(512 << 20)',
    'for i in range(0, len(heap), 4096): heap[i] = 1',
    'print("ready", flush=True)',
    'for line in sys.stdin: print("echo " + line.strip(), flush=True)',
  ].join('\n');

  async function refusedEarly(dir: string, pid: number, why: RegExp): Promise<void> {
    const log = path.join(dir, `ckpt-${pid}.log`);
    const r = await ckpt(['--log-file', log, 'dump', '-t', String(pid), '-D', path.join(dir, `img-${pid}`)]);
    expectCleanError(r, why);
    const text = fs.readFileSync(log, 'utf8');
    expect(text, 'the fd table was read').toMatch(/fds\.dump/);
    expect(text, 'no memory was copied').not.toMatch(/memory\.dump/);
    expectRunningFree(pid, 'python3 after the refusal');
  }

  it('an io_uring instance: refused before any page is copied', async () => {
    const dir = makeTempDir('early-uring');
    const ready = path.join(dir, 'ready');
    // io_uring_setup(8, params) through ctypes: an fd of a kind no plugin saves.
    const uring = [
      'import ctypes',
      'params = ctypes.create_string_buffer(120)',
      'ring = ctypes.CDLL(None, use_errno=True).syscall(425, 8, params)',
      'assert ring >= 0',
    ];
    const code = BIG.split('\n').filter((l) => !l.includes('sys.stdin'));
    code.splice(2, 0, ...uring);
    code.push('import time', 'time.sleep(600)');
    const out = fs.openSync(ready, 'w');
    const py = spawn('python3', ['-c', code.join('\n')], { stdio: ['ignore', out, 'ignore'] });
    fs.closeSync(out);
    track(py.pid!, 'python3');
    const end = Date.now() + 30_000;
    while (!(fs.existsSync(ready) && fs.readFileSync(ready, 'utf8').includes('ready')) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    await refusedEarly(dir, py.pid!, /io_uring|anon_inode:\[io_uring\]/);
    py.kill('SIGKILL');
  });

  it('a unix socket whose peer is outside the tree: refused before any page is copied, and it still talks', async () => {
    const dir = makeTempDir('early-sock');
    // Node gives a child its stdio as socketpairs: the other end is this test's, outside the tree.
    const child = spawn('python3', ['-c', BIG], { stdio: ['pipe', 'pipe', 'ignore'] });
    track(child.pid!, 'python3');
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const end = Date.now() + 30_000;
    while (!out.includes('ready') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    await refusedEarly(dir, child.pid!, /outside the checkpointed tree/);
    child.stdin!.write('still here\n');
    const until = Date.now() + 10_000;
    while (!out.includes('echo still here') && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(out).toContain('echo still here');
    child.kill('SIGKILL');
  });
});
