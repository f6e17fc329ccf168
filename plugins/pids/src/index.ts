/**
 * @ckpt/plugin-pids — process identity: pid, parent, process group, session, name, command
 * line (for `ckpt show`), and credentials.
 *
 * Restore creates the process: a stub with the same pid (clone3 set_tid), a session leader
 * again if it was one (setsid), its own process group again if it led one. Its parent is the
 * restorer (with --detach, init once the restorer exits). Credentials and the name are set
 * late, after everything that needs root in the stub (installing fds) is done.
 */
import { readFileSync } from 'node:fs';
import { CkptError, definePlugin, logger, procfs, remoteClone, type Tracee, type ProcessDump, type ProcessRestore, type RestoreSession } from '@ckpt/core';
import { native, SYS, PR_SET_NAME } from '@ckpt/native';
import { pidsRecord, type PidsRecord } from './record.js';

export { pidsRecord, type PidsRecord } from './record.js';

const log = logger('plugin:pids');

export const NAME = '@ckpt/plugin-pids';

const RLIM_INFINITY = (1n << 64n) - 1n;
const rl = (v: bigint) => (v === RLIM_INFINITY ? 'inf' : v.toString());

async function dump(proc: ProcessDump): Promise<void> {
  const base = proc.tracee.scratch();
  const rlimits: Array<[number, string, string]> = [];
  for (let r = 0; r < 16; r++) {
    proc.tracee.syscall(SYS.prlimit64, 0, r, 0, base);
    const b = proc.tracee.read(base, 16);
    rlimits.push([r, rl(b.readBigUInt64LE(0)), rl(b.readBigUInt64LE(8))]);
  }
  const personality = Number(proc.tracee.syscall(SYS.personality, 0xffffffff));
  const st = procfs.readStat(proc.pid);
  checkLeaders(proc, st);
  const status = procfs.readStatus(proc.pid);
  const ids = (s: string | undefined) => (s ?? '').split(/\s+/).filter(Boolean).map(Number);
  proc.put(NAME, {
    pid: proc.pid,
    ppid: st.ppid,
    pgid: st.pgid,
    sid: st.sid,
    comm: st.comm,
    cmdline: readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0').slice(0, -1),
    creds: { uid: ids(status.Uid).slice(0, 3), gid: ids(status.Gid).slice(0, 3), groups: ids(status.Groups) },
    rlimits,
    personality,
  } satisfies PidsRecord);
}

/**
 * A session or process group is recreated by its leader (setsid, setpgid): one led by a process
 * that is not in the image (it exited; it is a zombie; it is outside) cannot be, yet, and is
 * refused rather than lost. The root's own session and group are the exception: they come from
 * whoever started it (a shell), and the restore puts the root in ckpt restore's (a shell job).
 */
function checkLeaders(proc: ProcessDump, st: { pgid: number; sid: number }): void {
  const session = proc.session;
  const root = session.processes[0];
  const led = (id: number) => id === proc.pid || session.processes.some((p) => p.pid === id);
  const why = (id: number) => (session.zombies.some((z) => z.pid === id) ? 'is a zombie' : 'has exited or is not in the checkpoint');
  const refuse = (what: string, id: number) => {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED',
      `cannot checkpoint pid ${proc.pid} (${proc.comm}): it is in ${what} ${id}, whose leader ${why(id)}; ckpt cannot recreate such a ${what} yet`,
    );
  };
  if (!led(st.sid) && st.sid !== root.sid) refuse('session', st.sid);
  if (!led(st.pgid) && st.pgid !== root.pgid) refuse('process group', st.pgid);
}

/** Forks a child with the given pid out of a parent stub (clone3 set_tid); it starts stopped. */
export function forkFrom(parent: Tracee, setTid: number[]): Tracee {
  try {
    return remoteClone(parent, setTid);
  } catch (e) {
    throw new CkptError('ERR_CKPT_PID_TAKEN', `cannot create pid ${setTid.at(-1)} under ${parent.pid}: ${(e as Error).message}`, { cause: e });
  }
}

async function restore(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<PidsRecord>(NAME);
  if (!rec) return;
  const pc = proc.session.services.processes;
  const parent = proc.session.processes.find((p) => p.pid === rec.ppid && p.stub);
  let stub: Tracee;
  const _vpid = proc.session.vpid;
  if (parent?.stub) {
    stub = forkFrom(parent.stub, proc.session.setTid(rec.pid));
    if (rec.sid === rec.pid) stub.syscall(SYS.setsid);
  } else {
    // The root: the restorer's own child (its old parent is not part of the image); the init
    // of a fresh pid namespace when the image is one.
    stub = pc.spawnStub(proc.session.setTid(rec.pid), { setsid: rec.sid === rec.pid, newPidNs: proc.session.newPidNamespace });
  }
  proc.session.onRollback(() => pc.killStub(stub.pid));
  proc.stub = stub;
  proc.threads = [stub];
}

/**
 * Once every process exists: process groups (leaders first, then members joining them), and
 * zombies (forked from their parent, then made to exit with their old status).
 */
