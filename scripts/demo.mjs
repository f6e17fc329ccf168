// npm run demo: start a real process, checkpoint it (it dies), restore it (same PID), and show
// that it continued where it was, with its memory intact.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'packages/cli/dist/bin.cjs');
const work = mkdtempSync(join(os.tmpdir(), 'ckpt-demo-'));
const bin = join(work, 'counter');
const log = join(work, 'counter.log');
const image = join(work, 'image');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ckpt = (...args) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
const lines = () => readFileSync(log, 'utf8').trim().split('\n');
const step = (s) => console.log(`\n\x1b[1m== ${s}\x1b[0m`);

execFileSync('gcc', ['-O1', '-o', bin, join(root, 'scripts/demo/counter.c')]);
let pid;
try {
  step('ckpt run: start the counter, detached, output to a file');
  pid = Number(ckpt('run', '--stdout', log, '--', bin));
  await sleep(1000);
  console.log(`pid ${pid}; last line: ${lines().at(-1)}`);

  step(`ckpt dump -t ${pid} -D ${image}  (checkpoint, then the process is killed)`);
  console.log(ckpt('dump', '-t', String(pid), '-D', image));
  const before = lines().at(-1);
  console.log(`last line before the dump: ${before}`);
  await sleep(500);
  console.log(`process ${pid} is ${isAlive(pid) ? 'STILL ALIVE (unexpected)' : 'gone'}`);

  step('ckpt show (what the image holds)');
  console.log(ckpt('show', image).split('\n').slice(0, 8).join('\n'));

  step(`ckpt restore -D ${image} --detach`);
  const restored = Number(ckpt('restore', '-D', image, '--detach'));
  console.log(`restored as pid ${restored} (${restored === pid ? 'same pid' : 'DIFFERENT PID'})`);
  await sleep(1000);
  process.kill(pid, 'SIGUSR1');
  await sleep(500);
  const after = lines();
  const i = after.indexOf(before);
  console.log(`output after the restore:\n  ${after.slice(i, i + 8).join('\n  ')}`);
  const ok = after.includes('heap check: intact') && restored === pid && after.length > i + 3;
  console.log(`\n${ok ? 'demo OK: the counter continued where it was, same pid, memory intact' : 'demo FAILED'}`);
  process.exitCode = ok ? 0 : 1;
} finally {
  if (pid)
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  rmSync(work, { recursive: true, force: true });
}

function isAlive(p) {
  try {
    const st = readFileSync(`/proc/${p}/stat`, 'utf8');
    return !/\) [ZX] /.test(st);
  } catch {
    return false;
  }
}
