// Each WGSL kernel against its readable specification in src/reference/, on random inputs with
// odd sizes, for T = 1 (decode: GEMV path) and T > 1 (prefill: GEMM path), in every weight format
// the adapter supports (f32, f16 packed in u32, and f16 with shader-f16 where available); the
// matmul and fused-step kernels also in q8 and q4, against the reference run on the dequantized
// weights (src/quant.ts), i.e. exact math over the same quantized values.
import { afterAll, describe, expect, test } from 'vitest';
import type { MambaConfig } from '../src/config.js';
import { conv1d } from '../src/reference/conv.js';
import { embed } from '../src/reference/embed.js';
import { matmul } from '../src/reference/matmul.js';
import { normSegments, rmsnorm } from '../src/reference/norm.js';
import { scan } from '../src/reference/scan.js';
import type { LayerWeights } from '../src/weights.js';
import type { GpuContext } from '../src/webgpu/device.js';
import { quantLayout, storedMatrix, WebGPUKernels, type GpuBuf, type GpuWeight } from '../src/webgpu/kernels.js';
import { f16BitsToF32, f32ToF16Bits, roundToF16 } from '../src/half.js';
import { loadShaderSources, preprocess } from '../src/webgpu/wgsl.js';
import { nodeWebGPU } from './helpers/env.js';
import { relDiff } from './helpers/fixtures.js';

const ctx: GpuContext | undefined = await nodeWebGPU(import.meta.url, { part: 'webgpu kernels', f16: true });
const shaders = await loadShaderSources();
afterAll(() => ctx?.device.destroy());

/** Deterministic uniform values in [lo, hi). */
function rand(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = lo + ((s >>> 0) / 2 ** 32) * (hi - lo);
  }
  return out;
}

/** A buffer holding `x`. */
function putBuf(k: WebGPUKernels, x: Float32Array): GpuBuf {
  const b = k.alloc(x.length);
  k.write(b, x);
  return b;
}

/**
 * x [T, K] times w [N, K] (uploaded by `k`, whose binding limit splits it into 4 parts) against the
 * reference on `stored` (w as the GPU stores it), within `tol`; returns the uploaded weight.
 */
async function checkSplitMatmul(k: WebGPUKernels, T: number, K: number, N: number, x: Float32Array, w: Float32Array, stored: Float32Array, tol: number): Promise<GpuWeight> {
  const want = new Float32Array(T * N);
  matmul(x, stored, undefined, want, T, K, N, false);
  const ob = k.alloc(T * N);
  const wb = k.upload(w, N, K) as GpuWeight;
  k.matmul(putBuf(k, x), wb, undefined, ob, T, K, N, false);
  expect(wb.mat!.parts.length).toBe(4);
  expect(relDiff(await k.read(ob, T * N), want)).toBeLessThan(tol);
  return wb;
}

/**
 * mix_in (RMSNorm → in_proj x, z (+ bias) → conv step → SiLU) for `h` against the reference run on
 * `weight(m)` (the values the GPU stores for matrix m): u, z and the conv state. Returns h's buffer.
 */
async function checkMixIn(
  k: WebGPUKernels,
  cfg: MambaConfig,
  L: Pick<LayerWeights, 'norm' | 'inProjX' | 'inProjZ' | 'inProjXBias' | 'inProjZBias' | 'convW' | 'convB'>,
  LW: LayerWeights<GpuWeight>,
  h: Float32Array,
  weight: (m: Float32Array) => Float32Array,
  seed: number,
): Promise<GpuBuf> {
  const { dModel: D, dInner: E, dConv: K } = cfg;
  const xn = new Float32Array(D);
  rmsnorm(h, L.norm, xn, 1, D, cfg.eps);
  const [xr, zr, ur] = [new Float32Array(E), new Float32Array(E), new Float32Array(E)];
  matmul(xn, weight(L.inProjX), L.inProjXBias, xr, 1, D, E, false);
  matmul(xn, weight(L.inProjZ), L.inProjZBias, zr, 1, D, E, false);
  const cs = rand(E * (K - 1), seed);
  const csb = putBuf(k, cs);
  conv1d(xr, cs, L.convW, L.convB, ur, 1, E, K);
  const [hb, ub, zb] = [putBuf(k, h), k.alloc(E), k.alloc(E)];
  k.mixIn(hb, LW, csb, ub, zb, cfg);
  expect(relDiff(await k.read(ub, E), ur)).toBeLessThan(1e-5);
  expect(relDiff(await k.read(zb, E), zr)).toBeLessThan(1e-5);
  expect(relDiff(await k.read(csb, E * (K - 1)), cs)).toBeLessThan(1e-5);
  return hb;
}

