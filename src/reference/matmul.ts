/**
 * out[t, n] (+)= Σ_k x[t, k] · w[n, k] + bias[n]
 * x [T, K], w [N, K] (PyTorch Linear layout: one row per output), bias [N], out [T, N]
 */
export function matmul(
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | undefined,
  out: Float32Array,
  T: number,
  K: number,
  N: number,
  accumulate: boolean,
): void {
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let acc = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) acc += x[t * K + k] * w[n * K + k];
      out[t * N + n] = accumulate ? out[t * N + n] + acc : acc;
    }
  }
}
