/**
 * Mamba-2's fused decode step on WebGPU (shaders/step.wgsl: mix_in → ssd_step → gate_out) against the
 * reference backend: the transformers fixtures and synthetic configurations the fixtures lack (norm
 * groups, other head and state sizes, norm before gate, biases, Δ limits), with the lane shapes of a
 * hardware GPU (32+ lanes a row) and of a CPU adapter (one); then the dispatches a token step records
 * per layer, fused and not, counted by the recorder.
 * On a software adapter a fused step takes ~0.5 s: the steps there are few.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { readModel } from '../src/loader.js';
import { createReferenceBackend } from '../src/reference/backend.js';
import { syntheticModel, type SyntheticSpec } from '../src/synthetic.js';
import { countStepDispatches, createWebGPUBackendWith, FUSED_LAYER } from '../src/webgpu/backend.js';
import { argmax } from '../src/sampler.js';
import { loadFixtures, relDiff } from './helpers/fixtures.js';
import { nodeWebGPU } from './helpers/env.js';

const gpu = await nodeWebGPU(import.meta.url);
const software = gpu?.software ?? false;
gpu?.device.destroy();

const measured: string[] = [];
afterAll(() => {
  if (measured.length) console.log(`mamba2 fused step, max|Δ|/max|logit| against the reference:\n  ${measured.join('\n  ')}`);
});


const SYNTHETIC: [string, SyntheticSpec][] = [
  // 4 norm groups of 24 channels, heads of 12 (2 a group), N = 12 (4 lanes a channel), K = 3, biases, Δ limits
  ['groups 4, heads of 12, N 12, biases', { hidden_size: 48, num_hidden_layers: 2, state_size: 12, conv_kernel: 3, mamba2: { head_dim: 12, n_groups: 4, time_step_limit: [0.01, 0.5] }, use_bias: true, seed: 21 }],
  // norm before gate, heads of 20, odd N (one lane a channel), untied head
  ['norm before gate, heads of 20, N 7', { hidden_size: 40, num_hidden_layers: 2, state_size: 7, mamba2: { head_dim: 20, n_groups: 2, norm_before_gate: true }, tie_word_embeddings: false, seed: 22 }],
];

const fixtures = loadFixtures().filter((f) => f.family === 'hf-mamba2');

describe.skipIf(!gpu)('webgpu mamba2 fused decode step', () => {
  const cases = [
    ...fixtures.map((f) => ({ name: f.name, source: f.dir as string | { files: ReturnType<typeof syntheticModel> } })),
    ...SYNTHETIC.map(([name, spec]) => ({ name, source: { files: syntheticModel(spec) } })),
  ];
  // GPU lane shapes everywhere; the CPU shape (one lane a row and channel) for the first fixture and configuration.
  // A software adapter compiles every model's pipelines anew (seconds each): there one fixture and both
  // configurations, the second with one lane (the conformance table's GPU-shaped rows meet every fixture).
  const runs = software
    ? [{ ...cases[0], lanes: 32 }, { ...cases[fixtures.length], lanes: 32 }, { ...cases[fixtures.length + 1], lanes: 1 }]
    : cases.flatMap((c, i) => [{ ...c, lanes: 32 }, ...(i === 0 || i === fixtures.length ? [{ ...c, lanes: 1 }] : [])]);
  test.each(runs)('$name, $lanes lanes: prefill then fused steps match the reference (f32 ≤ 1e-4)', async ({ name, source, lanes }) => {
    const { config, weights } = await readModel(source);
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32', fused: true, gemvLanes: lanes, selfCheck: false });
    const ref = createReferenceBackend(config, weights);
    try {
      expect(be.fused).toBe(true);
      const prompt = Uint32Array.from({ length: 9 }, (_, i) => (i * 41 + 7) % config.vocabSize);
      const gs = be.createState();
      const rs = ref.createState();
      await be.forward(gs, prompt, 'last');
      await ref.forward(rs, prompt, 'last');
      let worst = 0;
      const steps = software ? 3 : 12;
      for (let t = 0; t < steps; t++) {
        const tok = Uint32Array.of((t * 29 + 3) % config.vocabSize);
        worst = Math.max(worst, relDiff(await be.forward(gs, tok, 'last'), await ref.forward(rs, tok, 'last')));
      }
      // The state after the steps, too: the SSD state and the conv window.
      const [a, b] = [await be.readState(gs), await ref.readState(rs)];
      expect(relDiff(a.ssm, b.ssm)).toBeLessThan(1e-4);
      expect(relDiff(a.conv, b.conv)).toBeLessThan(1e-5);
      measured.push(`${name.padEnd(36)} lanes ${String(lanes).padEnd(3)} ${worst.toExponential(2)} (${steps} steps)`);
      expect(worst).toBeLessThanOrEqual(1e-4);
    } finally {
      be.dispose();
      ref.dispose();
    }
  });

  test('a token step records 3 dispatches a layer fused, 8 with the separate kernels (counted by the recorder)', async () => {
    const { config, weights } = await readModel({ files: syntheticModel(SYNTHETIC[0][1]) });
    const o = { dtype: 'f32' as const, gemvLanes: 32, selfCheck: false };
    const fused = await countStepDispatches(config, weights, { ...o, fused: true });
    const separate = await countStepDispatches(config, weights, { ...o, fused: false });
    measured.push(`dispatches a layer per token: fused ${fused.perLayer} (+${fused.outside} outside the layers), separate kernels ${separate.perLayer} (+${separate.outside})`);
    expect(fused).toEqual({ perLayer: FUSED_LAYER.mamba2.length, outside: 2, fused: true }); // + embed, norm_gemv
    expect(FUSED_LAYER.mamba2.length).toBe(3);
    // rmsnorm, in_proj z / xBC / dt, conv1d, ssd, gated_norm, out_proj; + embed, final rmsnorm, head
    expect(separate).toEqual({ perLayer: 8, outside: 3, fused: false });
  });

  test('chained greedy blocks (the second replayed from the GPU) follow the reference, allocating nothing', async () => {
    const fx = fixtures.find((f) => f.name === 'mamba2-tiny-f32')!;
    const { config, weights } = await readModel(fx.dir);
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32', fused: true, gemvLanes: 32, selfCheck: false });
    const ref = createReferenceBackend(config, weights);
    try {
      const gs = be.createState();
      const rs = ref.createState();
      const prompt = Uint32Array.from(fx.input);
      await be.forward(gs, prompt, 'last');
      let logits = await ref.forward(rs, prompt, 'last');
      const first = argmax(logits);
      const n = software ? 2 : 6;
      const b1 = await be.decodeGreedy(gs, first, n); // steps recorded and captured
      const stats = { ...be.kernels.stats };
      const b2 = await be.decodeGreedy(gs, null, n); // replayed
      expect(be.kernels.stats).toEqual(stats);
      const tokens = [...b1.tokens, ...b2.tokens, b2.next];
      expect(tokens[0]).toBe(first);
      for (let i = 0; i < 2 * n; i++) {
        logits = await ref.forward(rs, Uint32Array.of(tokens[i]), 'last');
        expect(tokens[i + 1]).toBe(argmax(logits));
        if (i === n - 1) expect(relDiff(b1.logits, logits)).toBeLessThanOrEqual(1e-4);
      }
      expect(relDiff(b2.logits, logits)).toBeLessThanOrEqual(1e-4);
      // The state the blocks left equals the reference's after the same tokens.
      expect(relDiff((await be.readState(gs)).ssm, (await ref.readState(rs)).ssm)).toBeLessThan(1e-4);
    } finally {
      be.dispose();
      ref.dispose();
    }
  });
});