/** norm_gemv (final RMSNorm → LM head [V, D], random with `seed`) for `h` against the reference on `weight(head)`. */
async function checkNormHead(k: WebGPUKernels, cfg: MambaConfig, h: Float32Array, hb: GpuBuf, weight: (m: Float32Array) => Float32Array, seed: number): Promise<void> {
  const { dModel: D, vocabSize: V } = cfg;
  const [head, g] = [rand(V * D, seed), rand(D, seed + 1, 0.5, 1.5)];
  const xn = new Float32Array(D);
  const lr = new Float32Array(V);
  rmsnorm(h, g, xn, 1, D, cfg.eps);
  matmul(xn, weight(head), undefined, lr, 1, D, V, false);
  const lb = k.alloc(V);
  k.normHead(hb, k.upload(g, 1, D), k.upload(head, V, D), lb, cfg);
  expect(relDiff(await k.read(lb, V), lr)).toBeLessThan(1e-5);
}


type Variant = { name: string; dtype: 'f32' | 'f16'; shaderF16: boolean };
const variants: Variant[] = [
  { name: 'f32', dtype: 'f32', shaderF16: false },
  { name: 'f16 packed', dtype: 'f16', shaderF16: false },
  ...(ctx?.hasF16 ? [{ name: 'f16 shader-f16', dtype: 'f16' as const, shaderF16: true }] : []),
];

describe('half conversion', () => {
  test('round-to-nearest-even, subnormals, overflow, all halves round-trip', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x3ff) continue; // NaN payloads
      expect(f32ToF16Bits(f16BitsToF32(h))).toBe(h);
    }
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -25)).toBe(0); // tie → even (zero)
    expect(f32ToF16Bits(2 ** -25 * 1.5)).toBe(1);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
  });
});

describe('wgsl preprocessor', () => {
  test('#if/#elif/#else and {{NAME}}', () => {
    const src = '#if A\na\n#elif B\nb\n#else\nc\n#endif\nn={{N}}';
    expect(preprocess(src, { A: true, N: 3 })).toBe('a\nn=3');
    expect(preprocess(src, { B: true, N: 3 })).toBe('b\nn=3');
    expect(preprocess(src, { N: 3 })).toBe('c\nn=3');
    expect(() => preprocess('{{X}}', {})).toThrow();
  });
  test('#include inserts another file, only in live blocks', () => {
    const files: Record<string, string> = { common: 'fn f() {}' };
    const include = (name: string) => files[name] ?? '';
    expect(preprocess('#include common\nx', {}, include)).toBe('fn f() {}\nx');
    expect(preprocess('#if A\n#include common\n#endif\nx', {}, include)).toBe('x');
    expect(() => preprocess('#include common', {})).toThrow(/include/);
    // an included file's own #if blocks follow the defines
    files.quant = '#if Q4\nq4\n#else\nq8\n#endif';
    expect(preprocess('#include quant\nx', { Q4: true }, include)).toBe('q4\nx');
    expect(preprocess('#include quant\nx', {}, include)).toBe('q8\nx');
  });
});

