// File rules: globs (picomatch), first-match precedence over the defaults, validation messages.
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configuredFileRules, DEFAULT_FILE_RULES, fileRuleFor, globMatch, sha256File, validateFileRules, verifyFile, type FileProps } from './rules.js';

const file = (path: string, more: Partial<FileProps> = {}): FileProps => ({
  path,
  size: 100,
  unlinked: false,
  tmpfs: false,
  writable: false,
  append: false,
  ...more,
});

describe('globs', () => {
  it('** spans whole segments only: /srv/**/log.txt is not /srv/catalog.txt', () => {
    expect(globMatch('/srv/**/log.txt', '/srv/catalog.txt')).toBe(false);
    expect(globMatch('/srv/**/log.txt', '/srv/log.txt')).toBe(true);
    expect(globMatch('/srv/**/log.txt', '/srv/a/b/log.txt')).toBe(true);
    expect(globMatch('**/data.txt', '/tmp/x/work/data.txt')).toBe(true);
    expect(globMatch('**/data.txt', '/tmp/x/work/metadata.txt')).toBe(false);
  });

  it('* and ? stay within a segment', () => {
    expect(globMatch('/srv/*.txt', '/srv/a.txt')).toBe(true);
    expect(globMatch('/srv/*.txt', '/srv/a/b.txt')).toBe(false);
    expect(globMatch('/srv/?.txt', '/srv/a.txt')).toBe(true);
    expect(globMatch('/srv/?.txt', '/srv/ab.txt')).toBe(false);
  });

  it('braces and classes', () => {
    expect(globMatch('/srv/*.{log,txt}', '/srv/x.log')).toBe(true);
    expect(globMatch('/srv/*.{log,txt}', '/srv/x.txt')).toBe(true);
    expect(globMatch('/srv/*.{log,txt}', '/srv/x.dat')).toBe(false);
    expect(globMatch('/srv/[ab].txt', '/srv/b.txt')).toBe(true);
    expect(globMatch('/srv/[ab].txt', '/srv/c.txt')).toBe(false);
  });

  it('dot files match (a rule for a directory covers its hidden files)', () => {
    expect(globMatch('/srv/**', '/srv/.cache/x')).toBe(true);
    expect(globMatch('/srv/*', '/srv/.env')).toBe(true);
  });

  it('a path rule selects its files in fileRuleFor', () => {
    const rules = validateFileRules([{ match: { path: '/srv/**/log.txt' }, method: 'content', policy: 'image' }]);
    expect(fileRuleFor(rules, file('/srv/a/log.txt'))).toEqual({ method: 'content', policy: 'image' });
    expect(fileRuleFor(rules, file('/srv/catalog.txt'))).toEqual({ method: 'reference', policy: 'verify' });
  });
});

