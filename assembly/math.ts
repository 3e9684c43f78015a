// Shared SIMD helpers: vector exp / SiLU / softplus, horizontal sum, and the weight dequantisers.
// Everything is @inline so the kernels compile to straight-line v128 code without calls.

/** Weight storage formats; numbering matches `src/wasm/layout.ts`. */
export const F32: i32 = 0;
export const F16: i32 = 1;
export const Q8: i32 = 2;
/**
 * q4 (q4_0 values, src/quant.ts): per 32 weights 16 bytes of nibbles (byte j = element j | element j+16
 * << 4; w = (nibble − 8) · d) and one f16 scale d. Always tiled; scales tiled like q8's, as halves.
 */
export const Q4: i32 = 3;
/** q8 / q4 block length along K: one scale per 32 weights. */
export const QBLOCK: i32 = 32;
/**
 * Flag on a dtype argument: the f16 / q8 matrix is stored in tiles of 4 rows (src/wasm/layout.ts
 * `tileRows`): [⌈N/4⌉, K/unit, 4, unit] with unit = one q8 block (32 bytes) or 8 halves (16 bytes). The
 * 4-row GEMVs then read memory as one sequential stream; four separate row streams per thread halve
 * the rate the hardware prefetcher sustains (measured on Zen 5: q8 16 vs 26 GB/s).
 */
export const TILED: i32 = 4;

/**
 * a·b + c. In the relaxed-SIMD build (build/mamba-relaxed.wasm, used where the engine validates it) this
 * is one fused multiply-add, which doubles the arithmetic peak of the prefill GEMM; elsewhere mul + add.
 */
// @ts-ignore: decorator
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/** Sum of the four lanes. */
// @ts-ignore: decorator
@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

/**
 * The vector constants of exp4 / softplus4 / silu4, each splatted to 4 lanes, in a static table.
 * Loading them from memory is one instruction; a v128.const inside a loop is materialised by V8 through
 * general registers (several instructions) at every use, which made exp4 dominate the scan.
 * Written by every instantiation with the same bytes, so sharing the memory between threads is harmless.
 */
