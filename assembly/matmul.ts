// Projections: out[t, n] (+)= bias[n] + Σ_k x[t, k] · w[n, k] over weights stored as f32, f16 or q8.
//   x [T, K] (row stride ldx floats), w [N, K] (PyTorch Linear layout), bias [N] or 0, out [T, N] (stride ldo)
// Every entry point computes only output rows [rowStart, rowEnd) so threads can split N.
//
// T = 1 (decode) is a GEMV that streams each weight exactly once: it is bound by memory bandwidth,
// so it dequantises in registers and keeps four rows in flight. T > 1 (prefill) is compute-bound: a
// 4-row tile is dequantised once into per-thread f32 scratch and reused for every token, two tokens at
// a time (8 accumulators + 4 weight vectors fit the 16 SIMD registers V8 uses on x64).
import { F16, F32, Q8, QBLOCK, rowBytes, w1, w4 } from './math';

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

/**
 * Σ_k x[k] · w_i[k] for four rows (pointers r0..r3; q8 block scales at q0..q3), as one f32x4.
 * The q8 scale is applied per weight vector so the same loop body serves every format.
 */
// @ts-ignore: decorator
@inline function dot4(
  dtype: i32, x: usize, K: i32,
  r0: usize, r1: usize, r2: usize, r3: usize,
  q0: usize, q1: usize, q2: usize, q3: usize,
): v128 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let s0 = f32x4.splat(1), s1 = s0, s2 = s0, s3 = s0;
  const Kv = K & ~3; // columns covered by whole vectors
  for (let kb = 0; kb < Kv; kb += QBLOCK) {
    if (dtype == Q8) {
      const b = <usize>(kb / QBLOCK) << 2;
      s0 = v128.load32_splat(q0 + b); s1 = v128.load32_splat(q1 + b);
      s2 = v128.load32_splat(q2 + b); s3 = v128.load32_splat(q3 + b);
    }
    const kEnd = min(kb + QBLOCK, Kv);
    for (let k = kb; k < kEnd; k += 4) {
      const xv = v128.load(x + (<usize>k << 2));
      a0 = f32x4.add(a0, f32x4.mul(xv, w4(dtype, r0, k, s0)));
      a1 = f32x4.add(a1, f32x4.mul(xv, w4(dtype, r1, k, s1)));
      a2 = f32x4.add(a2, f32x4.mul(xv, w4(dtype, r2, k, s2)));
      a3 = f32x4.add(a3, f32x4.mul(xv, w4(dtype, r3, k, s3)));
    }
  }
  let sums = sum4(a0, a1, a2, a3);
  if (Kv < K) {
    // The < 4 leftover columns all lie in the block that holds Kv.
    let c0: f32 = 0, c1: f32 = 0, c2: f32 = 0, c3: f32 = 0;
    let t0: f32 = 1, t1: f32 = 1, t2: f32 = 1, t3: f32 = 1;
    if (dtype == Q8) {
      const b = <usize>(Kv / QBLOCK) << 2;
      t0 = load<f32>(q0 + b); t1 = load<f32>(q1 + b); t2 = load<f32>(q2 + b); t3 = load<f32>(q3 + b);
    }
    for (let k = Kv; k < K; k++) {
      const xk = load<f32>(x + (<usize>k << 2));
      c0 += xk * w1(dtype, r0, k, t0);
      c1 += xk * w1(dtype, r1, k, t1);
      c2 += xk * w1(dtype, r2, k, t2);
      c3 += xk * w1(dtype, r3, k, t3);
    }
    sums = f32x4.add(sums, f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(c0), 1, c1), 2, c2), 3, c3));
  }
  return sums;
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
    a0 = f32x4.add(a0, f32x4.mul(xa, w0));
    a1 = f32x4.add(a1, f32x4.mul(xa, w1v));
    a2 = f32x4.add(a2, f32x4.mul(xa, w2));
    a3 = f32x4.add(a3, f32x4.mul(xa, w3));
    const xb = v128.load(x1 + o);
    b0 = f32x4.add(b0, f32x4.mul(xb, w0));
    b1 = f32x4.add(b1, f32x4.mul(xb, w1v));
    b2 = f32x4.add(b2, f32x4.mul(xb, w2));
    b3 = f32x4.add(b3, f32x4.mul(xb, w3));
  }
  let sa = sum4(a0, a1, a2, a3), sb = sum4(b0, b1, b2, b3);
  if (Kv < K) {
    sa = f32x4.add(sa, tail4(x0, Kv, K, r0, r1, r2, r3));
    sb = f32x4.add(sb, tail4(x1, Kv, K, r0, r1, r2, r3));
  }
  store4(out0, bias, n, nv, sa, accumulate);
  store4(out1, bias, n, nv, sb, accumulate);
}

/** Columns [k0, K) of four f32 rows against x, scalar (k0 = K rounded down to 4). */
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

