/**
 * Typed errors. Everything the user can cause (bad pid, bad image, busy pid, unsupported state)
 * is a CkptError with a stable `code` and a message that names the cause and, where there is
 * one, the way out (`hint`). The CLI prints those without a stack trace.
 */
export type CkptErrorCode =
  | 'ERR_CKPT_NO_SUCH_PROCESS'
  | 'ERR_CKPT_NOT_TRACEABLE'
  | 'ERR_CKPT_UNSUPPORTED'
  | 'ERR_CKPT_UNSUPPORTED_FD'
  | 'ERR_CKPT_IMAGE_MISSING'
  | 'ERR_CKPT_IMAGE_CORRUPT'
  | 'ERR_CKPT_IMAGE_INCOMPATIBLE'
  /** The image has no signature (manifest.sig). */
  | 'ERR_CKPT_IMAGE_UNSIGNED'
  /** The signature does not match manifest.json: it was changed after the dump signed it. */
  | 'ERR_CKPT_IMAGE_TAMPERED'
  /** Validly signed, by a key this host does not trust. */
  | 'ERR_CKPT_IMAGE_UNTRUSTED'
  /** The key store: a key file that is not a key, a key directory others can write... */
  | 'ERR_CKPT_KEY'
  | 'ERR_CKPT_PID_TAKEN'
  | 'ERR_CKPT_PLUGIN'
  | 'ERR_CKPT_CONFIG'
  | 'ERR_CKPT_DUMP_FAILED'
  | 'ERR_CKPT_RESTORE_FAILED'
  /** A migration failed; the source's processes run on. */
  | 'ERR_CKPT_MIGRATE_FAILED'
  | 'ERR_CKPT_USAGE';

export class CkptError extends Error {
  readonly code: CkptErrorCode;
  readonly hint?: string;
  constructor(code: CkptErrorCode, message: string, opts: { cause?: unknown; hint?: string } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'CkptError';
    this.code = code;
    this.hint = opts.hint;
  }
}

/** An error thrown inside a plugin's hook, naming the plugin and the hook. */
export class PluginError extends CkptError {
  readonly plugin: string;
  readonly hook: string;
  constructor(plugin: string, hook: string, cause: unknown) {
    const inner = cause instanceof Error ? cause.message : String(cause);
    super(
      cause instanceof CkptError ? cause.code : 'ERR_CKPT_PLUGIN',
      cause instanceof CkptError ? inner : `plugin ${plugin} failed in hook ${hook}: ${inner}`,
      { cause, hint: cause instanceof CkptError ? cause.hint : undefined },
    );
    this.name = 'PluginError';
    this.plugin = plugin;
    this.hook = hook;
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
