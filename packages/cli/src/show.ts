/** `ckpt show`: what an image holds, for people (text) and programs (--json). */
import { ImageReader, type ProcessRecord } from '@ckpt/core';

interface VmaLike { start: number; end: number; perms: string; kind: string; name: string; runs: Array<[number, number]> }
interface MemoryLike { vmas: VmaLike[]; pagesBytes: number; exe: string }
interface FilesLike { fds: Array<{ fd: number; kind: string; plugin: string; cloexec: boolean; data: { path?: string; flags?: number; pos?: number; sameAs?: number; pid?: number; pipe?: { id: string; data?: string } } }>; cwd: string; umask: number }
interface PidsLike { pid: number; ppid: number; pgid: number; sid: number; comm: string; cmdline: string[] }
interface RegsLike { sigactions: Array<{ sig: number; handler: string }>; xstateSize: number; threads: Array<{ tid: number; comm: string; gpr: string; sigmask: string }> }

const SIGNAMES = ['', 'HUP', 'INT', 'QUIT', 'ILL', 'TRAP', 'ABRT', 'BUS', 'FPE', 'KILL', 'USR1', 'SEGV', 'USR2', 'PIPE', 'ALRM', 'TERM',
  'STKFLT', 'CHLD', 'CONT', 'STOP', 'TSTP', 'TTIN', 'TTOU', 'URG', 'XCPU', 'XFSZ', 'VTALRM', 'PROF', 'WINCH', 'IO', 'PWR', 'SYS'];
const sigName = (n: number) => SIGNAMES[n] ?? `RT${n - 32}`;
const hex = (n: number) => n.toString(16).padStart(12, '0');
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** One line per open file description: type|id|name|pid:fd,... (ids for restore --substitute). */
export function openFiles(procs: ProcessRecord[]): Array<{ type: string; id: string; name: string; holders: string[] }> {
  const out = new Map<string, { type: string; id: string; name: string; holders: string[] }>();
  for (const p of procs) {
    const files = p.records['@ckpt/plugin-files'] as FilesLike | undefined;
    for (const f of files?.fds ?? []) {
      const d = f.data as FilesLike['fds'][number]['data'] & { link?: string; path?: string; type?: string };
      if (d.sameAs !== undefined) {
        out.get(`f${d.pid ?? p.pid}.${d.sameAs}`)?.holders.push(`${p.pid}:${f.fd}`);
        continue;
      }
      const shm = (d as { shmem?: { name: string } }).shmem;
      const name = d.path ?? (d.pipe ? `pipe:[${d.pipe.id}]` : shm ? `/memfd:${shm.name}` : d.type ? `${d.type}` : f.kind);
      out.set(`f${p.pid}.${f.fd}`, { type: f.kind, id: `f${p.pid}.${f.fd}`, name, holders: [`${p.pid}:${f.fd}`] });
    }
  }
  return [...out.values()];
}

interface UnixLike { ino: number; type: string; state: string; name?: string; peer?: number; peerName?: string; external?: string; pending?: number[]; queuedBytes: number; queue: unknown[] }

/** Sockets of the image (one per socket, with every pid:fd holding it) and the bytes queued each way. */
export function socketsOf(procs: ProcessRecord[]) {
  const socks: Array<{ d: UnixLike; holders: string[] }> = [];
  const byHolder = new Map<string, { d: UnixLike; holders: string[] }>();
  for (const p of procs) {
    for (const f of (p.records['@ckpt/plugin-files'] as FilesLike | undefined)?.fds ?? []) {
      const d = f.data as FilesLike['fds'][number]['data'] & Partial<UnixLike>;
      if (d.sameAs !== undefined) byHolder.get(`${d.pid ?? p.pid}:${d.sameAs}`)?.holders.push(`${p.pid}:${f.fd}`);
      else if (f.plugin === '@ckpt/plugin-unix-socket') {
        const s = { d: d as UnixLike, holders: [`${p.pid}:${f.fd}`] };
        socks.push(s);
        byHolder.set(`${p.pid}:${f.fd}`, s);
      }
    }
  }
  const byIno = new Map(socks.map((s) => [s.d.ino, s]));
  return socks.map(({ d, holders }) => {
    const peer = d.peer ? byIno.get(d.peer) : undefined;
    return {
      family: 'unix', type: d.type, state: d.state + (d.external ? ' (external)' : d.pending?.length ? ` (${d.pending.length} pending)` : ''), holders, local: d.name ?? '',
      remote: d.external ?? d.peerName ?? (peer ? `[${peer.holders[0]}]` : d.state === 'disconnected' ? '(closed)' : ''),
      recvQ: d.queuedBytes, recvMessages: d.queue.length, sendQ: peer?.d.queuedBytes ?? 0,
    };
  });
}

