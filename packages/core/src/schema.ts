/**
 * Validation through the Standard Schema interface (https://standardschema.dev), which zod 4,
 * valibot and arktype schemas all implement: a plugin brings its schemas in the library it likes,
 * and core never depends on one. The interface is small and meant to be written out, as here.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

export type StandardResult<Output> = { readonly value: Output; readonly issues?: undefined } | { readonly issues: ReadonlyArray<StandardIssue> };

export interface StandardIssue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }> | undefined;
}

export type InferOutput<S> = S extends StandardSchemaV1<unknown, infer O> ? O : unknown;

/** `a.b[2].c` for an issue path. */
export function issuePath(issue: StandardIssue): string {
  let out = '';
  for (const seg of issue.path ?? []) {
    const k = typeof seg === 'object' && seg !== null && 'key' in seg ? seg.key : seg;
    out += typeof k === 'number' ? `[${k}]` : out ? `.${String(k)}` : String(k);
  }
  return out;
}

/**
 * Validates synchronously (every schema ckpt uses is synchronous); returns the parsed value or
 * the first issue as `{ path, message }`.
 */
export function validate<O>(schema: StandardSchemaV1<unknown, O>, value: unknown): { ok: true; value: O } | { ok: false; path: string; message: string } {
  const r = schema['~standard'].validate(value);
  if (r instanceof Promise) throw new Error('asynchronous schemas are not supported');
  if (r.issues) {
    const first = r.issues[0];
    return { ok: false, path: first ? issuePath(first) : '', message: first?.message ?? 'invalid' };
  }
  return { ok: true, value: r.value };
}

/**
 * A schema built the first time it is used: `lazySchema(() => z.strictObject({ ... }))` has the
 * type of what `build` returns. Building zod schemas is what a command pays for at start-up (about
 * 25 ms for ckpt's ~75 record and option schemas, more than the rest of every plugin's code), and a
 * command uses few of them: a dump builds its plugins' option schemas only, a restore those and
 * the record schemas of the image's plugins (now in core's `s`, shape.ts, which costs little to
 * build; lazy all the same, a dump needs none of them).
 * A proxy forwards reads, `in`, writes and the prototype (so `instanceof` holds) to the built
 * schema; it does not list keys (nothing iterates a schema's own properties). LAZY_TARGET gives the
 * built schema itself, for `s` to call its parts without the proxy.
 */
export function lazySchema<T extends object>(build: () => T): T {
  return lazy(build, false);
}

/**
 * A plugin's options schema, built when first needed (as lazySchema), for options whose every key
 * is optional and without a default: an empty object is valid and is its own value, which is
 * taken without building the schema. Most commands give most plugins no options, and building the
 * built-in plugins' option schemas, to check `{}`, was 5-6 ms of every dump and restore.
 * (@ckpt/api's ckpt.test holds every built-in plugin to the promise.)
 */
export function lazyOptions<T extends object>(build: () => T): T {
  return lazy(build, true);
}

function isEmptyObject(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const _k in v) return false;
  return Object.getOwnPropertySymbols(v).length === 0;
}

/** What a lazySchema proxy gives for this key: the schema it stands for, built (see shape.ts). */
export const LAZY_TARGET = Symbol('ckpt.lazySchema.target');

function lazy<T extends object>(build: () => T, emptyIsValid: boolean): T {
  let built: T | undefined;
  const real = (): T => {
    built ??= build();
    return built;
  };
  const standard = emptyIsValid
    ? {
        version: 1 as const,
        vendor: 'ckpt',
        validate: (value: unknown) => (isEmptyObject(value) ? { value: {} } : (real() as unknown as StandardSchemaV1)['~standard'].validate(value)),
      }
    : undefined;
  return new Proxy({} as T, {
    get: (_t, k) => {
      if (k === '~standard' && standard && !built) return standard;
      const r = real();
      if (k === LAZY_TARGET) return r;
      return Reflect.get(r, k, r);
    },
    has: (_t, k) => Reflect.has(real(), k),
    set: (_t, k, v) => Reflect.set(real(), k, v),
    getPrototypeOf: () => Reflect.getPrototypeOf(real()),
  });
}
