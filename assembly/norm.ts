// RMSNorm per token: out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · w     x, out [T, dim]; w [dim]
import { hsum } from './math';

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
