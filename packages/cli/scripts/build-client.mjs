// Builds dist/ckpt-client from client/ckpt-client.c (see there): `ckpt`'s way to a running
// `ckpt server` without Node's start-up. Without a C compiler ($CC, else cc) it says so and leaves
// none: bin/ckpt.js then runs every command in Node, as before.
import { spawnSync } from 'node:child_process';
import { renameSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { VERSION } from '@ckpt/core/version';

const dir = fileURLToPath(new URL('..', import.meta.url));
const out = `${dir}dist/ckpt-client`;
const tmp = `${out}.${process.pid}`;
const cc = process.env.CC || 'cc';
const args = ['-O2', '-Wall', '-Wextra', `-DCKPT_VERSION=${JSON.stringify(VERSION)}`, '-o', tmp, `${dir}client/ckpt-client.c`];
// Static where the C library allows it (Debian's libc6-dev has libc.a): no dynamic loader at
// each start (0.6 ms a run here, against 0.8), and it runs on any x86-64 Linux the package is
// copied to. Else linked as usual.
let r = spawnSync(cc, ['-static', ...args], { stdio: ['ignore', 'ignore', 'ignore'] });
if (r.status !== 0) r = spawnSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
if (r.status === 0) {
  renameSync(tmp, out);
} else {
  rmSync(tmp, { force: true });
  rmSync(out, { force: true });
  const why = r.error ? r.error.message : `${cc} exited with ${r.status ?? r.signal}`;
  console.warn(`@ckpt/cli: dist/ckpt-client not built (${why}): commands served by \`ckpt server\` start Node first`);
}
