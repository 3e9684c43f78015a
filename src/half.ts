// IEEE half and bfloat16 conversions, shared by the safetensors reader/writer and the f16 weight
// upload of the GPU backend. (The wasm backend's `toHalf` differs on purpose: it saturates and
// flushes subnormals, see src/wasm/layout.ts.)

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Round-to-nearest-even float32 → half bits; overflow → ±inf, underflow → subnormal / ±0. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r; // a carry into the exponent field is the correct result
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++; // may carry up to inf: also correct
  return sign | r;
}

/** Half bits → number. */
export function f16BitsToF32(h: number): number {
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  const v = e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity) : 2 ** (e - 15) * (1 + m / 1024);
  return h & 0x8000 ? -v : v;
}

/** `data` rounded to half precision and back: what the GPU sees of an f16 weight. */
export function roundToF16(data: Float32Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f16BitsToF32(f32ToF16Bits(data[i]));
  return out;
}

/** Round-to-nearest-even float32 → bfloat16 bits. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7fffffff) > 0x7f800000) return (u >>> 16) | 0x40; // keep NaN a NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
