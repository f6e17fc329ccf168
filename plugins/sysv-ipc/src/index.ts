/**
 * @ckpt/plugin-sysv-ipc — SysV shared memory, message queues and semaphore sets.
 *
 * Which objects: for an application (its own IPC namespace, as `ckpt run` makes), every object of
 * that namespace; for processes in the host's namespace, the shared memory segments they have
 * attached (message queues and semaphores cannot be traced to a process from outside it).
 * Saved: id, key, mode, owner, size and contents (read through a read-only attach), every
 * queued message with its type in order (msgrcv MSG_COPY: nothing is consumed), queue limit,
 * semaphore values; per process, every attachment (address, read-only or not) and whether a
 * segment was already removed (IPC_RMID) while attached.
 *
 * Restore: objects are recreated with the same ids (the *_next_id sysctls) and keys. In a fresh
 * namespace nothing can collide. On the host, a key or id already in use stops the restore before
 * anything is created, naming the object — unless --ipc-remap, which lets the kernel choose new
 * ids (attachments follow; ids the program kept in memory do not) and says so. Every attachment is
 * made again at its address (remote shmat), then removed segments are removed again.
 * SEM_UNDO adjustments are not saved (the kernel does not expose them): a process that dies after
 * the restore does not undo operations it made before the dump.
 */
import { closeSync, openSync, readSync, readlinkSync } from 'node:fs';
import { z } from 'zod';
import {
  CkptError,
  createSessionState,
  definePlugin,
  logger,
  validate,
  type ImageReader,
  type ProcessRecord,
  type DumpSession,
  type PluginContext,
  type ProcessDump,
  type ProcessRestore,
  type RestoreSession,
  lazyOptions,
} from '@ckpt/core';
import { native, SYS, SHM_RDONLY, SHM_EXEC, type IpcObject } from '@ckpt/native';
import { sysvProcessRecord, sysvRecord, type Attachment, type SavedObject, type SysvProcessRecord, type SysvRecord } from './record.js';

export {
  attachment,
  savedObject,
  sysvProcessRecord,
  sysvRecord,
  type Attachment,
  type SavedObject,
  type SysvProcessRecord,
  type SysvRecord,
} from './record.js';

export const NAME = '@ckpt/plugin-sysv-ipc';
const log = logger('plugin:sysv-ipc');
const RECORD = 'sysvipc.json';
const BLOB = 'sysvipc.img';

/** The process's attached SysV segments, from the areas core read for the memory stage. */
function attachmentsOf(proc: ProcessDump): Attachment[] {
  return proc
    .vmas()
    .filter((v) => v.name.startsWith('/SYSV'))
    .map((v) => ({ start: v.start, end: v.end, shmid: v.inode, perms: v.perms }));
}

async function dumpProcess(proc: ProcessDump): Promise<void> {
  proc.put(NAME, { attachments: attachmentsOf(proc) } satisfies SysvProcessRecord);
}

async function afterDump(session: DumpSession): Promise<void> {
  const root = session.processes[0]?.procPid;
  if (root === undefined) return;
  const own = readlinkSync('/proc/self/ns/ipc');
  const rootNs = readlinkSync(`/proc/${root}/ns/ipc`);
  const namespace = rootNs !== own;
  for (const p of session.processes) {
    if (readlinkSync(`/proc/${p.procPid}/ns/ipc`) !== rootNs) {
      throw new CkptError('ERR_CKPT_UNSUPPORTED', `pid ${p.pid} is in another IPC namespace than ${root}; one IPC namespace per image`);
    }
  }
  const attached = new Set(session.processes.flatMap((p) => (p.get<SysvProcessRecord>(NAME)?.attachments ?? []).map((a) => a.shmid)));
  let objects = native.ipc.ipcSnapshot(namespace ? root : 0, true);
  if (!namespace) objects = objects.filter((o) => o.kind === 'shm' && attached.has(o.id));
  if (!objects.length) return;
  const blob = session.image.openBlob(BLOB);
  let offset = 0;
  const put = (b: Buffer) => {
    blob.write(b);
    const at = offset;
    offset += b.length;
    return { offset: at, length: b.length };
  };
  const saved: SavedObject[] = objects.map((o) => {
    const { bytes, messages, nattch: _nattch, ...meta } = o;
    return {
      ...meta,
      ...(bytes ? { bytes: put(bytes) } : {}),
      ...(messages ? { messages: messages.map((m) => ({ type: m.type, ...put(m.data) })) } : {}),
    };
  });
  session.image.closeBlob(blob);
  session.image.writeJson(RECORD, { namespace, objects: saved } satisfies SysvRecord);
}

