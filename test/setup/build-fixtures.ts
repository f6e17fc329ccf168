// vitest globalSetup: compiles the C fixtures in test/fixtures into test/.build (only those whose
// source is newer than the binary), checks that the CLI has been built, and makes the key
// directory of the run (CKPT_KEY_DIR, see helpers.ts): the tests sign their images with a key of
// their own, never the machine's /etc/ckpt; it is removed at the end.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run's key directory (this test "host"'s signing key and trusted keys). */
    ckptKeyDir: string;
  }
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SRC = path.join(ROOT, 'test/fixtures');
const OUT = path.join(ROOT, 'test/.build');

// Extra gcc flags per fixture. None needs -mavx: vector code is inline asm chosen at run time
// (AVX-512 / AVX / SSE). guarded, taskattrs, posixtimers, creds, seccomp and shared are threaded.
const EXTRA: Record<string, string[]> = {
  guarded: ['-pthread'],
  taskattrs: ['-pthread'],
  posixtimers: ['-pthread'],
  creds: ['-pthread'],
  seccomp: ['-pthread'],
  shared: ['-pthread'],
  cgroups: ['-pthread'],
  leaderless: ['-pthread'],
  flagflip: ['-pthread'],
  overrun: ['-pthread'],
  // The checkpoint callback library, built in (packages/callbacks/c).
  callbacks: ['-pthread', '-I', path.join(ROOT, 'packages/callbacks/c'), path.join(ROOT, 'packages/callbacks/c/ckpt_callbacks.c')],
};

export default function setup(project: TestProject): () => void {
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of fs
    .readdirSync(SRC)
    .filter((n) => n.endsWith('.c'))
    .sort()) {
    const name = f.slice(0, -2);
    const src = path.join(SRC, f);
    const out = path.join(OUT, name);
    // A fixture is rebuilt when it, the header the check fixtures share (report.h) or a source it
    // builds in changed.
    const extraSources = (EXTRA[name] ?? []).filter((a) => a.endsWith('.c'));
    const srcTime = Math.max(...[src, path.join(SRC, 'report.h'), ...extraSources].map((f) => fs.statSync(f).mtimeMs));
    const outTime = fs.existsSync(out) ? fs.statSync(out).mtimeMs : -1;
    if (outTime >= srcTime) continue;
    const args = ['-O1', '-g', '-Wall', '-Wextra', ...(EXTRA[name] ?? []), '-o', out, src];
    try {
      execFileSync('gcc', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      throw new Error(`building fixture ${f} failed: gcc ${args.join(' ')}\n${err.stderr?.toString() ?? err.message}`);
    }
  }
  const cli = process.env.CKPT_CLI ?? path.join(ROOT, 'packages/cli/dist/bin.cjs');
  if (!fs.existsSync(cli)) {
    throw new Error(`the ckpt CLI is not built: ${cli} does not exist (run \`npm run build\` at the repo root first)`);
  }
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-test-keys-'));
  project.provide('ckptKeyDir', path.join(parent, 'host'));
  return () => fs.rmSync(parent, { recursive: true, force: true });
}
