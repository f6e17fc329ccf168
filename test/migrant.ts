/** The migrant fixture (test/fixtures/migrant.c): started with ckpt run, checked from inside. */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { BUILD_DIR, ckpt, expectOk, makeTempDir, track, waitFor, waitForLine } from './helpers.js';

const MIGRANT = path.join(BUILD_DIR, 'migrant');

export interface Migrant {
  pid: number;
  app: string;
  report: string;
}

/** `ckpt run` of the migrant (MIB MiB, PERMILLE per thousand of it written a second), under `prefix` (a network namespace). */
export async function startMigrant(mib: number, permille: number, prefix?: string[]): Promise<Migrant> {
  const dir = makeTempDir('migrant');
  const report = path.join(dir, 'report');
  const r = await ckpt(['run', '--json', '--stdout', path.join(dir, 'out'), '--', MIGRANT, String(mib), String(permille), report], { prefix });
  expectOk(r);
  const j = JSON.parse(r.stdout) as { pid: number; app: string; init: number };
  track(j.pid, 'migrant');
  track(j.init, 'ckpt-init');
  await waitForLine(report, /^ready/);
  return { pid: j.pid, app: j.app, report };
}

const verifies = new Map<string, number>();
/** SIGUSR1, then the migrant's next verify line (its fields). */
export async function verify(pid: number, report: string): Promise<Record<string, string>> {
  const n = (verifies.get(report) ?? 0) + 1;
  verifies.set(report, n);
  process.kill(pid, 'SIGUSR1');
  const { match } = await waitFor(
    () => {
      const lines = fs
        .readFileSync(report, 'utf8')
        .split('\n')
        .filter((l) => /^(ok|FAIL) verify/.test(l));
      return lines.length >= n ? { match: lines[n - 1] } : undefined;
    },
    20_000,
    () => `no verify line ${n} in ${report}:\n${fs.readFileSync(report, 'utf8').slice(-2000)}`,
  );
  expect(match, 'the migrant checked its memory').toMatch(/^ok verify/);
  return Object.fromEntries(
    match
      .replace(/^ok verify /, '')
      .split(' ')
      .map((kv) => kv.split('=') as [string, string]),
  );
}
