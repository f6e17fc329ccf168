import { defineConfig } from 'tsup';
export default defineConfig({
  entry: ['src/bin.ts', 'src/index.ts'],
  format: ['esm'],
  dts: { entry: 'src/index.ts' },
  clean: true,
  outDir: 'dist',
  target: 'node20',
  sourcemap: true,
  banner: ({ format }) => ({}),
  external: [/^@ckpt\//],
});
