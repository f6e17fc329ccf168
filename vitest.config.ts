import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Global (vitest does not take it per project): the e2e files must run one at a time.
    fileParallelism: false,
    projects: [
      {
        // Unit tests next to the code they test: no processes, no fixtures, run in parallel.
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts', 'plugins/*/src/**/*.test.ts'],
          // Modules the loader tests write into their temporary directories (ckpt-unit-*) are
          // imported by Node itself, as the CLI imports them, not transformed by vitest (which
          // would treat CommonJS as ESM and turn a SyntaxError into a transform error). Except
          // .mjs files, which vitest always transforms: the tests use .js in module packages.
          server: { deps: { external: [/\/ckpt-unit-[^/]+\//] } },
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          globalSetup: ['test/setup/build-fixtures.ts'],
          // The tests start real processes, share pid numbers and the machine's 2 cores: each file
          // in its own forked worker, one at a time (fileParallelism, above, is global).
          pool: 'forks',
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
