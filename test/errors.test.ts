// Errors: every failure is a non-zero exit with a "ckpt: error:" line naming the cause and no stack
// trace; a refused dump leaves its target running untouched; a failed restore leaves nothing behind.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  allPids,
  BUILD_DIR,
  bin,
  ckpt,
  CLI,
  dumpOk,
  expectCleanError,
  expectConsecutive,
  expectRunningFree,
  freePid,
  imageFiles,
  isAlive,
  lastTick,
  makeTempDir,
  newSuspects,
  numbersOf,
  numRe,
  procStat,
  restoreOk,
  runFixture,
  sleep,
  tail,
  ticks,
  tracerPid,
  track,
  useCleanup,
  waitForLine,
  waitForTick,
  waitPidFree,
} from './helpers.js';

useCleanup();

const PF_KTHREAD = 0x00200000;
const CORRUPTION_RE = /corrupt|checksum|hash|digest|mismatch|truncat|short|invalid|integrity|damaged|unexpected|malformed|size|EOF|incomplete/i;

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** After a failed restore: the image's pid is not running and no new process of ours appeared. */
async function expectNothingLeftBehind(before: Set<number>, imagePid: number | null): Promise<void> {
  const needles = [bin('workload'), bin('fdkinds')];
  for (const delay of [0, 1000]) {
    await sleep(delay);
    if (imagePid !== null) {
      expect(isAlive(imagePid), `pid ${imagePid} is running after a failed command`).toBe(false);
    }
    const left = newSuspects(before, needles, [CLI, 'ckpt-stub']);
    expect(left, `processes left behind by a failed command: ${JSON.stringify(left)}`).toEqual([]);
  }
}

/** Starts the workload (small heap), waits for a few ticks, dumps it (killing it), waits until its pid is free. */
async function dumpedWorkload(tag: string) {
  const dir = makeTempDir(tag);
  const outdir = path.join(dir, 'out');
  fs.mkdirSync(outdir);
  const img = path.join(dir, 'img');
  const started = await runFixture(dir, [bin('workload'), '8', outdir], { name: 'workload' });
  await waitForTick(started.stdout, 3);
  await dumpOk(started.pid, img);
  await waitPidFree(started.pid);
  return { dir, img, ...started };
}

function biggestFile(img: string) {
  const files = imageFiles(img).sort((a, b) => b.size - a.size);
  expect(files.length, `no files in image ${img}`).toBeGreaterThan(0);
  return files[0];
}

