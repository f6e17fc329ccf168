/**
 * AIO rings (io_setup). The ring is a mapping of the kernel's context: its header (id, nr, head,
 * tail, magic, features, header length) then `nr` io_event slots; its address is the context id
 * (aio_context_t), and mremap moves both.
 *
 * Dump: the ring is saved whole with the other pages; the header is checked to be one this code
 * knows. Completed events not yet reaped lie between head and tail and come back with it.
 * Requests still in flight (submitted, not completed) are not visible from user space: the kernel
 * completes ordinary file I/O inside io_submit, so only O_DIRECT, fsync and poll requests can be
 * in flight at a freeze.
 *
 * Restore: io_setup with the size that gives a ring of the same `nr`; the kernel's own tail (not
 * writable) is moved to the saved one by completing dummy writes to /dev/null (a full turn first
 * when the saved tail is below the head, so that the kernel's count of completed events covers
 * what the ring holds), the ring is moved to its old address (mremap over a placeholder), the
 * saved pages are written over it, and the header's id is put back to the new context's (the
 * kernel looks contexts up by it).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { CkptError, type ProcessRestore, type Tracee, type Vma } from '@ckpt/core';
import { native, SYS, AT_FDCWD, O_WRONLY, O_CLOEXEC } from '@ckpt/native';
import type { VmaRecord } from './record.js';

const AIO_RING_MAGIC = 0xa10a10a1;
const HEADER = 32;
const EVENT = 32;
const IOCB_SIZE = 64;
const IOCB_CMD_PWRITE = 1;
const EAGAIN = 11;
const MREMAP_MAYMOVE = 1;
const MREMAP_FIXED = 2;

interface RingHeader {
  id: number;
  nr: number;
  head: number;
  tail: number;
  magic: number;
  incompat: number;
  headerLength: number;
}

function parseHeader(b: Buffer): RingHeader {
  return {
    id: b.readUInt32LE(0),
    nr: b.readUInt32LE(4),
    head: b.readUInt32LE(8),
    tail: b.readUInt32LE(12),
    magic: b.readUInt32LE(16),
    incompat: b.readUInt32LE(24),
    headerLength: b.readUInt32LE(28),
  };
}

/** The ring's size, head and tail, read from the frozen process's memory (`pid`: a live task of it). */
export function aioRingOf(pid: number, v: Vma): NonNullable<VmaRecord['aio']> {
  const b = Buffer.alloc(HEADER);
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    readSync(fd, b, 0, HEADER, v.start);
  } finally {
    closeSync(fd);
  }
  const h = parseHeader(b);
  const slots = Math.floor((v.end - v.start - HEADER) / EVENT);
  if (h.magic !== AIO_RING_MAGIC || h.incompat !== 0 || h.headerLength !== HEADER || h.nr !== slots || h.head >= h.nr || h.tail >= h.nr) {
    throw new CkptError(
      'ERR_CKPT_UNSUPPORTED',
      `cannot checkpoint pid ${pid}: its AIO ring at 0x${v.start.toString(16)} has a header ckpt does not know (magic 0x${h.magic.toString(16)}, incompatible features ${h.incompat}, header ${h.headerLength} bytes, ${h.nr} slots for ${slots}, head ${h.head}, tail ${h.tail})`,
    );
  }
  return { nr: h.nr, head: h.head, tail: h.tail };
}

function readHeader(stub: Tracee, at: number): RingHeader {
  return parseHeader(stub.read(at, HEADER));
}

/**
 * Makes the ring of `v` again at its old address (a placeholder is mapped there), its kernel tail
 * where it was. Returns the new context's id, to put in the header once the pages are written.
 */
