import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: run files one after another so timing-sensitive tests (abort, workers) are not starved.
    fileParallelism: false,
  },
});
