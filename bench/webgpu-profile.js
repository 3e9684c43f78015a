#!/usr/bin/env node
// Where a WebGPU decode step's time goes: each separate kernel of one layer's decode step (T = 1) is recorded
// M times back to back into one compute pass (each dispatch depends on the previous one through its
// buffers, as in a real step), and the time per dispatch is reported next to the whole chained
// step. A trivial dispatch gives the floor that any dispatch costs on this implementation.
//
//   deno run -A bench/webgpu-profile.js [--dtype f32] [--repeat 400] [--shape 130m|mamba2-130m]
//   node bench/webgpu-profile.js --repeat 20          # Dawn, e.g. over SwiftShader (slow)
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
const { readModel } = await import(new URL('loader.js', dist).href);
const { syntheticModel, BENCH_SHAPES } = await import(new URL('synthetic.js', dist).href);
const { createWebGPUBackendWith, FUSED_LAYER } = await import(new URL('webgpu/backend.js', dist).href);

const { values } = parseArgs({
  options: { dtype: { type: 'string', default: 'f32' }, repeat: { type: 'string', default: '400' }, shape: { type: 'string', default: '130m' } },
});
const M = Number(values.repeat);
const shape = BENCH_SHAPES[values.shape];
if (!shape) throw new Error(`--shape must be one of ${Object.keys(BENCH_SHAPES).join(', ')}, got ${values.shape}`);
const { config, weights } = await readModel({ files: syntheticModel(shape.spec) });
const b = await createWebGPUBackendWith(config, weights, { dtype: values.dtype });
const k = b.kernels;
const s = b.scratch;
const c = config;
const { dModel: D, dInner: E, dConv: K, dtRank: R, dState: N, vocabSize: V, eps } = c;
const st = b.createState();
const layer = b.layerStates(st)[0];
const L = b.w.layers[0];
await b.forward(st, Uint8Array.from({ length: 64 }, (_, i) => 40 + i), 'last');

const C = config.mamba2 ? E + 2 * config.mamba2.nGroups * N : E;
// One layer's separate decode kernels, in order (forward.ts `mamba1Mixer` / `mamba2Mixer`).
const layerOps = config.mamba2
  ? {
      'rmsnorm [D]': () => k.rmsnorm(s.h, L.norm, s.xn, 1, D, eps),
      'in_proj z [E, D]': () => k.matmul(s.xn, L.inProjZ, L.inProjZBias, s.z, 1, D, E, false),
      'in_proj xBC [C, D]': () => k.matmul(s.xn, L.inProjX, L.inProjXBias, s.x, 1, D, C, false),
      'in_proj dt [H, D]': () => k.matmul(s.xn, L.inProjDt, L.inProjDtBias, s.dbc, 1, D, c.mamba2.nHeads, false),
      'conv1d step [C, K]': () => k.conv1d(s.x, layer.conv, L.convW, L.convB, s.u, 1, C, K),
      'ssd step [H, P, N]': () => k.ssd(s.u, s.dbc, L, layer.ssm, s.y, 1, c),
      'gated norm [E]': () => k.gatedNorm(s.y, s.z, L.gateNorm, s.x, 1, c),
      'out_proj [D, E] + residual': () => k.matmul(s.x, L.outProj, L.outProjBias, s.h, 1, E, D, true),
    }
  : {
      'rmsnorm [D]': () => k.rmsnorm(s.h, L.norm, s.xn, 1, D, eps),
      'in_proj x [E, D]': () => k.matmul(s.xn, L.inProjX, L.inProjXBias, s.x, 1, D, E, false),
      'in_proj z [E, D]': () => k.matmul(s.xn, L.inProjZ, L.inProjZBias, s.z, 1, D, E, false),
      'conv1d step [E, K]': () => k.conv1d(s.x, layer.conv, L.convW, L.convB, s.u, 1, E, K),
      'x_proj [R+2N, E]': () => k.matmul(s.u, L.xProj, undefined, s.dbc, 1, E, R + 2 * N, false),
      'scan step [E, N]': () => k.scan(s.u, s.dbc, s.z, L, layer.ssm, s.y, 1, c),
      'out_proj [D, E] + residual': () => k.matmul(s.y, L.outProj, L.outProjBias, s.h, 1, E, D, true),
    };
