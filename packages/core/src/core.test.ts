// Unit tests of core's pure parts: option and record validation, the fd-claim owner stamp, typed
// session state, path relocation, fd kinds. No process is touched: images are written by hand
// with the real ImageWriter into temporary directories, and restore must refuse them before it
// creates anything.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Stats } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Ckpt } from './engine.js';
import { CkptError } from './errors.js';
import { ImageWriter } from './image.js';
import { createSessionState, SessionStateStore } from './state.js';
import { relocatePath } from './paths.js';
import { fdKind, fileId } from './fdtable.js';
import { issuePath, lazyOptions, validate } from './schema.js';
import { createHooks } from './hooks.js';
import { returnFrame } from './guard.js';
import { parseStatus, statusFields } from './proc.js';
import { REG } from '@ckpt/native';
import { instrumentHooks, type CkptPlugin } from './plugin.js';
import type { FdDumpRequest, ProcessDump } from './context.js';

// Images are signed: with a key of this file's own, never the machine's.
let keyDir: string;
const savedKeyDir = process.env.CKPT_KEY_DIR;
beforeAll(() => {
  keyDir = mkdtempSync(join(tmpdir(), 'ckpt-core-keys-'));
  process.env.CKPT_KEY_DIR = join(keyDir, 'keys');
});
afterAll(() => {
  if (savedKeyDir === undefined) delete process.env.CKPT_KEY_DIR;
  else process.env.CKPT_KEY_DIR = savedKeyDir;
  rmSync(keyDir, { recursive: true, force: true });
});

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ckpt-core-unit-'));
  dirs.push(d);
  return d;
}

const plugin = (name: string, extra: Partial<CkptPlugin> = {}): CkptPlugin => ({ name, version: '1.0.0', apply() {}, ...extra }) as CkptPlugin;

describe('plugin options', () => {
  const opts = z.strictObject({ close: z.boolean().optional(), rules: z.array(z.strictObject({ path: z.string() })).optional() });

  it('valid options reach the plugin through ctx.options', () => {
    let seen: unknown;
    const p = plugin('p', { options: opts, apply: (_h, ctx) => void (seen = ctx) });
    new Ckpt([p], { options: { p: { close: true } } });
    expect((seen as { name: string }).name).toBe('p');
  });

  it('a wrong type names the plugin and the key', () => {
    expect(() => new Ckpt([plugin('p', { options: opts })], { options: { p: { close: 'yes' } } })).toThrow(/option "close" of plugin p/);
  });

  it('a nested error names the full path', () => {
    expect(() => new Ckpt([plugin('p', { options: opts })], { options: { p: { rules: [{ path: 1 }] } } })).toThrow(/"rules\[0\]\.path"/);
  });

  it('an unknown key is an error', () => {
    expect(() => new Ckpt([plugin('p', { options: opts })], { options: { p: { clsoe: true } } })).toThrow(CkptError);
  });

  it('options for a plugin that is not loaded, or that takes none, are errors', () => {
    expect(() => new Ckpt([plugin('p')], { options: { q: {} } })).toThrow(/plugin q, which is not loaded/);
    expect(() => new Ckpt([plugin('p')], { options: { p: { x: 1 } } })).toThrow(/takes no options/);
  });

  it('a plugin listed twice is an error', () => {
    expect(() => new Ckpt([plugin('p'), plugin('p')])).toThrow(/listed twice/);
  });
});

