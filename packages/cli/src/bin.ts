#!/usr/bin/env node
/**
 * The `ckpt` command's entry, CommonJS (dist/bin.cjs, loaded by bin/ckpt.js): Node's ES module
 * loader would cost some 15 ms at every start. `ckpt --version` answers from the version alone
 * (bundled in). Everything else runs dist/cli.cjs, the whole command in one CommonJS file,
 * compiled through a V8 code cache kept beside it, one per command (dist/cli.cjs.dump.cache...;
 * dist/cli.cjs.main.cache without one): a cache holds the functions compiled when it was made,
 * after a run, so the functions a dump runs are compiled once, not at every dump. Written after a
 * successful run of the command that had none, or whose cache V8 rejected (another Node, a
 * rebuilt bundle), when the directory is writable.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import vm from 'node:vm';
import { VERSION } from '@ckpt/core/version';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
} else {
  runBundle(join(__dirname, 'cli.cjs'));
}

function runBundle(file: string): void {
  // The command, as far as a look at the arguments tells (main.ts says which one ran).
  const verb = args.find((a) => !a.startsWith('-'));
  const name = verb && /^[a-z][a-z-]{0,23}$/.test(verb) ? verb : 'main';
  const cacheFile = `${file}.${name}.cache`;
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {}
  const M = Module as unknown as { wrap(source: string): string; _nodeModulePaths(dir: string): string[] };
  // latin1: esbuild writes ASCII (non-ASCII characters escaped), so each byte is a character, and
  // the string is made by a copy, without UTF-8 decoding.
  const script = new vm.Script(M.wrap(readFileSync(file, 'latin1')), { filename: file, cachedData });
  // import() in the bundle (of the user's plugins, see share.ts) is this module's.
  (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.esmImport')] = (url: string) => import(url);
  if (!cachedData || script.cachedDataRejected) {
    process.once('exit', (code) => {
      const ran = (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.command')] ?? 'main';
      if (code === 0 && ran === name) saveCache(script, cacheFile);
    });
  }
  const mod = new Module(file) as Module & { filename: string; paths: string[] };
  mod.filename = file;
  mod.paths = M._nodeModulePaths(dirname(file));
  const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
  run(mod.exports, createRequire(file), mod, file, dirname(file));
}

/** After the run, so the functions it compiled are in the cache; best effort, atomic. */
function saveCache(script: vm.Script, cacheFile: string): void {
  try {
    const tmp = `${cacheFile}.${process.pid}`;
    writeFileSync(tmp, script.createCachedData(), { mode: 0o644 });
    renameSync(tmp, cacheFile);
  } catch {}
}
