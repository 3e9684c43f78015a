/**
 * The wasm backend end to end on the Hugging Face fixtures: every dtype × 1 and 2 threads through
 * prefill and step decode, with the measured error printed (max|Δ| / max|logit| against transformers'
 * float64 logits), plus the lifecycle: state read/write, dispose stopping the workers, memory limits.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { afterAll, describe, expect, test, vi } from 'vitest';
import { OutOfMemoryError } from '../src/errors.js';
import { readModel } from '../src/loader.js';
import { createWasmBackend, type WasmBackend } from '../src/wasm/backend.js';

const ROOT = new URL('./fixtures/hf-mamba/', import.meta.url);
const fixtures = readdirSync(ROOT).map((name) => {
  const dir = new URL(`${name}/`, ROOT);
  const exp = JSON.parse(readFileSync(new URL('expected.json', dir), 'utf8'));
  const raw = readFileSync(new URL('logits.f32', dir));
  const logits = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  return { name, dir: decodeURIComponent(dir.pathname), input: Uint32Array.from(exp.input_bytes as number[]), logits, maxAbs: Math.max(...logits.map(Math.abs)) };
});

// Bounds with headroom over the measured worst case (printed below; see README "Accuracy").
const TOLERANCE = { f32: 1e-4, f16: 2e-3, q8: 3e-2 } as const;
const measured: string[] = [];
afterAll(() => console.log(`wasm max|Δ|/max|logit|:\n  ${measured.join('\n  ')}`));

function ratio(got: Float32Array, want: Float32Array, maxAbs: number): number {
  let d = 0;
  for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
  return d / maxAbs;
}

describe.each(fixtures)('$name', (fx) => {
  for (const dtype of ['f32', 'f16', 'q8'] as const) {
    for (const threads of [1, 2]) {
      test(`${dtype}, ${threads} thread(s): prefill and step decode`, async () => {
        const { config, weights } = await readModel(fx.dir);
        const be = await createWasmBackend(config, weights, { dtype, threads });
        try {
          expect(be.description).toContain(`${threads} thread`);
          const V = config.vocabSize;
          const st = be.createState();
          const prefill = await be.forward(st, fx.input, 'all');
          be.releaseState(st);
          const step = new Float32Array(fx.logits.length);
          const s2 = be.createState();
          for (let t = 0; t < fx.input.length; t++) step.set(await be.forward(s2, fx.input.subarray(t, t + 1), 'last'), t * V);
          const r = [ratio(prefill, fx.logits, fx.maxAbs), ratio(step, fx.logits, fx.maxAbs)];
          measured.push(`${fx.name.padEnd(22)} ${dtype} ${threads}t  prefill ${r[0].toExponential(2)}  step ${r[1].toExponential(2)}`);
          expect(Math.max(...r)).toBeLessThanOrEqual(TOLERANCE[dtype]);
        } finally {
          be.dispose();
        }
      });
    }
  }
});

describe('lifecycle', () => {
  test('state written back reproduces the continuation; dispose stops the workers', async () => {
    const fx = fixtures[0];
    const { config, weights } = await readModel(fx.dir);
    const be: WasmBackend = await createWasmBackend(config, weights, { dtype: 'f32', threads: 2 });
    const a = be.createState();
    await be.forward(a, fx.input.subarray(0, 40), 'last');
    const saved = await be.readState(a);
    const next = await be.forward(a, fx.input.subarray(40, 50), 'all');
    const b = be.createState();
    await be.writeState(b, saved);
    expect(await be.forward(b, fx.input.subarray(40, 50), 'all')).toEqual(next);
    // Released states are recycled zeroed.
    be.releaseState(a);
    be.releaseState(b);
    const c = be.createState();
    expect((await be.readState(c)).ssm.every((v) => v === 0)).toBe(true);
    expect(be.weightBytes).toBeGreaterThan(be.decodeWeightBytes - 1);
    be.dispose();
    expect(() => be.createState()).toThrow(/disposed/);
  });

  test('without SharedArrayBuffer it runs single-threaded on the non-shared build', async () => {
    const fx = fixtures[0];
    const { config, weights } = await readModel(fx.dir);
    vi.stubGlobal('SharedArrayBuffer', undefined);
    try {
      const be = await createWasmBackend(config, weights, { dtype: 'f32', threads: 4 });
      expect(be.runtime.threads).toBe(1);
      expect(be.description).toMatch(/1 thread.*SharedArrayBuffer unavailable/);
      const st = be.createState();
      const out = await be.forward(st, fx.input, 'all');
      expect(ratio(out, fx.logits, fx.maxAbs)).toBeLessThanOrEqual(TOLERANCE.f32);
      be.dispose();
    } finally {
      vi.unstubAllGlobals();
    }
  });

  test('a model beyond the 4 GiB wasm32 memory is refused with OutOfMemoryError', async () => {
    const fx = fixtures[0];
    const { config, weights } = await readModel(fx.dir);
    // Same tensors, but a config claiming a vocabulary so large that the scratch alone exceeds 4 GiB.
    const huge = { ...config, vocabSize: 1 << 24 };
    await expect(createWasmBackend(huge, weights, { threads: 1 })).rejects.toBeInstanceOf(OutOfMemoryError);
  });
});
