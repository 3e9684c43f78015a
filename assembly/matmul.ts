// Projections: out[t, n] (+)= bias[n] + Σ_k x[t, k] · w[n, k] over weights stored as f32, f16 or q8.
//   x [T, K] (row stride ldx floats), w [N, K] (PyTorch Linear layout), bias [N] or 0, out [T, N] (stride ldo)
// Every entry point computes only output rows [rowStart, rowEnd) so threads can split N.
//
// T = 1 (decode) is a GEMV that streams each weight exactly once and should be bound by memory bandwidth:
// f32 rows are read one after another as a single sequential stream; the compact formats, whose
// unpacking costs more SIMD ops per byte, keep four rows in flight sharing the prepared x (f16: shift/mask
// unpacking of 8 halves per load; q8 and q4: integer dot products against x quantised per 32-block).
// T > 1 (prefill) is compute-bound: a 4-row tile is dequantised once into per-thread f32 scratch and
// reused for every token, two tokens at a time (8 accumulators + 4 weight vectors fit the 16 SIMD
// registers V8 uses on x64).
import { C_POW100, C_POW112, C_POW12, F16, F32, HI_BYTES, NIBBLE16, NIBBLE8, Q4, Q8, QBLOCK, ROUND_BITS, TILED, c, colOffset, half1, halfBits, hsum, madd, rowAddr, rowBytes, scaleAddr, scaleStride, unitBytes, unitStride, w1, w4 } from './math';

/** [Σ a0, Σ a1, Σ a2, Σ a3]: four horizontal sums at once (a 4×4 transpose-add). */
// @ts-ignore: decorator
@inline function sum4(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const s01 = f32x4.add(f32x4.shuffle(a0, a1, 0, 1, 4, 5), f32x4.shuffle(a0, a1, 2, 3, 6, 7));
  const s23 = f32x4.add(f32x4.shuffle(a2, a3, 0, 1, 4, 5), f32x4.shuffle(a2, a3, 2, 3, 6, 7));
  return f32x4.add(f32x4.shuffle(s01, s23, 0, 2, 4, 6), f32x4.shuffle(s01, s23, 1, 3, 5, 7));
}

/**
 * Writes the sums of rows n .. n+nv (nv ≤ 4 valid lanes) of one token: out[n+i] (+)= bias[n+i] + sums[i].
 */
// @ts-ignore: decorator
@inline function store4(out: usize, bias: usize, n: i32, nv: i32, sums: v128, accumulate: bool): void {
  const o = out + (<usize>n << 2);
  if (nv == 4) {
    let v = sums;
    if (bias) v = f32x4.add(v, v128.load(bias + (<usize>n << 2)));
    if (accumulate) v = f32x4.add(v, v128.load(o));
    v128.store(o, v);
    return;
  }
  // Partial tile at the end of a row range: lanes must be named by constants.
  store1(o, bias, n, 0, f32x4.extract_lane(sums, 0), accumulate);
  if (nv > 1) store1(o, bias, n, 1, f32x4.extract_lane(sums, 1), accumulate);
  if (nv > 2) store1(o, bias, n, 2, f32x4.extract_lane(sums, 2), accumulate);
}

// @ts-ignore: decorator
@inline function store1(o: usize, bias: usize, n: i32, i: i32, s: f32, accumulate: bool): void {
  const p = o + (<usize>i << 2);
  if (bias) s += load<f32>(bias + (<usize>(n + i) << 2));
  if (accumulate) s += load<f32>(p);
  store<f32>(p, s);
}

/** Lanes [lo, hi) of `sums`, the rows n0+lo .. n0+hi-1: a tile that the row range may cut at either end. */
// @ts-ignore: decorator
@inline function storeLanes(out: usize, bias: usize, n0: i32, lo: i32, hi: i32, sums: v128, accumulate: bool): void {
  if (lo == 0 && hi == 4) {
    store4(out, bias, n0, 4, sums, accumulate);
    return;
  }
  const o = out + (<usize>n0 << 2);
  if (lo <= 0 && hi > 0) store1(o, bias, n0, 0, f32x4.extract_lane(sums, 0), accumulate);
  if (lo <= 1 && hi > 1) store1(o, bias, n0, 1, f32x4.extract_lane(sums, 1), accumulate);
  if (lo <= 2 && hi > 2) store1(o, bias, n0, 2, f32x4.extract_lane(sums, 2), accumulate);
  if (lo <= 3 && hi > 3) store1(o, bias, n0, 3, f32x4.extract_lane(sums, 3), accumulate);
}

/**
 * Σ_k x[k] · w[k] for one f32 row, 32 columns (two cache lines) per step into eight accumulators. One row
 * at a time keeps the weight reads a single sequential stream: measured ~15% faster than four rows in
 * flight sharing their x loads (x stays in L1 either way); eight chains hide the latency of the adds.
 */
// @ts-ignore: decorator
@inline function dot1(x: usize, K: i32, r: usize): f32 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  const K32 = K & ~31;
  const end = x + (<usize>K32 << 2);
  let px = x, p = r;
  while (px < end) {
    a0 = madd(v128.load(px), v128.load(p), a0);
    a1 = madd(v128.load(px, 16), v128.load(p, 16), a1);
    a2 = madd(v128.load(px, 32), v128.load(p, 32), a2);
    a3 = madd(v128.load(px, 48), v128.load(p, 48), a3);
    a4 = madd(v128.load(px, 64), v128.load(p, 64), a4);
    a5 = madd(v128.load(px, 80), v128.load(p, 80), a5);
    a6 = madd(v128.load(px, 96), v128.load(p, 96), a6);
    a7 = madd(v128.load(px, 112), v128.load(p, 112), a7);
    px += 128; p += 128;
  }
  // Short rows (dt_proj has K = R, e.g. 48) still get most of their columns in vectors.
  let k = K32;
  for (; k + 4 <= K; k += 4) a0 = madd(v128.load(x + (<usize>k << 2)), v128.load(r + (<usize>k << 2)), a0);
  let s = hsum(f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7))));
  for (; k < K; k++) s += load<f32>(x + (<usize>k << 2)) * load<f32>(r + (<usize>k << 2));
  return s;
}