const C = memory.data<f32>([
  -87.0, -87.0, -87.0, -87.0, // 0: lower clamp of exp4 (keeps 2^n normal)
  88.0, 88.0, 88.0, 88.0, // 16: upper clamp
  1.44269504088896341, 1.44269504088896341, 1.44269504088896341, 1.44269504088896341, // 32: log2(e)
  0.693359375, 0.693359375, 0.693359375, 0.693359375, // 48: ln 2, high part
  -2.12194440e-4, -2.12194440e-4, -2.12194440e-4, -2.12194440e-4, // 64: ln 2, low part
  1.9875691500e-4, 1.9875691500e-4, 1.9875691500e-4, 1.9875691500e-4, // 80: Cephes expf p0 .. p5
  1.3981999507e-3, 1.3981999507e-3, 1.3981999507e-3, 1.3981999507e-3, // 96
  8.3334519073e-3, 8.3334519073e-3, 8.3334519073e-3, 8.3334519073e-3, // 112
  4.1665795894e-2, 4.1665795894e-2, 4.1665795894e-2, 4.1665795894e-2, // 128
  1.6666665459e-1, 1.6666665459e-1, 1.6666665459e-1, 1.6666665459e-1, // 144
  5.0000001201e-1, 5.0000001201e-1, 5.0000001201e-1, 5.0000001201e-1, // 160
  1.0, 1.0, 1.0, 1.0, // 176
  2.0, 2.0, 2.0, 2.0, // 192
  5.192296858534828e33, 5.192296858534828e33, 5.192296858534828e33, 5.192296858534828e33, // 208: 2^112
  1.2676506002282294e30, 1.2676506002282294e30, 1.2676506002282294e30, 1.2676506002282294e30, // 224: 2^100
  4096.0, 4096.0, 4096.0, 4096.0, // 240: 2^12
  12582912.0, 12582912.0, 12582912.0, 12582912.0, // 256: 1.5·2^23, rounds to an integer when added
  1.0000001192, 1.0000001192, 1.0000001192, 1.0000001192, // 272: 2^f on [-1/2, 1/2], minimax q0 .. q5
  0.69314694405, 0.69314694405, 0.69314694405, 0.69314694405, // 288
  0.24022120237, 0.24022120237, 0.24022120237, 0.24022120237, // 304
  0.05550711602, 0.05550711602, 0.05550711602, 0.05550711602, // 320
  0.00967554562, 0.00967554562, 0.00967554562, 0.00967554562, // 336
  0.00132769765, 0.00132769765, 0.00132769765, 0.00132769765, // 352
], 16);
// @ts-ignore: decorator
@inline export function c(offset: usize): v128 {
  return v128.load(C + offset);
}
/** Bits of 1.5·2^23 minus the f32 exponent bias: (bits(1.5·2^23 + n) − this) << 23 = bits(2^n). */
const EXP_BIAS = memory.data<i32>([0x4b3fff81, 0x4b3fff81, 0x4b3fff81, 0x4b3fff81], 16);
/** bits(1.5·2^23): (bits(v + 1.5·2^23) − this) = round(v) for |v| < 2^22, ties to even like f32x4.nearest. */
export const ROUND_BITS = memory.data<i32>([0x4b400000, 0x4b400000, 0x4b400000, 0x4b400000], 16);
/** The high byte of each i16 lane: w & this = 256 · (the odd int8 of the lane). */
export const HI_BYTES = memory.data<i32>([0xff00ff00, 0xff00ff00, 0xff00ff00, 0xff00ff00], 16);
/** Nibble masks for q4 unpacking: of each i16 lane (bits 0-3, 4-7, 8-11, 16 bytes each), of each byte. */
export const NIBBLE16 = memory.data<i32>([
  0x000f000f, 0x000f000f, 0x000f000f, 0x000f000f,
  0x00f000f0, 0x00f000f0, 0x00f000f0, 0x00f000f0,
  0x0f000f00, 0x0f000f00, 0x0f000f00, 0x0f000f00,
], 16);
export const NIBBLE8 = memory.data<i32>([0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f, 0x0f0f0f0f], 16);
/** Keeps sign, exponent and mantissa of a half moved to the top of a lane and shifted right by 3. */
export const HALF_MASK = memory.data<i32>([0x8fffe000, 0x8fffe000, 0x8fffe000, 0x8fffe000], 16);
export const C_POW112: usize = 208;
export const C_POW100: usize = 224;
export const C_POW12: usize = 240;

/**
 * A half in the top 16 bits of each i32 lane → the same value × 2^-112 as f32 bits: an arithmetic shift
 * by 3 puts the 5-bit exponent and the mantissa where f32 keeps them, the mask drops the sign copies and
 * the bits shifted in from below. Exact for f16 normals (upload flushes f16 subnormals to zero, so no
 * f32 denormal ever reaches a multiply: x86 handles those in slow microcode).
 */
// @ts-ignore: decorator
@inline export function halfBits(v: v128): v128 {
  return v128.and(i32x4.shr_s(v, 3), v128.load(HALF_MASK));
}

/**
 * exp over four lanes (Cephes expf: range reduction by ln 2 and a degree-6 polynomial, ~1 ulp).
 * The input is clamped so 2^n stays a normal float: exp(Δ·A) with very negative Δ·A becomes ~1e-38,
 * which is 0 for every use here, and the upper clamp keeps SiLU/softplus finite.
 */