const ops = {
  'empty (norm of 4 floats)': () => k.rmsnorm(s.h, L.norm, s.xn, 1, 4, eps),
  'embed': () => k.embed(Uint8Array.of(65), b.w.embedding, s.h, 1, D),
  ...layerOps,
  'lm_head [V, D]': () => k.matmul(s.xn, b.w.lmHead, undefined, s.logits, 1, D, V, false),
};
if (b.fused) {
  Object.assign(
    ops,
    config.mamba2
      ? {
          'fused mix_in': () => k.mixIn(s.h, L, layer.conv, s.u, s.z, c),
          'fused ssd_step': () => k.ssdStep(s.h, s.u, L, layer.ssm, s.y, c),
          'fused gate_out': () => k.gateOut(s.y, s.z, L, s.h, c),
        }
      : {
          'fused mix_in': () => k.mixIn(s.h, L, layer.conv, s.u, s.z, c),
          'fused scan_step': () => k.scanStep(s.u, s.dbc, s.z, L, layer.ssm, s.y, c),
        },
    { 'fused norm + lm_head': () => k.normHead(s.h, b.w.normF, b.w.lmHead, s.logits, c) },
  );
}
const probe = k.alloc(4);

/** ms of `record` recorded `n` times in one pass, submitted, and waited for (best of 3). */
async function timed(record, n) {
  let best = Infinity;
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now();
    k.begin();
    for (let i = 0; i < n; i++) record();
    k.end();
    await k.read(probe, 1);
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

const base = await timed(() => {}, 1); // submit + read-back round trip
console.log(`${b.description}; read-back round trip ${base.toFixed(2)} ms; ${M} dispatches per kernel\n`);
const per = {};
for (const [name, op] of Object.entries(ops)) {
  await timed(op, 2); // pipeline + bind group creation
  const ms = await timed(op, M);
  per[name] = ((ms - base) / M) * 1000;
  console.log(`${name.padEnd(28)} ${per[name].toFixed(2).padStart(8)} µs / dispatch`);
}
const layerUs = Object.keys(layerOps).reduce((a, n) => a + per[n], 0);
console.log(`\nsum of one layer's kernels ${layerUs.toFixed(1)} µs → ×${c.nLayer} layers ${((layerUs * c.nLayer) / 1000).toFixed(2)} ms`);

b.dispose();

// The real thing: chained greedy decode blocks of 64 tokens, with the fused step (step.wgsl) and
// with the separate kernels.
for (const fused of [true, false]) {
  const g = await createWebGPUBackendWith(config, weights, { dtype: values.dtype, fused });
  const gs = g.createState();
  await g.forward(gs, Uint8Array.from({ length: 64 }, (_, i) => 40 + i), 'last');
  await g.decodeGreedy(gs, 65, 64);
  let best = Infinity;
  let record = Infinity;
  // Recording time alone: the same 64 steps recorded and submitted, nothing awaited but the queue.
  const gk = g.kernels;
  const end = gk.end.bind(gk);
  for (let rep = 0; rep < 3; rep++) {
    const t0 = performance.now();
    let t1 = 0;
    gk.end = () => { end(); t1 = performance.now(); };
    await g.decodeGreedy(gs, 65, 64);
    gk.end = end;
    best = Math.min(best, performance.now() - t0);
    record = Math.min(record, t1 - t0);
  }
  const label = g.fused
    ? `fused step (${FUSED_LAYER[config.mamba2 ? 'mamba2' : 'mamba1'].length} dispatches a layer)`
    : `separate kernels (${Object.keys(layerOps).length} a layer)`;
  console.log(`chained decode, ${label}: ${((best - base) / 64).toFixed(3)} ms/token (CPU recording + submit ${(record / 64).toFixed(3)} ms/token); ${(64000 / best).toFixed(0)} tok/s with one read-back per 64`);
  g.dispose();
}