/**
 * Four short f32 rows (K < 128, e.g. dt_proj's K = R): one accumulator per row and a single `sum4`, where
 * `dot1`'s eight accumulators and per-row reduction would cost more than its few loop iterations.
 */
// @ts-ignore: decorator
@inline function dot4short(x: usize, K: i32, r0: usize, r1: usize, r2: usize, r3: usize): v128 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const Kv = K & ~3;
  for (let k = 0; k < Kv; k += 4) {
    const o = <usize>k << 2;
    const xk = v128.load(x + o);
    a0 = madd(xk, v128.load(r0 + o), a0);
    a1 = madd(xk, v128.load(r1 + o), a1);
    a2 = madd(xk, v128.load(r2 + o), a2);
    a3 = madd(xk, v128.load(r3 + o), a3);
  }
  const s = sum4(a0, a1, a2, a3);
  return Kv < K ? f32x4.add(s, tail4(x, Kv, K, r0, r1, r2, r3)) : s;
}

/** Four f32 rows by `dot1`, as one f32x4 for `store4`. */
// @ts-ignore: decorator
@inline function dot4(x: usize, K: i32, r0: usize, r1: usize, r2: usize, r3: usize): v128 {
  const s = f32x4.replace_lane(f32x4.splat(dot1(x, K, r0)), 1, dot1(x, K, r1));
  return f32x4.replace_lane(f32x4.replace_lane(s, 2, dot1(x, K, r2)), 3, dot1(x, K, r3));
}

/**
 * Two tokens × four f32 rows: out0/out1 rows n .. n+nv. Sums are reduced per token with `sum4`.
 */
// @ts-ignore: decorator
@inline function gemm2x4(
  x0: usize, x1: usize, K: i32,
  r0: usize, r1: usize, r2: usize, r3: usize,
  out0: usize, out1: usize, bias: usize, n: i32, nv: i32, accumulate: bool,
): void {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  const Kv = K & ~3;
  for (let k = 0; k < Kv; k += 4) {
    const o = <usize>k << 2;
    const w0 = v128.load(r0 + o), w1v = v128.load(r1 + o), w2 = v128.load(r2 + o), w3 = v128.load(r3 + o);
    const xa = v128.load(x0 + o);
    a0 = madd(xa, w0, a0);
    a1 = madd(xa, w1v, a1);
    a2 = madd(xa, w2, a2);
    a3 = madd(xa, w3, a3);
    const xb = v128.load(x1 + o);
    b0 = madd(xb, w0, b0);
    b1 = madd(xb, w1v, b1);
    b2 = madd(xb, w2, b2);
    b3 = madd(xb, w3, b3);
  }
  let sa = sum4(a0, a1, a2, a3), sb = sum4(b0, b1, b2, b3);
  if (Kv < K) {
    sa = f32x4.add(sa, tail4(x0, Kv, K, r0, r1, r2, r3));
    sb = f32x4.add(sb, tail4(x1, Kv, K, r0, r1, r2, r3));
  }
  store4(out0, bias, n, nv, sa, accumulate);
  store4(out1, bias, n, nv, sb, accumulate);
}

/** Columns [k0, K) of four f32 rows against x, scalar (k0 = K rounded down to 4 or 8). */
// @ts-ignore: decorator
@inline function tail4(x: usize, k0: i32, K: i32, r0: usize, r1: usize, r2: usize, r3: usize): v128 {
  let c0: f32 = 0, c1: f32 = 0, c2: f32 = 0, c3: f32 = 0;
  for (let k = k0; k < K; k++) {
    const o = <usize>k << 2;
    const xk = load<f32>(x + o);
    c0 += xk * load<f32>(r0 + o);
    c1 += xk * load<f32>(r1 + o);
    c2 += xk * load<f32>(r2 + o);
    c3 += xk * load<f32>(r3 + o);
  }
  return f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(c0), 1, c1), 2, c2), 3, c3);
}

// ---- decode GEMVs for the compact formats: the same 4-row skeleton, with x prepared once per call ----

/**
 * The f16 GEMV unpacks 8 halves per load as even and odd lanes, so x is reordered to match, per 8 columns.
 * It is also scaled by 2^100 so the unpacked weights (value × 2^-112) need no multiply of their own; the
 * sums are scaled back by 2^12. Products stay far from both f32 limits (|x| would have to exceed 2^28).
 */
// @ts-ignore: decorator
@inline function interleaveX(x: usize, K: i32, dst: usize): void {
  const s = c(C_POW100);
  for (let k = 0; k + 8 <= K; k += 8) {
    const o = <usize>k << 2;
    const a = v128.load(x + o), b = v128.load(x + o, 16);
    v128.store(dst + o, f32x4.mul(f32x4.shuffle(a, b, 0, 2, 4, 6), s));
    v128.store(dst + o, f32x4.mul(f32x4.shuffle(a, b, 1, 3, 5, 7), s), 16);
  }
}

