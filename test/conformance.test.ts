/**
 * The conformance table: every available backend × every Hugging Face fixture, against logits that
 * transformers computed in float64. Prefill (whole sequence), step decode (one token at a time) and
 * greedy generation must all agree with the reference. A fixture with a tokenizer.json (byte-level BPE)
 * is a row like the others: its `input_ids` are the input, and greedy generation must give its ids and text.
 *
 * On a software adapter (SwiftShader, lavapipe, llvmpipe) the WebGPU rows decode fewer bytes: there a
 * GPU-shaped (fused) decode step takes ~0.5 s, and 91 of them per fixture timed out. There the
 * tokenizer.json fixture, which adds nothing to what the byte fixtures check of the kernels (its
 * vocabulary is another V), skips the WebGPU rows: they would cost ~25 s of pipeline compiles.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BackendUnavailableError, loadModel, type BackendOptions, type Model } from '../src/index.js';
import { loadFixtures, maxAbsDiff } from './helpers/fixtures.js';
import { nodeWebGPU } from './helpers/env.js';
import { syntheticModel, type SyntheticSpec } from '../src/synthetic.js';
import { incompleteTail } from '../src/tokenizer.js';
import { readModel } from '../src/loader.js';
import { createReferenceBackend } from '../src/reference/backend.js';
import { storedWeights } from '../src/webgpu/kernels.js';

const gpu = await nodeWebGPU(import.meta.url, { part: 'webgpu rows' });
const softwareGpu = gpu?.software ?? false;
gpu?.device.destroy();

interface Entry extends BackendOptions {
  /** Allowed max|Δ| as a fraction of max|logit|. */
  tolerance: number;
}

/**
 * WebGPU q8 / q4 rows are also held to exact math: the plain-TS reference run on the very values
 * the GPU stores (src/quant.ts's blocks dequantized, embedding and head f16: kernels.ts
 * `storedWeights`) must agree to this, as f32 paths agree with float64, so a kernel bug cannot
 * hide inside the quantization error that the row's `tolerance` allows against transformers.
 */
const STORED_TOLERANCE = 1e-4;
const quantGpu = (e: Entry) => e.backend === 'webgpu' && (e.dtype === 'q8' || e.dtype === 'q4');

// f16 / q8 / q4 tolerances: measured worst ratios (see README "Accuracy") with headroom; q4 on these
// tiny random-weight fixtures loses up to 0.25 of max|logit| to 4-bit rounding (the same in the
// reference on the dequantized weights), which is why its rows also meet STORED_TOLERANCE. The WebGPU rows
// skip the adapter self-check: it has its own tests (test/webgpu-selfcheck.test.ts), and on a software
// adapter each check is another set of pipelines to compile.
const NO_CHECK = { selfCheck: false } as const;
const TABLE: Entry[] = [
  { backend: 'js', tolerance: 1e-4 },
  { backend: 'wasm', dtype: 'f32', threads: 1, tolerance: 1e-4 },
  { backend: 'wasm', dtype: 'f32', threads: 2, tolerance: 1e-4 },
  { backend: 'wasm', dtype: 'f16', threads: 1, tolerance: 2e-2 },
  { backend: 'wasm', dtype: 'q8', threads: 2, tolerance: 5e-2 },
  // q4 (q4_0 values, 4.5 bits a weight): worst measured 0.25 (mamba2-tiny-f32) on these random, untrained
  // fixtures, whose logits are near-random sums that weight noise moves a lot (the bundled, trained model
  // loses 0.01 bits per byte: test/q4-bpb.test.ts).
  { backend: 'wasm', dtype: 'q4', threads: 1, tolerance: 0.35 },
  { backend: 'wasm', dtype: 'q4', threads: 2, tolerance: 0.35 },
  { backend: 'webgpu', dtype: 'f32', tolerance: 1e-4, webgpuKernels: NO_CHECK },
  { backend: 'webgpu', dtype: 'f16', tolerance: 2e-2, webgpuKernels: NO_CHECK },
  // The kernel shapes a hardware GPU gets (fused decode step, 32+ lanes a row), here on whatever adapter runs the tests.
  { backend: 'webgpu', dtype: 'f32', tolerance: 1e-4, webgpuKernels: { fusedDecode: true, gemvLanes: 32, ...NO_CHECK } },
  { backend: 'webgpu', dtype: 'f16', tolerance: 2e-2, webgpuKernels: { fusedDecode: true, gemvLanes: 32, ...NO_CHECK } },
  { backend: 'webgpu', dtype: 'q8', tolerance: 5e-2, webgpuKernels: NO_CHECK },
  { backend: 'webgpu', dtype: 'q4', tolerance: 4e-1, webgpuKernels: NO_CHECK },
  { backend: 'webgpu', dtype: 'q8', tolerance: 5e-2, webgpuKernels: { fusedDecode: true, gemvLanes: 32, ...NO_CHECK } },
  { backend: 'webgpu', dtype: 'q4', tolerance: 4e-1, webgpuKernels: { fusedDecode: true, gemvLanes: 32, ...NO_CHECK } },
];
const labelOf = (e: Entry) => [e.backend, e.dtype, e.threads && `${e.threads}t`, e.webgpuKernels?.fusedDecode && 'gpu-shaped'].filter(Boolean).join(' ');
/**
 * On a software adapter each WebGPU row costs a model load (every pipeline compiled again, ~6-10 s on a
 * loaded 2-core machine): there the models run through f32 with the default kernels and f16 with the
 * GPU-shaped ones, so each kernel shape and each weight format still meets every model; q8 and q4
 * meet one fixture each (`SOFTWARE_QUANT`).
 */
