// Open files: unlinked files, restart policies (verify / image / disk) chosen by rules, identical
// content stored once, substitution at restart (--substitute ID=PATH and ID=FD), relocation.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  checksAfterRestore,
  CLI,
  ckpt,
  expectCleanError,
  expectOk,
  isAlive,
  killAndWaitGone,
  makeTempDir,
  readLines,
  readText,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
  cleanupProcesses,
} from './helpers.js';

useCleanup();

const FILES = path.join(BUILD_DIR, 'files');

function setup(tag: string) {
  const dir = makeTempDir(tag);
  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  fs.writeFileSync(path.join(work, 'ro.txt'), 'abcdefghijklmnopqrstuvwxyz\n');
  fs.writeFileSync(path.join(work, 'data.txt'), '0123456789data\n');
  fs.writeFileSync(path.join(work, 'same1.txt'), 'same content\n');
  fs.writeFileSync(path.join(work, 'same2.txt'), 'same content\n');
  return { dir, work, img: path.join(dir, 'img') };
}

async function report(pid: number, stdout: string): Promise<string> {
  const n = readLines(stdout).filter((l) => l.startsWith('report ')).length;
  process.kill(pid, 'SIGUSR1');
  await waitFor(
    () => readLines(stdout).filter((l) => l.startsWith('report ')).length > n,
    10_000,
    () => 'no report',
  );
  return readLines(stdout)
    .filter((l) => l.startsWith('report '))
    .at(-1)!;
}

async function startAndDump(work: string, dir: string, img: string, cwd?: string) {
  const started = await runFixture(dir, [FILES, work], { name: 'files' });
  await waitForLine(started.stdout, /^tick 3 /);
  const before = await report(started.pid, started.stdout);
  const d = await ckpt(['dump', '-t', String(started.pid), '-D', img], { cwd });
  expectOk(d);
  await waitNotAlive(started.pid);
  return { ...started, before };
}

function outTicks(file: string): number[] {
  return fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => Number(l.split(' ')[1]));
}

