/**
 * What Mamba-1 has, Mamba-2 and Falcon-Mamba have too: sessions that snapshot, restore and fork
 * exactly, the worker, and the live GPU→CPU fallback; and a snapshot never restores into a model of
 * another architecture.
 */
import { describe, expect, test } from 'vitest';
import { FallbackBackend } from '../src/fallback.js';
import { loadModelInWorker, MambaError } from '../src/index.js';
import { readModel } from '../src/loader.js';
import { loadModel, Model } from '../src/model.js';
import { createReferenceBackend } from '../src/reference/backend.js';
import { syntheticModel, type SyntheticSpec } from '../src/synthetic.js';
import { DeviceLostError } from '../src/errors.js';
import type { Backend, StateHandle } from '../src/backend.js';

const ARCHS: Array<[string, SyntheticSpec]> = [
  ['mamba2', { hidden_size: 32, num_hidden_layers: 2, state_size: 8, mamba2: { head_dim: 16, n_groups: 2 }, seed: 21 }],
  ['falcon_mamba', { hidden_size: 32, num_hidden_layers: 2, falcon: true, seed: 22 }],
];
const GREEDY = { temperature: 0, maxTokens: 40 } as const;

async function text(m: { generate: Model['generate'] }, prompt: string): Promise<string> {
  let out = '';
  for await (const c of m.generate(prompt, GREEDY)) out += c.text;
  return out;
}

describe.each(ARCHS)('%s', (arch, spec) => {
  const files = syntheticModel(spec);

  test('sessions: a restored snapshot and a fork continue exactly as the original (wasm)', async () => {
    const m = await loadModel({ files }, { backend: 'wasm', threads: 1 });
    const a = m.createSession();
    await a.feed('The weather today ');
    const saved = await a.snapshot();
    expect(saved.model).toMatch(new RegExp(`^${arch === 'mamba2' ? 'mamba2' : 'falcon_mamba'}:`));
    const fork = await a.fork();
    const b = m.createSession();
    await b.restore(saved);
    const want = await text(a, 'is');
    expect(await text(b, 'is')).toBe(want);
    expect(await text(fork, 'is')).toBe(want);
    m.dispose();
  });

  test('a snapshot of another architecture with the same widths is refused', async () => {
    const m = await loadModel({ files }, { backend: 'js' });
    const other = await loadModel({ files: syntheticModel({ hidden_size: 32, num_hidden_layers: 2, state_size: spec.state_size, seed: 23 }) }, { backend: 'js' });
    const s = other.createSession();
    await s.feed('x');
    const snap = await s.snapshot();
    await expect(m.createSession().restore(snap)).rejects.toMatchObject({ code: 'SNAPSHOT' });
    await expect(m.createSession().restore(snap)).rejects.toBeInstanceOf(MambaError);
    m.dispose();
    other.dispose();
  });

  test('the worker gives the same logits as the reference in-process', async () => {
    const ref = await loadModel({ files }, { backend: 'js' });
    const want = await ref.logits('Mamba everywhere');
    const w = await loadModelInWorker({ files }, { backend: 'wasm', threads: 2 });
    try {
      const got = await w.logits('Mamba everywhere');
      let d = 0;
      let m = 0;
      for (let i = 0; i < want.length; i++) {
        d = Math.max(d, Math.abs(got[i] - want[i]));
        m = Math.max(m, Math.abs(want[i]));
      }
      expect(d / m).toBeLessThan(1e-4);
    } finally {
      await w.dispose();
      ref.dispose();
    }
  });

  test('a device lost mid-generation falls back to the CPU with unchanged greedy output', async () => {
    const { config, weights } = await readModel({ files });
    const expected = await text(new Model(config, createReferenceBackend(config, weights)), 'Once upon ');
    // The reference backend, losing the device at its 15th forward.
    const inner = createReferenceBackend(config, weights);
    let forwards = 0;
    const losing: Backend = {
      name: 'webgpu',
      description: 'fake gpu',
      config,
      createState: () => inner.createState(),
      forward: async (s: StateHandle, t: Uint32Array, want: 'all' | 'last') => {
        if (++forwards >= 15) throw new DeviceLostError('injected');
        return inner.forward(s, t, want);
      },
      readState: (s) => inner.readState(s),
      writeState: (s, d) => inner.writeState(s, d),
      releaseState: (s) => inner.releaseState(s),
      dispose: () => inner.dispose(),
    };
    const fb = new FallbackBackend(losing, async () => createReferenceBackend(config, weights), { checkpointTokens: 0 });
    expect(await text(new Model(config, fb), 'Once upon ')).toBe(expected);
    expect(fb.name).toBe('js');
  });
});
