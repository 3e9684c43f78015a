import type { MambaConfig } from '../config.js';
import type { Mamba2LayerWeights } from '../weights.js';
import { softplus } from './math.js';

/**
 * Mamba-2's scan (the state space dual layer, Dao & Gu 2024), one token at a time: the recurrence
 * that defines it. Per head h of group g = ⌊h·G/H⌋, with a scalar A and Δ per head:
 *   Δ_t    = clamp(softplus(dt[t, h] + dt_bias[h]), dtMin, dtMax)
 *   S_t    = exp(Δ_t · A[h]) · S_{t-1} + Δ_t · x_t[h] ⊗ B_t[g]       S [P, N]
 *   y_t[h] = S_t · C_t[g] + D[h] · x_t[h]
 * xbc [T, E + 2GN] (the conv output: x | B | C), dt [T, H], state [H, P, N], y [T, E]
 */
export function ssd(
  xbc: Float32Array,
  dt: Float32Array,
  L: Mamba2LayerWeights,
  state: Float32Array,
  y: Float32Array,
  T: number,
  cfg: MambaConfig,
): void {
  const { dInner: E, dState: N } = cfg;
  const { nHeads: H, headDim: P, nGroups: G, dtMin, dtMax } = cfg.mamba2!;
  const W = E + 2 * G * N;
  for (let t = 0; t < T; t++) {
    const row = t * W;
    for (let h = 0; h < H; h++) {
      const g = Math.floor((h * G) / H);
      const oB = row + E + g * N;
      const oC = row + E + G * N + g * N;
      const delta = Math.min(dtMax, Math.max(dtMin, softplus(dt[t * H + h] + L.dtBias[h])));
      const decay = Math.exp(delta * L.A[h]);
      for (let p = 0; p < P; p++) {
        const x = xbc[row + h * P + p];
        const s = (h * P + p) * N;
        let acc = 0;
        for (let n = 0; n < N; n++) {
          const v = decay * state[s + n] + delta * x * xbc[oB + n];
          state[s + n] = v;
          acc += v * xbc[oC + n];
        }
        y[t * E + h * P + p] = acc + L.D[h] * x;
      }
    }
  }
}

/**
 * The same scan in its chunked (parallel) form, as `ssd_minimal.py` of mamba_ssm: within a chunk of
 * Q tokens the output is a masked matrix product (quadratic in Q, no token-by-token dependence), and
 * only the state crosses chunks. With a_s = Δ_s·A[h] and the running sum cum_t = Σ_{s≤t} a_s:
 *   y_t = Σ_{s≤t} (C_t·B_s) · exp(cum_t − cum_s) · Δ_s · x_s    (within the chunk)
 *       + exp(cum_t) · S_prev · C_t                             (from earlier chunks)
 *       + D · x_t
 *   S_new = exp(cum_{Q−1}) · S_prev + Σ_s exp(cum_{Q−1} − cum_s) · Δ_s · x_s ⊗ B_s
 * It is the readable model of the wasm and WGSL prefill kernels; tests hold it to `ssd`.
 */
export function ssdChunked(
  xbc: Float32Array,
  dt: Float32Array,
  L: Mamba2LayerWeights,
  state: Float32Array,
  y: Float32Array,
  T: number,
  cfg: MambaConfig,
  Q = cfg.mamba2!.chunkSize,
): void {
  const { dInner: E, dState: N } = cfg;
  const { nHeads: H, headDim: P, nGroups: G, dtMin, dtMax } = cfg.mamba2!;
  const W = E + 2 * G * N;
  const delta = new Float64Array(Q); // Δ_s
  const cum = new Float64Array(Q); // cum_t
  for (let t0 = 0; t0 < T; t0 += Q) {
    const q = Math.min(Q, T - t0);
    for (let h = 0; h < H; h++) {
      const g = Math.floor((h * G) / H);
      const B = (s: number, n: number) => xbc[(t0 + s) * W + E + g * N + n];
      const C = (t: number, n: number) => xbc[(t0 + t) * W + E + G * N + g * N + n];
      const X = (s: number, p: number) => xbc[(t0 + s) * W + h * P + p];
      let run = 0;
      for (let s = 0; s < q; s++) {
        delta[s] = Math.min(dtMax, Math.max(dtMin, softplus(dt[(t0 + s) * H + h] + L.dtBias[h])));
        run += delta[s] * L.A[h];
        cum[s] = run;
      }
      for (let t = 0; t < q; t++) {
        for (let p = 0; p < P; p++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) {
            let cb = 0;
            for (let n = 0; n < N; n++) cb += C(t, n) * B(s, n);
            acc += cb * Math.exp(cum[t] - cum[s]) * delta[s] * X(s, p);
          }
          let prev = 0;
          for (let n = 0; n < N; n++) prev += state[(h * P + p) * N + n] * C(t, n);
          y[(t0 + t) * E + h * P + p] = acc + Math.exp(cum[t]) * prev + L.D[h] * X(t, p);
        }
      }
      const last = cum[q - 1];
      for (let p = 0; p < P; p++) {
        for (let n = 0; n < N; n++) {
          let acc = 0;
          for (let s = 0; s < q; s++) acc += Math.exp(last - cum[s]) * delta[s] * X(s, p) * B(s, n);
          const i = (h * P + p) * N + n;
          state[i] = Math.exp(last) * state[i] + acc;
        }
      }
    }
  }
}
