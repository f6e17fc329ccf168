// Which tree shapes a restore can make again: the decisions of shape.ts on small trees. The real
// trees (dead and zombie leaders, a subreaper's orphans) are restored in test/tree.test.ts.
import { describe, expect, it } from 'vitest';
import { holderSession, shapeProblem, type Member } from './shape.js';

// root 10 (session 1 from outside, its own group), subreaper.
const root: Member = { pid: 10, ppid: 1, pgid: 10, sid: 1 };
const shape = (members: Member[], reapers = [10]) => ({ members: [root, ...members], reaper: (p: number) => reapers.includes(p) });

describe('tree shapes', () => {
  it('a child in its parent session needs no holder; a session leader neither', () => {
    const s = shape([
      { pid: 11, ppid: 10, pgid: 10, sid: 1 },
      { pid: 12, ppid: 10, pgid: 12, sid: 12 },
    ]);
    expect(s.members.map((m) => holderSession(m, s.members.find((p) => p.pid === m.ppid)?.sid))).toEqual([undefined, undefined, undefined]);
    expect(shapeProblem(s)).toBeUndefined();
  });

  it('an orphan of a dead session leader, given to a subreaper, is made through a holder of that session', () => {
    const orphan = { pid: 21, ppid: 10, pgid: 20, sid: 20 };
    const s = shape([orphan, { pid: 22, ppid: 21, pgid: 20, sid: 20 }]);
    expect(holderSession(orphan, root.sid)).toBe(20);
    expect(holderSession(s.members[2], orphan.sid), 'its own child inherits the session').toBeUndefined();
    expect(shapeProblem(s)).toBeUndefined();
  });

  it('the holder may be a zombie leader, when it is a child of the same parent', () => {
    const s = shape([
      { pid: 20, ppid: 10, pgid: 20, sid: 20, zombie: true },
      { pid: 21, ppid: 10, pgid: 20, sid: 20 },
    ]);
    expect(shapeProblem(s)).toBeUndefined();
    const far = shape([
      { pid: 11, ppid: 10, pgid: 10, sid: 1 },
      { pid: 20, ppid: 11, pgid: 20, sid: 20, zombie: true },
      { pid: 21, ppid: 10, pgid: 20, sid: 20 },
    ]);
    expect(shapeProblem(far)).toMatch(/pid 21 and other processes of session 20 .* different parents \(10, 11\)/);
  });

  it('refuses what the kernel would not hand back: a parent that is not a subreaper', () => {
    // 11 forked 21 in session 20, then 11 left that session (setsid): 21 is 11's child, yet not in its session.
    const s = shape(
      [
        { pid: 11, ppid: 10, pgid: 11, sid: 11 },
        { pid: 21, ppid: 11, pgid: 20, sid: 20 },
      ],
      [],
    );
    expect(shapeProblem(s)).toMatch(/pid 21 is in session 20, which its parent 11 is not in, and 11 is neither a child subreaper nor a pid namespace init/);
  });

  it('refuses an orphan of the session the tree was started from, and one whose session leader is alive elsewhere', () => {
    expect(
      shapeProblem(
        shape([
          { pid: 12, ppid: 10, pgid: 12, sid: 12 },
          { pid: 13, ppid: 12, pgid: 10, sid: 1 },
        ]),
      ),
    ).toMatch(/pid 13 is in session 1, the one the tree was started from/);
    expect(
      shapeProblem(
        shape([
          { pid: 12, ppid: 10, pgid: 12, sid: 12 },
          { pid: 14, ppid: 10, pgid: 12, sid: 12 },
        ]),
      ),
    ).toMatch(/pid 14 is in session 12, whose leader is in the checkpoint/);
  });

  it('two orphans of one dead session under different parents cannot share one holder', () => {
    const s = shape(
      [
        { pid: 11, ppid: 10, pgid: 11, sid: 11 },
        { pid: 21, ppid: 10, pgid: 20, sid: 20 },
        { pid: 22, ppid: 11, pgid: 20, sid: 20 },
      ],
      [10, 11],
    );
    expect(shapeProblem(s)).toMatch(/different parents/);
  });
});
