/**
 * The conformance table: every available backend × every Hugging Face fixture, against logits that
 * transformers computed in float64. Prefill (whole sequence), step decode (one byte at a time) and
 * greedy generation must all agree with the reference.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BackendUnavailableError, loadModel, type BackendOptions, type Model } from '../src/index.js';
import { loadFixtures, maxAbsDiff } from './helpers/fixtures.js';
import { syntheticModel, type SyntheticSpec } from '../src/synthetic.js';

interface Entry extends BackendOptions {
  /** Allowed max|Δ| as a fraction of max|logit|. */
  tolerance: number;
}

// f16 / q8 tolerances: measured worst ratios (see README "Accuracy") with headroom.
const TABLE: Entry[] = [
  { backend: 'js', tolerance: 1e-4 },
  { backend: 'wasm', dtype: 'f32', threads: 1, tolerance: 1e-4 },
  { backend: 'wasm', dtype: 'f32', threads: 2, tolerance: 1e-4 },
  { backend: 'wasm', dtype: 'f16', threads: 1, tolerance: 2e-2 },
  { backend: 'wasm', dtype: 'q8', threads: 2, tolerance: 5e-2 },
  { backend: 'webgpu', dtype: 'f32', tolerance: 1e-4 },
  { backend: 'webgpu', dtype: 'f16', tolerance: 2e-2 },
  // The kernel shapes a hardware GPU gets (fused decode step, 32+ lanes a row), here on whatever adapter runs the tests.
  { backend: 'webgpu', dtype: 'f32', tolerance: 1e-4, webgpuKernels: { fusedDecode: true, gemvLanes: 32 } },
  { backend: 'webgpu', dtype: 'f16', tolerance: 2e-2, webgpuKernels: { fusedDecode: true, gemvLanes: 32 } },
];

const fixtures = loadFixtures();
const worst: string[] = [];

afterAll(() => {
  if (worst.length) console.log(`conformance: worst max|Δ|/max|logit|\n  ${worst.join('\n  ')}`);
});

for (const entry of TABLE) {
  const label = [entry.backend, entry.dtype, entry.threads && `${entry.threads}t`, entry.webgpuKernels && 'gpu-shaped'].filter(Boolean).join(' ');
  describe.each(fixtures)(`${label} · $name`, (fx) => {
    let model: Model | undefined;
    let unavailable = '';
    const exact = entry.tolerance <= 1e-4;
    /** The worst error this path showed on this fixture so far (prefill and step run before greedy). */
    let measured = 0;

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
      const ratio = maxAbsDiff(got, fx.logits) / fx.maxAbsLogit;
      measured = Math.max(measured, ratio);
      worst.push(`${label.padEnd(16)} ${fx.name.padEnd(22)} ${name.padEnd(8)} ${ratio.toExponential(2)}`);
      expect(ratio).toBeLessThanOrEqual(entry.tolerance);
    };

    test('prefill logits match transformers', async (ctx) => {
      if (!model) return ctx.skip(unavailable);
      check('prefill', await model.logits(fx.input));
    });

    test('step-by-step decode logits match transformers', async (ctx) => {
      if (!model) return ctx.skip(unavailable);
      const V = fx.vocab;
      const got = new Float32Array(fx.input.length * V);
      const state = model.backend.createState();
      for (let t = 0; t < fx.input.length; t++) {
        got.set(await model.backend.forward(state, Uint32Array.from(fx.input.subarray(t, t + 1)), 'last'), t * V);
      }
      model.backend.releaseState(state);
      check('step', got);
    });

    test('greedy continuation matches transformers', async (ctx) => {
      if (!model) return ctx.skip(unavailable);
      // A near-tie can flip under legitimate rounding: compare only where this path's error, as
      // measured on this fixture's prefill and step logits, is far below the margin.
      const allowed = exact ? measured > 0 && fx.greedyMargin > 10 * measured * fx.maxAbsLogit : fx.greedyMargin > 0.5;
      if (!allowed) return ctx.skip(`top-2 margin ${fx.greedyMargin} too small for ${label}`);
      const bytes: number[] = [];
      for await (const c of model.generate(fx.input, { temperature: 0, maxTokens: fx.greedy.length })) bytes.push(...c.bytes);
      expect(Uint8Array.from(bytes)).toEqual(fx.greedy);
    });
  });
}

/**
 * Configurations the public fixtures do not cover (biases, other conv widths and expand factors,
 * untied heads, mamba_ssm naming, bf16, Falcon-Mamba with biases): every backend against the reference.
 */
const SYNTHETIC: SyntheticSpec[] = [
  { hidden_size: 48, num_hidden_layers: 2, use_bias: true, conv_kernel: 3, expand: 3, seed: 3 },
  { hidden_size: 40, num_hidden_layers: 2, state_size: 8, time_step_rank: 5, tie_word_embeddings: false, naming: 'mamba_ssm', seed: 4 },
  { hidden_size: 64, num_hidden_layers: 1, use_conv_bias: false, conv_kernel: 2, dtype: 'BF16', seed: 5 },
  { hidden_size: 48, num_hidden_layers: 2, falcon: true, use_bias: true, state_size: 8, time_step_rank: 6, dtype: 'BF16', seed: 6 },
  // Mamba-2: groups (the gated norm per group), biases, odd head and state sizes, Δ limits, norm before gate, mamba_ssm naming.
  { hidden_size: 48, num_hidden_layers: 2, state_size: 12, mamba2: { head_dim: 12, n_groups: 2, time_step_limit: [0.01, 0.05] }, use_bias: true, seed: 7 },
  { hidden_size: 40, num_hidden_layers: 2, state_size: 7, conv_kernel: 3, mamba2: { head_dim: 10, norm_before_gate: true }, naming: 'mamba_ssm', dtype: 'BF16', seed: 8 },
];
const TEXT = new TextEncoder().encode('Mamba läuft überall — 速い. '.repeat(6));

describe.each(SYNTHETIC)('synthetic %o', (spec) => {
  let reference: Float32Array;
  beforeAll(async () => {
    const m = await loadModel({ files: syntheticModel(spec) }, { backend: 'js' });
    reference = await m.logits(TEXT);
    m.dispose();
  });
  for (const entry of TABLE.slice(1)) {
    const label = [entry.backend, entry.dtype, entry.threads && `${entry.threads}t`, entry.webgpuKernels && 'gpu-shaped'].filter(Boolean).join(' ');
    test(`${label} matches the reference`, async (ctx) => {
      let m: Model;
      try {
        m = await loadModel({ files: syntheticModel(spec) }, entry);
      } catch (e) {
        if (e instanceof BackendUnavailableError) return ctx.skip(e.message);
        throw e;
      }
      try {
        let max = 0;
        for (const v of reference) max = Math.max(max, Math.abs(v));
        expect(maxAbsDiff(await m.logits(TEXT), reference) / max).toBeLessThanOrEqual(entry.tolerance);
      } finally {
        m.dispose();
      }
    });
  }
});