const onThisAdapter = (e: Entry) =>
  e.backend !== 'webgpu' || !softwareGpu || (quantGpu(e) ? `${e.dtype} ${!!e.webgpuKernels?.fusedDecode}` in SOFTWARE_QUANT : (e.dtype === 'f32') === !e.webgpuKernels?.fusedDecode);
/** Software adapter: q8 with the default kernels on a Mamba-2 fixture, q4 with the GPU-shaped ones (fused step) on a Mamba-1 one. */
const SOFTWARE_QUANT: Record<string, string> = { 'q8 false': 'mamba2-tiny-f32', 'q4 true': 'falcon-mamba-tiny-f32' };
/**
 * Software adapter, f16 with the GPU-shaped kernels: one fixture of each layout (Mamba-1; Mamba-2 in both
 * namings). Falcon-Mamba meets the fused step through the q4 row, `small-hf-f16-untied` the f32 row.
 */
const SOFTWARE_FUSED_F16 = new Set(['tiny-hf-f32', 'mamba2-tiny-f32', 'mamba2-ssm-naming-f16']);
const fixturesFor = (e: Entry) =>
  !softwareGpu || e.backend !== 'webgpu'
    ? fixtures
    : quantGpu(e)
      ? fixtures.filter((f) => f.name === SOFTWARE_QUANT[`${e.dtype} ${!!e.webgpuKernels?.fusedDecode}`])
      : e.webgpuKernels?.fusedDecode
        ? fixtures.filter((f) => SOFTWARE_FUSED_F16.has(f.name))
        : fixtures;

const fixtures = loadFixtures();
const worst: string[] = [];

/** Tokens decoded step by step and greedily: all of them, except for WebGPU on a software adapter. */
function decodeBytes(entry: Entry, all: number): number {
  if (entry.backend !== 'webgpu' || !softwareGpu) return all;
  return Math.min(all, entry.webgpuKernels?.fusedDecode || quantGpu(entry) ? 4 : 24);
}

afterAll(() => {
  if (worst.length) console.log(`conformance: worst max|Δ|/max|logit|\n  ${worst.join('\n  ')}`);
});

