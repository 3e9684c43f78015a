/**
 * Sessions never deadlock and keep call order, in-process and in the worker: an abandoned generator
 * is ended by the next call on its session (its next pull: MambaError 'PREEMPTED'), a `for await`
 * that keeps pulling keeps its place, and a worker session runs calls in the order they were made.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MambaError } from '../src/errors.js';
import { loadModel, type Model } from '../src/model.js';
import { loadModelInWorker, type WorkerModel } from '../src/runtime.js';
import { loadFixtures } from './helpers/fixtures.js';
import { collect } from './helpers/stream.js';
import { NEEDS, requires } from './helpers/env.js';

const fx = loadFixtures().find((f) => f.name === 'small-hf-f16-untied')!;
const noWorker = requires(import.meta.url, NEEDS.build, { part: 'worker' });
const GREEDY = { temperature: 0, maxTokens: 12 } as const;

/** Settles with `p`, or fails after `ms`: "waits forever" becomes a measured failure. */
async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t0 = performance.now();
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} still waiting after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
    expect(performance.now() - t0, `${what}: wall time, ms`).toBeLessThan(ms);
  }
}

type AnyModel = Pick<Model, 'createSession'> | Pick<WorkerModel, 'createSession'>;

/** The same script on either kind of model. */
function suite(name: string, open: () => Promise<{ model: AnyModel; close(): void }>) {
  describe(name, () => {
    let model: AnyModel;
    let close: () => void;
    let reference: Model;
    beforeAll(async () => {
      ({ model, close } = await open());
      reference = await loadModel(fx.dir, { backend: 'js' });
    });
    afterAll(() => {
      close?.();
      reference?.dispose();
    });

    test('a generator pulled once and abandoned: later generate/snapshot/feed run; its next pull is PREEMPTED', async () => {
      const s = model.createSession();
      const g = s.generate('Hello', { maxTokens: 100_000 });
      expect((await g.next()).done).toBe(false);
      // Abandoned here. Every later call completes (the old code waited forever).
      const snap = await within(5_000, s.snapshot(), 'snapshot after an abandoned generator');
      expect(snap.history.length).toBeGreaterThanOrEqual(5);
      await within(5_000, s.feed(' again'), 'feed');
      const r = await within(10_000, collect(s.generate(' more', GREEDY)), 'generate');
      expect(r.stats.generatedTokens).toBe(12);
      await expect(g.next()).rejects.toMatchObject({ code: 'PREEMPTED' });
      await expect(g.next()).resolves.toMatchObject({ done: true });
      s.dispose();
    });

    test('a later call made while the abandoned generator was still being pulled also runs', async () => {
      const s = model.createSession();
      const g = s.generate('Hello', { maxTokens: 100_000 });
      const first = g.next(); // in flight when snapshot() is called
      const snap = s.snapshot();
      await first;
      await within(5_000, snap, 'snapshot queued behind a generator that was then abandoned');
      s.dispose();
    });

    test('a generator never pulled does not block the calls after it', async () => {
      const s = model.createSession();
      const g = s.generate('never read');
      await within(5_000, s.feed('Hi'), 'feed after an unread generator');
      await expect(g.next()).rejects.toBeInstanceOf(MambaError);
      s.dispose();
    });

    test('calls run in the order they were made; a for-await loop keeps its place', async () => {
      // generate is called first, feed second: the generation sees the state before the feed.
      const s = model.createSession();
      await s.feed('Once upon');
      const gen = s.generate(' a', GREEDY);
      const fed = s.feed(' b');
      const got = await collect(gen);
      await fed;
      const after = await s.snapshot();

      const ref = reference.createSession();
      await ref.feed('Once upon');
      const want = await collect(ref.generate(' a', GREEDY));
      await ref.feed(' b');
      expect(got.bytes).toEqual(want.bytes);
      expect(got.stats.finishReason).toBe('length');
      expect(after.ssm).toEqual((await ref.snapshot()).ssm);

      // Two streams consumed at once: queued, each complete, as if one after the other.
      const [a, b] = await Promise.all([collect(s.generate(' c', GREEDY)), collect(s.generate(' d', GREEDY))]);
      const a2 = await collect(ref.generate(' c', GREEDY));
      const b2 = await collect(ref.generate(' d', GREEDY));
      expect([a.bytes, b.bytes]).toEqual([a2.bytes, b2.bytes]);
      s.dispose();
      ref.dispose();
    });

    test('break releases the session at once', async () => {
      const s = model.createSession();
      for await (const _ of s.generate('Hello', { maxTokens: 100_000 })) break;
      const t0 = performance.now();
      await s.snapshot();
      expect(performance.now() - t0).toBeLessThan(2_000);
      s.dispose();
    });
  });
}

suite('in-process sessions', async () => {
  const m = await loadModel(fx.dir, { backend: 'js' });
  return { model: m, close: () => m.dispose() };
});

describe.skipIf(noWorker)('worker', () => {
  suite('worker sessions', async () => {
    const m = await loadModelInWorker(fx.dir, { backend: 'js' });
    return { model: m, close: () => m.dispose() };
  });

  test('abandoned streams leave nothing open in the worker', async () => {
    const m = await loadModelInWorker(fx.dir, { backend: 'js' });
    try {
      const s = m.createSession();
      for (let i = 0; i < 5; i++) await s.generate('Hello', { maxTokens: 100_000 }).next();
      await s.snapshot(); // ends the last abandoned one
      expect(await m.api.holding()).toEqual({ streams: 0, sessions: 1, operations: 0 });
      expect(m.pendingCalls).toBe(0);
      s.dispose();
      await s.snapshot().catch(() => undefined);
      for (let i = 0; i < 50 && (await m.api.holding()).sessions > 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(await m.api.holding()).toEqual({ streams: 0, sessions: 0, operations: 0 });
    } finally {
      m.dispose();
    }
  });
});
