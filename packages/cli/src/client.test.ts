// dist/ckpt-client (client/ckpt-client.c), the C way to `ckpt server`: it serves the commands
// served.ts's notServed serves, sends the request bin.ts sends, and writes what the server's lines
// say byte for byte, as bin.ts does. The server here is a socket of the test's (the real one is
// test/server.test.ts's, asked by both clients).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSION } from '@ckpt/core/version';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SENT_ENV, bundleTime, lineReader, namespaces, notServed } from './served.js';

const DIST = join(__dirname, '..', 'dist');
const CLIENT = join(DIST, 'ckpt-client');
/** The program npm links (a shell script first), which runs the client where a socket is there. */
const PROGRAM = join(__dirname, '..', 'bin', 'ckpt.js');

describe('dist/ckpt-client', () => {
  beforeAll(() => {
    if (!existsSync(CLIENT)) throw new Error(`${CLIENT} is not built (no C compiler?): npm run build makes it`);
  });

  it('serves the commands notServed serves, and no others', () => {
    const cases = [
      [],
      ['--version'],
      ['show', 'img'],
      ['dump', '-t', '1', '-D', 'x'],
      ['dump', '-t', '1', '-D', 'x', '--json', '--leave-running'],
      ['pre-dump', '-t', '1', '-D', 'x'],
      ['--json', 'dump', '-t', '1'],
      ['dump', '-v', '-t', '1'],
      ['dump', '--verbose'],
      ['dump', '--config=x.json'],
      ['dump', '-c', 'x.json'],
      ['dump', '--configx'],
      ['dump', '--plugin', 'p'],
      ['dump', '--log-file=/tmp/l'],
      ['dump', '--help'],
      ['-h'],
      ['restore', '-D', 'x'],
      ['restore', '-D', 'x', '-d'],
      ['restore', '-D', 'x', '--detach', '--json'],
      ['restore', '-d', '--inherit-fd', 'fd[3]:x'],
      ['restore', '-d', '--substitute=a=b'],
      ['restore', '-d', '-s', 'a=b'],
      ['restore', '-d', '--checkpoint-every', '5'],
      ['restore', '-d', '--checkpoint-everything'],
      ['run', '--', 'dump'],
      ['server'],
      ['check', '--repair'],
    ];
    for (const argv of cases) {
      const r = spawnSync(CLIENT, argv, { encoding: 'utf8', env: { ...process.env, CKPT_CLIENT_SERVED_WHY: '1' } });
      expect(r.stdout.trim(), `ckpt ${argv.join(' ')}`).toBe(notServed(argv) ?? 'served');
    }
  });

  describe('against a server socket', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'ckpt-unit-client-'));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    /** Runs the client against a server that answers each request with `answer(request)`'s lines. */
    async function ask(argv: string[], answer: (req: Record<string, unknown>) => object[], env: Record<string, string> = {}, program = CLIENT) {
      const socket = join(dir, `s${Math.random().toString(36).slice(2)}.sock`);
      let request: Record<string, unknown> | undefined;
      const server = net.createServer((c) => {
        c.on(
          'data',
          lineReader((line) => {
            if (request) return;
            request = JSON.parse(line);
            for (const m of answer(request!)) c.write(`${JSON.stringify(m)}\n`);
            c.end();
          }),
        );
      });
      await new Promise<void>((r) => server.listen(socket, r));
      try {
        const child = spawn(program, argv, { cwd: dir, env: { ...process.env, CKPT_SERVER_SOCKET: socket, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        child.stdout.on('data', (d) => out.push(d));
        child.stderr.on('data', (d) => err.push(d));
        const code = await new Promise<number | null>((r) => child.on('close', r));
        return { code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString(), request: request!, pid: child.pid };
      } finally {
        server.close();
      }
    }

    it("sends bin.ts's request: version, bundle, arguments, directory, environment, namespaces", async () => {
      const env = { CKPT_X: 'a "quoted"\tvalue\n', HOME: '/root/ü', TMPDIR: '/tmp', DEBUG: '', NOT_SENT: 'x' };
      const argv = ['dump', '-t', '1', '-D', 'dir "with" \\ quotes ✓', '--json'];
      const r = await ask(argv, () => [{ ok: 1 }, { exit: 0 }], env);
      expect(r.code).toBe(0);
      const sent = Object.fromEntries(Object.entries({ ...process.env, CKPT_SERVER_SOCKET: 'x', ...env }).filter(([k]) => SENT_ENV.test(k)));
      sent.CKPT_SERVER_SOCKET = (r.request.env as Record<string, string>).CKPT_SERVER_SOCKET;
      expect(r.request).toEqual({
        v: 1,
        client: 'c',
        version: VERSION,
        bundle: bundleTime(join(DIST, 'cli.cjs')),
        argv,
        cwd: dir,
        pid: r.pid,
        uid: process.geteuid!(),
        umask: process.umask(),
        env: sent,
        ns: namespaces(),
        tty: [false, false],
      });
    });

    it('writes the output lines byte for byte, to stdout and stderr, and exits with the status', async () => {
      const texts = ['plain\n', 'ü ✓ 𝄞 \u0000\u0001 "q" \\ / \b\f\r\t\n', '\ud834', '\udd1e', `${'x'.repeat(200_000)}\n`];
      const r = await ask(['dump', '-t', '1'], () => [{ ok: 7 }, ...texts.map((d, i) => ({ o: 1 + (i % 2), d })), { exit: 3 }]);
      expect(r.code).toBe(3);
      expect(r.stdout.equals(Buffer.from(texts[0] + texts[2] + texts[4], 'utf8'))).toBe(true);
      expect(r.stderr).toBe(Buffer.from(texts[1] + texts[3], 'utf8').toString());
    });

    it("a server that ends before the result: the command's one-line error (JSON with --json)", async () => {
      const r = await ask(['dump', '-t', '1', '--json'], () => [{ ok: 4242 }]);
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout.toString()).error).toMatchObject({ code: 'ERR_CKPT_SERVER_LOST' });
      expect(r.stderr).toMatch(/^ckpt: error: the ckpt server \(pid 4242\) ended during the command, before its result\nckpt: hint: /);
    });

    it("bin/ckpt.js runs it, started by its own path or through a link from another directory (npm's .bin)", async () => {
      const bin = join(dir, 'node_modules', '.bin');
      mkdirSync(bin, { recursive: true });
      symlinkSync(PROGRAM, join(bin, 'ckpt'));
      for (const program of [PROGRAM, join(bin, 'ckpt')]) {
        const r = await ask(['dump', '-t', '1'], () => [{ ok: 1 }, { o: 1, d: 'done\n' }, { exit: 0 }], {}, program);
        expect(r.request?.client, `${program}: the C client asked`).toBe('c');
        expect(r.stdout.toString()).toBe('done\n');
        expect(r.code).toBe(0);
      }
    });

    it('--version is answered without the server or Node', async () => {
      const r = await ask(['--version'], () => [{ refuse: 'not asked' }]);
      expect(r.request, 'asked the server').toBeUndefined();
      expect(r.stdout.toString()).toBe(`${VERSION}\n`);
      expect(r.code).toBe(0);
    });

    it('a refused command runs in Node, which asks no server again', async () => {
      // --version in Node: what it prints is the command's own (the refusal is not shown).
      const r = await ask(['dump', '--version'], () => [{ refuse: 'busy with another command' }]);
      expect(r.request.argv).toEqual(['dump', '--version']);
      expect(r.stderr).toBe('');
      expect(r.stdout.toString().trim()).toBe(VERSION);
      expect(r.code).toBe(0);
    });
  });
});
