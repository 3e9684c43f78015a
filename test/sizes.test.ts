// Real model sizes: random weights in the exact shapes of the published mamba-*-hf checkpoints run
// on every backend against the js reference; the 1.4b / 2.8b shapes get a backend and weight format
// that can hold them, or are refused from config.json alone, before any weight is read or allocated;
// and WebGPU splits matrices larger than one binding across buffers.
//
// The 370m-hf comparison (js vs wasm, ~1.5 GB of float32 weights twice) takes ~30 s here: it runs
// with MAMBA_EDGE_TEST_370M=1, or as `npm run bench -- --shape 370m-hf`.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Backend } from '../src/backend.js';
import { chooseBackend, createBackend, planBackend, WASM_MEMORY_BUDGET, weightFootprint, type BackendOptions } from '../src/backends.js';
import { parameterCount, parseConfig, type MambaConfig } from '../src/config.js';
import { InvalidOptionError, OutOfMemoryError } from '../src/errors.js';
import { estimateMemoryBytes } from '../src/loader.js';
import { loadModel, type Model } from '../src/model.js';
import type { ProbeReport } from '../src/probe.js';
import { MAMBA_HF_SHAPES, syntheticConfig, syntheticModel, syntheticWeights, type SyntheticSpec } from '../src/synthetic.js';
import type { WebGPUBackend } from '../src/webgpu/backend.js';
import type { ModelWeights } from '../src/weights.js';
import { nodeWebGPU, skipLine } from './helpers/env.js';
import { relDiff } from './helpers/fixtures.js';

const gpu = await nodeWebGPU(import.meta.url);
gpu?.device.destroy();

const configOf = (spec: SyntheticSpec) => parseConfig(JSON.stringify(syntheticConfig(spec)));
const HF = Object.fromEntries(Object.entries(MAMBA_HF_SHAPES).map(([k, s]) => [k, configOf(s)])) as Record<keyof typeof MAMBA_HF_SHAPES, MambaConfig>;


