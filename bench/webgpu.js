#!/usr/bin/env node
// Speed of the WebGPU backend on a 130m-shaped byte model: decode tok/s (greedy, one command buffer
// per token) and prefill tok/s of a long prompt, per weight dtype. Runs under Node (Dawn, `webgpu`
// package) and Deno (navigator.gpu, wgpu) against the built package:
//
//   npm run bench:webgpu -- [--dtype f32,f16] [--prompt 2048] [--decode 128] [--model DIR] [--json out.json]
//   deno run -A bench/webgpu.js --json out.json            # e.g. on a machine with a real GPU
//
// On software adapters (SwiftShader, lavapipe) pass a small --prompt: they are ~10x slower than WASM.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
const { loadModel } = await import(new URL('index.js', dist).href);
const { syntheticModel } = await import(new URL('synthetic.js', dist).href);
const { probe } = await import(new URL('probe.js', dist).href);

const { values } = parseArgs({
  options: {
    dtype: { type: 'string', default: 'f32,f16' },
    prompt: { type: 'string', default: '2048' },
    decode: { type: 'string', default: '128' },
    model: { type: 'string' },
    json: { type: 'string' },
  },
});
const promptTokens = Number(values.prompt);
const decodeTokens = Number(values.decode);

// mamba-130m's shapes with a byte vocabulary, random weights in realistic ranges (src/synthetic.ts).
const SHAPE = { hidden_size: 768, num_hidden_layers: 24, state_size: 16, expand: 2, conv_kernel: 4, time_step_rank: 48, vocab_size: 256, seed: 1 };
const source = values.model ?? { files: syntheticModel(SHAPE) };
const modelName = values.model ?? 'random 130m-shaped byte model (D768 L24 N16 E1536 R48 V256, tied)';

const argmax = (x) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);

async function measure(dtype) {
  const model = await loadModel(source, { backend: 'webgpu', dtype });
  const backend = model.backend;
  try {
    const prompt = Uint8Array.from({ length: promptTokens }, (_, i) => 32 + ((i * 7919) % 95));
    // Warm-up: pipeline creation, first bind groups, driver shader compilation.
    const warm = backend.createState();
    await backend.forward(warm, prompt.subarray(0, Math.min(128, promptTokens)), 'last');
    for (let i = 0; i < 4; i++) await backend.forward(warm, prompt.subarray(i, i + 1), 'last');
    backend.releaseState(warm);

    const st = backend.createState();
    let t0 = performance.now();
    let logits = await backend.forward(st, prompt, 'last');
    const prefillMs = performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < decodeTokens; i++) logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last');
    const decodeMs = performance.now() - t0;
    backend.releaseState(st);
    return {
      backend: 'webgpu',
      dtype,
      threads: 1,
      description: backend.description,
      decodeTokPerSec: decodeTokens / (decodeMs / 1000),
      prefillTokPerSec: promptTokens / (prefillMs / 1000),
      timeToFirstTokenMs: prefillMs,
    };
  } finally {
    model.dispose();
  }
}

const report = await probe();
const device = {
  runtime: globalThis.Deno ? `deno ${globalThis.Deno.version.deno}` : `node ${process.version}`,
  webgpu: report.webgpu,
  model: modelName,
  promptTokens,
  decodeTokens,
  date: new Date().toISOString(),
};
console.log(`${device.runtime}; adapter: ${JSON.stringify(report.webgpu?.adapter ?? report.webgpu)}`);
console.log(`model: ${modelName}; prompt ${promptTokens}, decode ${decodeTokens}`);
const results = [];
const pad = (s, n) => String(s).padStart(n);
console.log(`\n${pad('dtype', 5)} ${pad('decode tok/s', 12)} ${pad('prefill tok/s', 13)} ${pad('TTFT ms', 8)}`);
for (const dtype of values.dtype.split(',')) {
  const r = await measure(dtype);
  results.push(r);
  console.log(`${pad(dtype, 5)} ${pad(r.decodeTokPerSec.toFixed(1), 12)} ${pad(r.prefillTokPerSec.toFixed(1), 13)} ${pad(r.timeToFirstTokenMs.toFixed(0), 8)}`);
}
if (values.json) {
  writeFileSync(values.json, JSON.stringify({ device, results }, null, 2) + '\n');
  console.log(`\nwrote ${values.json}`);
}
