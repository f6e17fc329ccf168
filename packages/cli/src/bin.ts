#!/usr/bin/env node
/**
 * The `ckpt` command's entry. `ckpt --version` answers from a module of its own. Everything else
 * runs dist/cli.cjs, the whole command in one CommonJS file, compiled through a V8 code cache kept
 * beside it (dist/cli.cjs.cache): written after a run that had none, or whose cache V8 rejected
 * (another Node, a rebuilt bundle), when the directory is writable.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  const { VERSION } = await import('@ckpt/core/version');
  process.stdout.write(`${VERSION}\n`);
} else {
  runBundle(join(dirname(fileURLToPath(import.meta.url)), 'cli.cjs'));
}

function runBundle(file: string): void {
  const cacheFile = `${file}.cache`;
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {}
  const M = Module as unknown as { wrap(source: string): string; _nodeModulePaths(dir: string): string[] };
  const script = new vm.Script(M.wrap(readFileSync(file, 'utf8')), { filename: file, cachedData });
  // import() in the bundle (of the user's plugins, see share.ts) is this module's.
  (globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.esmImport')] = (url: string) => import(url);
  if (!cachedData || script.cachedDataRejected) process.once('exit', () => saveCache(script, cacheFile));
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