describe.skipIf(!ctx).each(variants)('webgpu kernels ($name)', (v) => {
  const mk = (maxBindingBytes?: number, gemvLanes = 32, flatGemm = false) =>
    new WebGPUKernels(ctx!.device, shaders, { dtype: v.dtype, shaderF16: v.shaderF16, maxBindingBytes, gemvLanes, flatGemm });
  // lanes: invocations per row in the decode GEMV (32 = GPU layout); flat: the software prefill GEMM.
  // Weights the GPU stores in f16 are compared with the reference run on the same rounded values.
  const wq = (x: Float32Array) => (v.dtype === 'f16' ? roundToF16(x) : x);
  const tol = 2e-5;

  test.each([
    { T: 1, K: 37, N: 71, bias: true, acc: false },
    { T: 1, K: 128, N: 256, bias: false, acc: true },
    { T: 1, K: 1, N: 3, bias: true, acc: true },
    { T: 1, K: 37, N: 300, bias: true, acc: true, lanes: 1 },
    { T: 1, K: 130, N: 71, bias: false, acc: false, lanes: 4 },
    { T: 1, K: 64, N: 33, bias: true, acc: true, lanes: 1 },
    { T: 1, K: 4, N: 9, bias: false, acc: false, lanes: 2 },
    { T: 2, K: 37, N: 71, bias: true, acc: true },
    { T: 33, K: 130, N: 65, bias: false, acc: false },
    { T: 64, K: 64, N: 200, bias: true, acc: false },
    { T: 5, K: 37, N: 71, bias: true, acc: true, flat: true },
    { T: 64, K: 130, N: 65, bias: false, acc: false, flat: true },
  ] as { T: number; K: number; N: number; bias: boolean; acc: boolean; lanes?: number; flat?: boolean }[])(
    'matmul T=$T K=$K N=$N bias=$bias accumulate=$acc lanes=$lanes flat=$flat',
    async ({ T, K, N, bias, acc, lanes, flat }) => {
      const k = mk(undefined, lanes, flat);
      const x = rand(T * K, 1 + K);
      const w = rand(N * K, 2 + N);
      const b = rand(N, 3);
      const init = rand(T * N, 4);
      const want = init.slice();
      matmul(x, wq(w), bias ? b : undefined, want, T, K, N, acc);
      const xb = k.alloc(T * K);
      k.write(xb, x);
      const ob = k.alloc(T * N);
      k.write(ob, init);
      k.matmul(xb, k.upload(w, N, K), bias ? k.upload(b, 1, N) : undefined, ob, T, K, N, acc);
      expect(relDiff(await k.read(ob, T * N), want)).toBeLessThan(tol);
      k.release();
    },
  );

  test.each([1, 5])('matmul over a weight split into parts (T=%i)', async (T) => {
    const K = 19;
    const N = 50;
    const ks = K + 1;
    const k = mk(ks * (v.dtype === 'f16' ? 2 : 4) * 16); // 16 rows per part: 4 parts
    const w = rand(N * K, 8);
    const wb = await checkSplitMatmul(k, T, K, N, rand(T * K, 7), w, wq(w), tol);
    // the split embedding table: every part writes only its own tokens
    const tokens = Uint32Array.from({ length: T }, (_, i) => (i * 17 + 3) % N);
    const wantE = new Float32Array(T * K);
    embed(tokens, wq(w), wantE, T, K);
    const eb = k.alloc(T * K);
    k.embed(tokens, wb, eb, T, K);
    expect(await k.read(eb, T * K)).toEqual(wantE);
    k.release();
  });

  test.each([
    { T: 1, D: 67 },
    { T: 6, D: 64 },
  ])('embed T=$T D=$D', async ({ T, D }) => {
    const k = mk();
    const V = 23;
    const table = rand(V * D, 11);
    const tokens = Uint32Array.from({ length: T }, (_, i) => (i * 5 + 22) % V);
    const want = new Float32Array(T * D);
    embed(tokens, wq(table), want, T, D);
    const out = k.alloc(T * D);
    k.embed(tokens, k.upload(table, V, D), out, T, D);
    expect(await k.read(out, T * D)).toEqual(want);
    k.release();
  });

  test.each([
    { T: 1, dim: 67 },
    { T: 3, dim: 768 },
    { T: 64, dim: 5 },
  ])('rmsnorm T=$T dim=$dim', async ({ T, dim }) => {
    const k = mk();
    const x = rand(T * dim, 21, -3, 3);
    const w = rand(dim, 22);
    const want = new Float32Array(T * dim);
    rmsnorm(x, w, want, T, dim, 1e-5);
    const xb = k.alloc(T * dim);
    k.write(xb, x);
    const out = k.alloc(T * dim);
    k.rmsnorm(xb, k.upload(w, 1, dim), out, T, dim, 1e-5);
    expect(relDiff(await k.read(out, T * dim), want)).toBeLessThan(1e-5);
    k.release();
  });

  test.each([
    { T: 1, R: 4, N: 16 },
    { T: 9, R: 48, N: 16 },
    { T: 2, R: 5, N: 300 },
  ])('normSegments T=$T segments R|N|N = $R|$N|$N', async ({ T, R, N }) => {
    const k = mk();
    const x = rand(T * (R + 2 * N), 23, -3, 3);
    const want = x.slice();
    normSegments(want, T, [R, N, N], 1e-6);
    const xb = k.alloc(x.length);
    k.write(xb, x);
    k.normSegments(xb, T, [R, N, N], 1e-6);
    expect(relDiff(await k.read(xb, x.length), want)).toBeLessThan(1e-5);
    k.release();
  });

  test.each([
    { T: 1, E: 70, K: 4, bias: true },
    { T: 7, E: 70, K: 4, bias: false },
    { T: 64, E: 129, K: 3, bias: true },
  ])('conv1d T=$T E=$E K=$K bias=$bias, continuing the state twice', async ({ T, E, K, bias }) => {
    const k = mk();
    const w = rand(E * K, 31);
    const b = rand(E, 32);
    const state = rand(E * (K - 1), 33);
    const wantState = state.slice();
    const sb = k.alloc(E * (K - 1));
    k.write(sb, state);
    const wb = k.upload(w, E, K);
    const bb = bias ? k.upload(b, 1, E) : undefined;
    for (const seed of [34, 35]) {
      const x = rand(T * E, seed, -2, 2);
      const want = new Float32Array(T * E);
      conv1d(x, wantState, w, bias ? b : undefined, want, T, E, K);
      const xb = k.alloc(T * E);
      k.write(xb, x);
      const out = k.alloc(T * E);
      k.conv1d(xb, sb, wb, bb, out, T, E, K);
      expect(relDiff(await k.read(out, T * E), want)).toBeLessThan(1e-5);
      expect(relDiff(await k.read(sb, E * (K - 1)), wantState)).toBe(0);
    }
    k.release();
  });

  test.each([
    { T: 1, E: 70, R: 5, N: 16 },
    { T: 9, E: 70, R: 5, N: 16 },
    { T: 64, E: 130, R: 8, N: 4 },
  ])('fused scan T=$T E=$E R=$R N=$N, continuing the state', async ({ T, E, R, N }) => {
    const k = mk();
    const cfg = { dInner: E, dtRank: R, dState: N } as MambaConfig;
    // Δ spans softplus's regimes (tiny, ~1, linear above 20) via a wide dt_proj bias.
    const L = {
      dtProjW: rand(E * R, 41, -0.5, 0.5),
      dtProjB: rand(E, 42, -12, 22),
      A: rand(E * N, 43, -8, -0.05),
      D: rand(E, 44),
    } as LayerWeights;
    const LW = {
      dtProjW: k.upload(L.dtProjW, E, R),
      dtProjB: k.upload(L.dtProjB, 1, E),
      A: k.upload(L.A, E, N),
      D: k.upload(L.D, 1, E),
    } as LayerWeights<GpuWeight>;
    const h = rand(E * N, 45);
    const wantH = h.slice();
    const hb = k.alloc(E * N);
    k.write(hb, h);
    for (const seed of [50, 60]) {
      const u = rand(T * E, seed, -2, 2);
      const dbc = rand(T * (R + 2 * N), seed + 1, -1, 1);
      const z = rand(T * E, seed + 2, -4, 4);
      const want = new Float32Array(T * E);
      scan(u, dbc, z, L, wantH, want, T, cfg);
      const [ub, db, zb, ob] = [k.alloc(T * E), k.alloc(dbc.length), k.alloc(T * E), k.alloc(T * E)];
      k.write(ub, u);
      k.write(db, dbc);
      k.write(zb, z);
      k.scan(ub, db, zb, LW, hb, ob, T, cfg);
      expect(relDiff(await k.read(ob, T * E), want)).toBeLessThan(1e-5);
      expect(relDiff(await k.read(hb, E * N), wantH)).toBeLessThan(1e-5);
    }
    k.release();
  });

  // The fused decode kernels (step.wgsl), each alone against the reference ops it fuses. With 32
  // lanes a row, scan_step sums Δ over 16 lanes a channel in workgroup memory: on OpenGL ES
  // (llvmpipe) the second sum once overwrote the first before every lane had read it (1e-1 off).
  test.each([1, 4, 32])('fused decode step kernels, gemv lanes %i', async (lanes) => {
    const k = mk(undefined, lanes);
    const [D, E, N, R, K, V] = [64, 128, 16, 4, 4, 256];
    const cfg = { dModel: D, dInner: E, dState: N, dtRank: R, dConv: K, vocabSize: V, eps: 1e-5, nLayer: 1 } as MambaConfig;
    expect(k.fusedStep(cfg)).toBeDefined();
    const L = {
      norm: rand(D, 1, 0.5, 1.5), inProjX: rand(E * D, 2), inProjZ: rand(E * D, 3), convW: rand(E * K, 4), convB: rand(E, 5),
      inProjXBias: rand(E, 12), inProjZBias: rand(E, 13), dtProjW: rand(E * R, 6, -0.5, 0.5), dtProjB: rand(E, 7, -4, 1),
      A: rand(E * N, 8, -8, -0.05), D: rand(E, 9), xProj: rand((R + 2 * N) * E, 10), outProj: rand(D * E, 11),
    } as LayerWeights;
    const shapes: Record<string, [number, number]> = { inProjX: [E, D], inProjZ: [E, D], convW: [E, K], dtProjW: [E, R], A: [E, N], xProj: [R + 2 * N, E], outProj: [D, E] };
    const LW = Object.fromEntries(
      Object.entries(L).map(([n, x]) => [n, k.upload(x, ...(shapes[n] ?? [1, x.length]))]),
    ) as unknown as LayerWeights<GpuWeight>;
    const h = rand(D, 20);
    const hb = await checkMixIn(k, cfg, L, LW, h, wq, 21);
    // scan_step: dt_proj → softplus → scan → D skip → gate, and the state
    const [u, z, dbc, hs] = [rand(E, 30, -2, 2), rand(E, 31, -4, 4), rand(R + 2 * N, 32), rand(E * N, 33)];
    const [hsb, yb] = [putBuf(k, hs), k.alloc(E)];
    const yr = new Float32Array(E);
    scan(u, dbc, z, L, hs, yr, 1, cfg);
    k.scanStep(putBuf(k, u), putBuf(k, dbc), putBuf(k, z), LW, hsb, yb, cfg);
    expect(relDiff(await k.read(yb, E), yr)).toBeLessThan(1e-5);
    expect(relDiff(await k.read(hsb, E * N), hs)).toBeLessThan(1e-5);
    await checkNormHead(k, cfg, h, hb, wq, 40);
    k.release();
  });

  test.each([1, 7, 40])('topk k=%i matches a stable sort, ties by index', async (kk) => {
    const k = mk();
    const V = 1000;
    const x = rand(2 * V, 72 + kk);
    for (const i of [5, 300, 999, 17]) x[V + i] = 3; // a four-way tie at the top
    const b = k.alloc(2 * V);
    k.write(b, x);
    const row = Array.from(x.subarray(V), (value, index) => ({ index, value })).sort((a, c) => c.value - a.value || a.index - c.index);
    expect(await k.topk(b, V, kk, V)).toEqual(row.slice(0, kk));
    k.release();
  });

  test('argmax picks the first of the largest logits', async () => {
    const k = mk();
    const V = 1000;
    const x = rand(3 * V, 71);
    x[V + 777] = 5;
    x[V + 901] = 5;
    const b = k.alloc(3 * V);
    k.write(b, x);
    expect(await k.argmax(b, V, V)).toEqual({ index: 777, value: 5 });
    let best = 0;
    for (let i = 1; i < V; i++) if (x[i] > x[best]) best = i;
    expect((await k.argmax(b, V, 0)).index).toBe(best);
    k.release();
  });
});