interface InetLike { proto: 'tcp' | 'udp'; family: 4 | 6; state: string; local?: { family: number; addr: string; port: number }; peer?: { family: number; addr: string; port: number }; backlog?: number; datagrams?: unknown[]; recvQueue: number; sendQueue: number; locked?: boolean; note?: string }

/** TCP and UDP sockets of the image (@ckpt/plugin-tcp): one row per socket, every pid:fd holding it. */
export function inetSocketsOf(procs: ProcessRecord[]) {
  const rows: Array<{ family: string; type: string; state: string; holders: string[]; local: string; remote: string; recvQ: number; recvMessages: number; sendQ: number; note?: string }> = [];
  const byHolder = new Map<string, (typeof rows)[number]>();
  const addr = (a?: InetLike['local']) => (!a ? '' : a.family === 6 ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);
  for (const p of procs) {
    for (const f of (p.records['@ckpt/plugin-files'] as FilesLike | undefined)?.fds ?? []) {
      const d = f.data as FilesLike['fds'][number]['data'] & Partial<InetLike>;
      if (d.sameAs !== undefined) byHolder.get(`${d.pid ?? p.pid}:${d.sameAs}`)?.holders.push(`${p.pid}:${f.fd}`);
      else if (f.plugin === '@ckpt/plugin-tcp') {
        const i = d as InetLike;
        const row = {
          family: i.family === 6 ? 'inet6' : 'inet', type: i.proto,
          state: i.state + (i.backlog !== undefined ? ` (backlog ${i.backlog})` : '') + (i.locked ? ' (blocked)' : ''),
          holders: [`${p.pid}:${f.fd}`], local: addr(i.local) || '*', remote: addr(i.peer),
          recvQ: i.recvQueue, recvMessages: i.datagrams?.length ?? 0, sendQ: i.sendQueue, ...(i.note ? { note: i.note } : {}),
        };
        rows.push(row);
        byHolder.set(`${p.pid}:${f.fd}`, row);
      }
    }
  }
  return rows;
}

