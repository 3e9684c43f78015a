// The shared block quantizers (src/quant.ts): every weight is within half a step of its value, the
// block's extreme is exact, and padding decodes to zero.
import { describe, expect, it } from 'vitest';
import { f16BitsToF32 } from '../src/half.js';
import { dequantizeQ4, dequantizeQ8, QBLOCK, quantizeQ4, quantizeQ8 } from '../src/quant.js';

function randomMatrix(rows: number, cols: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    w[i] = ((s / 2 ** 32) * 2 - 1) * (1 + (i % 7)); // blocks with different ranges
  }
  return w;
}

describe('quantizers', () => {
  for (const [rows, cols] of [[3, 32], [5, 70], [1, 7]] as const) {
    it(`q4 [${rows}, ${cols}]: |w − ŵ| ≤ d/2, within a step`, () => {
      const w = randomMatrix(rows, cols, rows * 31 + cols);
      const blocks = Math.ceil(cols / QBLOCK);
      const q = new Uint8Array(rows * blocks * 16);
      const s = new Uint16Array(rows * blocks);
      quantizeQ4(w, rows, cols, q, s);
      const back = dequantizeQ4(q, s, rows, cols);
      for (let r = 0; r < rows; r++) {
        for (let k = 0; k < cols; k++) {
          const b = Math.floor(k / QBLOCK);
          const d = Math.abs(f16BitsToF32(s[r * blocks + b]));
          // The extreme maps to nibble 0 (−8·d); the other side stops at +7·d, so weights beyond 7.5·|d|
          // there may be up to one step off, all others half a step (plus the scale's f16 rounding).
          const i = r * cols + k;
          const step = Math.abs(w[i]) > 7.5 * d ? d : d * 0.5;
          expect(Math.abs(w[i] - back[i])).toBeLessThanOrEqual(step + Math.abs(w[i]) * 1e-3 + 1e-7);
        }
      }
      // A padded block's extra nibbles are 8: a row of 7 weights fills bytes 7..15 with 0x88.
      if (cols === 7) expect(Array.from(q.subarray(7, 16))).toEqual(new Array(9).fill(0x88));
    });
  }

  it('q8: |w − ŵ| ≤ scale/2, zero padding', () => {
    const rows = 4;
    const cols = 45;
    const w = randomMatrix(rows, cols, 9);
    const blocks = Math.ceil(cols / QBLOCK);
    const q = new Int8Array(rows * blocks * QBLOCK);
    const s = new Float32Array(rows * blocks);
    quantizeQ8(w, rows, cols, q, s);
    const back = dequantizeQ8(q, s, rows, cols);
    for (let i = 0; i < w.length; i++) {
      const scale = s[Math.floor(i / cols) * blocks + Math.floor((i % cols) / QBLOCK)];
      expect(Math.abs(w[i] - back[i])).toBeLessThanOrEqual(scale * 0.5 + 1e-7);
    }
    expect(q[cols]).toBe(0);
  });
});
