// Builds the addon (node-gyp) and the tiny static restore stub (gcc, no libc).
// Incremental: node-gyp only re-configures when build/ is missing.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

function nodeGyp() {
  // npm ships node-gyp; prefer the one next to the running npm.
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error('node-gyp not found: reinstall npm or set npm_config_node_gyp');
}

const gyp = nodeGyp();
// Build against the headers of the running Node when they are installed (no download needed).
const nodedir = process.env.npm_config_nodedir ||
  (existsSync(join(dirname(process.execPath), '../include/node/node_api.h')) ? join(dirname(process.execPath), '..') : undefined);
const gypArgs = nodedir ? [`--nodedir=${nodedir}`] : [];
// --rebuild (npm install): configure from scratch, so include paths come from this install.
if (process.argv.includes('--rebuild') || !existsSync(join(root, 'build/Makefile'))) {
  rmSync(join(root, 'build'), { recursive: true, force: true });
  run(process.execPath, [gyp, 'configure', ...gypArgs]);
}
run(process.execPath, [gyp, 'build', ...gypArgs]);

const stubSrc = join(root, 'src/stub.c');
const stubOut = join(root, 'build/ckpt-stub');
mkdirSync(dirname(stubOut), { recursive: true });
const initSrc = join(root, 'src/init.c');
const initOut = join(root, 'build/ckpt-init');
if (!existsSync(initOut) || statSync(initOut).mtimeMs < statSync(initSrc).mtimeMs) {
  run('gcc', ['-O2', '-static', '-o', initOut, initSrc]);
}
if (!existsSync(stubOut) || statSync(stubOut).mtimeMs < statSync(stubSrc).mtimeMs) {
  run('gcc', ['-static', '-nostdlib', '-nostartfiles', '-fno-stack-protector', '-fno-asynchronous-unwind-tables',
    '-O2', '-Wl,--build-id=none', '-o', stubOut, stubSrc]);
}
