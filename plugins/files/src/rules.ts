/**
 * Per-file checkpoint rules (the files plugin's option "rules"; in ckpt.config.json under
 * "files" or options["@ckpt/plugin-files"]): which method saves an open file and which copy wins
 * at restart. First matching rule wins; the built-in defaults come last.
 *
 *   { "files": { "rules": [
 *       { "match": { "path": "/srv/data/**" }, "method": "content", "policy": "image" },
 *       { "match": { "maxSize": 65536, "writable": false }, "method": "content" },
 *       { "match": { "tmpfs": true }, "method": "content", "policy": "image" } ] } }
 *
 * match (all given conditions must hold): path (a glob, picomatch syntax: * and ? within a path
 * segment, ** across segments, {a,b}, [ab]; dot files match too), maxSize / minSize (bytes),
 * unlinked, tmpfs, writable (opened for writing), append (O_APPEND).
 * method: "reference" (path, offset, flags) or "content" (the bytes go into the image).
 * policy: "image" (put the image's copy back over the disk), "disk" (use the disk's copy as is),
 * "verify" (refuse the restore if the disk's copy changed since the dump: size, mtime, and a
 * sha256 for files up to 1 MiB).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import picomatch from 'picomatch';
import { CkptError } from '@ckpt/core';

export type FileMethod = 'reference' | 'content';
export type FilePolicy = 'image' | 'disk' | 'verify';

export interface FileMatch {
  path?: string;
  maxSize?: number;
  minSize?: number;
  unlinked?: boolean;
  tmpfs?: boolean;
  writable?: boolean;
  append?: boolean;
}

export interface FileRule {
  match?: FileMatch;
  method?: FileMethod;
  policy?: FilePolicy;
}

export interface FileProps {
  path: string;
  size: number;
  unlinked: boolean;
  tmpfs: boolean;
  writable: boolean;
  append: boolean;
}

/** The files plugin's options, as far as rules are concerned. */
export interface FileRulesOptions {
  rules?: unknown;
}

/**
 * Defaults: unlinked files can only be saved by content (and put back, unlinked, from the image);
 * files the process writes to are referenced and taken from the disk as they are (the process's
 * own later writes, e.g. after a --leave-running dump, are expected there); every other file is
 * referenced and verified unchanged.
 */
export const DEFAULT_FILE_RULES: FileRule[] = [
  { match: { unlinked: true }, method: 'content', policy: 'image' },
  { match: { writable: true }, method: 'reference', policy: 'disk' },
  { method: 'reference', policy: 'verify' },
];

/**
 * Compiled globs, by pattern: rules are asked once per open file of every process, and the same
 * few patterns come back each time.
 */
const matchers = new Map<string, (path: string) => boolean>();

/**
 * Does path match glob? `dot: true` because a rule for `/srv/**` is meant for every file under
 * /srv, hidden ones included (as the hand-written matcher before picomatch did).
 */
export function globMatch(glob: string, path: string): boolean {
  let m = matchers.get(glob);
  if (!m) {
    m = picomatch(glob, { dot: true });
    matchers.set(glob, m);
  }
  return m(path);
}

const MATCH_KEYS = {
  path: 'string',
  maxSize: 'number',
  minSize: 'number',
  unlinked: 'boolean',
  tmpfs: 'boolean',
  writable: 'boolean',
  append: 'boolean',
} as const;

const RULE_KEYS = ['match', 'method', 'policy'];

/**
 * Checks the rules once, when the options are read, so that a typo fails the command at its
 * start with the rule's index rather than silently never matching during a dump.
 */
export function validateFileRules(rules: unknown): FileRule[] {
  if (rules === undefined) return [];
  if (!Array.isArray(rules)) throw new CkptError('ERR_CKPT_CONFIG', 'files.rules must be a list');
  return rules.map((r, i) => {
    const at = `files.rules[${i}]`;
    if (!r || typeof r !== 'object' || Array.isArray(r)) throw new CkptError('ERR_CKPT_CONFIG', `${at} must be an object ({ match, method, policy })`);
    const rule = r as FileRule;
    for (const k of Object.keys(rule)) {
      if (!RULE_KEYS.includes(k)) throw new CkptError('ERR_CKPT_CONFIG', `${at}: "${k}" is not a rule key (expected match, method, policy)`);
    }
    if (rule.match !== undefined) {
      if (!rule.match || typeof rule.match !== 'object' || Array.isArray(rule.match)) throw new CkptError('ERR_CKPT_CONFIG', `${at}.match must be an object`);
      for (const [k, v] of Object.entries(rule.match)) {
        const want = MATCH_KEYS[k as keyof typeof MATCH_KEYS];
        if (!want) throw new CkptError('ERR_CKPT_CONFIG', `${at}.match: "${k}" is not a condition (expected ${Object.keys(MATCH_KEYS).join(', ')})`);
        if (typeof v !== want) throw new CkptError('ERR_CKPT_CONFIG', `${at}.match.${k} must be a ${want}`);
      }
    }
    if (rule.method && !['reference', 'content'].includes(rule.method)) throw new CkptError('ERR_CKPT_CONFIG', `${at}.method must be "reference" or "content"`);
    if (rule.policy && !['image', 'disk', 'verify'].includes(rule.policy))
      throw new CkptError('ERR_CKPT_CONFIG', `${at}.policy must be "image", "disk" or "verify"`);
    if (rule.policy === 'image' && rule.method !== 'content')
      throw new CkptError('ERR_CKPT_CONFIG', `${at}: policy "image" needs method "content" (a reference has no copy to put back)`);
    return rule;
  });
}

