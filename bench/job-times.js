#!/usr/bin/env node
// The distribution of one job shape's wall time, split over 2 threads and on one thread, in the decode loop
// of the 130m-shaped model: what the wasm runtime's Pacer (src/wasm/runtime.ts) has to tell apart. The
// runtime is made to alternate the two ways every 8 tokens (so both meet the same machine), and the times
// of the in_proj GEMV jobs (the largest shape, 48 a token) are kept; --busy adds one busy process pinned to
// core 0, as `npm run bench -- --contention` does.
//
//   npm run build && node bench/job-times.js [--dtype q8] [--tokens 1000] [--busy]
import { parseArgs } from 'node:util';
import { startHog } from './contention.js';

const dist = new URL('../dist/src/', import.meta.url);
const { createWasmBackend } = await import(new URL('wasm/backend.js', dist).href);
const { readModel } = await import(new URL('loader.js', dist).href);
const { syntheticModel, MAMBA_130M_BYTES } = await import(new URL('synthetic.js', dist).href);
const { KERNEL } = await import(new URL('wasm/layout.js', dist).href);
const { paceKey } = await import(new URL('wasm/runtime.js', dist).href);

const { values } = parseArgs({
  options: { dtype: { type: 'string', default: 'q8' }, tokens: { type: 'string', default: '1000' }, busy: { type: 'boolean', default: false } },
});
const { config, weights } = await readModel({ files: syntheticModel(MAMBA_130M_BYTES) });
const backend = await createWasmBackend(config, weights, { dtype: values.dtype, threads: 2 });
const rt = backend.runtime;
if (rt.threads !== 2) throw new Error(`needs 2 threads (${rt.threadNote})`);
// The Pacer's two hooks, replaced: `solo()` by the forced alternation, `record()` by a sample store.
const { dModel: D, dInner: E } = config;
const key = paceKey(KERNEL.MATMUL, D * E); // an in_proj job: T = 1, D × E multiply-adds
const samples = { split: [], solo: [] };
let solo = false;
rt.pacer.solo = () => solo;
rt.pacer.record = (k, split, ms) => {
  if (k === key) samples[split ? 'split' : 'solo'].push(ms * 1000);
};
const hog = values.busy ? startHog() : null;
try {
  if (hog) await new Promise((r) => setTimeout(r, 300));
  const st = backend.createState();
  let logits = await backend.forward(st, new TextEncoder().encode('The '), 'last');
  const argmax = (x) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
  for (let i = 0; i < 64; i++) logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last'); // warm-up
  samples.split.length = samples.solo.length = 0;
  for (let i = 0; i < Number(values.tokens); i++) {
    solo = (i >> 3) % 2 === 1;
    logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last');
  }
} finally {
  hog?.stop();
  backend.dispose();
}
console.log(`in_proj [${E}, ${D}] ${values.dtype} jobs, µs, ${values.busy ? 'one busy process on core 0' : 'no extra load'}`);
console.log('way          jobs     mean   p50   p90   p99  p99.9     max  > 300 µs');
for (const [way, xs] of Object.entries(samples)) {
  const s = xs.sort((a, b) => a - b);
  const q = (p) => s[Math.floor(p * (s.length - 1))].toFixed(0).padStart(5);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const over = s.filter((x) => x > 300).length;
  console.log(`${way.padEnd(8)} ${String(s.length).padStart(8)} ${mean.toFixed(1).padStart(8)} ${q(0.5)} ${q(0.9)} ${q(0.99)} ${q(0.999)} ${s[s.length - 1].toFixed(0).padStart(7)}  ${over} (${((100 * over) / s.length).toFixed(2)} %)`);
}