describe('hooks', () => {
  it('an fd claim is stamped with the name of the tap that made it (its owner)', async () => {
    const hooks = createHooks();
    instrumentHooks(hooks);
    hooks.fds.dump.tapPromise('first', async () => undefined);
    hooks.fds.dump.tapPromise('second', async () => ({ kind: 'thing', data: 1 }));
    const claim = await hooks.fds.dump.promise({} as FdDumpRequest, {} as ProcessDump);
    expect(claim).toEqual({ kind: 'thing', data: 1, owner: 'second' });
  });

  it('an fds.dump tap whose when() is false for an fd is not called for it, with series() or tapable running the taps', async () => {
    for (const viaTapable of [false, true]) {
      const hooks = createHooks();
      instrumentHooks(hooks);
      // A call interceptor makes tapable compile the hook itself (series() steps aside).
      if (viaTapable) hooks.fds.dump.intercept({ call: () => undefined });
      const called: string[] = [];
      hooks.fds.dump.tapPromise({ name: 'sockets', when: (req) => req.kind === 'socket' }, async (req) => {
        called.push(`sockets ${req.fd}`);
        return { kind: 'socket', data: req.fd };
      });
      hooks.fds.dump.tapPromise('any', async (req) => {
        called.push(`any ${req.fd}`);
        return { kind: 'other', data: req.fd };
      });
      const file = await hooks.fds.dump.promise({ fd: 3, kind: 'file' } as FdDumpRequest, {} as ProcessDump);
      const sock = await hooks.fds.dump.promise({ fd: 4, kind: 'socket' } as FdDumpRequest, {} as ProcessDump);
      expect(file).toEqual({ kind: 'other', data: 3, owner: 'any' });
      expect(sock).toEqual({ kind: 'socket', data: 4, owner: 'sockets' });
      expect(called).toEqual(['any 3', 'sockets 4']);
    }
  });

  it('an error in a tap names the plugin and the hook', async () => {
    const hooks = createHooks();
    instrumentHooks(hooks);
    hooks.fds.restore.for('owner').tapPromise('owner', async () => {
      throw new Error('boom');
    });
    await expect(hooks.fds.restore.get('owner')!.promise({} as never, {} as never)).rejects.toThrow(/plugin owner failed in hook fds\.restore\[owner\]: boom/);
  });

  it('promise() runs sync, async and promise taps in stage order, as tapable does, and tapable still runs a call interceptor', async () => {
    const hooks = createHooks();
    const seen: string[] = [];
    const hook = hooks.session.beforeDump;
    hook.tapPromise({ name: 'late', stage: 10 }, async (s) => void seen.push(`late ${String(s)}`));
    hook.tap('sync', (...a) => void seen.push(`sync ${a.map(String).join(',')}`));
    hook.tapAsync('async', (s, done) =>
      setTimeout(() => {
        seen.push(`async ${String(s)}`);
        done();
      }, 1),
    );
    // An argument beyond the hook's own is not passed on.
    await (hook.promise as (...a: unknown[]) => Promise<void>)('a', 'extra');
    expect(seen).toEqual(['sync a', 'async a', 'late a']);
    // A tap added after the first call is in the next one.
    hook.tap({ name: 'early', stage: -10 }, () => void seen.push('early'));
    seen.length = 0;
    await hook.promise('b' as never);
    expect(seen).toEqual(['early', 'sync b', 'async b', 'late b']);
    // Errors reject, whatever the kind of tap; a promise tap must return a promise.
    const failing = createHooks().session.frozen;
    failing.tapAsync('cb', (_s, done) => done(new Error('from callback')));
    await expect(failing.promise({} as never)).rejects.toThrow('from callback');
    const noPromise = createHooks().session.frozen;
    noPromise.tapPromise('bad', (() => 42) as never);
    await expect(noPromise.promise({} as never)).rejects.toThrow(/did not return promise/);
    // An interceptor that watches calls gets tapable's own compiled call.
    const calls: unknown[] = [];
    hook.intercept({ call: (s) => void calls.push(s) });
    seen.length = 0;
    await hook.promise('c' as never);
    expect(calls).toEqual(['c']);
    expect(seen).toEqual(['early', 'sync c', 'async c', 'late c']);
  });

  it('instrumented, a hook runs promise, async and sync taps alike, and a failing promise tap is named', async () => {
    const hooks = createHooks();
    instrumentHooks(hooks);
    const seen: string[] = [];
    const hook = hooks.session.afterDump;
    hook.tapPromise('p', async (s) => void seen.push(`p ${String(s)}`));
    hook.tapAsync('a', (s, done) =>
      setTimeout(() => {
        seen.push(`a ${String(s)}`);
        done();
      }, 1),
    );
    hook.tap('s', (s) => void seen.push(`s ${String(s)}`));
    await hook.promise('x' as never);
    expect(seen).toEqual(['p x', 'a x', 's x']);
    const failing = createHooks();
    instrumentHooks(failing);
    failing.session.afterDump.tapAsync('cb', (_s, done) => done(new Error('from callback')));
    // A callback's error is passed on as it is.
    await expect(failing.session.afterDump.promise({} as never)).rejects.toThrow('from callback');
    const thrown = createHooks();
    instrumentHooks(thrown);
    thrown.session.afterDump.tapPromise('sync-throw', (() => {
      throw new Error('at once');
    }) as never);
    await expect(thrown.session.afterDump.promise({} as never)).rejects.toThrow(/plugin sync-throw failed in hook session\.afterDump: at once/);
  });

  it('a bail hook resolves with the first result that is not undefined, and runs no tap after it', async () => {
    const hooks = createHooks();
    const ran: string[] = [];
    const hook = hooks.fds.restore.for('x');
    hook.tap('none', () => void ran.push('none'));
    hook.tapPromise('seven', async () => {
      ran.push('seven');
      return 7;
    });
    hook.tap('never', () => {
      ran.push('never');
      return 8;
    });
    expect(await hook.promise({} as never, {} as never)).toBe(7);
    expect(ran).toEqual(['none', 'seven']);
    expect(
      await createHooks()
        .fds.restore.for('y')
        .promise({} as never, {} as never),
    ).toBeUndefined();
  });
});

