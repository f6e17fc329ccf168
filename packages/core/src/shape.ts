/**
 * `s`: a small builder of standard schemas (StandardSchemaV1) for the records an image holds, with
 * the part of zod's API the built-in plugins use for them (`s.strictObject({...})`,
 * `s.number().int().nonnegative()`, `.optional()`, `.default()`, ...) and its inferred types
 * (`Infer<typeof schema>`, as `z.infer`).
 *
 * Why not zod, which plugins are shown for their options: a restore builds the record schemas of
 * every plugin in the image, and a zod schema costs tens of microseconds to build in a command's
 * cold code (each instance gets its own set of some fifty methods): 15 of the 84 ms of an idle
 * process's `ckpt restore` here, 14.5 of them building. A node here is one small object whose
 * methods are on its prototype, and checking a record is a walk of plain functions.
 *
 * What it accepts is what the same zod schema accepts: strict objects refuse unknown keys; `.int()`
 * is a safe integer; `.default(v)` gives (a shallow copy of) v for undefined. Unlike zod, it checks
 * in place: the value out is the value in, its defaults filled in (zod builds a new object), which
 * halves the check of 2000 fd records in a command's cold code (30 -> 14 ms here). A record just
 * parsed from an image is the restore's own; give `parse` a value of your own likewise. The first
 * issue, with its path, is what core reports of a malformed record.
 */
import { LAZY_TARGET, type StandardResult, type StandardSchemaV1 } from './schema.js';

type Key = string | number;

export interface SchemaIssue {
  message: string;
  path: Key[];
}

/**
 * The issues of a check so far. An issue is made with an empty path; each composite schema puts
 * its key in front of the paths of the issues its part added (nothing to do when there are none).
 */
export interface SchemaContext {
  issues: SchemaIssue[];
}

/**
 * The schema itself where s is a lazySchema proxy of it: a composite schema takes its parts so at
 * its first check, and then calls them without a proxy's traps (a record of 200 threads checks
 * thousands of values).
 */
function real<T>(x: T): T {
  return ((x as { [LAZY_TARGET]?: T })[LAZY_TARGET] ?? x) as T;
}

/** Puts key in front of the paths of the issues from index `from` on (a part's issues). */
function under(ctx: SchemaContext, from: number, key: Key): void {
  for (let i = from; i < ctx.issues.length; i++) ctx.issues[i].path.unshift(key);
}

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function fail(ctx: SchemaContext, message: string): void {
  ctx.issues.push({ message, path: [] });
}

/** A schema of values of type O. `run` checks v (issues into ctx) and returns the value out. */
export abstract class Schema<O> implements StandardSchemaV1<unknown, O> {
  /** The type of the value out (for Infer; no value). */
  declare readonly _output: O;

  abstract run(v: unknown, ctx: SchemaContext): O;

  private standard?: StandardSchemaV1<unknown, O>['~standard'];

  get '~standard'(): StandardSchemaV1<unknown, O>['~standard'] {
    this.standard ??= {
      version: 1,
      vendor: 'ckpt',
      validate: (value: unknown): StandardResult<O> => {
        const r = this.safeParse(value);
        return r.success ? { value: r.data } : { issues: r.issues };
      },
    };
    return this.standard;
  }

  /** The value out, or the issues (as zod's safeParse). */
  safeParse(value: unknown): { success: true; data: O } | { success: false; issues: SchemaIssue[] } {
    const ctx: SchemaContext = { issues: [] };
    const data = this.run(value, ctx);
    return ctx.issues.length ? { success: false, issues: ctx.issues } : { success: true, data };
  }

  /** The value out; throws an Error naming the first issue and its path (as zod's parse). */
  parse(value: unknown): O {
    const r = this.safeParse(value);
    if (!r.success) {
      const first = r.issues[0];
      throw new Error(`${first.path.length ? `${first.path.join('.')}: ` : ''}${first.message}`);
    }
    return r.data;
  }

  optional(): OptionalSchema<O> {
    return new OptionalSchema(this);
  }

  nullable(): Schema<O | null> {
    return new NullableSchema(this);
  }

  /** Undefined becomes `value` (a shallow copy of an array or object). */
  default(value: O): Schema<Exclude<O, undefined>> {
    return new DefaultSchema(this as Schema<Exclude<O, undefined>>, value as Exclude<O, undefined>);
  }