describe('precedence', () => {
  it('the defaults: unlinked by content from the image, written files from the disk, others verified', () => {
    expect(fileRuleFor([], file('/a', { unlinked: true }))).toEqual({ method: 'content', policy: 'image' });
    expect(fileRuleFor([], file('/a', { writable: true }))).toEqual({ method: 'reference', policy: 'disk' });
    expect(fileRuleFor([], file('/a'))).toEqual({ method: 'reference', policy: 'verify' });
    expect(DEFAULT_FILE_RULES.at(-1)).toEqual({ method: 'reference', policy: 'verify' });
  });

  it('the first matching rule wins, before the defaults', () => {
    const rules = validateFileRules([
      { match: { path: '/srv/**', maxSize: 10 }, method: 'content', policy: 'disk' },
      { match: { path: '/srv/**' }, method: 'reference', policy: 'disk' },
      { match: { writable: true }, method: 'content' },
    ]);
    expect(fileRuleFor(rules, file('/srv/small', { size: 5 }))).toEqual({ method: 'content', policy: 'disk' });
    expect(fileRuleFor(rules, file('/srv/big', { size: 50 }))).toEqual({ method: 'reference', policy: 'disk' });
    // Not under /srv and written to: the third rule, before the default "reference, disk".
    expect(fileRuleFor(rules, file('/var/w', { writable: true }))).toEqual({ method: 'content', policy: 'image' });
  });

  it('every condition of a match must hold', () => {
    const rules = validateFileRules([{ match: { minSize: 10, maxSize: 20, tmpfs: true, append: true }, method: 'content', policy: 'verify' }]);
    expect(fileRuleFor(rules, file('/t', { size: 15, tmpfs: true, append: true }))).toEqual({ method: 'content', policy: 'verify' });
    expect(fileRuleFor(rules, file('/t', { size: 15, tmpfs: true }))).toEqual({ method: 'reference', policy: 'verify' });
    expect(fileRuleFor(rules, file('/t', { size: 25, tmpfs: true, append: true }))).toEqual({ method: 'reference', policy: 'verify' });
    expect(fileRuleFor(rules, file('/t', { size: 5, tmpfs: true, append: true }))).toEqual({ method: 'reference', policy: 'verify' });
  });

  it('an unlinked file is always saved by content; a reference never has policy image', () => {
    const rules = validateFileRules([{ method: 'reference', policy: 'disk' }]);
    expect(fileRuleFor(rules, file('/gone', { unlinked: true }))).toEqual({ method: 'content', policy: 'disk' });
    expect(fileRuleFor([{ method: 'reference', policy: 'image' }], file('/x'))).toEqual({ method: 'reference', policy: 'verify' });
  });
});

describe('validation', () => {
  it('accepts no rules', () => {
    expect(validateFileRules(undefined)).toEqual([]);
    expect(configuredFileRules(undefined)).toEqual([]);
    expect(configuredFileRules({})).toEqual([]);
  });

  it('reads the rules of the files plugin options', () => {
    const rules = [{ match: { path: '/a/**' }, method: 'content' }];
    expect(configuredFileRules({ rules })).toEqual(rules);
  });

  it.each([
    [{ rules: {} }, 'files.rules must be a list'],
    [{ rules: ['x'] }, 'files.rules[0] must be an object'],
    [{ rules: [{ method: 'copy' }] }, 'files.rules[0].method must be "reference" or "content"'],
    [{ rules: [{}, { policy: 'keep' }] }, 'files.rules[1].policy must be "image", "disk" or "verify"'],
    [{ rules: [{ policy: 'image' }] }, 'files.rules[0]: policy "image" needs method "content"'],
    [{ rules: [{ match: { path: 3 } }] }, 'files.rules[0].match.path must be a string'],
    [{ rules: [{ match: { maxSize: '10' } }] }, 'files.rules[0].match.maxSize must be a number'],
    [{ rules: [{ match: { size: 10 } }] }, 'files.rules[0].match: "size" is not a condition'],
    [{ rules: [{ matches: {} }] }, 'files.rules[0]: "matches" is not a rule key'],
  ])('%j fails: %s', (options, message) => {
    expect(() => configuredFileRules(options)).toThrow(message);
    try {
      configuredFileRules(options);
    } catch (e) {
      expect((e as { code?: string }).code).toBe('ERR_CKPT_CONFIG');
    }
  });
});

describe('files on disk', () => {
  it('verifyFile accepts the same file and refuses a changed one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ckpt-rules-'));
    try {
      const p = join(dir, 'f');
      writeFileSync(p, 'hello');
      const saved = { size: 5, mtimeMs: 0, sha256: sha256File(p) };
      utimesSync(p, new Date(), new Date());
      expect(() => verifyFile(p, saved, 'fd 3')).not.toThrow();
      writeFileSync(p, 'HELLO');
      expect(() => verifyFile(p, saved, 'fd 3')).toThrow(/changed since the dump \(content differs\)/);
      expect(() => verifyFile(join(dir, 'nope'), saved, 'fd 3')).toThrow(/no longer exists/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