/** Row n of a `dtype` matrix as K f32 values at `dst` (also serves the embedding lookup). */
// @ts-ignore: decorator
@inline function dequantRowT(dtype: i32, w: usize, scales: usize, n: i32, K: i32, dst: usize): void {
  const row = w + <usize>n * rowBytes(dtype, K);
  const q = scales + ((<usize>(n * ((K + QBLOCK - 1) / QBLOCK))) << 2);
  let s = f32x4.splat(1);
  let sc: f32 = 1;
  const Kv = K & ~3;
  for (let k = 0; k < Kv; k += 4) {
    if (dtype == Q8 && (k & (QBLOCK - 1)) == 0) {
      sc = load<f32>(q + (<usize>(k / QBLOCK) << 2));
      s = f32x4.splat(sc);
    }
    v128.store(dst + (<usize>k << 2), w4(dtype, row, k, s));
  }
  if (dtype == Q8 && Kv < K) sc = load<f32>(q + (<usize>(Kv / QBLOCK) << 2));
  for (let k = Kv; k < K; k++) store<f32>(dst + (<usize>k << 2), w1(dtype, row, k, sc));
}

export function dequantRow(dtype: i32, w: usize, scales: usize, n: i32, K: i32, dst: usize): void {
  if (dtype == F32) dequantRowT(F32, w, scales, n, K, dst);
  else if (dtype == Q8) dequantRowT(Q8, w, scales, n, K, dst);
  else dequantRowT(F16, w, scales, n, K, dst);
}

// @ts-ignore: decorator
@inline function matmulT(
  dtype: i32, x: usize, ldx: i32, w: usize, scales: usize, bias: usize, out: usize, ldo: i32,
  T: i32, K: i32, rowStart: i32, rowEnd: i32, accumulate: bool, scratch: usize,
): void {
  const rb = rowBytes(dtype, K);
  const qb = <usize>((K + QBLOCK - 1) / QBLOCK) << 2; // q8 scale bytes per row
  const xs = <usize>ldx << 2, os = <usize>ldo << 2;
  for (let n = rowStart; n < rowEnd; n += 4) {
    // A partial tile repeats its last row in the missing lanes; those sums are never stored.
    const nv = min(4, rowEnd - n);
    const n1 = n + min(1, nv - 1), n2 = n + min(2, nv - 1), n3 = n + min(3, nv - 1);
    if (T == 1) {
      const sums = dot4(
        dtype, x, K,
        w + <usize>n * rb, w + <usize>n1 * rb, w + <usize>n2 * rb, w + <usize>n3 * rb,
        scales + <usize>n * qb, scales + <usize>n1 * qb, scales + <usize>n2 * qb, scales + <usize>n3 * qb,
      );
      store4(out, bias, n, nv, sums, accumulate);
      continue;
    }
    // Prefill: f32 rows are used in place, other formats are expanded once per tile.
    let r0 = w + <usize>n * rb, r1 = w + <usize>n1 * rb, r2 = w + <usize>n2 * rb, r3 = w + <usize>n3 * rb;
    if (dtype != F32) {
      const fs = <usize>K << 2;
      r0 = scratch; r1 = scratch + fs; r2 = scratch + 2 * fs; r3 = scratch + 3 * fs;
      dequantRowT(dtype, w, scales, n, K, r0);
      dequantRowT(dtype, w, scales, n1, K, r1);
      dequantRowT(dtype, w, scales, n2, K, r2);
      dequantRowT(dtype, w, scales, n3, K, r3);
    }
    let t = 0;
    for (; t + 2 <= T; t += 2) {
      const xa = x + <usize>t * xs;
      const oa = out + <usize>t * os;
      gemm2x4(xa, xa + xs, K, r0, r1, r2, r3, oa, oa + os, bias, n, nv, accumulate);
    }
    if (t < T) {
      const sums = dot4(F32, x + <usize>t * xs, K, r0, r1, r2, r3, 0, 0, 0, 0);
      store4(out + <usize>t * os, bias, n, nv, sums, accumulate);
    }
  }
}

/**
 * out[t, n] (+)= bias[n] + Σ_k x[t, k] · w[n, k] for n in [rowStart, rowEnd).
 * scales: q8 block scales [N, ceil(K/32)]; bias 0 = none; scratch: 4·K floats private to the caller's thread
 * (used when T > 1 and the weights are not f32).
 */
export function matmul(
  dtype: i32, x: usize, ldx: i32, w: usize, scales: usize, bias: usize, out: usize, ldo: i32,
  T: i32, K: i32, rowStart: i32, rowEnd: i32, accumulate: bool, scratch: usize,
): void {
  if (dtype == F32) matmulT(F32, x, ldx, w, scales, bias, out, ldo, T, K, rowStart, rowEnd, accumulate, scratch);
  else if (dtype == Q8) matmulT(Q8, x, ldx, w, scales, bias, out, ldo, T, K, rowStart, rowEnd, accumulate, scratch);
  else matmulT(F16, x, ldx, w, scales, bias, out, ldo, T, K, rowStart, rowEnd, accumulate, scratch);
}
