import { defineConfig } from 'tsup';
export default defineConfig({
  // schema.ts is its own entry so that scripts/gen-schema.mjs can load the zod schema without
  // the plugins (and the native engine) behind index.ts.
  entry: ['src/index.ts', 'src/schema.ts'],
  format: ['esm'],
  dts: { entry: 'src/index.ts' },
  clean: true,
  outDir: 'dist',
  target: 'node20',
  sourcemap: true,
  external: [/^@ckpt\//],
});
