/**
 * Loads the addon through node-gyp-build: build/Release (a build from source: `npm install`,
 * `npm run build`) wins when present, then prebuilds/linux-x64/ (`npm run prebuild`, shipped
 * in the package). Any failure becomes one error that says what to do.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Binding } from './binding.js';

/** The package root (native/): lib/ and dist/ are one level below. */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

type NodeGypBuild = ((dir: string) => unknown) & { path(dir: string): string };

function load(): Binding {
  const req = createRequire(import.meta.url);
  let cause: unknown;
  // A build from source, where node-gyp-build would look first: loaded straight (node-gyp-build's
  // own load and its directory probes cost 2 ms of every start of the command).
  const built = join(packageRoot, 'build/Release/ckpt_native.node');
  if (existsSync(built)) {
    try {
      return req(built) as Binding;
    } catch (e) {
      cause = e;
    }
  }
  try {
    const nodeGypBuild = req('node-gyp-build') as NodeGypBuild;
    return nodeGypBuild(packageRoot) as Binding;
  } catch (e) {
    cause = e;
  }
  const why = String((cause as Error)?.message ?? cause)
    .split('\n')[0]
    .trim();
  throw new Error(
    `ckpt native engine (@ckpt/native) could not be loaded for ${process.platform}-${process.arch}, Node ${process.versions.node}: ${why}. ` +
      `Fix: run \`npm install\` at the repository root, which builds it from source when no prebuild in ` +
      `${join(packageRoot, 'prebuilds')} fits (needs gcc, g++, make and python3); or \`npm run build\` in ${packageRoot}.`,
    { cause },
  );
}

/** The raw, flat addon. Use the grouped `native` facade (./facade.ts) instead. */
export const raw: Binding = load();
