#!/usr/bin/env node
/**
 * Writes schema/ckpt.config.schema.json, the JSON schema editors use for ckpt.config.json
 * ("$schema": "./node_modules/@ckpt/api/schema.json"), from the zod schema the loader validates
 * with, so that the two cannot disagree. Runs after tsup (it loads the built dist/schema.js);
 * the generated file is committed, and a unit test checks that it is up to date.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { configJsonSchema } = await import(join(root, 'dist/schema.js'));
const out = join(root, 'schema/ckpt.config.schema.json');
const text = `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
let old = '';
try {
  old = readFileSync(out, 'utf8');
} catch {
  /* first run */
}
// Unchanged: leave the file (and its mtime) alone, so a build does not dirty the work tree.
if (text !== old) {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, text);
  console.log(`wrote ${out}`);
}
