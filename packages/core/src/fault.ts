/**
 * Fault injection, for tests: `CKPT_FAULT=<point>:<action>[,<point>:<action>...]` makes ckpt
 * fail, be interrupted or die at a named step, so that tests can prove a dump or restore stopped
 * at any step harms nothing. Points are named where the pipeline passes them:
 *   dump:frozen, dump:stage:<class>:all (before its dumpAll), dump:stage:<class>, dump:pages (between page-copy pieces), dump:records,
 *   dump:committed, dump:handover (the processes die with ckpt from here on, unless handed
 *   over: then only after dump:handedOver), tcp:repair (a
 *   connection in repair mode being read), tty:queue (the bytes queued in a pty being read and
 *   put back by ckpt-ptyqueue), unix:inflight (a unix socket's SO_PEEK_OFF moved, to receive the
 *   files in flight of one of its messages); restore:validated, restore:stage:<class>:all, restore:stage:<class>, restore:created, restore:pages,
 *   restore:resume; migrate:round, migrate:file, migrate:sent, migrate:restored (source side, the last one with
 *   the destination's processes built, not yet running), receive:file, receive:restore
 *   (destination side)
 * (`ckpt ... -v` logs every point passed under ckpt:fault). A point may end with `*` to match
 * every point it prefixes (`dump:stage:*`). Actions:
 *   error       throw an error there (the run fails and undoes itself)
 *   sigint      send ckpt itself SIGINT (the CLI aborts at its next interruption point)
 *   kill        SIGKILL ckpt itself there
 *   sleep=MS    block there for MS milliseconds (for tests that act on ckpt meanwhile)
 * `<point>:<action>@N` fires only at the N-th time the point is passed (1-based).
 *
 * Finer: `CKPT_FAULT_PTRACE_STEP=N` SIGKILLs ckpt at the N-th step of remote-syscall work in
 * dumped processes (parking a thread, setting its registers, entering and leaving the syscall,
 * unparking): every instant at which a ckpt death could catch a thread mid-way. A dump logs how
 * many steps it took under ckpt:fault.
 */
import { native } from '@ckpt/native';
import { CkptError } from './errors.js';
import { logger } from './log.js';
import { sleepSync } from './helpers.js';

const log = logger('fault');

interface Rule {
  point: string;
  action: string;
  nth?: number;
}

let rules: Rule[] | undefined;
const passed = new Map<string, number>();
/** What `sigint` does instead of signalling this process (a `ckpt server` stops its client's command). */
let interrupt: (() => void) | undefined;

/**
 * Forgets the rules read and the points passed, for a process that runs one command after another
 * (`ckpt server`): the next command reads CKPT_FAULT anew. `onInterrupt`: what `sigint` does in it.
 */
export function resetFaults(onInterrupt?: () => void): void {
  rules = undefined;
  passed.clear();
  interrupt = onInterrupt;
}

function parse(): Rule[] {
  const spec = process.env.CKPT_FAULT ?? '';
  return spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^(.+?):(error|sigint|kill|sleep=\d+)(?:@(\d+))?$/.exec(s);
      if (!m)
        throw new CkptError('ERR_CKPT_USAGE', `CKPT_FAULT: cannot read ${JSON.stringify(s)}`, {
          hint: 'POINT:error|sigint|kill|sleep=MS[@N], comma-separated',
        });
      return { point: m[1], action: m[2], nth: m[3] ? Number(m[3]) : undefined };
    });
}

const matches = (rule: string, point: string) => (rule.endsWith('*') ? point.startsWith(rule.slice(0, -1)) : rule === point);

/** Logs how many remote-syscall steps this run took (for tests that kill at each of them). */
export function logSteps(): void {
  log('remote-syscall steps: %d', native.ptrace.faultSteps());
}

/** Passes a named point of the pipeline; does what CKPT_FAULT says for it, if anything. */
export function fault(point: string): void {
  rules ??= parse();
  const n = (passed.get(point) ?? 0) + 1;
  passed.set(point, n);
  log('%s #%d', point, n);
  for (const r of rules) {
    if (!matches(r.point, point) || (r.nth !== undefined && r.nth !== n)) continue;
    log('%s: %s', point, r.action);
    if (r.action === 'error') throw new CkptError('ERR_CKPT_PLUGIN', `injected fault at ${point}`);
    if (r.action === 'sigint') {
      if (interrupt) interrupt();
      else process.kill(process.pid, 'SIGINT');
    }
    if (r.action === 'kill') process.kill(process.pid, 'SIGKILL');
    if (r.action.startsWith('sleep=')) sleepSync(Number(r.action.slice(6)));
  }
}
