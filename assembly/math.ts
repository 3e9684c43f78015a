// Shared SIMD helpers: vector exp / SiLU / softplus, horizontal sum, and the weight dequantisers.
// Everything is @inline so the kernels compile to straight-line v128 code without calls.

/** Weight storage formats; numbering matches `src/wasm/layout.ts`. */
export const F32: i32 = 0;
export const F16: i32 = 1;
export const Q8: i32 = 2;
/** q8 block length along K: one f32 scale per 32 int8 weights. */
export const QBLOCK: i32 = 32;

/** Sum of the four lanes. */
// @ts-ignore: decorator
@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

/**
 * exp over four lanes (Cephes expf: range reduction by ln 2 and a degree-6 polynomial, ~1 ulp).
 * The input is clamped so 2^n stays a normal float: exp(Δ·A) with very negative Δ·A becomes ~1e-38,
 * which is 0 for every use here, and the upper clamp keeps SiLU/softplus finite.
 */
// @ts-ignore: decorator
@inline export function exp4(x: v128): v128 {
  x = f32x4.min(f32x4.max(x, f32x4.splat(-87.0)), f32x4.splat(88.0));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.44269504088896341)));
  // Two-part ln 2 so r = x − n·ln2 keeps its low bits.
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1.0));
  // 2^n built directly in the exponent field.
  const e = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return f32x4.mul(p, e);
}

/** SiLU(x) = x · sigmoid(x) = x / (1 + e^−x) */
// @ts-ignore: decorator
@inline export function silu4(x: v128): v128 {
  return f32x4.div(x, f32x4.add(f32x4.splat(1.0), exp4(f32x4.neg(x))));
}

/**
 * softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^−|x|): the second term has its argument in (0, 1],
 * so it never overflows and needs no threshold (PyTorch's linear branch above 20 differs by < 3e-9).
 * log1p(y) = 2·atanh(y / (2 + y)), a fast odd series because y/(2+y) ≤ 1/3.
 */
// @ts-ignore: decorator
@inline export function softplus4(x: v128): v128 {
  const y = exp4(f32x4.neg(f32x4.abs(x)));
  const s = f32x4.div(y, f32x4.add(f32x4.splat(2.0), y));
  const s2 = f32x4.mul(s, s);
  let p = f32x4.splat(1.0 / 13.0);
  p = f32x4.add(f32x4.mul(p, s2), f32x4.splat(1.0 / 11.0));
  p = f32x4.add(f32x4.mul(p, s2), f32x4.splat(1.0 / 9.0));
  p = f32x4.add(f32x4.mul(p, s2), f32x4.splat(1.0 / 7.0));
  p = f32x4.add(f32x4.mul(p, s2), f32x4.splat(1.0 / 5.0));
  p = f32x4.add(f32x4.mul(p, s2), f32x4.splat(1.0 / 3.0));
  p = f32x4.add(f32x4.mul(p, s2), f32x4.splat(1.0));
  const log1p = f32x4.mul(f32x4.mul(p, s), f32x4.splat(2.0));
  return f32x4.add(f32x4.max(x, f32x4.splat(0.0)), log1p);
}

/** Scalar forms through lane 0 of the vector code, so scalar tails round exactly like the SIMD body. */
// @ts-ignore: decorator
@inline export function silu1(x: f32): f32 {
  return f32x4.extract_lane(silu4(f32x4.splat(x)), 0);
}
// @ts-ignore: decorator
@inline export function softplus1(x: f32): f32 {
  return f32x4.extract_lane(softplus4(f32x4.splat(x)), 0);
}
// @ts-ignore: decorator
@inline export function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}

/** Row stride in bytes of a weight matrix with `K` columns stored as `dtype`. */
// @ts-ignore: decorator
@inline export function rowBytes(dtype: i32, K: i32): usize {
  if (dtype == F32) return <usize>K << 2;
  if (dtype == F16) return <usize>K << 1;
  return <usize>((K + QBLOCK - 1) & ~(QBLOCK - 1)); // q8 rows are padded to whole blocks
}

/**
 * Four weights w[k .. k+4) of one row as f32x4. `row` points at the row's data; for q8, `scale` is the
 * splatted scale of the block holding k (the caller hoists it out of the block's loop).
 * f16 → f32 by bit moves: shifting the 15 magnitude bits into place and multiplying by 2^112 rebiases the
 * exponent and turns f16 subnormals into the right f32 values in one step; the sign is OR-ed back.
 */
// @ts-ignore: decorator
@inline export function w4(dtype: i32, row: usize, k: i32, scale: v128): v128 {
  if (dtype == F32) return v128.load(row + (<usize>k << 2));
  if (dtype == F16) {
    const h = v128.load16x4_u(row + (<usize>k << 1)); // [4] u16 → u32 lanes
    const mag = f32x4.mul(i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13), f32x4.splat(5.192296858534828e33));
    return v128.or(mag, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
  }
  const q = i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(row + <usize>k)));
  return f32x4.mul(f32x4.convert_i32x4_s(q), scale);
}

/** One weight as f32 (scalar tails); `scale` as in `w4`. */
// @ts-ignore: decorator
@inline export function w1(dtype: i32, row: usize, k: i32, scale: f32): f32 {
  if (dtype == F32) return load<f32>(row + (<usize>k << 2));
  if (dtype == F16) {
    const h = <u32>load<u16>(row + (<usize>k << 1));
    const mag = reinterpret<f32>((h & 0x7fff) << 13) * <f32>5.192296858534828e33;
    return reinterpret<f32>(reinterpret<u32>(mag) | ((h & 0x8000) << 16));
  }
  return <f32>load<i8>(row + <usize>k) * scale;
}

/** The q8 scale of block `k / 32` of row `n` (1 for float formats). Scales are [N, ceil(K/32)] f32. */
// @ts-ignore: decorator
@inline export function blockScale(dtype: i32, scales: usize, n: i32, K: i32, k: i32): f32 {
  if (dtype != Q8) return 1.0;
  const blocks = (K + QBLOCK - 1) / QBLOCK;
  return load<f32>(scales + ((<usize>(n * blocks + k / QBLOCK)) << 2));
}