// @ts-ignore: decorator
@inline export function exp4(x: v128): v128 {
  // pmin/pmax are one minps/maxps each; f32x4.min/max's NaN and ±0 rules cost V8 ~7 instructions on x64.
  x = f32x4.pmin(f32x4.pmax(x, c(0)), c(16));
  // n = round(x·log2 e) by the 1.5·2^23 trick: t holds n both as a float (t − M) and in its low mantissa
  // bits, which avoids nearest + trunc_sat (the latter is ~8 instructions on SSE4.1).
  const t = f32x4.add(f32x4.mul(x, c(32)), c(256));
  const n = f32x4.sub(t, c(256));
  // Two-part ln 2 so r = x − n·ln2 keeps its low bits.
  let r = f32x4.sub(x, f32x4.mul(n, c(48)));
  r = f32x4.sub(r, f32x4.mul(n, c(64)));
  let p = c(80);
  p = f32x4.add(f32x4.mul(p, r), c(96));
  p = f32x4.add(f32x4.mul(p, r), c(112));
  p = f32x4.add(f32x4.mul(p, r), c(128));
  p = f32x4.add(f32x4.mul(p, r), c(144));
  p = f32x4.add(f32x4.mul(p, r), c(160));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), c(176));
  // 2^n built directly in the exponent field.
  return f32x4.mul(p, i32x4.shl(i32x4.sub(t, v128.load(EXP_BIAS)), 23));
}

/**
 * e^x for x ≤ 0: the scan's decay exp(Δ·A) (Δ > 0 > A), which is most of a decode step's non-GEMV time.
 * 2^(x·log2 e) split as 2^n · 2^f, |f| ≤ 1/2, with a degree-5 minimax polynomial for 2^f: 18 operations
 * to exp4's 26. Rounding x·log2 e costs accuracy in proportion to |x|: relative error ≤ 5e-7 for x ≥ −5,
 * ≤ 4e-6 down to the clamp at −87 (where e^x < 2e-38 and only decays a state to nothing).
 */
// @ts-ignore: decorator
@inline export function expNeg4(x: v128): v128 {
  const y = f32x4.mul(f32x4.pmax(x, c(0)), c(32));
  const t = f32x4.add(y, c(256));
  const f = f32x4.sub(y, f32x4.sub(t, c(256)));
  let p = f32x4.add(f32x4.mul(c(352), f), c(336));
  p = f32x4.add(f32x4.mul(p, f), c(320));
  p = f32x4.add(f32x4.mul(p, f), c(304));
  p = f32x4.add(f32x4.mul(p, f), c(288));
  p = f32x4.add(f32x4.mul(p, f), c(272));
  return f32x4.mul(p, i32x4.shl(i32x4.sub(t, v128.load(EXP_BIAS)), 23));
}

/** SiLU(x) = x · sigmoid(x) = x / (1 + e^−x) */
// @ts-ignore: decorator
@inline export function silu4(x: v128): v128 {
  return f32x4.div(x, f32x4.add(c(176), exp4(f32x4.neg(x))));
}

/**
 * softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^−|x|): the second term has its argument in (0, 1],
 * so it never overflows and needs no threshold (PyTorch's linear branch above 20 differs by < 3e-9).
 * log1p(y) = 2·atanh(y / (2 + y)), a fast odd series because y/(2+y) ≤ 1/3.
 */
// @ts-ignore: decorator
@inline export function softplus4(x: v128): v128 {
  const y = expNeg4(f32x4.neg(f32x4.abs(x)));
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
  return f32x4.add(f32x4.pmax(x, f32x4.splat(0.0)), log1p);
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
  if (dtype == Q4) return <usize>((K + QBLOCK - 1) / QBLOCK) << 4;
  return <usize>((K + QBLOCK - 1) & ~(QBLOCK - 1)); // q8 rows are padded to whole blocks
}

/** Bytes of one row's unit in a tile (see TILED): a q8 block, a q4 block (16 bytes) or 8 halves. */
// @ts-ignore: decorator
@inline export function unitBytes(dtype: i32): usize {
  return dtype == Q8 ? <usize>QBLOCK : 16;
}

