/** What `ckpt run` and the checkpointers it starts share: where their logs go, and the environment they pass on. */
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';

/** The directory of `ckpt run`'s default output logs and of checkpointers' logs (made 0700 if missing). */
export function runDir(): string {
  const dir = join(os.tmpdir(), 'ckpt-run');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** ckpt's environment as an envp list, for a program it starts. */
export function environ(): string[] {
  return Object.entries(process.env).map(([k, v]) => `${k}=${v}`);
}