describe('session state', () => {
  it('is made on first use, per session, and disposed newest first', () => {
    const order: string[] = [];
    const a = createSessionState('a', () => ({ n: 0 }), { dispose: () => order.push('a') });
    const b = createSessionState('b', () => [] as number[], { dispose: () => order.push('b') });
    const s1 = { state: new SessionStateStore() };
    const s2 = { state: new SessionStateStore() };
    expect(a.peek(s1)).toBeUndefined();
    a.of(s1).n++;
    a.of(s1).n++;
    b.of(s1).push(1);
    expect(a.of(s1).n).toBe(2);
    expect(a.of(s2).n).toBe(0);
    s1.state.dispose();
    expect(order).toEqual(['b', 'a']);
    expect(a.peek(s1)).toBeUndefined();
  });

  it('a failing dispose does not stop the others', () => {
    const seen: string[] = [];
    const a = createSessionState('a', () => 1, { dispose: () => seen.push('a') });
    const b = createSessionState('b', () => 1, {
      dispose: () => {
        throw new Error('x');
      },
    });
    const s = { state: new SessionStateStore() };
    a.of(s);
    b.of(s);
    s.state.dispose();
    expect(seen).toEqual(['a']);
  });
});

describe('relocatePath', () => {
  it('rewrites the first matching prefix, whole path components only', () => {
    const r: Array<[string, string]> = [
      ['/srv/data', '/mnt/data'],
      ['/srv', '/other'],
    ];
    expect(relocatePath('/srv/data/x.log', r)).toBe('/mnt/data/x.log');
    expect(relocatePath('/srv/data', r)).toBe('/mnt/data');
    expect(relocatePath('/srv/database', r)).toBe('/other/database');
    expect(relocatePath('/srvx/a', r)).toBe('/srvx/a');
    expect(relocatePath('/srv/a', [['/srv/', '/new/']])).toBe('/new/a');
    expect(relocatePath('/a', undefined)).toBe('/a');
  });
});

describe('fd kinds and ids', () => {
  const st = (k: string): Stats =>
    ({
      isFile: () => k === 'f',
      isDirectory: () => k === 'd',
      isFIFO: () => k === 'p',
      isCharacterDevice: () => k === 'c',
      isBlockDevice: () => k === 'b',
      isSocket: () => k === 's',
      isSymbolicLink: () => k === 'l',
    }) as Stats;
  it('tells every kind apart', () => {
    expect(fdKind('/x', st('f'))).toBe('file');
    expect(fdKind('/x', st('d'))).toBe('directory');
    expect(fdKind('pipe:[12]', st('p'))).toBe('pipe');
    expect(fdKind('/tmp/fifo', st('p'))).toBe('fifo');
    expect(fdKind('/dev/null', st('c'))).toBe('chr');
    expect(fdKind('/dev/sda', st('b'))).toBe('blk');
    expect(fdKind('socket:[1]', st('s'))).toBe('socket');
    expect(fdKind('/tmp/link', st('l'))).toBe('symlink');
    expect(fdKind('anon_inode:[eventfd]', st('?'))).toBe('anon');
    expect(fdKind('weird', st('?'))).toBe('unknown');
    expect(fileId(12, 3)).toBe('f12.3');
  });
});

