/**
 * The worker runtime in Node (`worker_threads` + comlink): conformance through the worker, streaming
 * in batches, sessions, errors keeping their class, abort and dispose leaving no thread behind.
 * Runs from the compiled dist/workers/engine-worker.js (`npm test` builds first).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DisposedError, InvalidOptionError, ModelFormatError, ModelNotFoundError, OutOfMemoryError } from '../src/errors.js';
import { loadModel, type Model } from '../src/model.js';
import { activeEngineWorkers, loadModelInWorker, type WorkerModel } from '../src/runtime.js';
import { loadFixtures, maxAbsDiff } from './helpers/fixtures.js';
import { collect } from './helpers/stream.js';
import { NEEDS, requires } from './helpers/env.js';

const fixtures = loadFixtures();
const skip = requires(import.meta.url, NEEDS.build);
const GREEDY = { temperature: 0, maxTokens: 48 } as const;

/** Worker threads alive in this process, as Node's diagnostic report sees them (independent of our counter). */
function reportedWorkers(): number {
  const report = process.report.getReport() as unknown as { workers?: unknown[] };
  return report.workers?.length ?? 0;
}

async function noWorkersLeft(): Promise<void> {
  for (let i = 0; i < 200 && (activeEngineWorkers() > 0 || reportedWorkers() > 0); i++) await new Promise((r) => setTimeout(r, 10));
  expect(activeEngineWorkers()).toBe(0);
  expect(reportedWorkers()).toBe(0);
}

