/**
 * The `ckpt` command as one CommonJS bundle (dist/cli.cjs, loaded by bin.ts with a V8 code cache):
 * core, the API, the built-in plugins and their libraries in one file, compiled once.
 */
import * as api from '@ckpt/api';
import * as core from '@ckpt/core';
import * as coreVersion from '@ckpt/core/version';
import * as nativeModule from '@ckpt/native';
import * as debug from 'debug';
import * as tapable from 'tapable';
import * as typedi from 'typedi';
import { z } from 'zod';
import { main } from './main.js';
import { shareModules } from './share.js';
import { outputPending, setUpOutput } from './stdio.js';

// zod is loaded when first used (tsup.config.ts): a command given no options or config never
// loads it. Each zod schema compiles a fast path (new Function) at its first parse, which no code
// cache keeps: for a command that parses each schema once, that doubles the cost of the check. The
// plain path parses the same.
(globalThis as Record<symbol, unknown>)[Symbol.for('ckpt.lazyLoaded')] = (name: string, real: { config(c: object): unknown }) => {
  if (name === 'zod') real.config({ jitless: true });
};
setUpOutput();
shareModules({
  '@ckpt/core': core,
  '@ckpt/core/version': coreVersion,
  '@ckpt/native': nativeModule,
  '@ckpt/api': api,
  debug,
  tapable,
  typedi,
  // zod's module as an import of it sees it (z is the module's namespace too), made when user code
  // first imports a shared module.
  zod: () => ({ ...z, z, default: z }),
});
// Once the command is done, nothing is left to run: exit at once, as process.exit() would (the
// 'exit' listeners, then the status) but without Node's way out, which disposes of the V8 heap
// piece by piece and joins its threads (4-6 ms of every command here, 10-20 ms on a busy host).
// Not while stdout or stderr still holds output a pipe has not taken yet: Node's own exit writes
// it first. Nor when Node is to write a profile or coverage at its exit (--cpu-prof, --heap-prof,
// --prof, NODE_V8_COVERAGE): Node's process.exit() then.
const nodeWritesAtExit =
  !!process.env.NODE_V8_COVERAGE || /--(cpu-prof|heap-prof|prof)\b/.test(`${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`);
void main().then(() => {
  if (outputPending()) return;
  if (nodeWritesAtExit) process.exit();
  const proc = process as NodeJS.Process & { _exiting?: boolean };
  proc._exiting = true;
  process.emit('exit', Number(process.exitCode ?? 0));
  // An 'exit' listener may set the status, as it may before process.exit()'s.
  nativeModule.native.proc.exitNow(Number(process.exitCode ?? 0));
});
