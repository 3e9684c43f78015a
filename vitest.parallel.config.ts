import { relative } from 'node:path';
import { configDefaults, defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import base, { TIMED } from './vitest.config.js';

/**
 * Seconds each of the slow files took in `npm test` on the 2-core development VM (CI=true, what
 * `.ci/run` installs; re-measure with `npx vitest run -c vitest.parallel.config.ts
 * --reporter=json --outputFile=t.json`). Files not listed take a few seconds.
 */
const SECONDS: Record<string, number> = {
  'test/surfaces-bench-page.test.ts': 35,
  'test/browser/worker-chromium.test.ts': 29,
  'test/bounds.test.ts': 29,
  'test/vocab.test.ts': 23,
  'test/cancel.test.ts': 19,
  'test/surfaces-browser.test.ts': 17,
  'test/cli.test.ts': 17,
  'test/fuzz.test.ts': 16,
  'test/sizes.test.ts': 13,
  'test/conformance.test.ts': 11,
  'test/surfaces-electron.test.ts': 8,
  'test/tokenizer.test.ts': 7,
  'test/package.test.ts': 7,
};

/**
 * Longest first: two workers then finish together (a fresh clone has no timing cache, and vitest's
 * default order, largest file first, once left the longest file to start last and run alone).
 */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const cost = (f: TestSpecification) => SECONDS[relative(this.ctx.config.root, f.moduleId).replaceAll('\\', '/')] ?? 3;
    return [...files].sort((a, b) => cost(b) - cost(a));
  }
}

// `npm test`, first part: every file but the timed ones, two files at a time (most of a WebGPU or
// browser test's time is a software adapter or a child process, not this process's JavaScript).
export default defineConfig({
  test: {
    ...base.test,
    exclude: [...configDefaults.exclude, ...TIMED],
    fileParallelism: true,
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
  },
});
