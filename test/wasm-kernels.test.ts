/**
 * Each AssemblyScript kernel (build/mamba.wasm) against its readable specification in src/reference,
 * on random inputs: odd sizes (not multiples of 4 or 32), T = 1 (decode) and T > 1 (prefill), arbitrary
 * row splits through direct calls, and thread splits through the job runner with a worker.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { MambaConfig } from '../src/config.js';
import { conv1d as refConv } from '../src/reference/conv.js';
import { embed as refEmbed } from '../src/reference/embed.js';
import { matmul as refMatmul } from '../src/reference/matmul.js';
import { normSegments as refNormSegments, rmsnorm as refNorm } from '../src/reference/norm.js';
import { scan as refScan } from '../src/reference/scan.js';
import type { LayerWeights } from '../src/weights.js';
import { dequantizeQ4 } from '../src/quant.js';
import { canTile, DTYPE_CODE, KERNEL, QBLOCK, quantizeQ4, quantizeQ8, SCALE_UNIT, tensorBytes, TILE_UNIT, TILED, tileRows, toHalf, toHalfArray, type DtypeCode } from '../src/wasm/layout.js';
import { imports, relaxedDisagrees, WasmRuntime } from '../src/wasm/runtime.js';

/** The kernels as exported by the module (pointer arguments are byte offsets). */
interface Exports {
  matmul(dtype: number, x: number, ldx: number, w: number, scales: number, bias: number, out: number, ldo: number, T: number, K: number, r0: number, r1: number, acc: number, scratch: number): void;
  rmsnorm(x: number, w: number, out: number, dim: number, eps: number, t0: number, t1: number): void;
  normSegments(x: number, s0: number, s1: number, s2: number, eps: number, t0: number, t1: number): void;
  conv1d(x: number, state: number, w: number, bias: number, out: number, T: number, E: number, K: number, e0: number, e1: number): void;
  scan(u: number, dbc: number, z: number, dtW: number, dtB: number, A: number, D: number, state: number, out: number, T: number, E: number, R: number, N: number, e0: number, e1: number): void;
  embed(dtype: number, tokens: number, table: number, scales: number, out: number, D: number, t0: number, t1: number): void;
  argmax(p: number, n: number): number;
  topk(p: number, n: number, k: number, idx: number, val: number): number;
}

let seed = 12345;
function rand(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 4294967296;
}
const randn = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);