describe('schema helpers', () => {
  it('issue paths read like code', () => {
    expect(issuePath({ message: '', path: ['a', 0, { key: 'b' }] })).toBe('a[0].b');
    const r = validate(z.object({ a: z.array(z.number()) }), { a: [1, 'x'] });
    expect(r).toMatchObject({ ok: false, path: 'a[1]' });
  });

  it('lazyOptions takes a plain empty object without building the schema; anything else builds it', () => {
    let builds = 0;
    const schema = lazyOptions(() => {
      builds++;
      return z.strictObject({ level: z.number().optional() });
    });
    expect(validate(schema, {})).toEqual({ ok: true, value: {} });
    expect(validate(schema, Object.create(null))).toEqual({ ok: true, value: {} });
    expect(builds).toBe(0);
    for (const v of [[], null, 'x', { level: 'x' }]) expect(validate(schema, v).ok, String(v)).toBe(false);
    expect(builds).toBe(1);
    expect(validate(schema, { level: 2 })).toEqual({ ok: true, value: { level: 2 } });
  });
});

describe('restore refuses malformed images before creating anything', () => {
  /** Writes a complete, validly summed image holding the given process records. */
  function image(procs: Array<Record<string, unknown>>, plugins: Record<string, { version?: string; record?: number }> = {}): string {
    const dir = join(tempDir(), 'img');
    const w = new ImageWriter(dir);
    for (const p of procs) w.writeJson(`proc-${p.pid}.json`, p);
    w.commit({
      tool: 'test',
      root: 1,
      plugins,
      meta: {},
      processes: procs.map((p) => ({ pid: p.pid as number, ppid: 0, comm: 'x', file: `proc-${p.pid}.json` })),
    });
    return dir;
  }
  const proc = (extra: Record<string, unknown> = {}) => ({ pid: 31000, ppid: 1, pgid: 31000, sid: 31000, comm: 'x', fds: [], records: {}, ...extra });
  const restore = (ckpt: Ckpt, dir: string) => ckpt.restore({ dir });

  it('an image with no process', async () => {
    await expect(restore(new Ckpt([]), image([]))).rejects.toThrow(/holds no process/);
  });

  it('a record of a plugin that is not loaded', async () => {
    await expect(restore(new Ckpt([]), image([proc({ records: { '@x/p': {} } })]))).rejects.toThrow(/written with plugin @x\/p, which is not loaded/);
  });

  it('a malformed fd table', async () => {
    await expect(restore(new Ckpt([]), image([proc({ fds: [{ fd: -1, owner: 'p', kind: 'k', cloexec: false, flags: 0 }] })]))).rejects.toThrow(
      /fds\[0\]\.fd is not an fd number/,
    );
    await expect(restore(new Ckpt([]), image([proc({ fds: 'no' })]))).rejects.toThrow(/fds is not a list/);
  });

  it("a record its plugin's schema rejects names the plugin, the pid and the field", async () => {
    const p = plugin('@x/mem', { record: { version: 1, schema: z.strictObject({ vmas: z.array(z.strictObject({ start: z.number() })) }) } });
    const dir = image([proc({ records: { '@x/mem': { vmas: 'nope' } } })], { '@x/mem': { record: 1 } });
    await expect(restore(new Ckpt([p]), dir)).rejects.toThrow(/the record of plugin @x\/mem for pid 31000 is malformed at vmas/);
  });

  it("fd data its owner's schema rejects", async () => {
    const p = plugin('@x/fd', { record: { version: 1, fd: z.strictObject({ path: z.string() }) } });
    const dir = image([proc({ fds: [{ fd: 3, owner: '@x/fd', kind: 'file', cloexec: false, flags: 0, data: { path: 7 } }] })]);
    await expect(restore(new Ckpt([p]), dir)).rejects.toThrow(/fd 3 of pid 31000 \(saved by @x\/fd\) is malformed at path/);
  });

  it('a required option may come from the run (a CLI flag); missing from both, the session names the flag', async () => {
    const p = plugin('@x/p', {
      options: z.strictObject({ log: z.string() }),
      flags: [{ command: 'restore', flags: '--p-log <file>', description: '', option: 'log' }],
    });
    const c = new Ckpt([p]);
    const dir = image([proc()]);
    const missing = await c.restore({ dir }).catch((e: CkptError) => e);
    expect(missing).toMatchObject({ message: expect.stringMatching(/option "log" of plugin @x\/p/), hint: 'ckpt restore takes it as --p-log <file>' });
    // Given by the run, the options pass; the restore then stops where it must (no plugin makes processes).
    await expect(c.restore({ dir, plugins: { '@x/p': { log: '/tmp/x' } } })).rejects.toThrow(/no plugin created a process/);
  });

  it('records newer than the loaded plugin reads', async () => {
    const p = plugin('@x/mem', { record: { version: 1 } });
    const dir = image([proc({ records: { '@x/mem': {} } })], { '@x/mem': { record: 2 } });
    await expect(restore(new Ckpt([p]), dir)).rejects.toThrow(/version 2.*reads up to version 1/);
  });
});

