/** Restore, first step (beforeRestore): the plan of every pty of the image, and the state of the restore. */
import { closeSync, readlinkSync } from 'node:fs';
import { isatty } from 'node:tty';
import { CkptError, createSessionState, type Logger, type RestoreSession } from '@ckpt/core';
import { NAME, type TtyFdData, type TtyOptions, type TtyProcessRecord } from './record.js';

/** One pty of the image and the new pty that replaces it. */
export interface PtyPlan {
  index: number;
  /** The image holds its master. */
  hasMaster: boolean;
  /** Image pids holding an fd on its slave, in tree order. */
  holders: number[];
  /** Image pids whose controlling terminal it is. */
  controlled: number[];
  termios?: string;
  winsize?: string;
  packet?: boolean;
  locked?: boolean;
  hungUp?: boolean;
  /** The slave's device node: owner and mode. */
  node?: TtyFdData['node'];
  /** Bytes queued in it at dump time, put into the new pty once it is made. */
  queued?: TtyFdData['queued'];
  /** --tty: its slave is replaced by the restorer's terminal. */
  terminal: boolean;
  /** Our fd of the new master, once created. */
  master?: number;
  newIndex?: number;
}

export interface TtyState {
  ptys: Map<number, PtyPlan>;
  /** --tty: the restorer's fd (0, 1 or 2) that is its terminal, and the image's terminal. */
  terminal?: { fd: number; index: number; termiosApplied: boolean; fgDone: boolean };
  /** Every fd of ours still open (closed at the end, or on rollback). */
  open: Set<number>;
  /** Resolved records of every fd of the image: "pid:fd" -> our data (sameAs followed). */
  fdData: Map<string, TtyFdData>;
  done: boolean;
}

export const states = createSessionState('tty:restore', (_s: RestoreSession) => ({ state: undefined as TtyState | undefined }));

export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}

/** The restorer's own terminal: the first of stdin, stdout, stderr that is a tty. */
function restorerTerminal(): number | undefined {
  return [0, 1, 2].find((fd) => {
    try {
      return isatty(fd);
    } catch {
      return false;
    }
  });
}

/** Which ptys the image names, who holds and controls each, and (--tty) which one becomes our terminal. */
export function plan(session: RestoreSession, opts: TtyOptions, log: Logger): TtyState {
  const state: TtyState = { ptys: new Map(), open: new Set(), fdData: new Map(), done: false };
  const planFor = (d: { index: number }): PtyPlan => {
    let p = state.ptys.get(d.index);
    if (!p) state.ptys.set(d.index, (p = { index: d.index, hasMaster: false, holders: [], controlled: [], terminal: false }));
    return p;
  };
  for (const proc of session.processes) {
    for (const r of proc.fds) {
      let d: TtyFdData | undefined;
      if (r.sameAs) d = state.fdData.get(`${r.sameAs.pid}:${r.sameAs.fd}`);
      else if (r.owner === NAME) d = r.data as TtyFdData;
      if (!d) continue;
      state.fdData.set(`${proc.pid}:${r.fd}`, d);
      const p = planFor(d);
      if (d.side === 'master') {
        p.hasMaster = true;
        if (d.packet) p.packet = true;
        if (d.locked) p.locked = true;
      } else if (!p.holders.includes(proc.pid)) {
        p.holders.push(proc.pid);
      }
      p.termios ??= d.termios;
      p.winsize ??= d.winsize;
      p.node ??= d.node;
      p.queued ??= d.queued;
      if (d.hungUp) p.hungUp = true;
    }
    const rec = proc.get<TtyProcessRecord>(NAME);
    if (rec?.ctty) {
      planFor(rec.ctty).controlled.push(proc.pid);
    }
  }
  if (opts.terminal) {
    const fd = restorerTerminal();
    if (fd === undefined) {
      throw new CkptError('ERR_CKPT_USAGE', 'ckpt restore --tty: ckpt restore has no terminal to give (none of its stdin, stdout and stderr is a terminal)', {
        hint: 'run ckpt restore --tty from a terminal (or under script, tmux, ssh -t), or restore without --tty',
      });
    }
    const index = imageTerminal(session, state);
    if (index === undefined) log('--tty: the image has no terminal: nothing to replace');
    else {
      state.ptys.get(index)!.terminal = true;
      state.terminal = { fd, index, termiosApplied: false, fgDone: false };
      log('--tty: pty %d of the image becomes our fd %d (%s)', index, fd, safeLink(`/proc/self/fd/${fd}`));
    }
  }
  return state;
}

function safeLink(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return path;
  }
}

/** --tty: the pty that was "the program's terminal": the first controlling terminal, else the first stdio pty. */
function imageTerminal(session: RestoreSession, state: TtyState): number | undefined {
  for (const proc of session.processes) {
    const rec = proc.get<TtyProcessRecord>(NAME);
    if (rec?.ctty) return rec.ctty.index;
  }
  for (const proc of session.processes) {
    for (const fd of [0, 1, 2]) {
      const d = state.fdData.get(`${proc.pid}:${fd}`);
      if (d?.side === 'slave') return d.index;
    }
  }
  return undefined;
}

export function stateOf(session: RestoreSession): TtyState {
  const s = states.of(session).state;
  if (!s) throw new Error('tty plugin: no restore state (beforeRestore did not run)');
  return s;
}

/** beforeRestore: makes the plan, and closes every fd of ours if the restore is rolled back. */
export function startRestore(session: RestoreSession, opts: TtyOptions, log: Logger): void {
  const state = plan(session, opts, log);
  states.of(session).state = state;
  session.onRollback(() => {
    // After beforeResume our masters belong to a forwarder or a keeper: they end with the
    // processes the rollback kills.
    if (state.done) return;
    state.done = true;
    for (const p of state.ptys.values()) if (p.master !== undefined) state.open.add(p.master);
    for (const fd of state.open) closeQuietly(fd);
    state.open.clear();
  });
}