describe('files', () => {
  it('an unlinked file comes back unlinked with its bytes and offset; offsets, cwd and sharing kept', async () => {
    const { dir, work, img } = setup('unlinked');
    const { pid, stdout, before } = await startAndDump(work, dir, img);
    expect(before).toMatch(/unl=unlinked-secret-0123456789 unlpos=7 nlink=0/);
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    const after = await report(pid, stdout);
    expect(after).toBe(before);
    expect(fs.readlinkSync(`/proc/${pid}/fd/8`)).toBe(`${path.join(work, 'unlinked.tmp')} (deleted)`);
    expect(fs.existsSync(path.join(work, 'unlinked.tmp')), 'the file is unlinked again').toBe(false);
    await waitFor(
      () => outTicks(path.join(work, 'out.txt')).length > 8,
      10_000,
      () => 'out.txt stopped',
    );
    outTicks(path.join(work, 'out.txt')).forEach((t, i) => expect(t, 'out.txt ticks continue once each').toBe(i));
  });

  it('policy verify (default for files only read): a changed file stops the restore, naming it', async () => {
    const { dir, work, img } = setup('verify');
    const { pid, stdout, before } = await startAndDump(work, dir, img);
    const ro = path.join(work, 'ro.txt');
    fs.writeFileSync(ro, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ\n'); // same size, other bytes
    expectCleanError(await ckpt(['restore', '-D', img, '--detach']), ro, /changed since the dump/);
    expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    fs.writeFileSync(ro, 'abcdefghijklmnopqrstuvwxyz\n'); // the same bytes again (newer mtime): accepted
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    expect(await report(pid, stdout)).toBe(before);
  });

  it('a file now shorter than the offset of an fd on it: the restore stops, naming it, and leaves nothing; long enough again, it restores at that offset', async () => {
    const dir = makeTempDir('shorter');
    const f = path.join(dir, 'log.bin');
    const img = path.join(dir, 'img');
    fs.writeFileSync(f, Buffer.alloc(8192, 7));
    // fd 3 read-write (no verify policy: only the size check guards it), at offset 5000.
    const script = `exec 3<>"${f}"; dd bs=5000 count=1 <&3 >/dev/null 2>&1; exec sleep 600`;
    const { pid } = await runFixture(dir, ['sh', '-c', script], { name: 'shorter', marker: 'sleep' });
    const pos = () => Number(/^pos:\s+(\d+)$/m.exec(readText(`/proc/${pid}/fdinfo/3`))?.[1]);
    await waitFor(
      () => fs.existsSync(`/proc/${pid}/fdinfo/3`) && pos() === 5000 && readText(`/proc/${pid}/comm`).trim() === 'sleep',
      10_000,
      () => 'fd 3 at 5000 in sleep',
    );
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    fs.truncateSync(f, 100);
    expectCleanError(await ckpt(['restore', '-D', img, '--detach']), f, /is now 100 bytes, shorter than the saved offset 5000/);
    expect(fs.existsSync(`/proc/${pid}`), 'nothing left of a failed restore').toBe(false);
    fs.writeFileSync(f, Buffer.alloc(8192, 7));
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    expect(pos(), 'fd 3 at its offset again').toBe(5000);
    await killAndWaitGone(pid);
  });

  it('a file that is a FIFO at restore: the restore stops at once, naming it (no wait for a reader), and leaves nothing; the file back, it restores', async () => {
    const dir = makeTempDir('fifo-now');
    const f = path.join(dir, 'in.dat');
    const img = path.join(dir, 'img');
    fs.writeFileSync(f, 'some bytes\n');
    // fd 3 writes only (policy disk, no check of the file before its open): an open of a FIFO
    // for writing waits for a reader.
    const script = `exec 3>>"${f}"; exec sleep 600`;
    const { pid } = await runFixture(dir, ['sh', '-c', script], { name: 'fifo-now', marker: 'sleep' });
    await waitFor(
      () => fs.existsSync(`/proc/${pid}/fd/3`) && readText(`/proc/${pid}/comm`).trim() === 'sleep',
      10_000,
      () => 'fd 3 in sleep',
    );
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    fs.rmSync(f);
    const mk = spawnSync('mkfifo', [f]);
    expect(mk.status, String(mk.stderr)).toBe(0);
    const r = await ckpt(['restore', '-D', img, '--detach'], { timeoutMs: 20_000 });
    expectCleanError(r, f, /no longer a regular file/);
    expect(fs.existsSync(`/proc/${pid}`), 'nothing left of a failed restore').toBe(false);
    fs.rmSync(f);
    fs.writeFileSync(f, 'some bytes\n');
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    expect(fs.readlinkSync(`/proc/${pid}/fd/3`)).toBe(f);
    await killAndWaitGone(pid);
  });

  it('a file saved by content (policy image) that is a FIFO at restore: refused naming it, no wait for a reader', async () => {
    const dir = makeTempDir('fifo-content');
    const f = path.join(dir, 'in.dat');
    const img = path.join(dir, 'img');
    const cfg = path.join(dir, 'ckpt.config.json');
    fs.writeFileSync(cfg, JSON.stringify({ files: { rules: [{ match: { path: `${dir}/**` }, method: 'content', policy: 'image' }] } }));
    fs.writeFileSync(f, 'some bytes\n');
    const { pid } = await runFixture(dir, ['sh', '-c', `exec 3<"${f}"; exec sleep 600`], { name: 'fifo-content', marker: 'sleep' });
    await waitFor(
      () => fs.existsSync(`/proc/${pid}/fd/3`) && readText(`/proc/${pid}/comm`).trim() === 'sleep',
      10_000,
      () => 'fd 3 in sleep',
    );
    expectOk(await ckpt(['-c', cfg, 'dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    fs.rmSync(f);
    const mk = spawnSync('mkfifo', [f]);
    expect(mk.status, String(mk.stderr)).toBe(0);
    expectCleanError(await ckpt(['-c', cfg, 'restore', '-D', img, '--detach'], { timeoutMs: 20_000 }), f, /no longer a regular file/);
    expect(fs.existsSync(`/proc/${pid}`), 'nothing left of a failed restore').toBe(false);
    fs.rmSync(f);
    expectOk(await ckpt(['-c', cfg, 'restore', '-D', img, '--detach']));
    expect(fs.readFileSync(f, 'utf8'), 'the image copy put back').toBe('some bytes\n');
    await killAndWaitGone(pid);
  });

  it('rules: method content with policy image puts the image copy back; identical content stored once; policy disk keeps the disk copy', async () => {
    const { dir, work, img } = setup('rules');
    const cfgDir = path.join(dir, 'cfg');
    fs.mkdirSync(cfgDir);
    fs.writeFileSync(
      path.join(cfgDir, 'ckpt.config.json'),
      JSON.stringify({
        files: {
          rules: [
            { match: { path: '**/data.txt' }, method: 'content', policy: 'image' },
            { match: { path: '**/same*.txt' }, method: 'content', policy: 'disk' },
          ],
        },
      }),
    );
    const { pid, stdout, before } = await startAndDump(work, dir, img, cfgDir);
    const blobs = fs.readdirSync(path.join(img, 'latest')).filter((f) => f.startsWith('file-'));
    expect(blobs.length, `data.txt, same1=same2 (once): ${blobs}`).toBe(2);
    const deleted = fs.readdirSync(path.join(img, 'latest')).filter((f) => f.startsWith('shmem-'));
    expect(deleted.length, `the unlinked file, a deleted-file object: ${deleted}`).toBe(1);
    fs.writeFileSync(path.join(work, 'data.txt'), 'XXXXXXXXXXXXXXXXXXXXXXXXXXXX\n');
    fs.writeFileSync(path.join(work, 'same2.txt'), 'changed on disk\n');
    expectOk(await ckpt(['restore', '-D', img, '--detach'], { cwd: cfgDir }));
    expect(fs.readFileSync(path.join(work, 'data.txt'), 'utf8'), 'image policy restored data.txt').toBe('0123456789data\n');
    const after = await report(pid, stdout);
    expect(after).toContain('data=0123456789data_');
    expect(after).toContain('same=same content_|changed on disk_');
    expect(after.replace(/same=.*? cwd=/, 'cwd=')).toBe(before.replace(/same=.*? cwd=/, 'cwd='));
  });

  it('--substitute redirects an open file (by path, and to an fd of the restorer), keeping its sharing', async () => {
    const { dir, work, img } = setup('subst');
    const { pid, stdout } = await startAndDump(work, dir, img);
    const list = await ckpt(['show', img, '--files']);
    expectOk(list);
    const line = list.stdout.split('\n').find((l) => l.split('|')[2] === path.join(work, 'out.txt'))!;
    expect(line, list.stdout).toMatch(/^file\|f\d+\.\d+\|.*\|\d+:4$/);
    const id = line.split('|')[1];
    const logLine = list.stdout.split('\n').find((l) => l.split('|')[2] === stdout)!;
    expect(logLine.split('|')[3].split(',').length, 'stdout and stderr share one description').toBeGreaterThanOrEqual(2);

    // out.txt is now another program's: send the restored output elsewhere.
    const oldOut = path.join(work, 'out.txt');
    const ticksBefore = outTicks(oldOut).length;
    const newOut = path.join(dir, 'redirected.txt');
    expectOk(await ckpt(['restore', '-D', img, '--detach', '--substitute', `${id}=${newOut}`]));
    await waitFor(
      () => fs.existsSync(newOut) && outTicks(newOut).length >= 3,
      10_000,
      () => 'nothing written to the substitute',
    );
    expect(outTicks(oldOut).length, 'the old file is left alone').toBe(ticksBefore);
    expect(fs.readlinkSync(`/proc/${pid}/fd/4`)).toBe(newOut);

    // Again, to an fd the restorer holds (fd 3 of ckpt restore).
    process.kill(pid, 'SIGKILL');
    await waitNotAlive(pid);
    const viaFd = path.join(dir, 'via-fd.txt');
    const fd = fs.openSync(viaFd, 'a');
    const r = spawnSync(process.execPath, [CLI, 'restore', '-D', img, '--detach', '--substitute', `${id}=3`], {
      stdio: ['ignore', 'pipe', 'pipe', fd],
      encoding: 'utf8',
    });
    fs.closeSync(fd);
    expect(r.status, r.stderr).toBe(0);
    track(pid, FILES);
    await waitFor(
      () => fs.existsSync(viaFd) && fs.readFileSync(viaFd, 'utf8').split('\n').length > 3,
      10_000,
      () => 'nothing written to fd 3',
    );
    expect(fs.readlinkSync(`/proc/${pid}/fd/4`)).toBe(viaFd);
    expectCleanError(await ckpt(['restore', '-D', img, '--detach', '--substitute', 'f1.99=/tmp/x']), /f1\.99/);
    void stdout;
  });

  it('--relocate opens files and the working directory under their new place', async () => {
    const { dir, work, img } = setup('reloc');
    const { pid, stdout, before } = await startAndDump(work, dir, img);
    const moved = path.join(dir, 'moved');
    fs.renameSync(work, moved);
    expectCleanError(await ckpt(['restore', '-D', img, '--detach']), /no longer exists|ENOENT|cannot/);
    expectOk(await ckpt(['restore', '-D', img, '--detach', '--relocate', `${work}=${moved}`]));
    const after = await report(pid, stdout);
    expect(after).toBe(before.replace(`cwd=${work}`, `cwd=${moved}`));
    expect(fs.readlinkSync(`/proc/${pid}/fd/3`)).toBe(path.join(moved, 'ro.txt'));
  });
});

describe('pipes', () => {
  const PIPES = path.join(BUILD_DIR, 'pipes');

  /** `(printf typed; exec sleep 600) | pipes | cat > OUT` started by sh: both stdio pipes have an end outside the tree. */
  async function startPipes(dir: string) {
    const reportFile = path.join(dir, 'report');
    const go = path.join(dir, 'go');
    const out = path.join(dir, 'out');
    const sh = spawn('sh', ['-c', `(printf 'typed\\n'; exec sleep 600) | ${PIPES} ${reportFile} ${go} | cat > ${out}`], { stdio: 'ignore' });
    track(sh.pid!, 'sh');
    const pid = Number((await waitForLine(reportFile, /^ready (\d+)$/)).match[1]);
    track(pid, PIPES);
    const kids = fs.readFileSync(`/proc/${sh.pid}/task/${sh.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    for (const k of kids) if (k !== pid) track(k, fs.readFileSync(`/proc/${k}/comm`, 'utf8').trim());
    const pipeOf = (fd: number) => /^pipe:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))![1];
    return { pid, reportFile, go, out, stdinPipe: pipeOf(0), stdoutPipe: pipeOf(1) };
  }

  /** Lets the restored process run its checks; returns their lines. */
  async function checks(reportFile: string, go: string, from: number): Promise<string[]> {
    fs.writeFileSync(go, '');
    await waitForLine(reportFile, /^done$/, 15_000, from);
    const lines = readLines(reportFile).slice(from);
    fs.rmSync(go);
    return lines.slice(0, lines.indexOf('done'));
  }

  it('ends outside the tree or closed by everyone are absent after the restore; capacity, packet mode, flags and queued bytes are kept', async () => {
    const dir = makeTempDir('pipes');
    const img = path.join(dir, 'img');
    const p = await startPipes(dir);
    await waitFor(
      () => readText(p.out).includes('before'),
      10_000,
      () => 'stdout did not reach cat',
    );
    const show = await ckpt(['dump', '-t', String(p.pid), '-D', img, '--json']);
    expectOk(show);
    await waitNotAlive(p.pid);
    const files = await ckpt(['show', img, '--files']);
    expect(files.stdout, 'show --files names both pipes').toContain(`pipe:[${p.stdinPipe}]`);
    expect(files.stdout).toContain(`pipe:[${p.stdoutPipe}]`);

    // Restored as it is: the outsiders' ends are absent.
    const from = readLines(p.reportFile).length;
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    track(p.pid, PIPES);
    const lines = await checks(p.reportFile, p.go, from);
    expect(
      lines.filter((l) => !l.startsWith('ok ') && !/^std/.test(l)),
      lines.join('\n'),
    ).toEqual([]);
    expect(lines.filter((l) => l.startsWith('ok ')).length, lines.join('\n')).toBe(6);
    expect(lines, 'stdin: what was typed, then end of file').toContain('stdin 6 typed');
    expect(lines).toContain('stdin-then 0');
    expect(lines, 'stdout: no reader').toContain('stdout EPIPE');
    expect(readText(p.out), 'nothing reached the old reader').toBe('before\n');

    // Again, with its stdout connected to a file of ckpt restore (CRIU's form fd[N]:RESOURCE too).
    await killAndWaitGone(p.pid);
    const to = path.join(dir, 'inherited.out');
    const fd = fs.openSync(to, 'a');
    const from2 = readLines(p.reportFile).length;
    try {
      const r = spawnSync(process.execPath, [CLI, 'restore', '-D', img, '--detach', '--inherit-fd', `fd[3]:pipe:[${p.stdoutPipe}]`], {
        stdio: ['ignore', 'pipe', 'pipe', fd],
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
    track(p.pid, PIPES);
    const again = await checks(p.reportFile, p.go, from2);
    expect(again, again.join('\n')).toContain('stdout written');
    expect(readText(to)).toBe('after\n');
    expect(fs.readlinkSync(`/proc/${p.pid}/fd/1`)).toBe(to);

    // Bad input: a resource the image does not hold, an fd the restorer does not have.
    await killAndWaitGone(p.pid);
    expectCleanError(await ckpt(['restore', '-D', img, '--detach', '--inherit-fd', '1:pipe:[999]']), 'pipe:[999]', /no open file/);
    expectCleanError(await ckpt(['restore', '-D', img, '--detach', '--inherit-fd', `77:pipe:[${p.stdoutPipe}]`]), /fd 77 is not open/);
    expectCleanError(await ckpt(['restore', '-D', img, '--detach', '--inherit-fd', 'nonsense']), /expected FD:RESOURCE/);
  });
});

describe('deleted objects and other file state', () => {
  it('deleted files (write-only, O_PATH, O_NOFOLLOW, sparse, O_TMPFILE), FIFOs, devices, directories and mappings; memfd seals; symlink fds; mprotect; guard regions', async () => {
    // Nothing of the dump is left in the directory (the symlink is the program's).
    const { pid, work, lines } = await checksAfterRestore('ghosts', ({ work }) => expect(fs.readdirSync(work)).toEqual(['link', 'mprot']));
    expect(
      lines.filter((l) => l.startsWith('FAIL')),
      lines.join('\n'),
    ).toEqual([]);
    expect(lines.filter((l) => l.startsWith('ok ')).length, lines.join('\n')).toBe(14);
    expect(fs.readdirSync(work), 'the restore left nothing behind in the directory').toEqual(['link', 'mprot']);
    // The deleted file is back under its old name, deleted.
    expect(fs.readlinkSync(`/proc/${pid}/fd/3`)).toBe(`${path.join(work, 'wronly')} (deleted)`);
  });
});

describe('AIO rings', () => {
  it('two io_setup contexts with completed events not yet reaped, one wrapped round its ring, work on at the same addresses', async () => {
    const { lines } = await checksAfterRestore('aio');
    expect(lines, lines.join('\n')).toEqual(['ok ring-a', 'ok ring-b', 'ok capacity', 'ok data', 'done']);
  });
});

describe('huge pages', () => {
  // Private anonymous huge-page memory needs free 2 MiB pages: the test reserves some, then gives them back.
  const NR = '/proc/sys/vm/nr_hugepages';
  const FREE = '/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages';
  const canReserve = fs.existsSync(FREE);
  if (!canReserve) console.warn('huge-page test not run: this kernel has no 2 MiB huge pages');
  it.skipIf(!canReserve)('private anonymous huge-page memory (MAP_HUGETLB) comes back in huge pages with its content', async (ctx) => {
    const before = fs.readFileSync(NR, 'utf8').trim();
    const free = Number(fs.readFileSync(FREE, 'utf8'));
    fs.writeFileSync(NR, String(Number(before) + Math.max(0, 6 - free)));
    try {
      const got = Number(fs.readFileSync(FREE, 'utf8'));
      if (got < 4) {
        console.warn(`huge-page test not run: the kernel could reserve only ${got} free 2 MiB pages (fragmented memory), 4 are needed`);
        ctx.skip();
      }
      const { lines } = await checksAfterRestore('hugetlb');
      expect(lines, lines.join('\n')).toEqual(['ok content', 'ok huge', 'ok private', 'done']);
      await cleanupProcesses();
    } finally {
      fs.writeFileSync(NR, before);
    }
  });
});

describe('open file state', () => {
  it('SIGIO owner, signal and O_ASYNC; read and write leases; an epoll watch whose fd was closed after a dup; pidfds of a child and of a reaped one', async () => {
    const { lines } = await checksAfterRestore('fdstate');
    expect(lines, lines.join('\n')).toEqual(['ok fown', 'ok leases', 'ok epoll', 'ok pidfd', 'done']);
  });

  it('a fanotify group: its flags, an inode mark, a mount mark and an ignore mask come back and report events; a watch and a mark on a deleted file stay on it', async () => {
    const { lines } = await checksAfterRestore('fanotify');
    expect(lines, lines.join('\n')).toEqual(['ok marks', 'ok inode-mark', 'ok mount-mark', 'ok ignore-mask', 'ok deleted', 'done']);
  });

  it('/proc/PID of a process gone at dump time: the fds come back as fds of a dead process, never of whoever has that pid now', async () => {
    const dir = makeTempDir('deadproc');
    const go = path.join(dir, 'go');
    const img = path.join(dir, 'img');
    const PY = [
      'import errno, os, sys, time',
      'pid = os.fork()',
      'if pid == 0:',
      '    time.sleep(0.3)',
      '    os._exit(0)',
      "d = os.open(f'/proc/{pid}', os.O_RDONLY | os.O_DIRECTORY)",
      "s = os.open(f'/proc/{pid}/status', os.O_RDONLY)",
      'os.waitpid(pid, 0)',
      'def probe():',
      '    out = []',
      '    for f in (lambda: os.stat("status", dir_fd=d), lambda: os.read(s, 100)):',
      '        try:',
      '            f()',
      '            out.append("works")',
      '        except OSError as e:',
      '            out.append(errno.errorcode[e.errno])',
      "    return ' '.join(out + [os.readlink(f'/proc/self/fd/{d}'), os.readlink(f'/proc/self/fd/{s}')])",
      "print('before', probe(), flush=True)",
      'while not os.path.exists(sys.argv[1]):',
      '    time.sleep(0.02)',
      "print('after', probe(), flush=True)",
      'time.sleep(600)',
    ].join('\n');
    const { pid, stdout } = await runFixture(dir, ['python3', '-c', PY, go], { noNamespace: true, name: 'deadproc' });
    const before = (await waitForLine(stdout, /^before (.*)$/)).match[1];
    expect(before).toMatch(/^ESRCH ESRCH \/proc\/\d+ \(deleted\) \/proc\/\d+\/status$/);
    const dead = Number(/\/proc\/(\d+)/.exec(before)![1]);
    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img]));
    await waitNotAlive(pid);
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    track(pid, 'python3');
    fs.writeFileSync(go, '');
    expect((await waitForLine(stdout, /^after (.*)$/)).match[1], `the fds of /proc/${dead}`).toBe(before);
  });

  it('an fd table shared by CLONE_FILES and a cwd, root and umask shared by CLONE_FS stay shared; a plain child keeps its own', async () => {
    const { lines } = await checksAfterRestore('sharing');
    expect(
      lines.filter((l) => !l.startsWith('ok ')),
      lines.join('\n'),
    ).toEqual(['done']);
    expect(lines.length, lines.join('\n')).toBe(10);
  });

  it('many descriptions of one file across a tree stay shared or apart as they were (offsets and kcmp checked inside)', async () => {
    // Twelve children, each with its parent's description, one or two of its own and a dup: the
    // dump finds which fd is which description by kcmp's order among the fds of one inode.
    const { lines } = await checksAfterRestore('descriptions');
    expect(
      lines.filter((l) => !l.startsWith('ok ')),
      lines.join('\n'),
    ).toEqual(['done']);
    expect(lines.length, lines.join('\n')).toBe(43);
  });

  it('a SIGIO owner or a pidfd outside the checkpoint is refused, naming it', async () => {
    const dir = makeTempDir('fdstate-out');
    const PY = [
      'import fcntl, os, signal, sys, time',
      'r, w = os.pipe()',
      `fcntl.fcntl(r, fcntl.F_SETOWN, ${process.pid}) if sys.argv[1] == 'fown' else os.pidfd_open(${process.pid})`,
      'print("ready", flush=True)',
      'time.sleep(600)',
    ].join('\n');
    for (const what of ['fown', 'pidfd'] as const) {
      const { pid, stdout } = await runFixture(dir, ['python3', '-c', PY, what], { noNamespace: true, name: what });
      await waitForLine(stdout, /^ready$/);
      const r = await ckpt(['dump', '-t', String(pid), '-D', path.join(dir, `img-${what}`)]);
      expectCleanError(r, new RegExp(`pid ${pid}`), String(process.pid), /not in the checkpoint/);
      expect(isAlive(pid), `${what}: the process carries on`).toBe(true);
    }
  });
});