/**
 * Σ_k x[k]·w_i[k] for four f16 rows at r0, r0+d1, r0+d2, r0+d3; xp = x reordered and scaled by
 * `interleaveX`; us = bytes from one 8-half unit of a row to the next (`unitStride`). The row pointer is
 * advanced rather than recomputed: with the tiled layout's constant offsets the loop keeps one address
 * register and no multiply (V8 recomputed k·us and spilled accumulators otherwise). The scalar tail
 * assumes untiled rows (tiled f16 needs K % 8 = 0).
 */
// @ts-ignore: decorator
@inline function dot4f16(x: usize, xp: usize, K: i32, r0: usize, d1: usize, d2: usize, d3: usize, us: usize): v128 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const K8 = K & ~7;
  let p = r0, px = xp;
  const end = xp + (<usize>K8 << 2);
  while (px < end) {
    const xe = v128.load(px), xo = v128.load(px, 16);
    const v0 = v128.load(p), v1 = v128.load(p + d1), v2 = v128.load(p + d2), v3 = v128.load(p + d3);
    a0 = f32x4.add(a0, f32x4.add(f32x4.mul(xe, halfBits(i32x4.shl(v0, 16))), f32x4.mul(xo, halfBits(v0))));
    a1 = f32x4.add(a1, f32x4.add(f32x4.mul(xe, halfBits(i32x4.shl(v1, 16))), f32x4.mul(xo, halfBits(v1))));
    a2 = f32x4.add(a2, f32x4.add(f32x4.mul(xe, halfBits(i32x4.shl(v2, 16))), f32x4.mul(xo, halfBits(v2))));
    a3 = f32x4.add(a3, f32x4.add(f32x4.mul(xe, halfBits(i32x4.shl(v3, 16))), f32x4.mul(xo, halfBits(v3))));
    p += us; px += 32;
  }
  let sums = f32x4.mul(sum4(a0, a1, a2, a3), c(C_POW12));
  if (K8 < K) {
    let c0: f32 = 0, c1: f32 = 0, c2: f32 = 0, c3: f32 = 0;
    for (let k = K8; k < K; k++) {
      const xk = load<f32>(x + (<usize>k << 2));
      c0 += xk * w1(F16, r0, k, 1);
      c1 += xk * w1(F16, r0 + d1, k, 1);
      c2 += xk * w1(F16, r0 + d2, k, 1);
      c3 += xk * w1(F16, r0 + d3, k, 1);
    }
    sums = f32x4.add(sums, f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(c0), 1, c1), 2, c2), 3, c3));
  }
  return sums;
}

/** Largest x quantised by `quantizeX14`: 8 products |x|·|256·w| ≤ 8191·32512 per lane still fit an i32. */
const XQ_MAX: f32 = 8191;

/** round(v · inv) as i32 lanes (|v · inv| ≤ XQ_MAX), by the 1.5·2^23 trick: nearest + trunc_sat cost ~10 instructions on x64. */
// @ts-ignore: decorator
@inline function roundScaled(v: v128, inv: v128): v128 {
  return i32x4.sub(f32x4.add(f32x4.mul(v, inv), c(256)), v128.load(ROUND_BITS));
}

/**
 * x as 14-bit integers per 32-block (scale = max|x| / 8191: relative error ≤ 2^-14 of the block's largest
 * value, 64× below the q8 weights' own), so q8 weights can be multiplied in integers (i32x4.dot_i16x8_s)
 * instead of being converted to floats. Each 16 columns are stored as their even then odd entries, the
 * order in which `blockDot` unpacks the weights.
 * dst: xq i16 [blocks, 2, 2, 8] zero padded, then the scales [blocks] splatted to f32x4, with the factor
 * 1/256 of `blockDot`'s weights folded in.
 *
 * q4 (SIMD128 build): x as int8 values (scale = max|x| / 127, as the relaxed build's `quantizeX8`) in the
 * same i16 order, each vector pre-shifted to meet its nibble where `nibbleDot` masks it without a shift:
 * even 0..15 × 256 (nibble in bits 0-3), odd 0..15 × 1 (bits 8-11: 256·n), even 16..31 × 16 (bits 4-7:
 * 16·n), odd 16..31 × 256 (bits 12-15, shifted down: n), so every product is 256 · n · xq (≤ 15 · 32512,
 * four dots of pairs ≤ 2^22). The scales fold the 1/256 in, and [blocks] f32x4 splats of −8 · 256 · Σ xq
 * follow them: the block's share of the nibbles' offset (w = (n − 8)·d; exact in f32, < 2^24).
 */
