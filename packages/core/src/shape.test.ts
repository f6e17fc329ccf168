// Unit tests of `s`, core's builder of record schemas: what it accepts and refuses is what the same
// zod schema does (the built-in plugins' records moved from zod to it), checked side by side here
// on the same inputs, and the issue core reports names the path of the first bad value.
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { lazySchema, validate } from './schema.js';
import { s, type Infer } from './shape.js';

/** The same record schema in both builders. */
const ours = s.strictObject({
  pid: s.number().int().positive(),
  nice: s.number().int().min(-20).max(19),
  name: s.string().regex(/^[a-z]+$/),
  note: s.string().optional(),
  uid: s.array(s.number().int().nonnegative()).length(4),
  when: s.number().nonnegative().refine(Number.isInteger, { message: 'expected an integer' }),
  kind: s.enum(['a', 'b']),
  family: s.literal([4, 6]),
  mode: s.union([s.literal(false), s.literal('now')]),
  pair: s.tuple([s.number().int(), s.boolean()]),
  loginuid: s.number().int().nullable(),
  list: s.array(s.string()).default([]),
  inner: s.strictObject({ x: s.number() }).optional(),
});
const theirs = z.strictObject({
  pid: z.number().int().positive(),
  nice: z.number().int().min(-20).max(19),
  name: z.string().regex(/^[a-z]+$/),
  note: z.string().optional(),
  uid: z.array(z.number().int().nonnegative()).length(4),
  when: z.number().nonnegative().refine(Number.isInteger, { message: 'expected an integer' }),
  kind: z.enum(['a', 'b']),
  family: z.literal([4, 6]),
  mode: z.union([z.literal(false), z.literal('now')]),
  pair: z.tuple([z.number().int(), z.boolean()]),
  loginuid: z.number().int().nullable(),
  list: z.array(z.string()).default([]),
  inner: z.strictObject({ x: z.number() }).optional(),
});

const good = {
  pid: 7,
  nice: -3,
  name: 'abc',
  uid: [0, 1, 2, 3],
  when: 2 ** 60,
  kind: 'b',
  family: 6,
  mode: 'now',
  pair: [-1, true],
  loginuid: null,
};

// Each bad value, as a change of the good record.
const bad: Array<[string, Record<string, unknown>]> = [
  ['pid 0', { pid: 0 }],
  ['pid fractional', { pid: 1.5 }],
  ['pid a string', { pid: '7' }],
  ['pid beyond 2^53', { pid: 2 ** 60 }],
  ['pid NaN', { pid: Number.NaN }],
  ['pid missing', { pid: undefined }],
  ['nice below', { nice: -21 }],
  ['nice above', { nice: 20 }],
  ['name against its pattern', { name: 'ABC' }],
  ['note not a string', { note: 3 }],
  ['uid of three', { uid: [0, 1, 2] }],
  ['uid with a negative', { uid: [0, 1, 2, -3] }],
  ['uid not an array', { uid: 'x' }],
  ['when fractional', { when: 0.5 }],
  ['when negative', { when: -1 }],
  ['kind outside the enum', { kind: 'c' }],
  ['family not a listed literal', { family: 5 }],
  ['mode in no option of the union', { mode: true }],
  ['pair too long', { pair: [1, true, 3] }],
  ['pair too short', { pair: [1] }],
  ['pair with a wrong item', { pair: [1, 'x'] }],
  ['loginuid undefined (nullable, not optional)', { loginuid: undefined }],
  ['list of numbers', { list: [1] }],
  ['an unknown key', { extra: 1 }],
  ['an unknown key inside', { inner: { x: 1, y: 2 } }],
  ['inner an array', { inner: [] }],
];

describe('s (record schemas)', () => {
  it('accepts and refuses what the same zod schema does, and gives the same value out', () => {
    const mine = structuredClone(good);
    const a = ours.safeParse(mine);
    const b = theirs.safeParse(structuredClone(good));
    expect(a.success).toBe(true);
    expect(b.success).toBe(true);
    if (a.success && b.success) {
      expect(a.data).toEqual(b.data);
      // Checked in place: the value in, its defaults filled in, absent optional keys left out.
      expect(a.data).toBe(mine);
      expect(a.data.list).toEqual([]);
      expect('note' in a.data).toBe(false);
    }
    for (const [what, change] of bad) {
      expect(ours.safeParse({ ...structuredClone(good), ...change }).success, what).toBe(false);
      expect(theirs.safeParse({ ...structuredClone(good), ...change }).success, `zod: ${what}`).toBe(false);
    }
  });

  it('a default is a copy: what a record gets is its own', () => {
    const a = ours.parse(structuredClone(good));
    a.list.push('x');
    expect(ours.parse(structuredClone(good)).list).toEqual([]);
  });

  it('core reports the first issue with its path, through the standard interface', () => {
    const r = validate(ours, { ...good, uid: [0, 1, 'x', 3] });
    expect(r).toMatchObject({ ok: false, path: 'uid[2]' });
    const inner = validate(ours, { ...good, inner: { x: 'y' } });
    expect(inner).toMatchObject({ ok: false, path: 'inner.x' });
    expect(validate(ours, { ...good, extra: 1 })).toMatchObject({ ok: false, message: expect.stringMatching(/extra/) });
    expect(() => ours.parse({ ...good, pid: -1 })).toThrow(/pid/);
  });

  it('works through lazySchema, its parts taken from the proxies once', () => {
    const uint = lazySchema(() => s.number().int().nonnegative());
    const rec = lazySchema(() => s.strictObject({ a: uint, b: s.array(uint), c: uint.optional() }));
    expect(validate(rec, { a: 1, b: [2, 3] })).toEqual({ ok: true, value: { a: 1, b: [2, 3] } });
    expect(validate(rec, { a: 1, b: [2, -3] })).toMatchObject({ ok: false, path: 'b[1]' });
    expect(validate(rec, { a: 1, b: [], c: 1.5 })).toMatchObject({ ok: false, path: 'c' });
  });

  it('infers the types zod infers', () => {
    type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
    const same: Same<Infer<typeof ours>, z.infer<typeof theirs>> = true;
    expect(same).toBe(true);
  });
});
