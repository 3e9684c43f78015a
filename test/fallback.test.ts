/**
 * Live fallback: a GPU lost mid-generation hands each sequence's state to the CPU backend and the
 * stream goes on; with greedy decoding the output equals an uninterrupted run.
 */
import { describe, expect, test } from 'vitest';
import { greedySteps, type Backend, type DecodeBlock, type StateData, type StateHandle } from '../src/backend.js';
import { DeviceLostError, BackendUnavailableError } from '../src/errors.js';
import { FallbackBackend } from '../src/fallback.js';
import { readModel } from '../src/loader.js';
import { Model } from '../src/model.js';
import { createReferenceBackend } from '../src/reference/backend.js';
import { syntheticModel } from '../src/synthetic.js';
import { SOFTWARE_WEBGPU_FOR_DAWN, skipLine } from './helpers/env.js';

const files = syntheticModel({ hidden_size: 48, num_hidden_layers: 2, seed: 11 });
const { config, weights } = await readModel({ files });
const PROMPT = 'Once upon a time, ';
const GREEDY = { temperature: 0, maxTokens: 60 } as const;

/** The reference backend, except that the `failAt`-th forward (1-based) and everything after it throw DeviceLostError. */
class LosingBackend implements Backend {
  readonly name = 'webgpu' as const;
  readonly description = 'fake gpu';
  readonly config = config;
  forwards = 0;
  lost = false;
  private readonly inner = createReferenceBackend(config, weights);
  constructor(private readonly failAt: number, private readonly failReads = false) {}
  private guard(): void {
    if (this.lost) throw new DeviceLostError('WebGPU device lost (destroyed): injected');
  }
  createState(): StateHandle {
    return this.inner.createState();
  }
  async forward(s: StateHandle, tokens: Uint32Array, want: 'all' | 'last'): Promise<Float32Array> {
    this.guard();
    if (++this.forwards === this.failAt) {
      // Advance the state part-way first, as a GPU that dies mid-command-buffer might.
      await this.inner.forward(s, tokens.subarray(0, 1), 'last');
      this.lost = true;
      this.guard();
    }
    return this.inner.forward(s, tokens, want);
  }
  async readState(s: StateHandle): Promise<StateData> {
    if (this.failReads && this.forwards >= this.failAt - 1) this.lost = true;
    this.guard();
    return this.inner.readState(s);
  }
  async writeState(s: StateHandle, d: StateData): Promise<void> {
    this.guard();
    return this.inner.writeState(s, d);
  }
  releaseState(s: StateHandle): void {
    this.inner.releaseState(s);
  }
  dispose(): void {
    this.inner.dispose();
  }
}

/**
 * A device that decodes blocks ahead (`decodeAhead`): each block is queued at once and run in order;
 * the `failAt`-th block (1-based) advances its state part-way and loses the device.
 */
