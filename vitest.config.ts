import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/build-fixtures.ts'],
    // The tests start real processes, share pid numbers and the machine's 2 cores: one file at a
    // time, each in its own forked worker.
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
