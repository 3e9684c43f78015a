// RMSNorm per token: out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · w     x, out [T, dim]; w [dim]
import { hsum, silu1 } from './math';

/** Normalises tokens [tStart, tEnd). `out` may alias `x`. */
export function rmsnorm(x: usize, w: usize, out: usize, dim: i32, eps: f32, tStart: i32, tEnd: i32): void {
  const dv = dim & ~3;
  for (let t = tStart; t < tEnd; t++) {
    const xr = x + ((<usize>t * <usize>dim) << 2);
    const or = out + ((<usize>t * <usize>dim) << 2);
    let acc = f32x4.splat(0);
    for (let i = 0; i < dv; i += 4) {
      const v = v128.load(xr + (<usize>i << 2));
      acc = f32x4.add(acc, f32x4.mul(v, v));
    }
    let ss = hsum(acc);
    for (let i = dv; i < dim; i++) {
      const v = load<f32>(xr + (<usize>i << 2));
      ss += v * v;
    }
    const scale: f32 = 1.0 / Mathf.sqrt(ss / <f32>dim + eps);
    const sv = f32x4.splat(scale);
    for (let i = 0; i < dv; i += 4) {
      const o = <usize>i << 2;
      v128.store(or + o, f32x4.mul(f32x4.mul(v128.load(xr + o), sv), v128.load(w + o)));
    }
    for (let i = dv; i < dim; i++) {
      const o = <usize>i << 2;
      store<f32>(or + o, load<f32>(xr + o) * scale * load<f32>(w + o));
    }
  }
}

/**
 * Weightless RMSNorm of each of the three consecutive segments [s0 | s1 | s2] of rows [tStart, tEnd)
 * of x [T, s0+s1+s2], in place (Falcon-Mamba's Δ | B | C). Segments are a few dozen floats and start
 * at any offset, so this stays scalar.
 */
export function normSegments(x: usize, s0: i32, s1: i32, s2: i32, eps: f32, tStart: i32, tEnd: i32): void {
  const width = s0 + s1 + s2;
  for (let t = tStart; t < tEnd; t++) {
    let p = x + ((<usize>t * <usize>width) << 2);
    for (let s = 0; s < 3; s++) {
      const len = s == 0 ? s0 : s == 1 ? s1 : s2;
      let ss: f32 = 0;
      for (let i = 0; i < len; i++) {
        const v = load<f32>(p + (<usize>i << 2));
        ss += v * v;
      }
      const scale: f32 = 1.0 / Mathf.sqrt(ss / <f32>len + eps);
      for (let i = 0; i < len; i++) store<f32>(p + (<usize>i << 2), load<f32>(p + (<usize>i << 2)) * scale);
      p += <usize>len << 2;
    }
  }
}

/**
 * Mamba-2's gated RMSNorm, tokens [tStart, tEnd), per group of S channels (src/reference/ssd.ts):
 *   out = rmsnorm_g(y ⊙ SiLU(z)) ⊙ w,  or with `normFirst`  rmsnorm_g(y) ⊙ w ⊙ SiLU(z)
 * y, z, out [T, E]; w [E]. `out` must not alias `y`: it holds the gated values between the passes.
 */
export function gatedNorm(y: usize, z: usize, w: usize, out: usize, E: i32, S: i32, eps: f32, normFirst: i32, tStart: i32, tEnd: i32): void {
  for (let t = tStart; t < tEnd; t++) {
    for (let g = 0; g < E; g += S) {
      const o = ((<usize>t * <usize>E) + <usize>g) << 2;
      let ss: f32 = 0;
      for (let i = 0; i < S; i++) {
        const b = o + (<usize>i << 2);
        const v = normFirst ? load<f32>(y + b) : load<f32>(y + b) * silu1(load<f32>(z + b));
        store<f32>(out + b, v);
        ss += v * v;
      }
      const scale: f32 = 1.0 / Mathf.sqrt(ss / <f32>S + eps);
      for (let i = 0; i < S; i++) {
        const b = o + (<usize>i << 2);
        const gate: f32 = normFirst ? silu1(load<f32>(z + b)) : 1.0;
        store<f32>(out + b, load<f32>(out + b) * scale * load<f32>(w + (<usize>(g + i) << 2)) * gate);
      }
    }
  }
}
