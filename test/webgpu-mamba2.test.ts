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
import { createWebGPUBackendWith, FUSED_LAYER } from '../src/webgpu/backend.js';
import { loadFixtures } from './helpers/fixtures.js';
import { nodeWebGPU } from './helpers/env.js';

const gpu = await nodeWebGPU(import.meta.url);
const software = gpu?.software ?? false;
gpu?.device.destroy();

const measured: string[] = [];
afterAll(() => {
  if (measured.length) console.log(`mamba2 fused step, max|Δ|/max|logit| against the reference:\n  ${measured.join('\n  ')}`);
});

/** max |a − b| / max |b|. */
function rel(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

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
  const runs = cases.flatMap((c, i) => [
    { ...c, lanes: 32 },
    ...(i === 0 || i === fixtures.length ? [{ ...c, lanes: 1 }] : []),
  ]);
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
        worst = Math.max(worst, rel(await be.forward(gs, tok, 'last'), await ref.forward(rs, tok, 'last')));
      }
      // The state after the steps, too: the SSD state and the conv window.
      const [a, b] = [await be.readState(gs), await ref.readState(rs)];
      expect(rel(a.ssm, b.ssm)).toBeLessThan(1e-4);
      expect(rel(a.conv, b.conv)).toBeLessThan(1e-5);
      measured.push(`${name.padEnd(36)} lanes ${String(lanes).padEnd(3)} ${worst.toExponential(2)} (${steps} steps)`);
      expect(worst).toBeLessThanOrEqual(1e-4);
    } finally {
      be.dispose();
      ref.dispose();
    }
  });
});
