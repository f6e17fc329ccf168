// The CLI surface: check, show (JSON and human), run --json, and usage errors.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bin,
  CLI,
  ckpt,
  describeResult,
  dumpOk,
  expectCleanError,
  expectOk,
  expectRunningFree,
  isAlive,
  killAndWaitGone,
  makeTempDir,
  REPO_ROOT,
  readLines,
  runFixture,
  useCleanup,
  waitForLine,
  waitForTick,
  waitNotAlive,
  waitPidFree,
  type CliResult,
} from './helpers.js';

useCleanup();

interface Area {
  start: bigint;
  end: bigint | null;
}

/** Reads an address that may be a number, a decimal or hex string ("0x7f..", "7f.."), or a bigint string. */
function addrCandidates(v: unknown): bigint[] {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return [BigInt(Math.round(v))];
  if (typeof v === 'bigint') return [v];
  if (typeof v === 'string') {
    const s = v.trim();
    if (/^0x[0-9a-f]+$/i.test(s)) return [BigInt(s)];
    if (/^[0-9]+$/.test(s)) return [BigInt(s), BigInt(`0x${s}`)];
    if (/^[0-9a-f]+$/i.test(s)) return [BigInt(`0x${s}`)];
  }
  return [];
}

/** Finds every array in the JSON that looks like a list of memory areas, as [start, end] pairs. */
function findAreaLists(j: unknown): Area[][] {
  const lists: Area[][] = [];
  const visit = (v: unknown) => {
    if (Array.isArray(v)) {
      const areas: Area[] = [];
      for (const e of v) {
        if (typeof e === 'string') {
          const m = e.match(/^(?:0x)?([0-9a-f]+)-(?:0x)?([0-9a-f]+)/i);
          if (m) areas.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`) });
        } else if (e && typeof e === 'object') {
          const o = e as Record<string, unknown>;
          const startKey = Object.keys(o).find((k) => /^(start|begin|from|addr|address|low|vm_?start)$/i.test(k));
          const endKey = Object.keys(o).find((k) => /^(end|to|high|stop|vm_?end)$/i.test(k));
          const sizeKey = Object.keys(o).find((k) => /^(size|len|length)$/i.test(k));
          for (const start of startKey ? addrCandidates(o[startKey]) : []) {
            let end: bigint | null = null;
            if (endKey) end = addrCandidates(o[endKey])[0] ?? null;
            else if (sizeKey && typeof o[sizeKey] === 'number') end = start + BigInt(o[sizeKey] as number);
            areas.push({ start, end });
          }
        }
      }
      if (areas.length >= 5) lists.push(areas);
      v.forEach(visit);
    } else if (v && typeof v === 'object') {
      Object.values(v as object).forEach(visit);
    }
  };
  visit(j);
  return lists;
}

/** True when some key whose name mentions "pid" holds the value pid. */
function hasPid(j: unknown, pid: number): boolean {
  if (Array.isArray(j)) return j.some((e) => hasPid(e, pid));
  if (j && typeof j === 'object') {
    return Object.entries(j as Record<string, unknown>).some(
      ([k, v]) => (/pid/i.test(k) && (v === pid || v === String(pid) || (Array.isArray(v) && v.includes(pid)))) || hasPid(v, pid),
    );
  }
  return false;
}

/** The largest anonymous rw mapping of a running process (its malloc'd heap block). */
function bigAnonArea(pid: number): { start: bigint; end: bigint } {
  let best: { start: bigint; end: bigint } | null = null;
  for (const l of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = l.match(/^([0-9a-f]+)-([0-9a-f]+) rw-p \S+ 00:00 0\s*$/);
    if (!m) continue;
    const a = { start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`) };
    if (!best || a.end - a.start > best.end - best.start) best = a;
  }
  if (!best) throw new Error(`no anonymous mapping in /proc/${pid}/maps`);
  return best;
}

describe('ckpt check', () => {
  it('exits 0 and its --json parses', async () => {
    const r = await ckpt(['check']);
    expectOk(r);
    expect(r.stdout.trim().length, 'ckpt check printed nothing').toBeGreaterThan(0);
    const j = await ckpt(['check', '--json']);
    expectOk(j);
    let parsed: unknown;
    expect(() => (parsed = JSON.parse(j.stdout)), describeResult(j)).not.toThrow();
    expect(typeof parsed).toBe('object');
    expect(parsed).not.toBeNull();
  });
});

describe('ckpt show', () => {
  it('describes a fresh image: pid and memory areas (JSON), pid in human-readable text', async () => {
    const dir = makeTempDir('show');
    const outdir = path.join(dir, 'out');
    fs.mkdirSync(outdir);
    const img = path.join(dir, 'img');
    const { pid, stdout } = await runFixture(dir, [bin('workload'), '8', outdir], { name: 'workload', json: true });
    await waitForLine(stdout, /^start pid=/);
    await waitForTick(stdout, 2);
    const heap = bigAnonArea(pid);
    expect(heap.end - heap.start >= 8n << 20n, 'the 8 MiB heap block is not in /proc/PID/maps').toBe(true);
    await dumpOk(pid, img, ['--leave-running']);
    expectRunningFree(pid, 'workload after dump --leave-running');

    const j = await ckpt(['show', img, '--json']);
    expectOk(j);
    let parsed: unknown;
    try {
      parsed = JSON.parse(j.stdout);
    } catch (e) {
      throw new Error(`show --json is not JSON: ${e}\n${describeResult(j)}`);
    }
    expect(hasPid(parsed, pid), `show --json does not hold the pid ${pid} under a "pid" key\n${describeResult(j)}`).toBe(true);
    const lists = findAreaLists(parsed);
    expect(lists.length, `show --json has no list of memory areas\n${describeResult(j)}`).toBeGreaterThan(0);
    // one of those lists covers the heap block the process had
    const covers = lists.some((areas) => areas.some((a) => (a.end !== null ? a.start <= heap.start && a.end >= heap.end : a.start === heap.start)));
    expect(covers, `no memory area covers the heap ${heap.start.toString(16)}-${heap.end.toString(16)}\n${describeResult(j)}`).toBe(true);

    const h = await ckpt(['show', img]);
    expectOk(h);
    expect(h.stdout, describeResult(h)).toMatch(new RegExp(`(^|[^0-9])${pid}([^0-9]|$)`, 'm'));
    expect(h.stdout.trim().split('\n').length, 'human show output is a single line').toBeGreaterThan(1);
    expect(isAlive(pid)).toBe(true);
  });
});

describe('usage errors', () => {
  it('an unknown verb', async () => {
    expectCleanError(await ckpt(['frobnicate']), /frobnicate/);
  });

  it('dump without -t', async () => {
    const dir = makeTempDir('usage');
    expectCleanError(await ckpt(['dump', '-D', path.join(dir, 'img')]));
  });

  it('dump with a non-numeric pid', async () => {
    const dir = makeTempDir('usage');
    expectCleanError(await ckpt(['dump', '-t', 'abc', '-D', path.join(dir, 'img')]), /abc/);
  });

  it('run of a program that does not exist', async () => {
    const dir = makeTempDir('usage');
    const missing = path.join(dir, 'no-such-program');
    const r = await ckpt(['run', '--stdout', path.join(dir, 'o'), '--', missing]);
    expectCleanError(r, /no-such-program|ENOENT|no such|not found/i);
  });

  it('run --json prints the pid of a running program', async () => {
    const dir = makeTempDir('runjson');
    const { pid, stdout } = await runFixture(dir, [bin('fdkinds'), 'eventfd'], { json: true });
    await waitForTick(stdout, 2);
    expect(readLines(stdout)[0]).toBe('fd=37 kind=eventfd');
    expectRunningFree(pid, 'program started by ckpt run');
    // detached: in a session of its own, not the test runner's
    const sid = (p: number | 'self') => {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
    };
    expect(sid(pid), "the program runs in the test runner's session (no setsid)").not.toBe(sid('self'));
  });
});

describe('plugins and configuration', () => {
  it('ckpt plugins lists every built-in with its version, state classes, fd kinds and flags', async () => {
    const r = await ckpt(['plugins', '--json']);
    expectOk(r);
    const rows = JSON.parse(r.stdout) as Array<{ name: string; version: string; stateClasses: string[]; fdKinds: string[]; flags: Array<{ flags: string }> }>;
    const byName = new Map(rows.map((p) => [p.name, p]));
    for (const name of ['pids', 'memory', 'registers', 'files', 'file-content', 'file-locks', 'event-fds', 'tty', 'unix-socket', 'tcp', 'sysv-ipc']) {
      expect(byName.get(`@ckpt/plugin-${name}`)?.version, `@ckpt/plugin-${name} is loaded\n${r.stdout}`).toMatch(/^\d+\.\d+\.\d+$/);
    }
    expect(byName.get('@ckpt/plugin-memory')!.stateClasses).toContain('memory');
    expect(byName.get('@ckpt/plugin-tcp')!.fdKinds).toContain('tcp');
    expect(byName.get('@ckpt/plugin-tcp')!.flags.map((f) => f.flags)).toContain('--tcp-close');
    const text = await ckpt(['plugins']);
    expectOk(text);
    expect(text.stdout).toMatch(/^@ckpt\/plugin-unix-socket \d/m);
  });

  it('restore --help shows the flags the plugins declare', async () => {
    const r = await ckpt(['restore', '--help']);
    expectOk(r);
    for (const f of ['--tcp-close', '--ipc-remap', '--tty', '--external']) expect(r.stdout, r.stdout).toContain(f);
  });

  it('a config with a misspelled key, a wrong type, or an unknown plugin is a one-line error naming it and the file', async () => {
    const dir = makeTempDir('config');
    const cfg = path.join(dir, 'ckpt.config.json');
    fs.writeFileSync(cfg, JSON.stringify({ plugns: [] }));
    expectCleanError(await ckpt(['plugins'], { cwd: dir }), 'plugns', cfg, /did you mean "plugins"/);
    fs.writeFileSync(cfg, JSON.stringify({ options: { '@ckpt/plugin-tcp': { close: 'yes' } } }));
    expectCleanError(await ckpt(['plugins'], { cwd: dir }), /"close"/, '@ckpt/plugin-tcp');
    fs.writeFileSync(cfg, JSON.stringify({ plugins: ['ckpt-plugin-that-does-not-exist'] }));
    expectCleanError(await ckpt(['plugins'], { cwd: dir }), 'ckpt-plugin-that-does-not-exist');
    // Found from a subdirectory too (searched upward).
    const sub = path.join(dir, 'a', 'b');
    fs.mkdirSync(sub, { recursive: true });
    expectCleanError(await ckpt(['plugins'], { cwd: sub }), 'ckpt-plugin-that-does-not-exist');
    // A built-in disabled by name is not loaded.
    fs.writeFileSync(cfg, JSON.stringify({ disable: ['@ckpt/plugin-tty'] }));
    const r = await ckpt(['plugins', '--json'], { cwd: sub });
    expectOk(r);
    expect((JSON.parse(r.stdout) as Array<{ name: string }>).map((p) => p.name)).not.toContain('@ckpt/plugin-tty');
  });

  it('-v logs the pipeline, --log-file writes the log to a file', async () => {
    const dir = makeTempDir('verbose');
    const { pid } = await runFixture(dir, [bin('sleeper'), 'nanosleep', '600'], { name: 'sleeper', json: true });
    const img = path.join(dir, 'img');
    const log = path.join(dir, 'ckpt.log');
    const r = await ckpt(['--log-file', log, 'dump', '-t', String(pid), '-D', img, '--leave-running']);
    expectOk(r);
    const text = fs.readFileSync(log, 'utf8');
    expect(text, 'stages and hooks are logged').toMatch(/ckpt:hooks .*memory\.dump \[@ckpt\/plugin-memory\]/);
    expect(text).toMatch(/ckpt:process froze/);
    expect(r.stderr, 'nothing on stderr with --log-file').not.toMatch(/ckpt:hooks/);
    const v = await ckpt(['-v', 'dump', '-t', String(pid), '-D', path.join(dir, 'img3'), '--leave-running']);
    expectOk(v);
    expect(v.stderr, '-v logs to stderr').toMatch(/ckpt:hooks .*files\.dump/);
    // A pid that does not exist: one clean line, no raw errno.
    expectCleanError(await ckpt(['dump', '-t', '999999', '-D', path.join(dir, 'img2')]), /no such process: 999999/);
    expectRunningFree(pid, 'sleeper after dump --leave-running');
  });
});

describe('clear errors', () => {
  it('--json errors are JSON on stdout; run into a missing directory; dumping the shell ckpt runs in', async () => {
    const dir = makeTempDir('errors');
    const j = await ckpt(['dump', '-t', '999999', '-D', path.join(dir, 'img'), '--json']);
    expectCleanError(j, /no such process: 999999/);
    expect(JSON.parse(j.stdout)).toMatchObject({ error: { code: 'ERR_CKPT_NO_SUCH_PROCESS', message: 'no such process: 999999' } });
    expect(fs.existsSync(path.join(dir, 'img')), 'no image directory for a refused dump').toBe(false);

    const missing = path.join(dir, 'no', 'such', 'dir');
    expectCleanError(await ckpt(['run', '--stdout', path.join(missing, 'out.log'), '--', '/bin/true']), `no such directory: ${missing}`);

    // A shell that runs ckpt on itself: ckpt is in the tree it was asked to freeze.
    const { execFileSync } = await import('node:child_process');
    const out = execFileSync('sh', ['-c', `"${process.execPath}" "${CLI}" dump -t $$ -D "${path.join(dir, 'self')}" 2>&1; echo "shell still here $?"`], {
      env: { ...process.env, NODE_OPTIONS: '' },
    }).toString();
    expect(out).toMatch(/ckpt: error: cannot checkpoint pid \d+ \(sh\): ckpt itself \(pid \d+\) runs inside its process tree/);
    expect(out).toMatch(/shell still here 1/);
  });
});

describe('output whose reader has gone', () => {
  it('a dump whose log reader quits at the first line goes on to its image and exit status 0', async () => {
    const dir = makeTempDir('epipe');
    const { pid } = await runFixture(dir, [bin('sleeper'), 'nanosleep', '600'], { name: 'sleeper', json: true });
    const img = path.join(dir, 'img');
    const status = path.join(dir, 'status');
    // head reads one line of the log (-v on stderr, the result on stdout) and quits: every later
    // write of ckpt meets a closed pipe.
    const r = spawnSync(
      'sh',
      ['-c', '{ "$0" "$1" dump --leave-running -v -t "$2" -D "$3" 2>&1; echo $? > "$4"; } | head -n 1', process.execPath, CLI, String(pid), img, status],
      { env: { ...process.env, NODE_OPTIONS: '' }, encoding: 'utf8' },
    );
    expect(r.stdout).toMatch(/ckpt:/);
    expect(fs.readFileSync(status, 'utf8').trim(), 'ckpt dump exit status').toBe('0');
    expect(fs.existsSync(path.join(img, '1')), 'the image of the dump').toBe(true);
    expectRunningFree(pid);
  });

  it('output to /dev/null goes through the plain writer, not a stream of Node', () => {
    const dir = makeTempDir('devnull');
    // A module required first in the command's process says at exit which of Node's stdio
    // modules it loaded: a file's stream (internal/fs/sync_write_stream) is what Node makes for
    // /dev/null.
    const probe = path.join(dir, 'probe.cjs');
    fs.writeFileSync(
      probe,
      "process.on('exit', () => require('node:fs').writeSync(2, 'loaded: ' + (process.moduleLoadList.filter((m) => /sync_write_stream/.test(m)).join(',') || 'none') + '\\n'));\n",
    );
    const r = spawnSync('sh', ['-c', '"$0" --require "$1" "$2" show --json "$3" > /dev/null', process.execPath, probe, CLI, dir], {
      env: { ...process.env, NODE_OPTIONS: '' },
      encoding: 'utf8',
    });
    expect(r.stderr).toMatch(/error/);
    expect(r.stderr).toMatch(/loaded: none/);
    const tty = spawnSync('sh', ['-c', '"$0" --require "$1" "$2" --help > /dev/null', process.execPath, probe, CLI], {
      env: { ...process.env, NODE_OPTIONS: '' },
      encoding: 'utf8',
    });
    expect(tty.status, tty.stderr).toBe(0);
    expect(tty.stderr).toMatch(/loaded: none/);
  });
});

describe('the ckpt program (bin/ckpt.js run as a program, as npx and PATH run it)', () => {
  const program = path.join(REPO_ROOT, 'packages/cli/bin/ckpt.js');
  /** The environment with NODE_EXTRA_CA_CERTS as given (undefined: not set at all). */
  const envWith = (ca: string | undefined) => {
    const env: Record<string, string | undefined> = { ...process.env, NODE_OPTIONS: '', NODE_EXTRA_CA_CERTS: ca };
    if (ca === undefined) delete env.NODE_EXTRA_CA_CERTS;
    return env as NodeJS.ProcessEnv;
  };

  it('starts node without NODE_EXTRA_CA_CERTS (no certificates parsed for TLS it never makes)', () => {
    // Node loads the file before any script runs, and warns when it cannot: the witness.
    const env = envWith('/nonexistent/extra-ca.pem');
    const plain = spawnSync(process.execPath, [program, '--version'], { env, encoding: 'utf8' });
    expect(plain.stderr, 'node bin/ckpt.js loads NODE_EXTRA_CA_CERTS (the control)').toMatch(/extra certs/i);
    const p = spawnSync(program, ['--version'], { env, encoding: 'utf8' });
    expect(p.status, p.stderr).toBe(0);
    expect(p.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    expect(p.stderr, 'the program started node with NODE_EXTRA_CA_CERTS').not.toMatch(/extra certs/i);
  });

  it('gives the programs it starts NODE_EXTRA_CA_CERTS exactly as it was: set, empty, or not set', async () => {
    const dir = makeTempDir('cabin');
    for (const ca of ['/etc/ssl/certs/some bundle.pem', '', undefined]) {
      const r = spawnSync(program, ['run', '--json', '--stdout', path.join(dir, 'out'), '--', bin('sleeper'), 'nanosleep', '600'], {
        env: envWith(ca),
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      const pid = (JSON.parse(r.stdout) as { pid: number }).pid;
      try {
        const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
        const value = environ.find((e) => e.startsWith('NODE_EXTRA_CA_CERTS='))?.slice('NODE_EXTRA_CA_CERTS='.length);
        expect(value, `NODE_EXTRA_CA_CERTS ${ca === undefined ? 'not set' : JSON.stringify(ca)}`).toBe(ca);
        expect(
          environ.filter((e) => e.startsWith('CKPT_NODE_EXTRA')),
          "the launcher's own variable reached the program",
        ).toEqual([]);
      } finally {
        await killAndWaitGone(pid);
      }
    }
  });
});

describe('the code caches of the bundle (dist/cli.cjs.COMMAND[.FLAGS][.partial].cache)', () => {
  /** Whether process pid maps dist/cli.cjs (the bundle mapped, not read into its memory). */
  const mapsBundle = (pid: number) =>
    fs
      .readFileSync(`/proc/${pid}/maps`, 'utf8')
      .split('\n')
      .some((l) => l.endsWith('/packages/cli/dist/cli.cjs'));

  it('a command that ends soon maps the bundle; one that lasts (a restore that waits for its process) reads it', async () => {
    const dir = makeTempDir('mapped');
    const { pid } = await runFixture(dir, [bin('sleeper'), 'nanosleep', '600'], { name: 'sleeper', json: true });
    const img = path.join(dir, 'img');
    let dumper = 0;
    const dump = ckpt(['dump', '-t', String(pid), '-D', img, '--leave-running'], {
      env: { CKPT_FAULT: 'dump:frozen:sleep=1500' },
      onSpawn: (c) => (dumper = c.pid!),
    });
    for (let i = 0; i < 100 && !fs.existsSync(path.join(img, '.lock')); i++) await new Promise((r) => setTimeout(r, 20));
    expect(mapsBundle(dumper), 'ckpt dump maps dist/cli.cjs').toBe(true);
    expectOk(await dump);
    await dumpOk(pid, img);
    await waitNotAlive(pid);
    // Without -d, the restore waits for the process: it reads the bundle (a build that rewrites
    // the bundle in place meanwhile must not fault it).
    // The dumped pid is free once init has reaped it (1-2 s on these VMs, more under load).
    await waitPidFree(pid);
    let restorer = 0;
    let ended: CliResult | undefined;
    const restore = ckpt(['restore', '-D', img], { onSpawn: (c) => (restorer = c.pid!) }).then((r) => (ended = r));
    for (let i = 0; i < 1500 && !isAlive(pid) && !ended; i++) await new Promise((r) => setTimeout(r, 20));
    expect(isAlive(pid), `the restored sleeper${ended ? `: the restore ended: ${describeResult(ended)}` : ''}`).toBe(true);
    expect(mapsBundle(restorer), 'ckpt restore (waiting) maps dist/cli.cjs').toBe(false);
    await killAndWaitGone(pid);
    const r = await restore;
    expect(r.code ?? r.signal, r.stderr).not.toBe(null);
  });

  it('one per command and per set of Node flags; a failed run leaves a partial one, a success the full one; a rejected one is replaced', () => {
    // A copy of the two files the launcher runs, in a directory of its own under packages/cli (so
    // that the bundle still finds the packages it requires): its caches are this test's alone.
    const dist = path.join(REPO_ROOT, 'packages/cli/dist');
    const dir = fs.mkdtempSync(path.join(REPO_ROOT, 'packages/cli/.cachetest-'));
    try {
      for (const f of ['bin.cjs', 'cli.cjs']) fs.copyFileSync(path.join(dist, f), path.join(dir, f));
      const env = { ...process.env, NODE_OPTIONS: '', CKPT_SERVER: 'off' };
      const run = (args: string[], flags: string[] = []) =>
        spawnSync(process.execPath, [...flags, path.join(dir, 'bin.cjs'), ...args], { env, encoding: 'utf8' });
      const caches = () =>
        fs
          .readdirSync(dir)
          .filter((f) => f.endsWith('.cache'))
          .sort();
      const mtime = (f: string) => fs.statSync(path.join(dir, f)).mtimeMs;

      // Help, whichever way asked, is one command.
      expect(run(['help']).status).toBe(0);
      expect(run(['dump', '--help']).status).toBe(0);
      expect(run(['--help']).status).toBe(0);
      expect(caches()).toEqual(['cli.cjs.help.cache']);
      // A cache V8 takes is not written again.
      const before = mtime('cli.cjs.help.cache');
      expect(run(['help', 'dump']).status).toBe(0);
      expect(mtime('cli.cjs.help.cache')).toBe(before);

      // Other Node flags: a cache of their own, the plain one untouched.
      expect(run(['help'], ['--no-warnings']).status).toBe(0);
      const flagged = caches().filter((f) => /^cli\.cjs\.help\.[0-9a-f]{8}\.cache$/.test(f));
      expect(flagged, caches().join(' ')).toHaveLength(1);
      expect(mtime('cli.cjs.help.cache')).toBe(before);

      // A failed command (no such process): a partial cache, no full one.
      const bad = run(['show', path.join(dir, 'no-such-image')]);
      expect(bad.status).toBe(1);
      expect(caches()).toContain('cli.cjs.show.partial.cache');
      expect(caches()).not.toContain('cli.cjs.show.cache');
      // An unknown verb leaves nothing under its name.
      expect(run(['no-such-verb']).status).toBe(2);
      expect(caches().some((f) => f.includes('no-such-verb'))).toBe(false);

      // A full cache V8 rejects (garbage here; another Node or a rebuilt bundle alike): a failed run
      // replaces it by a partial one, the next success by a full one, and the partial goes.
      fs.writeFileSync(path.join(dir, 'cli.cjs.plugins.cache'), Buffer.alloc(4096, 7));
      expect(run(['plugins', '--no-such-option']).status).toBe(2);
      expect(caches()).not.toContain('cli.cjs.plugins.cache');
      expect(caches()).toContain('cli.cjs.plugins.partial.cache');
      expect(run(['plugins']).status).toBe(0);
      expect(caches()).toContain('cli.cjs.plugins.cache');
      expect(caches()).not.toContain('cli.cjs.plugins.partial.cache');
      expect(fs.readFileSync(path.join(dir, 'cli.cjs.plugins.cache')).equals(Buffer.alloc(4096, 7))).toBe(false);
      // The command is found past ckpt's own options and their values (-c FILE).
      const config = path.join(dir, 'ckpt.config.json');
      fs.writeFileSync(config, '{}');
      fs.rmSync(path.join(dir, 'cli.cjs.plugins.cache'));
      expect(run(['-c', config, 'plugins']).status).toBe(0);
      expect(caches()).toContain('cli.cjs.plugins.cache');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
