#!/usr/bin/env node
/**
 * The `ckpt` command's entry. `ckpt --version` answers from a module of its own, without loading
 * the CLI and its plugins (main.ts), which takes most of a start-up.
 */
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  const { VERSION } = await import('@ckpt/core/version');
  process.stdout.write(`${VERSION}\n`);
} else {
  await import('./main.js');
}

export {};
