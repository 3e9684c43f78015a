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

const ONE = f32x4.splat(1);

/**
 * o[0..16) ← scale·o[0..16) + Σ_{s<count} w_s · row_s[0..16), with row_s = rows + s·stride and
 * w_s = coef[s] (· xs[s·stride] when xs ≠ 0): 16 outputs held in registers across all the rows, the
 * shape of both the M·x readout and the state update.
 */
// @ts-ignore: decorator
@inline function rows16(o: usize, scale: v128, count: i32, coef: usize, xs: usize, rows: usize, stride: usize): void {
  let a0 = f32x4.mul(scale, v128.load(o)), a1 = f32x4.mul(scale, v128.load(o + 16));
  let a2 = f32x4.mul(scale, v128.load(o + 32)), a3 = f32x4.mul(scale, v128.load(o + 48));
  for (let s = 0; s < count; s++) {
    let w = load<f32>(coef + (<usize>s << 2));
    if (xs) w *= load<f32>(xs + <usize>s * stride);
    const c = f32x4.splat(w);
    const r = rows + <usize>s * stride;
    a0 = f32x4.add(a0, f32x4.mul(c, v128.load(r)));
    a1 = f32x4.add(a1, f32x4.mul(c, v128.load(r + 16)));
    a2 = f32x4.add(a2, f32x4.mul(c, v128.load(r + 32)));
    a3 = f32x4.add(a3, f32x4.mul(c, v128.load(r + 48)));
  }
  v128.store(o, a0);
  v128.store(o + 16, a1);
  v128.store(o + 32, a2);
  v128.store(o + 48, a3);
}

/** Scratch per thread: C·B [T, T] (per group), then Δ [T], cum [T] and one row of M [T] (floats). */
export function ssdScratchFloats(T: i32): i32 {
  return T * T + 3 * T;
}

