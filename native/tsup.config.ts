import { defineConfig } from 'tsup';
export default defineConfig({
  entry: ['lib/index.ts'],
  format: ['esm'],
  dts: true,
  clean: false,
  outDir: 'dist',
  target: 'node20',
  sourcemap: true,
});
