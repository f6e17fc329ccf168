// Open files: unlinked files, restart policies (verify / image / disk) chosen by rules, identical
// content stored once, substitution at restart (--substitute ID=PATH and ID=FD), relocation.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  CLI,
  ckpt,
  expectCleanError,
  expectOk,
  makeTempDir,
  readLines,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
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
    expect(blobs.length, `data.txt, same1=same2 (once), the unlinked file: ${blobs}`).toBe(3);
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