  /** A check of the value once this schema took it: `message` when `ok` is false. */
  refine(ok: (v: O) => boolean, opts?: { message?: string }): Schema<O> {
    return new RefinedSchema(this, ok, opts?.message ?? 'Invalid input');
  }
}

/** The value out of a schema, as zod's z.infer. */
export type Infer<S> = S extends Schema<infer O> ? O : never;

export class OptionalSchema<O> extends Schema<O | undefined> {
  private part?: Schema<O>;
  constructor(readonly inner: Schema<O>) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): O | undefined {
    return v === undefined ? undefined : (this.part ??= real(this.inner)).run(v, ctx);
  }
}

export class NullableSchema<O> extends Schema<O | null> {
  private part?: Schema<O>;
  constructor(readonly inner: Schema<O>) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): O | null {
    return v === null ? null : (this.part ??= real(this.inner)).run(v, ctx);
  }
}

export class DefaultSchema<O> extends Schema<O> {
  private part?: Schema<O>;
  constructor(
    readonly inner: Schema<O>,
    readonly value: O,
  ) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): O {
    if (v !== undefined) return (this.part ??= real(this.inner)).run(v, ctx);
    const d = this.value as unknown;
    return (Array.isArray(d) ? [...d] : d !== null && typeof d === 'object' ? { ...d } : d) as O;
  }
}

export class RefinedSchema<O> extends Schema<O> {
  private part?: Schema<O>;
  constructor(
    readonly inner: Schema<O>,
    readonly ok: (v: O) => boolean,
    readonly message: string,
  ) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): O {
    const before = ctx.issues.length;
    const out = (this.part ??= real(this.inner)).run(v, ctx);
    if (ctx.issues.length === before && !this.ok(out)) fail(ctx, this.message);
    return out;
  }
}

export type SchemaCheck<T> = (v: T, ctx: SchemaContext) => void;

/** A schema of a primitive kind with checks added by its methods (each method: a new schema). */
export abstract class CheckedSchema<O, Self> extends Schema<O> {
  constructor(readonly checks: ReadonlyArray<SchemaCheck<O>> = []) {
    super();
  }
  protected abstract with(checks: ReadonlyArray<SchemaCheck<O>>): Self;
  protected check(c: SchemaCheck<O>): Self {
    return this.with([...this.checks, c]);
  }
  protected abstract accepts(v: unknown): v is O;
  protected abstract expected: string;
  run(v: unknown, ctx: SchemaContext): O {
    if (!this.accepts(v)) {
      fail(ctx, `Invalid input: expected ${this.expected}, received ${describe(v)}`);
      return v as O;
    }
    for (const c of this.checks) c(v, ctx);
    return v;
  }
}

export class NumberSchema extends CheckedSchema<number, NumberSchema> {
  protected expected = 'number';
  protected accepts(v: unknown): v is number {
    return typeof v === 'number' && Number.isFinite(v);
  }
  protected with(checks: ReadonlyArray<SchemaCheck<number>>): NumberSchema {
    return new NumberSchema(checks);
  }
  /** A safe integer (as zod's .int()). */
  int(): NumberSchema {
    return this.check((v, ctx) => Number.isSafeInteger(v) || fail(ctx, 'Invalid input: expected int, received number'));
  }
  min(n: number): NumberSchema {
    return this.check((v, ctx) => v >= n || fail(ctx, `Too small: expected number to be >=${n}`));
  }
  max(n: number): NumberSchema {
    return this.check((v, ctx) => v <= n || fail(ctx, `Too big: expected number to be <=${n}`));
  }
  positive(): NumberSchema {
    return this.check((v, ctx) => v > 0 || fail(ctx, 'Too small: expected number to be >0'));
  }
  nonnegative(): NumberSchema {
    return this.min(0);
  }
  negative(): NumberSchema {
    return this.check((v, ctx) => v < 0 || fail(ctx, 'Too big: expected number to be <0'));
  }
}

