/**
 * ckpt migrate between test hosts: network namespaces with a real sshd each (test/hosts.ts). The
 * image crosses over SSH only; each host has its own ckpt keys. A migrated process is checked
 * from inside: every page against its version, its network namespace, its longest stall.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUILD_DIR,
  ckpt,
  describeResult,
  expectOk,
  isAlive,
  makeTempDir,
  processesMatching,
  procStatusField,
  sleep,
  track,
  useCleanup,
  waitFor,
  waitForLine,
  waitNotAlive,
  type CliResult,
} from './helpers.js';
import { makeHosts, sshdAvailable, type TestHost, type TestHosts } from './hosts.js';
import { startMigrant, verify, type Migrant } from './migrant.js';

/** The migrant on a host (in its own pid namespace: its pids can be free on the other). */
const startOn = (host: TestHost, mib: number, permille: number) => startMigrant(mib, permille, H.inNs(host));

useCleanup();

let H: TestHosts;
const missing = sshdAvailable();

beforeAll(async () => {
  if (missing) throw new Error(`the migration tests need test hosts with sshd: ${missing}`);
  H = await makeHosts(['a', 'b', 'c']);
}, 60_000);

afterAll(() => {
  H?.remove();
});

const FIXTURES = path.join(path.dirname(BUILD_DIR), 'fixtures');

function migrate(
  from: TestHost,
  to: TestHost,
  m: Migrant,
  extra: string[] = [],
  opts: { remote?: string[]; env?: Record<string, string> } = {},
): Promise<CliResult> {
  return ckpt(
    ['migrate', '--app', m.app, '--to', to.name, '--ssh', H.ssh.join(' '), '--remote-ckpt', (opts.remote ?? H.remoteCkpt(to)).join(' '), '--json', ...extra],
    { prefix: H.inNs(from), env: opts.env, timeoutMs: 120_000 },
  );
}

function leftovers(): string[] {
  return fs.readdirSync('/tmp').filter((n) => n.startsWith('ckpt-receive-') || n.startsWith('ckpt-migrate-'));
}

/** The source after a failed migration: running, untraced, not stopped, its memory right, in its own namespace. */
async function expectUntouched(m: Migrant, host: TestHost): Promise<void> {
  expect(isAlive(m.pid), 'the source process runs on').toBe(true);
  expect(procStatusField(m.pid, 'TracerPid'), 'nothing traces it').toBe('0');
  expect(procStatusField(m.pid, 'State'), 'it is not stopped').not.toMatch(/^[tT]/);
  const v = await verify(m.pid, m.report);
  expect(v.net).toBe(host.netns);
}

