#!/usr/bin/env node
// `npm run build`: the three wasm builds and the TypeScript build side by side (they share no files),
// then the browser bundles, which inline the wasm and read tsc's output.
//
//   node scripts/build.js
//
// The steps are the `build:*` scripts of package.json, run as they are; in parallel they take about half
// the time of one after another on two cores.
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = (name) => fileURLToPath(new URL(`../node_modules/.bin/${name}`, import.meta.url));

const WASM = ['release', 'relaxed', 'single'].map((target) => [BIN('asc'), 'assembly/index.ts', '--config', 'asconfig.json', '--target', target]);
const TS = [BIN('tsc'), '-p', 'tsconfig.build.json'];
const BUNDLE = [BIN('rollup'), '-c', '--silent'];

function run([cmd, ...args]) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: 'inherit', shell: process.platform === 'win32' });
    child.on('error', reject);
    child.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${args.join(' ')}: ${signal ?? `exit ${code}`}`))));
  });
}

/** Runs `jobs` with at most `width` at a time; the first failure ends the build once the running ones stop. */
async function pool(jobs, width) {
  const queue = [...jobs];
  const lane = async () => {
    while (queue.length) await run(queue.shift());
  };
  await Promise.all(Array.from({ length: Math.max(1, width) }, lane));
}

try {
  // tsc first in the queue: it is the longest step.
  await pool([TS, ...WASM], availableParallelism());
  await run(BUNDLE);
} catch (e) {
  console.error(`build failed: ${e.message}`);
  process.exit(1);
}
