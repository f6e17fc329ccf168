#!/usr/bin/env node
// Codemod: the flat `native` facade of @ckpt/native became a grouped one. Rewrites every
// `native.NAME` (call or member access) into `native.GROUP.NAME` in .ts/.mts/.mjs/.js files.
//
//   node scripts/codemods/native-groups.mjs [--dry-run] [DIR...]    (default: packages plugins test scripts examples)
//
// Skips node_modules and dist (and .git, .turbo). Idempotent: group names are no function
// names, so `native.ptrace.seize` is left alone by a second run. Prints the replacements per
// file. Only `native` as a plain identifier is rewritten (not `x.native.NAME`), and only for the
// names below; destructuring of `native` and `native[...]` are reported, not rewritten.
import { readdirSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The one table: group -> the functions in it (as native/lib/groups.ts). */
export const GROUPS = {
  ptrace: [
    'seize',
    'interruptAndWait',
    'waitStop',
    'cont',
    'detach',
    'setOptions',
    'takeSuppressedSignals',
    'getRegs',
    'setRegs',
    'getXstate',
    'setXstate',
    'getSigmask',
    'setSigmask',
    'getRseq',
    'getRobustList',
    'peekSiginfo',
    'remoteSyscall',
  ],
  mem: ['pagemapRuns', 'dumpPages', 'restorePages', 'readMem', 'writeMem'],
  crc: ['crc32c', 'crc32cFile'],
  proc: ['spawnStub', 'spawnDetached', 'pidfdOpen', 'pidfdGetfd', 'kcmp', 'tryWait'],
  fd: ['pipe', 'pipeSize', 'peekPipe', 'fcntl', 'lseek', 'memfdCreate', 'openByHandleAt'],
  events: ['eventfd', 'epollCreate', 'signalfd', 'timerfd', 'inotifyInit', 'inotifyAddWatch', 'inotifyRmWatch'],
  ipc: ['ipcSnapshot', 'ipcCreate', 'ipcRemove'],
  sock: [
    'sockGetInt',
    'sockSetInt',
    'sockGetBytes',
    'sockSetBytes',
    'sockListen',
    'unixDiag',
    'unixNetns',
    'unixSocket',
    'unixSocketpair',
    'unixBind',
    'unixConnect',
    'unixAccept',
    'unixShutdown',
    'unixGetsockopt',
    'unixName',
    'unixPeek',
    'unixSend',
    'inetSocket',
    'sockInfo',
    'sockBind',
    'sockConnect',
    'tcpRepair',
    'tcpDumpConn',
    'tcpSetQueueSeqs',
    'tcpRepairFill',
    'udpPeek',
    'udpInject',
    'tcpDiag',
    'tcpDestroy',
    'tcpResetSocket',
  ],
};

/** Functions merged into another one (same arguments, same behaviour): old name -> new name. */
export const RENAMED = { unixListen: 'sockListen', unixSetsockopt: 'sockSetBytes' };

/** old flat name -> 'group.name', derived from the two tables above. */
export const MAPPING = (() => {
  const m = new Map();
  for (const [group, names] of Object.entries(GROUPS)) for (const n of names) m.set(n, `${group}.${n}`);
  for (const [old, now] of Object.entries(RENAMED)) m.set(old, m.get(now));
  for (const g of Object.keys(GROUPS)) if (m.has(g)) throw new Error(`group ${g} is also a function name: the codemod would not be idempotent`);
  return m;
})();

const EXTS = ['.ts', '.mts', '.mjs', '.js'];
const SKIP = new Set(['node_modules', 'dist', '.git', '.turbo']);
// `native` as an identifier (not a property, not part of a longer name), `.`, a name.
const ACCESS = /(?<![\w$.])native(\s*)\.(\s*)([A-Za-z_$][\w$]*)(?![\w$])/g;
const SUSPECT = [/\{[^{}]*\}\s*=\s*native(?![\w$.])/, /(?<![\w$.])native\s*\[/];

/** The rewritten text and the number of replacements. */
export function rewrite(text) {
  let count = 0;
  const out = text.replace(ACCESS, (whole, s1, s2, name) => {
    const to = MAPPING.get(name);
    if (!to) return whole;
    count++;
    return `native${s1}.${s2}${to}`;
  });
  return { text: out, count };
}

const SELF = fileURLToPath(import.meta.url);

function* files(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(e.name)) continue;
    const p = join(dir, e.name);
    if (resolve(p) === SELF) continue;
    if (e.isDirectory()) yield* files(p);
    else if (e.isFile() && EXTS.some((x) => e.name.endsWith(x))) yield p;
  }
}

// Warns when native/lib/groups.ts (next to this script in the repository) no longer matches GROUPS.
function checkAgainstFacade() {
  const src = join(dirname(fileURLToPath(import.meta.url)), '../../native/lib/groups.ts');
  if (!existsSync(src)) return;
  const text = readFileSync(src, 'utf8');
  const there = new Map();
  for (const m of text.matchAll(/^\s{2}(\w+): \[([^\]]*)\]/gm))
    there.set(
      m[1],
      [...m[2].matchAll(/'(\w+)'/g)].map((x) => x[1]),
    );
  const here = new Map(Object.entries(GROUPS));
  const same = there.size === here.size && [...here].every(([g, n]) => there.get(g)?.join() === n.join());
  if (!same) console.warn(`warning: ${relative(process.cwd(), src)} and this codemod's GROUPS differ; the mapping may be stale`);
}

function main(argv) {
  const dry = argv.includes('--dry-run');
  const dirs = argv.filter((a) => !a.startsWith('--'));
  const roots = dirs.length ? dirs : ['packages', 'plugins', 'test', 'scripts', 'examples'];
  checkAgainstFacade();
  let total = 0;
  let changed = 0;
  for (const root of roots) {
    if (!existsSync(root) || !statSync(root).isDirectory()) {
      if (dirs.length) console.warn(`skipped ${root}: no such directory`);
      continue;
    }
    for (const f of files(root)) {
      const before = readFileSync(f, 'utf8');
      const { text, count } = rewrite(before);
      for (const re of SUSPECT)
        if (re.test(text)) console.warn(`${f}: uses \`native\` in a way the codemod does not rewrite (destructuring or native[...]): check by hand`);
      if (!count) continue;
      if (!dry) writeFileSync(f, text);
      console.log(`${f}: ${count} replacement${count === 1 ? '' : 's'}`);
      total += count;
      changed++;
    }
  }
  console.log(`${dry ? '(dry run) ' : ''}${total} replacement${total === 1 ? '' : 's'} in ${changed} file${changed === 1 ? '' : 's'}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv.slice(2));
