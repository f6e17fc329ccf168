/**
 * @ckpt/plugin-pids — process identity: pid, parent, process group, session, name, command
 * line (for `ckpt show`), and credentials.
 *
 * Restore creates the process: a stub with the same pid (clone3 set_tid), a session leader
 * again if it was one (setsid), its own process group again if it led one. The root's parent is
 * the restorer (with --detach, init once the restorer exits). Sessions and groups whose leader
 * is gone (dead, or a zombie) and orphans reparented to a subreaper are made again through
 * holders (shape.ts, tree.ts). Credentials and the name are set late, after everything that
 * needs root in the stub (installing fds) is done.
 */
import { readFileSync } from 'node:fs';
import {
  CkptError,
  definePlugin,
  isChildSubreaper,
  isChildSubreaperEach,
  logger,
  procfs,
  type BatchedSyscall,
  type DumpSession,
  type Tracee,
  type ProcessDump,
  type ProcessRestore,
} from '@ckpt/core';
import { SYS, PR_SET_NAME } from '@ckpt/native';
import { pidsRecord, type PidsRecord } from './record.js';
import { shapeProblem } from './shape.js';
import { createUnder, finishTree } from './tree.js';

export { pidsRecord, type PidsRecord } from './record.js';
export { forkFrom } from './tree.js';

const log = logger('plugin:pids');

export const NAME = '@ckpt/plugin-pids';

const PR_SET_CHILD_SUBREAPER = 36;
const RLIM_INFINITY = (1n << 64n) - 1n;
const rl = (v: bigint) => (v === RLIM_INFINITY ? 'inf' : v.toString());

/**
 * The 16 resource limits, from /proc/PID/limits (one row per RLIMIT_*, in their order; "unlimited"
 * is RLIM_INFINITY): no stop of the process. Undefined when the file is not as expected.
 */
export function parseLimits(text: string): Array<[number, string, string]> | undefined {
  const rows = text.split('\n').slice(1).filter(Boolean);
  const out: Array<[number, string, string]> = [];
  for (const [r, row] of rows.entries()) {
    const m = /^Max .*?\s{2,}(unlimited|\d+)\s+(unlimited|\d+)/.exec(row);
    if (!m) return undefined;
    const v = (x: string) => (x === 'unlimited' ? 'inf' : x);
    out.push([r, v(m[1]), v(m[2])]);
  }
  return out.length === 16 ? out : undefined;
}

/**
 * The /proc files dump() reads of a process, by path (null where unreadable): every process's read
 * at once by the pids.dumpAll tap, in one native call (on every CPU), not five reads a process in
 * its own dump. They do not change while it is frozen.
 */
const procTexts = new WeakMap<ProcessDump, Map<string, string | null>>();

function procPaths({ pid, procPid }: ProcessDump): string[] {
  return [`/proc/${procPid}/limits`, `/proc/${procPid}/personality`, `/proc/${pid}/stat`, `/proc/${pid}/status`, `/proc/${procPid}/cmdline`];
}

/** A /proc file of the process, as read ahead (procTexts), else read now. */
function procText(proc: ProcessDump, path: string): string {
  return procfs.textAhead(procTexts.get(proc), path);
}

function rlimitsOf(proc: ProcessDump): Array<[number, string, string]> {
  const fromProc = parseLimits(procText(proc, `/proc/${proc.procPid}/limits`));
  if (fromProc) return fromProc;
  const base = proc.tracee.scratch();
  const rlimits: Array<[number, string, string]> = [];
  for (let r = 0; r < 16; r++) {
    proc.tracee.syscall(SYS.prlimit64, 0, r, 0, base);
    const b = proc.tracee.read(base, 16);
    rlimits.push([r, rl(b.readBigUInt64LE(0)), rl(b.readBigUInt64LE(8))]);
  }
  return rlimits;
}

async function dump(proc: ProcessDump): Promise<void> {
  const rlimits = rlimitsOf(proc);
  // What personality(0xffffffff) in the task returns, without a remote syscall.
  const personality = Number.parseInt(procText(proc, `/proc/${proc.procPid}/personality`), 16);
  const subreaper = isChildSubreaper(proc.tracee);
  const st = procfs.parseStat(procText(proc, `/proc/${proc.pid}/stat`));
  const status = procfs.parseStatus(procText(proc, `/proc/${proc.pid}/status`));
  const ids = (s: string | undefined) => (s ?? '').split(/\s+/).filter(Boolean).map(Number);
  proc.put(NAME, {
    pid: proc.pid,
    ppid: st.ppid,
    pgid: st.pgid,
    sid: st.sid,
    comm: st.comm,
    cmdline: procText(proc, `/proc/${proc.procPid}/cmdline`).split('\0').slice(0, -1),
    creds: { uid: ids(status.Uid).slice(0, 3), gid: ids(status.Gid).slice(0, 3), groups: ids(status.Groups) },
    rlimits,
    personality,
    ...(subreaper ? { subreaper } : {}),
  } satisfies PidsRecord);
}

/**
 * Refuses, naming the process, a tree whose shape a restore could not make again (shape.ts): a
 * process in a session its parent is not in, when that parent would not get it back. Before any
 * state class (fdsDumped), so a refusal costs a short freeze and copies no memory.
 */
async function checkShape(session: DumpSession): Promise<void> {
  const proc = (pid: number) => session.processes.find((p) => p.pid === pid);
  const root = session.processes[0];
  const nsInit = procfs.nsPid(root.pid) === 1;
  const problem = shapeProblem({
    members: [
      ...session.processes.map((p) => ({ pid: p.pid, ppid: p.ppid, pgid: p.pgid, sid: p.sid })),
      ...session.zombies.map((z) => ({ pid: z.pid, ppid: z.ppid, pgid: z.pgid, sid: z.sid, zombie: true })),
    ],
    reaper: (pid) => (pid === root.pid && nsInit) || (!!proc(pid) && isChildSubreaper(proc(pid)!.tracee)),
  });
  if (problem) throw new CkptError('ERR_CKPT_UNSUPPORTED', `cannot checkpoint pid ${root.pid} (${root.comm}): ${problem}`);
}