// q8 / q4: the kernels that read projection matrices (matmul's GEMV, word-per-lane `gemv_q`, tiled
// and flat GEMM; the fused step's mix_in and norm_gemv). Sizes cover a partial last block (K = 40,
// 72, 130), an odd K (the pair GEMV), several steps a lane (K = 1024 with 4 lanes) and, for q4, an
// odd number of blocks (two f16 scales a word, the second one padding).
describe.skipIf(!ctx).each(['q8', 'q4'] as const)('webgpu kernels (%s)', (fmt) => {
  // One pipeline cache for the lot: on a software adapter compiling a module costs more than a test.
  const pipelineCache = { modules: new Map(), pipelines: new Map() };
  const mk = (maxBindingBytes?: number, gemvLanes = 32, flatGemm = false) =>
    new WebGPUKernels(ctx!.device, shaders, { dtype: fmt, shaderF16: false, maxBindingBytes, gemvLanes, flatGemm, pipelineCache });
  const tol = 2e-5;

  test.each([
    { T: 1, K: 64, N: 33, lanes: 32 },
    { T: 1, K: 40, N: 71, lanes: 4 },
    { T: 1, K: 1024, N: 9, lanes: 4 },
    { T: 1, K: 96, N: 300, lanes: 1 },
    { T: 1, K: 37, N: 9, lanes: 2 },
    { T: 2, K: 72, N: 65 },
    { T: 33, K: 130, N: 65 },
    { T: 5, K: 37, N: 71, flat: true },
    { T: 6, K: 160, N: 20, flat: true },
  ] as { T: number; K: number; N: number; lanes?: number; flat?: boolean }[])('matmul T=$T K=$K N=$N lanes=$lanes flat=$flat', async ({ T, K, N, lanes, flat }) => {
    const k = mk(undefined, lanes, flat);
    const x = rand(T * K, 101 + K);
    const w = rand(N * K, 102 + N);
    const b = rand(N, 103);
    const init = rand(T * N, 104);
    const want = init.slice();
    matmul(x, storedMatrix(w, K, fmt), b, want, T, K, N, true);
    const xb = k.alloc(T * K);
    k.write(xb, x);
    const ob = k.alloc(T * N);
    k.write(ob, init);
    const wb = k.upload(w, N, K);
    k.matmul(xb, wb, k.upload(b, 1, N), ob, T, K, N, true);
    expect(relDiff(await k.read(ob, T * N), want)).toBeLessThan(tol);
    // What is stored: per row, the scale words and 8 (q8) or 4 (q4) quant words a block of 32.
    const { ss, rs, blocks } = quantLayout(fmt, K);
    expect(rs).toBe(ss + blocks * (fmt === 'q8' ? 8 : 4));
    expect((wb as GpuWeight).mat!.parts[0].buffer.size).toBe(Math.ceil((N * rs * 4) / 16) * 16);
    k.release();
  });

  test('the values are src/quant.ts\'s: a row of 1024 weights reads 4.5 (q4) / 9 (q8) bits a weight', () => {
    const { rs } = quantLayout(fmt, 1024);
    expect((rs * 32) / 1024).toBe(fmt === 'q4' ? 4.5 : 9);
    // A weight equal to its block's extreme is stored exactly (q4: m → nibble 0; q8: ±127 · scale).
    const w = rand(64, 5);
    w[3] = 2;
    const back = storedMatrix(w, 64, fmt);
    expect(back[3]).toBe(2);
    expect(relDiff(back, w)).toBeLessThan(fmt === 'q4' ? 0.15 : 0.01);
  });

  test.each([1, 5])('matmul over a weight split into parts (T=%i)', async (T) => {
    const K = 72;
    const N = 50;
    const k = mk(quantLayout(fmt, K).rs * 4 * 16); // 16 rows per part: 4 parts
    const w = rand(N * K, 108);
    await checkSplitMatmul(k, T, K, N, rand(T * K, 107), w, storedMatrix(w, K, fmt), tol);
    k.release();
  });

  // mix_in reads both in_proj halves as q8 / q4 words (its norm sums Σ h² over the words' quads);
  // norm_gemv is given a quantized head here (the backend stores the head f16, `tableFormat`).
  test.each([32])('fused decode step: mix_in and norm_gemv, gemv lanes %i', async (lanes) => {
    const k = mk(undefined, lanes);
    const [D, E, N, R, K, V] = [80, 160, 16, 4, 4, 96]; // D = 80: 2.5 blocks a row
    const cfg = { dModel: D, dInner: E, dState: N, dtRank: R, dConv: K, vocabSize: V, eps: 1e-5, nLayer: 1 } as MambaConfig;
    expect(k.fusedStep(cfg)).toBeDefined();
    const L = { norm: rand(D, 111, 0.5, 1.5), inProjX: rand(E * D, 112), inProjZ: rand(E * D, 113), convW: rand(E * K, 114), convB: rand(E, 115), inProjXBias: rand(E, 116), inProjZBias: rand(E, 117) };
    const up = (x: Float32Array, rows: number, cols: number) => k.upload(x, rows, cols);
    const LW = {
      norm: up(L.norm, 1, D), inProjX: up(L.inProjX, E, D), inProjZ: up(L.inProjZ, E, D), convW: up(L.convW, E, K),
      convB: up(L.convB, 1, E), inProjXBias: up(L.inProjXBias, 1, E), inProjZBias: up(L.inProjZBias, 1, E),
    } as unknown as LayerWeights<GpuWeight>;
    const h = rand(D, 120, -2, 2);
    const weight = (w: Float32Array) => storedMatrix(w, D, fmt);
    await checkNormHead(k, cfg, h, await checkMixIn(k, cfg, L, LW, h, weight, 121), weight, 140);
    k.release();
  });
});
