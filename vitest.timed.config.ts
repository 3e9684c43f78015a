import { defineConfig } from 'vitest/config';
import base, { TIMED } from './vitest.config.js';

// `npm test`, second part: the files that measure time or memory, alone and one after another.
export default defineConfig({ test: { ...base.test, include: TIMED, fileParallelism: false } });
