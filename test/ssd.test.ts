/**
 * Mamba-2's own math, beyond the conformance table: the chunked (parallel) SSD against the recurrence
 * that defines it, and the gated RMSNorm per group against a float64 computation written here
 * (transformers 5.17 normalises over all of E instead, which agrees only for one group).
 */
import { describe, expect, test } from 'vitest';
import { parseConfig, type MambaConfig } from '../src/config.js';
import { gatedNorm } from '../src/reference/norm.js';
import { ssd, ssdChunked } from '../src/reference/ssd.js';
import type { Mamba2LayerWeights } from '../src/weights.js';

let seed = 99;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const randn = (n: number, scale = 1) => Float32Array.from({ length: n }, () => rand() * scale);

function config(over: Record<string, unknown> = {}): MambaConfig {
  return parseConfig(JSON.stringify({ model_type: 'mamba2', hidden_size: 24, expand: 2, num_heads: 4, head_dim: 12, n_groups: 2, state_size: 5, num_hidden_layers: 1, vocab_size: 256, ...over }));
}

function layer(c: MambaConfig): Mamba2LayerWeights {
  const H = c.mamba2!.nHeads;
  const none = new Float32Array(0);
  return {
    norm: none, inProjZ: none, inProjX: none, inProjDt: none, convW: none, outProj: none,
    dtBias: randn(H, 0.5),
    A: Float32Array.from({ length: H }, () => -1 - 4 * Math.abs(rand())),
    D: randn(H),
    gateNorm: randn(c.dInner),
  };
}

describe('SSD: the chunked form equals the recurrence', () => {
  for (const [T, Q] of [[1, 4], [13, 4], [13, 13], [40, 16], [40, 64]]) {
    test(`T=${T}, chunks of ${Q}, state carried in and out`, () => {
      const c = config({ time_step_limit: [0.001, 2] });
      const { nHeads: H, nGroups: G } = c.mamba2!;
      const W = c.dInner + 2 * G * c.dState;
      const L = layer(c);
      const xbc = randn(T * W), dt = randn(T * H);
      const s0 = randn(c.dInner * c.dState);
      const sA = s0.slice(), sB = s0.slice();
      const yA = new Float32Array(T * c.dInner), yB = new Float32Array(T * c.dInner);
      ssd(xbc, dt, L, sA, yA, T, c);
      ssdChunked(xbc, dt, L, sB, yB, T, c, Q);
      for (let i = 0; i < yA.length; i++) expect(yB[i]).toBeCloseTo(yA[i], 5);
      for (let i = 0; i < sA.length; i++) expect(sB[i]).toBeCloseTo(sA[i], 5);
    });
  }
});

describe('gated RMSNorm per group (mamba_ssm RMSNormGated)', () => {
  const T = 3;
  /** float64, written from the definition: groups of E/G channels, gate before or after the norm. */
  function expected(y: Float32Array, z: Float32Array, w: Float32Array, E: number, G: number, before: boolean, eps: number): number[] {
    const out: number[] = [];
    const S = E / G;
    for (let t = 0; t < T; t++) {
      for (let g = 0; g < G; g++) {
        const idx = Array.from({ length: S }, (_, i) => t * E + g * S + i);
        const silu = (v: number) => v / (1 + Math.exp(-v));
        const v = idx.map((i) => (before ? y[i] : y[i] * silu(z[i])));
        const rms = Math.sqrt(v.reduce((a, b) => a + b * b, 0) / S + eps);
        idx.forEach((i, k) => out.push((v[k] / rms) * w[g * S + k] * (before ? silu(z[i]) : 1)));
      }
    }
    return out;
  }
  for (const [G, before] of [[1, false], [2, false], [4, true]] as const) {
    test(`${G} group(s), norm ${before ? 'before' : 'after'} the gate`, () => {
      const c = config({ n_groups: G, norm_before_gate: before });
      const E = c.dInner;
      const y = randn(T * E, 3), z = randn(T * E, 2), w = randn(E);
      const got = new Float32Array(T * E);
      gatedNorm(y, z, w, got, T, c);
      const want = expected(y, z, w, E, G, before, c.mamba2!.normEps);
      for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(want[i], 5);
      // Over all of E (transformers 5.17) is a different function once there are several groups.
      const whole = expected(y, z, w, E, 1, before, c.mamba2!.normEps);
      const differs = whole.some((v, i) => Math.abs(v - got[i]) > 1e-3);
      expect(differs).toBe(G > 1);
    });
  }
});

describe('Mamba-2 config', () => {
  test('time_step_limit: transformers {"__float__": "Infinity"}, a bare Infinity, and numbers', () => {
    expect(config({ time_step_limit: [0, { __float__: 'Infinity' }] }).mamba2).toMatchObject({ dtMin: 0, dtMax: Infinity });
    const text = JSON.stringify({ model_type: 'mamba2', hidden_size: 24, num_heads: 4, head_dim: 12, n_groups: 1, num_hidden_layers: 1, vocab_size: 256, time_step_limit: [0.0, 'INF'] }).replace('"INF"', 'Infinity');
    expect(parseConfig(text).mamba2).toMatchObject({ dtMin: 0, dtMax: Infinity });
    expect(config({ time_step_limit: [0.01, 0.1] }).mamba2).toMatchObject({ dtMin: 0.01, dtMax: 0.1 });
    expect(() => config({ time_step_limit: [0.1, 0.01] })).toThrow(/time_step_limit/);
  });
  test('shapes that cannot work are typed errors naming the field', () => {
    expect(() => config({ num_heads: 5 })).toThrow(/num_heads x head_dim = 60 must equal/);
    expect(() => config({ n_groups: 3 })).toThrow(/do not split into 3 groups/);
    const ssm = (cfg: object) => parseConfig(JSON.stringify({ d_model: 24, n_layer: 1, vocab_size: 256, ssm_cfg: { layer: 'Mamba2', headdim: 12, ...cfg } }));
    expect(ssm({}).mamba2).toMatchObject({ nHeads: 4, headDim: 12, nGroups: 1, normEps: 1e-5, normGroupSize: 48 });
    expect(() => ssm({ d_ssm: 24 })).toThrow(/d_ssm/);
    expect(() => parseConfig(JSON.stringify({ d_model: 24, n_layer: 1, vocab_size: 256, d_intermediate: 64, ssm_cfg: { layer: 'Mamba2', headdim: 12 } }))).toThrow(/d_intermediate/);
  });
});
