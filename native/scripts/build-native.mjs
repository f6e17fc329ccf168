// Builds the native engine of @ckpt/native:
//   - the addon ckpt_native.node, with node-gyp (build/Release), unless a prebuild fits;
//   - the static helper binaries, with gcc, always: build/ckpt-stub (no libc; rebuilt into
//     a process at restore), build/ckpt-init (pid 1 of `ckpt run`'s pid namespace), and the
//     helpers ckpt starts (ckpt-repairguard, ckpt-memtrack, ckpt-lazy, ckpt-ptyqueue).
//
//   node scripts/build-native.mjs              npm run build: incremental (node-gyp configures only
//                                              when build/ is missing)
//   node scripts/build-native.mjs --install    npm install: from scratch; the addon is compiled only
//                                              when no prebuilds/<platform>-<arch>/*.node loads here
//                                              (or when asked: --build-from-source, CKPT_BUILD_FROM_SOURCE=1)
//   node scripts/build-native.mjs --rebuild    from scratch, always compiling the addon
//   node scripts/build-native.mjs --prebuild   npm run prebuild: prebuilds/linux-x64/*.node with
//                                              prebuildify (--napi --strip)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args, env = process.env) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env });
const mode = ['--install', '--rebuild', '--prebuild'].find((m) => process.argv.includes(m)) ?? '--dev';

function nodeGyp() {
  // npm ships node-gyp; prefer the one next to the running npm.
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error('node-gyp not found: reinstall npm or set npm_config_node_gyp');
}

// Build against the headers of the running Node when they are installed (no download needed).
const nodedir = process.env.npm_config_nodedir ||
  (existsSync(join(dirname(process.execPath), '../include/node/node_api.h')) ? join(dirname(process.execPath), '..') : undefined);
const gypArgs = nodedir ? [`--nodedir=${nodedir}`] : [];

function buildAddon(fromScratch) {
  const gyp = nodeGyp();
  if (fromScratch || !existsSync(join(root, 'build/Makefile'))) {
    rmSync(join(root, 'build'), { recursive: true, force: true });
    run(process.execPath, [gyp, 'configure', ...gypArgs]);
  }
  run(process.execPath, [gyp, 'build', ...gypArgs]);
}

function buildHelpers() {
  const stubSrc = join(root, 'src/stub.c');
  const stubOut = join(root, 'build/ckpt-stub');
  mkdirSync(dirname(stubOut), { recursive: true });
  const initSrc = join(root, 'src/init.c');
  const initOut = join(root, 'build/ckpt-init');
  if (!existsSync(initOut) || statSync(initOut).mtimeMs < statSync(initSrc).mtimeMs) {
    run('gcc', ['-O2', '-static', '-o', initOut, initSrc]);
  }
  const guardSrc = join(root, 'src/repairguard.c');
  const guardOut = join(root, 'build/ckpt-repairguard');
  if (!existsSync(guardOut) || statSync(guardOut).mtimeMs < statSync(guardSrc).mtimeMs) {
    run('gcc', ['-O2', '-Wall', '-static', '-o', guardOut, guardSrc]);
  }
  // The helpers that take fds from ckpt share src/scm.h.
  const trackSrcs = ['src/memtrack.c', 'src/scm.h'].map((f) => join(root, f));
  const trackOut = join(root, 'build/ckpt-memtrack');
  if (!existsSync(trackOut) || trackSrcs.some((f) => statSync(trackOut).mtimeMs < statSync(f).mtimeMs)) {
    run('gcc', ['-O2', '-Wall', '-static', '-o', trackOut, trackSrcs[0]]);
  }
  // ckpt-lazy (restore --lazy) is C, with ckpt's BLAKE3 (C++) through its C interface.
  const lazySrcs = ['src/lazy.c', 'src/blake3.cc', 'src/blake3c.cc', 'src/blake3.h', 'src/blake3c.h', 'src/scm.h'].map((f) => join(root, f));
  const lazyOut = join(root, 'build/ckpt-lazy');
  if (!existsSync(lazyOut) || lazySrcs.some((f) => statSync(lazyOut).mtimeMs < statSync(f).mtimeMs)) {
    run('g++', ['-O2', '-Wall', '-static', '-o', lazyOut, '-x', 'c', lazySrcs[0], '-x', 'c++', lazySrcs[1], lazySrcs[2]]);
  }
  const ptySrc = join(root, 'src/ptyqueue.c');
  const ptyOut = join(root, 'build/ckpt-ptyqueue');
  if (!existsSync(ptyOut) || statSync(ptyOut).mtimeMs < statSync(ptySrc).mtimeMs) {
    run('gcc', ['-O2', '-Wall', '-static', '-o', ptyOut, ptySrc]);
  }
  if (!existsSync(stubOut) || statSync(stubOut).mtimeMs < statSync(stubSrc).mtimeMs) {
    run('gcc', ['-static', '-nostdlib', '-nostartfiles', '-fno-stack-protector', '-fno-asynchronous-unwind-tables',
      '-O2', '-Wl,--build-id=none', '-o', stubOut, stubSrc]);
  }
}