interface RestoreState {
  record: SysvRecord;
  /** old id -> new id, per kind. */
  ids: Map<string, number>;
  /** Where the objects live: the root stub's IPC namespace, or the host's (0). */
  nsPid: number;
}
const states = createSessionState('sysv-ipc:restore', (_s: RestoreSession) => ({
  state: undefined as RestoreState | undefined,
  /** Segments the dump left on the host, taken over by this restore. */
  adopted: [] as Array<[string, number]>,
}));

/** Options: `remap` (restore --ipc-remap): objects whose ids are taken on the host get new ids. */
export const sysvIpcOptions = lazyOptions(() => z.strictObject({ remap: z.boolean().optional() }));
export type SysvIpcOptions = z.infer<typeof sysvIpcOptions>;

/** sysvipc.json of the image, validated (undefined when the image has none). */
export function readSysvRecord(image: Pick<ImageReader, 'dir' | 'manifest' | 'readJson'>): SysvRecord | undefined {
  if (!image.manifest.files[RECORD]) return undefined;
  const v = validate(sysvRecord, image.readJson<unknown>(RECORD));
  if (!v.ok) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `image ${image.dir}: ${RECORD} is malformed${v.path ? ` at ${v.path}` : ''}: ${v.message}`);
  return v.value;
}

function load(session: RestoreSession): SysvRecord | undefined {
  return readSysvRecord(session.image);
}

function describe(o: { kind: string; id: number; key: number }): string {
  const what = o.kind === 'shm' ? 'shared memory segment' : o.kind === 'msg' ? 'message queue' : 'semaphore set';
  return `${what} id ${o.id}${o.key ? ` key 0x${(o.key >>> 0).toString(16)}` : ''}`;
}

/**
 * The segment a dump that killed its processes left on the host (nobody attaches it any more), and
 * that is provably the one dumped: same kind, id, key, creator, size and last change. The restore
 * takes its place: it is removed and made again with the image's contents.
 */
function leftBehind(o: SavedObject, h: IpcObject): boolean {
  return (
    o.kind === 'shm' &&
    h.kind === 'shm' &&
    o.ctime !== undefined &&
    h.id === o.id &&
    h.key === o.key &&
    h.cuid === o.cuid &&
    h.cgid === o.cgid &&
    h.size === o.size &&
    h.ctime === o.ctime &&
    h.nattch === 0
  );
}