function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0] ^= 0x01;
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Dumps a workload, corrupts a copy of the image with `mutate`, and expects restore of the copy to
 * fail cleanly with nothing left behind; then restores the pristine image as a control (which must
 * work: the failure was the corruption's doing and the pid was left free).
 */
async function corruptedRestore(tag: string, mutate: (copy: string) => string, mentions: RegExp[]) {
  const w = await dumpedWorkload(tag);
  const copy = path.join(w.dir, 'img-bad');
  fs.cpSync(w.img, copy, { recursive: true });
  const what = mutate(copy);

  const before = new Set(allPids());
  const r = await ckpt(['restore', '-D', copy, '--detach']);
  track(w.pid, bin('workload')); // in case it wrongly succeeded
  expectCleanError(r, ...mentions);
  await expectNothingLeftBehind(before, w.pid);

  // control: the untouched image restores fine
  const lastBefore = lastTick(w.stdout);
  await restoreOk(w.img, w.pid, bin('workload'));
  await waitForTick(w.stdout, lastBefore + 2);
  return what;
}

describe('dump errors', () => {
  it('no such pid', async () => {
    const pid = freePid();
    const dir = makeTempDir('nopid');
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img')]);
    expectCleanError(r, numRe(pid), /no such|not exist|not found|ESRCH|gone|exited|no process/i);
  });

  it('pid 2, a kernel thread', async () => {
    const st = procStat(2);
    const isKthread = st !== null && (Number(st[8]) & PF_KTHREAD) !== 0;
    if (!isKthread) {
      console.warn('errors: pid 2 is not a kernel thread on this machine (no kernel threads visible?); test not run');
      return;
    }
    const dir = makeTempDir('kthread');
    const r = await ckpt(['dump', '-t', '2', '-D', path.join(dir, 'img')]);
    expectCleanError(r, numRe(2), /kernel|kthread|EPERM|not permitted|cannot|refus/i);
    expect(isAlive(2)).toBe(true);
    expect(tracerPid(2)).toBe(0);
  });

  it('a pid already traced by another process', async () => {
    const dir = makeTempDir('traced');
    const traced = bin('traced');
    const { pid: parent, stdout } = await runFixture(dir, [traced], { noNamespace: true });
    const m = await waitForLine(stdout, /^traced child=(\d+)$/);
    const child = Number(m.match[1]);
    track(child, traced);
    const childTickRe = new RegExp(`^child pid=${child} tick (\\d+)$`);
    await waitForTick(stdout, 3, 15_000, childTickRe);
    expect(tracerPid(child), 'the fixture child should be traced by its parent').toBe(parent);

    const r = await ckpt(['dump', '-t', String(child), '-D', path.join(dir, 'img')]);
    expectCleanError(r, numRe(child), /trac|ptrace|EPERM|not permitted|busy|attach|seize/i);

    // the target is untouched: alive, still traced by its own parent, still ticking
    expect(isAlive(child), 'traced child died').toBe(true);
    expect(isAlive(parent), 'tracing parent died').toBe(true);
    expect(tracerPid(child)).toBe(parent);
    const seen = numbersOf(stdout, childTickRe);
    await waitForTick(stdout, seen[seen.length - 1] + 3, 15_000, childTickRe);
    expect(tracerPid(child)).toBe(parent);
  });

  // eventfd, epoll, signalfd, timerfd, inotify, fanotify, pidfds and sockets are supported: the
  // refused kinds are an io_uring and a userfaultfd.
  const refused: [string, RegExp][] = [
    ['uring', /io_uring/i],
    ['userfaultfd', /userfaultfd/i],
  ];
  it.each(refused)('a process holding an unsupported fd (%s) is refused and left running', async (kind, kindRe) => {
    const dir = makeTempDir(`fd-${kind}`);
    const { pid, stdout } = await runFixture(dir, [bin('fdkinds'), kind]);
    const m = await waitForLine(stdout, /^fd=(\d+) kind=(\w+)$/);
    const fd = Number(m.match[1]);
    await waitForTick(stdout, 3);

    const before = new Set(allPids());
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img')]);
    expectCleanError(r, numRe(fd), kindRe);
    await expectNothingLeftBehind(before, null);

    expectRunningFree(pid, `${kind} holder after a refused dump`);
    const last = lastTick(stdout);
    await waitForTick(stdout, last + 3);
    expectRunningFree(pid, `${kind} holder after a refused dump`);
    expectConsecutive(ticks(stdout), 1, `ticks of the ${kind} holder`);
  });
});

describe('state ckpt cannot recreate yet is refused, naming it', () => {
  // python3 as a child subreaper: X (setsid) forks Z, Z forks Y then leaves X's session
  // (setsid), X exits: Z is reparented to python3, Y stays Z's child in X's session, which Z is no
  // longer in. The kernel would not hand Y back to Z (not a subreaper), so no restore can make it.
  const LEFT_SESSION = [
    'import ctypes, os, time',
    'ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)',
    'if os.fork() == 0:',
    '    os.setsid()',
    '    if os.fork() == 0:',
    '        if os.fork() == 0:',
    '            time.sleep(600)',
    '        time.sleep(0.1)',
    '        os.setsid()',
    '        time.sleep(600)',
    '    time.sleep(0.3)',
    '    os._exit(0)',
    'os.wait()',
    'time.sleep(0.2)',
    'print("ready", flush=True)',
    'time.sleep(600)',
  ].join('\n');
  const cases: Array<[string, string, RegExp]> = [
    [
      'a process left in a session its parent has left',
      LEFT_SESSION,
      /pid \d+ is in session \d+, which its parent \d+ is not in, and \d+ is neither a child subreaper nor a pid namespace init/,
    ],
    [
      'a UTS namespace of its own',
      ['import ctypes, time', 'assert ctypes.CDLL(None).unshare(0x04000000) == 0', 'print("ready", flush=True)', 'time.sleep(600)'].join('\n'),
      /another UTS \(host name\) namespace/,
    ],
    [
      'a netlink socket with a reply queued and unread',
      [
        'import socket, struct, time',
        's = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)',
        '# RTM_GETLINK (18), NLM_F_REQUEST | NLM_F_DUMP: the kernel answers; nobody reads it',
        "s.send(struct.pack('=LHHLLBxHiII', 32, 18, 0x301, 1, 0, 0, 0, 0, 0, 0))",
        'time.sleep(0.2)',
        'print("ready", flush=True)',
        'time.sleep(600)',
      ].join('\n'),
      /a netlink socket \(route, port \d+\) with messages queued and unread/,
    ],
    [
      'sockets of a family or protocol no plugin handles (vsock; MPTCP): the refusal names family, type and protocol',
      ['import socket, time', 's = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM, 0)', 'print("ready", flush=True)', 'time.sleep(600)'].join('\n'),
      /fd \d+ is a vsock stream socket \(protocol 0\) \(socket:\[\d+\]\), and no loaded plugin handles that kind of file/,
    ],
    [
      'an MPTCP socket: named as an IPv4 stream socket of protocol 262',
      ['import socket, time', 's = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)', 'print("ready", flush=True)', 'time.sleep(600)'].join('\n'),
      /fd \d+ is an IPv4 stream socket \(protocol 262\)/,
    ],
    [
      "a packet socket's ring mapped into the process (PACKET_MMAP)",
      [
        'import mmap, socket, struct, time',
        's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)',
        '# PACKET_RX_RING (5): one 4096-byte block of four frames, mapped',
        "s.setsockopt(263, 5, struct.pack('IIII', 4096, 1, 1024, 4))",
        'm = mmap.mmap(s.fileno(), 4096)',
        'print("ready", flush=True)',
        'time.sleep(600)',
      ].join('\n'),
      /it maps the memory of socket:\[\d+\] at 0x[0-9a-f]+ \(a packet socket's ring \(PACKET_MMAP\)\)/,
    ],
    [
      'a raw socket with a packet queued and unread',
      [
        'import socket, time',
        'r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)',
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))",
        'time.sleep(0.2)',
        'print("ready", flush=True)',
        'time.sleep(600)',
      ].join('\n'),
      /raw .* with \d+ bytes received and unread/,
    ],
  ];
  const SHARED = path.join(BUILD_DIR, 'shared');
  const fixtures: Array<[string, string, RegExp]> = [
    ['a child sharing its memory and signal handlers (CLONE_VM, CLONE_SIGHAND)', 'vm', /shares its address space \(a vfork child, or CLONE_VM\) with pid \d+/],
    ['two children sharing an fd table their parent left', 'siblings', /shares its fd table \(CLONE_FILES\) with pid \d+ .*which is not its parent/],
    ["a vfork child that has not exec'd", 'vfork', /shares its address space \(a vfork child, or CLONE_VM\) with pid \d+/],
  ];
  it.each(fixtures)('%s', async (what, mode, why) => {
    const dir = makeTempDir(`refused-${mode}`);
    const { pid, stdout } = await runFixture(dir, [SHARED, mode], { noNamespace: true, name: mode });
    await waitForLine(stdout, /^ready$/);
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    for (const k of kids) track(k, SHARED);
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img')]);
    expectCleanError(r, why);
    for (const p of [pid, ...kids]) expect(isAlive(p) && tracerPid(p) === 0, `${what}: pid ${p} carries on, untraced`).toBe(true);
  });
  it.each(cases)('%s', async (what, code, why) => {
    const dir = makeTempDir('refused-shape');
    const { pid, stdout } = await runFixture(dir, ['python3', '-c', code], { noNamespace: true, name: 'py' });
    await waitForLine(stdout, /^ready$/);
    const kids = (p: number): number[] =>
      fs
        .readFileSync(`/proc/${p}/task/${p}/children`, 'utf8')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number)
        .flatMap((k) => [k, ...kids(k)]);
    for (const k of kids(pid)) track(k, 'python3');
    const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, 'img')]);
    expectCleanError(r, why);
    expectRunningFree(pid, `${what}: python3 after the refusal`);
  });
});

