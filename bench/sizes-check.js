#!/usr/bin/env node
// Random weights in the exact shapes of state-spaces/mamba-*-hf on every backend this runtime offers,
// checked against the js reference: a 4-token prompt (logits of every position) and 2 greedy decode
// steps. One JSON line per shape and backend; exit 1 when an f32 path is off by more than 1e-4 of the
// largest logit. Runs under Node and Deno against the built package (dist/):
//
//   node bench/sizes-check.js [--shapes 130m-hf,370m-hf] [--backends wasm,webgpu]
//   deno run -A bench/sizes-check.js --shapes 130m-hf,370m-hf --backends webgpu   # e.g. on a GPU machine
//
// (test/sizes.test.ts runs 130m-hf in `npm test`; 370m-hf holds 1.5 GB of float32 on the host and takes
// the js reference a few seconds a token, which is why it lives here.)
import { parseArgs } from 'node:util';

const dist = new URL('../dist/src/', import.meta.url);
const { syntheticWeights, MAMBA_HF_SHAPES } = await import(new URL('synthetic.js', dist).href);
const { createBackend } = await import(new URL('backends.js', dist).href);

const { values } = parseArgs({
  options: { shapes: { type: 'string', default: '130m-hf,370m-hf' }, backends: { type: 'string', default: 'wasm,webgpu' } },
});
const PROMPT = Uint32Array.of(50279, 7, 12345, 300);
const STEPS = 2;

/** Logits of every prompt position, then of STEPS greedy steps; the tokens chosen (or forced: `follow`). */
async function trace(backend, V, follow) {
  const state = backend.createState();
  const logits = [await backend.forward(state, PROMPT, 'all')];
  const tokens = [];
  for (let s = 0; s < STEPS; s++) {
    const last = logits.at(-1).subarray(logits.at(-1).length - V);
    let best = 0;
    for (let i = 1; i < V; i++) if (last[i] > last[best]) best = i;
    tokens.push(best);
    logits.push(await backend.forward(state, Uint32Array.of(follow ? follow[s] : best), 'last'));
  }
  backend.releaseState(state);
  const all = new Float32Array(logits.reduce((n, l) => n + l.length, 0));
  let o = 0;
  for (const l of logits) all.set(l, (o += l.length) - l.length);
  return { logits: all, tokens };
}

function rel(a, b) {
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return Number.isFinite(d) ? d / m : Infinity;
}

let failed = false;
for (const shape of values.shapes.split(',')) {
  const spec = MAMBA_HF_SHAPES[shape];
  if (!spec) throw new RangeError(`unknown shape ${shape}: one of ${Object.keys(MAMBA_HF_SHAPES).join(', ')}`);
  const { config, weights } = syntheticWeights(spec);
  const t0 = performance.now();
  const js = await createBackend(config, weights, { backend: 'js' });
  const ref = await trace(js, config.vocabSize);
  js.dispose();
  console.log(JSON.stringify({ shape, backend: 'js (reference)', ms: Math.round(performance.now() - t0), tokens: ref.tokens }));
  for (const name of values.backends.split(',')) {
    for (const dtype of name === 'webgpu' ? ['f32', 'f16'] : ['f32']) {
      const t = performance.now();
      let b;
      try {
        b = await createBackend(config, weights, { backend: name, dtype });
      } catch (e) {
        console.log(JSON.stringify({ shape, backend: name, dtype, unavailable: e.message }));
        continue;
      }
      const got = await trace(b, config.vocabSize, ref.tokens);
      const r = rel(got.logits, ref.logits);
      // f16 weights: rounding of the weights themselves (see README Accuracy), reported, not bounded here.
      const ok = dtype !== 'f32' || r <= 1e-4;
      failed ||= !ok;
      console.log(JSON.stringify({ shape, backend: b.description, dtype, rel: r, sameTokens: got.tokens.join() === ref.tokens.join(), ms: Math.round(performance.now() - t), ok }));
      b.dispose();
    }
  }
}
if (failed) (globalThis.process ?? globalThis.Deno).exit(1);
