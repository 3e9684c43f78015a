// q8 / q4 weights on the GPU (`#include quant`, with define Q4 for q4, else q8). The values are
// src/quant.ts's; the layout is the WebGPU backend's (`quantLayout` in src/webgpu/kernels.ts): each
// row of a [rows, K] matrix is one run of u32 words, [scale section | quant section]:
//   - scale section, `ss` words (padded to a multiple of 4 so every row starts on 16 bytes):
//     q8: word b = the f32 scale of block b; q4: word i = the f16 scales of blocks 2i (low half)
//     and 2i + 1 (high half), read with `unpack2x16float` (core WGSL: no shader-f16 needed);
//   - quant section, QWB words per block of 32 weights (rows padded to whole blocks, pad = 0):
//     q8: word w = weights 4w .. 4w+3 as int8, lowest byte first;
//     q4: block b = words 4b .. 4b+3 = q4_0's 16 bytes, byte j = weight j (low nibble) | weight
//     j + 16 (high nibble), each nibble n standing for (n − 8) · d.
// One buffer per matrix (scales beside the quants) keeps the fused decode step within 8 storage
// bindings. Decode kernels give each lane whole quant words, consecutive lanes consecutive words:
// one coalesced u32 load yields 4 (q8) or 8 (q4) weights, and the scale word is a broadcast load.

#if Q4
const QWB: u32 = 4u; // quant words per block of 32
#else
const QWB: u32 = 8u;
#endif

/** Index of block b's scale word in the row's scale section. */
fn q_sword(b: u32) -> u32 {
#if Q4
  return b / 2u;
#else
  return b;
#endif
}

/** Block b's scale, from its scale word `sw`. */
fn q_scale(sw: u32, b: u32) -> f32 {
#if Q4
  return unpack2x16float(sw)[b & 1u];
#else
  return bitcast<f32>(sw);
#endif
}

/**
 * The quads (4 consecutive weights, index k / 4 within the row) that quant word w holds: q8 only
 * `.x` = w; q4 `.x` = 8b + j (its low nibbles) and `.y` = 8b + 4 + j (its high nibbles), b = w / 4,
 * j = w % 4. Over all the words of a row every quad appears exactly once.
 */
fn q_quads(w: u32) -> vec2<u32> {
#if Q4
  let q = 8u * (w / 4u) + (w & 3u);
  return vec2<u32>(q, q + 4u);
#else
  return vec2<u32>(w, w);
#endif
}

/** The unscaled weights of quad `.x` of word wd: q8 int8s, q4 low nibbles − 8. */
fn q_lo(wd: u32) -> vec4<f32> {
#if Q4
  return vec4<f32>((vec4<u32>(wd) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)) - 8.0;
#else
  // Shift each byte to the top, then an arithmetic shift back sign-extends it.
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(wd) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
#endif
}

/** q4: the unscaled weights of quad `.y` of word wd (high nibbles − 8). */
fn q_hi(wd: u32) -> vec4<f32> {
  return vec4<f32>((vec4<u32>(wd) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u)) - 8.0;
}

/** Quant word (within the quant section) that holds weights k and k + 1 (k even). */
fn q_pair_word(k: u32) -> u32 {
#if Q4
  return (k / 32u) * 4u + (k & 15u) / 4u;
#else
  return k / 4u;
#endif
}

/** The unscaled weights k and k + 1 (k even) from their word wd. */
fn q_pair(wd: u32, k: u32) -> vec2<f32> {
#if Q4
  let sh = 8u * (k & 3u) + select(0u, 4u, (k & 31u) >= 16u);
  return vec2<f32>(f32((wd >> sh) & 15u), f32((wd >> (sh + 8u)) & 15u)) - 8.0;
#else
  let sh = 8u * (k & 3u); // 0 or 16
  return vec2<f32>(bitcast<vec2<i32>>(vec2<u32>(wd << (24u - sh), wd << (16u - sh))) >> vec2<u32>(24u));
#endif
}