describe('ckpt migrate', () => {
  it('moves a working process from host a to host b over ssh: copied while it runs, every page right, running in b, gone from a, nothing left', async () => {
    const before = new Set(leftovers());
    const m = await startOn(H.byName.a, 64, 20);
    const v0 = await verify(m.pid, m.report);
    expect(v0.net).toBe(H.byName.a.netns);
    const r = await migrate(H.byName.a, H.byName.b, m);
    expectOk(r);
    const j = JSON.parse(r.stdout) as {
      main: number;
      app: string;
      pids: number[];
      rounds: Array<{ kind: string; bytes: number }>;
      bytesSent: number;
      downtimeMs: number;
      channel: string;
    };
    for (const p of j.pids) track(p, 'migrant');
    expect(j.channel, 'the images went over the direct channel, not through ssh').toBe('direct');
    expect(j.rounds.filter((x) => x.kind === 'pre-copy').length, describeResult(r)).toBeGreaterThanOrEqual(1);
    expect(j.rounds.at(-1)!.kind).toBe('final');
    // The last round carries only what was written since the round before: far less than the whole.
    expect(j.rounds.at(-1)!.bytes).toBeLessThan(j.rounds[0].bytes / 4);
    expect(j.bytesSent).toBeGreaterThan(64 << 20);
    await waitNotAlive(m.pid);
    const v1 = await verify(j.main, m.report);
    expect(v1.net, 'it runs in host b now').toBe(H.byName.b.netns);
    expect(Number(v1.written)).toBeGreaterThan(Number(v0.written));
    expect(leftovers().filter((n) => !before.has(n))).toEqual([]);
    // And back again (the application is registered there under the id the destination gave it).
    const back = await migrate(H.byName.b, H.byName.a, { ...m, pid: j.main, app: j.app });
    expectOk(back);
    const k = JSON.parse(back.stdout) as { main: number; pids: number[] };
    for (const p of k.pids) track(p, 'migrant');
    await waitNotAlive(j.main);
    expect((await verify(k.main, m.report)).net).toBe(H.byName.a.netns);
  }, 180_000);

  it('a 1 GiB process writing 1% of its memory a second, migrated with --lazy: it runs there before its memory is back, every page right; the downtime it saw is reported', async () => {
    const m = await startOn(H.byName.a, 1024, 10);
    await verify(m.pid, m.report);
    const r = await migrate(H.byName.a, H.byName.b, m, ['--lazy']);
    expectOk(r);
    const j = JSON.parse(r.stdout) as { main: number; pids: number[]; lazy: boolean; downtimeMs: number; rounds: Array<{ kind: string; bytes: number }> };
    for (const p of j.pids) track(p, 'migrant');
    expect(j.lazy).toBe(true);
    await waitNotAlive(m.pid);
    const v = await verify(j.main, m.report);
    expect(v.net).toBe(H.byName.b.netns);
    console.log(
      `1 GiB, 1%/s, --lazy: ${j.rounds.length} rounds (${j.rounds.map((x) => (x.bytes / 1e6).toFixed(1)).join(', ')} MB), down ${j.downtimeMs.toFixed(0)} ms (source's view), longest stall seen inside ${v.stall_ms} ms; ${JSON.stringify((JSON.parse(r.stdout) as { phases: unknown }).phases)} rehearsal ${(JSON.parse(r.stdout) as { rehearsal?: string }).rehearsal}`,
    );
  }, 240_000);

  it('with --no-direct the images go through the ssh channel itself: every page right there', async () => {
    const m = await startOn(H.byName.a, 32, 20);
    const r = await migrate(H.byName.a, H.byName.b, m, ['--no-direct']);
    expectOk(r);
    const j = JSON.parse(r.stdout) as { main: number; pids: number[]; channel: string; channelNote: string };
    for (const p of j.pids) track(p, 'migrant');
    expect(j.channel).toBe('ssh');
    expect(j.channelNote).toMatch(/--no-direct/);
    await waitNotAlive(m.pid);
    const v = await verify(j.main, m.report);
    expect(v.net, 'it runs in host b now').toBe(H.byName.b.netns);
  }, 120_000);

  it('a destination whose restore is killed halfway: the source runs on untouched, nothing of it is left there', async () => {
    const m = await startOn(H.byName.a, 32, 20);
    const before = new Set(processesMatching('migrant').map((p) => p.pid));
    // @2: the restore that counts (the first one is the rehearsal, while the source runs).
    const r = await migrate(H.byName.a, H.byName.b, m, [], { remote: ['env', 'CKPT_FAULT=restore:stage:files:kill@2', ...H.remoteCkpt(H.byName.b)] });
    expect(r.code, describeResult(r)).not.toBe(0);
    const err = JSON.parse(r.stdout) as { error: { code: string; message: string } };
    expect(err.error.code).toBe('ERR_CKPT_MIGRATE_FAILED');
    expect(err.error.message).toMatch(/runs on here/);
    await expectUntouched(m, H.byName.a);
    await sleep(300);
    const stray = processesMatching('migrant').filter((p) => !before.has(p.pid));
    expect(stray, 'no half-restored process on the destination').toEqual([]);
  }, 120_000);

  it('a rehearsal of the restore that fails there is a warning, not a failure: the restore that counts still runs', async () => {
    const m = await startOn(H.byName.a, 16, 20);
    const r = await migrate(H.byName.a, H.byName.b, m, [], { remote: ['env', 'CKPT_FAULT=restore:stage:files:error@1', ...H.remoteCkpt(H.byName.b)] });
    expectOk(r);
    const j = JSON.parse(r.stdout) as { main: number; pids: number[]; rehearsal: string };
    for (const p of j.pids) track(p, 'migrant');
    expect(j.rehearsal).toMatch(/^failed: .*injected/);
    await waitNotAlive(m.pid);
    expect((await verify(j.main, m.report)).net).toBe(H.byName.b.netns);
  }, 120_000);

  it('a ckpt migrate killed once the destination rebuilt the processes: the source runs on, the destination rolls back, the next migration sweeps what it left', async () => {
    const m = await startOn(H.byName.a, 32, 20);
    const before = new Set(processesMatching('migrant').map((p) => p.pid));
    const dirsBefore = new Set(leftovers());
    const r = await migrate(H.byName.a, H.byName.b, m, [], { env: { CKPT_FAULT: 'migrate:restored:kill' } });
    expect(r.signal, describeResult(r)).toBe('SIGKILL');
    await expectUntouched(m, H.byName.a);
    await waitFor(
      () => processesMatching('migrant').filter((p) => !before.has(p.pid)).length === 0,
      20_000,
      () => `the destination kept a restored process: ${JSON.stringify(processesMatching('migrant').filter((p) => !before.has(p.pid)))}`,
    );
    const orphans = leftovers().filter((n) => !dirsBefore.has(n) && n.startsWith('ckpt-migrate-'));
    expect(orphans, 'the killed source left its copy of the image (it cannot clean up after SIGKILL)').toHaveLength(1);
    // Any later migration, even one that fails at once, removes the copy whose owner is gone.
    const again = await ckpt(['migrate', '--app', m.app, '--to', 'nosuchhost', '--ssh', H.ssh.join(' ')], { prefix: H.inNs(H.byName.a) });
    expect(again.code).not.toBe(0);
    expect(leftovers().filter((n) => orphans.includes(n))).toEqual([]);
  }, 120_000);

  it('redis with a client on a third host: the service address and the connection move with it, the client never sees a reset, every key is there', async () => {
    const redis = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
    const a = H.byName.a;
    const b = H.byName.b;
    const svc = `${H.subnet}.100`;
    const dir = makeTempDir('migrate-redis');
    execFileSync('ip', ['-n', a.ns, 'addr', 'add', `${svc}/24`, 'dev', 'eth0']);
    const r = await ckpt(
      [
        'run',
        '--json',
        '--stdout',
        path.join(dir, 'redis.log'),
        '--',
        redis,
        '--save',
        '',
        '--appendonly',
        'no',
        '--port',
        '6379',
        '--bind',
        svc,
        '--protected-mode',
        'no',
        '--dir',
        dir,
      ],
      { prefix: H.inNs(a) },
    );
    expectOk(r);
    const app = JSON.parse(r.stdout) as { pid: number; app: string; init: number };
    track(app.pid, 'redis-server');
    track(app.init, 'ckpt-init');
    await waitForLine(path.join(dir, 'redis.log'), /Ready to accept connections/);
    const report = path.join(dir, 'client');
    const client = spawn('nsenter', [`--net=/run/netns/${H.byName.c.ns}`, '--', 'python3', path.join(FIXTURES, 'redis_client.py'), svc, '6379', report], {
      stdio: 'ignore',
      detached: true,
    });
    track(client.pid!, 'redis_client');
    const ops = () =>
      Math.max(
        0,
        ...fs
          .readFileSync(report, 'utf8')
          .split('\n')
          .map((l) => Number(/^ops (\d+)/.exec(l)?.[1] ?? 0)),
      );
    await waitForLine(report, /^ops 300$/, 30_000);
    const m = await migrate(a, b, { pid: app.pid, app: app.app, report }, ['--move-address', `${svc}/24`]);
    expectOk(m);
    const j = JSON.parse(m.stdout) as { main: number; pids: number[]; downtimeMs: number };
    for (const p of j.pids) track(p, 'redis-server');
    await waitNotAlive(app.pid);
    expect(fs.readlinkSync(`/proc/${j.main}/ns/net`), 'redis runs on host b').toBe(b.netns);
    const after = ops();
    await waitFor(
      () => ops() >= after + 300 || /^FAIL/m.test(fs.readFileSync(report, 'utf8')),
      30_000,
      () => `the client made no progress after the migration:\n${fs.readFileSync(report, 'utf8').slice(-1000)}`,
    );
    expect(fs.readFileSync(report, 'utf8'), 'the client kept its connection').not.toMatch(/^FAIL/m);
    expect(JSON.parse(m.stdout).rehearsal, 'no rehearsal with TCP connections').toMatch(/^skipped/);
    process.kill(client.pid!, 'SIGUSR1');
    await waitForLine(report, /^(ok|FAIL) all/, 30_000);
    const text = fs.readFileSync(report, 'utf8');
    expect(text, 'the client kept its connection and every key').not.toMatch(/^FAIL/m);
    expect(text).toMatch(/^ok all \d+ gap_ms=\d+$/m);
    console.log(`redis migrated: down ${j.downtimeMs.toFixed(0)} ms (source's view), the client's longest wait ${/gap_ms=(\d+)/.exec(text)?.[1]} ms`);
    expect(text.match(/^connected/gm)?.length, 'one connection, never reopened').toBe(1);
    const where = (h: TestHost) => execFileSync('ip', ['-n', h.ns, '-o', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
    expect(where(b)).toContain(`${svc}/24`);
    expect(where(a)).not.toContain(`${svc}/24`);
    client.kill('SIGKILL');
    execFileSync('ip', ['-n', b.ns, 'addr', 'del', `${svc}/24`, 'dev', 'eth0']);
  }, 180_000);

  it('an unreachable destination, or one without ckpt: a one-line error, the source untouched', async () => {
    const m = await startOn(H.byName.a, 8, 0);
    const r = await ckpt(['migrate', '--app', m.app, '--to', 'nosuchhost', '--ssh', H.ssh.join(' ')], { prefix: H.inNs(H.byName.a) });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ckpt: error: migration of pid \d+ to nosuchhost failed: .*runs on here/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const r2 = await migrate(H.byName.a, H.byName.b, m, [], { remote: ['/nonexistent/ckpt'] });
    expect(r2.code).toBe(1);
    expect(JSON.parse(r2.stdout).error.message).toMatch(/destination went away.*nonexistent/);
    await expectUntouched(m, H.byName.a);
  }, 60_000);
});
