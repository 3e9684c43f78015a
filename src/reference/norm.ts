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