for (const entry of TABLE.filter(onThisAdapter)) {
  const label = labelOf(entry);
  const rowFixtures = fixturesFor(entry).filter((fx) => !(fx.tokenizer && softwareGpu && entry.backend === 'webgpu'));
  describe.each(rowFixtures)(`${label} · $name`, (fx) => {
    let model: Model | undefined;
    let unavailable = '';
    const exact = entry.tolerance <= 1e-4;
    /** The worst error this path showed on this fixture so far (prefill and step run before greedy). */
    let measured = 0;
    /** What prefill and step decode gave, for the comparison with the reference on the stored weights. */
    const seen: { prefill?: Float32Array; step?: Float32Array } = {};

    beforeAll(async () => {
      try {
        model = await loadModel(fx.dir, entry);
      } catch (e) {
        if (e instanceof BackendUnavailableError) unavailable = e.message;
        else throw e;
      }
    });
    afterAll(() => model?.dispose());

    const check = (name: string, got: Float32Array) => {
      const ratio = maxAbsDiff(got, fx.logits.subarray(0, got.length)) / fx.maxAbsLogit;
      measured = Math.max(measured, ratio);
      worst.push(`${label.padEnd(16)} ${fx.name.padEnd(22)} ${name.padEnd(8)} ${ratio.toExponential(2)}`);
      expect(ratio).toBeLessThanOrEqual(entry.tolerance);
    };

    test('prefill logits match transformers', async (ctx) => {
      if (!model) return ctx.skip(unavailable);
      check('prefill', (seen.prefill = await model.logits(fx.ids)));
    });

    const steps = decodeBytes(entry, fx.ids.length);
    test(`step-by-step decode logits match transformers${steps < fx.ids.length ? ` (first ${steps} tokens: software adapter)` : ''}`, async (ctx) => {
      if (!model) return ctx.skip(unavailable);
      const V = fx.vocab;
      const got = new Float32Array(steps * V);
      const state = model.backend.createState();
      for (let t = 0; t < steps; t++) {
        got.set(await model.backend.forward(state, fx.ids.subarray(t, t + 1), 'last'), t * V);
      }
      model.backend.releaseState(state);
      check('step', (seen.step = got));
    });

    if (quantGpu(entry)) {
      test(`prefill and step logits match the reference on the same ${entry.dtype} values within ${STORED_TOLERANCE}`, async (ctx) => {
        if (!model || !seen.prefill || !seen.step) return ctx.skip(unavailable || 'prefill / step did not run');
        const { config, weights } = await readModel(fx.dir);
        const ref = createReferenceBackend(config, storedWeights(weights, config, entry.dtype!));
        const want = await ref.forward(ref.createState(), fx.ids, 'all');
        ref.dispose();
        let max = 0;
        for (const v of want) max = Math.max(max, Math.abs(v));
        const prefill = maxAbsDiff(seen.prefill, want) / max;
        const step = maxAbsDiff(seen.step, want.subarray(0, seen.step.length)) / max;
        worst.push(`${label.padEnd(16)} ${fx.name.padEnd(22)} vs ref on stored ${prefill.toExponential(2)} / ${step.toExponential(2)}`);
        expect(prefill).toBeLessThanOrEqual(STORED_TOLERANCE);
        expect(step).toBeLessThanOrEqual(STORED_TOLERANCE);
      });
    }

    const greedy = fx.greedyIds.subarray(0, decodeBytes(entry, fx.greedyIds.length));
    test(`greedy continuation matches transformers${greedy.length < fx.greedyIds.length ? ` (first ${greedy.length} tokens: software adapter)` : ''}`, async (ctx) => {
      if (!model) return ctx.skip(unavailable);
      // A near-tie can flip under legitimate rounding: compare only where this path's error, as
      // measured on this fixture's prefill and step logits, is far below the margin (for the lossy
      // formats, at least 0.5 and twice the error).
      const err = measured * fx.maxAbsLogit;
      const allowed = exact ? measured > 0 && fx.greedyMargin > 10 * err : fx.greedyMargin > Math.max(0.5, 2 * err);
      if (!allowed) return ctx.skip(`top-2 margin ${fx.greedyMargin} too small for ${label}`);
      const ids: number[] = [];
      let text = '';
      for await (const c of model.generate(fx.ids, { temperature: 0, maxTokens: greedy.length })) {
        ids.push(...c.tokens);
        text += c.text;
      }
      expect(Uint32Array.from(ids)).toEqual(greedy);
      // The text: transformers' with a tokenizer.json; a byte fixture's whole characters (it may end inside one).
      const whole = fx.tokenizer ? fx.greedyText : new TextDecoder().decode(fx.greedy.subarray(0, fx.greedy.length - incompleteTail(fx.greedy)));
      if (greedy.length === fx.greedyIds.length) expect(text).toBe(whole);
    });
  });
}

/**
 * Configurations the public fixtures do not cover (biases, other conv widths and expand factors,
 * untied heads, mamba_ssm naming, bf16, Falcon-Mamba with biases, Mamba-2): every backend against the
 * reference, prefill and a few decode steps (the fused step, for the gpu-shaped rows).
 */