// @ts-ignore: decorator
@inline function quantizeX14(x: usize, K: i32, dst: usize, q4: bool): void {
  const blocks = (K + QBLOCK - 1) / QBLOCK;
  const xs = dst + (<usize>blocks << 6);
  const xc = xs + (<usize>blocks << 4);
  const levels: f32 = q4 ? 127 : XQ_MAX;
  for (let b = 0; b < blocks; b++) {
    const k0 = b * QBLOCK;
    const src = x + (<usize>k0 << 2);
    const q = dst + (<usize>b << 6);
    const n = min(QBLOCK, K - k0);
    let amax: f32 = 0;
    let sum: i32 = 0;
    if (n == QBLOCK) {
      let m = f32x4.splat(0);
      for (let j = 0; j < QBLOCK; j += 4) m = f32x4.pmax(m, f32x4.abs(v128.load(src + (<usize>j << 2))));
      m = f32x4.pmax(m, f32x4.shuffle(m, m, 2, 3, 0, 1));
      amax = max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1));
      const inv = f32x4.splat(amax > 0 ? levels / amax : 0);
      let acc = i32x4.splat(0);
      for (let h = 0; h < 2; h++) {
        const p = src + (<usize>h << 6);
        const r0 = roundScaled(v128.load(p), inv), r1 = roundScaled(v128.load(p, 16), inv);
        const r2 = roundScaled(v128.load(p, 32), inv), r3 = roundScaled(v128.load(p, 48), inv);
        const even = i16x8.narrow_i32x4_s(i32x4.shuffle(r0, r1, 0, 2, 4, 6), i32x4.shuffle(r2, r3, 0, 2, 4, 6));
        const odd = i16x8.narrow_i32x4_s(i32x4.shuffle(r0, r1, 1, 3, 5, 7), i32x4.shuffle(r2, r3, 1, 3, 5, 7));
        if (q4) {
          acc = i32x4.add(acc, i32x4.add(i32x4.extadd_pairwise_i16x8_s(even), i32x4.extadd_pairwise_i16x8_s(odd)));
          v128.store(q + (<usize>h << 5), i16x8.shl(even, h == 0 ? 8 : 4));
          v128.store(q + (<usize>h << 5), h == 0 ? odd : i16x8.shl(odd, 8), 16);
        } else {
          v128.store(q + (<usize>h << 5), even);
          v128.store(q + (<usize>h << 5), odd, 16);
        }
      }
      if (q4) sum = i32x4.extract_lane(acc, 0) + i32x4.extract_lane(acc, 1) + i32x4.extract_lane(acc, 2) + i32x4.extract_lane(acc, 3);
    } else {
      for (let j = 0; j < n; j++) amax = max(amax, abs(load<f32>(src + (<usize>j << 2))));
      const inv: f32 = amax > 0 ? levels / amax : 0;
      for (let j = 0; j < QBLOCK; j++) {
        // Column j sits in half j/16, in its even or odd vector, at lane (j % 16) / 2.
        const at = q + (<usize>(j >> 4) << 5) + (<usize>(j & 1) << 4) + (<usize>((j & 15) >> 1) << 1);
        const v = j < n ? <i32>nearest(load<f32>(src + (<usize>j << 2)) * inv) : 0;
        sum += v;
        // q4: the pre-shifts of the vector this column lies in (see above).
        const sh = !q4 ? 0 : j < 16 ? ((j & 1) == 0 ? 8 : 0) : ((j & 1) == 0 ? 4 : 8);
        store<i16>(at, v << sh);
      }
    }
    v128.store(xs + (<usize>b << 4), f32x4.splat(amax / (levels * 256)));
    if (q4) v128.store(xc + (<usize>b << 4), f32x4.splat(<f32>(sum * -2048)));
  }
}

/**
 * x as int8 per 32-block (scale = max|x| / 127, as llama.cpp's q8_0 activations), for the relaxed-SIMD q4
 * GEMV: dst: xq i8 [blocks, 32] in column order, zero padded, then the scales [blocks] splatted to f32x4,
 * then [blocks] f32x4 splats of −8 · Σ xq (see `quantizeX14`).
 */
// @ts-ignore: decorator
@inline function quantizeX8(x: usize, K: i32, dst: usize): void {
  const blocks = (K + QBLOCK - 1) / QBLOCK;
  const xs = dst + (<usize>blocks << 5);
  const xc = xs + (<usize>blocks << 4);
  for (let b = 0; b < blocks; b++) {
    const k0 = b * QBLOCK;
    const src = x + (<usize>k0 << 2);
    const q = dst + (<usize>b << 5);
    const n = min(QBLOCK, K - k0);
    let amax: f32 = 0;
    for (let j = 0; j < n; j++) amax = max(amax, abs(load<f32>(src + (<usize>j << 2))));
    const inv: f32 = amax > 0 ? 127 / amax : 0;
    let sum: i32 = 0;
    if (n == QBLOCK) {
      const iv = f32x4.splat(inv);
      let acc = i32x4.splat(0);
      for (let h = 0; h < 2; h++) {
        const p = src + (<usize>h << 6);
        const a = i16x8.narrow_i32x4_s(roundScaled(v128.load(p), iv), roundScaled(v128.load(p, 16), iv));
        const bb = i16x8.narrow_i32x4_s(roundScaled(v128.load(p, 32), iv), roundScaled(v128.load(p, 48), iv));
        v128.store(q + (<usize>h << 4), i8x16.narrow_i16x8_s(a, bb));
        acc = i32x4.add(acc, i32x4.add(i32x4.extadd_pairwise_i16x8_s(a), i32x4.extadd_pairwise_i16x8_s(bb)));
      }
      sum = i32x4.extract_lane(acc, 0) + i32x4.extract_lane(acc, 1) + i32x4.extract_lane(acc, 2) + i32x4.extract_lane(acc, 3);
    } else {
      for (let j = 0; j < QBLOCK; j++) {
        const v = j < n ? <i32>nearest(load<f32>(src + (<usize>j << 2)) * inv) : 0;
        store<i8>(q + <usize>j, v);
        sum += v;
      }
    }
    v128.store(xs + (<usize>b << 4), f32x4.splat(amax / 127));
    v128.store(xc + (<usize>b << 4), f32x4.splat(<f32>(sum * -8)));
  }
}

/** Bytes of one block of x as the q4 GEMV of this build prepares it (`prepareXQ4`). */
// @ts-ignore: decorator
@inline function xq4Bytes(): usize {
  return ASC_FEATURE_RELAXED_SIMD ? 32 : 64;
}

/**
 * x for the q4 GEMV, int8 values per 32-block either way: as bytes for relaxed SIMD's i8 dot product (the
 * relaxed build), else as pre-shifted i16 for the SIMD128 i16 dot product.
 */
// @ts-ignore: decorator
@inline function prepareXQ4(x: usize, K: i32, dst: usize): void {
  if (ASC_FEATURE_RELAXED_SIMD) quantizeX8(x, K, dst);
  else quantizeX14(x, K, dst, true);
}

