/**
 * Test hosts for migrations (scripts/hosts.mjs, shared with the bench): network namespaces on a
 * bridge of their own, each running a real sshd with keys made for the run, and a ckpt key
 * directory of its own.
 */
// @ts-expect-error: a JavaScript module of the bench's, typed below
import { makeHosts as make, sshdAvailable as available } from '../scripts/hosts.mjs';
import { CLI } from './helpers.js';

export interface TestHost {
  name: string;
  /** The network namespace (ip netns name). */
  ns: string;
  addr: string;
  /** The ckpt key directory of this host. */
  keyDir: string;
  /** The namespace as /proc/PID/ns/net shows it: a process runs "on" this host when its netns is this. */
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

/** Why there can be no test hosts here, or undefined. */
export const sshdAvailable: () => string | undefined = available;

export function makeHosts(names: string[]): Promise<TestHosts> {
  return make(names, CLI);
}