const recOf = (p: ProcessRestore) => p.get<PidsRecord>(NAME);

async function restore(proc: ProcessRestore): Promise<void> {
  const rec = recOf(proc);
  if (!rec) return;
  const pc = proc.session.services.processes;
  const parent = proc.session.processes.find((p) => p.pid === rec.ppid && p.stub);
  let stub: Tracee;
  if (parent?.stub) {
    stub = createUnder(proc.session, rec, parent.stub, parent.record.sid, proc.record.sharesWithParent);
  } else if (proc.session.nsInit) {
    // The root of a tree that was not a whole pid namespace: the child of the init core made.
    stub = createUnder(proc.session, rec, proc.session.nsInit, undefined);
  } else {
    // The root: the restorer's own child, or the child of the process the restore names (its old
    // parent is not part of the image); the init of a fresh pid namespace when the image is one.
    const s = proc.session;
    stub = pc.spawnStub(s.setTid(rec.pid), {
      setsid: rec.sid === rec.pid,
      newPidNs: s.newPidNamespace,
      newIpcNs: s.newIpcNamespace,
      parent: s.options.parent,
    });
    s.onRollback(() => pc.killStub(stub.pid));
  }
  // Early: orphans handed back to it when a holder exits (tree.ts) must come to it.
  if (rec.subreaper) stub.syscall(SYS.prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  proc.stub = stub;
  proc.threads = [stub];
}

/** Name and credentials: set when nothing else needs the stub to be root. */
async function restoreIdentity(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<PidsRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  // The name, personality, limits and ids in one batch: one stop where the stub has the restore's
  // batch code. (A call that fails fails the restore, which kills the stub: what ran after it in
  // the batch is never seen.)
  const calls: BatchedSyscall[] = [[SYS.prctl, PR_SET_NAME, Buffer.from(`${rec.comm.slice(0, 15)}\0`), 0, 0, 0]];
  if (rec.personality !== undefined) calls.push([SYS.personality, rec.personality]);
  // Limits: as saved, but a hard limit can only go down without CAP_SYS_RESOURCE, so each is
  // capped at the restorer's own hard limit (logged when that changes anything).
  // What the stub has already (the restorer's own limits, mostly) is not set again.
  const current = parseLimits(readFileSync(`/proc/${stub.pid}/limits`, 'utf8'));
  const base = stub.scratch();
  const want = (v: string) => (v === 'inf' ? RLIM_INFINITY : BigInt(v));
  for (const [r, soft, hard] of rec.rlimits ?? []) {
    const now = current?.[r];
    if (now && now[1] === soft && now[2] === hard) continue;
    let curHard: bigint;
    if (now) curHard = want(now[2]);
    else {
      stub.syscall(SYS.prlimit64, 0, r, 0, base);
      curHard = stub.read(base, 16).readBigUInt64LE(8);
    }
    let h = want(hard),
      s = want(soft);
    if (h > curHard) {
      log('pid %d: rlimit %d hard %s capped at %s', rec.pid, r, hard, rl(curHard));
      h = curHard;
    }
    if (s > h) s = h;
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(s, 0);
    b.writeBigUInt64LE(h, 8);
    calls.push([SYS.prlimit64, 0, r, b, 0]);
  }
  const { uid, gid, groups } = rec.creds;
  const isRoot = uid.every((u) => u === 0) && gid.every((g) => g === 0) && groups.every((g) => g === 0);
  const list = Buffer.alloc(Math.max(4, groups.length * 4));
  groups.forEach((g, i) => list.writeUInt32LE(g, i * 4));
  const ids: BatchedSyscall[] = isRoot
    ? []
    : [
        [SYS.setgroups, groups.length, list],
        [SYS.setresgid, gid[0], gid[1], gid[2]],
        [SYS.setresuid, uid[0], uid[1], uid[2]],
      ];
  // A long group list (up to 65536 groups) does not fit a batch's area: its ids go after it.
  const inBatch = list.length <= 1024;
  stub.syscalls(inBatch ? [...calls, ...ids] : calls);
  if (!inBatch) for (const [nr, ...args] of ids) stub.syscall(nr, ...args.map((a) => (Buffer.isBuffer(a) ? stub.put(a, 0) : a)));
}

export const pidsPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'the process tree: pids, parents, sessions, groups, zombies, names, credentials, rlimits, personality',
  record: { version: 1, schema: pidsRecord },
  claims: { stateClasses: ['pids', 'credentials'] },
  show: { process: (rec: unknown) => [`command: ${((rec as PidsRecord).cmdline ?? []).join(' ')}`] },
  apply(hooks) {
    // Which processes are child subreapers, every one asked at once (a stop each otherwise).
    hooks.pids.dumpAll.tapPromise(NAME, async (session) => {
      isChildSubreaperEach(session.processes.map((p) => p.tracee));
      for (const [proc, texts] of procfs.readTextsOf(session.processes, procPaths)) procTexts.set(proc, texts);
    });
    hooks.pids.dump.tapPromise(NAME, dump);
    hooks.pids.restore.tapPromise(NAME, restore);
    hooks.session.fdsDumped.tapPromise(NAME, checkShape);
    hooks.session.processesCreated.tapPromise(NAME, async (session) => finishTree(session, recOf));
    hooks.credentials.restore.tapPromise(NAME, restoreIdentity);
  },
}));

export default pidsPlugin;