/**
 * One q4 block (16 bytes) against its x block (x0..x3, loaded once for four rows): Σ nibble·xq as four i32 lanes.
 * SIMD128: an i16 lane i of the block holds (low to high nibble) elements 2i, 2i+16, 2i+1, 2i+17; three
 * masks and one shift give four i16x8 of nibbles × 1, 16, 256, 1, against `quantizeX14`'s q4 x vectors,
 * pre-shifted to make every product 256 · n · xq (two ops fewer than shifting each nibble down: the GEMV
 * is compute-bound on one core). Relaxed: the low and high nibbles of each byte are
 * elements 0..15 and 16..31, two relaxed i8 dot products against int8 x; the nibbles (0..15) are the
 * second, 7-bit operand, so every engine's lowering (x86 pmaddubsw treats it as unsigned) is exact.
 * (q8 weights, ±127, do not fit 7 bits; x could, at 7 bits, but that doubles the activation error of
 * int8 x, so q8 keeps the SIMD128 i16 dot product.)
 */
// @ts-ignore: decorator
@inline function nibbleDot(w: usize, x0: v128, x1: v128, x2: v128, x3: v128, m: v128): v128 {
  const v = v128.load(w);
  if (ASC_FEATURE_RELAXED_SIMD) {
    // x0 / x1: int8 x of elements 0..15 / 16..31; m: 0x0f bytes. The i16 form plus one pairwise widening,
    // not i32x4.relaxed_dot_i8x16_i7x16_add_s: V8 11.3 (Node 20) returns twice the right sum for the
    // latter on x64. The cost is the same (x64 has no i8 → i32 dot without VNNI), and |4 products| ≤
    // 4 · 15 · 127 cannot saturate an i16 lane.
    const lo = v128.and(v, m), hi = v128.and(i16x8.shr_u(v, 4), m);
    return i32x4.extadd_pairwise_i16x8_s(i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(x0, lo), i16x8.relaxed_dot_i8x16_i7x16_s(x1, hi)));
  }
  // m: 0x000f halves; 0x00f0 and 0x0f00 from memory (x is pre-shifted to match: `quantizeX14`).
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(v128.and(v, m), x0), i32x4.dot_i16x8_s(v128.and(v, v128.load(NIBBLE16, 32)), x1)),
    i32x4.add(i32x4.dot_i16x8_s(v128.and(v, v128.load(NIBBLE16, 16)), x2), i32x4.dot_i16x8_s(i16x8.shr_u(v, 12), x3)),
  );
}

/**
 * Σ_k x[k]·w_i[k] for four q4 rows at r0 + {0, d1, d2, d3}, f16 block scales at q0 + {0, e1, e2, e3}
 * (tiled: the four halves are adjacent, one 8-byte load), against x prepared by `prepareXQ4` at xq.
 * Per block, d = the four rows' scales × x's scale; each row's integer sum is converted and accumulated
 * at once with its lane of d (gathering the four integer sums into one vector first kept 13 vectors
 * live, and V8 spilled half of them: 1.3× slower), and the offset term −8·Σxq · d for the four rows in
 * one vector (an integer add per row instead measured slower).
 */
// @ts-ignore: decorator
@inline function dot4q4(
  xq: usize, K: i32, r0: usize, d1: usize, d2: usize, d3: usize,
  q0: usize, e1: usize, e2: usize, e3: usize, us: usize, qs: usize, tiled: bool,
): v128 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, corr = a0;
  const blocks = (K + QBLOCK - 1) / QBLOCK;
  const xbytes = xq4Bytes();
  let p = r0, q = q0, xb = xq, sx = xq + <usize>blocks * xbytes;
  const end = sx;
  let cx = sx + (<usize>blocks << 4);
  const m = v128.load(ASC_FEATURE_RELAXED_SIMD ? NIBBLE8 : NIBBLE16);
  while (xb < end) {
    let h: v128;
    if (tiled) h = v128.load16x4_u(q);
    else h = i32x4.replace_lane(i32x4.replace_lane(i32x4.replace_lane(i32x4.splat(<i32>load<u16>(q)), 1, <i32>load<u16>(q + e1)), 2, <i32>load<u16>(q + e2)), 3, <i32>load<u16>(q + e3));
    const d = f32x4.mul(f32x4.mul(halfBits(i32x4.shl(h, 16)), c(C_POW112)), v128.load(sx));
    corr = madd(d, v128.load(cx), corr);
    // x loaded once per block for the four rows (the relaxed build reads two vectors, x2 / x3 unused).
    const x0 = v128.load(xb), x1 = v128.load(xb, 16);
    const x2 = ASC_FEATURE_RELAXED_SIMD ? x0 : v128.load(xb, 32), x3 = ASC_FEATURE_RELAXED_SIMD ? x1 : v128.load(xb, 48);
    a0 = madd(f32x4.convert_i32x4_s(nibbleDot(p, x0, x1, x2, x3, m)), f32x4.shuffle(d, d, 0, 0, 0, 0), a0);
    a1 = madd(f32x4.convert_i32x4_s(nibbleDot(p + d1, x0, x1, x2, x3, m)), f32x4.shuffle(d, d, 1, 1, 1, 1), a1);
    a2 = madd(f32x4.convert_i32x4_s(nibbleDot(p + d2, x0, x1, x2, x3, m)), f32x4.shuffle(d, d, 2, 2, 2, 2), a2);
    a3 = madd(f32x4.convert_i32x4_s(nibbleDot(p + d3, x0, x1, x2, x3, m)), f32x4.shuffle(d, d, 3, 3, 3, 3), a3);
    p += us; q += qs; xb += xbytes; sx += 16; cx += 16;
  }
  return f32x4.add(sum4(a0, a1, a2, a3), corr);
}

