/** `ckpt check`: probes, on this machine, each kernel feature ckpt relies on. */
import { closeSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { native, stubPath } from '@ckpt/native';
import { canRestore, hasCap as hasCapOf, KeyStore, ProcessControl } from '@ckpt/core';

/** BLAKE3 of "abc" (b3sum's answer), the native digest's self-test. */
const BLAKE3_ABC = '6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85';

export interface Check {
  name: string;
  ok: boolean;
  required: boolean;
  detail?: string;
}

function probe(name: string, required: boolean, fn: () => string | void): Check {
  try {
    const detail = fn();
    return { name, ok: true, required, detail: detail || undefined };
  } catch (e) {
    return { name, ok: false, required, detail: (e as Error).message };
  }
}

const hasCap = (bit: number) => hasCapOf(bit);

/** What this user can do with ckpt here. */
export interface Abilities {
  uid: number;
  /** Dump and let the processes run on (ptrace of one's own processes, or any with CAP_SYS_PTRACE). */
  dumpLeaveRunning: boolean;
  /** Dump that kills the processes: only when they could be restored. */
  dump: boolean;
  restore: boolean;
}

export function abilities(): Abilities {
  const restore = canRestore();
  return { uid: process.getuid?.() ?? 0, dumpLeaveRunning: true, dump: restore, restore };
}

export function runCheck(): { ok: boolean; kernel: string; arch: string; checks: Check[]; can: Abilities } {
  const checks: Check[] = [];
  checks.push(
    probe('architecture x86_64', true, () => {
      if (process.arch !== 'x64') throw new Error(`this is ${process.arch}`);
    }),
  );
  checks.push(
    probe('CAP_SYS_PTRACE (trace any process)', true, () => {
      if (!hasCap(19)) throw new Error('missing: run as root');
    }),
  );
  checks.push(
    probe('CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (clone3 set_tid, PR_SET_MM_MAP)', true, () => {
      if (!hasCap(40) && !hasCap(21)) throw new Error('missing: run as root');
    }),
  );
  checks.push(
    probe('CAP_SYS_RESOURCE (raise rlimits, pipes > 1 MiB)', false, () => {
      if (!hasCap(24)) throw new Error('missing: rlimits are restored only downwards and big pipes keep the default size');
    }),
  );
  checks.push(
    probe('yama ptrace_scope', true, () => {
      const p = '/proc/sys/kernel/yama/ptrace_scope';
      if (!existsSync(p)) return 'yama not present';
      const v = readFileSync(p, 'utf8').trim();
      if (v === '3') throw new Error('ptrace is disabled (ptrace_scope=3)');
      return `ptrace_scope=${v}`;
    }),
  );
  checks.push(
    probe('pidfd_open + pidfd_getfd', true, () => {
      const pidfd = native.proc.pidfdOpen(process.pid);
      const fd = native.proc.pidfdGetfd(pidfd, 0);
      closeSync(fd);
      closeSync(pidfd);
    }),
  );
  checks.push(
    probe('kcmp (CONFIG_CHECKPOINT_RESTORE)', true, () => {
      native.proc.kcmp(process.pid, process.pid, 0, 0, 0);
    }),
  );
  checks.push(
    probe('/proc/PID/pagemap and /proc/PID/mem', true, () => {
      native.mem.pagemapRuns(process.pid, 0x400000, 0x401000, false);
    }),
  );
  checks.push(
    probe('restore stub, clone3, ptrace, XSTATE and rseq query', true, () => {
      if (!existsSync(stubPath)) throw new Error(`stub not built: ${stubPath} (run npm install)`);
      const pc = new ProcessControl();
      const t = pc.spawnStub(0);
      try {
        const x = native.ptrace.getXstate(t.pid);
        native.ptrace.getRseq(t.pid);
        return `xstate ${x.length} bytes`;
      } finally {
        pc.killStub(t.pid);
      }
    }),
  );
  checks.push(
    probe('image signing key and digests (BLAKE3, SHA-256)', false, () => {
      if (native.hash.hashOf('sha256', Buffer.from('abc')) !== 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
        throw new Error('native SHA-256 is wrong');
      if (native.hash.hashOf('blake3', Buffer.from('abc')) !== BLAKE3_ABC) throw new Error('native BLAKE3 is wrong');
      const store = new KeyStore();
      const key = store.hostKey({ create: false });
      const trusted = store.trusted().length;
      return `${key ? `${key.fingerprint} (${store.hostKeyPath})` : `none yet: the first dump creates ${store.hostKeyPath}`}; ${trusted} other key(s) trusted`;
    }),
  );
  checks.push(
    probe('userfaultfd asynchronous write-protect and PAGEMAP_SCAN (incremental dumps: --track-mem, --parent)', false, () => {
      const r = native.mem.uffdProbe();
      if (r !== true) throw new Error(`${r}: every dump is a full one`);
    }),
  );
  checks.push(
    probe('userfaultfd missing-page faults with fork/remap/remove/unmap events (restore --lazy)', false, () => {
      const r = native.mem.uffdLazyProbe();
      if (r !== true) throw new Error(`${r}: restore --lazy fills memory before the process runs, as without it`);
    }),
  );
  checks.push(
    probe('ssh (ckpt migrate --to HOST)', false, () => {
      const ssh = (process.env.PATH ?? '/usr/bin:/bin').split(':').find((d) => existsSync(`${d}/ssh`));
      if (!ssh) throw new Error('no ssh in PATH: ckpt migrate needs it (Debian: openssh-client), and ckpt on the destination');
      return `${ssh}/ssh`;
    }),
  );
  checks.push(
    probe('libzstd (dump --compress)', false, () => {
      const r = native.mem.zstdAvailable();
      if (r !== true) throw new Error(r);
    }),
  );
  checks.push(probe('pid_max', false, () => `pid_max=${readFileSync('/proc/sys/kernel/pid_max', 'utf8').trim()}`));
  return { ok: checks.every((c) => c.ok || !c.required), kernel: os.release(), arch: process.arch, checks, can: abilities() };
}
