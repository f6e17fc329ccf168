/**
 * Which tree shapes a restore can make again, decided at dump from pids alone (pure, unit-tested).
 *
 * A process inherits its session from whoever forks it, and can only make a session of its own
 * (setsid), never join another. So a process that sits in a session its parent is not in was
 * reparented: the process that forked it died, and the kernel gave it to its nearest child
 * subreaper (or the pid namespace's init). Restore does it the same way: a *holder* of the session
 * is forked from that parent (the session's leader if it is a zombie of the image, else a helper
 * with the dead leader's pid that calls setsid), the process is forked from the holder, and when
 * the holder exits the kernel hands the process to the parent again. Process groups are simpler:
 * any process of the session can join any group of it, so a group whose leader is gone is made
 * again by a helper (or the zombie leader) that calls setpgid(0, 0) until the members joined.
 */

export interface Member {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  zombie?: boolean;
}

export interface Shape {
  /** Every process and zombie of the image, the root first. */
  members: Member[];
  /** True when the process gets its orphaned descendants (child subreaper, or pid namespace init). */
  reaper(pid: number): boolean;
}

/**
 * The session a member must be forked into through a holder, or undefined when its parent's
 * (`parentSid`; undefined: no parent in the image) will do.
 */
export function holderSession(m: Member, parentSid: number | undefined): number | undefined {
  return m.sid !== m.pid && parentSid !== undefined && parentSid !== m.sid ? m.sid : undefined;
}

/** Why a restore could not make this tree again (names the process), or undefined when it can. */
export function shapeProblem(shape: Shape): string | undefined {
  const [root] = shape.members;
  const byPid = new Map(shape.members.map((m) => [m.pid, m]));
  const what = (m: Member) => (m.zombie ? `zombie ${m.pid}` : `pid ${m.pid}`);
  const holderParent = new Map<number, number>();
  for (const m of shape.members) {
    if (m === root) continue;
    const s = holderSession(m, shape.members.find((p) => p.pid === m.ppid && !p.zombie)?.sid);
    if (s === undefined) continue;
    const leader = byPid.get(s);
    if (s === root.sid && !leader) {
      return `${what(m)} is in session ${s}, the one the tree was started from, but its parent ${m.ppid} is not: a restore cannot put it back in that session`;
    }
    if (leader && !leader.zombie) {
      return `${what(m)} is in session ${s}, whose leader is in the checkpoint but is not its parent ${m.ppid} nor in its parent's session: a restore cannot give it that session and that parent both`;
    }
    if (!shape.reaper(m.ppid)) {
      return `${what(m)} is in session ${s}, which its parent ${m.ppid} is not in, and ${m.ppid} is neither a child subreaper nor a pid namespace init: a restore cannot give it that session and that parent both`;
    }
    const via = leader?.zombie ? leader.ppid : (holderParent.get(s) ?? m.ppid);
    if (via !== m.ppid) {
      return `${what(m)} and other processes of session ${s} (whose leader is gone) have different parents (${m.ppid}, ${via}): a restore can give that session to the children of one parent only`;
    }
    holderParent.set(s, via);
  }
  return undefined;
}
