import { defineConfig } from 'tsup';
// The CLI is bundled with @ckpt/api, the built-in plugins and commander: one file to load instead
// of some hundred (start-up time). @ckpt/core stays a module of its own, the one instance every
// plugin (built-in or the user's, loaded by name) shares; so do @ckpt/native and the libraries
// core and the plugins share (zod: schemas cross between them).
export default defineConfig({
  entry: ['src/bin.ts', 'src/main.ts', 'src/index.ts'],
  format: ['esm'],
  dts: { entry: 'src/index.ts' },
  clean: true,
  outDir: 'dist',
  target: 'node20',
  sourcemap: true,
  external: ['@ckpt/core', '@ckpt/native', 'zod', 'picomatch', 'debug', 'typedi', 'tapable', 'reflect-metadata'],
  noExternal: [/^@ckpt\/(api|plugin-)/, 'commander'],
  // CommonJS code in the bundle requires Node's own modules.
  banner: { js: "import { createRequire as __ckptRequire } from 'node:module'; const require = __ckptRequire(import.meta.url);" },
});