async function processesCreated(session: RestoreSession): Promise<void> {
  const procs = session.processes.map((p) => ({ p, rec: p.get<PidsRecord>(NAME) })).filter((x) => x.rec && x.p.stub);
  const vpid = session.vpid;
  for (const { p, rec } of procs) if (rec!.pgid === rec!.pid && rec!.sid !== rec!.pid) p.stub!.syscall(SYS.setpgid, 0, 0);
  // The root's group when it came from outside (a shell job): the root stays in ckpt restore's.
  const root = procs[0]?.rec;
  const outsideGroup = root && root.pgid !== root.pid && !procs.some((x) => x.rec!.pid === root.pgid) ? root.pgid : undefined;
  for (const { p, rec } of procs) {
    if (rec!.pgid === rec!.pid || rec!.sid === rec!.pid) continue;
    if (procfs.readStat(p.stub!.pid).pgid === rec!.pgid && !session.newPidNamespace) continue;
    if (rec!.pgid === outsideGroup) {
      log('pid %d: its process group %d was not in the image (a shell job): it stays in %d', rec!.pid, rec!.pgid, procfs.readStat(p.stub!.pid).pgid);
      continue;
    }
    try {
      p.stub!.syscall(SYS.setpgid, 0, vpid(rec!.pgid));
    } catch (e) {
      throw new CkptError('ERR_CKPT_RESTORE_FAILED', `pid ${rec!.pid}: cannot join its process group ${rec!.pgid} again: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }
  for (const z of session.zombies) {
    const parent = session.processes.find((p) => p.pid === z.ppid)?.stub;
    if (!parent) continue;
    const child = forkFrom(parent, session.setTid(z.pid));
    if (z.comm) child.syscall(SYS.prctl, PR_SET_NAME, child.putString(z.comm.slice(0, 15), 0), 0, 0, 0);
    if (z.pgid !== z.pid && z.pgid !== z.ppid) child.syscallRaw(SYS.setpgid, 0, vpid(z.pgid));
    const sig = z.exitCode & 0x7f;
    if (sig === 0) {
      try {
        child.syscallRaw(SYS.exit_group, (z.exitCode >> 8) & 0xff);
      } catch {
        /* it exits inside the syscall: expected */
      }
    } else {
      child.syscall(SYS.kill, vpid(z.pid), sig);
      native.ptrace.cont(child.pid, 0);
      for (let i = 0; i < 10; i++) {
        const st = native.ptrace.waitStop(child.pid, 5000);
        if (st.kind === 'exited' || st.kind === 'killed') break;
        native.ptrace.cont(child.pid, st.kind === 'signal' ? st.signal : 0);
      }
    }
  }
}

/** Name and credentials: set when nothing else needs the stub to be root. */
async function restoreIdentity(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<PidsRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  stub.syscall(SYS.prctl, PR_SET_NAME, stub.putString(rec.comm.slice(0, 15), 0), 0, 0, 0);
  if (rec.personality !== undefined) stub.syscall(SYS.personality, rec.personality);
  // Limits: as saved, but a hard limit can only go down without CAP_SYS_RESOURCE, so each is
  // capped at the restorer's own hard limit (logged when that changes anything).
  const base = stub.scratch();
  for (const [r, soft, hard] of rec.rlimits ?? []) {
    stub.syscall(SYS.prlimit64, 0, r, 0, base);
    const curHard = stub.read(base, 16).readBigUInt64LE(8);
    const want = (v: string) => (v === 'inf' ? RLIM_INFINITY : BigInt(v));
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
    stub.syscall(SYS.prlimit64, 0, r, stub.put(b, 16), 0);
  }
  const { uid, gid, groups } = rec.creds;
  const isRoot = uid.every((u) => u === 0) && gid.every((g) => g === 0) && groups.every((g) => g === 0);
  if (isRoot) return;
  const list = Buffer.alloc(Math.max(4, groups.length * 4));
  groups.forEach((g, i) => list.writeUInt32LE(g, i * 4));
  stub.syscall(SYS.setgroups, groups.length, stub.put(list, 0));
  stub.syscall(SYS.setresgid, gid[0], gid[1], gid[2]);
  stub.syscall(SYS.setresuid, uid[0], uid[1], uid[2]);
}

export const pidsPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'the process tree: pids, parents, sessions, groups, zombies, names, credentials, rlimits, personality',
  record: { version: 1, schema: pidsRecord },
  claims: { stateClasses: ['pids', 'credentials'] },
  show: { process: (rec: unknown) => [`command: ${((rec as PidsRecord).cmdline ?? []).join(' ')}`] },
  apply(hooks) {
    hooks.pids.dump.tapPromise(NAME, dump);
    hooks.pids.restore.tapPromise(NAME, restore);
    hooks.session.processesCreated.tapPromise(NAME, processesCreated);
    hooks.credentials.restore.tapPromise(NAME, restoreIdentity);
  },
}));

export default pidsPlugin;
