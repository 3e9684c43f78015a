import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Files whose assertions measure wall time or memory (RSS growth, idle workers' CPU, stop-matching
 * cost against a plain run): `npm test` runs them alone, one after another, once the
 * other files (two at a time, vitest.parallel.config.ts) are done. (bounds.test.ts bounds CPU time,
 * which another process does not inflate; its wall-time guards are hang guards.)
 */
export const TIMED = ['test/memory.test.ts', 'test/wasm-runtime.test.ts', 'test/generate.test.ts'];

// This file alone (`npx vitest run [file]`): every test file, one after another.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: configDefaults.exclude,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: files one after another, so timing-sensitive tests (abort, workers) are not starved.
    fileParallelism: false,
  },
});