export function showImage(dir: string, opts: { json?: boolean; verify?: boolean; files?: boolean }): string {
  const image = ImageReader.open(dir);
  if (opts.files) {
    const files = openFiles(image.processes());
    return opts.json ? JSON.stringify(files, null, 1) : files.map((f) => `${f.type}|${f.id}|${f.name}|${f.holders.join(',')}`).join('\n');
  }
  if (opts.verify) for (const [name, e] of Object.entries(image.manifest.files)) if (e.crc32c) image.verifyBlob(name);
  const procs = image.processes();
  if (opts.json) return JSON.stringify({ dir: image.dir, manifest: image.manifest, processes: procs.map(summary), zombies: image.manifest.zombies ?? [], ipc: ipcObjects(image, procs), sockets: [...socketsOf(procs), ...inetSocketsOf(procs)], verified: !!opts.verify }, null, 1);
  const m = image.manifest;
  const out: string[] = [];
  out.push(`image ${image.dir}`);
  out.push(`  format ${m.format} v${m.version}, made ${m.createdAt} by ${m.tool} on ${m.host.hostname} (kernel ${m.host.kernel}, ${m.host.arch})`);
  out.push(`  plugins: ${Object.keys(m.plugins).join(', ')}`);
  out.push(`  process tree (${procs.length} processes${m.zombies?.length ? `, ${m.zombies.length} zombies` : ''}):`);
  out.push('    PID     PPID    PGID    SID     THREADS  COMMAND');
  for (const p of procs) {
    const s = summary(p);
    out.push(`    ${[s.pid, s.ppid, s.pgid, s.sid, s.threads?.length ?? 1].map((x) => String(x).padEnd(8)).join('')} ${(s.cmdline ?? []).join(' ').slice(0, 80)}`);
  }
  for (const z of m.zombies ?? []) {
    out.push(`    ${[z.pid, z.ppid, z.pgid, z.sid, 0].map((x) => String(x).padEnd(8)).join('')} [${z.comm}] <zombie, status ${z.exitCode}>`);
  }
  for (const p of procs) out.push(...describeProcess(p));
  const ipc = ipcObjects(image, procs);
  if (ipc) {
    out.push(`  SysV IPC (${ipc.namespace ? "the application's own IPC namespace" : 'attached on the host'}):`);
    out.push('    KIND  KEY         ID      SIZE/COUNT        ATTACHED BY');
    for (const o of ipc.objects) {
      out.push(`    ${o.kind.padEnd(5)} ${('0x' + (o.key >>> 0).toString(16).padStart(8, '0')).padEnd(11)} ${String(o.id).padEnd(7)} ${o.amount.padEnd(17)} ${o.attachedBy.join(', ') || '-'}${o.destroyed ? ' (removed, still attached)' : ''}`);
    }
  }
  const sockets = [...socketsOf(procs), ...inetSocketsOf(procs)];
  if (sockets.length) {
    out.push('  sockets (RECV-Q: bytes queued to it; SEND-Q: bytes it sent, queued in its peer):');
    out.push('    FAMILY TYPE       STATE                    RECV-Q   SEND-Q   HOLDERS        LOCAL -> REMOTE');
    for (const k of sockets) {
      out.push(`    ${k.family.padEnd(6)} ${k.type.padEnd(10)} ${k.state.padEnd(24)} ${String(k.recvQ).padEnd(8)} ${String(k.sendQ).padEnd(8)} ${k.holders.join(',').padEnd(14)} ${k.local || '(unnamed)'} -> ${k.remote || '-'}${'note' in k && k.note ? `  (${k.note})` : ''}`);
    }
  }
  out.push('  files:');
  for (const [name, e] of Object.entries(m.files)) out.push(`    ${name.padEnd(22)} ${String(e.size).padStart(12)} bytes  ${e.crc32c ? `crc32c ${e.crc32c}` : `sha256 ${e.sha256?.slice(0, 16)}…`}`);
  if (opts.verify) out.push('  all checksums verified');
  return out.join('\n');
}

interface IpcLike { namespace: boolean; objects: Array<{ kind: string; id: number; key: number; size?: number; destroyed?: boolean; messages?: unknown[]; values?: number[] }> }

function ipcObjects(image: ImageReader, procs: ProcessRecord[]) {
  if (!image.manifest.files['sysvipc.json']) return undefined;
  const rec = image.readJson<IpcLike>('sysvipc.json');
  return {
    namespace: rec.namespace,
    objects: rec.objects.map((o) => ({
      kind: o.kind, key: o.key, id: o.id, destroyed: !!o.destroyed,
      amount: o.kind === 'shm' ? `${o.size} bytes` : o.kind === 'msg' ? `${o.messages?.length ?? 0} messages` : `${o.values?.length ?? 0} semaphores`,
      attachedBy: procs.flatMap((p) => ((p.records['@ckpt/plugin-sysv-ipc'] as { attachments?: Array<{ shmid: number; start: number; perms: string }> } | undefined)?.attachments ?? [])
        .filter((a) => o.kind === 'shm' && a.shmid === o.id).map((a) => `${p.pid}@0x${a.start.toString(16)}${a.perms[1] === 'w' ? '' : ' ro'}`)),
    })),
  };
}