/**
 * One 32-block of a q8 row against `quantizeX14`'s block x0..x3: four i32 partial sums, × 256. An i16 lane
 * of the weights holds an even int8 in its low byte and an odd one in its high byte: shl 8 and
 * and 0xff00 give both × 256 in two ALU ops (sign extension takes three, two of them shuffles).
 */
// @ts-ignore: decorator
@inline function blockDot(w: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const lo = v128.load(w), hi = v128.load(w, 16), m = v128.load(HI_BYTES);
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(i16x8.shl(lo, 8), x0), i32x4.dot_i16x8_s(v128.and(lo, m), x1)),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.shl(hi, 8), x2), i32x4.dot_i16x8_s(v128.and(hi, m), x3)),
  );
}

/**
 * Σ_k x[k]·w_i[k] for four q8 rows at r0 + {0, d1, d2, d3} with block scales at q0 + {0, e1, e2, e3},
 * against x quantised by `quantizeX14` at xq; us / qs = bytes from one block of a row (of its scales) to
 * the next. Pointers are advanced as in `dot4f16`.
 */
// @ts-ignore: decorator
@inline function dot4q8(
  xq: usize, K: i32, r0: usize, d1: usize, d2: usize, d3: usize,
  q0: usize, e1: usize, e2: usize, e3: usize, us: usize, qs: usize,
): v128 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const blocks = (K + QBLOCK - 1) / QBLOCK;
  let p = r0, q = q0, xb = xq, sx = xq + (<usize>blocks << 6);
  const end = sx;
  while (xb < end) {
    const x0 = v128.load(xb), x1 = v128.load(xb, 16), x2 = v128.load(xb, 32), x3 = v128.load(xb, 48);
    const s = v128.load(sx);
    a0 = madd(f32x4.mul(f32x4.convert_i32x4_s(blockDot(p, x0, x1, x2, x3)), s), v128.load32_splat(q), a0);
    a1 = madd(f32x4.mul(f32x4.convert_i32x4_s(blockDot(p + d1, x0, x1, x2, x3)), s), v128.load32_splat(q + e1), a1);
    a2 = madd(f32x4.mul(f32x4.convert_i32x4_s(blockDot(p + d2, x0, x1, x2, x3)), s), v128.load32_splat(q + e2), a2);
    a3 = madd(f32x4.mul(f32x4.convert_i32x4_s(blockDot(p + d3, x0, x1, x2, x3)), s), v128.load32_splat(q + e3), a3);
    p += us; q += qs; xb += 64; sx += 16;
  }
  return sum4(a0, a1, a2, a3);
}

/** Row n of a `dtype` matrix as K f32 values at `dst` (also serves the embedding lookup). */
// @ts-ignore: decorator
@inline function dequantRowT(dtype: i32, tiled: bool, w: usize, scales: usize, n: i32, K: i32, dst: usize): void {
  const row = rowAddr(dtype, w, n, K, tiled);
  const us = unitStride(dtype, tiled);
  const q = scaleAddr(scales, n, K, tiled), qs = scaleStride(tiled);
  let s = f32x4.splat(1);
  let sc: f32 = 1;
  const Kv = K & ~3;
  for (let k = 0; k < Kv; k += 4) {
    if (dtype == Q8 && (k & (QBLOCK - 1)) == 0) {
      sc = load<f32>(q + <usize>(k / QBLOCK) * qs);
      s = f32x4.splat(sc);
    }
    v128.store(dst + (<usize>k << 2), w4(dtype, row + colOffset(dtype, k, us), 0, s));
  }
  if (dtype == Q8 && Kv < K) sc = load<f32>(q + <usize>(Kv / QBLOCK) * qs);
  for (let k = Kv; k < K; k++) store<f32>(dst + (<usize>k << 2), w1(dtype, row + colOffset(dtype, k, us), 0, sc));
}

/** Row n of a q4 matrix as K f32 values at `dst`: (nibble − 8) · d per block. */
// @ts-ignore: decorator
@inline function dequantRowQ4(tiled: bool, w: usize, scales: usize, n: i32, K: i32, dst: usize): void {
  const row = rowAddr(Q4, w, n, K, tiled);
  const us = unitStride(Q4, tiled);
  const q = scaleAddr(scales, n, K, tiled, 1), qs = scaleStride(tiled, 1);
  const full = K / QBLOCK;
  const eight = i16x8.splat(8);
  for (let b = 0; b < full; b++) {
    const d = f32x4.splat(half1(<u32>load<u16>(q + <usize>b * qs)));
    const v = v128.load(row + <usize>b * us);
    const lo = v128.and(v, v128.load(NIBBLE8)), hi = v128.and(i16x8.shr_u(v, 4), v128.load(NIBBLE8));
    const o = dst + (<usize>b << 7);
    dequant8(i16x8.sub(i16x8.extend_low_i8x16_u(lo), eight), d, o);
    dequant8(i16x8.sub(i16x8.extend_high_i8x16_u(lo), eight), d, o + 32);
    dequant8(i16x8.sub(i16x8.extend_low_i8x16_u(hi), eight), d, o + 64);
    dequant8(i16x8.sub(i16x8.extend_high_i8x16_u(hi), eight), d, o + 96);
  }
  if (full * QBLOCK < K) {
    const d = half1(<u32>load<u16>(q + <usize>full * qs));
    const blk = row + <usize>full * us;
    for (let k = full * QBLOCK; k < K; k++) {
      const j = k & (QBLOCK - 1);
      const byte = <i32>load<u8>(blk + <usize>(j & 15));
      store<f32>(dst + (<usize>k << 2), <f32>((j < 16 ? byte & 15 : byte >> 4) - 8) * d);
    }
  }
}