export class StringSchema extends CheckedSchema<string, StringSchema> {
  protected expected = 'string';
  protected accepts(v: unknown): v is string {
    return typeof v === 'string';
  }
  protected with(checks: ReadonlyArray<SchemaCheck<string>>): StringSchema {
    return new StringSchema(checks);
  }
  regex(re: RegExp): StringSchema {
    return this.check((v, ctx) => {
      re.lastIndex = 0;
      if (!re.test(v)) fail(ctx, `Invalid string: must match pattern ${re}`);
    });
  }
  min(n: number): StringSchema {
    return this.check((v, ctx) => v.length >= n || fail(ctx, `Too small: expected string to have >=${n} characters`));
  }
  max(n: number): StringSchema {
    return this.check((v, ctx) => v.length <= n || fail(ctx, `Too big: expected string to have <=${n} characters`));
  }
  length(n: number): StringSchema {
    return this.check((v, ctx) => v.length === n || fail(ctx, `Invalid length: expected string to have ${n} characters`));
  }
}

export class BooleanSchema extends Schema<boolean> {
  run(v: unknown, ctx: SchemaContext): boolean {
    if (typeof v !== 'boolean') fail(ctx, `Invalid input: expected boolean, received ${describe(v)}`);
    return v as boolean;
  }
}

export class UnknownSchema extends Schema<unknown> {
  run(v: unknown): unknown {
    return v;
  }
}

export type LiteralValue = string | number | boolean | null;

export class LiteralSchema<L extends LiteralValue> extends Schema<L> {
  private readonly values: readonly L[];
  constructor(value: L | readonly L[]) {
    super();
    this.values = Array.isArray(value) ? value : [value as L];
  }
  run(v: unknown, ctx: SchemaContext): L {
    if (!this.values.includes(v as L)) fail(ctx, `Invalid input: expected ${this.values.map((x) => JSON.stringify(x)).join('|')}`);
    return v as L;
  }
}

export class EnumSchema<E extends string> extends Schema<E> {
  private readonly set: ReadonlySet<unknown>;
  constructor(readonly values: readonly E[]) {
    super();
    this.set = new Set(values);
  }
  run(v: unknown, ctx: SchemaContext): E {
    if (!this.set.has(v)) fail(ctx, `Invalid option: expected one of ${this.values.map((x) => JSON.stringify(x)).join('|')}`);
    return v as E;
  }
}

export class CustomSchema<T> extends Schema<T> {
  constructor(
    readonly ok: (v: unknown) => boolean,
    readonly message: string,
  ) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): T {
    if (!this.ok(v)) fail(ctx, this.message);
    return v as T;
  }
}

export class ArraySchema<O> extends Schema<O[]> {
  constructor(
    readonly element: Schema<O>,
    readonly checks: ReadonlyArray<SchemaCheck<unknown[]>> = [],
  ) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): O[] {
    if (!Array.isArray(v)) {
      fail(ctx, `Invalid input: expected array, received ${describe(v)}`);
      return v as O[];
    }
    // The array in is the array out, each item as its part gives it back (defaults filled in).
    const element = real(this.element);
    for (let i = 0; i < v.length; i++) {
      const before = ctx.issues.length;
      const item = v[i];
      const r = element.run(item, ctx);
      if (r !== item) v[i] = r;
      if (ctx.issues.length !== before) under(ctx, before, i);
    }
    for (const c of this.checks) c(v, ctx);
    return v as O[];
  }
  min(n: number): ArraySchema<O> {
    return new ArraySchema(this.element, [...this.checks, (v, ctx) => v.length >= n || fail(ctx, `Too small: expected array to have >=${n} items`)]);
  }
  length(n: number): ArraySchema<O> {
    return new ArraySchema(this.element, [...this.checks, (v, ctx) => v.length === n || fail(ctx, `Invalid length: expected array to have ${n} items`)]);
  }
  max(n: number): ArraySchema<O> {
    return new ArraySchema(this.element, [...this.checks, (v, ctx) => v.length <= n || fail(ctx, `Too big: expected array to have <=${n} items`)]);
  }
}

export type TupleOutput<T extends readonly Schema<unknown>[]> = { -readonly [K in keyof T]: Infer<T[K]> };