describe('restore errors', () => {
  it('missing image directory', async () => {
    const dir = makeTempDir('noimg');
    const missing = path.join(dir, 'does-not-exist');
    const before = new Set(allPids());
    const r = await ckpt(['restore', '-D', missing, '--detach']);
    expectCleanError(r, new RegExp(`${escapeRe(missing)}|no such|not found|does not exist|missing|ENOENT`, 'i'));
    await expectNothingLeftBehind(before, null);

    const s = await ckpt(['show', missing]);
    expectCleanError(s);
  });

  it('truncated pages file', async () => {
    const what = await corruptedRestore(
      'trunc',
      (copy) => {
        const big = biggestFile(copy);
        fs.truncateSync(big.file, Math.floor(big.size / 2));
        return big.file;
      },
      [CORRUPTION_RE],
    );
    expect(what).toBeTruthy();
  });

  it('one byte flipped in the middle of the biggest image file', async () => {
    await corruptedRestore(
      'flip',
      (copy) => {
        const big = biggestFile(copy);
        flipByte(big.file, Math.floor(big.size / 2));
        return big.file;
      },
      [CORRUPTION_RE],
    );
  });

  it('one byte flipped in a .json image file', async () => {
    await corruptedRestore(
      'flipjson',
      (copy) => {
        const files = imageFiles(copy).filter((f) => f.size > 0);
        let target = files.filter((f) => f.file.endsWith('.json')).sort((a, b) => b.size - a.size)[0];
        if (!target) {
          target = files.sort((a, b) => a.size - b.size)[0];
          console.warn(`errors: the image has no .json file; flipping a byte in the smallest file ${target.file} instead`);
        }
        flipByte(target.file, Math.floor(target.size / 2));
        return target.file;
      },
      // The manifest is signed; records are listed in it with their digest.
      [/modified after it was signed|does not match its BLAKE3 digest in the signed manifest/],
    );
  });

  it('pid still in use: the original is running (dumped with --leave-running)', async () => {
    const dir = makeTempDir('inuse');
    const outdir = path.join(dir, 'out');
    fs.mkdirSync(outdir);
    const img = path.join(dir, 'img');
    const { pid, stdout } = await runFixture(dir, [bin('workload'), '8', outdir], { name: 'workload', noNamespace: true });
    await waitForTick(stdout, 3);
    await dumpOk(pid, img, ['--leave-running']);
    expectRunningFree(pid, 'original after dump --leave-running');

    const before = new Set(allPids());
    const r = await ckpt(['restore', '-D', img, '--detach']);
    expectCleanError(r, numRe(pid), /in use|taken|exists|already|busy|occupied|running|alive/i);
    await expectNothingLeftBehind(before, null);

    // the original is untouched
    expectRunningFree(pid, 'original after the failed restore');
    await waitForTick(stdout, lastTick(stdout) + 3);
    expectConsecutive(ticks(stdout), 1, `ticks of the original\n${tail(stdout)}`);
    expect(fs.readFileSync(stdout, 'utf8')).not.toMatch(/^(fpumismatch|sleepret|fatal)/m);
  });
});