/** Eight i16 lanes × d as f32 at dst. */
// @ts-ignore: decorator
@inline function dequant8(v: v128, d: v128, dst: usize): void {
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(v)), d));
  v128.store(dst, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(v)), d), 16);
}

/** `dequantRowT` for a dtype argument that may carry the TILED flag. */
export function dequantRow(dtype: i32, w: usize, scales: usize, n: i32, K: i32, dst: usize): void {
  const tiled = (dtype & TILED) != 0;
  const f = dtype & ~TILED;
  if (f == F32) dequantRowT(F32, false, w, scales, n, K, dst);
  else if (f == Q8) dequantRowT(Q8, tiled, w, scales, n, K, dst);
  else if (f == Q4 && tiled) dequantRowQ4(true, w, scales, n, K, dst);
  else if (f == Q4) dequantRowQ4(false, w, scales, n, K, dst);
  else dequantRowT(F16, tiled, w, scales, n, K, dst);
}

/**
 * Decode, rows [rowStart, rowEnd) of out [N] = w [N, K] · x [K]. x is prepared once per call in the
 * thread's scratch (each thread does it for itself: K values, no synchronisation).
 */
// @ts-ignore: decorator
@inline function gemvT(
  dtype: i32, tiled: bool, x: usize, w: usize, scales: usize, bias: usize, out: usize,
  K: i32, rowStart: i32, rowEnd: i32, accumulate: bool, scratch: usize, xReady: bool,
): void {
  const rb = rowBytes(dtype, K);
  if (dtype == F32 && K >= 128) {
    // One row per iteration, one sequential stream: four rows in flight at once (as `dot4` reads them)
    // halve the streaming rate (measured 15 vs 33 GB/s from DRAM on Zen 5, the read loop doing 31-35).
    for (let n = rowStart; n < rowEnd; n++) store1(out + (<usize>n << 2), bias, n, 0, dot1(x, K, w + <usize>n * rb), accumulate);
    return;
  }
  const qb = <usize>((K + QBLOCK - 1) / QBLOCK) << 2; // q8 scale bytes per row
  const us = unitStride(dtype, tiled);
  if (dtype == F16 && !xReady) interleaveX(x, K, scratch);
  if (dtype == Q8 && !xReady) quantizeX14(x, K, scratch, false);
  if (dtype == Q4 && !xReady) prepareXQ4(x, K, scratch);
  if (tiled) {
    // Whole tiles (padding rows included), storing only the rows in range.
    const ub = unitBytes(dtype);
    for (let n0 = rowStart & ~3; n0 < rowEnd; n0 += 4) {
      const t = w + <usize>(n0 >> 2) * (rb << 2);
      let sums: v128;
      if (dtype == F16) sums = dot4f16(x, scratch, K, t, ub, 2 * ub, 3 * ub, us);
      else if (dtype == Q4) sums = dot4q4(scratch, K, t, ub, 2 * ub, 3 * ub, scaleAddr(scales, n0, K, true, 1), 2, 4, 6, us, 8, true);
      else sums = dot4q8(scratch, K, t, ub, 2 * ub, 3 * ub, scaleAddr(scales, n0, K, true), 4, 8, 12, us, 16);
      storeLanes(out, bias, n0, max(rowStart - n0, 0), min(rowEnd - n0, 4), sums, accumulate);
    }
    return;
  }
  for (let n = rowStart; n < rowEnd; n += 4) {
    // A partial tile repeats its last row in the missing lanes; those sums are never stored.
    const nv = min(4, rowEnd - n);
    const n1 = n + min(1, nv - 1), n2 = n + min(2, nv - 1), n3 = n + min(3, nv - 1);
    const w0 = w + <usize>n * rb;
    let sums: v128;
    if (dtype == F32) sums = dot4short(x, K, w0, w0 + <usize>(n1 - n) * rb, w0 + <usize>(n2 - n) * rb, w0 + <usize>(n3 - n) * rb); // four short rows are one short stream
    else if (dtype == F16) sums = dot4f16(x, scratch, K, w0, <usize>(n1 - n) * rb, <usize>(n2 - n) * rb, <usize>(n3 - n) * rb, us);
    else if (dtype == Q4) {
      const hb = qb >> 1; // f16 scales
      sums = dot4q4(scratch, K, w0, <usize>(n1 - n) * rb, <usize>(n2 - n) * rb, <usize>(n3 - n) * rb,
        scales + <usize>n * hb, <usize>(n1 - n) * hb, <usize>(n2 - n) * hb, <usize>(n3 - n) * hb, us, 2, false);
    } else {
      sums = dot4q8(scratch, K, w0, <usize>(n1 - n) * rb, <usize>(n2 - n) * rb, <usize>(n3 - n) * rb,
        scales + <usize>n * qb, <usize>(n1 - n) * qb, <usize>(n2 - n) * qb, <usize>(n3 - n) * qb, us, 4);
    }
    store4(out, bias, n, nv, sums, accumulate);
  }
}

