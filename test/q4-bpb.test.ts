/**
 * The bar for q4: on the bundled model, bits per byte at q4 within 0.05 of f32, on the committed
 * validation excerpt. Prefill (the dequantised-tile GEMM) over the whole excerpt, and step-by-step decode
 * (the integer GEMV, x quantised per 32-block) over its first bytes.
 *
 * The relaxed-SIMD build is switched on (Node 20 keeps it behind a V8 flag; Chromium and Deno have it), so
 * decode here takes its i8 dot products; the SIMD128 build rounds x to the same int8 values
 * (test/wasm-kernels.test.ts bounds both), and the conformance table runs it.
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { defaultModelSource } from '../src/defaults.js';
import { loadModel, type Model } from '../src/index.js';
import type { WasmBackend } from '../src/wasm/backend.js';

setFlagsFromString('--experimental-wasm-relaxed-simd');

const dir = defaultModelSource();
const excerpt = new Uint8Array(readFileSync(`${dir}val-excerpt.txt`));
// PyTorch's f32 figure for the excerpt; test/default-model.test.ts holds the wasm f32 path to it within 0.01.
const recorded = JSON.parse(readFileSync(`${dir}val-excerpt.json`, 'utf8')) as { bits_per_byte: number };
const DECODE_BYTES = 600;

let f32: Model, q4: Model;
beforeAll(async () => {
  f32 = await loadModel(dir, { backend: 'wasm', dtype: 'f32', threads: 1 });
  q4 = await loadModel(dir, { backend: 'wasm', dtype: 'q4', threads: 1 });
});
afterAll(() => {
  f32?.dispose();
  q4?.dispose();
});

/** Bits per byte of bytes[1..n) from step-by-step decode logits (one forward per byte). */
async function decodeBpb(m: Model, bytes: Uint8Array): Promise<number> {
  const V = m.config.vocabSize;
  const state = m.backend.createState();
  let nats = 0;
  try {
    for (let t = 0; t + 1 < bytes.length; t++) {
      const row = await m.backend.forward(state, Uint32Array.of(bytes[t]), 'last');
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, row[v]);
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(row[v] - max);
      nats += Math.log(sum) + max - row[bytes[t + 1]];
    }
  } finally {
    m.backend.releaseState(state);
  }
  return nats / (bytes.length - 1) / Math.LN2;
}

test('q4 weights: bits per byte of the validation excerpt within 0.05 of f32 (prefill)', async () => {
  expect((q4.backend as WasmBackend).weightBytes).toBeLessThan((f32.backend as WasmBackend).weightBytes / 5);
  const b = await q4.bitsPerByte(excerpt);
  console.log(`bits per byte, ${excerpt.length} bytes: f32 ${recorded.bits_per_byte} (PyTorch), q4 ${b.toFixed(4)} (prefill)`);
  expect(Math.abs(b - recorded.bits_per_byte)).toBeLessThan(0.05);
});

test(`q4 weights, relaxed-SIMD int8 decode: bits per byte of the first ${DECODE_BYTES} bytes within 0.05 of f32`, async () => {
  expect((q4.backend as WasmBackend).runtime.relaxed).toBe(true);
  const bytes = excerpt.subarray(0, DECODE_BYTES);
  const a = await decodeBpb(f32, bytes);
  const b = await decodeBpb(q4, bytes);
  // The same bytes through q4 prefill: what the int8 activations add on top of the q4 weights.
  const c = await q4.bitsPerByte(bytes);
  console.log(`bits per byte, ${DECODE_BYTES} bytes: f32 ${a.toFixed(4)}, q4 decode ${b.toFixed(4)}, q4 prefill ${c.toFixed(4)}`);
  expect(Math.abs(b - a)).toBeLessThan(0.05);
  expect(Math.abs(b - c)).toBeLessThan(0.01);
});
