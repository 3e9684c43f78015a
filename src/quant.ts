// Block quantization of float32 weights at load time, shared by every backend that stores q8 / q4, so
// that the same checkpoint quantizes to the same numbers everywhere (the conformance table compares
// backends at one dtype). Each backend lays the blocks out in memory its own way (src/wasm/layout.ts
// tiles them; the WebGPU backend packs them into u32 words); the values are defined here.
//
// Both formats cut each row of a [rows, cols] matrix (PyTorch Linear layout: cols = K, the reduced
// dimension) into blocks of QBLOCK = 32 weights with one scale each; a partial last block is padded
// with zeros.

import { f16BitsToF32, f32ToF16Bits } from './half.js';

export const QBLOCK = 32;

/**
 * q8: symmetric int8, scale = max|w| / 127 per block, q = round(w / scale); w ≈ q · scale.
 * w [rows, cols] → q [rows, blocks·32] (zero padded), scales [rows, blocks] (f32).
 */
export function quantizeQ8(w: Float32Array, rows: number, cols: number, q: Int8Array, scales: Float32Array): void {
  const blocks = Math.ceil(cols / QBLOCK);
  const stride = blocks * QBLOCK;
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const k0 = b * QBLOCK;
      const k1 = Math.min(cols, k0 + QBLOCK);
      let amax = 0;
      for (let k = k0; k < k1; k++) amax = Math.max(amax, Math.abs(w[r * cols + k]));
      const scale = amax / 127;
      scales[r * blocks + b] = scale;
      const inv = scale > 0 ? 1 / scale : 0;
      for (let k = k0; k < k1; k++) q[r * stride + k] = Math.max(-127, Math.min(127, Math.round(w[r * cols + k] * inv)));
    }
  }
}

/** Bytes of one q4 block's 32 nibbles. */
export const Q4_BLOCK_BYTES = 16;

/**
 * q4 (the values of llama.cpp's q4_0): per block, d = m / −8 where m is the weight of largest magnitude
 * (so m itself maps exactly to nibble 0, and the other side gets the 7 steps up to +7·|d|), stored as
 * an f16; nibble = clamp(round(w / d) + 8, 0, 15); w ≈ (nibble − 8) · d.
 *
 * Packing (also q4_0's): byte j of a block holds element j in its low nibble and element j + 16 in its
 * high nibble, so one 16-byte load + a mask and a shift give two runs of 16 consecutive weights.
 * w [rows, cols] → q [rows, blocks·16] bytes, scales [rows, blocks] as f16 bits. Padding nibbles are 8 (= 0).
 *
 * On the bundled model this costs +0.009 bits/byte over f32 on the validation excerpt (1.7376 → 1.7469,
 * embedding included).
 */
export function quantizeQ4(w: Float32Array, rows: number, cols: number, q: Uint8Array, scales: Uint16Array): void {
  const blocks = Math.ceil(cols / QBLOCK);
  const nib = new Uint8Array(QBLOCK);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < blocks; b++) {
      const k0 = b * QBLOCK;
      const k1 = Math.min(cols, k0 + QBLOCK);
      let m = 0;
      for (let k = k0; k < k1; k++) if (Math.abs(w[r * cols + k]) > Math.abs(m)) m = w[r * cols + k];
      const h = f32ToF16Bits(m / -8);
      scales[r * blocks + b] = h;
      const d = f16BitsToF32(h);
      const inv = d !== 0 && Number.isFinite(d) ? 1 / d : 0;
      nib.fill(8);
      for (let k = k0; k < k1; k++) nib[k - k0] = Math.max(0, Math.min(15, Math.round(w[r * cols + k] * inv) + 8));
      const o = (r * blocks + b) * Q4_BLOCK_BYTES;
      for (let j = 0; j < 16; j++) q[o + j] = nib[j] | (nib[j + 16] << 4);
    }
  }
}

/** The float32 weights a q4 matrix stands for ([rows, cols]); the reference that kernels are tested against. */
export function dequantizeQ4(q: Uint8Array, scales: Uint16Array, rows: number, cols: number): Float32Array {
  const blocks = Math.ceil(cols / QBLOCK);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) {
      const b = (k / QBLOCK) | 0;
      const j = k % QBLOCK;
      const byte = q[(r * blocks + b) * Q4_BLOCK_BYTES + (j & 15)];
      const n = j < 16 ? byte & 15 : byte >> 4;
      out[r * cols + k] = (n - 8) * f16BitsToF32(scales[r * blocks + b]);
    }
  }
  return out;
}

/** The float32 weights a q8 matrix stands for ([rows, cols]). */
export function dequantizeQ8(q: Int8Array, scales: Float32Array, rows: number, cols: number): Float32Array {
  const blocks = Math.ceil(cols / QBLOCK);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < cols; k++) out[r * cols + k] = q[r * blocks * QBLOCK + k] * scales[r * blocks + ((k / QBLOCK) | 0)];
  }
  return out;
}
