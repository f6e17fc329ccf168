import { randomHex } from './random.js';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';

/**
 * Paths of the image as they are opened at restore. `--relocate OLD=NEW` is core's, not one
 * plugin's: every plugin that reopens a path (files, mappings, inotify watches, sockets bound to
 * a path) goes through `session.relocate(path)`, so one flag moves all of them alike.
 */

/** --relocate: the first [old, new] whose old is the path or one of its parent directories. */
export function relocatePath(path: string, relocate: ReadonlyArray<readonly [string, string]> | undefined): string {
  for (const [from, to] of relocate ?? []) {
    const f = from.replace(/\/+$/, '');
    if (path === f) return to;
    if (path.startsWith(f + '/')) return to.replace(/\/+$/, '') + path.slice(f.length);
  }
  return path;
}

/**
 * Makes something that stands for a deleted object (a file, FIFO, device node, directory): at its
 * old path when that is free, so /proc shows the same "(deleted)" name once it is removed again;
 * else under a temporary name beside it; else in the temp directory. `make(path)` creates it (and
 * throws when it cannot); the path used is returned. The last failure is thrown.
 */
export function makeWhereItWas(oldPath: string, make: (path: string) => void): string {
  const tmpName = () => `.ckpt-deleted-${randomHex(6)}`;
  const candidates = [...(existsSync(oldPath) ? [] : [oldPath]), join(dirname(oldPath), tmpName()), join(os.tmpdir(), tmpName())];
  let lastError: unknown;
  for (const path of candidates) {
    try {
      make(path);
      return path;
    } catch (e) {
      lastError = e;
    }
  }
  throw lastError;
}