export function makeAioRing(proc: ProcessRestore, stub: Tracee, v: VmaRecord): number {
  const { nr, head, tail } = v.aio!;
  const where = `pid ${proc.pid}: its AIO ring at 0x${v.start.toString(16)} (${nr} slots)`;
  const ctxAt = stub.put(Buffer.alloc(8), 0);
  const r = stub.syscallRaw(SYS.io_setup, Math.floor((nr - 2) / 2), ctxAt);
  if (r < 0n) {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: io_setup failed (errno ${-r})`, {
      hint: -r === BigInt(EAGAIN) ? 'the host-wide limit on AIO events is reached (/proc/sys/fs/aio-max-nr)' : undefined,
    });
  }
  const ctx = Number(stub.read(ctxAt, 8).readBigUInt64LE(0));
  const made = readHeader(stub, ctx);
  if (made.nr !== nr) {
    stub.syscall(SYS.io_destroy, ctx);
    throw new CkptError('ERR_CKPT_IMAGE_INCOMPATIBLE', `${where}: this kernel makes a ring of ${made.nr} slots for that request`, {
      hint: 'restore on a machine with as many CPUs or fewer (the kernel sizes rings by CPU count)',
    });
  }
  advanceTail(stub, ctx, nr, head, tail, where);
  const now = readHeader(stub, ctx);
  if (now.tail !== tail) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: the kernel's tail is ${now.tail}, not ${tail}`);
  const len = v.end - v.start;
  const moved = stub.syscallRaw(SYS.mremap, ctx, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, v.start);
  if (moved !== BigInt(v.start)) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: cannot move the new ring there (mremap: ${moved})`);
  return made.id;
}

/**
 * Completes `tail` dummy writes (a full turn more when the tail is below the head) so that the
 * kernel's tail and its count of completed events match the saved ring. The ring holds at most
 * nr - 1 unreaped events: the head follows the writes until it reaches the saved one.
 */
function advanceTail(stub: Tracee, ctx: number, nr: number, head: number, tail: number, where: string): void {
  const count = tail >= head ? tail : nr + tail;
  if (!count) return;
  const nul = Number(stub.syscall(SYS.openat, AT_FDCWD, stub.putString('/dev/null', 0), O_WRONLY | O_CLOEXEC, 0));
  try {
    const iocb = Buffer.alloc(IOCB_SIZE);
    iocb.writeUInt16LE(IOCB_CMD_PWRITE, 16);
    iocb.writeUInt32LE(nul, 20);
    iocb.writeBigUInt64LE(BigInt(stub.scratch()), 24); // one byte of the scratch page
    iocb.writeBigUInt64LE(1n, 32);
    const iocbAt = stub.put(iocb, 64);
    const batch = Math.min(nr - 1, 1024);
    const ptrs = Buffer.alloc(batch * 8);
    for (let i = 0; i < batch; i++) ptrs.writeBigUInt64LE(BigInt(iocbAt), i * 8);
    const ptrsAt = stub.put(ptrs, 128);
    const headBuf = Buffer.alloc(4);
    let done = 0;
    let stalls = 0;
    while (done < count) {
      const n = stub.syscallRaw(SYS.io_submit, ctx, Math.min(batch, count - done), ptrsAt);
      if (n < 0n && n !== -BigInt(EAGAIN)) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: io_submit failed (errno ${-n})`);
      if (n <= 0n && ++stalls > 8) throw new CkptError('ERR_CKPT_RESTORE_FAILED', `${where}: the kernel takes no more requests at ${done} of ${count}`);
      done += Math.max(0, Number(n));
      // Reaping is writing the head: the kernel reads it back when it counts free slots.
      headBuf.writeUInt32LE(done < head ? done : head, 0);
      native.mem.writeMem(stub.pid, ctx + 8, headBuf);
    }
  } finally {
    stub.syscall(SYS.close, nul);
  }
}

/** Once the saved pages are written over the ring: its header names the new context again. */
export function putAioId(stub: Tracee, v: VmaRecord, id: number): void {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(id, 0);
  native.mem.writeMem(stub.pid, v.start, b);
}
