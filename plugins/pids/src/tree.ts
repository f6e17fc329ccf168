/**
 * Restore of the tree's shape (see shape.ts for why it works): processes forked from their
 * parent, or from a holder of their session; zombies made from their parent and kept alive until
 * every group is joined; helpers for groups and sessions whose leader is gone; then zombies exit
 * with their old status, helpers exit and are reaped by their parent, and every process is checked
 * to have its old parent again.
 */
import {
  CkptError,
  createSessionState,
  logger,
  procfs,
  remoteClone,
  type ProcessRestore,
  type RestoreSession,
  type SharedWithParent,
  type Tracee,
  type ZombieRecord,
} from '@ckpt/core';
import { native, SYS, PR_SET_NAME, CLONE_FILES, CLONE_FS } from '@ckpt/native';
import type { PidsRecord } from './record.js';
import { holderSession, type Member } from './shape.js';

const log = logger('plugin:pids');

const __WALL = 0x40000000;

/** A process made only to lead a session or group for a while (a helper), or a zombie to be. */
interface Made {
  id: number;
  stub: Tracee;
  /** The stub that forked it: it reaps a helper. */
  parent: Tracee;
  zombie?: ZombieRecord;
}

const made = createSessionState('pids:made', () => new Map<number, Made>());

/** Forks a child with the given pid out of a parent stub (clone3 set_tid, and flags); it starts stopped. */
export function forkFrom(parent: Tracee, setTid: number[], flags = 0): Tracee {
  try {
    return remoteClone(parent, setTid, { flags });
  } catch (e) {
    throw new CkptError('ERR_CKPT_PID_TAKEN', `cannot create pid ${setTid.at(-1)} under ${parent.pid}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Creates a process (or a zombie-to-be) of the image under its parent's stub, through a holder of
 * its session when its parent is in another; a session leader calls setsid. What it shares with
 * its parent (fd table, fs) it gets by cloning from it with CLONE_FILES / CLONE_FS.
 */
export function createUnder(
  session: RestoreSession,
  m: Member,
  parent: Tracee,
  parentSid: number | undefined,
  shares: readonly SharedWithParent[] = [],
): Tracee {
  const s = holderSession(m, parentSid);
  const creator = s === undefined ? parent : holderOf(session, s, parent, 'session');
  if (shares.length && creator !== parent) {
    throw new CkptError(
      'ERR_CKPT_RESTORE_FAILED',
      `pid ${m.pid} shares ${shares.join(' and ')} with its parent ${m.ppid}, yet must be made through a holder of its session`,
    );
  }
  const flags = (shares.includes('files') ? CLONE_FILES : 0) | (shares.includes('fs') ? CLONE_FS : 0);
  const stub = forkFrom(creator, session.setTid(m.pid), flags);
  session.onRollback(() => session.services.processes.killStub(stub.pid));
  if (m.sid === m.pid) stub.syscall(SYS.setsid);
  return stub;
}

/** The holder of a session or group whose leader is gone: the zombie leader, or a helper with its pid. */
function holderOf(session: RestoreSession, id: number, from: Tracee, kind: 'session' | 'group'): Tracee {
  const have = made.of(session).get(id);
  if (have) return have.stub;
  const z = session.zombies.find((x) => x.pid === id);
  if (z) return makeZombie(session, z).stub;
  const stub = forkFrom(from, session.setTid(id));
  session.onRollback(() => session.services.processes.killStub(stub.pid));
  if (kind === 'session') stub.syscall(SYS.setsid);
  else stub.syscall(SYS.setpgid, 0, 0);
  log('helper %d leads the %s whose leader is gone', id, kind);
  made.of(session).set(id, { id, stub, parent: from });
  return stub;
}

function makeZombie(session: RestoreSession, z: ZombieRecord): Made {
  const have = made.of(session).get(z.pid);
  if (have) return have;
  const parentProc = session.processes.find((p) => p.pid === z.ppid);
  const parent = parentProc?.stub;
  if (!parent) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `zombie ${z.pid}: its parent ${z.ppid} was not created before it`);
  const stub = createUnder(session, z, parent, parentProc!.record.sid);
  if (z.comm) stub.syscall(SYS.prctl, PR_SET_NAME, stub.putString(z.comm.slice(0, 15), 0), 0, 0, 0);
  const m: Made = { id: z.pid, stub, parent, zombie: z };
  made.of(session).set(z.pid, m);
  return m;
}

/**
 * Once every process exists: the zombies, then process groups (leaders first, then members
 * joining, through a helper when the leader is gone), then zombies and helpers exit.
 */
export function finishTree(session: RestoreSession, recOf: (p: ProcessRestore) => PidsRecord | undefined): void {
  const vpid = session.vpid;
  for (const z of session.zombies) if (session.processes.some((p) => p.pid === z.ppid && p.stub)) makeZombie(session, z);
  const all: Array<{ m: Member; stub: Tracee }> = [
    ...session.processes.flatMap((p) => {
      const r = recOf(p);
      return r && p.stub ? [{ m: r as Member, stub: p.stub }] : [];
    }),
    ...[...made.of(session).values()].filter((x) => x.zombie).map((x) => ({ m: { ...x.zombie!, zombie: true } as Member, stub: x.stub })),
  ];
  for (const { m, stub } of all) if (m.pgid === m.pid && m.sid !== m.pid) stub.syscall(SYS.setpgid, 0, 0);
  // The root's group when it came from outside (a shell job): the root stays in ckpt restore's.
  const root = all[0]?.m;
  const outsideGroup = root && root.pgid !== root.pid && !all.some((x) => x.m.pid === root.pgid) ? root.pgid : undefined;
  for (const { m, stub } of all) {
    if (m.pgid === m.pid || m.sid === m.pid) continue;
    if (procfs.readStat(stub.pid).pgid === m.pgid && !session.newPidNamespace) continue;
    if (m.pgid === outsideGroup) {
      log('pid %d: its process group %d was not in the image (a shell job): it stays in %d', m.pid, m.pgid, procfs.readStat(stub.pid).pgid);
      continue;
    }
    if (!all.some((x) => x.m.pid === m.pgid)) holderOf(session, m.pgid, stub, 'group');
    try {
      stub.syscall(SYS.setpgid, 0, vpid(m.pgid));
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${m.pid}: cannot join its process group ${m.pgid} again: ${(e as Error).message}`, { cause: e });
    }
  }
  for (const x of made.of(session).values()) {
    if (x.zombie) exitAs(x.stub, vpid(x.id), x.zombie.exitCode);
    else {
      exitAs(x.stub, vpid(x.id), 0);
      x.parent.syscall(SYS.wait4, vpid(x.id), 0, __WALL, 0);
    }
  }
  checkParents(session, recOf);
}

