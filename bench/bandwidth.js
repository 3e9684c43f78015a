// The machine's read bandwidth as WebAssembly sees it, shared by bench/run.js and bench/profile-wasm.js.
const dist = new URL('../dist/src/', import.meta.url);
const { WasmRuntime } = await import(new URL('wasm/runtime.js', dist).href);
const { KERNEL } = await import(new URL('wasm/layout.js', dist).href);

/** GB/s of a WASM SIMD read loop over `mib` MiB on `threads` threads (written first so no page is the shared zero page). */
export async function readBandwidth(threads, mib) {
  const bytes = mib * 2 ** 20;
  const rt = await WasmRuntime.create({ threads, reserveBytes: bytes, growBytes: 0, scratchBytesPerThread: 64 });
  try {
    const buf = rt.allocBytes(bytes);
    const f32 = rt.views().f32;
    for (let i = buf >> 2, end = (buf + bytes) >> 2; i < end; i += 1024) f32[i] = 1;
    let best = Infinity;
    for (let rep = 0; rep < 6; rep++) {
      const t0 = performance.now();
      rt.run(KERNEL.READ, [buf, bytes], threads);
      best = Math.min(best, performance.now() - t0);
    }
    return bytes / (best / 1000) / 1e9;
  } finally {
    rt.dispose();
  }
}