// One function per format (binaryen does not inline functions with loops), so V8 allocates registers
// for one loop nest at a time.
function gemvF32(x: usize, w: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool): void {
  gemvT(F32, false, x, w, 0, bias, out, K, r0, r1, acc, 0, false);
}
// The tiled variants get their own functions too, so that the tile offsets are constants.
function gemvF16(x: usize, w: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool, scratch: usize, ready: bool): void {
  gemvT(F16, false, x, w, 0, bias, out, K, r0, r1, acc, scratch, ready);
}
function gemvF16Tiled(x: usize, w: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool, scratch: usize, ready: bool): void {
  gemvT(F16, true, x, w, 0, bias, out, K, r0, r1, acc, scratch, ready);
}
function gemvQ8(x: usize, w: usize, scales: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool, scratch: usize, ready: bool): void {
  gemvT(Q8, false, x, w, scales, bias, out, K, r0, r1, acc, scratch, ready);
}
function gemvQ4(x: usize, w: usize, scales: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool, scratch: usize, ready: bool): void {
  gemvT(Q4, false, x, w, scales, bias, out, K, r0, r1, acc, scratch, ready);
}
function gemvQ4Tiled(x: usize, w: usize, scales: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool, scratch: usize, ready: bool): void {
  gemvT(Q4, true, x, w, scales, bias, out, K, r0, r1, acc, scratch, ready);
}
function gemvQ8Tiled(x: usize, w: usize, scales: usize, bias: usize, out: usize, K: i32, r0: i32, r1: i32, acc: bool, scratch: usize, ready: bool): void {
  gemvT(Q8, true, x, w, scales, bias, out, K, r0, r1, acc, scratch, ready);
}

/**
 * Prefill, T > 1 tokens: f32 rows are used in place, other formats are expanded once per 4-row tile into
 * the thread's scratch [4, K] f32 and reused by all T tokens.
 */
function gemm(
  dtype: i32, x: usize, ldx: i32, w: usize, scales: usize, bias: usize, out: usize, ldo: i32,
  T: i32, K: i32, rowStart: i32, rowEnd: i32, accumulate: bool, scratch: usize,
): void {
  const f = dtype & ~TILED;
  const rb = rowBytes(f, K);
  const xs = <usize>ldx << 2, os = <usize>ldo << 2;
  for (let n = rowStart; n < rowEnd; n += 4) {
    const nv = min(4, rowEnd - n);
    const n1 = n + min(1, nv - 1), n2 = n + min(2, nv - 1), n3 = n + min(3, nv - 1);
    let r0 = w + <usize>n * rb, r1 = w + <usize>n1 * rb, r2 = w + <usize>n2 * rb, r3 = w + <usize>n3 * rb;
    if (f != F32) {
      const fs = <usize>K << 2;
      r0 = scratch; r1 = scratch + fs; r2 = scratch + 2 * fs; r3 = scratch + 3 * fs;
      dequantRow(dtype, w, scales, n, K, r0);
      dequantRow(dtype, w, scales, n1, K, r1);
      dequantRow(dtype, w, scales, n2, K, r2);
      dequantRow(dtype, w, scales, n3, K, r3);
    }
    let t = 0;
    for (; t + 2 <= T; t += 2) {
      const xa = x + <usize>t * xs;
      const oa = out + <usize>t * os;
      gemm2x4(xa, xa + xs, K, r0, r1, r2, r3, oa, oa + os, bias, n, nv, accumulate);
    }
    if (t < T) store4(out + <usize>t * os, bias, n, nv, dot4(x + <usize>t * xs, K, r0, r1, r2, r3), accumulate);
  }
}

/**
 * out[t, n] (+)= bias[n] + Σ_k x[t, k] · w[n, k] for n in [rowStart, rowEnd).
 * scales: q8 / q4 block scales [N, ceil(K/32)] (f32 / f16; tiled: see `scaleAddr`); bias 0 = none; scratch: 4·K floats private to the caller's thread
 * (f16 / q8 / q4 only: the prepared x when T = 1, dequantised rows when T > 1).
 */
export function matmul(
  dtype: i32, x: usize, ldx: i32, w: usize, scales: usize, bias: usize, out: usize, ldo: i32,
  T: i32, K: i32, rowStart: i32, rowEnd: i32, accumulate: bool, scratch: usize,
): void {
  matmulPrepared(dtype, x, ldx, w, scales, bias, out, ldo, T, K, rowStart, rowEnd, accumulate, scratch, false);
}

/** `matmul`; xReady: scratch already holds this x as prepared by an earlier chunk of the same job (T = 1). */
export function matmulPrepared(
  dtype: i32, x: usize, ldx: i32, w: usize, scales: usize, bias: usize, out: usize, ldo: i32,
  T: i32, K: i32, rowStart: i32, rowEnd: i32, accumulate: bool, scratch: usize, xReady: bool,
): void {
  const f = dtype & ~TILED, tiled = (dtype & TILED) != 0;
  if (T > 1) gemm(dtype, x, ldx, w, scales, bias, out, ldo, T, K, rowStart, rowEnd, accumulate, scratch);
  else if (f == F32) gemvF32(x, w, bias, out, K, rowStart, rowEnd, accumulate);
  else if (f == F16 && tiled) gemvF16Tiled(x, w, bias, out, K, rowStart, rowEnd, accumulate, scratch, xReady);
  else if (f == F16) gemvF16(x, w, bias, out, K, rowStart, rowEnd, accumulate, scratch, xReady);
  else if (f == Q4 && tiled) gemvQ4Tiled(x, w, scales, bias, out, K, rowStart, rowEnd, accumulate, scratch, xReady);
  else if (f == Q4) gemvQ4(x, w, scales, bias, out, K, rowStart, rowEnd, accumulate, scratch, xReady);
  else if (tiled) gemvQ8Tiled(x, w, scales, bias, out, K, rowStart, rowEnd, accumulate, scratch, xReady);
  else gemvQ8(x, w, scales, bias, out, K, rowStart, rowEnd, accumulate, scratch, xReady);
}
