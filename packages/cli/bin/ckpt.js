#!/bin/sh
':' //; s=${CKPT_SERVER_SOCKET:-/run/ckpt/ckpt.sock}; [ -S "$s" ] && [ "$CKPT_SERVER" != off ] && { c=${0%/*}/../dist/ckpt-client; [ -x "$c" ] || { c=$(readlink -f -- "$0") && c=${c%/*/*}/dist/ckpt-client; }; [ -x "$c" ] && exec "$c" "$@"; }; [ "${NODE_EXTRA_CA_CERTS+set}" ] && export CKPT_NODE_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS" && unset NODE_EXTRA_CA_CERTS; exec node "$0" "$@"
// Stable entry for the `ckpt` bin (exists before the build, so npm can link it on install).
//
// Run as a program (npx ckpt, a PATH lookup, ./bin/ckpt.js), the file is first a shell script:
// line 2 is `:` for sh, then it starts node on this same file, where line 2 is a string and a
// comment. The shell's main job: Node parses every certificate of NODE_EXTRA_CA_CERTS and its own
// root store at start-up, before any script runs (77 of the 111 ms of `node -e 0` here, with
// Debian's bundle of 144), for TLS that ckpt never makes. So node starts without it, and it is put
// back in process.env below, exactly as it was (set or not, empty or not): the programs ckpt starts
// (`ckpt run`) and plugins see it. A plugin that talks TLS to a private CA passes it as `ca`.
// `node bin/ckpt.js` skips the shell and pays Node's start-up as the environment asks.
//
// First, where a `ckpt server` socket is there (CKPT_SERVER_SOCKET, else /run/ckpt/ckpt.sock) and
// CKPT_SERVER is not `off`, the shell runs dist/ckpt-client (client/ckpt-client.c, built where a C
// compiler is), found at ../dist/ckpt-client from the path it was started by, or else from this
// file's real path (readlink -f, a process more: npm's bin links): it asks the server without starting Node,
// and starts Node on this file itself for what the server does not run.
//
// CommonJS (bin/package.json): Node's ES module loader would cost some 15 ms at every start.
if (process.env.CKPT_NODE_EXTRA_CA_CERTS !== undefined) {
  process.env.NODE_EXTRA_CA_CERTS = process.env.CKPT_NODE_EXTRA_CA_CERTS;
  delete process.env.CKPT_NODE_EXTRA_CA_CERTS;
}
try {
  require.resolve('../dist/bin.cjs');
} catch {
  process.stderr.write('ckpt: error: ckpt is not built yet; run `npm run build` at the repository root\n');
  process.exit(1);
}
require('../dist/bin.cjs');