describe('services', () => {
  it("a session's services cannot be patched", async () => {
    const { createContainer, sessionServices } = await import('./services.js');
    const s = sessionServices(createContainer());
    expect(() => {
      (s.processes as unknown as { thawAll: () => void }).thawAll = () => {};
    }).toThrow(TypeError);
    expect(() => {
      (s as unknown as { processes: unknown }).processes = {};
    }).toThrow(TypeError);
  });
});

describe('return frames', () => {
  it('a frame holds the registers in sigcontext order, the mask, and the xstate with its software bytes and end magic', () => {
    const regs = Buffer.alloc(27 * 8);
    const order = ['r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rdi', 'rsi', 'rbp', 'rbx', 'rdx', 'rax', 'rcx', 'rsp', 'rip', 'eflags'] as const;
    order.forEach((r, i) => regs.writeBigUInt64LE(0x1000n + BigInt(i), REG[r]));
    regs.writeBigUInt64LE(0x33n, REG.cs);
    regs.writeBigUInt64LE(0x2bn, REG.ss);
    const xstate = Buffer.alloc(1088, 0xab);
    xstate.writeBigUInt64LE(0x7n, 464); // XCR0 as ptrace reports it
    const uc = 0x7f0000001040;
    const f = returnFrame(uc, regs, 0xfffen, xstate);
    const fp = Math.ceil((uc + 304 + 128) / 64) * 64;
    const x = fp - uc;
    expect(f.length).toBe(x + xstate.length + 4);
    expect(f.readBigUInt64LE(0)).toBe(7n); // FP_XSTATE | SIGCONTEXT_SS | STRICT_RESTORE_SS
    expect(f.readUInt32LE(24)).toBe(3); // stack_t left invalid
    order.forEach((_r, i) => expect(f.readBigUInt64LE(40 + i * 8)).toBe(0x1000n + BigInt(i)));
    expect(f.readUInt16LE(40 + 144)).toBe(0x33);
    expect(f.readUInt16LE(40 + 150)).toBe(0x2b);
    expect(f.readBigUInt64LE(40 + 184)).toBe(BigInt(fp));
    expect(f.readBigUInt64LE(296)).toBe(0xfffen);
    expect(f.subarray(x, x + 464).equals(xstate.subarray(0, 464))).toBe(true);
    expect(f.readUInt32LE(x + 464)).toBe(0x46505853);
    expect(f.readUInt32LE(x + 468)).toBe(xstate.length + 4);
    expect(f.readBigUInt64LE(x + 472)).toBe(0x7n);
    expect(f.readUInt32LE(x + 480)).toBe(xstate.length);
    expect(f.subarray(x + 484, x + 512).every((b) => b === 0)).toBe(true);
    expect(f.subarray(x + 512, x + xstate.length).equals(xstate.subarray(512))).toBe(true);
    expect(f.readUInt32LE(x + xstate.length)).toBe(0x46505845);
    expect(xstate.readBigUInt64LE(464)).toBe(0x7n); // the thread's own copy untouched
  });
});

describe('proc readers', () => {
  it('statusFields picks the same values as parseStatus, the first line and the last included, and leaves out a key the file lacks', () => {
    const text = readFileSync('/proc/self/status', 'utf8');
    const all = parseStatus(text);
    const keys = ['Name', 'Uid', 'Groups', 'CapAmb', 'Cpus_allowed', 'NoNewPrivs', 'Seccomp', 'nonvoluntary_ctxt_switches', 'NoSuchKey'];
    const picked = statusFields(text, keys);
    expect(picked).toEqual(Object.fromEntries(keys.filter((k) => k in all).map((k) => [k, all[k]])));
    expect('NoSuchKey' in picked).toBe(false);
    // A key is matched whole at a line's start: "Uid" is not found inside "PPid" or "Tgid".
    expect(statusFields('Tgid:\t5\nPid:\t6\n', ['Pid', 'gid'])).toEqual({ Pid: '6' });
  });
});
