/**
 * Hosts for migrations, for the tests (test/hosts.ts) and the bench: network namespaces on a bridge of their own (veth pairs), each
 * running a real sshd (Debian's openssh-server) on its address, with keys made for the run. They
 * share this machine's filesystem, pid namespace and ckpt; each has its own ckpt key directory, as
 * another machine would. Everything is removed by `remove()`: sshds, namespaces, the bridge, the
 * keys and configs.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SSHD = '/usr/sbin/sshd';

export function sshdAvailable() {
  if (!fs.existsSync(SSHD)) return `no ${SSHD} (Debian's openssh-server: scripts/install-test-deps.sh installs it)`;
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'no ip netns (iproute2)';
  return undefined;
}

function sh(cmd, args) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function quietly(fn) {
  try {
    fn();
  } catch {
    /* already gone */
  }
}

/**
 * Makes the hosts `names`; `cli`: the ckpt command line script each runs (remoteCkpt).
 * @param {string[]} names
 * @param {string} cli
 */
export async function makeHosts(names, cli) {
  const tag = Math.random().toString(16).slice(2, 6);
  const subnet = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ckpt-hosts-${tag}-`));
  const bridge = `ckb${tag}`;
  const hosts = [];
  const sshds = [];
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
    const client = [];
    names.forEach((name, i) => {
      const ns = `ck${tag}-${name}`;
      const addr = `${subnet}.${10 + i}`;
      const keyDir = path.join(dir, `keys-${name}`);
      fs.mkdirSync(keyDir, { mode: 0o700 });
      sh('ip', ['netns', 'add', ns]);
      const h = { name, ns, addr, keyDir, netns: '' };
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
      sshds.push(child.pid);
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
      remoteCkpt: (h) => ['env', `CKPT_KEY_DIR=${h.keyDir}`, process.execPath, cli],
      inNs: (h) => ['nsenter', `--net=/run/netns/${h.ns}`, '--'],
      remove,
    };
  } catch (e) {
    remove();
    throw e;
  }
}

function nsInode(ns) {
  return `net:[${fs.statSync(`/run/netns/${ns}`).ino}]`;
}
