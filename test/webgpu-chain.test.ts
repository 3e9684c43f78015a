/**
 * Chained greedy decoding on WebGPU (`decodeGreedy`: argmax feeds the next step on the GPU, one
 * read-back per block) must produce exactly the bytes and state of token-by-token decoding.
 * On a software adapter the fused (GPU-shaped) tests decode shorter blocks: a fused step takes ~0.5 s there.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BackendUnavailableError, loadModel, type Model } from '../src/index.js';
import { loadFixtures } from './helpers/fixtures.js';
import { collect } from './helpers/stream.js';
import { nodeWebGPU } from './helpers/env.js';
import { readModel } from '../src/loader.js';
import { createWebGPUBackendWith } from '../src/webgpu/backend.js';

const ids = (b: Uint8Array) => Uint32Array.from(b);

// The small fixture: its greedy continuation is varied bytes (the tiny one repeats one byte).
const fx = loadFixtures().find((f) => f.name === 'small-hf-f16-untied')!;
const adapter = await nodeWebGPU(import.meta.url);
const software = adapter?.software ?? false;
adapter?.device.destroy();

describe('webgpu chained greedy decoding', () => {
  let gpu: Model | undefined;
  let ref: Model;
  let why = adapter ? '' : 'no WebGPU adapter';
  beforeAll(async () => {
    ref = await loadModel(fx.dir, { backend: 'js' });
    if (!adapter) return;
    try {
      gpu = await loadModel(fx.dir, { backend: 'webgpu' });
    } catch (e) {
      if (!(e instanceof BackendUnavailableError)) throw e;
      why = e.message;
    }
  });
  afterAll(() => {
    gpu?.dispose();
    ref.dispose();
  });

  test('the backend offers decodeGreedy and it matches step-by-step argmax', async (ctx) => {
    if (!gpu) return ctx.skip(why);
    const be = gpu.backend;
    expect(be.decodeGreedy).toBeTypeOf('function');
    const st = be.createState();
    const logits = await be.forward(st, ids(fx.input), 'last');
    const first = logits.indexOf(Math.max(...logits));
    const r = await be.decodeGreedy!(st, first, 7);
    expect(r.tokens[0]).toBe(first);
    // Same tokens as the fixture's greedy continuation (transformers).
    expect(r.tokens).toEqual(ids(fx.greedy.subarray(0, 7)));
    const refState = ref.backend.createState();
    await ref.backend.forward(refState, ids(fx.input), 'last');
    const refLogits = await ref.backend.forward(refState, ids(fx.greedy.subarray(0, 7)), 'last');
    let d = 0;
    for (let i = 0; i < refLogits.length; i++) d = Math.max(d, Math.abs(refLogits[i] - r.logits[i]));
    expect(d / fx.maxAbsLogit).toBeLessThan(1e-4);
    be.releaseState(st);
  });

  // 'fused': the decode step a hardware GPU runs (shaders/step.wgsl), whose chained steps are replayed.
  test.for([{ kernels: 'default' }, { kernels: 'fused' }])('blocks issued ahead (first = null) continue exactly, per sequence, in any interleaving ($kernels kernels)', async ({ kernels }, ctx) => {
    if (!gpu) return ctx.skip(why);
    const fused = kernels === 'fused' ? await loadModel(fx.dir, { backend: 'webgpu', webgpuKernels: { fusedDecode: true, gemvLanes: 32 } }) : undefined;
    ctx.onTestFinished(() => fused?.dispose());
    const be = (fused ?? gpu).backend;
    expect(be.decodeAhead).toBe(true);
    const start = async () => {
      const st = be.createState();
      const logits = await be.forward(st, ids(fx.input), 'last');
      return { st, first: logits.indexOf(Math.max(...logits)) };
    };
    const a = await start();
    const b = await start();
    // Block lengths: [a1, b1, a2, b2, a3]; shorter for fused steps on a software adapter.
    const n = kernels === 'fused' && software ? [1, 1, 2, 1, 1] : [4, 3, 6, 5, 2];
    // Two sequences, each block issued before the previous ones resolve, interleaved.
    const a1 = be.decodeGreedy!(a.st, a.first, n[0]);
    const b1 = be.decodeGreedy!(b.st, b.first, n[1]);
    const a2 = be.decodeGreedy!(a.st, null, n[2]);
    const b2 = be.decodeGreedy!(b.st, null, n[3]);
    const a3 = be.decodeGreedy!(a.st, null, n[4]);
    const [ra1, rb1, ra2, rb2, ra3] = await Promise.all([a1, b1, a2, b2, a3]);
    expect(ra2.tokens[0]).toBe(ra1.next);
    expect([...ra1.tokens, ...ra2.tokens, ...ra3.tokens]).toEqual([...fx.greedy.subarray(0, n[0] + n[2] + n[4])]);
    expect([...rb1.tokens, ...rb2.tokens]).toEqual([...fx.greedy.subarray(0, n[1] + n[3])]);
    expect(rb2.next).toBe(fx.greedy[n[1] + n[3]]);
    for (const x of [a, b]) be.releaseState(x.st);
    // Continuing a sequence that has no block before is a usage error, not a silent zero token.
    const c = be.createState();
    await expect(be.decodeGreedy!(c, null, 2)).rejects.toThrow(RangeError);
    be.releaseState(c);
  });

  test('a replayed decode step follows a reallocated token buffer', async (ctx) => {
    if (!gpu) return ctx.skip(why);
    const { config, weights } = await readModel(fx.dir);
    // Chunks of 128: a 100-token prompt outgrows the 64-token buffer that the captured steps name.
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32', fused: true, gemvLanes: 32, chunk: 128 });
    try {
      const a = be.createState();
      const logits = await be.forward(a, ids(fx.input), 'last');
      const first = logits.indexOf(Math.max(...logits));
      const k = software ? 2 : 4;
      const r1 = await be.decodeGreedy(a, first, k);
      const r2 = await be.decodeGreedy(a, null, k); // steps captured, then replayed
      const b = be.createState();
      await be.forward(b, new Uint32Array(100).fill(65), 'last');
      const r3 = await be.decodeGreedy(a, null, k);
      expect([...r1.tokens, ...r2.tokens, ...r3.tokens]).toEqual([...fx.greedy.subarray(0, 3 * k)]);
    } finally {
      be.dispose();
    }
  });

  test('model.generate greedy equals transformers, with stops landing mid-block', async (ctx) => {
    if (!gpu) return ctx.skip(why);
    const all = await collect(gpu.generate(fx.input, { temperature: 0, maxTokens: fx.greedy.length }));
    expect(all.bytes).toEqual(fx.greedy);
    // A printable byte first seen after the first block (blocks of 4, 8, ...) makes a stop string that ends mid-block.
    const cut = [...fx.greedy].findIndex((b, i) => i > 4 && b >= 0x20 && b < 0x7f && fx.greedy.indexOf(b) === i);
    expect(cut).toBeGreaterThan(4);
    const stop = String.fromCharCode(fx.greedy[cut]);
    const stopped = await collect(gpu.generate(fx.input, { temperature: 0, maxTokens: 48, stop: [stop] }));
    expect(stopped.stats.finishReason).toBe('stop');
    expect(stopped.bytes).toEqual(fx.greedy.subarray(0, cut));
  });

  test('a session continues exactly after chained blocks', async (ctx) => {
    if (!gpu) return ctx.skip(why);
    const a = gpu.createSession();
    const b = ref.createSession();
    for (const s of [a, b]) await s.feed(fx.input);
    const ga = await collect(a.generate('', { temperature: 0, maxTokens: 13 }));
    const gb = await collect(b.generate('', { temperature: 0, maxTokens: 13 }));
    expect(ga.bytes).toEqual(gb.bytes);
    const sa = await a.snapshot();
    const sb = await b.snapshot();
    let d = 0;
    for (let i = 0; i < sa.ssm.length; i++) d = Math.max(d, Math.abs(sa.ssm[i] - sb.ssm[i]));
    expect(d).toBeLessThan(1e-4);
    const ca = await collect(a.generate(' next', { temperature: 0, maxTokens: 10 }));
    const cb = await collect(b.generate(' next', { temperature: 0, maxTokens: 10 }));
    expect(ca.bytes).toEqual(cb.bytes);
  });

  test('decodeSampled: top-k 1 and a tiny top-p are greedy; a seed reproduces; draws stay inside top-k', async (ctx) => {
    if (!gpu) return ctx.skip(why);
    const be = gpu.backend;
    const N = software ? 8 : 12; // sampled bytes a run (a software adapter gets fewer)
    const run = async (s: { temperature: number; topK: number; topP: number; seed: number }, n = N) => {
      const st = be.createState();
      const logits = await be.forward(st, ids(fx.input), 'last');
      const first = logits.indexOf(Math.max(...logits));
      const r = await be.decodeSampled!(st, first, n, s);
      be.releaseState(st);
      return r.tokens;
    };
    const greedy = ids(fx.greedy.subarray(0, N));
    expect(await run({ temperature: 1, topK: 1, topP: 1, seed: 5 })).toEqual(greedy);
    expect(await run({ temperature: 1, topK: 0, topP: 1e-6, seed: 5 })).toEqual(greedy);
    const a = await run({ temperature: 1.5, topK: 0, topP: 1, seed: 1 });
    expect(await run({ temperature: 1.5, topK: 0, topP: 1, seed: 1 })).toEqual(a);
    expect(await run({ temperature: 1.5, topK: 0, topP: 1, seed: 2 })).not.toEqual(a);
    expect(a).not.toEqual(greedy);
    // Every token drawn with top-k 3 is among the 3 most likely under the reference model.
    const t = await run({ temperature: 2, topK: 3, topP: 1, seed: 3 }, 2 * N);
    const st = ref.backend.createState();
    let logits = await ref.backend.forward(st, ids(fx.input), 'last');
    for (let i = 0; i < t.length; i++) {
      if (i > 0) {
        const top3 = [...logits.keys()].sort((x, y) => logits[y] - logits[x]).slice(0, 3);
        expect(top3).toContain(t[i]);
      }
      logits = await ref.backend.forward(st, t.subarray(i, i + 1), 'last');
    }
    ref.backend.releaseState(st);
  });

  test('sampled generation on the GPU is reproducible and keeps a session exact', async (ctx) => {
    if (!gpu) return ctx.skip(why);
    const opts = { temperature: 0.9, seed: 42, maxTokens: 40 };
    const x = await collect(gpu.generate(fx.input, opts));
    expect((await collect(gpu.generate(fx.input, opts))).bytes).toEqual(x.bytes);
    expect(x.bytes.length).toBe(40);
    const a = gpu.createSession();
    await a.feed(fx.input);
    const out = await collect(a.generate('', { temperature: 0.9, seed: 7, maxTokens: 21 }));
    const b = ref.createSession();
    await b.feed(new Uint8Array([...fx.input, ...out.bytes]));
    const sa = await a.snapshot();
    const sb = await b.snapshot();
    let d = 0;
    for (let i = 0; i < sa.ssm.length; i++) d = Math.max(d, Math.abs(sa.ssm[i] - sb.ssm[i]));
    expect(d).toBeLessThan(1e-4);
  });
});
