import type { MambaConfig } from '../config.js';
import type { LayerWeights } from '../weights.js';
import { silu, softplus } from './math.js';

/**
 * The selective scan, one token at a time (the recurrence in the Mamba paper, eq. 2a-2b):
 *   Δ_t   = softplus(dt_proj(δ_t) + b)                     δ_t = dbc[t, :R]        Δ_t [E]
 *   h_t   = exp(Δ_t · A) ⊙ h_{t-1} + (Δ_t · u_t) ⊗ B_t     B_t = dbc[t, R:R+N]     h [E, N]
 *   y_t   = h_t · C_t + D ⊙ u_t                            C_t = dbc[t, R+N:]
 *   out_t = y_t ⊙ SiLU(z_t)
 * u, z, out [T, E]; dbc [T, R+2N]; state h [E, N]; A [E, N]; D, dt_proj.bias [E]; dt_proj.weight [E, R]
 */
export function scan(
  u: Float32Array,
  dbc: Float32Array,
  z: Float32Array,
  L: LayerWeights,
  state: Float32Array,
  out: Float32Array,
  T: number,
  cfg: MambaConfig,
): void {
  const { dInner: E, dtRank: R, dState: N } = cfg;
  const S = R + 2 * N;
  for (let t = 0; t < T; t++) {
    const row = t * S;
    for (let e = 0; e < E; e++) {
      let dt = L.dtProjB[e];
      for (let r = 0; r < R; r++) dt += L.dtProjW[e * R + r] * dbc[row + r];
      const delta = softplus(dt);
      const ut = u[t * E + e];
      let y = 0;
      for (let n = 0; n < N; n++) {
        const h = Math.exp(delta * L.A[e * N + n]) * state[e * N + n] + delta * dbc[row + R + n] * ut;
        state[e * N + n] = h;
        y += h * dbc[row + R + N + n];
      }
      y += L.D[e] * ut;
      out[t * E + e] = y * silu(z[t * E + e]);
    }
  }
}