/** The method and policy for one file: the first matching rule, completed by the defaults. */
export function fileRuleFor(rules: FileRule[], p: FileProps): { method: FileMethod; policy: FilePolicy } {
  for (const rule of [...rules, ...DEFAULT_FILE_RULES]) {
    const m = rule.match ?? {};
    if (m.path !== undefined && !globMatch(m.path, p.path)) continue;
    if (m.maxSize !== undefined && p.size > m.maxSize) continue;
    if (m.minSize !== undefined && p.size < m.minSize) continue;
    if (m.unlinked !== undefined && m.unlinked !== p.unlinked) continue;
    if (m.tmpfs !== undefined && m.tmpfs !== p.tmpfs) continue;
    if (m.writable !== undefined && m.writable !== p.writable) continue;
    if (m.append !== undefined && m.append !== p.append) continue;
    const method = p.unlinked ? 'content' : (rule.method ?? 'reference');
    const policy = rule.policy ?? (method === 'content' ? 'image' : 'verify');
    return { method, policy: method === 'reference' && policy === 'image' ? 'verify' : policy };
  }
  return { method: 'reference', policy: 'verify' };
}

/** The file rules in the files plugin's options (its "rules" key), validated. */
export function configuredFileRules(options: FileRulesOptions | undefined): FileRule[] {
  return validateFileRules(options?.rules);
}

/** What a dump remembers of a file to verify it at restore. */
export interface FileIdentity {
  size: number;
  mtimeMs: number;
  /** sha256 of the content, for files up to VERIFY_HASH_MAX bytes. */
  sha256?: string;
}

export const VERIFY_HASH_MAX = 1 << 20;

export function sha256File(path: string | number): string {
  const fd = typeof path === 'number' ? path : openSync(path, 'r');
  try {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let pos = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n <= 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
    return h.digest('hex');
  } finally {
    if (typeof path !== 'number') closeSync(fd);
  }
}

/** The refusal of a file that is no longer a regular file at its path (a FIFO, a device, a socket): never opened as one. */
export function notAFile(path: string, who: string): CkptError {
  return new CkptError('ERR_CKPT_RESTORE_FAILED', `cannot reopen ${path} (${who}): it is no longer a regular file`, {
    hint: 'put the file back, or relocate with --relocate OLD=NEW, or substitute it',
  });
}

/**
 * Policy "verify": the file on disk must be the one the dump saw. `opened`: the status of the file
 * as the restore opened it (by that path), where it has it; else the path is stat'ed.
 */
export function verifyFile(path: string, saved: FileIdentity, who: string, opened?: { size: number; mtimeMs: number }): void {
  let st: { size: number; mtimeMs: number };
  try {
    st = opened ?? statSync(path);
  } catch {
    throw new CkptError('ERR_CKPT_RESTORE_FAILED', `file ${path} (${who}) no longer exists`, {
      hint: 'restore it, or relocate with --relocate OLD=NEW, or substitute it',
    });
  }
  const changed = (what: string) =>
    new CkptError('ERR_CKPT_RESTORE_FAILED', `file ${path} (${who}) changed since the dump (${what}); its restart policy is "verify"`, {
      hint: 'put the dumped version back, or choose policy "disk" (or "image" with method "content") for it in ckpt.config.json',
    });
  if (st.size !== saved.size) throw changed(`size ${saved.size} -> ${st.size}`);
  if (saved.sha256 !== undefined) {
    if (sha256File(path) !== saved.sha256) throw changed('content differs');
  } else if (st.mtimeMs !== saved.mtimeMs) {
    throw changed(`modified ${new Date(st.mtimeMs).toISOString()}`);
  }
}