/** On the host: every key and id must be free (or hold the very segment dumped), checked before anything is created. */
async function beforeRestore(session: RestoreSession, opts: SysvIpcOptions): Promise<void> {
  const record = load(session);
  if (!record) return;
  session.image.verifyBlob(BLOB);
  if (session.newIpcNamespace) return;
  {
    const host = native.ipc.ipcSnapshot(0, false);
    const adopted: Array<[string, number]> = [];
    for (const o of record.objects) {
      const same = host.find((h) => leftBehind(o, h));
      if (same) {
        adopted.push([same.kind, same.id]);
        continue;
      }
      const sameId = host.find((h) => h.kind === o.kind && h.id === o.id);
      const sameKey = o.key !== 0 ? host.find((h) => h.kind === o.kind && h.key === o.key) : undefined;
      if (opts.remap) {
        if (sameKey) {
          throw new CkptError(
            'ERR_CKPT_PID_TAKEN',
            `cannot restore ${describe(o)}: key 0x${(o.key >>> 0).toString(16)} is in use on this host by ${describe(sameKey)}`,
            { hint: 'remove it (ipcrm) or restore the application in its own namespace (ckpt run)' },
          );
        }
      } else if (sameId || sameKey) {
        const by = (sameKey ?? sameId)!;
        throw new CkptError('ERR_CKPT_PID_TAKEN', `cannot restore ${describe(o)}: its ${sameKey ? 'key' : 'id'} is in use on this host by ${describe(by)}`, {
          hint: `remove that object (ipcrm -${o.kind === 'shm' ? 'm' : o.kind === 'msg' ? 'q' : 's'} ${by.id}), or restore with --ipc-remap to give the objects new ids`,
        });
      }
    }
    states.of(session).adopted = adopted;
  }
}

function readBlob(_session: RestoreSession, fd: number, r: { offset: number; length: number }): Buffer {
  const b = Buffer.alloc(r.length);
  let done = 0;
  while (done < r.length) done += readSync(fd, b, done, r.length - done, r.offset + done);
  return b;
}

