/**
 * Cancellation anywhere: aborts at seeded random moments — during load, prefill, decode, in-process
 * and inside the worker — end cleanly, leave the model usable (greedy output unchanged), and leak no
 * worker, GPU buffer or timer.
 */
import { expect, test } from 'vitest';
import { BackendUnavailableError, loadModel, type Model } from '../src/index.js';
import { activeEngineWorkers, loadModelInWorker } from '../src/runtime.js';
import { rng } from '../src/sampler.js';
import { loadFixtures } from './helpers/fixtures.js';
import { collect } from './helpers/stream.js';
import { NEEDS, nodeWebGPU, requires } from './helpers/env.js';

const fx = loadFixtures().find((f) => f.name === 'small-hf-f16-untied')!;
const PROMPT = new Uint8Array(3000).fill(0x61); // long enough that prefill spans several slices
const noWorker = requires(import.meta.url, NEEDS.build, { part: 'worker' });
const gpu = await nodeWebGPU(import.meta.url, { part: 'webgpu' });
gpu?.device.destroy();

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `runs` generations each aborted after a random 0-40 ms, then a greedy run that must equal transformers. */
async function abortStorm(model: Pick<Model, 'generate'>, seed: number, runs = 8, prompt = PROMPT): Promise<void> {
  const random = rng(seed);
  for (let i = 0; i < runs; i++) {
    const ctrl = new AbortController();
    const t = setTimeout(() => ctrl.abort(), random() * 40);
    const r = await collect(model.generate(prompt, { maxTokens: 300, signal: ctrl.signal, seed: i }));
    clearTimeout(t);
    expect(['abort', 'length']).toContain(r.stats.finishReason);
  }
  const greedy = await collect(model.generate(fx.input, { temperature: 0, maxTokens: fx.greedy.length }));
  expect(greedy.bytes).toEqual(fx.greedy);
}

for (const backend of ['js', 'wasm', 'webgpu'] as const) {
  test.skipIf(backend === 'webgpu' && !gpu)(`${backend}: random aborts in prefill and decode leave the model usable and leak nothing`, async (ctx) => {
    let model: Model;
    try {
      model = await loadModel(fx.dir, { backend });
    } catch (e) {
      if (e instanceof BackendUnavailableError) return ctx.skip(e.message);
      throw e;
    }
    const before = timers();
    const gpu = backend === 'webgpu' ? (model.backend as unknown as { kernels: { liveBuffers: number } }).kernels : undefined;
    // Two storms of `runs` aborted generations each; software WebGPU (CI) is slow: shorter prompts there.
    const [runs, prompt] = backend === 'webgpu' ? [3, PROMPT.subarray(0, 200)] : [5, PROMPT];
    try {
      await abortStorm(model, 7, runs, prompt);
      const buffers = gpu?.liveBuffers;
      await abortStorm(model, 8, runs, prompt);
      // Each generation's state buffers are freed with it, aborted or not: nothing accumulates.
      if (gpu) expect(gpu.liveBuffers).toBe(buffers);
    } finally {
      model.dispose();
    }
    await sleep(20);
    expect(timers()).toBeLessThanOrEqual(before);
  });
}

test.skipIf(noWorker)('worker: random aborts during load and generation leak no worker', async () => {
  const random = rng(11);
  for (let i = 0; i < 4; i++) {
    const ctrl = new AbortController();
    const t = setTimeout(() => ctrl.abort(), random() * 30);
    await loadModelInWorker(fx.dir, { backend: 'js', signal: ctrl.signal }).then(
      (m) => m.dispose(),
      (e) => expect((e as Error).name).toBe('AbortError'),
    );
    clearTimeout(t);
  }
  const model = await loadModelInWorker(fx.dir, { backend: 'js' });
  try {
    await abortStorm(model as unknown as Model, 12);
  } finally {
    model.dispose();
  }
  for (let i = 0; i < 200 && activeEngineWorkers() > 0; i++) await sleep(10);
  expect(activeEngineWorkers()).toBe(0);
});