/** Makes a stub exit with a wait status (exit_group(code), or killed by the signal) and collects it as its tracer. */
function exitAs(stub: Tracee, vpid: number, status: number): void {
  const sig = status & 0x7f;
  if (sig === 0) {
    try {
      stub.syscallRaw(SYS.exit_group, (status >> 8) & 0xff);
    } catch {
      /* it exits inside the syscall (and its exit was collected there): expected */
    }
    return;
  }
  stub.syscall(SYS.kill, vpid, sig);
  native.ptrace.cont(stub.pid, 0);
  for (let i = 0; i < 10; i++) {
    const st = native.ptrace.waitStop(stub.pid, 5000);
    if (st.kind === 'exited' || st.kind === 'killed') return;
    native.ptrace.cont(stub.pid, st.kind === 'signal' ? st.signal : 0);
  }
}

/** After the holders exited, each process was handed back to its old parent: checked, not assumed. */
function checkParents(session: RestoreSession, recOf: (p: ProcessRestore) => PidsRecord | undefined): void {
  for (const p of session.processes.slice(1)) {
    const r = recOf(p);
    const parent = session.processes.find((q) => q.pid === r?.ppid)?.stub;
    if (!r || !p.stub || !parent) continue;
    const now = procfs.readStat(p.stub.pid).ppid;
    if (now !== parent.pid) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${r.pid}: its parent after the restore is ${now}, not ${r.ppid} as it was`);
    }
  }
}