/** Once every process exists (in its new IPC namespace if any): create the objects. */
async function processesCreated(session: RestoreSession, opts: SysvIpcOptions): Promise<void> {
  const record = load(session);
  if (!record) return;
  const nsPid = session.newIpcNamespace ? session.processes[0].stub!.pid : 0;
  const fd = openSync(session.image.path(BLOB), 'r');
  let objects: IpcObject[];
  try {
    objects = record.objects.map((o) => ({
      ...o,
      bytes: o.bytes ? readBlob(session, fd, o.bytes) : undefined,
      messages: o.messages?.map((m) => ({ type: m.type, data: readBlob(session, fd, m) })),
    }));
  } finally {
    closeSync(fd);
  }
  const remap = !!opts.remap && !session.newIpcNamespace;
  const adopted = states.of(session).adopted;
  if (adopted.length) {
    native.ipc.ipcRemove(0, adopted);
    log('took over %d segment(s) the dump left on the host: %s', adopted.length, adopted.map(([, id]) => id).join(', '));
  }
  let ids: number[];
  try {
    ids = native.ipc.ipcCreate(nsPid, objects, remap);
  } catch (e) {
    const created = ((e as { created?: number[] }).created ?? []).map((id, i) => [objects[i].kind, id] as [string, number]);
    try {
      native.ipc.ipcRemove(nsPid, created);
    } catch {
      /* best effort */
    }
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot recreate SysV IPC objects: ${(e as Error).message}`, { cause: e });
  }
  const state: RestoreState = { record, ids: new Map(), nsPid };
  objects.forEach((o, i) => state.ids.set(`${o.kind}:${o.id}`, ids[i]));
  states.of(session).state = state;
  session.onRollback(() =>
    native.ipc.ipcRemove(
      nsPid,
      objects.map((o, i) => [o.kind, ids[i]]),
    ),
  );
  const moved = objects.flatMap((o, i) => (ids[i] !== o.id ? [`${describe(o)} -> id ${ids[i]}`] : []));
  if (moved.length) process.stderr.write(`ckpt: --ipc-remap: ${moved.join('; ')}\n`);
}

async function restoreProcess(proc: ProcessRestore): Promise<void> {
  const rec = proc.get<SysvProcessRecord>(NAME);
  const stub = proc.stub;
  const state = states.of(proc.session).state;
  if (!rec || !stub || !rec.attachments.length) return;
  for (const a of rec.attachments) {
    const id = state?.ids.get(`shm:${a.shmid}`);
    if (id === undefined) throw new CkptError('ERR_CKPT_IMAGE_CORRUPT', `pid ${proc.pid} attaches shared memory id ${a.shmid}, which the image does not hold`);
    const flags = (a.perms[1] === 'w' ? 0 : SHM_RDONLY) | (a.perms[2] === 'x' ? SHM_EXEC : 0);
    const at = Number(stub.syscall(SYS.shmat, id, a.start, flags));
    if (at !== a.start)
      throw new CkptError(
        'ERR_CKPT_RESTORE_FAILED',
        `pid ${proc.pid}: shared memory ${a.shmid} attached at 0x${at.toString(16)}, not 0x${a.start.toString(16)}`,
      );
  }
}

/** Segments removed while attached are removed again, once everyone is attached. */
async function afterRestore(session: RestoreSession): Promise<void> {
  const state = states.of(session).state;
  if (!state) return;
  const gone = state.record.objects.filter((o) => o.kind === 'shm' && o.destroyed).map((o) => ['shm', state.ids.get(`shm:${o.id}`)!] as [string, number]);
  if (gone.length) native.ipc.ipcRemove(state.nsPid, gone);
  log('restored %d objects', state.record.objects.length);
}

/** `ckpt show`: the image's SysV IPC objects and who attaches each segment. */
function showIpc(image: ImageReader, procs: readonly ProcessRecord[]) {
  const rec = readSysvRecord(image);
  if (!rec) return undefined;
  const json = {
    namespace: rec.namespace,
    objects: rec.objects.map((o) => ({
      kind: o.kind,
      key: o.key,
      id: o.id,
      destroyed: !!o.destroyed,
      amount: o.kind === 'shm' ? `${o.size} bytes` : o.kind === 'msg' ? `${o.messages?.length ?? 0} messages` : `${o.values?.length ?? 0} semaphores`,
      attachedBy: procs.flatMap((p) =>
        ((p.records[NAME] as SysvProcessRecord | undefined)?.attachments ?? [])
          .filter((a) => o.kind === 'shm' && a.shmid === o.id)
          .map((a) => `${p.pid}@0x${a.start.toString(16)}${a.perms[1] === 'w' ? '' : ' ro'}`),
      ),
    })),
  };
  const lines = [
    `SysV IPC (${json.namespace ? "the application's own IPC namespace" : 'attached on the host'}):`,
    '  KIND  KEY         ID      SIZE/COUNT        ATTACHED BY',
    ...json.objects.map(
      (o) =>
        `  ${o.kind.padEnd(5)} ${('0x' + (o.key >>> 0).toString(16).padStart(8, '0')).padEnd(11)} ${String(o.id).padEnd(7)} ${o.amount.padEnd(17)} ${o.attachedBy.join(', ') || '-'}${o.destroyed ? ' (removed, still attached)' : ''}`,
    ),
  ];
  return { key: 'ipc', json, lines };
}

export const sysvIpcPlugin = definePlugin(() => ({
  name: NAME,
  version: '0.2.0',
  description: 'SysV shared memory (contents, attachments), message queues, semaphore sets',
  options: sysvIpcOptions,
  flags: [
    {
      command: 'restore' as const,
      flags: '--ipc-remap',
      description: 'SysV IPC objects whose ids are taken on the host get new ids (instead of failing)',
      option: 'remap',
    },
  ],
  record: { version: 1, schema: sysvProcessRecord },
  claims: { stateClasses: ['sysvipc' as const] },
  show: { image: showIpc },
  apply(hooks, ctx: PluginContext<SysvIpcOptions>) {
    hooks.sysvipc.dump.tapPromise(NAME, dumpProcess);
    hooks.session.afterDump.tapPromise(NAME, afterDump);
    hooks.session.beforeRestore.tapPromise(NAME, async (s) => beforeRestore(s, ctx.options(s) ?? {}));
    hooks.session.processesCreated.tapPromise(NAME, async (s) => processesCreated(s, ctx.options(s) ?? {}));
    hooks.sysvipc.restore.tapPromise(NAME, restoreProcess);
    hooks.session.beforeResume.tapPromise(NAME, afterRestore);
  },
}));

export default sysvIpcPlugin;
