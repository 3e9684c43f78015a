import { configDefaults, defineConfig } from 'vitest/config';
import base, { TIMED } from './vitest.config.js';

// `npm test`, first part: every file but the timed ones, two files at a time (most of a WebGPU or
// browser test's time is a software adapter compiling pipelines or a child process starting).
export default defineConfig({ test: { ...base.test, exclude: [...configDefaults.exclude, ...TIMED], fileParallelism: true, maxWorkers: 2 } });
