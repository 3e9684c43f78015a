import { silu } from './math.js';

/**
 * Causal depthwise conv1d continuing from `state`, then SiLU.
 * The sequence seen by the kernel is [state (K-1 past inputs), x (T new inputs)]; output t uses
 * inputs t .. t+K-1 of that sequence, so it never looks ahead. Afterwards the state holds the last K-1 inputs.
 * x, out [T, E]; state [E, K-1] oldest first; w [E, K]; bias [E]
 */
export function conv1d(
  x: Float32Array,
  state: Float32Array,
  w: Float32Array,
  bias: Float32Array | undefined,
  out: Float32Array,
  T: number,
  E: number,
  K: number,
): void {
  const P = K - 1;
  const window = new Float32Array(P + T); // [K-1+T] one channel's padded sequence
  for (let e = 0; e < E; e++) {
    for (let i = 0; i < P; i++) window[i] = state[e * P + i];
    for (let t = 0; t < T; t++) window[P + t] = x[t * E + e];
    for (let t = 0; t < T; t++) {
      let acc = bias ? bias[e] : 0;
      for (let j = 0; j < K; j++) acc += w[e * K + j] * window[t + j];
      out[t * E + e] = silu(acc);
    }
    for (let i = 0; i < P; i++) state[e * P + i] = window[T + i];
  }
}
