/** Memory: a caller budget refuses models that cannot fit before loading them, and long prompts stream. */
import { describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assetUrl } from '../src/assets.js';
import { InvalidOptionError, loadModel, ModelFormatError, OutOfMemoryError, parseConfig, parameterCount } from '../src/index.js';
import { weightFootprint } from '../src/backends.js';
import { estimateMemoryBytes } from '../src/loader.js';
import { syntheticModel } from '../src/synthetic.js';

const tiny = syntheticModel({ hidden_size: 16, num_hidden_layers: 2, seed: 7 });
const tinyConfig = parseConfig(tiny['config.json']);

describe('maxMemoryBytes', () => {
  test('the estimate covers the weights at the chosen dtype, the state and the activations', () => {
    const P = parameterCount(tinyConfig);
    const f32 = estimateMemoryBytes(tinyConfig, { backend: 'js' });
    expect(f32.weights).toBe(P * 4);
    expect(f32.staging).toBe(0); // the js backend computes on the decoded arrays themselves
    expect(f32.state).toBe(2 * 32 * (3 + 16) * 4);
    expect(f32.total).toBe(f32.weights + f32.staging + f32.state + f32.activations);
    const q8 = estimateMemoryBytes(tinyConfig, { backend: 'wasm', dtype: 'q8' });
    // The projections at 9 bits a weight; this tiny model's vectors (stored f32) are a third of its parameters.
    expect(q8.weights).toBe(Math.ceil(weightFootprint(tinyConfig, 'q8', 'wasm').total));
    expect(q8.weights).toBeLessThan(f32.weights / 2);
    expect(q8.staging).toBe(P * 4); // float32 copies exist until the wasm backend has quantised them
  });

  test('a model over the budget is refused with OutOfMemoryError naming the need and the limit', async () => {
    const need = estimateMemoryBytes(tinyConfig, { backend: 'js' }).total;
    const e = await loadModel({ files: tiny }, { backend: 'js', maxMemoryBytes: need - 1 }).catch((x) => x);
    expect(e).toBeInstanceOf(OutOfMemoryError);
    expect(e.code).toBe('OUT_OF_MEMORY');
    expect(e.message).toContain(`(${need} bytes`);
    expect(e.message).toContain(`maxMemoryBytes`);
    expect(e.message).toContain(`(${need - 1} bytes)`);
    expect(e.message).toMatch(/config\.json describes a model of \d+ parameters/);
    // Exactly the estimate fits.
    const m = await loadModel({ files: tiny }, { backend: 'js', maxMemoryBytes: need });
    expect(m.parameters).toBe(parameterCount(tinyConfig));
    m.dispose();
  });

  test('the budget is checked from config.json alone, before the weights are read', async () => {
    // A 24 GB model with a tiny (mismatched) weights file: the budget fails first, not the shapes.
    const cfg = { ...JSON.parse(tiny['config.json']), hidden_size: 4096, intermediate_size: 8192, num_hidden_layers: 64 };
    const files = { 'config.json': JSON.stringify(cfg), 'model.safetensors': tiny['model.safetensors'] };
    await expect(loadModel({ files }, { backend: 'js', maxMemoryBytes: 2 ** 30 })).rejects.toThrow(OutOfMemoryError);
    await expect(loadModel({ files }, { backend: 'js', maxMemoryBytes: 2 ** 30 })).rejects.toThrow(/needs about 2\d{4}\.\d MiB .* more than maxMemoryBytes 1024\.0 MiB/);
    // Without a budget the js backend's own limit refuses it (before the mismatched shapes are even looked at).
    await expect(loadModel({ files }, { backend: 'js' })).rejects.toThrow(/the js backend cannot hold this model \(6741037056 parameters\): float32 weights \(25\.11 GiB\)/);
    // A model any backend can hold still fails on its shapes (before any weight is decoded).
    const wide = { ...JSON.parse(tiny['config.json']), hidden_size: 64 };
    await expect(loadModel({ files: { ...files, 'config.json': JSON.stringify(wide) } }, { backend: 'js' })).rejects.toThrow(ModelFormatError);
  });

  test('a nonsensical budget is an option error', async () => {
    for (const v of [0, -1, NaN, Infinity, '1GB']) {
      await expect(loadModel({ files: tiny }, { backend: 'js', maxMemoryBytes: v as number })).rejects.toThrow(InvalidOptionError);
    }
  });
});

describe('long prompts stream in bounded memory', () => {
  test('a 1 MiB prompt through session.feed does not grow memory with its length', async () => {
    const files = syntheticModel({ hidden_size: 8, num_hidden_layers: 1, state_size: 4, seed: 11 });
    const model = await loadModel({ files }, { backend: 'js' });
    const prompt = new Uint8Array(1 << 20);
    for (let i = 0; i < prompt.length; i++) prompt[i] = 32 + ((i * 7919) % 90);
    const session = model.createSession();
    await session.feed(prompt.subarray(0, 4096)); // warm up: scratch buffers, JIT
    const rss0 = process.memoryUsage().rss;
    const heap0 = process.memoryUsage().heapUsed;
    await session.feed(prompt);
    // maxRSS is the peak over the whole run, so this bounds any transient allocation too.
    const peakGrowth = process.resourceUsage().maxRSS * 1024 - rss0;
    const heapGrowth = process.memoryUsage().heapUsed - heap0;
    // Logits for every position would be 1 GiB ([2^20, 256] float32); the state is a few KiB.
    expect(peakGrowth / 2 ** 20, 'peak RSS growth, MiB').toBeLessThan(64);
    expect(heapGrowth / 2 ** 20, 'heap growth, MiB').toBeLessThan(64);
    // The session still works and has consumed the whole prompt.
    const snap = await session.snapshot();
    expect(snap.history.length).toBeGreaterThan(0);
    expect(snap.logits?.length).toBe(256);
    expect(snap.logits!.every(Number.isFinite)).toBe(true);
    session.dispose();
    model.dispose();
  });
});

describe.skipIf(!existsSync(fileURLToPath(assetUrl('dist/workers/engine-worker.js'))))('the worker runtime does not grow the main thread per call', () => {
  test('100,000 WorkerModel.logits() calls leave the heap flat; dropped streams are closed in the worker', async () => {
    // A child process with --expose-gc, so the heap is measured after full collections.
    const script = fileURLToPath(new URL('./helpers/worker-heap.mjs', import.meta.url));
    const calls = 100_000;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--expose-gc', script, String(calls)], { timeout: 110_000 }, (e, stdout, stderr) =>
        e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    const r = JSON.parse(out.trim().split('\n').at(-1)!);
    const perCall = (r.heap1 - r.heap0) / calls;
    console.log(`worker calls: ${calls} in ${(r.ms / 1000).toFixed(1)} s, heap ${(r.heap0 / 2 ** 20).toFixed(1)} -> ${(r.heap1 / 2 ** 20).toFixed(1)} MiB (${perCall.toFixed(1)} B/call)`);
    // Racing every call against a never-settling promise kept ~500 B a call (+49 MB here).
    expect(perCall, 'heap growth, bytes per call').toBeLessThan(20);
    expect(r.pending).toBe(0);
    // 50 streams pulled once and dropped: open in the worker until collected on the main thread.
    expect(r.before.streams).toBe(r.dropped);
    expect(r.after).toEqual({ streams: 0, sessions: 0, operations: 0 });
  });
});