function summary(p: ProcessRecord) {
  const ids = p.records['@ckpt/plugin-pids'] as PidsLike | undefined;
  const mem = p.records['@ckpt/plugin-memory'] as MemoryLike | undefined;
  const files = p.records['@ckpt/plugin-files'] as FilesLike | undefined;
  return {
    pid: p.pid,
    ppid: ids?.ppid, pgid: ids?.pgid, sid: ids?.sid, comm: ids?.comm, cmdline: ids?.cmdline,
    vmas: mem?.vmas.map((v) => ({ start: v.start, end: v.end, perms: v.perms, kind: v.kind, name: v.name, savedBytes: v.runs.reduce((a, r) => a + r[1], 0) })),
    pagesBytes: mem?.pagesBytes,
    fds: files?.fds.map((f) => ({ fd: f.fd, kind: f.kind, plugin: f.plugin, path: f.data.path, pos: f.data.pos, sameAs: f.data.sameAs })),
    threads: (p.records['@ckpt/plugin-registers'] as RegsLike | undefined)?.threads.map((t) => ({ tid: t.tid, comm: t.comm })),
    records: Object.keys(p.records),
  };
}

function describeProcess(p: ProcessRecord): string[] {
  const out: string[] = [];
  const ids = p.records['@ckpt/plugin-pids'] as PidsLike | undefined;
  const mem = p.records['@ckpt/plugin-memory'] as MemoryLike | undefined;
  const files = p.records['@ckpt/plugin-files'] as FilesLike | undefined;
  const regs = p.records['@ckpt/plugin-registers'] as RegsLike | undefined;
  out.push(`process ${p.pid}${ids ? ` (${ids.comm}) ppid ${ids.ppid} pgid ${ids.pgid} sid ${ids.sid}` : ''}`);
  if (ids) out.push(`  command: ${ids.cmdline.join(' ')}`);
  if (mem) {
    out.push(`  memory: ${mem.vmas.length} areas, ${mb(mem.pagesBytes)} of pages saved; exe ${mem.exe}`);
    for (const v of mem.vmas) {
      const saved = v.runs.reduce((a, r) => a + r[1], 0);
      out.push(`    ${hex(v.start)}-${hex(v.end)} ${v.perms} ${v.kind.padEnd(12)} ${(saved ? mb(saved) : '').padStart(9)}  ${v.name}`);
    }
  }
  if (files) {
    out.push(`  cwd ${files.cwd}, umask ${files.umask.toString(8).padStart(4, '0')}, ${files.fds.length} fds:`);
    for (const f of files.fds) {
      const d = f.data;
      const what = d.sameAs !== undefined ? `same open file as fd ${d.sameAs}` : d.path ?? (d.pipe ? `pipe:[${d.pipe.id}]` : '');
      const queued = d.pipe?.data ? `, ${Buffer.from(d.pipe.data, 'base64').length} bytes queued` : '';
      out.push(`    fd ${String(f.fd).padEnd(3)} ${f.kind.padEnd(9)} ${what}${d.pos ? ` @${d.pos}` : ''}${queued}${f.cloexec ? ' (cloexec)' : ''}`);
    }
  }
  if (regs) {
    out.push(`  signals: handlers for ${regs.sigactions.filter((a) => BigInt(a.handler) > 1n).map((a) => sigName(a.sig)).join(' ') || 'none'}; ` +
      `ignored ${regs.sigactions.filter((a) => BigInt(a.handler) === 1n).map((a) => sigName(a.sig)).join(' ') || 'none'}`);
    out.push(`  threads: ${regs.threads.length} (xstate ${regs.xstateSize} bytes each)`);
    for (const t of regs.threads) {
      const regsBuf = Buffer.from(t.gpr, 'base64');
      const orig = regsBuf.readBigInt64LE(120);
      const blocked = BigInt(t.sigmask);
      const names = [];
      for (let s = 1; s <= 64; s++) if (blocked & (1n << BigInt(s - 1))) names.push(sigName(s));
      out.push(`    tid ${t.tid} (${t.comm}) rip 0x${regsBuf.readBigUInt64LE(128).toString(16)}${orig >= 0n ? `, in syscall ${orig}` : ''}; blocked ${names.join(' ') || 'none'}`);
    }
  }
  return out;
}
