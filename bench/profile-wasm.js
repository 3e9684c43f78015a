#!/usr/bin/env node
// Where a decode step (T = 1) of the wasm backend spends its time, kernel call by kernel call, on the same
// 130m-shaped random model as bench/run.js. Every `Kernels` call of the shared layer loop is wrapped with
// a clock, so the sum over kernels plus "other" (JS between kernels, logits copy, argmax) is the step.
//
//   npm run build && node bench/profile-wasm.js [--dtype f32,q8] [--threads 1] [--steps 256] [--prompt 64] [--layers 24]
//
// --layers 2 keeps the weights (~9 MB at q8) in the caches: each kernel's compute-bound floor, which a
// decode step streaming its weights from DRAM cannot beat (the README's bandwidth arithmetic).
// For each GEMV it also reports GB/s of its weights, next to the WASM SIMD read loop's GB/s: the gap
// between the two is what the GEMV kernel itself loses; time outside the GEMVs is what the step loses.
import os from 'node:os';
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
const { createWasmBackend } = await import(new URL('wasm/backend.js', dist).href);
const { readBandwidth } = await import('./bandwidth.js');
const { readModel } = await import(new URL('loader.js', dist).href);
const { syntheticModel, MAMBA_130M_BYTES } = await import(new URL('synthetic.js', dist).href);

const { values } = parseArgs({
  options: {
    dtype: { type: 'string', default: 'f32,q8' },
    threads: { type: 'string', default: '1' },
    steps: { type: 'string', default: '256' },
    prompt: { type: 'string', default: '64' },
    layers: { type: 'string', default: String(MAMBA_130M_BYTES.num_hidden_layers) },
    'bandwidth-mib': { type: 'string', default: '1024' },
  },
});
const steps = Number(values.steps);
const { config, weights } = await readModel({ files: syntheticModel({ ...MAMBA_130M_BYTES, num_hidden_layers: Number(values.layers) }) });

/** Names each matmul by the weight it streams (the layer loop passes the same tensor objects every step). */
function weightNames(w) {
  const names = new Map();
  for (const L of w.layers) {
    names.set(L.inProjX, 'gemv in_proj x [E, D]');
    names.set(L.inProjZ, 'gemv in_proj z [E, D]');
    names.set(L.xProj, 'gemv x_proj [R+2N, E]');
    names.set(L.outProj, 'gemv out_proj [D, E]');
  }
  names.set(w.lmHead, 'gemv lm_head [V, D]');
  return names;
}

async function profile(dtype, threads) {
  const backend = await createWasmBackend(config, weights, { dtype, threads });
  const k = backend.k;
  const names = weightNames(backend.w);
  const stats = new Map(); // name -> { ms, calls, bytes }
  let on = false;
  const add = (name, ms, bytes = 0) => {
    const s = stats.get(name) ?? { ms: 0, calls: 0, bytes: 0 };
    s.ms += ms;
    s.calls++;
    s.bytes += bytes;
    stats.set(name, s);
  };
  const wrap = (method, nameOf, bytesOf = () => 0) => {
    const orig = k[method].bind(k);
    k[method] = (...args) => {
      if (!on) return orig(...args);
      const t0 = performance.now();
      const r = orig(...args);
      add(nameOf(args), performance.now() - t0, bytesOf(args));
      return r;
    };
  };
  wrap('embed', () => 'embed');
  wrap('rmsnorm', () => 'rmsnorm');
  wrap('matmul', (a) => names.get(a[1]) ?? 'gemv other', (a) => a[1].bytes);
  wrap('conv1d', () => 'conv1d');
  wrap('scan', () => 'scan');
  wrap('read', () => 'read logits');

  try {
    const st = backend.createState();
    const prompt = new Uint8Array(Number(values.prompt)).map((_, i) => 32 + ((i * 7919) % 95));
    let logits = await backend.forward(st, prompt, 'last');
    const argmax = (x) => x.reduce((b, v, i) => (v > x[b] ? i : b), 0);
    for (let i = 0; i < 32; i++) logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last'); // warm-up
    // Step time without the per-call clocks, then the breakdown with them.
    let t0 = performance.now();
    for (let i = 0; i < steps; i++) logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last');
    const plainMs = (performance.now() - t0) / steps;
    on = true;
    t0 = performance.now();
    for (let i = 0; i < steps; i++) logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last');
    const stepMs = (performance.now() - t0) / steps;
    on = false;
    return { plainMs, stepMs, stats, decodeBytes: backend.decodeWeightBytes, description: backend.description };
  } finally {
    backend.dispose();
  }
}

const threadCounts = values.threads.split(',').map(Number);
const readGBps = {};
for (const t of threadCounts) readGBps[t] = await readBandwidth(t, Number(values['bandwidth-mib']));
console.log(`${os.cpus()[0]?.model}, ${os.availableParallelism()} cores, node ${process.version}, load ${os.loadavg()[0].toFixed(2)}`);
console.log(`read loop: ${threadCounts.map((t) => `${t} thr ${readGBps[t].toFixed(1)} GB/s`).join(', ')}`);

const pad = (s, n) => String(s).padStart(n);
for (const dtype of values.dtype.split(',')) {
  for (const threads of threadCounts) {
    const r = await profile(dtype, threads);
    const total = [...r.stats.values()].reduce((a, s) => a + s.ms, 0) / steps;
    console.log(`\n${r.description}: step ${r.plainMs.toFixed(3)} ms unclocked (${(1000 / r.plainMs).toFixed(1)} tok/s, ` +
      `${((r.decodeBytes / r.plainMs) / 1e6).toFixed(1)} GB/s of weights = ${((100 * r.decodeBytes / r.plainMs / 1e6) / readGBps[threads]).toFixed(0)}% of read), ` +
      `${r.stepMs.toFixed(3)} ms clocked`);
    console.log(`${'kernel'.padEnd(24)} ${pad('calls/step', 10)} ${pad('µs/call', 8)} ${pad('ms/step', 8)} ${pad('share', 6)} ${pad('GB/s', 6)} ${pad('of read', 7)}`);
    const rows = [...r.stats.entries()].sort((a, b) => b[1].ms - a[1].ms);
    let gemvMs = 0, gemvBytes = 0;
    for (const [name, s] of rows) {
      const ms = s.ms / steps;
      const gbps = s.bytes ? s.bytes / s.ms / 1e6 : 0;
      if (s.bytes) { gemvMs += s.ms; gemvBytes += s.bytes; }
      console.log(`${name.padEnd(24)} ${pad((s.calls / steps).toFixed(0), 10)} ${pad(((1000 * s.ms) / s.calls).toFixed(1), 8)} ${pad(ms.toFixed(3), 8)} ${pad(((100 * ms) / r.stepMs).toFixed(1) + '%', 6)} ${pad(gbps ? gbps.toFixed(1) : '', 6)} ${pad(gbps ? ((100 * gbps) / readGBps[threads]).toFixed(0) + '%' : '', 7)}`);
    }
    const other = r.stepMs - total;
    console.log(`${'other (JS, forward loop)'.padEnd(24)} ${pad('', 10)} ${pad('', 8)} ${pad(other.toFixed(3), 8)} ${pad(((100 * other) / r.stepMs).toFixed(1) + '%', 6)}`);
    const g = gemvBytes / gemvMs / 1e6;
    console.log(`all GEMVs: ${(gemvMs / steps).toFixed(3)} ms/step, ${g.toFixed(1)} GB/s = ${((100 * g) / readGBps[threads]).toFixed(0)}% of read; non-GEMV ${(r.stepMs - gemvMs / steps).toFixed(3)} ms/step`);
  }
}
process.exit(0);
