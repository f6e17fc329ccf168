/**
 * Addresses (sun_path bytes, their text form for people, where a path name is on disk) and the
 * `--external unix:...` declarations. Pure functions: no socket, no file system.
 */
import { isAbsolute, resolve } from 'node:path';
import type { UnixSocketData } from './record.js';

/** sun_path bytes for people: a path as is, an abstract name as @name (\xNN for odd bytes). */
export function addrText(raw: Buffer): string {
  if (!raw.length) return '';
  if (raw[0] !== 0) return raw.toString('utf8');
  let s = '@';
  for (const b of raw.subarray(1)) s += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return s;
}

/** People's form of an address back to sun_path bytes (@name: abstract, with \xNN escapes). */
export function parseAddrText(s: string): Buffer {
  if (!s.startsWith('@')) return Buffer.from(s, 'utf8');
  const bytes = [0];
  const body = s.slice(1);
  for (let i = 0; i < body.length; i++) {
    const m = /^\\x([0-9a-fA-F]{2})/.exec(body.slice(i));
    if (m) {
      bytes.push(parseInt(m[1], 16));
      i += 3;
    } else bytes.push(...Buffer.from(body[i], 'utf8'));
  }
  return Buffer.from(bytes);
}

/** The sun_path bytes of a base64 record field (empty when absent). */
export const rawOf = (b64: string | undefined): Buffer => (b64 ? Buffer.from(b64, 'base64') : Buffer.alloc(0));

/** A path name (not abstract, not unnamed). */
export const isPath = (raw: Buffer) => raw.length > 0 && raw[0] !== 0;

/** --external unix:PATH / unix:@name entries (others belong to other plugins): address -> where to connect at restore. */
export function externals(list: string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const spec of list ?? []) {
    if (!spec.startsWith('unix:')) continue;
    const body = spec.slice(5);
    const eq = body.indexOf('=');
    if (eq > 0) out.set(body.slice(0, eq), body.slice(eq + 1));
    else if (body) out.set(body, body);
  }
  return out;
}

/** The absolute path of a socket's path name (relative ones in the directory they were bound in); undefined for others. */
export function pathOf(d: UnixSocketData, raw = rawOf(d.nameRaw)): string | undefined {
  if (!isPath(raw)) return undefined;
  const name = raw.toString('utf8');
  return isAbsolute(name) ? name : resolve(d.dir ?? '/', name);
}

/** An address the restorer can reach: relative paths resolved in the directory they were bound in. */
export function reachable(raw: Buffer, d?: UnixSocketData): Buffer {
  if (!isPath(raw)) return raw;
  const p = raw.toString('utf8');
  return isAbsolute(p) ? raw : Buffer.from(resolve(d?.dir ?? '/', p));
}

/** Sockets of the image that bind their own name at restore. */
export function bindsName(d: UnixSocketData): boolean {
  return !!d.nameRaw && (d.bound ?? true);
}
