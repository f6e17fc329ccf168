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
import { definePlugin, procfs, type ProcessDump, type ProcessRestore } from '@ckpt/core';
import { SYS } from '@ckpt/native';

export const NAME = '@ckpt/plugin-pids';

export interface PidsRecord {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  comm: string;
  cmdline: string[];
  creds: { uid: number[]; gid: number[]; groups: number[] };
}

const PR_SET_NAME = 15;

async function dump(proc: ProcessDump): Promise<void> {
  const st = procfs.readStat(proc.pid);
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
  } satisfies PidsRecord);
}

async function restore(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<PidsRecord>(NAME);
  if (!rec) return;
  const pc = proc.session.services.processes;
  const stub = pc.spawnStub(rec.pid, { setsid: rec.sid === rec.pid });
  proc.session.onRollback(() => pc.killStub(stub.pid));
  proc.stub = stub;
  if (rec.sid !== rec.pid && rec.pgid === rec.pid) stub.syscall(SYS.setpgid, 0, 0);
}

/** Name and credentials: set when nothing else needs the stub to be root. */
async function restoreIdentity(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<PidsRecord>(NAME);
  const stub = proc.stub;
  if (!rec || !stub) return;
  stub.syscall(SYS.prctl, PR_SET_NAME, stub.putString(rec.comm.slice(0, 15), 0), 0, 0, 0);
  const { uid, gid, groups } = rec.creds;
  const isRoot = uid.every((u) => u === 0) && gid.every((g) => g === 0) && groups.every((g) => g === 0);
  if (isRoot) return;
  const list = Buffer.alloc(Math.max(4, groups.length * 4));
  groups.forEach((g, i) => list.writeUInt32LE(g, i * 4));
  stub.syscall(SYS.setgroups, groups.length, stub.put(list, 0));
  stub.syscall(SYS.setresgid, gid[0], gid[1], gid[2]);
  stub.syscall(SYS.setresuid, uid[0], uid[1], uid[2]);
}

export const pidsPlugin = definePlugin<void>(() => ({
  name: NAME,
  version: '0.1.0',
  apply(hooks) {
    hooks.pids.dump.tapPromise(NAME, dump);
    hooks.pids.restore.tapPromise(NAME, restore);
    hooks.credentials.restore.tapPromise(NAME, restoreIdentity);
  },
}));

export default pidsPlugin;
