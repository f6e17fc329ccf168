// The image directory is safe: generations with an atomically switched `latest`, files ckpt did
// not write are never deleted, the previous image survives a failed dump (an injected error, a full
// disk), a second dump into a directory in use is refused before it freezes anything, a symlinked
// directory is refused unless asked, stale staging directories of killed dumps are removed, and
// restore refuses an image others could have written.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  bin,
  expectCarriesOn,
  startWorkload,
  ckpt,
  dumpOk,
  expectCleanError,
  expectOk,
  makeTempDir,
  restoreOk,
  useCleanup,
  waitNotAlive,
  waitPidFree,
} from './helpers.js';

useCleanup();

const mounts: string[] = [];
afterEach(() => {
  for (const m of mounts.splice(0).reverse()) {
    try {
      execFileSync('umount', ['-l', m]);
    } catch {
      /* already gone */
    }
  }
});

/** A tmpfs of `size` at a new directory (removed by the test's cleanup). */
function tmpfs(dir: string, size: string, ro = false): string {
  const at = path.join(dir, `tmpfs-${mounts.length}`);
  fs.mkdirSync(at);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700${ro ? ',ro' : ''}`, 'tmpfs', at]);
  mounts.push(at);
  return at;
}

const gens = (img: string) =>
  fs
    .readdirSync(img)
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);

describe('image directory', () => {
  it('generations: latest switches on commit, --keep prunes the oldest, restore takes latest or --generation', async () => {
    const dir = makeTempDir('gens');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    fs.mkdirSync(img, { mode: 0o700 });
    // Files of the user's in the directory: never touched.
    fs.writeFileSync(path.join(img, 'disk.img'), 'not mine');
    fs.writeFileSync(path.join(img, 'proc-1.json'), '{"mine": false}');
    for (let i = 1; i <= 3; i++) {
      const r = await dumpOk(pid, img, ['--leave-running', '--keep', '2', '--json']);
      expect(JSON.parse(r.stdout).generation).toBe(i);
    }
    expect(gens(img), 'generations kept').toEqual([2, 3]);
    expect(fs.readlinkSync(path.join(img, 'latest'))).toBe('3');
    expect(fs.readFileSync(path.join(img, 'disk.img'), 'utf8')).toBe('not mine');
    expect(fs.readFileSync(path.join(img, 'proc-1.json'), 'utf8')).toBe('{"mine": false}');
    expect(fs.existsSync(path.join(img, '.lock')), 'the lock is released').toBe(false);
    const show = await ckpt(['show', img, '--json']);
    expectOk(show);
    expect(JSON.parse(show.stdout)).toMatchObject({ generations: [2, 3], latest: 3 });
    const text = await ckpt(['show', img]);
    expect(text.stdout).toMatch(/generations in .*: 2, 3 \(latest\)/);
    expectCleanError(await ckpt(['restore', '-D', img, '--generation', '1']), /no generation 1/, /2, 3/);

    // Restore the latest, then the older generation on purpose.
    process.kill(pid, 'SIGKILL');
    await waitNotAlive(pid);
    await waitPidFree(pid);
    await restoreOk(img, pid, bin('workload'));
    await expectCarriesOn(pid, stdout, 'restored from latest');
    process.kill(pid, 'SIGKILL');
    await waitNotAlive(pid);
    await waitPidFree(pid);
    const r2 = await ckpt(['restore', '-D', img, '--generation', '2', '--detach']);
    expectOk(r2);
    await expectCarriesOn(pid, stdout, 'restored from generation 2');
  });

  it('a generation beyond --keep is renamed out of the way at the commit and removed by a process of its own', async () => {
    const dir = makeTempDir('removing');
    const { pid, stdout } = await startWorkload(dir, 16);
    const img = path.join(dir, 'img');
    fs.mkdirSync(img, { mode: 0o700 });
    // What a ckpt killed between the rename and the removal leaves: big enough (65 MiB, sparse) to
    // go to the remover process; generation 1 (16 MiB) is removed in the command.
    const left = path.join(img, '.removing-7-999999-deadbeef');
    fs.mkdirSync(left);
    fs.writeFileSync(path.join(left, 'pages-1.img'), '');
    fs.truncateSync(path.join(left, 'pages-1.img'), 65 << 20);
    await dumpOk(pid, img, ['--leave-running']);
    const second = await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running'], { env: { DEBUG: 'ckpt:imagedir' } });
    expectOk(second);
    expect(second.stderr, 'the remover process was started').not.toMatch(/ here: /);
    expect(gens(img), 'the generations right after the second dump').toEqual([2]);
    expect(fs.readlinkSync(path.join(img, 'latest'))).toBe('2');
    const removing = () => fs.readdirSync(img).filter((n) => n.startsWith('.removing-'));
    for (let i = 0; i < 500 && removing().length; i++) await new Promise((r) => setTimeout(r, 10));
    expect(removing(), 'generation 1 and the leftover, removed').toEqual([]);
    expect(fs.readdirSync(img).sort()).toEqual(['2', 'latest']);
    await expectCarriesOn(pid, stdout, 'after the second dump');
  });

  it('a failed dump (injected error, full disk) leaves the previous generation whole and restorable', async () => {
    const dir = makeTempDir('prev');
    const small = await startWorkload(dir, 8, 'small');
    const big = await startWorkload(dir, 96, 'big');
    const img = path.join(tmpfs(dir, '64m'), 'img');
    await dumpOk(small.pid, img, ['--leave-running']);
    const fault = await ckpt(['dump', '-t', String(small.pid), '-D', img], { env: { CKPT_FAULT: 'dump:records:error' } });
    expectCleanError(fault, /injected fault/);
    const full = await ckpt(['dump', '-t', String(big.pid), '-D', img]);
    expectCleanError(full, /no space left/, img);
    await expectCarriesOn(big.pid, big.stdout, 'the big workload after ENOSPC');
    await expectCarriesOn(small.pid, small.stdout, 'the small workload');
    expect(gens(img)).toEqual([1]);
    expect(
      fs.readdirSync(img).filter((n) => n.startsWith('.staging')),
      'no staging left',
    ).toEqual([]);
    expectOk(await ckpt(['show', img, '--verify']));
    process.kill(small.pid, 'SIGKILL');
    await waitNotAlive(small.pid);
    await waitPidFree(small.pid);
    await restoreOk(img, small.pid, bin('workload'));
    await expectCarriesOn(small.pid, small.stdout, 'the small workload restored from the previous generation');
  });

  it('a second dump into a directory in use is refused before it freezes anything', async () => {
    const dir = makeTempDir('lock');
    const a = await startWorkload(dir, 8, 'a');
    const b = await startWorkload(dir, 8, 'b');
    const img = path.join(dir, 'img');
    const first = ckpt(['dump', '-t', String(a.pid), '-D', img, '--leave-running'], { env: { CKPT_FAULT: 'dump:frozen:sleep=2000' } });
    await waitForFile(path.join(img, '.lock'));
    const second = await ckpt(['dump', '-t', String(b.pid), '-D', img]);
    expectCleanError(second, /in use by another ckpt dump/, img);
    await expectCarriesOn(b.pid, b.stdout, 'the second target');
    expectOk(await first);
    expect(gens(img)).toEqual([1]);
  });

  it('a symlinked directory is refused unless --follow-symlinks; a read-only one is named', async () => {
    const dir = makeTempDir('symlink');
    const { pid, stdout } = await startWorkload(dir, 8);
    const real = path.join(dir, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    const link = path.join(dir, 'link');
    fs.symlinkSync(real, link);
    expectCleanError(await ckpt(['dump', '-t', String(pid), '-D', link]), /symbolic link/, '--follow-symlinks');
    expect(fs.readdirSync(real)).toEqual([]);
    await expectCarriesOn(pid, stdout, 'after the refused dump');
    await dumpOk(pid, link, ['--leave-running', '--follow-symlinks']);
    expect(gens(real)).toEqual([1]);
    const ro = tmpfs(dir, '1m', true);
    expectCleanError(await ckpt(['dump', '-t', String(pid), '-D', path.join(ro, 'img')]), /read-only/, path.join(ro, 'img'));
    await expectCarriesOn(pid, stdout, 'after the read-only refusal');
  });

  it('the staging directory and the lock of a dead dump are removed by the next dump; a live one is kept', async () => {
    const dir = makeTempDir('stale');
    const { pid, stdout } = await startWorkload(dir, 8);
    const img = path.join(dir, 'img');
    fs.mkdirSync(img, { mode: 0o700 });
    // What a killed dump leaves: its lock and its staging directory, owned by a process that is gone.
    const boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    fs.writeFileSync(path.join(img, '.lock'), JSON.stringify({ pid: 999999, start: 1, boot }));
    const stale = path.join(img, '.staging-999999-1-deadbeef');
    fs.mkdirSync(stale);
    fs.writeFileSync(path.join(stale, 'pages-1.img'), Buffer.alloc(1 << 20));
    // A staging directory of a live process (this test runner) is not ckpt's to remove.
    const myStart = Number(fs.readFileSync(`/proc/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ')[19]);
    const live = path.join(img, `.staging-${process.pid}-${myStart}-cafe0000`);
    fs.mkdirSync(live);
    await dumpOk(pid, img, ['--leave-running']);
    expect(fs.readdirSync(img).sort()).toEqual(['.staging-' + `${process.pid}-${myStart}-cafe0000`, '1', 'latest'].sort());
    await expectCarriesOn(pid, stdout, 'after the cleaning dump');
  });

  it('a dump killed mid-copy: ckpt check reports its staging directory and lock, --repair removes them', async () => {
    const dir = makeTempDir('dead-dump');
    const { pid, stdout } = await startWorkload(dir, 64);
    const img = path.join(dir, 'img');
    const killed = await ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running'], { env: { CKPT_FAULT: 'dump:pages:kill@2' } });
    expect(killed.signal).toBe('SIGKILL');
    await expectCarriesOn(pid, stdout, 'the workload after its dump was killed');
    const left = fs.readdirSync(img);
    expect(
      left.filter((n) => n.startsWith('.staging')),
      'a staging directory was left',
    ).toHaveLength(1);
    const report = JSON.parse((await ckpt(['check', '--json'])).stdout) as { deadDumps: Array<{ dir: string; staging: string[]; lock: boolean }> };
    const mine = report.deadDumps.find((d) => d.dir === img);
    expect(mine, JSON.stringify(report.deadDumps)).toMatchObject({ dir: img, lock: true });
    expect(mine!.staging).toHaveLength(1);
    const repair = await ckpt(['check', '--repair']);
    expect(repair.stdout).toMatch(new RegExp(`fixed .*a dump into ${img.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} by ckpt pid \\d+ died`));
    expect(fs.readdirSync(img), 'nothing of the dead dump is left').toEqual([]);
  });

  it('restore refuses an image directory others can write to', async () => {
    const dir = makeTempDir('perm');
    const { pid } = await startWorkload(dir, 8);
    const img = path.join(dir, 'img');
    await dumpOk(pid, img, ['--leave-running']);
    fs.chmodSync(path.join(img, '1'), 0o777);
    expectCleanError(await ckpt(['show', img]), /writable by others/, 'chmod go-w');
    fs.chmodSync(path.join(img, '1'), 0o700);
    expectOk(await ckpt(['show', img]));
  });
});

async function waitForFile(p: string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fs.existsSync(p)) {
    if (Date.now() > end) throw new Error(`${p} never appeared`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