const SYNTHETIC: SyntheticSpec[] = [
  { hidden_size: 48, num_hidden_layers: 2, use_bias: true, conv_kernel: 3, expand: 3, seed: 3 },
  { hidden_size: 40, num_hidden_layers: 2, state_size: 8, time_step_rank: 5, tie_word_embeddings: false, naming: 'mamba_ssm', seed: 4 },
  { hidden_size: 64, num_hidden_layers: 1, use_conv_bias: false, conv_kernel: 2, dtype: 'BF16', seed: 5 },
  { hidden_size: 48, num_hidden_layers: 2, falcon: true, use_bias: true, state_size: 8, time_step_rank: 6, dtype: 'BF16', seed: 6 },
  // Mamba-2: groups (the gated norm per group), biases, odd head and state sizes, Δ limits, norm before gate, mamba_ssm naming.
  // On a software adapter the groups meet the GPU-shaped row (the fused step's per-group norm), the other the default kernels.
  { hidden_size: 40, num_hidden_layers: 2, state_size: 7, conv_kernel: 3, mamba2: { head_dim: 10, norm_before_gate: true }, naming: 'mamba_ssm', dtype: 'BF16', seed: 8 },
  { hidden_size: 48, num_hidden_layers: 2, state_size: 12, mamba2: { head_dim: 12, n_groups: 2, time_step_limit: [0.01, 0.05] }, use_bias: true, seed: 7 },
];
const TEXT = new TextEncoder().encode('Mamba läuft überall — 速い. '.repeat(6));

const SYNTHETIC_ROWS = TABLE.slice(1).filter(onThisAdapter);
/**
 * On a software adapter each configuration meets one of the two float WebGPU rows, in turn (the
 * fixtures meet both), and no q8 / q4 row (time).
 */
const rowsFor = (i: number) =>
  softwareGpu ? SYNTHETIC_ROWS.filter((e) => e.backend !== 'webgpu' || (!quantGpu(e) && (i % 2 === 0) === !e.webgpuKernels?.fusedDecode)) : SYNTHETIC_ROWS;

describe.each(SYNTHETIC.map((spec, i) => [spec, i] as const))('synthetic %o', (spec, i) => {
  let referenceF32: Float32Array;
  /** q8 / q4 rows: the reference on the values the GPU stores, held to STORED_TOLERANCE. */
  const stored: Record<string, Float32Array> = {};
  beforeAll(async () => {
    const m = await loadModel({ files: syntheticModel(spec) }, { backend: 'js' });
    referenceF32 = await m.logits(TEXT);
    m.dispose();
    for (const dtype of new Set(rowsFor(i).filter(quantGpu).map((e) => e.dtype!))) {
      const { config, weights } = await readModel({ files: syntheticModel(spec) });
      const ref = createReferenceBackend(config, storedWeights(weights, config, dtype));
      stored[dtype] = await ref.forward(ref.createState(), Uint32Array.from(TEXT), 'all');
      ref.dispose();
    }
  });
  for (const entry of rowsFor(i)) {
    const label = labelOf(entry);
    test(`${label} matches the reference${quantGpu(entry) ? ` on the same ${entry.dtype} values` : ''} (prefill, steps)`, async (ctx) => {
      let m: Model;
      try {
        m = await loadModel({ files: syntheticModel(spec) }, entry);
      } catch (e) {
        if (e instanceof BackendUnavailableError) return ctx.skip(e.message);
        throw e;
      }
      try {
        const [reference, tolerance] = quantGpu(entry) ? [stored[entry.dtype!], STORED_TOLERANCE] : [referenceF32, entry.tolerance];
        let max = 0;
        for (const v of reference) max = Math.max(max, Math.abs(v));
        expect(maxAbsDiff(await m.logits(TEXT), reference) / max).toBeLessThanOrEqual(tolerance);
        // A 5-byte prompt, then 3 single-byte steps: rows 4..7 of the reference.
        const V = reference.length / TEXT.length;
        const state = m.backend.createState();
        const ids = Uint32Array.from(TEXT); // byte models: token id = byte
        const rows = [await m.backend.forward(state, ids.subarray(0, 5), 'last')];
        for (let t = 5; t < 8; t++) rows.push(await m.backend.forward(state, ids.subarray(t, t + 1), 'last'));
        m.backend.releaseState(state);
        const got = new Float32Array(rows.length * V);
        rows.forEach((r, i) => got.set(r, i * V));
        expect(maxAbsDiff(got, reference.subarray(4 * V, 8 * V)) / max).toBeLessThanOrEqual(tolerance);
      } finally {
        m.dispose();
      }
    });
  }
});