class BlockBackend extends LosingBackend {
  readonly decodeAhead = true;
  blocks = 0;
  overlapped = false;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly next = new Map<number, number>();
  private pending = 0;
  constructor(private readonly failBlock: number) {
    super(Infinity);
  }
  decodeGreedy(s: StateHandle, first: number | null, n: number): Promise<DecodeBlock> {
    if (this.pending++ > 0) this.overlapped = true;
    const block = ++this.blocks;
    const run = this.queue.then(async () => {
      try {
        if (block >= this.failBlock) {
          if (block === this.failBlock) await this.forward(s, Uint32Array.of(first ?? this.next.get(s.id)!), 'last');
          this.lost = true;
          throw new DeviceLostError('WebGPU device lost (destroyed): injected');
        }
        const out = await greedySteps(this, s, first ?? this.next.get(s.id)!, n);
        this.next.set(s.id, out.next);
        return out;
      } finally {
        this.pending--;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }
}

async function text(model: Model | { generate: Model['generate'] }, prompt = PROMPT): Promise<string> {
  let out = '';
  for await (const c of model.generate(prompt, GREEDY)) out += c.text;
  return out;
}

const expected = await text(new Model(config, createReferenceBackend(config, weights)));

function fallbackModel(failAt: number, checkpointTokens?: number, failReads = false) {
  const primary = new LosingBackend(failAt, failReads);
  const events: string[] = [];
  const backend = new FallbackBackend(primary, async () => createReferenceBackend(config, weights), {
    checkpointTokens,
    onFallback: (e, from, to) => events.push(`${from}->${to}: ${e.code}`),
  });
  return { model: new Model(config, backend), backend, primary, events };
}

describe('FallbackBackend', () => {
  test.each([
    ['during prefill, copy after every call', 1, 0],
    ['mid-decode, copy after every call', 20, 0],
    ['mid-decode, replaying mirrored tokens', 20, 256],
    ['mid-decode, checkpoint + replay', 33, 7],
  ])('device lost %s: greedy output unchanged', async (_, failAt, checkpointTokens) => {
    const { model, backend, primary, events } = fallbackModel(failAt, checkpointTokens);
    expect(await text(model)).toBe(expected);
    expect(primary.lost).toBe(true);
    expect(backend.failure).toBeInstanceOf(DeviceLostError);
    expect(backend.name).toBe('js');
    expect(backend.description).toMatch(/fell back from fake gpu/);
    await new Promise((r) => setTimeout(r, 0));
    expect(events).toEqual(['webgpu->js: DEVICE_LOST']);
    model.dispose();
  });

  test('loss while taking a checkpoint keeps the mirrored tokens', async () => {
    const { model, backend } = fallbackModel(12, 4, true);
    expect(await text(model)).toBe(expected);
    expect(backend.failure).not.toBeNull();
  });

  test('sessions: snapshot, fork and continue across a loss', async () => {
    const ref = new Model(config, createReferenceBackend(config, weights));
    const refSession = ref.createSession();
    await refSession.feed('System: be brief. ');
    const refFork = await refSession.fork();
    let want = '';
    for await (const c of refFork.generate(PROMPT, GREEDY)) want += c.text;

    const { model, backend } = fallbackModel(3, 2);
    const s = model.createSession();
    await s.feed('System: be brief. '); // forward 1
    const fork = await s.fork(); // readState on the primary, then writeState
    let got = '';
    for await (const c of fork.generate(PROMPT, GREEDY)) got += c.text; // loss at forward 3
    expect(got).toBe(want);
    expect(backend.failure).not.toBeNull();
    // The original session moves over lazily on its next use.
    const snap = await s.snapshot();
    const refSnap = await refSession.snapshot();
    expect(snap.ssm).toEqual(refSnap.ssm);
    expect(snap.conv).toEqual(refSnap.conv);
    model.dispose();
    ref.dispose();
  });

  test.each([
    // 60 tokens: blocks of 4, 8, 16 and 32, each but the first issued before the previous one is done
    ['the first block', 1, 0],
    ['the second block, copy after every block', 2, 0],
    ['the third block, checkpoint + replay', 3, 7],
    ['the last block, replaying mirrored tokens', 4, 256],
  ])('device lost in %s of overlapping decode blocks: greedy output unchanged', async (_, failAt, checkpointTokens) => {
    const primary = new BlockBackend(failAt);
    const backend = new FallbackBackend(primary, async () => createReferenceBackend(config, weights), { checkpointTokens });
    expect(backend.decodeAhead).toBe(true);
    const model = new Model(config, backend);
    expect(await text(model)).toBe(expected);
    expect(primary.blocks).toBeGreaterThanOrEqual(failAt);
    expect(primary.overlapped).toBe(true); // the generation really issued blocks ahead
    expect(backend.failure).toBeInstanceOf(DeviceLostError);
    expect(backend.decodeAhead).toBe(false);
    model.dispose();
  });

  test('other errors are not swallowed', async () => {
    const primary = createReferenceBackend(config, weights);
    const backend = new FallbackBackend(primary, async () => createReferenceBackend(config, weights));
    const s = backend.createState();
    await expect(backend.forward(s, new Uint32Array([1, 2]), 'last')).resolves.toHaveLength(256);
    primary.forward = async () => {
      throw new RangeError('boom');
    };
    await expect(backend.forward(s, new Uint32Array([1]), 'last')).rejects.toThrow(RangeError);
    expect(backend.failure).toBeNull();
  });
});

test('real WebGPU: device.destroy() mid-generation falls back to the CPU', async (ctx) => {
  let gpu: Backend & { gpu: { device: GPUDevice } };
  try {
    const { createWebGPUBackend } = await import('../src/webgpu/backend.js');
    gpu = (await createWebGPUBackend(config, weights, {})) as typeof gpu;
  } catch (e) {
    if (e instanceof BackendUnavailableError || /not implemented|unavailable/i.test(String(e))) {
      skipLine(import.meta.url, `${String(e)}: ${SOFTWARE_WEBGPU_FOR_DAWN}`, { part: 'real WebGPU', ci: true });
      return ctx.skip(String(e));
    }
    throw e;
  }
  const backend = new FallbackBackend(gpu, async () => createReferenceBackend(config, weights), { checkpointTokens: 8 });
  const model = new Model(config, backend);
  let out = '';
  let n = 0;
  for await (const c of model.generate(PROMPT, GREEDY)) {
    out += c.text;
    if (++n === 10) gpu.gpu.device.destroy();
  }
  expect(backend.failure).toBeInstanceOf(DeviceLostError);
  // The synthetic model's greedy margins are wide; f32 GPU and the reference agree on every byte.
  expect(out).toBe(expected);
  model.dispose();
});
