// The example plugins of examples/ (out-of-tree npm packages, plain JavaScript), loaded the way a
// user loads them: listed BY PACKAGE NAME in the ckpt.config.json of a project directory whose
// node_modules holds the package (a symlink to the example, as `npm link` or a workspace makes),
// and the CLI run from that directory. The plugin template (templates/plugin) is loaded by path.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  REPO_ROOT,
  ckpt,
  describeResult,
  expectCleanError,
  expectOk,
  expectRunningFree,
  isAlive,
  makeTempDir,
  procState,
  readLines,
  runFixture,
  tail,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
  type CliResult,
} from './helpers.js';

useCleanup();

const EXAMPLES = path.join(REPO_ROOT, 'examples');
const CONTENT_DIR = 'ckpt-plugin-content-dir';
const SIGNAL_MARKER = 'ckpt-plugin-signal-marker';

function exampleDir(pkg: string): string {
  return path.join(EXAMPLES, pkg.replace(/^ckpt-plugin-/, ''));
}

function exampleVersion(pkg: string): string {
  return (JSON.parse(fs.readFileSync(path.join(exampleDir(pkg), 'package.json'), 'utf8')) as { version: string }).version;
}

/** The real python3 interpreter (not a wrapper script such as a pyenv shim, which would exec). */
function python3(): string {
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

/**
 * A user's project: `<dir>/project` with node_modules/<pkg> for each example (a symlink to it) and
 * a ckpt.config.json listing them by package name, with their options.
 */
function project(dir: string, config: { plugins: unknown[]; options?: Record<string, unknown> }): string {
  const proj = path.join(dir, 'project');
  fs.mkdirSync(path.join(proj, 'node_modules'), { recursive: true });
  for (const spec of config.plugins) {
    const pkg = Array.isArray(spec) ? (spec[0] as string) : (spec as string);
    fs.symlinkSync(exampleDir(pkg), path.join(proj, 'node_modules', pkg), 'dir');
  }
  fs.writeFileSync(path.join(proj, 'ckpt.config.json'), JSON.stringify(config, null, 2));
  return proj;
}

/** `ckpt restore -D img --detach --json` run in the project; the restored main pid must be `pid`. */
async function restoreIn(proj: string, img: string, pid: number, marker: string, extra: string[] = []): Promise<CliResult> {
  const r = await ckpt(['restore', '-D', img, '--detach', '--json', ...extra], { cwd: proj });
  track(pid, marker);
  expectOk(r);
  const main = (JSON.parse(r.stdout) as { main?: number; pids: number[] }).main ?? (JSON.parse(r.stdout) as { pids: number[] }).pids[0];
  expect(main, `restored pid\n${describeResult(r)}`).toBe(pid);
  expect(isAlive(pid), `restored pid ${pid} is not alive (state ${procState(pid)})`).toBe(true);
  return r;
}

interface ShownFd {
  fd: number;
  owner: string;
  kind: string;
  sameAs?: unknown;
  data?: { path?: string; pos?: number; blob?: string };
}

describe('example plugins, loaded by package name from a project config', () => {
  it('ckpt plugins lists them (before the built-ins) with their version, flags and fd kinds', async () => {
    const dir = makeTempDir('ex-list');
    const proj = project(dir, {
      plugins: [CONTENT_DIR, SIGNAL_MARKER],
      options: { [CONTENT_DIR]: { dir: path.join(dir, 'state') } },
    });
    const text = await ckpt(['plugins'], { cwd: proj });
    expectOk(text);
    expect(text.stdout).toContain(`${CONTENT_DIR} ${exampleVersion(CONTENT_DIR)} — `);
    expect(text.stdout).toContain(`${SIGNAL_MARKER} ${exampleVersion(SIGNAL_MARKER)} — `);
    expect(text.stdout).toContain('ckpt dump --content-dir <dir>  (option dir)');
    const json = await ckpt(['plugins', '--json'], { cwd: proj });
    expectOk(json);
    const rows = JSON.parse(json.stdout) as Array<{ name: string; version: string; fdKinds: string[]; record?: number }>;
    const names = rows.map((r) => r.name);
    expect(names.slice(0, 2), 'user plugins are applied first').toEqual([CONTENT_DIR, SIGNAL_MARKER]);
    expect(names).toContain('@ckpt/plugin-files');
    expect(rows[0]).toMatchObject({ version: exampleVersion(CONTENT_DIR), fdKinds: ['file'], record: 1 });
    expect(rows[1]).toMatchObject({ version: exampleVersion(SIGNAL_MARKER) });
    // Without the config (another directory), the examples are not loaded.
    const elsewhere = await ckpt(['plugins'], { cwd: dir });
    expectOk(elsewhere);
    expect(elsewhere.stdout).not.toContain(CONTENT_DIR);
    // The required option may come from its flag: the plugin loads without it, and a dump without
    // it (nor --content-dir) stops at once, naming the option and the flag.
    const bare = project(path.join(dir, 'bare'), { plugins: [CONTENT_DIR] });
    expectOk(await ckpt(['plugins'], { cwd: bare }));
    expectCleanError(await ckpt(['dump', '-t', String(process.pid), '-D', path.join(dir, 'never')], { cwd: bare }), CONTENT_DIR, /"dir"/, '--content-dir');
    expect(fs.existsSync(path.join(dir, 'never')), 'nothing was written').toBe(false);
    // The plugin template loads as it is (by path), with its flags.
    const tplDir = path.join(dir, 'tpl');
    fs.mkdirSync(tplDir);
    fs.writeFileSync(path.join(tplDir, 'ckpt.config.json'), JSON.stringify({ plugins: [path.join(REPO_ROOT, 'templates/plugin')] }));
    const tpl = await ckpt(['plugins'], { cwd: tplDir });
    expectOk(tpl);
    expect(tpl.stdout).toMatch(/^ckpt-plugin-my-plugin 0\.1\.0 — /);
    expect(tpl.stdout).toContain('ckpt dump --my-path <path...>  (option paths)');
  });

  it('content-dir: a file under the directory comes back with its dumped bytes and offset, even deleted meanwhile', async () => {
    const py = python3();
    expect(py, 'python3 not found on PATH').not.toBe('');
    const dir = makeTempDir('ex-content');
    const state = path.join(dir, 'state');
    fs.mkdirSync(state);
    const data = path.join(state, 'data.bin');
    const other = path.join(dir, 'other.txt');
    fs.writeFileSync(other, 'left to the built-in plugin\n');
    const img = path.join(dir, 'img');
    const tag = `ckpt-ex-content-${path.basename(dir).slice(-6)}`;
    const proj = project(dir, { plugins: [CONTENT_DIR], options: { [CONTENT_DIR]: { dir: state } } });

    // 200 numbered lines, at offset 1234 when dumped; then, on SIGUSR1, what the fd shows.
    const pattern = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, '0')}:ckpt-content-dir\n`).join('');
    const prog = `
import os, signal, sys
data, other = sys.argv[1], sys.argv[2]
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
PATTERN = b''.join(b'%04d:ckpt-content-dir\\n' % i for i in range(200))
fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
os.write(fd, PATTERN)
os.lseek(fd, 1234, os.SEEK_SET)
ofd = os.open(other, os.O_RDONLY)
print('ready', fd, ofd, flush=True)
signal.sigwait({signal.SIGUSR1})
pos = os.lseek(fd, 0, os.SEEK_CUR)
rest = os.read(fd, 1 << 20)
whole = os.pread(fd, 1 << 20, 0)
print('after pos=%d rest_ok=%s whole_ok=%s size=%d' % (pos, rest == PATTERN[1234:], whole == PATTERN, len(whole)), flush=True)
os.write(fd, b'written-after-restore')
print('done', flush=True)
signal.sigwait({signal.SIGUSR1})
`;
    const { pid, stdout, stderr } = await runFixture(dir, [py, '-c', prog, data, other, tag], { json: true, name: 'content', marker: tag });
    const ready = (await waitForLine(stdout, /^ready (\d+) (\d+)$/)).match;
    const [dataFd, otherFd] = [Number(ready[1]), Number(ready[2])];

    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img], { cwd: proj }));
    await waitNotAlive(pid);

    // The image: the fd under the directory is owned by the example (its data and blob), the other
    // file is left to the built-in @ckpt/plugin-files.
    const show = await ckpt(['show', img, '--json'], { cwd: proj });
    expectOk(show);
    const procs = (JSON.parse(show.stdout) as { processes: Array<{ pid: number; fds: ShownFd[] }> }).processes;
    const fds = procs.find((p) => p.pid === pid)?.fds ?? [];
    const mine = fds.find((f) => f.fd === dataFd)!;
    expect(mine, JSON.stringify(fds)).toMatchObject({ owner: CONTENT_DIR, kind: 'file', data: { path: data, pos: 1234 } });
    expect(fs.readFileSync(path.join(img, 'latest', mine.data!.blob!), 'utf8'), 'the blob holds the dumped bytes').toBe(pattern);
    expect(fds.find((f) => f.fd === otherFd)?.owner).toBe('@ckpt/plugin-files');
    const files = await ckpt(['show', img, '--files'], { cwd: proj });
    expectOk(files);
    expect(
      files.stdout.split('\n').find((l) => l.split('|')[2] === data),
      files.stdout,
    ).toMatch(new RegExp(`^file\\|f${pid}\\.${dataFd}\\|`));

    // Without the plugin the image cannot be restored, and the error names it.
    expectCleanError(await ckpt(['restore', '-D', img, '--detach'], { cwd: dir }), CONTENT_DIR);

    fs.rmSync(data);
    await restoreIn(proj, img, pid, tag);
    expect(fs.readFileSync(data, 'utf8'), 'the file is written back from the image').toBe(pattern);
    expect(fs.statSync(data).mode & 0o777).toBe(0o640);
    expect(fs.readlinkSync(`/proc/${pid}/fd/${dataFd}`)).toBe(data);
    expectRunningFree(pid, 'restored python');

    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^done$/);
    expect(readLines(stdout), tail(stdout)).toContain(`after pos=1234 rest_ok=True whole_ok=True size=${pattern.length}`);
    expect(fs.readFileSync(data, 'utf8').slice(pattern.length), 'the restored fd writes to the file').toBe('written-after-restore');
    expect(fs.readFileSync(stderr, 'utf8'), 'python stderr').toBe('');
  });

  it('the plugin template works as it is: a file named by its dump flag is claimed, recorded and reopened at its offset', async () => {
    const py = python3();
    expect(py, 'python3 not found on PATH').not.toBe('');
    const dir = makeTempDir('ex-template');
    const img = path.join(dir, 'img');
    const file = path.join(dir, 'kept.txt');
    fs.writeFileSync(file, 'abcdefghijklmnopqrstuvwxyz\n');
    const tag = `ckpt-ex-template-${path.basename(dir).slice(-6)}`;
    const proj = path.join(dir, 'project');
    fs.mkdirSync(proj);
    fs.writeFileSync(path.join(proj, 'ckpt.config.json'), JSON.stringify({ plugins: [path.join(REPO_ROOT, 'templates/plugin')] }));
    const prog = `
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
fd = os.open(sys.argv[1], os.O_RDONLY)
os.lseek(fd, 5, os.SEEK_SET)
print('ready', fd, flush=True)
signal.sigwait({signal.SIGUSR1})
print('after', os.lseek(fd, 0, os.SEEK_CUR), os.read(fd, 5).decode(), flush=True)
signal.sigwait({signal.SIGUSR1})
`;
    const { pid, stdout } = await runFixture(dir, [py, '-c', prog, file, tag], { json: true, name: 'template', marker: tag });
    const fd = Number((await waitForLine(stdout, /^ready (\d+)$/)).match[1]);
    expectOk(await ckpt(['dump', '--my-path', file, '-t', String(pid), '-D', img], { cwd: proj }));
    await waitNotAlive(pid);
    const show = await ckpt(['show', img, '--json'], { cwd: proj });
    expectOk(show);
    const proc = (JSON.parse(show.stdout) as { processes: Array<{ pid: number; fds: ShownFd[]; records: Record<string, unknown> }> }).processes.find(
      (p) => p.pid === pid,
    )!;
    expect(proc.fds.find((f) => f.fd === fd)).toMatchObject({ owner: 'ckpt-plugin-my-plugin', data: { path: file, pos: 5 } });
    expect(proc.records['ckpt-plugin-my-plugin']).toEqual({ fdCount: proc.fds.length, claimed: [fd] });
    await restoreIn(proj, img, pid, tag);
    process.kill(pid, 'SIGUSR1');
    await waitForLine(stdout, /^after 5 fghij$/);
  });

  it('signal-marker: the process handles the signal before the dump; a marker with its pid is written after the restore', async () => {
    const py = python3();
    expect(py, 'python3 not found on PATH').not.toBe('');
    const dir = makeTempDir('ex-signal');
    const img = path.join(dir, 'img');
    const tag = `ckpt-ex-signal-${path.basename(dir).slice(-6)}`;
    const marker = path.join(dir, 'restored-{pid}.txt');
    const proj = project(dir, { plugins: [[SIGNAL_MARKER, { waitMs: 300 }]], options: { [SIGNAL_MARKER]: { marker } } });
    const prog = `
import os, signal, sys, time
def handler(sig, frame):
    print('signalled %s' % signal.Signals(sig).name, flush=True)
signal.signal(signal.SIGUSR2, handler)
print('ready', flush=True)
while True:
    time.sleep(0.05)
`;
    // Without a pid namespace: the tree is the program alone (ckpt-init would forward the signal).
    const { pid, stdout, stderr } = await runFixture(dir, [py, '-c', prog, tag], { name: 'signal', marker: tag, noNamespace: true });
    await waitForLine(stdout, /^ready$/);
    expect(readLines(stdout).filter((l) => l.startsWith('signalled'))).toEqual([]);

    expectOk(await ckpt(['dump', '-t', String(pid), '-D', img], { cwd: proj }));
    await waitNotAlive(pid);
    expect(
      readLines(stdout).filter((l) => l.startsWith('signalled')),
      `handled before the freeze\n${tail(stdout)}`,
    ).toEqual(['signalled SIGUSR2']);

    const file = marker.replace('{pid}', String(pid));
    expect(fs.existsSync(file)).toBe(false);
    await restoreIn(proj, img, pid, tag);
    expect(fs.readFileSync(file, 'utf8'), 'the marker holds the restored pid').toBe(`${pid}\n`);
    expectRunningFree(pid, 'restored python');

    // The restored process still has its handler.
    process.kill(pid, 'SIGUSR2');
    await waitFor(
      () => readLines(stdout).filter((l) => l.startsWith('signalled')).length === 2,
      10_000,
      () => `no second signal line\n${tail(stdout)}`,
    );
    expect(fs.readFileSync(stderr, 'utf8'), 'python stderr').toBe('');
  });
});
