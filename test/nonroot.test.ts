// A user who could not restore an image is told so before anything is killed: a dump that would
// kill the process is refused up front (with the way out, --leave-running), and `ckpt check`
// says what this user can do.
import { spawn, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLI, expectRunningFree, isAlive, makeTempDir, track, useCleanup } from './helpers.js';

useCleanup();

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all'];

/** Runs the CLI as uid 65534 (nobody), without capabilities. */
function ckptAsNobody(args: string[]) {
  const r = spawnSync('setpriv', [...NOBODY, process.execPath, CLI, ...args], {
    env: { ...process.env, NODE_OPTIONS: '', HOME: '/tmp' },
    cwd: '/tmp',
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('non-root', () => {
  it('a dump that would kill the process is refused before anything is touched; check says what the user can do', async () => {
    const dir = makeTempDir('nonroot');
    // /bin/sleep (root's own python may live where nobody cannot read it).
    const prog = spawn('setpriv', [...NOBODY, '/bin/sleep', '600'], { stdio: 'ignore' });
    track(prog.pid!, 'sleep');
    await new Promise((r) => setTimeout(r, 300));
    const r = ckptAsNobody(['dump', '-t', String(prog.pid), '-D', `${dir}/img`]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^ckpt: error: refusing to dump pid \d+: it would be killed, and as uid 65534 ckpt could not restore it/m);
    expect(r.stderr).toMatch(/ckpt: hint: dump with --leave-running/);
    expect(r.stderr, 'no stack trace').not.toMatch(/^\s+at /m);
    expect(isAlive(prog.pid!)).toBe(true);
    expectRunningFree(prog.pid!, 'the process of the refused dump');
    const check = ckptAsNobody(['check', '--json']);
    const j = JSON.parse(check.stdout) as { can: { uid: number; dump: boolean; restore: boolean; dumpLeaveRunning: boolean } };
    expect(j.can).toEqual({ uid: 65534, dumpLeaveRunning: true, dump: false, restore: false });
    prog.kill('SIGKILL');
  });
});
