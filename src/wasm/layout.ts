/**
 * What TypeScript and the AssemblyScript kernels (assembly/) agree on: weight formats, the job control
 * block, kernel ids, and the conversions of float32 weights to f16 / q8 / q4 at upload.
 */

/** Weight storage codes (assembly/math.ts F32/F16/Q8/Q4). */
export const DTYPE_CODE = { f32: 0, f16: 1, q8: 2, q4: 3 } as const;
export type DtypeCode = (typeof DTYPE_CODE)[keyof typeof DTYPE_CODE];

/**
 * Flag added to an f16 / q8 / q4 dtype code: rows stored in tiles of 4 by `tileRows` (assembly/math.ts
 * TILED), q8 / q4 block scales likewise (unit = one scale: `SCALE_UNIT`). The 4-row decode GEMVs then
 * stream each thread's rows as one sequential run of memory.
 */
export const TILED = 4;
/** Bytes of one row's unit within a tile: a q8 block of 32 weights, a q4 block (16 bytes), or 8 halves. */
export const TILE_UNIT = { 1: 16, 2: 32, 3: 16 } as const;
/** Bytes of one block scale: f32 for q8, f16 for q4 (as q4_0 stores it: 18 bytes per 32 weights). */
export const SCALE_UNIT = { 2: 4, 3: 2 } as const;

// q8: int8 weights in blocks of 32 along K with one f32 scale per block (rows padded to whole blocks);
// q4: 16 bytes of nibbles and one f16 scale per block. The values come from src/quant.ts, shared with
// the other backends.
import { Q4_BLOCK_BYTES, QBLOCK } from '../quant.js';
export { QBLOCK, quantizeQ4, quantizeQ8 } from '../quant.js';

/**
 * Control block words (i32), shared by assembly/index.ts and workers/wasm-thread.js.
 * A job is split into NPARTS chunks that threads claim one at a time (CLAIM), so a thread that the OS
 * does not schedule in time never holds the others up: whoever runs takes the remaining chunks.
 */
export const CTL = {
  SEQ: 0, // job generation: the coordinator bumps it to publish a job (workers wait on it)
  DONE: 1, // chunks of the current job finished
  KERNEL: 2,
  NPARTS: 3, // chunks of the current job
  SCRATCH: 4, // byte offset of the per-thread scratch areas
  SCRATCH_STRIDE: 5, // bytes of scratch per thread
  RESULT: 6, // byte offset of per-chunk f32 results (bandwidth probe)
  CLAIM: 7, // (SEQ & 0xffff) << 16 | next unclaimed chunk
  ARGS: 8, // kernel arguments, ARGS .. ARGS+15
  SLEEPERS: 24, // workers blocked in Atomics.wait on SEQ (notify only when > 0)
  COORD_SLEEPING: 25, // 1 while the coordinator is blocked in Atomics.wait on DONE
  ERROR: 26, // set by a worker whose kernel threw
  JOB: 27, // bumped for every job, solo ones included: keys the per-thread prepared x (assembly/index.ts)
  SPIN_US: 28, // how long an idle worker polls SEQ before it blocks in Atomics.wait (set by the runtime)
  // Test hooks (0 in use): workers sleep this many µs after waking for a job, before claiming a chunk (a
  // thread the OS does not schedule in time), or after claiming one, before running it (one preempted mid-job).
  STALL_US: 29,
  HOLD_US: 30,
  WORKER_SLEEPS: 31, // times workers blocked in Atomics.wait for a job (each costs a wake-up)
  WORDS: 32,
} as const;

/** Most chunks a job is split into (RESULT has room for this many). */
export const MAX_CHUNKS = 256;

/** Bytes at the start of each thread's scratch area that the kernels keep for themselves (assembly/index.ts). */
export const SCRATCH_HEADER = 64;

export const KERNEL = { EXIT: -1, MATMUL: 1, CONV: 2, SCAN: 3, NORM: 4, EMBED: 5, READ: 6, NORM_SEGMENTS: 7, SSD: 8, GATED_NORM: 9 } as const;

/**
 * Bytes of a [rows, cols] tensor stored as `dtype`, including q8 / q4 block scales; `tiled` rounds the rows
 * up to whole tiles of 4 (the kernels read all four rows of a tile, the padding rows being zero).
 */
export function tensorBytes(dtype: DtypeCode, rows: number, cols: number, tiled = false): { data: number; scales: number } {
  if (tiled) rows = Math.ceil(rows / 4) * 4;
  if (dtype === DTYPE_CODE.f32) return { data: rows * cols * 4, scales: 0 };
  if (dtype === DTYPE_CODE.f16) return { data: rows * cols * 2, scales: 0 };
  const blocks = Math.ceil(cols / QBLOCK);
  if (dtype === DTYPE_CODE.q4) return { data: rows * blocks * Q4_BLOCK_BYTES, scales: rows * blocks * 2 };
  return { data: rows * blocks * QBLOCK, scales: rows * blocks * 4 };
}

/** Whether a [rows, cols] f16 / q8 / q4 matrix is stored tiled: f16 tiles need whole units of 8 halves per row. */
export function canTile(dtype: DtypeCode, cols: number): boolean {
  return dtype === DTYPE_CODE.q8 || dtype === DTYPE_CODE.q4 || (dtype === DTYPE_CODE.f16 && cols % 8 === 0);
}

/**
 * Row-major [rows, rowBytes] → tiles [⌈rows/4⌉, rowBytes/unit, 4, unit]: unit j of rows 4i .. 4i+3 lie
 * next to each other. `dst` (tensorBytes(…, true).data bytes) keeps zeros in the padding rows.
 */
export function tileRows(src: Uint8Array, rows: number, rowBytes: number, unit: number, dst: Uint8Array): void {
  const units = rowBytes / unit;
  for (let r = 0; r < rows; r++) {
    const tile = (r >> 2) * 4 * rowBytes + (r & 3) * unit;
    for (let u = 0; u < units; u++) {
      dst.set(src.subarray(r * rowBytes + u * unit, r * rowBytes + (u + 1) * unit), tile + u * 4 * unit);
    }
  }
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/**
 * float32 → IEEE half bits, round to nearest even. Magnitudes beyond the f16 range saturate at ±65504
 * (weights are finite; an infinity would poison every dot product it enters). Magnitudes below the
 * smallest normal half (2^-14 ≈ 6.1e-5) become ±0: the kernels widen halves by bit moves, and an f16
 * subnormal would turn into an f32 denormal, which x86 multiplies in microcode ~100x slower. The error
 * (< 6.1e-5 absolute) is below the rounding error of any weight above ~0.1.
 */
export function toHalf(value: number): number {
  f32buf[0] = value;
  const u = u32buf[0];
  const sign = (u >>> 16) & 0x8000;
  const x = u & 0x7fffffff;
  if (x >= 0x477ff000) return sign | 0x7bff; // ≥ 65520 would round to infinity
  if (x < 0x38800000) return x >= 0x387fe000 ? sign | 0x0400 : sign; // 2^-14 − 2^-25 rounds up to 2^-14
  // Rebias the exponent (127 → 15) and round the 13 dropped mantissa bits to even.
  return sign | ((x - 0x38000000 + 0xfff + ((x >>> 13) & 1)) >>> 13);
}

/** Converts `src` to half bits into `dst` (same length). */
export function toHalfArray(src: Float32Array, dst: Uint16Array): void {
  for (let i = 0; i < src.length; i++) dst[i] = toHalf(src[i]);
}
