#!/usr/bin/env node
// Speed of the WebGPU backend on a 130m-shaped byte model: decode tok/s (greedy, one command buffer
// per token) and prefill tok/s of a long prompt, per weight dtype, and the dispatches a decode step
// records per layer (fused step and separate kernels, counted by the recorder). Runs under Node (Dawn, `webgpu`
// package) and Deno (navigator.gpu, wgpu) against the built package:
//
//   npm run bench:webgpu -- [--dtype f32,f16,q8,q4] [--prompt 2048] [--decode 128,512] [--chunk 64,256]
//                           [--model DIR | --shape 130m|mamba2-130m|130m-hf|370m-hf|790m-hf|1.4b-hf|2.8b-hf]
//                           [--json out.json]
//   deno run -A bench/webgpu.js --json out.json            # e.g. on a machine with a real GPU
//
// --shape NAME-hf: random weights in the exact shapes of state-spaces/mamba-NAME-hf (vocabulary 50280),
// made block by block while the GPU layouts are built (syntheticWeights' `lazy`): the host holds the
// embedding and one block of float32, not the model (a 2.8b f32 model is 11 GB). Their vocabulary is
// wider than bytes, so decode runs the backend's on-GPU loop (decodeGreedy / decodeSampled, blocks of
// 64) directly rather than through model.generate (which draws bytes only without a tokenizer).
//
// On software adapters (SwiftShader, lavapipe) pass a small --prompt: they are ~10x slower than WASM,
// e.g. --shape 130m-hf --dtype f32 --prompt 4 --decode 4.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
// model.js, not index.js: the bench needs no worker runtime (and so no comlink), e.g. under a bare Deno.
const { Model } = await import(new URL('model.js', dist).href);
const { readModel } = await import(new URL('loader.js', dist).href);
const { syntheticWeights, BENCH_SHAPES } = await import(new URL('synthetic.js', dist).href);
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
const { config, weights } = values.model ? await readModel(values.model) : syntheticWeights(shape.spec, { lazy: true });
const modelName = values.model ?? shape.label;
// Without a tokenizer, model.generate draws bytes only, and keeps decoding on the GPU only when the head is that wide.
const deviceLoop = config.vocabSize > 256;

async function decodeRate(model, prompt, options, maxTokens) {
  if (deviceLoop) return deviceDecodeRate(model.backend, prompt, options, maxTokens);
  let stats;
  for await (const c of model.generate(prompt, { maxTokens, ...options })) stats = c.stats ?? stats;
  return stats.decodeTokensPerSecond;
}

/** As model.generate decodes on the GPU: blocks of up to 64 tokens, each issued before the previous one is read back. */
async function deviceDecodeRate(backend, prompt, options, maxTokens) {
  const st = backend.createState();
  const logits = await backend.forward(st, prompt, 'last');
  let first = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[first]) first = i;
  const sampling = options.temperature ? { temperature: options.temperature, topK: 0, topP: 0.95, seed: options.seed ?? 1 } : undefined; // generate's defaults
  const t0 = performance.now();
  const blocks = [];
  for (let done = 0; done < maxTokens; done += 64) {
    const n = Math.min(64, maxTokens - done);
    const from = done === 0 ? first : null;
    blocks.push(sampling ? backend.decodeSampled(st, from, n, sampling) : backend.decodeGreedy(st, from, n));
  }
  await Promise.all(blocks);
  const ms = performance.now() - t0;
  backend.releaseState(st);
  return maxTokens / (ms / 1000);
}

/** tok/s for each generation length, best of 2. */
async function decodeRates(model, prompt, options) {
  const out = {};
  for (const n of decodeLengths) {
    out[n] = Math.max(await decodeRate(model, prompt, options, n), await decodeRate(model, prompt, options, n));
  }
  return out;
}

/** The host's peak resident memory so far (Node; Deno has no peak figure: its current RSS). */
function peakRssMiB() {
  const p = globalThis.process;
  if (p?.resourceUsage) return Math.round(p.resourceUsage().maxRSS / 1024);
  const d = globalThis.Deno?.memoryUsage?.();
  return d ? Math.round(d.rss / 2 ** 20) : undefined;
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
    await decodeRate(model, prompt.subarray(0, 64), { temperature: 0 }, Math.min(64, Math.max(...decodeLengths)));

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
      // Bytes a decode step reads (weights in their stored format: q8 / q4 shrink the projections) and
      // what that is per second at the greedy rate: how close decode gets to the memory bandwidth.
      weightBytes: backend.decodeWeightBytes,
      decodeGBps: (backend.decodeWeightBytes * greedy[decodeLengths[0]]) / 1e9,
      hostPeakRssMiB: peakRssMiB(),
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
console.log(`\n${pad('dtype', 5)} ${pad('chunk', 7)} ${cols.map((c) => pad(c, 14)).join(' ')} ${pad('prefill tok/s', 13)} ${pad('TTFT ms', 8)} ${pad('weights MB', 10)} ${pad('GB/s', 7)} ${pad('host peak MiB', 13)}`);
const counts = {};
for (const dtype of values.dtype.split(',')) {
  counts[dtype] = await dispatches(dtype);
  for (const chunk of chunks) {
    const r = await measure(dtype, chunk);
    r.dispatchesPerLayer = (r.fusedDecode ? counts[dtype].fused : counts[dtype].separate).perLayer;
    results.push(r);
    const rates = decodeLengths.flatMap((n) => [r.decodeTokPerSecByLength[n], r.decodeSampledTokPerSecByLength[n]]);
    console.log(`${pad(dtype, 5)} ${pad(r.chunk, 7)} ${rates.map((x) => pad(x.toFixed(1), 14)).join(' ')} ${pad(r.prefillTokPerSec.toFixed(1), 13)} ${pad(r.timeToFirstTokenMs.toFixed(0), 8)} ${pad((r.weightBytes / 1e6).toFixed(1), 10)} ${pad(r.decodeGBps.toFixed(2), 7)} ${pad(r.hostPeakRssMiB ?? '-', 13)}`);
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
