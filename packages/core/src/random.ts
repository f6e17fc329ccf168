/**
 * Random names and SHA-256 digests without node:crypto, whose module (with the streams it loads)
 * costs 5-6 ms of every command that loads it: a dump and a restore use these, and the native
 * engine's getrandom(2) and OpenSSL (Node's own, through the addon).
 */
import { native } from '@ckpt/native';

/** `bytes` random bytes as hex: a unique part of a file or object name. */
export function randomHex(bytes: number): string {
  return native.sign.randomBytes(bytes).toString('hex');
}

/** The SHA-256 of the parts, one after the other (strings as UTF-8), as hex. */
export function sha256Hex(...parts: Array<string | Uint8Array>): string {
  const data = parts.length === 1 && typeof parts[0] !== 'string' ? parts[0] : Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
  return native.hash.hashOf('sha256', data);
}