function argmax(x: Float32Array): number {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

/**
 * Logits of a prompt (every position) and of `steps` greedy decode steps after it, as one array.
 * `stepwise`: the prompt goes in one token at a time (the decode path), as a software adapter needs:
 * its multi-token GEMM over a 50280-row head takes ~10 s a prompt here.
 */
async function trace(b: Backend, prompt: Uint32Array, steps: number, next?: number[], stepwise = false): Promise<{ logits: Float32Array; tokens: number[] }> {
  const V = b.config.vocabSize;
  const st = b.createState();
  const out = new Float32Array((prompt.length + steps) * V);
  if (stepwise) {
    for (let i = 0; i < prompt.length; i++) out.set(await b.forward(st, prompt.subarray(i, i + 1), 'last'), i * V);
  } else {
    out.set(await b.forward(st, prompt, 'all'));
  }
  let last: Float32Array = out.subarray((prompt.length - 1) * V, prompt.length * V);
  const tokens: number[] = [];
  for (let i = 0; i < steps; i++) {
    // The reference's tokens are fed to every backend, so a near-tie cannot send them apart.
    const t = next?.[i] ?? argmax(last);
    tokens.push(t);
    last = await b.forward(st, Uint32Array.of(t), 'last');
    out.set(last, (prompt.length + i) * V);
  }
  b.releaseState(st);
  return { logits: out, tokens };
}

describe('the mamba-*-hf shapes', () => {
  test('match the published checkpoints: mamba-130m-hf has 129,135,360 parameters', () => {
    expect(parameterCount(HF['130m-hf'])).toBe(129_135_360);
    expect(HF['130m-hf']).toMatchObject({ dModel: 768, nLayer: 24, vocabSize: 50280, dState: 16, dInner: 1536, dConv: 4, dtRank: 48, tiedEmbeddings: true });
    expect(HF['2.8b-hf']).toMatchObject({ dModel: 2560, nLayer: 64, vocabSize: 50280, dInner: 5120, dtRank: 160 });
    // 371.5M, 793.2M, 1.372B, 2.768B: the sizes the model names round.
    expect(parameterCount(HF['370m-hf'])).toBe(371_516_416);
    expect(Math.round(parameterCount(HF['1.4b-hf']) / 1e6)).toBe(1372);
    expect(Math.round(parameterCount(HF['2.8b-hf']) / 1e6)).toBe(2768);
  });

  test('syntheticWeights gives the same weights as syntheticModel + readModel, without the file', async () => {
    const spec: SyntheticSpec = { hidden_size: 32, num_hidden_layers: 2, vocab_size: 300, use_bias: true, seed: 5 };
    const { config, weights } = syntheticWeights(spec);
    const viaFile = await loadModel({ files: syntheticModel(spec) }, { backend: 'js' });
    const direct = await createBackend(config, weights, { backend: 'js' });
    const prompt = Uint32Array.of(1, 299, 42, 7);
    const a = await direct.forward(direct.createState(), prompt, 'all');
    const b = await viaFile.backend.forward(viaFile.backend.createState(), prompt, 'all');
    expect(relDiff(a, b)).toBe(0);
    viaFile.dispose();
    direct.dispose();
  });
});

describe('lazy synthetic weights (what bench/webgpu.js uses for 2.8b-hf)', () => {
  const spec: SyntheticSpec = { hidden_size: 48, num_hidden_layers: 3, vocab_size: 300, seed: 4 };
  /** Plain arrays read from lazy weights, one block at a time. */
  const materialize = (w: ModelWeights): ModelWeights => ({ ...w, layers: w.layers.map((L) => ({ ...L })) });
  const prompt = Uint32Array.of(299, 0, 17, 256, 3);

  test('a block is made when first read, again only after another block was read, with the same values', () => {
    const { weights } = syntheticWeights(spec, { lazy: true });
    const a = weights.layers[1].outProj;
    expect(weights.layers[1].outProj).toBe(a); // kept while block 1 is the last one read
    weights.layers[2].norm;
    const again = weights.layers[1].outProj;
    expect(again).not.toBe(a); // made again ...
    expect(again).toEqual(a); // ... with the same values
    expect(weights.layers[0].inProjX).not.toEqual(weights.layers[1].inProjX);
  });

  const backends: [string, BackendOptions][] = [['wasm', { backend: 'wasm', dtype: 'f32', threads: 1 }]];
  if (gpu) backends.push(['webgpu', { backend: 'webgpu', dtype: 'f32', webgpuKernels: { selfCheck: !gpu.software } }]);
  test.each(backends)('%s computes on lazy weights what js computes on them materialized', async (_, options) => {
    const { config, weights } = syntheticWeights(spec, { lazy: true });
    const js = await createBackend(config, materialize(weights), { backend: 'js' });
    const b = await createBackend(config, weights, options);
    try {
      const ref = await trace(js, prompt, 2);
      expect(relDiff((await trace(b, prompt, 2, ref.tokens)).logits, ref.logits)).toBeLessThan(1e-5);
    } finally {
      b.dispose();
      js.dispose();
    }
  });
});

describe('1.4b / 2.8b: a backend and weight format that can hold them, or a refusal from config.json alone', () => {
  const report = (webgpu: ProbeReport['webgpu']): ProbeReport => ({
    runtime: 'node',
    version: null,
    webgpu,
    wasm: { simd: true, relaxedSimd: false, threads: true },
    sharedArrayBuffer: true,
    crossOriginIsolated: null,
    logicalCores: 8,
    deviceMemoryBytes: 16 * 2 ** 30,
    probeMs: 1,
  });
  const cpuOnly = report({ available: false, reason: 'no adapter' });
  const limits = (binding: number) => ({
    maxStorageBufferBindingSize: binding,
    maxBufferSize: 2 ** 31,
    maxComputeWorkgroupSizeX: 256,
    maxComputeInvocationsPerWorkgroup: 256,
    maxStorageBuffersPerShaderStage: 8,
  });
  const adapter = { vendor: 'intel', architecture: 'xe', device: '', description: 'laptop GPU', isFallbackAdapter: false, software: false };
  const laptop = report({ available: true, adapter, limits: limits(2 ** 27) }); // a 128 MiB binding

  test('wasm32 (4 GiB) takes 1.4b as f16 and 2.8b as q8; estimateMemoryBytes agrees', () => {
    const s14 = chooseBackend(cpuOnly, HF['1.4b-hf']);
    expect(s14).toMatchObject({ backend: 'wasm', dtype: 'f16' });
    expect(s14.reason).toMatch(/f16 weights \(f32 would not fit\)/);
    const s28 = chooseBackend(cpuOnly, HF['2.8b-hf']);
    expect(s28).toMatchObject({ backend: 'wasm', dtype: 'q8' });
    for (const [c, dtype] of [[HF['1.4b-hf'], 'f16'], [HF['2.8b-hf'], 'q8']] as const) {
      const e = estimateMemoryBytes(c, { backend: 'wasm', dtype });
      expect(e.weights).toBeLessThanOrEqual(WASM_MEMORY_BUDGET);
      // The projections in dtype, vectors and the per-channel tensors f32: within 6 % of params × dtype's bytes (dt_proj [E, R] is most of the rest).
      expect(e.weights).toBe(Math.ceil(weightFootprint(c, dtype, 'wasm').total));
      expect(e.weights / (parameterCount(c) * (dtype === 'f16' ? 2 : 1.125))).toBeGreaterThan(1);
      expect(e.weights / (parameterCount(c) * (dtype === 'f16' ? 2 : 1.125))).toBeLessThan(1.06);
      expect(weightFootprint(c, 'f32').total).toBeGreaterThan(WASM_MEMORY_BUDGET);
    }
    // An explicit backend without a dtype gets the same pick, and so does the estimate for it.
    expect(chooseBackend(cpuOnly, HF['2.8b-hf'], { backend: 'wasm' })).toMatchObject({ backend: 'wasm', dtype: 'q8' });
    expect(estimateMemoryBytes(HF['2.8b-hf'], { backend: 'wasm' })).toMatchObject({ dtype: 'q8', weights: Math.ceil(weightFootprint(HF['2.8b-hf'], 'q8', 'wasm').total) });
    expect(estimateMemoryBytes(HF['1.4b-hf'], { backend: 'wasm' }).dtype).toBe('f16');
    expect(estimateMemoryBytes(HF['1.4b-hf'], { backend: 'js' }).dtype).toBe('f32');
  });

  test('a laptop GPU with 128 MiB bindings holds 2.8b: its 50280x2560 f32 embedding (491 MiB) is split by rows', () => {
    expect(weightFootprint(HF['2.8b-hf'], 'f32').largestTensor).toBeGreaterThan(2 ** 27);
    expect(chooseBackend(laptop, HF['2.8b-hf'])).toMatchObject({ backend: 'webgpu', dtype: 'f32', fallback: 'wasm' });
    expect(chooseBackend(laptop, HF['2.8b-hf'], { dtype: 'f16' })).toMatchObject({ backend: 'webgpu', dtype: 'f16' });
    // The GPU's formats come from one list (GPU_DTYPES), q8 and q4 included.
    expect(chooseBackend(laptop, HF['2.8b-hf'], { dtype: 'q8' })).toMatchObject({ backend: 'webgpu', dtype: 'q8' });
    expect(chooseBackend(laptop, HF['2.8b-hf'], { dtype: 'q4' })).toMatchObject({ backend: 'webgpu', dtype: 'q4' });
  });

  // A config no backend can hold (D 4096, 64 layers: 6.9e9 parameters, 7.3 GiB even as q8) and the
  // 2.8b shape on backends too small for it. Only config.json exists: reading a weight file fails the test.
  const huge = { ...syntheticConfig(MAMBA_HF_SHAPES['2.8b-hf']), hidden_size: 4096, intermediate_size: 8192, time_step_rank: 256 };
  const cases: [string, Record<string, unknown>, BackendOptions, RegExp][] = [
    ['2.8b on wasm as f32', syntheticConfig(MAMBA_HF_SHAPES['2.8b-hf']), { backend: 'wasm', dtype: 'f32' }, /wasm backend cannot hold .*f32 weights \(10\.31 GiB\) do not fit wasm32's 4 GiB memory \(dtype 'q8' would fit\)/],
    ['2.8b on wasm as f16', syntheticConfig(MAMBA_HF_SHAPES['2.8b-hf']), { backend: 'wasm', dtype: 'f16' }, /f16 weights \(5\.27 GiB\) do not fit wasm32.*\(dtype 'q8' would fit\)/],
    ['a 7b-sized config on js', huge, { backend: 'js' }, /js backend cannot hold .*float32 weights \(25\.\d+ GiB\) are too large for host arrays/],
    ['a 7b-sized config on auto', huge, {}, /no backend can hold this model .*wasm: .*q8 weights \(7\.\d+ GiB\) do not fit wasm32/],
  ];
  test.each(cases)('%s: OutOfMemoryError before any weight file is read, memory stays flat', async (_, cfg, options, message) => {
    const reads: string[] = [];
    const files: Record<string, unknown> = { 'config.json': JSON.stringify(cfg) };
    for (const f of ['model.safetensors', 'model.safetensors.index.json']) {
      Object.defineProperty(files, f, { enumerable: true, get: () => (reads.push(f), undefined) });
    }
    const rss0 = process.memoryUsage().rss;
    const heap0 = process.memoryUsage().heapUsed;
    const e = await loadModel({ files: files as Record<string, string> }, options).catch((x) => x);
    expect(e).toBeInstanceOf(OutOfMemoryError);
    expect(e.message).toMatch(message);
    expect(reads).toEqual([]);
    // Nothing large was allocated on the way (the weights would be gigabytes).
    expect((process.memoryUsage().rss - rss0) / 2 ** 20, 'RSS growth, MiB').toBeLessThan(64);
    expect((process.memoryUsage().heapUsed - heap0) / 2 ** 20, 'heap growth, MiB').toBeLessThan(32);
  });

  test('planBackend settles the same from the config: what loadModel does before reading weights', async () => {
    await expect(planBackend(HF['1.4b-hf'], { backend: 'wasm' })).resolves.toMatchObject({ backend: 'wasm', dtype: 'f16' });
    await expect(planBackend(HF['130m-hf'], { backend: 'wasm' })).resolves.toMatchObject({ backend: 'wasm', dtype: 'f32' });
    await expect(planBackend(HF['2.8b-hf'], { backend: 'js' })).resolves.toMatchObject({ backend: 'js', dtype: 'f32' });
    // A format the backend does not store stays an option error, raised when the backend is made.
    await expect(planBackend(HF['130m-hf'], { backend: 'js', dtype: 'f16' })).resolves.toMatchObject({ dtype: 'f16' });
    await expect(loadModel({ files: syntheticModel({ hidden_size: 8, num_hidden_layers: 1 }) }, { backend: 'js', dtype: 'f16' })).rejects.toThrow(InvalidOptionError);
  });
});

describe('130m-hf random weights on every backend match the js reference', () => {
  const prompt = Uint32Array.of(510, 50279, 0, 31337);
  const STEPS = 2;
  let config: MambaConfig;
  let weights: ModelWeights | undefined;
  let ref: { logits: Float32Array; tokens: number[] };
  beforeAll(async () => {
    ({ config, weights } = syntheticWeights(MAMBA_HF_SHAPES['130m-hf']));
    const js = await createBackend(config, weights, { backend: 'js' });
    ref = await trace(js, prompt, STEPS);
    js.dispose();
    expect(ref.logits.every(Number.isFinite)).toBe(true);
  });
  afterAll(() => {
    weights = undefined; // 516 MB of float32
  });

  // f32 paths sum in other orders (SIMD lanes, workgroup trees): ~1e-6 of the largest logit.
  const rows: [string, BackendOptions][] = [['wasm f32', { backend: 'wasm', dtype: 'f32', threads: 2 }]];
  // On a software adapter the self-check (webgpu-selfcheck.test.ts) would take longer than the model.
  if (gpu) rows.push(['webgpu f32', { backend: 'webgpu', dtype: 'f32', webgpuKernels: gpu.software ? { selfCheck: false } : {} }]);
  else skipLine(import.meta.url, 'no WebGPU adapter', { part: '130m-hf on webgpu' });
  test.each(rows)('%s: a prompt of 4 tokens + 2 decode steps (software adapter: the prompt only)', async (name, options) => {
    const b = await createBackend(config, weights!, options);
    try {
      // A software adapter takes the prompt token by token (the decode path), and stops there: ~1 s a token.
      const soft = name.startsWith('webgpu') && !!gpu?.software;
      const steps = soft ? 0 : STEPS;
      const got = await trace(b, prompt, steps, ref.tokens, soft);
      expect(relDiff(got.logits, ref.logits.subarray(0, got.logits.length))).toBeLessThan(1e-4);
      expect(got.tokens).toEqual(ref.tokens.slice(0, steps));
    } finally {
      b.dispose();
    }
  });
});

describe.skipIf(!process.env.MAMBA_EDGE_TEST_370M && skipLine(import.meta.url, 'set MAMBA_EDGE_TEST_370M=1 (~30 s; or npm run bench -- --shape 370m-hf)', { part: '370m-hf js vs wasm' }))(
  '370m-hf random weights: wasm matches js',
  () => {
    test('prompt of 4 tokens + 2 decode steps', async () => {
      const { config, weights } = syntheticWeights(MAMBA_HF_SHAPES['370m-hf']);
      const prompt = Uint32Array.of(50279, 7, 12345, 300);
      const js = await createBackend(config, weights, { backend: 'js' });
      const ref = await trace(js, prompt, 2);
      js.dispose();
      const wasm = await createBackend(config, weights, { backend: 'wasm', dtype: 'f32' });
      const got = await trace(wasm, prompt, 2, ref.tokens);
      wasm.dispose();
      expect(relDiff(got.logits, ref.logits)).toBeLessThan(1e-4);
    });
  },
);

describe.skipIf(!gpu)('webgpu: a matrix larger than one binding is split across buffers', () => {
  // V 1000 x D 64: f32 rows of 256 bytes; a 40 KiB binding limit splits the tied embedding / LM head
  // into 7 parts, and the in/out projections too.
  const spec: SyntheticSpec = { hidden_size: 64, num_hidden_layers: 2, vocab_size: 1000, seed: 3 };
  const files = syntheticModel(spec);
  const prompt = Uint32Array.of(999, 3, 500, 42, 998, 7, 256, 1);

  let js: Model;
  beforeAll(async () => {
    js = await loadModel({ files }, { backend: 'js' });
  });
  afterAll(() => js?.dispose());

  // f16 over split bindings: webgpu-model.test.ts ('weights split across many bindings').
  test.each(['f32'] as const)('embedding gather, LM head, on-GPU argmax and sampler over 3+ parts match js (%s)', async (dtype) => {
    // The self-check has its own tests (webgpu-selfcheck.test.ts); on a software adapter it costs seconds a load.
    const webgpuKernels = { maxBindingBytes: 40 * 1024, selfCheck: !gpu?.software };
    const model = await loadModel({ files }, { backend: 'webgpu', dtype, webgpuKernels });
    const gpuBackend = model.backend as unknown as WebGPUBackend;
    try {
      const parts = (gpuBackend as unknown as { w: { embedding: { mat: { parts: unknown[] } } } }).w.embedding.mat.parts;
      expect(parts.length).toBe(7);
      const tol = 1e-4;
      const ref = await trace(js.backend, prompt, 4);
      const got = await trace(gpuBackend, prompt, 4, ref.tokens);
      expect(relDiff(got.logits, ref.logits)).toBeLessThan(tol);
      // Greedy blocks on the GPU (argmax → embed without the host) and a top-1 draw by the GPU sampler.
      const V = spec.vocab_size!;
      const greedy = gpuBackend.createState();
      await gpuBackend.forward(greedy, prompt, 'last');
      const block = await gpuBackend.decodeGreedy(greedy, ref.tokens[0], 4);
      expect([...block.tokens]).toEqual(ref.tokens);
      expect(relDiff(block.logits, ref.logits.subarray((prompt.length + 3) * V))).toBeLessThan(tol);
      const sampled = gpuBackend.createState();
      await gpuBackend.forward(sampled, prompt, 'last');
      const drawn = await gpuBackend.decodeSampled(sampled, ref.tokens[0], 4, { temperature: 0.8, topK: 1, topP: 1, seed: 9 });
      expect([...drawn.tokens]).toEqual(ref.tokens);
    } finally {
      model.dispose();
    }
  });
});

// The planner's size of a model (weightFootprint, estimateMemoryBytes) against the bytes each backend
// actually stored. WebGPU keeps a q8 / q4 model's embedding and head in f16: counting them at 4.5 or 9
// bits once made the estimate 3x too small for a large-vocabulary model.
test.each(['f32', 'f16', 'q8', 'q4'] as const)('weightFootprint matches the bytes the backends store (%s, large vocabulary)', async (dtype) => {
  for (const tie of [true, false]) {
    const files = syntheticModel({ hidden_size: 64, num_hidden_layers: 2, vocab_size: 3000, tie_word_embeddings: tie, seed: 1 });
    const backends = gpu ? (['wasm', 'webgpu'] as const) : (['wasm'] as const);
    for (const backend of backends) {
      const m = await loadModel({ files }, { backend, dtype, ...(backend === 'webgpu' ? { webgpuKernels: { selfCheck: false } } : {}) });
      try {
        const stored = (m.backend as unknown as { weightBytes: number }).weightBytes;
        const est = weightFootprint(m.backend.config, dtype, backend).total;
        // Within 10 %: the backends also store norm vectors and packed per-layer parameters in f32.
        expect(Math.abs(est - stored) / stored, `${backend} ${dtype} tied ${tie}: estimated ${est}, stored ${stored}`).toBeLessThan(0.1);
        expect(estimateMemoryBytes(m.backend.config, { backend, dtype }).weights).toBe(Math.ceil(est));
      } finally {
        m.dispose();
      }
    }
  }
});

test('a bad webgpuKernels.maxBindingBytes is an option error', async () => {
  await expect(loadModel({ files: syntheticModel({ hidden_size: 8, num_hidden_layers: 1 }) }, { backend: 'webgpu', webgpuKernels: { maxBindingBytes: 10 } })).rejects.toThrow(
    /maxBindingBytes must be an integer of at least 256 bytes, got 10/,
  );
});