/** Largest |a − b| relative to max(1, max|b|). */
function relErr(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  let m = 1;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function fromHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

let rt: WasmRuntime; // 1 thread: direct calls with explicit row ranges
let rt2: WasmRuntime; // 2 threads: the job runner with a worker
let k: Exports;
let scratch: number;

beforeAll(async () => {
  const opts = { reserveBytes: 8 << 20, growBytes: 16 << 20, scratchBytesPerThread: 16 * 1024 };
  rt = await WasmRuntime.create({ ...opts, threads: 1 });
  rt2 = await WasmRuntime.create({ ...opts, threads: 2 });
  k = rt.exports as unknown as Exports;
  scratch = rt.allocBytes(16 * 1024);
});
afterAll(() => {
  rt?.dispose();
  rt2?.dispose();
});

/** What the upload helpers need of a runtime: an allocator and views (a bare instance has them too). */
interface Mem {
  allocBytes(bytes: number): number;
  views(): { u8: Uint8Array; f32: Float32Array };
}

function put(r: Mem, data: Float32Array): number {
  const p = r.allocBytes(data.length * 4);
  r.views().f32.set(data, p >> 2);
  return p;
}
const get = (r: Mem, p: number, n: number) => r.views().f32.slice(p >> 2, (p >> 2) + n);

/** Uploads w [N, K] as `dtype`; returns pointers and the float32 values the kernel actually sees. */
function upload(r: Mem, w: Float32Array, N: number, K: number, dtype: DtypeCode) {
  const size = tensorBytes(dtype, N, K);
  const ptr = r.allocBytes(size.data);
  const scales = size.scales ? r.allocBytes(size.scales) : 0;
  const v = r.views();
  const seen = new Float32Array(N * K);
  if (dtype === DTYPE_CODE.f32) {
    v.f32.set(w, ptr >> 2);
    seen.set(w);
  } else if (dtype === DTYPE_CODE.f16) {
    const h = new Uint16Array(v.u8.buffer, ptr, N * K);
    toHalfArray(w, h);
    for (let i = 0; i < N * K; i++) seen[i] = fromHalf(h[i]);
  } else if (dtype === DTYPE_CODE.q4) {
    const q = new Uint8Array(v.u8.buffer, ptr, size.data);
    const s = new Uint16Array(v.u8.buffer, scales, size.scales / 2);
    quantizeQ4(w, N, K, q, s);
    seen.set(dequantizeQ4(q, s, N, K));
  } else {
    const q = new Int8Array(v.u8.buffer, ptr, size.data);
    const s = new Float32Array(v.u8.buffer, scales, size.scales / 4);
    quantizeQ8(w, N, K, q, s);
    const blocks = Math.ceil(K / QBLOCK);
    for (let n = 0; n < N; n++) for (let c = 0; c < K; c++) seen[n * K + c] = q[n * blocks * QBLOCK + c] * s[n * blocks + Math.floor(c / QBLOCK)];
  }
  return { ptr, scales, seen };
}

/** A row-major upload (`upload`) re-laid out in tiles of 4 rows, as the backend stores f16 / q8 / q4 matrices. */
function tile(r: Mem, u: { ptr: number; scales: number; seen: Float32Array }, N: number, K: number, dtype: DtypeCode) {
  const flat = tensorBytes(dtype, N, K);
  const size = tensorBytes(dtype, N, K, true);
  const ptr = r.allocBytes(size.data);
  const scales = size.scales ? r.allocBytes(size.scales) : 0;
  const v = r.views(); // after the allocations: growing memory detaches older views
  const src = v.u8.slice(u.ptr, u.ptr + flat.data);
  tileRows(src, N, flat.data / N, TILE_UNIT[dtype as keyof typeof TILE_UNIT], new Uint8Array(v.u8.buffer, ptr, size.data));
  if (scales) tileRows(v.u8.slice(u.scales, u.scales + flat.scales), N, flat.scales / N, SCALE_UNIT[dtype as 2 | 3], new Uint8Array(v.u8.buffer, scales, size.scales));
  return { ptr, scales, seen: u.seen };
}

describe('weight formats', () => {
  test('toHalf rounds to nearest even, flushes subnormals to zero, saturates', () => {
    for (const v of [0, 1, -2.5, 65504, 6.2e-5, 0.1, -0.333, 1234.567]) {
      const h = toHalf(v);
      expect(Math.abs(fromHalf(h) - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11);
    }
    expect(toHalf(1e6)).toBe(0x7bff);
    expect(toHalf(-1e6)).toBe(0xfbff);
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(toHalf(-0)).toBe(0x8000);
    expect(toHalf(3e-5)).toBe(0); // f16 subnormal range → ±0 (kernels never see denormals)
    expect(toHalf(-1e-8)).toBe(0x8000);
    expect(toHalf(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up to the smallest normal
    expect(toHalf(2 ** -14 - 2 ** -24)).toBe(0);
    u32[0] = 0x38800000; // 2^-14
    expect(toHalf(f32[0])).toBe(0x0400);
  });
});

describe('matmul', () => {
  const shapes: [T: number, K: number, N: number][] = [
    [1, 37, 13],
    [1, 64, 8],
    [1, 7, 5],
    [1, 100, 33],
    [3, 70, 9],
    [2, 33, 17],
    [5, 96, 6],
    [64, 45, 21],
  ];
  // f16 / q8 / q4 matrices also as the backend stores them: tiles of 4 rows (layout.ts `tileRows`).
  const formats = [DTYPE_CODE.f32, DTYPE_CODE.f16, DTYPE_CODE.q8, DTYPE_CODE.q4].flatMap((dtype) => [
    { dtype, tiled: false },
    ...(dtype === DTYPE_CODE.f32 ? [] : [{ dtype, tiled: true }]),
  ]);
  for (const { dtype, tiled } of formats) {
    for (const [T, K, N] of shapes) {
      if (tiled && !canTile(dtype, K)) continue;
      test(`dtype ${dtype}${tiled ? ' tiled' : ''} T=${T} K=${K} N=${N}`, () => {
        const x = randn(T * K, 2);
        const w = randn(N * K, 0.5);
        const bias = randn(N);
        const init = randn(T * N);
        const { ptr, scales, seen } = tiled ? tile(rt, upload(rt, w, N, K, dtype), N, K, dtype) : upload(rt, w, N, K, dtype);
        // q8 decode quantises x to 14 bits, q4 decode to 8 bits (per 32-block; bounded exactly below)
        const tol = dtype === DTYPE_CODE.q4 && T === 1 ? 3e-3 : dtype === DTYPE_CODE.q8 && T === 1 ? 1e-4 : 2e-6;
        for (const accumulate of [false, true]) {
          for (const withBias of [false, true]) {
            const want = init.slice();
            refMatmul(x, seen, withBias ? bias : undefined, want, T, K, N, accumulate);
            const px = put(rt, x), pb = put(rt, bias), po = put(rt, init);
            // An arbitrary split of the rows: [0, a) then [a, N).
            const a = Math.floor(N / 3);
            const code = dtype | (tiled ? TILED : 0);
            k.matmul(code, px, K, ptr, scales, withBias ? pb : 0, po, N, T, K, 0, a, accumulate ? 1 : 0, scratch);
            k.matmul(code, px, K, ptr, scales, withBias ? pb : 0, po, N, T, K, a, N, accumulate ? 1 : 0, scratch);
            expect(relErr(get(rt, po, T * N), want)).toBeLessThan(tol * Math.sqrt(K));
            for (const p of [px, pb, po]) rt.free(p);
          }
        }
      });
    }
  }

  test('row stride of x (ldx > K) and of out (ldo > N): the dt_proj use inside scan', () => {
    const T = 3, K = 5, ldx = 9, N = 6, ldo = 11;
    const x = randn(T * ldx), w = randn(N * K), out = new Float32Array(T * ldo);
    const px = put(rt, x), pw = put(rt, w), po = put(rt, out);
    k.matmul(0, px, ldx, pw, 0, 0, po, ldo, T, K, 0, N, 0, scratch);
    const got = get(rt, po, T * ldo);
    for (let t = 0; t < T; t++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let c = 0; c < K; c++) s += x[t * ldx + c] * w[n * K + c];
        expect(got[t * ldo + n]).toBeCloseTo(s, 5);
      }
      expect(got[t * ldo + N]).toBe(0); // nothing written beyond N
    }
  });

  test('split over two threads by the job runner', () => {
    for (const dtype of [DTYPE_CODE.f32, DTYPE_CODE.f16, DTYPE_CODE.q8, DTYPE_CODE.q4]) {
      for (const T of [1, 4]) {
        const K = 75, N = 37;
        const x = randn(T * K), w = randn(N * K), want = new Float32Array(T * N);
        const { ptr, scales, seen } = upload(rt2, w, N, K, dtype);
        refMatmul(x, seen, undefined, want, T, K, N, false);
        const px = put(rt2, x), po = put(rt2, new Float32Array(T * N));
        rt2.run(KERNEL.MATMUL, [dtype, px, K, ptr, scales, 0, po, N, T, K, N, 0], 2);
        expect(relErr(get(rt2, po, T * N), want)).toBeLessThan(dtype === DTYPE_CODE.q4 && T === 1 ? 1e-2 : 1e-4); // q4 decode: int8 x
      }
    }
  });
});

/**
 * build/mamba-relaxed.wasm on a memory of its own (Node 20 validates relaxed SIMD behind a V8 flag, which
 * can be set at run time; Chromium and Deno have it on). Returns its kernels, an allocator and a scratch.
 */
function relaxedInstance(): { mem: Mem; k: Exports; scratch: number } {
  setFlagsFromString('--experimental-wasm-relaxed-simd');
  const bytes = readFileSync(new URL('../build/mamba-relaxed.wasm', import.meta.url));
  expect(WebAssembly.validate(bytes)).toBe(true);
  const memory = new WebAssembly.Memory({ initial: 1024, maximum: 1024, shared: true }); // 64 MiB, zeroed
  const ex = new WebAssembly.Instance(new WebAssembly.Module(bytes), imports(memory)).exports as unknown as Exports & { heapBase(): number };
  let top = (ex.heapBase() + 1024 + 63) & ~63;
  const mem: Mem = {
    allocBytes(n: number) {
      const p = top;
      top += (n + 63) & ~63;
      return p;
    },
    views: () => ({ u8: new Uint8Array(memory.buffer), f32: new Float32Array(memory.buffer) }),
  };
  return { mem, k: ex, scratch: mem.allocBytes(64 * 1024) };
}

/**
 * q4 decode takes integer dot products against x quantised per 32-block to int8 (L = 127 levels each
 * side, as llama.cpp's q8_0 activations; the SIMD128 build keeps them in pre-shifted i16, the relaxed build
 * as bytes): each x moves by at most half a step, amax(block) / (2L), so |got − exact over the dequantised
 * weights| ≤ Σ_k |w[n, k]| · amax(block of k) / (2L), plus f32 rounding. Both builds are held to that
 * bound, and checked to really round x to 8 bits (their error exceeds what 14-bit x would allow).
 */
describe('q4 GEMV: integer dot products, SIMD128 and relaxed builds', () => {
  let relaxed: ReturnType<typeof relaxedInstance>;
  beforeAll(() => {
    relaxed = relaxedInstance();
  });
  const shapes: [K: number, N: number][] = [[768, 37], [1536, 16], [773, 9], [45, 6]];
  for (const build of ['simd128', 'relaxed'] as const) {
    for (const [K, N] of shapes) {
      for (const tiled of [false, true]) {
        test(`${build} K=${K} N=${N}${tiled ? ' tiled' : ''}`, () => {
          const { mem, k: kk, scratch: sc } = build === 'relaxed' ? relaxed : { mem: rt as Mem, k, scratch };
          const L = 127;
          const x = randn(K, 2);
          x[K >> 1] = 25; // an outlier: its block's step is coarse, the others' are not
          const w = randn(N * K, 0.5);
          const u = upload(mem, w, N, K, DTYPE_CODE.q4);
          const { ptr, scales, seen } = tiled ? tile(mem, u, N, K, DTYPE_CODE.q4) : u;
          const want = new Float32Array(N);
          refMatmul(x, seen, undefined, want, 1, K, N, false);
          const px = put(mem, x), po = put(mem, new Float32Array(N));
          kk.matmul(DTYPE_CODE.q4 | (tiled ? TILED : 0), px, K, ptr, scales, 0, po, N, 1, K, 0, N, 0, sc);
          const got = get(mem, po, N);
          let worst = 0; // largest error as a share of its bound
          for (let n = 0; n < N; n++) {
            let bound = 0, mag = 0;
            for (let b = 0; b * QBLOCK < K; b++) {
              let amax = 0;
              for (let j = b * QBLOCK; j < Math.min(K, (b + 1) * QBLOCK); j++) amax = Math.max(amax, Math.abs(x[j]));
              for (let j = b * QBLOCK; j < Math.min(K, (b + 1) * QBLOCK); j++) {
                bound += (Math.abs(seen[n * K + j]) * amax) / (2 * L);
                mag += Math.abs(seen[n * K + j] * x[j]);
              }
            }
            const err = Math.abs(got[n] - want[n]);
            expect(err).toBeLessThanOrEqual(bound + 2e-6 * mag);
            worst = Math.max(worst, err / bound);
          }
          // 14-bit x would keep every error below 127/8191 of the int8 bound.
          if (K >= 768) expect(worst).toBeGreaterThan(127 / 8191);
        });
      }
    }
  }

  test('relaxed build: q4 prefill (T > 1, dequantised tiles) and tiled embedding rows are exact', () => {
    const { mem, k: kk, scratch: sc } = relaxed;
    const T = 5, K = 100, N = 13;
    const x = randn(T * K), w = randn(N * K, 0.5);
    const { ptr, scales, seen } = tile(mem, upload(mem, w, N, K, DTYPE_CODE.q4), N, K, DTYPE_CODE.q4);
    const want = new Float32Array(T * N);
    refMatmul(x, seen, undefined, want, T, K, N, false);
    const px = put(mem, x), po = put(mem, new Float32Array(T * N));
    kk.matmul(DTYPE_CODE.q4 | TILED, px, K, ptr, scales, 0, po, N, T, K, 0, N, 0, sc);
    expect(relErr(get(mem, po, T * N), want)).toBeLessThan(2e-6 * Math.sqrt(K));
    const tokens = Uint32Array.of(12, 0, 5);
    const pt = mem.allocBytes(12);
    new Uint32Array(mem.views().u8.buffer, pt, 3).set(tokens);
    const pe = put(mem, new Float32Array(3 * K));
    kk.embed(DTYPE_CODE.q4 | TILED, pt, ptr, scales, pe, K, 0, 3);
    const rows = new Float32Array(3 * K);
    refEmbed(tokens, seen, rows, 3, K);
    expect(get(mem, pe, 3 * K)).toEqual(rows);
  });
});

test('node --experimental-wasm-relaxed-simd: the relaxed build runs on worker threads too, q4 split over them as on one', () => {
  // Workers refuse V8's --experimental-wasm-* in execArgv: the runtime must not pass them on (they hold
  // for every isolate of the process anyway). Runs the built package (dist/), as `npm test` builds first.
  const script = `
    const L = await import(${JSON.stringify(new URL('../dist/src/wasm/layout.js', import.meta.url).href)});
    const { WasmRuntime } = await import(${JSON.stringify(new URL('../dist/src/wasm/runtime.js', import.meta.url).href)});
    const rt = await WasmRuntime.create({ threads: 2, reserveBytes: 4 << 20, growBytes: 1 << 20, scratchBytesPerThread: 16384 });
    const N = 40, K = 200;
    const w = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i)), x = Float32Array.from({ length: K }, (_, i) => Math.cos(i));
    const flat = L.tensorBytes(L.DTYPE_CODE.q4, N, K), size = L.tensorBytes(L.DTYPE_CODE.q4, N, K, true);
    const rm = new Uint8Array(flat.data), rs = new Uint8Array(flat.scales);
    L.quantizeQ4(w, N, K, rm, new Uint16Array(rs.buffer));
    const ptr = rt.allocBytes(size.data), sc = rt.allocBytes(size.scales), px = rt.allocBytes(4 * K), o1 = rt.allocBytes(4 * N), o2 = rt.allocBytes(4 * N);
    const v = rt.views();
    L.tileRows(rm, N, flat.data / N, 16, new Uint8Array(v.u8.buffer, ptr, size.data));
    L.tileRows(rs, N, flat.scales / N, 2, new Uint8Array(v.u8.buffer, sc, size.scales));
    v.f32.set(x, px >> 2);
    const args = (o) => [L.DTYPE_CODE.q4 | L.TILED, px, K, ptr, sc, 0, o, N, 1, K, N, 0];
    rt.run(L.KERNEL.MATMUL, args(o1), 1);
    rt.run(L.KERNEL.MATMUL, args(o2), 4);
    const a = rt.views().f32.slice(o1 >> 2, (o1 >> 2) + N), b = rt.views().f32.slice(o2 >> 2, (o2 >> 2) + N);
    console.log(JSON.stringify({ threads: rt.threads, relaxed: rt.relaxed, note: rt.threadNote, same: a.every((t, i) => t === b[i]), nonzero: a.some((t) => t !== 0) }));
    rt.dispose();
  `;
  const r = spawnSync(process.execPath, ['--experimental-wasm-relaxed-simd', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout)).toEqual({ threads: 2, relaxed: true, note: '', same: true, nonzero: true });
});

describe('job protocol', () => {
  test('hundreds of chunked jobs back to back give the single-thread result every time', () => {
    const K = 64, N = 200;
    const x = randn(K), w = randn(N * K);
    const px = put(rt2, x), pw = put(rt2, w), want = put(rt2, new Float32Array(N)), got = put(rt2, new Float32Array(N));
    rt2.run(KERNEL.MATMUL, [DTYPE_CODE.f32, px, K, pw, 0, 0, want, N, 1, K, N, 0], 1);
    const ref = get(rt2, want, N);
    for (let i = 0; i < 500; i++) {
      rt2.views().f32.fill(0, got >> 2, (got >> 2) + N);
      rt2.run(KERNEL.MATMUL, [DTYPE_CODE.f32, px, K, pw, 0, 0, got, N, 1, K, N, 0], 1 + (i % 9));
      expect(get(rt2, got, N)).toEqual(ref);
    }
  });
});

describe('rmsnorm', () => {
  for (const [T, dim] of [[1, 5], [3, 64], [2, 37]]) {
    test(`T=${T} dim=${dim}`, () => {
      const x = randn(T * dim, 3), w = randn(dim), want = new Float32Array(T * dim);
      refNorm(x, w, want, T, dim, 1e-5);
      const px = put(rt, x), pw = put(rt, w), po = put(rt, new Float32Array(T * dim));
      k.rmsnorm(px, pw, po, dim, 1e-5, 0, 1);
      k.rmsnorm(px, pw, po, dim, 1e-5, 1, T);
      expect(relErr(get(rt, po, T * dim), want)).toBeLessThan(1e-6);
    });
  }
});

describe('normSegments (Falcon-Mamba Δ | B | C)', () => {
  for (const [T, R, N] of [[1, 4, 16], [5, 48, 16], [3, 5, 7]]) {
    test(`T=${T} segments ${R}|${N}|${N}`, () => {
      const x = randn(T * (R + 2 * N), 3), want = x.slice();
      refNormSegments(want, T, [R, N, N], 1e-6);
      const px = put(rt, x);
      k.normSegments(px, R, N, N, 1e-6, 0, 1);
      k.normSegments(px, R, N, N, 1e-6, 1, T);
      expect(relErr(get(rt, px, x.length), want)).toBeLessThan(1e-6);
      const px2 = put(rt2, x); // and split across threads by the job runner
      rt2.run(KERNEL.NORM_SEGMENTS, [px2, R, N, N, WasmRuntime.floatArg(1e-6), T], 2);
      expect(relErr(get(rt2, px2, x.length), want)).toBeLessThan(1e-6);
    });
  }
});

describe('conv1d + SiLU', () => {
  for (const [E, K, T] of [[13, 4, 1], [13, 4, 5], [37, 3, 2], [8, 4, 1], [21, 2, 9]]) {
    test(`E=${E} K=${K} T=${T}, state carried over two calls`, () => {
      const w = randn(E * K), b = randn(E), state0 = randn(E * (K - 1));
      const refState = state0.slice();
      const pw = put(rt, w), pb = put(rt, b), ps = put(rt, state0);
      for (let call = 0; call < 2; call++) {
        const x = randn(T * E, 2), want = new Float32Array(T * E);
        refConv(x, refState, w, call === 0 ? b : undefined, want, T, E, K);
        const px = put(rt, x), po = put(rt, new Float32Array(T * E));
        const a = Math.min(E, 5); // uneven channel split
        k.conv1d(px, ps, pw, call === 0 ? pb : 0, po, T, E, K, 0, a);
        k.conv1d(px, ps, pw, call === 0 ? pb : 0, po, T, E, K, a, E);
        expect(relErr(get(rt, po, T * E), want)).toBeLessThan(1e-6);
        expect(relErr(get(rt, ps, E * (K - 1)), refState)).toBe(0);
      }
    });
  }
});

describe('fused selective scan', () => {
  const cases: [E: number, N: number, R: number, T: number][] = [
    [13, 16, 3, 1],
    [40, 16, 48, 1], // decode with 130m's Δ-rank
    [13, 16, 3, 7],
    [37, 5, 4, 3],
    [8, 4, 1, 1],
    [40, 16, 8, 64],
  ];
  for (const [E, N, R, T] of cases) {
    test(`E=${E} N=${N} R=${R} T=${T}, state carried over two calls`, () => {
      const L = {
        dtProjW: randn(E * R, 0.5),
        dtProjB: Float32Array.from({ length: E }, () => -4 + 3 * rand()),
        A: Float32Array.from({ length: E * N }, () => -Math.exp(rand() * 3)),
        D: randn(E),
      } as unknown as LayerWeights;
      const cfg = { dInner: E, dtRank: R, dState: N } as MambaConfig;
      const state = randn(E * N);
      const ptr = (a: Float32Array) => put(rt, a);
      const pW = ptr(L.dtProjW), pB = ptr(L.dtProjB), pA = ptr(L.A), pD = ptr(L.D), ps = ptr(state);
      for (let call = 0; call < 2; call++) {
        // Large δ in one call drives Δ through softplus's linear range and exp(Δ·A) towards 0.
        const u = randn(T * E, 2), z = randn(T * E, 4), dbc = randn(T * (R + 2 * N), call === 0 ? 1 : 30);
        const want = new Float32Array(T * E);
        refScan(u, dbc, z, L, state, want, T, cfg);
        const pu = ptr(u), pz = ptr(z), pdbc = ptr(dbc), po = ptr(new Float32Array(T * E));
        const a = Math.min(E, 8);
        k.scan(pu, pdbc, pz, pW, pB, pA, pD, ps, po, T, E, R, N, 0, a);
        k.scan(pu, pdbc, pz, pW, pB, pA, pD, ps, po, T, E, R, N, a, E);
        expect(relErr(get(rt, po, T * E), want)).toBeLessThan(2e-5);
        expect(relErr(get(rt, ps, E * N), state)).toBeLessThan(2e-5);
      }
    });
  }

  test('split over two threads by the job runner', () => {
    const E = 50, N = 16, R = 4, T = 5;
    const L = { dtProjW: randn(E * R), dtProjB: randn(E), A: Float32Array.from({ length: E * N }, () => -1 - 10 * rand()), D: randn(E) } as unknown as LayerWeights;
    const state = randn(E * N), u = randn(T * E), z = randn(T * E), dbc = randn(T * (R + 2 * N));
    const want = new Float32Array(T * E);
    const p = (a: Float32Array) => put(rt2, a);
    const args = [p(u), p(dbc), p(z), p(L.dtProjW), p(L.dtProjB), p(L.A), p(L.D), p(state), p(new Float32Array(T * E)), T, E, R, N];
    refScan(u, dbc, z, L, state, want, T, { dInner: E, dtRank: R, dState: N } as MambaConfig);
    rt2.run(KERNEL.SCAN, args, 2);
    expect(relErr(get(rt2, args[8], T * E), want)).toBeLessThan(2e-5);
    expect(relErr(get(rt2, args[7], E * N), state)).toBeLessThan(2e-5);
  });
});

describe('embed', () => {
  for (const dtype of [DTYPE_CODE.f32, DTYPE_CODE.f16, DTYPE_CODE.q8, DTYPE_CODE.q4]) {
    test(`dtype ${dtype}, D=45`, () => {
      const V = 300, D = 45, T = 6;
      const { ptr, scales, seen } = upload(rt, randn(V * D), V, D, dtype);
      const tokens = Uint32Array.of(0, 255, 7, 299, 128, 256); // ids past a byte read as u32
      const want = new Float32Array(T * D);
      refEmbed(tokens, seen, want, T, D);
      const pt = rt.allocBytes(4 * T);
      rt.views().i32.set(tokens, pt >> 2);
      const po = put(rt, new Float32Array(T * D));
      k.embed(dtype, pt, ptr, scales, po, D, 0, T);
      expect(relErr(get(rt, po, T * D), want)).toBe(0);
    });
  }
});

describe('sample', () => {
  test('argmax and top-k match a sort', () => {
    for (const n of [1, 5, 256, 1000]) {
      const x = randn(n);
      const p = put(rt, x);
      const order = [...x.keys()].sort((a, b) => x[b] - x[a]);
      expect(k.argmax(p, n)).toBe(order[0]);
      const kk = Math.min(10, n);
      const pi = rt.allocBytes(kk * 4), pv = rt.allocBytes(kk * 4);
      expect(k.topk(p, n, 10, pi, pv)).toBe(kk);
      expect([...rt.views().i32.slice(pi >> 2, (pi >> 2) + kk)]).toEqual(order.slice(0, kk));
    }
  });
});

/**
 * A hand-assembled module with the kernels' interface whose `matmul` writes nothing: (heapBase: () → 1024,
 * matmul: 14 × i32 → (), on a shared env.memory of 4 pages).
 */
const NO_OP_MATMUL = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x16, 0x02, 0x60, 0x00, 0x01, 0x7f, 0x60, 0x0e, ...Array(14).fill(0x7f), 0x00, // types
  0x02, 0x10, 0x01, 0x03, 0x65, 0x6e, 0x76, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x03, 0x04, 0x04, // import env.memory, shared
  0x03, 0x03, 0x02, 0x00, 0x01, // functions
  0x07, 0x15, 0x02, 0x08, ...new TextEncoder().encode('heapBase'), 0x00, 0x00, 0x06, ...new TextEncoder().encode('matmul'), 0x00, 0x01, // exports
  0x0a, 0x0a, 0x02, 0x05, 0x00, 0x41, 0x80, 0x08, 0x0b, 0x02, 0x00, 0x0b, // code
]);

test('the relaxed build is used only where it computes what the SIMD128 build does (known-answer check at load)', async () => {
  setFlagsFromString('--experimental-wasm-relaxed-simd');
  const compile = (file: string) => WebAssembly.compile(readFileSync(new URL(`../build/${file}`, import.meta.url)));
  const simd128 = await compile('mamba.wasm');
  expect(await relaxedDisagrees(await compile('mamba-relaxed.wasm'), simd128)).toBe('');
  // A build whose GEMV writes nothing is refused, naming the first path it got wrong and by how much.
  expect(await relaxedDisagrees(await WebAssembly.compile(NO_OP_MATMUL), simd128)).toBe("relaxed SIMD q8 decode off by 1.0e+0 of the SIMD128 build's");
  // So is one that cannot run on shared memory (the single-thread build).
  expect(await relaxedDisagrees(await compile('mamba-st.wasm'), simd128)).toMatch(/^relaxed SIMD q8 decode failed: /);
});
