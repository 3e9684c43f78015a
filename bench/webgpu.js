#!/usr/bin/env node
// Speed of the WebGPU backend on a 130m-shaped byte model: decode tok/s (greedy, one command buffer
// per token) and prefill tok/s of a long prompt, per weight dtype, and the dispatches a decode step
// records per layer (fused step and separate kernels, counted by the recorder). Runs under Node (Dawn, `webgpu`
// package) and Deno (navigator.gpu, wgpu) against the built package:
//
//   npm run bench:webgpu -- [--dtype f32,f16] [--prompt 2048] [--decode 128,512] [--chunk 64,256]
//                           [--model DIR | --shape 130m|mamba2-130m] [--json out.json]
//   deno run -A bench/webgpu.js --json out.json            # e.g. on a machine with a real GPU
//
// On software adapters (SwiftShader, lavapipe) pass a small --prompt: they are ~10x slower than WASM.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
// model.js, not index.js: the bench needs no worker runtime (and so no comlink), e.g. under a bare Deno.
const { Model } = await import(new URL('model.js', dist).href);
const { readModel } = await import(new URL('loader.js', dist).href);
const { syntheticModel, BENCH_SHAPES } = await import(new URL('synthetic.js', dist).href);
const { probe } = await import(new URL('probe.js', dist).href);
const { createWebGPUBackendWith, countStepDispatches } = await import(new URL('webgpu/backend.js', dist).href);

const { values } = parseArgs({
  options: {
    dtype: { type: 'string', default: 'f32,f16' },
    prompt: { type: 'string', default: '2048' },
    // Generation lengths: 128 (llama-bench's tg128) and 512, where the fixed read-back latency of
    // the first and last block (~10 ms each in Deno) weighs less.
    decode: { type: 'string', default: '128,512' },
    chunk: { type: 'string', default: '' },
    model: { type: 'string' },
    shape: { type: 'string', default: '130m' },
    json: { type: 'string' },
  },
});
const promptTokens = Number(values.prompt);
const decodeLengths = values.decode.split(',').map(Number);
const chunks = values.chunk ? values.chunk.split(',').map(Number) : [undefined];

// Without --model: random weights in realistic ranges with a published model's shapes (src/synthetic.ts).
const shape = BENCH_SHAPES[values.shape];
if (!values.model && !shape) throw new Error(`--shape must be one of ${Object.keys(BENCH_SHAPES).join(', ')}, got ${values.shape}`);
const { config, weights } = await readModel(values.model ?? { files: syntheticModel(shape.spec) });
const modelName = values.model ?? shape.label;

async function decodeRate(model, prompt, options, maxTokens) {
  let stats;
  for await (const c of model.generate(prompt, { maxTokens, ...options })) stats = c.stats ?? stats;
  return stats.decodeTokensPerSecond;
}

/** tok/s for each generation length, best of 2. */
async function decodeRates(model, prompt, options) {
  const out = {};
  for (const n of decodeLengths) {
    out[n] = Math.max(await decodeRate(model, prompt, options, n), await decodeRate(model, prompt, options, n));
  }
  return out;
}

/**
 * Dispatches a token step records per layer (and outside the layers): with the fused step (forced,
 * so that a software adapter shows it too) and with the separate kernels.
 */
async function dispatches(dtype) {
  const fused = await countStepDispatches(config, weights, { dtype, fused: true });
  const separate = await countStepDispatches(config, weights, { dtype, fused: false });
  return { fused, separate };
}

async function measure(dtype, chunk) {
  const backend = await createWebGPUBackendWith(config, weights, { dtype, chunk });
  const model = new Model(config, backend);
  try {
    const prompt = Uint8Array.from({ length: promptTokens }, (_, i) => 32 + ((i * 7919) % 95));
    // Warm-up: pipeline creation, first bind groups, driver shader compilation, for every chunk length used.
    const warm = backend.createState();
    await backend.forward(warm, prompt, 'last');
    backend.releaseState(warm);
    await decodeRate(model, prompt.subarray(0, 64), { temperature: 0 }, 64);

    const st = backend.createState();
    const t0 = performance.now();
    await backend.forward(st, prompt, 'last');
    const prefillMs = performance.now() - t0;
    backend.releaseState(st);
    const short = prompt.subarray(0, 64);
    // Greedy: decodeGreedy keeps argmax → embed on the GPU, one read-back per block of up to 64 tokens.
    const greedy = await decodeRates(model, short, { temperature: 0 });
    // Sampled: temperature / top-p draws on the GPU (sample_feed), the same blocks.
    const sampled = await decodeRates(model, short, { temperature: 0.8, seed: 1 });
    return {
      backend: 'webgpu',
      dtype,
      threads: 1,
      chunk: chunk ?? 'default',
      description: backend.description,
      fusedDecode: backend.fused,
      decodeTokPerSec: greedy[decodeLengths[0]],
      decodeSampledTokPerSec: sampled[decodeLengths[0]],
      decodeTokPerSecByLength: greedy,
      decodeSampledTokPerSecByLength: sampled,
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
  decodeTokens: decodeLengths,
  date: new Date().toISOString(),
};
console.log(`${device.runtime}; adapter: ${JSON.stringify(report.webgpu?.adapter ?? report.webgpu)}`);
console.log(`model: ${modelName}; prompt ${promptTokens}, decode ${decodeLengths.join(' and ')} tokens`);
const results = [];
const pad = (s, n) => String(s).padStart(n);
const cols = decodeLengths.flatMap((n) => [`greedy tg${n}`, `sampled tg${n}`]);
console.log(`\n${pad('dtype', 5)} ${pad('chunk', 7)} ${cols.map((c) => pad(c, 14)).join(' ')} ${pad('prefill tok/s', 13)} ${pad('TTFT ms', 8)}`);
const counts = {};
for (const dtype of values.dtype.split(',')) {
  counts[dtype] = await dispatches(dtype);
  for (const chunk of chunks) {
    const r = await measure(dtype, chunk);
    r.dispatchesPerLayer = (r.fusedDecode ? counts[dtype].fused : counts[dtype].separate).perLayer;
    results.push(r);
    const rates = decodeLengths.flatMap((n) => [r.decodeTokPerSecByLength[n], r.decodeSampledTokPerSecByLength[n]]);
    console.log(`${pad(dtype, 5)} ${pad(r.chunk, 7)} ${rates.map((x) => pad(x.toFixed(1), 14)).join(' ')} ${pad(r.prefillTokPerSec.toFixed(1), 13)} ${pad(r.timeToFirstTokenMs.toFixed(0), 8)}`);
  }
}
for (const [dtype, { fused, separate }] of Object.entries(counts)) {
  const fusedText = fused.fused ? `${fused.perLayer} a layer + ${fused.outside}` : 'does not apply to these shapes';
  console.log(
    `${dtype} dispatches per decode step: fused step ${fusedText}; separate kernels ${separate.perLayer} a layer + ${separate.outside}; ` +
      `the rows above ran the ${results.find((r) => r.dtype === dtype)?.fusedDecode ? 'fused step' : 'separate kernels'}`,
  );
}
if (values.json) {
  writeFileSync(values.json, JSON.stringify({ device, results }, null, 2) + '\n');
  console.log(`\nwrote ${values.json}`);
}