/** log2 of the bytes of one block scale: f32 for q8, f16 for q4. */
// @ts-ignore: decorator
@inline export function scaleShift(dtype: i32): usize {
  return dtype == Q4 ? 1 : 2;
}

/** Bytes from one unit of a row to its next: the unit itself, or four of them when rows are tiled. */
// @ts-ignore: decorator
@inline export function unitStride(dtype: i32, tiled: bool): usize {
  return unitBytes(dtype) << (tiled ? 2 : 0);
}

/** Start of row n (its first unit) of a [N, K] matrix at w. */
// @ts-ignore: decorator
@inline export function rowAddr(dtype: i32, w: usize, n: i32, K: i32, tiled: bool): usize {
  if (!tiled) return w + <usize>n * rowBytes(dtype, K);
  return w + <usize>(n & ~3) * rowBytes(dtype, K) + <usize>(n & 3) * unitBytes(dtype);
}

/**
 * Start of row n's block scales (q8: f32, q4: f16; `sh` = `scaleShift`): [N, blocks], or for tiled rows
 * [⌈N/4⌉, blocks, 4] (the four rows' scales of a block next to each other, read in the same stream as the
 * tile). Blocks are `scaleStride` apart.
 */
// @ts-ignore: decorator
@inline export function scaleAddr(scales: usize, n: i32, K: i32, tiled: bool, sh: usize = 2): usize {
  const blocks = (K + QBLOCK - 1) / QBLOCK;
  if (!tiled) return scales + (<usize>(n * blocks) << sh);
  return scales + (<usize>((n >> 2) * blocks) << (sh + 2)) + (<usize>(n & 3) << sh);
}

// @ts-ignore: decorator
@inline export function scaleStride(tiled: bool, sh: usize = 2): usize {
  return tiled ? <usize>4 << sh : <usize>1 << sh;
}

/** Byte offset of column k from its row's start; us = `unitStride`. Tiled f16 needs K % 8 = 0. */
// @ts-ignore: decorator
@inline export function colOffset(dtype: i32, k: i32, us: usize): usize {
  if (dtype == F32) return <usize>k << 2;
  if (dtype == F16) return <usize>(k >> 3) * us + (<usize>(k & 7) << 1);
  return <usize>(k >> 5) * us + <usize>(k & 31);
}

/**
 * Four weights w[k .. k+4) of one row as f32x4. `row` points at the row's data; for q8, `scale` is the
 * splatted scale of the block holding k (the caller hoists it out of the block's loop).
 * f16 → f32 by `halfBits` and × 2^112, which rebiases the exponent (15 → 127).
 */
// @ts-ignore: decorator
@inline export function w4(dtype: i32, row: usize, k: i32, scale: v128): v128 {
  if (dtype == F32) return v128.load(row + (<usize>k << 2));
  if (dtype == F16) return f32x4.mul(halfBits(i32x4.shl(v128.load16x4_u(row + (<usize>k << 1)), 16)), c(C_POW112));
  const q = i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(row + <usize>k)));
  return f32x4.mul(f32x4.convert_i32x4_s(q), scale);
}

/** One weight as f32 (scalar tails); `scale` as in `w4`. */
// @ts-ignore: decorator
@inline export function w1(dtype: i32, row: usize, k: i32, scale: f32): f32 {
  if (dtype == F32) return load<f32>(row + (<usize>k << 2));
  if (dtype == F16) return half1(<u32>load<u16>(row + (<usize>k << 1)));
  return <f32>load<i8>(row + <usize>k) * scale;
}

/** Half bits → f32 (normals and zeros, as upload stores them), by the same bit moves as `halfBits`. */
// @ts-ignore: decorator
@inline export function half1(h: u32): f32 {
  const mag = reinterpret<f32>((h & 0x7fff) << 13) * <f32>5.192296858534828e33;
  return reinterpret<f32>(reinterpret<u32>(mag) | ((h & 0x8000) << 16));
}