// The prebuild node-gyp-build would pick for this Node, loaded in a child process (a prebuild
// made against a newer glibc fails here, not later): its path, or undefined.
function usablePrebuild() {
  let ngb;
  try {
    ngb = createRequire(join(root, 'package.json')).resolve('node-gyp-build');
  } catch {
    return undefined;
  }
  const probe = `const b = require(${JSON.stringify(ngb)}); const p = b.path(${JSON.stringify(root)}); require(p); console.log(p)`;
  const r = spawnSync(process.execPath, ['-e', probe], { env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

// The script name npm was asked to run by the npm process this script runs under: npm runs
// "prebuild" by itself before "build" (pre-script convention), and a build must not make
// prebuilds. Read from /proc (this package is Linux-only); undefined when not found.
function npmScript() {
  let pid = process.ppid;
  for (let depth = 0; depth < 8 && pid > 1; depth++) {
    let argv;
    try {
      // npm sets its process title ("npm run build"), which overwrites its argv in place.
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').split(/\s+/).filter(Boolean);
    } catch {
      return undefined;
    }
    const k = argv.findIndex((a) => ['run', 'run-script', 'rum', 'urn'].includes(a));
    if (k >= 0 && argv.slice(0, k).some((a) => /(^|\/)npm(-cli\.js)?$/.test(a))) return argv.slice(k + 1).find((a) => !a.startsWith('-'));
    try {
      pid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1]);
    } catch {
      return undefined;
    }
  }
  return undefined;
}

if (mode === '--prebuild') {
  if (process.env.npm_lifecycle_event === 'prebuild' && npmScript() === 'build') process.exit(0); // the pre-hook of `npm run build`
  let bin;
  try {
    bin = join(dirname(createRequire(join(root, 'package.json')).resolve('prebuildify/package.json')), 'bin.js');
  } catch {
    console.error('prebuildify is not installed: run `npm install` (it is a devDependency of @ckpt/native)');
    process.exit(1);
  }
  // prebuildify runs `node-gyp rebuild` (build/ is wiped, so the helpers are built again after).
  const env = { ...process.env, PREBUILD_NODE_GYP: nodeGyp(), ...(nodedir ? { npm_config_nodedir: nodedir } : {}) };
  run(process.execPath, [bin, '--napi', '--strip'], env);
  buildHelpers();
} else if (mode === '--install') {
  rmSync(join(root, 'build'), { recursive: true, force: true });
  const fromSource = process.env.CKPT_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true';
  const prebuild = fromSource ? undefined : usablePrebuild();
  if (prebuild) console.log(`@ckpt/native: using the prebuild ${prebuild}`);
  else buildAddon(true);
  buildHelpers();
} else {
  buildAddon(mode === '--rebuild');
  buildHelpers();
}
