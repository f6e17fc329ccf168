/**
 * What the `ckpt` command (bin.ts, before it loads anything) and `ckpt server` (server.ts) agree
 * on: where the server listens, which commands it runs, and what makes a command run in its own
 * process instead, and how they read each other. Only node:fs here: bin.ts stays small.
 */
import { readlinkSync, statSync } from 'node:fs';

/** Where the server listens unless told (root's: /run/ckpt is 0700); `CKPT_SERVER_SOCKET` names another. */
export const SERVER_SOCKET = '/run/ckpt/ckpt.sock';
/** The verbs the server runs. */
const SERVED_VERBS: readonly string[] = ['dump', 'pre-dump', 'restore'];
/** Options that make a command run in its own process (they change what is loaded or logged). */
const UNSERVED_OPTIONS = /^(-c|--config|-p|--plugin|-v|--verbose|--log-file|-h|--help)(=|$)/;
/** Restore options that name fds of the command, or start a checkpointer that would be the server's. */
const UNSERVED_RESTORE_OPTIONS = /^(-s|--substitute|--inherit-fd|--checkpoint-every)(=|$)/;

/**
 * The command a line names: its first word that is neither an option nor the value of one of
 * ckpt's own (-c FILE, -p MODULE, --log-file FILE). The code cache bin.ts picks, and the one
 * main.ts says ran when no action did.
 */
export function verbOf(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (['-c', '--config', '-p', '--plugin', '--log-file'].includes(argv[i])) i++;
    else if (!argv[i].startsWith('-')) return argv[i];
  }
  return undefined;
}

/**
 * Why the server does not run this command (it runs in its own process), or undefined. A restore
 * is served only with -d: its root becomes the command's child (RestoreOptions.parent), which a
 * restore that waits for it would have to reap.
 */
export function notServed(argv: readonly string[]): string | undefined {
  const verb = argv.find((a) => !a.startsWith('-'));
  if (!verb || !SERVED_VERBS.includes(verb)) return `not served: ${verb ?? 'no command'}`;
  if (argv.some((a) => UNSERVED_OPTIONS.test(a))) return 'options that change what is loaded or logged';
  if (verb !== 'restore') return undefined;
  if (!argv.includes('-d') && !argv.includes('--detach')) return 'a restore that waits for its processes (no -d)';
  if (argv.some((a) => UNSERVED_RESTORE_OPTIONS.test(a))) return '--substitute, --inherit-fd or --checkpoint-every';
  return undefined;
}
/** The namespaces a served command must share with the server. */
export const SERVER_NAMESPACES: readonly string[] = ['mnt', 'pid', 'net', 'ipc', 'uts', 'user', 'cgroup'];
/** The environment a command sends: what the server carries (CKPT_*, HOME, TMPDIR) or compares (DEBUG, NODE_PATH). */
export const SENT_ENV = /^(CKPT_|HOME$|TMPDIR$|DEBUG$|NODE_PATH$)/;
/** How long a command waits for the server's first answer before it runs in its own process. */
export const ANSWER_MS = 10_000;

/**
 * The mtime of a bundle (dist/cli.cjs) in nanoseconds, as a decimal string: what a request's
 * `bundle` says, exactly (client/ckpt-client.c writes st_mtim the same way).
 */
export function bundleTime(file: string): string {
  return statSync(file, { bigint: true }).mtimeNs.toString();
}

/** A process's namespaces (`mnt:[4026531841]`...; this one's by default), by the names of SERVER_NAMESPACES ('' where unreadable). */
export function namespaces(pid: number | 'self' = 'self'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const ns of SERVER_NAMESPACES) {
    try {
      out[ns] = readlinkSync(`/proc/${pid}/ns/${ns}`);
    } catch {
      out[ns] = '';
    }
  }
  return out;
}

/**
 * A connection's 'data' listener that hands each whole line (JSON, without its newline) to
 * `onLine`; a line still unended past `max` characters goes to `tooLong` instead.
 */
export function lineReader(onLine: (line: string) => void, max = Number.POSITIVE_INFINITY, tooLong?: () => void): (chunk: Buffer) => void {
  let pending = '';
  return (chunk) => {
    pending += chunk.toString('utf8');
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      onLine(line);
    }
    if (pending.length > max) {
      pending = '';
      tooLong?.();
    }
  };
}
