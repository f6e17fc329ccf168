// Process trees: a parent, 3 children, a grandchild, a session of its own, a process group of two,
// a zombie, a pipe with bytes queued between processes, one open file description shared by two
// processes, shared anonymous memory and a memfd shared by all, private memory that differs per
// process. Dumped as a tree, restored, and every relation checked on the real processes.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  ckpt,
  expectOk,
  expectRunningFree,
  makeTempDir,
  nsPidOf,
  procStat,
  procState,
  readLines,
  runFixture,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
  dumpOk,
  bin,
  procStatusField,
} from './helpers.js';

useCleanup();

const TREE = path.join(BUILD_DIR, 'tree');
const ORPHANS = path.join(BUILD_DIR, 'orphans');
const PREFORK = path.join(BUILD_DIR, 'prefork');
const LINE_RE = /^(\w+) pid=(\d+) ppid=(\d+) pgid=(\d+) sid=(\d+) tick=(\d+) shm=(\d+) memfd=(\d+) total=(\d+) mtotal=(\d+) priv=(\w+)(.*)$/;

interface Ids {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  state: string;
}

function idsOf(pid: number): Ids | null {
  const f = procStat(pid);
  if (!f) return null;
  return { pid, state: f[2], ppid: Number(f[3]), pgid: Number(f[4]), sid: Number(f[5]) };
}

/** The whole tree under root, from /proc (pid -> ids), zombies included. */
function treeOf(root: number): Map<number, Ids> {
  const all = fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
  const ids = new Map<number, Ids>();
  for (const p of all) {
    const i = idsOf(p);
    if (i) ids.set(p, i);
  }
  const out = new Map<number, Ids>([[root, ids.get(root)!]]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const i of ids.values()) {
      if (!out.has(i.pid) && out.has(i.ppid)) {
        out.set(i.pid, i);
        grew = true;
      }
    }
  }
  return out;
}

interface Parsed {
  name: string;
  pid: number;
  tick: number;
  shm: number;
  total: number;
  mtotal: number;
  priv: string;
  extra: string;
}

function linesOf(file: string): Parsed[] {
  return readLines(file)
    .map((l) => LINE_RE.exec(l))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({
      name: m[1],
      pid: Number(m[2]),
      tick: Number(m[6]),
      shm: Number(m[7]),
      total: Number(m[9]),
      mtotal: Number(m[10]),
      priv: m[11],
      extra: m[12],
    }));
}

function lastOf(file: string, name: string): Parsed | undefined {
  return linesOf(file)
    .filter((l) => l.name === name)
    .at(-1);
}

async function startTree(dir: string, noNamespace: boolean) {
  const shared = path.join(dir, 'shared.log');
  const started = await runFixture(dir, [TREE, shared], { name: 'tree', noNamespace });
  // All five processes are up and ticking.
  await waitFor(
    () => ['root', 'c1', 'c2', 'c3', 'g'].every((n) => (lastOf(started.stdout, n)?.tick ?? -1) >= 3),
    20_000,
    () => `tree did not start:\n${readLines(started.stdout).slice(-10).join('\n')}`,
  );
  return { ...started, shared };
}

function checkSharedLog(file: string): void {
  const text = fs.readFileSync(file, 'latin1');
  expect(text.includes('\0'), 'shared.log has NUL bytes: the shared offset was not shared').toBe(false);
  for (const who of ['root', 'c2']) {
    const ns = text
      .split('\n')
      .filter((l) => l.startsWith(`${who} `))
      .map((l) => Number(l.split(' ')[1]));
    ns.forEach((n, i) => expect(n, `${who} lines in shared.log not consecutive at ${i}: ${ns.slice(Math.max(0, i - 3), i + 3)}`).toBe(ns[0] + i));
  }
}

