/**
 * Test hosts for migrations: network namespaces on a bridge of their own (veth pairs), each
 * running a real sshd (Debian's openssh-server) on its address, with keys made for the run. They
 * share this machine's filesystem, pid namespace and ckpt; each has its own ckpt key directory, as
 * another machine would. Everything is removed by `remove()`: sshds, namespaces, the bridge, the
 * keys and configs.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI } from './helpers.js';

export interface TestHost {
  name: string;
  /** The network namespace (ip netns name). */
  ns: string;
  addr: string;
  /** The ckpt key directory of this host. */
  keyDir: string;
  /** The namespace's inode (as /proc/PID/ns/net shows it): a process runs "on" this host when its netns is this. */
  netns: string;
}

export interface TestHosts {
  hosts: TestHost[];
  byName: Record<string, TestHost>;
  /** The ssh command (argv) that reaches every host by its name. */
  ssh: string[];
  /** ckpt on a host, for `migrate --remote-ckpt` (argv): the host's key directory set. */
  remoteCkpt(host: TestHost): string[];
  /** argv prefix that runs a command in a host's network namespace (only that one: mounts are the machine's). */
  inNs(host: TestHost): string[];
  /** The subnet prefix, e.g. 10.201.17 (hosts are .10, .11, ...; free addresses for services from .100). */
  subnet: string;
  remove(): void;
}

const SSHD = '/usr/sbin/sshd';

export function sshdAvailable(): string | undefined {
  if (!fs.existsSync(SSHD)) return `no ${SSHD} (Debian's openssh-server: scripts/install-test-deps.sh installs it)`;
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'no ip netns (iproute2)';
  return undefined;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    /* already gone */
  }
}

export async function makeHosts(names: string[]): Promise<TestHosts> {
  const tag = Math.random().toString(16).slice(2, 6);
  const subnet = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ckpt-hosts-${tag}-`));
  const bridge = `ckb${tag}`;
  const hosts: TestHost[] = [];
  const sshds: number[] = [];
  const remove = () => {
    for (const pid of sshds) quietly(() => process.kill(pid, 'SIGKILL'));
    for (const h of hosts) quietly(() => sh('ip', ['netns', 'del', h.ns]));
    quietly(() => sh('ip', ['link', 'del', bridge]));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    sh('ip', ['link', 'add', bridge, 'type', 'bridge']);
    sh('ip', ['link', 'set', bridge, 'up']);
    sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'id')]);
    sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'hostkey')]);
    fs.copyFileSync(path.join(dir, 'id.pub'), path.join(dir, 'authorized_keys'));
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const client: string[] = [];
    names.forEach((name, i) => {
      const ns = `ck${tag}-${name}`;
      const addr = `${subnet}.${10 + i}`;
      const keyDir = path.join(dir, `keys-${name}`);
      fs.mkdirSync(keyDir, { mode: 0o700 });
      sh('ip', ['netns', 'add', ns]);
      const h: TestHost = { name, ns, addr, keyDir, netns: '' };
      hosts.push(h);
      const veth = `ckv${tag}${i}`;
      sh('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      sh('ip', ['link', 'set', veth, 'master', bridge, 'up']);
      sh('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      const cfg = path.join(dir, `sshd-${name}.conf`);
      fs.writeFileSync(
        cfg,
        [
          `ListenAddress ${addr}`,
          `HostKey ${path.join(dir, 'hostkey')}`,
          `PidFile ${path.join(dir, `sshd-${name}.pid`)}`,
          `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
          'PermitRootLogin prohibit-password',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'UsePAM no',
          'StrictModes no',
          'PrintMotd no',
          'LogLevel ERROR',
          '',
        ].join('\n'),
      );
      // nsenter, not ip netns exec (which makes a mount namespace per command): one mount namespace for all.
      const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', SSHD, '-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
      child.unref();
      sshds.push(child.pid!);
      client.push(
        `Host ${name}`,
        `  HostName ${addr}`,
        '  User root',
        `  IdentityFile ${path.join(dir, 'id')}`,
        '  IdentitiesOnly yes',
        '  UserKnownHostsFile /dev/null',
        '  StrictHostKeyChecking no',
        '  BatchMode yes',
        '  LogLevel ERROR',
      );
    });
    const config = path.join(dir, 'ssh_config');
    fs.writeFileSync(config, `${client.join('\n')}\n`);
    const ssh = ['ssh', '-F', config];
    for (const h of hosts) h.netns = nsInode(h.ns);
    // Every sshd answers, from every other host.
    for (const h of hosts) {
      const from = hosts.find((x) => x !== h) ?? h;
      let ok = false;
      for (let i = 0; i < 100 && !ok; i++) {
        ok = spawnSync('nsenter', [`--net=/run/netns/${from.ns}`, '--', ...ssh, h.name, 'true'], { stdio: 'ignore', timeout: 5000 }).status === 0;
        if (!ok) await new Promise((r) => setTimeout(r, 100));
      }
      if (!ok) throw new Error(`the test host ${h.name}'s sshd (${h.addr}) does not answer`);
    }
    return {
      hosts,
      byName: Object.fromEntries(hosts.map((h) => [h.name, h])),
      ssh,
      subnet,
      remoteCkpt: (h) => ['env', `CKPT_KEY_DIR=${h.keyDir}`, process.execPath, CLI],
      inNs: (h) => ['nsenter', `--net=/run/netns/${h.ns}`, '--'],
      remove,
    };
  } catch (e) {
    remove();
    throw e;
  }
}

function nsInode(ns: string): string {
  return `net:[${fs.statSync(`/run/netns/${ns}`).ino}]`;
}
