#!/usr/bin/env node
// The decode GEMV kernels alone, one thread, weights small enough to stay in cache: what each format's
// unpacking and integer dot products cost per 32-weight block of a row, without memory in the way.
// Times are the process's CPU time (user + system), so other processes on a busy machine inflate them
// less than wall time; best of 5 runs of 100 calls.
//
//   npm run build && node bench/gemv.js [--dtype q8,q4,f16] [--shape 3072x768,768x1536]
//   node --experimental-wasm-relaxed-simd bench/gemv.js     # the relaxed-SIMD build (as in Chromium / Deno)
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
const L = await import(new URL('wasm/layout.js', dist).href);
const { WasmRuntime } = await import(new URL('wasm/runtime.js', dist).href);

const { values } = parseArgs({
  options: {
    dtype: { type: 'string', default: 'q8,q4' },
    shape: { type: 'string', default: '3072x768,768x1536' },
  },
});
const shapes = values.shape.split(',').map((s) => s.split('x').map(Number));
const rt = await WasmRuntime.create({ threads: 1, reserveBytes: 64 << 20, growBytes: 64 << 20, scratchBytesPerThread: 64 * 1024 });
const k = rt.exports;
const scratch = rt.allocBytes(64 * 1024);
console.log(`build: ${rt.relaxed ? 'build/mamba-relaxed.wasm (relaxed SIMD)' : 'build/mamba.wasm (SIMD128)'}`);
console.log('dtype  [N, K]        µs/call  ns/row-block  GB/s (cache)');
let seed = 1;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) - 0.5;
for (const [N, K] of shapes) {
  const w = Float32Array.from({ length: N * K }, rand);
  const x = Float32Array.from({ length: K }, rand);
  for (const name of values.dtype.split(',')) {
    const d = L.DTYPE_CODE[name];
    const flat = L.tensorBytes(d, N, K);
    const size = L.tensorBytes(d, N, K, true);
    const ptr = rt.allocBytes(size.data);
    const sc = size.scales ? rt.allocBytes(size.scales) : 0;
    const rm = new Uint8Array(flat.data);
    const rs = new Uint8Array(flat.scales);
    if (name === 'q4') L.quantizeQ4(w, N, K, rm, new Uint16Array(rs.buffer));
    else if (name === 'q8') L.quantizeQ8(w, N, K, new Int8Array(rm.buffer), new Float32Array(rs.buffer));
    else if (name === 'f16') L.toHalfArray(w, new Uint16Array(rm.buffer));
    else throw new Error(`--dtype: q8, q4 or f16, got ${name}`);
    const v = rt.views();
    L.tileRows(rm, N, flat.data / N, L.TILE_UNIT[d], new Uint8Array(v.u8.buffer, ptr, size.data));
    if (sc) L.tileRows(rs, N, flat.scales / N, L.SCALE_UNIT[d], new Uint8Array(v.u8.buffer, sc, size.scales));
    const px = rt.allocBytes(4 * K);
    const po = rt.allocBytes(4 * N);
    rt.views().f32.set(x, px >> 2);
    const call = () => k.matmul(d | L.TILED, px, K, ptr, sc, 0, po, N, 1, K, 0, N, 0, scratch);
    for (let i = 0; i < 100; i++) call();
    let best = Infinity;
    for (let r = 0; r < 5; r++) {
      const c0 = process.cpuUsage();
      for (let i = 0; i < 100; i++) call();
      const c = process.cpuUsage(c0);
      best = Math.min(best, (c.user + c.system) / 100);
    }
    const blocks = (N * K) / 32;
    const gbps = (size.data + size.scales) / best / 1e3;
    console.log(`${name.padEnd(5)}  [${N}, ${K}]`.padEnd(20) + `${best.toFixed(1).padStart(8)}  ${((best * 1e3) / blocks).toFixed(2).padStart(12)}  ${gbps.toFixed(1).padStart(12)}`);
  }
}
rt.dispose();
