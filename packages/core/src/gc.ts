/**
 * A full garbage collection of ckpt's own heap before a dump whose freeze is downtime (one that
 * leaves the processes running, or hands them over: a migration's final round) freezes the tree;
 * and in `ckpt receive` after the rehearsal of a migration's restore, before the restore that counts.
 *
 * A dump allocates a few MB of JS objects (records, run lists, the parent image's manifest),
 * much of which lives until the commit and is promoted. In a heap of 10-30 MB that is enough for
 * V8 to start a major collection, and it started, as measured here (--trace-gc), right after the
 * freeze nearly every time: its marking steps and its finalization, run from tasks at the dump's
 * interruption points (setImmediate), took 5-15 ms of the window in which the process is frozen,
 * and its helper threads took CPU from the tracee and from the smaps read. Collected before the
 * freeze, the heap's next limit is far enough for the frozen stages' allocations. It costs wall
 * time instead (10-15 ms here, the process running meanwhile); a dump that kills the process
 * has no downtime to save, so it does not pay it.
 *
 * Node gives a script no gc() without --expose-gc; the flag, set for a moment, exposes it in one
 * new context (the process's own global is untouched). Where it cannot be had, nothing is done.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

/** V8's gc(): a full, synchronous collection when called without options (Node 20's V8 takes `{ type: 'major' }` for a minor one). */
type Collect = () => void;

let collect: Collect | null | undefined;

function collector(): Collect | null {
  if (collect !== undefined) return collect;
  const own = (globalThis as { gc?: Collect }).gc;
  if (typeof own === 'function') return (collect = own);
  try {
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as Collect;
  } catch {
    collect = null;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
  return collect;
}

/**
 * The heap in use right after the last collection made between dumps (collectGarbage() without
 * options, by a process that dumps again and again), until a dump's own collection.
 */
let usedAfterIdle: number | undefined;
/**
 * Growth of the heap since that collection under which a dump's collection is skipped: what a
 * dump allocates before its freeze is far less, and V8's next major collection starts only once
 * the heap has grown well past its size at the last one (a few times this in a heap of 20-60 MB).
 */
const GROWN_ENOUGH = 4 << 20;

/** Whether collectGarbage collected in this process (a server's, a checkpointer's heap). */
let collected = false;

/**
 * Whether a heap is too young for V8 to collect it whole soon: never collected by ckpt (the
 * command's own process; a resident one collects between commands, which sets V8's next limit
 * close above what lives), and small. V8 starts its first major collection far above a few MB;
 * --trace-gc over a --leave-running dump of an idle process in the command's own process showed
 * none at all, with or without the collection before the freeze (which took 15-25 ms of its
 * wall, 25 of 248 ms: A/B, 10 runs each, its downtime the same).
 */
export function heapIsYoung(): boolean {
  return !collected && process.memoryUsage().heapUsed < YOUNG_HEAP;
}
const YOUNG_HEAP = 32 << 20;

/**
 * Collects the whole heap now (synchronously), when this Node lets ckpt. Without options: a
 * collection between dumps (`ckpt server` after each command, the periodic checkpointer after
 * each checkpoint). With `beforeFreeze` (a dump whose freeze is downtime): skipped when such a
 * collection came last and the heap has grown by less than a few MB since, so that the same
 * heap is not collected twice (15-25 ms of wall time); any other caller collects as ever.
 */
export function collectGarbage(opts: { beforeFreeze?: boolean } = {}): void {
  const c = collector();
  if (!c) return;
  collected = true;
  const used = () => v8.getHeapStatistics().used_heap_size;
  if (opts.beforeFreeze) {
    if (usedAfterIdle !== undefined && used() - usedAfterIdle < GROWN_ENOUGH) return;
    c();
    usedAfterIdle = undefined;
    return;
  }
  c();
  usedAfterIdle = used();
}