describe.skipIf(skip)('loadModelInWorker (Node worker_threads)', () => {
  describe.each(fixtures)('conformance · $name', (fx) => {
    let model: WorkerModel;
    let local: Model;
    beforeAll(async () => {
      model = await loadModelInWorker(fx.dir);
      local = await loadModel(fx.dir, { backend: model.backend.name });
    });
    afterAll(() => {
      model?.dispose();
      local?.dispose();
    });

    test('prefill logits through the worker match transformers', async () => {
      const got = await model.logits(fx.input);
      expect(got).toBeInstanceOf(Float32Array);
      expect(maxAbsDiff(got, fx.logits) / fx.maxAbsLogit).toBeLessThanOrEqual(1e-4);
    });

    test("'auto' says what it picked and why", () => {
      expect(model.backend.selection?.backend).toBe(model.backend.name);
      expect(model.backendReason).toBeTruthy();
      expect(model.config.vocabSize).toBe(fx.vocab);
    });

    test('greedy generation equals the in-process model, streamed in batches', async () => {
      const want = await collect(local.generate(fx.input, { temperature: 0, maxTokens: 200 }));
      const before = model.pulls;
      const got = await collect(model.generate(fx.input, { temperature: 0, maxTokens: 200 }));
      expect(got.bytes).toEqual(want.bytes);
      expect(got.stats.generatedTokens).toBe(200);
      expect(got.stats.finishReason).toBe('length');
      // Never one message per byte: each round trip carries ~16 ms or 64 bytes of output.
      expect(model.pulls - before).toBeLessThanOrEqual(200 / 4);
    });

    test('sessions: feed, snapshot, restore, fork behave as in-process', async () => {
      const ls = local.createSession();
      await ls.feed('System: be brief.\n');
      const lf = await ls.fork();
      const want = await collect(lf.generate(fx.input, GREEDY));

      const s = model.createSession();
      await s.feed('System: be brief.\n');
      const snap = await s.snapshot();
      const f = await s.fork();
      const got = await collect(f.generate(fx.input, GREEDY));
      expect(got.bytes).toEqual(want.bytes);

      const lsnap = await ls.snapshot();
      expect(maxAbsDiff(snap.ssm, lsnap.ssm)).toBe(0);
      // A restored session continues exactly like the original.
      const r = model.createSession(snap);
      expect((await collect(r.generate(fx.input, GREEDY))).bytes).toEqual(want.bytes);
      for (const x of [s, f, r, ls, lf]) x.dispose();
      expect(() => model.createSession({ format: 'nope' } as never)).toThrow(/not a mamba-edge snapshot/);
      // A snapshot of another model: reported by the session's first call.
      const bad = model.createSession({ ...snap, model: 'mamba1:D1:L1:E1:N1:K1:R1:V1' });
      await expect(bad.feed('x')).rejects.toMatchObject({ code: 'SNAPSHOT' });
    });
  });

  test('bitsPerByte through the worker equals in-process', async () => {
    const fx = fixtures[0];
    const [w, l] = await Promise.all([loadModelInWorker(fx.dir, { backend: 'js' }), loadModel(fx.dir, { backend: 'js' })]);
    try {
      expect(await w.bitsPerByte(fx.input)).toBeCloseTo(await l.bitsPerByte(fx.input), 10);
    } finally {
      w.dispose();
      l.dispose();
    }
  });

  test('errors keep their class and code across the boundary', async () => {
    const err = await loadModelInWorker('/nonexistent/model/dir').catch((e) => e);
    expect(err).toBeInstanceOf(ModelNotFoundError);
    expect(err.code).toBe('MODEL_NOT_FOUND');
    expect(err.path).toBe('/nonexistent/model/dir');
    await noWorkersLeft();

    const model = await loadModelInWorker(fixtures[0].dir, { backend: 'js' });
    try {
      const e2 = await collect(model.generate('x', { maxTokens: -1 })).catch((e) => e);
      expect(e2).toBeInstanceOf(InvalidOptionError);
      expect(e2.option).toBe('maxTokens');
      // Wrong types are refused on this side, before anything is posted (a signal cannot be cloned).
      for (const [args, option] of [[[42], 'prompt'], [[null], 'prompt'], [[[72, 'i']], 'prompt'], [[[72, 1e9]], 'prompt'], [[{}], 'prompt'], [['x', null], 'options'], [['x', { signal: {} }], 'signal']] as const) {
        const e = await collect(model.generate(...(args as unknown as [string]))).catch((x) => x);
        expect(e, JSON.stringify(args)).toBeInstanceOf(InvalidOptionError);
        expect(e.option).toBe(option);
        const se = await collect(model.createSession().generate(...(args as unknown as [string]))).catch((x) => x);
        expect(se.option).toBe(option);
      }
      await expect(model.bitsPerByte('abc', {} as never)).rejects.toMatchObject({ option: 'signal' });
      await expect(model.createSession().feed(7 as never)).rejects.toMatchObject({ option: 'text' });
      // logits: positions through the worker; a result over the limit is refused before the worker is asked.
      const all = await model.logits('Hello');
      expect(await model.logits('Hello', { positions: 'last' })).toEqual(all.subarray(4 * 256));
      expect(await model.logits('Hello', { positions: { start: 1, end: 3 } })).toEqual(all.subarray(256, 3 * 256));
      await expect(model.logits(new Uint8Array(2 ** 21))).rejects.toBeInstanceOf(OutOfMemoryError);
      await expect(model.logits(new Uint8Array(2 ** 16), { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
      expect(model.pendingCalls).toBe(0);
      // The model is still usable afterwards.
      expect((await collect(model.generate('x', { ...GREEDY, maxTokens: 3 }))).stats.generatedTokens).toBe(3);
    } finally {
      model.dispose();
    }
  });

  test('an AbortSignal on the main thread ends the generation in the worker', async () => {
    const model = await loadModelInWorker(fixtures[1].dir, { backend: 'js' });
    const controller = new AbortController();
    let stats: any;
    let n = 0;
    const t0 = performance.now();
    for await (const c of model.generate('The ', { maxTokens: 1_000_000, signal: controller.signal })) {
      if (++n === 3) controller.abort();
      if (c.stats) stats = c.stats;
    }
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(stats.finishReason).toBe('abort');
    expect(stats.generatedTokens).toBeLessThan(10_000);

    // bitsPerByte over a long input: the worker lets the abort in between blocks.
    const long = new Uint8Array(16 * 1024).map((_, i) => 32 + (i % 90));
    const c2 = new AbortController();
    const p = model.bitsPerByte(long, c2.signal);
    setTimeout(() => c2.abort(), 50);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });

    // Still usable; then dispose leaves no worker running.
    expect((await collect(model.generate('x', { ...GREEDY, maxTokens: 2 }))).stats.generatedTokens).toBe(2);
    model.dispose();
    await noWorkersLeft();
  });

  test('breaking out of a stream closes it in the worker; the session continues', async () => {
    const model = await loadModelInWorker(fixtures[0].dir, { backend: 'js' });
    const s = model.createSession();
    for await (const _ of s.generate('Hello', { maxTokens: 10_000 })) break;
    await s.feed(' more');
    expect((await s.snapshot()).history.length).toBeGreaterThan(5);
    model.dispose();
  });

  test('dispose() mid-stream rejects pending work with DisposedError and ends the worker', async () => {
    const model = await loadModelInWorker(fixtures[1].dir, { backend: 'js' });
    const it = model.generate('The ', { maxTokens: 1_000_000 })[Symbol.asyncIterator]();
    await it.next();
    const pending = it.next().then(
      () => it.next(),
      (e) => Promise.reject(e),
    );
    model.dispose();
    await expect(pending).rejects.toBeInstanceOf(DisposedError);
    await expect(model.logits('x')).rejects.toBeInstanceOf(DisposedError);
    expect(() => model.createSession()).toThrow(DisposedError);
    await noWorkersLeft();
  });

  test('a worker that dies fails pending calls instead of leaving them hanging', async () => {
    const model = await loadModelInWorker(fixtures[1].dir, { backend: 'js' });
    const it = model.generate('The ', { maxTokens: 1_000_000 })[Symbol.asyncIterator]();
    await it.next();
    // Simulate a crash (out of memory, a native fault): the thread ends without a dispose().
    (model as unknown as { handle: { terminate(): void } }).handle.terminate();
    const err = await (async () => {
      for (;;) await it.next();
    })().catch((e) => e);
    expect(err).toBeInstanceOf(Error);
    expect(['WORKER_EXIT', 'DISPOSED']).toContain(err.code);
    await expect(model.logits('x')).rejects.toBeInstanceOf(Error);
    model.dispose();
    await noWorkersLeft();
  });

  test('aborting the load terminates the worker', async () => {
    const controller = new AbortController();
    const p = loadModelInWorker(fixtures[0].dir, { signal: controller.signal });
    controller.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    await noWorkersLeft();
  });
});
