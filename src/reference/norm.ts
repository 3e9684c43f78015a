import type { MambaConfig } from '../config.js';
import { silu } from './math.js';

/** RMSNorm per row: out = x / sqrt(mean(x²) + eps) · w     x, out [T, dim], w [dim] */
export function rmsnorm(x: Float32Array, w: Float32Array, out: Float32Array, T: number, dim: number, eps: number): void {
  for (let t = 0; t < T; t++) {
    const row = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[row + i] * x[row + i];
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[row + i] = x[row + i] * scale * w[i];
  }
}

/** Weightless RMSNorm of each consecutive segment of each row, in place.    x [T, Σ segments] */
export function normSegments(x: Float32Array, T: number, segments: readonly number[], eps: number): void {
  const width = segments.reduce((a, b) => a + b, 0);
  for (let t = 0; t < T; t++) {
    let o = t * width;
    for (const len of segments) {
      let ss = 0;
      for (let i = o; i < o + len; i++) ss += x[i] * x[i];
      const scale = 1 / Math.sqrt(ss / len + eps);
      for (let i = o; i < o + len; i++) x[i] *= scale;
      o += len;
    }
  }
}

/**
 * Mamba-2's gated RMSNorm, per group of `normGroupSize` channels as mamba_ssm's RMSNormGated:
 *   out = rmsnorm_g(y ⊙ SiLU(z)) ⊙ w      (normBeforeGate: rmsnorm_g(y) ⊙ w ⊙ SiLU(z))
 * y, z, out [T, E]; w [E]. `out` may alias `y`.
 */
export function gatedNorm(y: Float32Array, z: Float32Array, w: Float32Array, out: Float32Array, T: number, cfg: MambaConfig): void {
  const E = cfg.dInner;
  const { normGroupSize: S, normBeforeGate, normEps: eps } = cfg.mamba2!;
  const v = new Float64Array(S);
  for (let t = 0; t < T; t++) {
    for (let g0 = t * E; g0 < (t + 1) * E; g0 += S) {
      let ss = 0;
      for (let i = 0; i < S; i++) {
        v[i] = normBeforeGate ? y[g0 + i] : y[g0 + i] * silu(z[g0 + i]);
        ss += v[i] * v[i];
      }
      const scale = 1 / Math.sqrt(ss / S + eps);
      for (let i = 0; i < S; i++) {
        const c = (g0 % E) + i;
        out[g0 + i] = v[i] * scale * w[c] * (normBeforeGate ? silu(z[g0 + i]) : 1);
      }
    }
  }
}