describe('process trees', () => {
  it('a tree on the host: pids, parents, groups, sessions, zombie, pipe bytes, shared memory and offsets survive', async () => {
    const dir = makeTempDir('tree');
    const img = path.join(dir, 'img');
    const { pid: root, stdout, shared } = await startTree(dir, true);
    const before = treeOf(root);
    expect(before.size, `tree has ${before.size} processes`).toBe(6);
    const zombie = [...before.values()].find((i) => i.state === 'Z');
    expect(zombie, 'no zombie in the tree').toBeDefined();
    for (const p of before.keys()) track(p, TREE);

    const d = await ckpt(['dump', '-t', String(root), '-D', img, '--json']);
    expectOk(d);
    expect(JSON.parse(d.stdout).pids.sort()).toEqual([...before.keys()].filter((p) => p !== zombie!.pid).sort());
    const atDump = Object.fromEntries(['root', 'c1', 'c2', 'c3', 'g'].map((n) => [n, lastOf(stdout, n)!]));
    // The generation holds the files its manifest lists and nothing else (the per-process files are
    // made ahead of their writing: none left over).
    const gen = path.join(img, fs.readlinkSync(path.join(img, 'latest')));
    const listed = Object.keys((JSON.parse(fs.readFileSync(path.join(gen, 'manifest.json'), 'utf8')) as { files: object }).files);
    expect(fs.readdirSync(gen).sort()).toEqual([...listed, 'manifest.json', 'manifest.sig'].sort());
    for (const p of before.keys()) await waitNotAlive(p);

    const r = await ckpt(['restore', '-D', img, '--detach']);
    expectOk(r);
    const after = treeOf(root);
    for (const [p, i] of before) {
      const now = after.get(p);
      expect(now, `pid ${p} missing after restore`).toBeDefined();
      expect({ ppid: now!.ppid, pgid: now!.pgid, sid: now!.sid }, `ids of ${p}`).toEqual({ ppid: i.ppid, pgid: i.pgid, sid: i.sid });
      if (p === zombie!.pid) expect(now!.state, 'the zombie is a zombie again').toBe('Z');
      else expectRunningFree(p, `restored ${p}`);
    }
    // Everyone continues from where it was.
    await waitFor(
      () => ['root', 'c1', 'c2', 'c3', 'g'].every((n) => lastOf(stdout, n)!.tick >= atDump[n].tick + 12),
      20_000,
      () => `ticks stopped:\n${readLines(stdout).slice(-10).join('\n')}`,
    );
    const lines = linesOf(stdout);
    for (const n of ['root', 'c1', 'c2', 'c3', 'g']) {
      const own = lines.filter((l) => l.name === n);
      const firstAfter = own.find((l) => l.tick > atDump[n].tick)!;
      expect(firstAfter.tick, `${n}: first tick after restore`).toBe(atDump[n].tick + 1);
      expect(firstAfter.shm, `${n}: its shared counter continues`).toBe(atDump[n].shm + 1);
      expect(
        own.every((l) => l.priv === 'ok'),
        `${n}: private memory differs per process`,
      ).toBe(true);
      // Shared memory is still shared: the sum of all counters grows by about 5 per tick, not 1.
      const late = own.at(-1)!;
      const earlier = own.find((l) => l.tick === late.tick - 10)!;
      expect(late.total - earlier.total, `${n}: shared anonymous memory no longer shared`).toBeGreaterThanOrEqual(35);
      expect(late.mtotal - earlier.mtotal, `${n}: memfd memory no longer shared`).toBeGreaterThanOrEqual(35);
    }
    // The pipe root -> c1 kept its queued bytes: every message arrives once, in order.
    const c1 = lines.filter((l) => l.name === 'c1');
    expect(
      c1.filter((l) => l.extra.includes('pipe=GAP')),
      'c1 saw a gap in the pipe',
    ).toEqual([]);
    const got = c1.map((l) => Number(/got=(\d+)/.exec(l.extra)![1]));
    got.forEach((g, i) => expect(g, `c1 reads one message per tick`).toBe(got[0] + i));
    checkSharedLog(shared);
    // The root's wait() still reaps its zombie child, with the old status.
    process.kill(root, 'SIGUSR2');
    await waitForLine(stdout, new RegExp(`^reaped ${zombie!.pid} status 7$`), 10_000);
    expect(procState(zombie!.pid), 'the zombie was reaped').toBeNull();
  });

  // Sessions and groups whose leader exited (dead) or is a zombie, orphans reparented to a child
  // subreaper, a zombie at depth 2: each id checked from /proc and from inside, the zombies reaped
  // with their statuses. On the host; as an application (its own pid namespace), twice; and as
  // pid 2 of a pid namespace whose init (a shell) is not in the image: restored under an init of
  // ckpt's, with the same pids inside.
  it.each([
    ['on the host', 'host'],
    ['as an application, twice side by side', 'app'],
    ['in a pid namespace whose init is not in the image', 'subns'],
  ])('a tree whose leaders are gone (%s): every pid, parent, group and session as before', async (_, mode) => {
    const dir = makeTempDir('orphans');
    const img = path.join(dir, 'img');
    const cmd = mode === 'subns' ? ['unshare', '--pid', '--fork', '--kill-child', 'sh', '-c', `${ORPHANS} & wait`] : [ORPHANS];
    const { pid, stdout } = await runFixture(dir, cmd, { name: 'orphans', noNamespace: mode !== 'app', json: true });
    await waitForLine(stdout, /^ready$/, 20_000);
    // In the namespace: the orphans root is the shell's child, pid 2 inside.
    const comm = (p: number) => procStat(p)?.[1];
    const root = mode === 'subns' ? [...treeOf(pid).values()].find((i) => comm(i.pid) === 'orphans' && comm(i.ppid) !== 'orphans')!.pid : pid;
    if (mode === 'subns') expect(nsPidOf(root), 'the root is pid 2 of its namespace').toBe(2);
    const before = treeOf(root);
    for (const p of before.keys()) track(p, ORPHANS);
    expect([...before.values()].filter((i) => i.state === 'Z').length, 'e, g and zb are zombies').toBe(3);
    // From inside: NAME pid ppid pgid sid, as each living process prints them.
    const idsInside = (from = 0) =>
      new Set(
        readLines(stdout)
          .slice(from)
          .map((l) => /^(\w+) (pid=\d+ ppid=\d+ pgid=\d+ sid=\d+) tick=/.exec(l))
          .filter((m) => !!m)
          .map((m) => `${m![1]} ${m![2]}`),
      );
    const ready = readLines(stdout).indexOf('ready');
    await waitFor(
      () => readLines(stdout).length > ready + 6 * 3,
      10_000,
      () => readLines(stdout).slice(-8).join('\n'),
    );
    const inside = idsInside(ready);
    expect(inside.size, [...inside].join('\n')).toBe(6);

    await dumpOk(root, img);
    for (const p of before.keys()) await waitNotAlive(p);
    const mark = readLines(stdout).length;
    const copies = mode === 'app' ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const r = await ckpt(['restore', '-D', img, '--detach', '--json']);
      expectOk(r);
      const j = JSON.parse(r.stdout) as { pids: number[]; nsInit?: number };
      for (const p of j.pids) track(p, ORPHANS);
      if (mode === 'subns') {
        expect(j.nsInit, 'ckpt made an init for the namespace').toBeGreaterThan(0);
        expect(procStat(root)?.[3], 'the root is the child of that init').toBe(String(j.nsInit));
      }
    }
    if (mode === 'subns') expect(nsPidOf(root), 'the root is pid 2 of its namespace again').toBe(2);
    const after = treeOf(root);
    // The root's parent, and in the namespace the session and group the root came in (led by
    // unshare, outside): those of ckpt restore, as for any shell job (inside they read 0 alike).
    const [r0, r1] = [before.get(root)!, after.get(root)!];
    for (const [p, i] of before) {
      expect(after.get(p), `pid ${p} after the restore`).toMatchObject({
        ppid: p === root ? expect.any(Number) : i.ppid,
        pgid: i.pgid === r0.pgid ? r1.pgid : i.pgid,
        sid: i.sid === r0.sid ? r1.sid : i.sid,
        state: i.state === 'Z' ? 'Z' : expect.any(String),
      });
    }
    expect(after.size, 'no helper left behind').toBe(before.size);
    await waitFor(
      () => readLines(stdout).length > mark + 6 * copies * 3,
      10_000,
      () => readLines(stdout).slice(-8).join('\n'),
    );
    expect(idsInside(mark), 'ids seen from inside after the restore').toEqual(inside);
    // The zombies are reaped with the statuses they exited with.
    const zb = [...after.values()].find((i) => i.state === 'Z' && i.ppid !== root)!;
    process.kill(root, 'SIGUSR2');
    process.kill(zb.ppid, 'SIGUSR2');
    for (const [name, status] of [
      ['e', 5],
      ['g', 6],
      ['zb', 3],
    ] as const)
      await waitForLine(stdout, new RegExp(`^reaped ${name} status ${status}$`), 10_000);
    expect(
      [...treeOf(root).values()].filter((i) => i.state === 'Z'),
      'every zombie reaped',
    ).toEqual([]);
  });

  // A preforking server: 32 MiB its 4 children share copy-on-write with it. The image holds those
  // pages once, the restored tree shares them again (the memory of the tree stays about what it
  // was), and each process reads exactly its own view: the pages each rewrote, the ones one dropped.
  it('a preforking tree: memory shared copy-on-write stays shared, and each process reads what it had', async () => {
    const dir = makeTempDir('prefork');
    const report = path.join(dir, 'report');
    const go = path.join(dir, 'go');
    const img = path.join(dir, 'img');
    fs.writeFileSync(report, '');
    const { pid } = await runFixture(dir, [PREFORK, report, go], { name: 'prefork', noNamespace: true });
    await waitForLine(report, /^ready \d+$/);
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    expect(kids.length).toBe(4);
    for (const k of kids) track(k, PREFORK);
    const pssKb = () => [pid, ...kids].reduce((sum, p) => sum + Number(/^Pss_Anon:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))![1]), 0);
    const before = pssKb();
    await dumpOk(pid, img);
    // Reaped by their parent, frozen still, before it died: not zombies of init, whose pids a
    // restore would wait for until init reaps them (here 1.1-1.7 s after the dump).
    for (const k of kids) expect(fs.existsSync(`/proc/${k}`), `child ${k} of the dumped tree, right after the dump`).toBe(false);
    await waitNotAlive(pid);
    const pages = (p: number) =>
      (fs.readdirSync(img, { recursive: true }) as string[])
        .filter((f) => path.basename(f) === `pages-${p}.img`)
        .map((f) => fs.statSync(path.join(img, f)).size)[0];
    for (const k of kids) expect(pages(k), `pages of child ${k}: only what it rewrote`).toBeLessThan(2 << 20);
    expect(pages(pid)).toBeGreaterThan(32 << 20);
    expectOk(await ckpt(['restore', '-D', img, '--detach']));
    for (const p of [pid, ...kids]) track(p, PREFORK);
    const after = pssKb();
    expect(after, `anonymous memory of the tree: ${before} kB at the dump, ${after} kB after the restore`).toBeLessThan(before * 1.25 + 4096);
    const from = readLines(report).length;
    fs.writeFileSync(go, '');
    await waitForLine(report, /^done$/, 20_000, from);
    expect(readLines(report).slice(from).sort()).toEqual(['done', 'ok child0', 'ok child1', 'ok child2', 'ok child3', 'ok parent']);
  });

  it('an application (ckpt run) is restored in a fresh pid namespace, twice side by side from one image', async () => {
    const dir = makeTempDir('app');
    const img = path.join(dir, 'img');
    const run = await ckpt(['run', '--json', '--stdout', path.join(dir, 'tree.stdout'), '--', TREE, path.join(dir, 'shared.log')]);
    expectOk(run);
    const { pid, app } = JSON.parse(run.stdout) as { pid: number; app: string };
    expect(typeof app).toBe('string');
    track(pid, TREE);
    const stdout = path.join(dir, 'tree.stdout');
    await waitFor(
      () => (lastOf(stdout, 'g')?.tick ?? -1) >= 3,
      20_000,
      () => readLines(stdout).slice(-5).join('\n'),
    );
    expect(nsPidOf(pid), 'the application is pid 2 of its namespace (ckpt-init is 1)').toBe(2);
    const nsBefore = [...treeOf(pid).keys()].map((p) => nsPidOf(p)).sort();

    const d = await ckpt(['dump', '--app', app, '-D', img]);
    expectOk(d);
    await waitNotAlive(pid);

    const r1 = await ckpt(['restore', '-D', img, '--detach', '--json']);
    expectOk(r1);
    const j1 = JSON.parse(r1.stdout) as { pids: number[]; main: number; app: string };
    track(j1.main, TREE);
    expect(j1.main, 'host pids are kept when free').toBe(pid);
    const r2 = await ckpt(['restore', '-D', img, '--detach', '--json']);
    expectOk(r2);
    const j2 = JSON.parse(r2.stdout) as { pids: number[]; main: number; app: string };
    for (const p of j2.pids) track(p, TREE);
    expect(j2.main, 'the second copy got other host pids').not.toBe(pid);
    expect(j2.app, 'the second copy has its own application id').not.toBe(j1.app);
    for (const main of [j1.main, j2.main]) {
      expect(nsPidOf(main)).toBe(2);
      expect([...treeOf(main).keys()].map((p) => nsPidOf(p)).sort(), 'namespace pids as before').toEqual(nsBefore.filter((p) => p !== 1));
      expect(procStatusField(main, 'NSpid')).toMatch(/\s2$/);
    }
    // Both copies run: the log gets lines from two roots at the same tick numbers.
    const t0 = lastOf(stdout, 'root')!.tick;
    await waitFor(
      () => linesOf(stdout).filter((l) => l.name === 'root' && l.tick === t0 + 5).length >= 2,
      20_000,
      () => `both copies should tick:\n${readLines(stdout).slice(-10).join('\n')}`,
    );
    const apps = await ckpt(['apps', '--json']);
    const ids = (JSON.parse(apps.stdout) as Array<{ id: string }>).map((a) => a.id);
    expect(ids).toEqual(expect.arrayContaining([j1.app, j2.app]));
  });

  it('a failed dump of a tree resumes every process it froze', async () => {
    const dir = makeTempDir('treefail');
    const fdkinds = bin('fdkinds');
    // A shell with two children; one holds an io_uring, which this version refuses.
    const sleeper = bin('sleeper');
    const { pid: root, stdout } = await runFixture(dir, ['/bin/sh', '-c', `${sleeper} nanosleep 60 & ${fdkinds} uring & wait`], {
      name: 'sh',
      noNamespace: true,
      marker: fdkinds,
    });
    await waitFor(
      () => treeOf(root).size >= 3 && readLines(stdout).filter((l) => /tick/.test(l)).length >= 3,
      20_000,
      () => 'tree did not start',
    );
    const tree = [...treeOf(root).keys()];
    for (const p of tree) track(p, fdkinds);
    const d = await ckpt(['dump', '-t', String(root), '-D', path.join(dir, 'img')]);
    expect(d.code, d.stderr).not.toBe(0);
    expect(d.stderr).toMatch(/^ckpt: error:/m);
    for (const p of tree) expectRunningFree(p, `tree member ${p} after the failed dump`);
    const n = readLines(stdout).length;
    await waitFor(
      () => readLines(stdout).length >= n + 3,
      10_000,
      () => 'the tree stopped ticking after the failed dump',
    );
    expect(fs.existsSync(path.join(dir, 'img')), 'a failed dump leaves no image, nor the directory it made').toBe(false);
  });
});
