/**
 * What the `ckpt` command (bin.ts, before it loads anything) and `ckpt server` (server.ts) agree
 * on: where the server listens, which commands it runs, and what makes a command run in its own
 * process instead. Nothing here imports anything: bin.ts stays small.
 */

/** Where the server listens unless told (root's: /run/ckpt is 0700); `CKPT_SERVER_SOCKET` names another. */
export const SERVER_SOCKET = '/run/ckpt/ckpt.sock';
/** The verbs the server runs. */
export const SERVED_VERBS: readonly string[] = ['dump', 'pre-dump'];
/** Options that make a command run in its own process (they change what is loaded or logged). */
export const UNSERVED_OPTIONS = /^(-c|--config|-p|--plugin|-v|--verbose|--log-file|-h|--help)(=|$)/;
/** The namespaces a served command must share with the server. */
export const SERVER_NAMESPACES: readonly string[] = ['mnt', 'pid', 'net', 'ipc', 'uts', 'user', 'cgroup'];
/** The environment a command sends: what the server carries (CKPT_*, HOME, TMPDIR) or compares (DEBUG, NODE_PATH). */
export const SENT_ENV = /^(CKPT_|HOME$|TMPDIR$|DEBUG$|NODE_PATH$)/;
/** How long a command waits for the server's first answer before it runs in its own process. */
export const ANSWER_MS = 10_000;
