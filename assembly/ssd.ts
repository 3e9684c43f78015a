// Mamba-2's scan (SSD) for one chunk of T ≤ 64 tokens in its parallel form (src/reference/ssd.ts,
// `ssdChunked`): per head, with a_s = Δ_s·A and cum_t = Σ_{s≤t} a_s,
//   y_t   = Σ_{s≤t} (C_t·B_s)·exp(cum_t − cum_s)·Δ_s · x_s  +  exp(cum_t)·S·C_t  +  D·x_t
//   S    ← exp(cum_{T−1})·S + Σ_s exp(cum_{T−1} − cum_s)·Δ_s · x_s ⊗ B_s
// The within-chunk part is a masked [T, T]·[T, P] product, so no token waits on the one before it;
// a decode step is the same code with T = 1. The forward pass feeds chunks of at most 64 tokens
// (src/forward.ts), and each call is one SSD chunk: the state carries the rest.
// xbc [T, E + 2GN] (x | B | C after the conv); dt [T, H]; dtBias, A, D [H]; state [H, P, N]; y [T, E].
// Heads are independent, so threads split [hStart, hEnd) and never touch each other's state.
import { hsum, softplus1 } from './math';

/** Scratch per thread: M [T, T] then Δ [T], cum [T] (floats). */
export function ssdScratchFloats(T: i32): i32 {
  return T * T + 2 * T;
}

export function ssd(
  xbc: usize, dt: usize, dtBias: usize, A: usize, D: usize, state: usize, y: usize,
  T: i32, N: i32, H: i32, P: i32, G: i32, dtMin: f32, dtMax: f32,
  scratch: usize, hStart: i32, hEnd: i32,
): void {
  const E = H * P;
  const rs = <usize>(E + 2 * G * N) << 2; // xbc row stride, bytes
  const ys = <usize>E << 2;
  const M = scratch;
  const delta = M + (<usize>(T * T) << 2);
  const cum = delta + (<usize>T << 2);
  const N4 = N & ~3, P4 = P & ~3;
  for (let h = hStart; h < hEnd; h++) {
    const g = (h * G) / H;
    const xo = <usize>(h * P) << 2; // byte offsets within an xbc row
    const bo = <usize>(E + g * N) << 2;
    const co = <usize>(E + G * N + g * N) << 2;
    const Ah = load<f32>(A + (<usize>h << 2));
    const bias = load<f32>(dtBias + (<usize>h << 2));
    let run: f32 = 0;
    for (let s = 0; s < T; s++) {
      const d = min(dtMax, max(dtMin, softplus1(load<f32>(dt + ((<usize>(s * H + h)) << 2)) + bias)));
      store<f32>(delta + (<usize>s << 2), d);
      run += d * Ah;
      store<f32>(cum + (<usize>s << 2), run);
    }
    // M[t, s] = (C_t · B_s) · exp(cum_t − cum_s) · Δ_s for s ≤ t.
    for (let t = 0; t < T; t++) {
      const ct = xbc + <usize>t * rs + co;
      const cumT = load<f32>(cum + (<usize>t << 2));
      for (let s = 0; s <= t; s++) {
        const bs = xbc + <usize>s * rs + bo;
        let acc = f32x4.splat(0);
        for (let n = 0; n < N4; n += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(ct + (<usize>n << 2)), v128.load(bs + (<usize>n << 2))));
        let cb = hsum(acc);
        for (let n = N4; n < N; n++) cb += load<f32>(ct + (<usize>n << 2)) * load<f32>(bs + (<usize>n << 2));
        const w = Mathf.exp(cumT - load<f32>(cum + (<usize>s << 2))) * load<f32>(delta + (<usize>s << 2));
        store<f32>(M + (<usize>(t * T + s) << 2), cb * w);
      }
    }
    const Dh = load<f32>(D + (<usize>h << 2));
    const st = state + ((<usize>(h * P) * <usize>N) << 2);
    // y_t = Σ_{s≤t} M[t, s]·x_s + exp(cum_t)·S·C_t + D·x_t   (before S changes)
    for (let t = 0; t < T; t++) {
      const yt = y + <usize>t * ys + xo;
      const xt = xbc + <usize>t * rs + xo;
      const ct = xbc + <usize>t * rs + co;
      const decay = Mathf.exp(load<f32>(cum + (<usize>t << 2)));
      for (let p = 0; p < P; p++) {
        const sp = st + ((<usize>(p * N)) << 2);
        let acc = f32x4.splat(0);
        for (let n = 0; n < N4; n += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(sp + (<usize>n << 2)), v128.load(ct + (<usize>n << 2))));
        let sc = hsum(acc);
        for (let n = N4; n < N; n++) sc += load<f32>(sp + (<usize>n << 2)) * load<f32>(ct + (<usize>n << 2));
        store<f32>(yt + (<usize>p << 2), decay * sc + Dh * load<f32>(xt + (<usize>p << 2)));
      }
      for (let s = 0; s <= t; s++) {
        const m = f32x4.splat(load<f32>(M + (<usize>(t * T + s) << 2)));
        const xs = xbc + <usize>s * rs + xo;
        for (let p = 0; p < P4; p += 4) {
          const o = <usize>p << 2;
          v128.store(yt + o, f32x4.add(v128.load(yt + o), f32x4.mul(m, v128.load(xs + o))));
        }
        const ms = f32x4.extract_lane(m, 0);
        for (let p = P4; p < P; p++) store<f32>(yt + (<usize>p << 2), load<f32>(yt + (<usize>p << 2)) + ms * load<f32>(xs + (<usize>p << 2)));
      }
    }
    // S ← exp(cum_last)·S + Σ_s w_s · x_s ⊗ B_s, w_s = exp(cum_last − cum_s)·Δ_s (kept in M's first row).
    const last = load<f32>(cum + (<usize>(T - 1) << 2));
    for (let s = 0; s < T; s++) {
      store<f32>(M + (<usize>s << 2), Mathf.exp(last - load<f32>(cum + (<usize>s << 2))) * load<f32>(delta + (<usize>s << 2)));
    }
    const keep = f32x4.splat(Mathf.exp(last));
    const keep1 = f32x4.extract_lane(keep, 0);
    for (let p = 0; p < P; p++) {
      const sp = st + ((<usize>(p * N)) << 2);
      for (let n = 0; n < N4; n += 4) v128.store(sp + (<usize>n << 2), f32x4.mul(keep, v128.load(sp + (<usize>n << 2))));
      for (let n = N4; n < N; n++) store<f32>(sp + (<usize>n << 2), keep1 * load<f32>(sp + (<usize>n << 2)));
      for (let s = 0; s < T; s++) {
        const c1 = load<f32>(M + (<usize>s << 2)) * load<f32>(xbc + <usize>s * rs + xo + (<usize>p << 2));
        const c = f32x4.splat(c1);
        const bs = xbc + <usize>s * rs + bo;
        for (let n = 0; n < N4; n += 4) {
          const o = <usize>n << 2;
          v128.store(sp + o, f32x4.add(v128.load(sp + o), f32x4.mul(c, v128.load(bs + o))));
        }
        for (let n = N4; n < N; n++) store<f32>(sp + (<usize>n << 2), load<f32>(sp + (<usize>n << 2)) + c1 * load<f32>(bs + (<usize>n << 2)));
      }
    }
  }
}
