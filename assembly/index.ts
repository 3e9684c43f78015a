// Entry points of build/mamba.wasm. Kernels are exported for direct calls, and `runJob` runs one chunk
// (`part` of NPARTS) of the published job: the coordinating thread and the workers claim chunks and call
// it with the same control block, so the argument decoding lives in one place.
import { conv1d } from './conv';
import { embed } from './embed';
import { matmulPrepared } from './matmul';
import { gatedNorm, normSegments, rmsnorm } from './norm';
import { ssd } from './ssd';
import { scan } from './scan';

export { conv1d, siluRows } from './conv';
export { embed } from './embed';
export { dequantRow, matmul } from './matmul';
export { gatedNorm, normSegments, rmsnorm } from './norm';
export { ssd } from './ssd';
export { scan } from './scan';
export { argmax, topk } from './sample';

// Control block: i32 words. Mirrors `src/wasm/layout.ts`.
// Words 0, 1 and 7 (SEQ, DONE, CLAIM) are the job protocol, maintained in JS (src/wasm/runtime.ts).
const KERNEL = 2;
const NPARTS = 3;
const SCRATCH = 4; // base of the per-thread scratch areas (indexed by thread, not by chunk)
const SCRATCH_STRIDE = 5; // bytes per thread
const RESULT = 6; // base of per-chunk f32 results (read benchmark)
const ARGS = 8;
const JOB = 27; // bumped by the coordinator for every job, including those it runs alone
// Each thread's scratch starts with a header: [0] the JOB whose x its decode GEMV last prepared.
const SCRATCH_HEADER: usize = 64;

const K_MATMUL = 1;
const K_CONV = 2;
const K_SCAN = 3;
const K_NORM = 4;
const K_EMBED = 5;
const K_READ = 6;
const K_NORM_SEGMENTS = 7;
const K_SSD = 8;
const K_GATED_NORM = 9;

// @ts-ignore: decorator
@inline function arg(ctl: usize, i: i32): i32 {
  return load<i32>(ctl + (<usize>(ARGS + i) << 2));
}
// @ts-ignore: decorator
@inline function argf(ctl: usize, i: i32): f32 {
  return load<f32>(ctl + (<usize>(ARGS + i) << 2));
}
// @ts-ignore: decorator
@inline function word(ctl: usize, i: i32): i32 {
  return load<i32>(ctl + (<usize>i << 2));
}

/** Start of part `part` of `total` rows split into `nparts` runs whose lengths are multiples of `align`. */
// @ts-ignore: decorator
@inline function split(total: i32, part: i32, nparts: i32, align: i32): i32 {
  const chunk = ((total + align - 1) / align + nparts - 1) / nparts * align;
  return min(total, part * chunk);
}