export class TupleSchema<T extends readonly Schema<unknown>[]> extends Schema<TupleOutput<T>> {
  constructor(readonly items: T) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): TupleOutput<T> {
    if (!Array.isArray(v)) {
      fail(ctx, `Invalid input: expected tuple, received ${describe(v)}`);
      return v as TupleOutput<T>;
    }
    if (v.length !== this.items.length) {
      fail(ctx, `${v.length > this.items.length ? 'Too big' : 'Too small'}: expected array to have ${this.items.length} items`);
      return v as TupleOutput<T>;
    }
    for (let i = 0; i < v.length; i++) {
      const before = ctx.issues.length;
      const item = v[i];
      const r = real(this.items[i]).run(item, ctx);
      if (r !== item) v[i] = r;
      if (ctx.issues.length !== before) under(ctx, before, i);
    }
    return v as TupleOutput<T>;
  }
}

/**
 * The first option that takes the value (as zod's union). Checked in place, an option that fails
 * after filling in defaults leaves them in: give a union options without defaults.
 */
export class UnionSchema<T extends readonly Schema<unknown>[]> extends Schema<Infer<T[number]>> {
  constructor(readonly options: T) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): Infer<T[number]> {
    for (const o of this.options) {
      const own: SchemaContext = { issues: [] };
      const out = real(o).run(v, own);
      if (!own.issues.length) return out as Infer<T[number]>;
    }
    fail(ctx, 'Invalid input');
    return v as Infer<T[number]>;
  }
}

export type SchemaShape = Record<string, Schema<unknown>>;
type Prettify<T> = { [K in keyof T]: T[K] } & {};
/** The value out of a strict object: a key whose schema is optional() is an optional property. */
export type ObjectOutput<S extends SchemaShape> = Prettify<
  { -readonly [K in keyof S as S[K] extends OptionalSchema<unknown> ? never : K]: Infer<S[K]> } & {
    -readonly [K in keyof S as S[K] extends OptionalSchema<unknown> ? K : never]?: Infer<S[K]>;
  }
>;

export class ObjectSchema<S extends SchemaShape> extends Schema<ObjectOutput<S>> {
  private keys?: string[];
  private parts?: Schema<unknown>[];
  private known?: ReadonlySet<string>;
  constructor(readonly shape: S) {
    super();
  }
  run(v: unknown, ctx: SchemaContext): ObjectOutput<S> {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      fail(ctx, `Invalid input: expected object, received ${describe(v)}`);
      return v as ObjectOutput<S>;
    }
    const keys = (this.keys ??= Object.keys(this.shape));
    const parts = (this.parts ??= keys.map((k) => real(this.shape[k])));
    const known = (this.known ??= new Set(keys));
    // The object in is the object out, each value as its part gives it back (a default filled in).
    const input = v as Record<string, unknown>;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      const before = ctx.issues.length;
      const value = input[k];
      const r = parts[i].run(value, ctx);
      if (r !== value) input[k] = r;
      if (ctx.issues.length !== before) under(ctx, before, k);
    }
    for (const k in input) if (!known.has(k)) fail(ctx, `Unrecognized key: "${k}"`);
    return input as ObjectOutput<S>;
  }
}

/** The builder: `s.strictObject({ pid: s.number().int().positive(), name: s.string().optional() })`. */
export const s = {
  number: (): NumberSchema => new NumberSchema(),
  string: (): StringSchema => new StringSchema(),
  boolean: (): Schema<boolean> => new BooleanSchema(),
  unknown: (): Schema<unknown> => new UnknownSchema(),
  /** One value, or any of several (as zod's literal). */
  literal: <const L extends LiteralValue>(value: L | readonly L[]): Schema<L> => new LiteralSchema<L>(value),
  enum: <const E extends string>(values: readonly E[]): Schema<E> => new EnumSchema(values),
  array: <O>(element: Schema<O>): ArraySchema<O> => new ArraySchema(element),
  tuple: <const T extends readonly Schema<unknown>[]>(items: T): Schema<TupleOutput<T>> => new TupleSchema(items),
  union: <const T extends readonly Schema<unknown>[]>(options: T): Schema<Infer<T[number]>> => new UnionSchema(options),
  /** An object with exactly these keys (an unknown key is an issue), as zod's strictObject. */
  strictObject: <S extends SchemaShape>(shape: S): ObjectSchema<S> => new ObjectSchema(shape),
  /** Values `ok` accepts, typed T (as zod's custom). */
  custom: <T>(ok: (v: unknown) => boolean, opts?: { message?: string }): Schema<T> => new CustomSchema<T>(ok, opts?.message ?? 'Invalid input'),
};