// Where the time goes (130m shapes, T = 64, N = 128, P = 64): the [T, T] C·B products depend on the
// group only, so a thread computes them once per group, not per head (G = 1: once, not 24 times);
// the y readout takes four channels per pass over C_t, and the state update and M·x keep 16 outputs
// in registers across the tokens instead of loading and storing them per token.
export function ssd(
  xbc: usize, dt: usize, dtBias: usize, A: usize, D: usize, state: usize, y: usize,
  T: i32, N: i32, H: i32, P: i32, G: i32, dtMin: f32, dtMax: f32,
  scratch: usize, hStart: i32, hEnd: i32,
): void {
  const E = H * P;
  const rs = <usize>(E + 2 * G * N) << 2; // xbc row stride, bytes
  const ys = <usize>E << 2;
  const CB = scratch;
  const delta = CB + (<usize>(T * T) << 2);
  const cum = delta + (<usize>T << 2);
  const mrow = cum + (<usize>T << 2);
  const N4 = N & ~3, N16 = N & ~15, P4 = P & ~3, P16 = P & ~15;
  let cbGroup = -1;
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
    // CB[t, s] = C_t · B_s for s ≤ t: the group's, shared by its heads.
    if (g != cbGroup) {
      cbGroup = g;
      for (let t = 0; t < T; t++) {
        const ct = xbc + <usize>t * rs + co;
        for (let s = 0; s <= t; s++) {
          const bs = xbc + <usize>s * rs + bo;
          let acc = f32x4.splat(0);
          for (let n = 0; n < N4; n += 4) acc = f32x4.add(acc, f32x4.mul(v128.load(ct + (<usize>n << 2)), v128.load(bs + (<usize>n << 2))));
          let cb = hsum(acc);
          for (let n = N4; n < N; n++) cb += load<f32>(ct + (<usize>n << 2)) * load<f32>(bs + (<usize>n << 2));
          store<f32>(CB + (<usize>(t * T + s) << 2), cb);
        }
      }
    }
    const Dh = load<f32>(D + (<usize>h << 2));
    const st = state + ((<usize>(h * P) * <usize>N) << 2);
    // y_t = Σ_{s≤t} M[t, s]·x_s + exp(cum_t)·S·C_t + D·x_t   (before S changes),
    // M[t, s] = CB[t, s] · exp(cum_t − cum_s) · Δ_s
    for (let t = 0; t < T; t++) {
      const yt = y + <usize>t * ys + xo;
      const xt = xbc + <usize>t * rs + xo;
      const ct = xbc + <usize>t * rs + co;
      const cumT = load<f32>(cum + (<usize>t << 2));
      const decay = Mathf.exp(cumT);
      for (let s = 0; s <= t; s++) {
        const w = Mathf.exp(cumT - load<f32>(cum + (<usize>s << 2))) * load<f32>(delta + (<usize>s << 2));
        store<f32>(mrow + (<usize>s << 2), load<f32>(CB + (<usize>(t * T + s) << 2)) * w);
      }
      let p = 0;
      for (; p < P4; p += 4) {
        const s0 = st + ((<usize>(p * N)) << 2);
        const s1 = s0 + (<usize>N << 2), s2 = s1 + (<usize>N << 2), s3 = s2 + (<usize>N << 2);
        let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
        for (let n = 0; n < N4; n += 4) {
          const o = <usize>n << 2;
          const c = v128.load(ct + o);
          a0 = f32x4.add(a0, f32x4.mul(v128.load(s0 + o), c));
          a1 = f32x4.add(a1, f32x4.mul(v128.load(s1 + o), c));
          a2 = f32x4.add(a2, f32x4.mul(v128.load(s2 + o), c));
          a3 = f32x4.add(a3, f32x4.mul(v128.load(s3 + o), c));
        }
        let r0 = hsum(a0), r1 = hsum(a1), r2 = hsum(a2), r3 = hsum(a3);
        for (let n = N4; n < N; n++) {
          const o = <usize>n << 2;
          const c = load<f32>(ct + o);
          r0 += load<f32>(s0 + o) * c;
          r1 += load<f32>(s1 + o) * c;
          r2 += load<f32>(s2 + o) * c;
          r3 += load<f32>(s3 + o) * c;
        }
        const r = f32x4(r0, r1, r2, r3);
        const o = <usize>p << 2;
        v128.store(yt + o, f32x4.add(f32x4.mul(f32x4.splat(decay), r), f32x4.mul(f32x4.splat(Dh), v128.load(xt + o))));
      }
      for (; p < P; p++) {
        const sp = st + ((<usize>(p * N)) << 2);
        let sc: f32 = 0;
        for (let n = 0; n < N; n++) sc += load<f32>(sp + (<usize>n << 2)) * load<f32>(ct + (<usize>n << 2));
        store<f32>(yt + (<usize>p << 2), decay * sc + Dh * load<f32>(xt + (<usize>p << 2)));
      }
      // + Σ_{s≤t} M[t, s]·x_s, 16 channels at a time held in registers
      p = 0;
      for (; p < P16; p += 16) rows16(yt + (<usize>p << 2), ONE, t + 1, mrow, 0, xbc + xo + (<usize>p << 2), rs);
      for (; p < P; p++) {
        let acc = load<f32>(yt + (<usize>p << 2));
        for (let s = 0; s <= t; s++) acc += load<f32>(mrow + (<usize>s << 2)) * load<f32>(xbc + <usize>s * rs + xo + (<usize>p << 2));
        store<f32>(yt + (<usize>p << 2), acc);
      }
    }
    // S ← exp(cum_last)·S + Σ_s w_s · x_s ⊗ B_s, w_s = exp(cum_last − cum_s)·Δ_s (kept in mrow).
    const last = load<f32>(cum + (<usize>(T - 1) << 2));
    for (let s = 0; s < T; s++) {
      store<f32>(mrow + (<usize>s << 2), Mathf.exp(last - load<f32>(cum + (<usize>s << 2))) * load<f32>(delta + (<usize>s << 2)));
    }
    const keep = f32x4.splat(Mathf.exp(last));
    const keep1 = f32x4.extract_lane(keep, 0);
    for (let p = 0; p < P; p++) {
      const sp = st + ((<usize>(p * N)) << 2);
      const xp = xbc + xo + (<usize>p << 2);
      let n = 0;
      for (; n < N16; n += 16) rows16(sp + (<usize>n << 2), keep, T, mrow, xp, xbc + bo + (<usize>n << 2), rs);
      for (; n < N; n++) {
        const o = sp + (<usize>n << 2);
        let acc = keep1 * load<f32>(o);
        for (let s = 0; s < T; s++) acc += load<f32>(mrow + (<usize>s << 2)) * load<f32>(xp + <usize>s * rs) * load<f32>(xbc + <usize>s * rs + bo + (<usize>n << 2));
        store<f32>(o, acc);
      }
    }
  }
}