/** Runs chunk `part` of the job in `ctl` on thread `thread` (which picks the scratch area). */
export function runJob(ctl: usize, part: i32, thread: i32): void {
  const nparts = word(ctl, NPARTS);
  const header = <usize>word(ctl, SCRATCH) + <usize>thread * <usize>word(ctl, SCRATCH_STRIDE);
  const scratch = header + SCRATCH_HEADER;
  const kernel = word(ctl, KERNEL);
  if (kernel == K_MATMUL) {
    // dtype, x, ldx, w, scales, bias, out, ldo, T, K, N, accumulate
    const N = arg(ctl, 10);
    const r0 = split(N, part, nparts, 4), r1 = split(N, part + 1, nparts, 4);
    if (r0 < r1) {
      // A thread's later chunks of one job reuse the x its first chunk prepared (f16 / q8 decode).
      const job = word(ctl, JOB);
      const ready = load<i32>(header) == job;
      store<i32>(header, job);
      matmulPrepared(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), arg(ctl, 4), arg(ctl, 5), arg(ctl, 6),
        arg(ctl, 7), arg(ctl, 8), arg(ctl, 9), r0, r1, arg(ctl, 11) != 0, scratch, ready);
    }
  } else if (kernel == K_CONV) {
    // x, state, w, bias, out, T, E, K
    const E = arg(ctl, 6);
    const e0 = split(E, part, nparts, 4), e1 = split(E, part + 1, nparts, 4);
    if (e0 < e1) conv1d(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), arg(ctl, 4), arg(ctl, 5), E, arg(ctl, 7), e0, e1);
  } else if (kernel == K_SCAN) {
    // u, dbc, z, dtW, dtB, A, D, state, out, T, E, R, N
    const E = arg(ctl, 10);
    const e0 = split(E, part, nparts, 4), e1 = split(E, part + 1, nparts, 4);
    if (e0 < e1) {
      scan(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), arg(ctl, 4), arg(ctl, 5), arg(ctl, 6), arg(ctl, 7),
        arg(ctl, 8), arg(ctl, 9), E, arg(ctl, 11), arg(ctl, 12), e0, e1);
    }
  } else if (kernel == K_NORM) {
    // x, w, out, dim, eps, T
    const T = arg(ctl, 5);
    const t0 = split(T, part, nparts, 1), t1 = split(T, part + 1, nparts, 1);
    if (t0 < t1) rmsnorm(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), argf(ctl, 4), t0, t1);
  } else if (kernel == K_NORM_SEGMENTS) {
    // x, s0, s1, s2, eps, T
    const T = arg(ctl, 5);
    const t0 = split(T, part, nparts, 1), t1 = split(T, part + 1, nparts, 1);
    if (t0 < t1) normSegments(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), argf(ctl, 4), t0, t1);
  } else if (kernel == K_SSD) {
    // xbc, dt, dtBias, A, D, state, y, T, N, H, P, G, dtMin, dtMax
    const H = arg(ctl, 9);
    const h0 = split(H, part, nparts, 1), h1 = split(H, part + 1, nparts, 1);
    if (h0 < h1) {
      ssd(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), arg(ctl, 4), arg(ctl, 5), arg(ctl, 6), arg(ctl, 7), arg(ctl, 8),
        H, arg(ctl, 10), arg(ctl, 11), argf(ctl, 12), argf(ctl, 13), scratch, h0, h1);
    }
  } else if (kernel == K_GATED_NORM) {
    // y, z, w, out, E, S, eps, normFirst, T
    const T = arg(ctl, 8);
    const t0 = split(T, part, nparts, 1), t1 = split(T, part + 1, nparts, 1);
    if (t0 < t1) gatedNorm(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), arg(ctl, 4), arg(ctl, 5), argf(ctl, 6), arg(ctl, 7), t0, t1);
  } else if (kernel == K_EMBED) {
    // dtype, tokens, table, scales, out, D, T
    const T = arg(ctl, 6);
    const t0 = split(T, part, nparts, 1), t1 = split(T, part + 1, nparts, 1);
    if (t0 < t1) embed(arg(ctl, 0), arg(ctl, 1), arg(ctl, 2), arg(ctl, 3), arg(ctl, 4), arg(ctl, 5), t0, t1);
  } else if (kernel == K_READ) {
    // ptr, bytes (multiple of 256): each part sums its slice so the loads cannot be dropped
    const blocks = arg(ctl, 1) >>> 8;
    const b0 = split(blocks, part, nparts, 1), b1 = split(blocks, part + 1, nparts, 1);
    store<f32>(<usize>word(ctl, RESULT) + (<usize>part << 2), readSum(<usize>arg(ctl, 0) + (<usize>b0 << 8), b1 - b0));
  }
}

/** Sum of `blocks` 256-byte blocks as f32 lanes: a pure streaming read for the bandwidth probe. */
export function readSum(p: usize, blocks: i32): f32 {
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const end = p + (<usize>blocks << 8);
  for (; p < end; p += 256) {
    a0 = f32x4.add(a0, f32x4.add(v128.load(p), v128.load(p, 64)));
    a1 = f32x4.add(a1, f32x4.add(v128.load(p, 16), v128.load(p, 80)));
    a2 = f32x4.add(a2, f32x4.add(v128.load(p, 32), v128.load(p, 96)));
    a3 = f32x4.add(a3, f32x4.add(v128.load(p, 48), v128.load(p, 112)));
    a0 = f32x4.add(a0, f32x4.add(v128.load(p, 128), v128.load(p, 192)));
    a1 = f32x4.add(a1, f32x4.add(v128.load(p, 144), v128.load(p, 208)));
    a2 = f32x4.add(a2, f32x4.add(v128.load(p, 160), v128.load(p, 224)));
    a3 = f32x4.add(a3, f32x4.add(v128.load(p, 176), v128.load(p, 240)));
  }
  const s = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1) + f32x4.extract_lane(s, 2) + f32x4.extract_lane(s, 3);
}

/** First byte after the module's own static data: the TypeScript allocator starts above it. */
export function heapBase(): usize {
  return __heap_base;
}

