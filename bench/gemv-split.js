#!/usr/bin/env node
// One decode GEMV (T = 1) on 2 threads, split into 1, 2, 4 and 8 chunks, with the weights in cache (one
// matrix) and from DRAM (40 copies, taken in turn): what a job's chunk count costs, without the Pacer
// (src/wasm/runtime.ts) deciding. The backend splits decode jobs into CHUNKS_PER_THREAD × threads chunks
// (src/wasm/backend.ts). Wall time per call, best of 5 runs of 200 calls.
//
//   npm run build && node bench/gemv-split.js [--dtype q4,q8] [--shape 3072x768]
import { parseArgs } from 'node:util';
const dist = new URL('../dist/src/', import.meta.url);
const L = await import(new URL('wasm/layout.js', dist).href);
const { WasmRuntime } = await import(new URL('wasm/runtime.js', dist).href);

const { values } = parseArgs({ options: { dtype: { type: 'string', default: 'q4,q8' }, shape: { type: 'string', default: '3072x768' } } });
const [N, K] = values.shape.split('x').map(Number);
const rt = await WasmRuntime.create({ threads: 2, reserveBytes: 512 << 20, growBytes: 64 << 20, scratchBytesPerThread: 64 * 1024, adaptive: false });
let seed = 1;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) - 0.5;
console.log(`[${N}, ${K}], ${rt.threads} threads`);
console.log('dtype  weights  chunks  µs/call  GB/s');
for (const name of values.dtype.split(',')) {
  const d = L.DTYPE_CODE[name];
  const flat = L.tensorBytes(d, N, K);
  const size = L.tensorBytes(d, N, K, true);
  const rm = new Uint8Array(flat.data);
  const rs = new Uint8Array(flat.scales);
  const w = Float32Array.from({ length: N * K }, rand);
  if (name === 'q4') L.quantizeQ4(w, N, K, rm, new Uint16Array(rs.buffer));
  else if (name === 'q8') L.quantizeQ8(w, N, K, new Int8Array(rm.buffer), new Float32Array(rs.buffer));
  else throw new Error(`--dtype: q8 or q4, got ${name}`);
  const px = rt.allocBytes(4 * K);
  const po = rt.allocBytes(4 * N);
  rt.views().f32.set(Float32Array.from({ length: K }, rand), px >> 2);
  const mats = [];
  for (let c = 0; c < 40; c++) {
    const ptr = rt.allocBytes(size.data);
    const sc = rt.allocBytes(size.scales);
    const v = rt.views();
    L.tileRows(rm, N, flat.data / N, L.TILE_UNIT[d], new Uint8Array(v.u8.buffer, ptr, size.data));
    L.tileRows(rs, N, flat.scales / N, L.SCALE_UNIT[d], new Uint8Array(v.u8.buffer, sc, size.scales));
    mats.push([ptr, sc]);
  }
  for (const copies of [1, 40]) {
    for (const parts of [1, 2, 4, 8]) {
      let i = 0;
      // dtype, x, ldx, w, scales, bias, out, ldo, T, K, N, accumulate (src/wasm/backend.ts `matmul`)
      const call = () => {
        const [ptr, sc] = mats[i++ % copies];
        rt.run(L.KERNEL.MATMUL, [d | L.TILED, px, K, ptr, sc, 0, po, N, 1, K, N, 0], parts, N * K);
      };
      for (let j = 0; j < 200; j++) call();
      let best = Infinity;
      for (let r = 0; r < 5; r++) {
        const t0 = performance.now();
        for (let j = 0; j < 200; j++) call();
        best = Math.min(best, (performance.now() - t0) / 200);
      }
      const gbps = (size.data + size.scales) / best / 1e6;
      console.log(`${name.padEnd(5)}  ${copies === 1 ? 'cache' : 'DRAM '}    ${String(parts).padStart(6)}  ${(best * 1000).toFixed(1).padStart(7)}  ${gbps.toFixed(1).padStart(5)}`);
    }
  }
}
rt.dispose();
