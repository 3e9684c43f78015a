import type { Backend } from '../backend.js';
import { GPU_DTYPES, type BackendOptions } from '../backends.js';
import type { MambaConfig } from '../config.js';
import { InvalidOptionError, OutOfMemoryError } from '../errors.js';
import type { DecodeBlock, DeviceSampling, StateHandle } from '../backend.js';
import { KernelBackend, type LayerState } from '../forward.js';
import type { AnyLayerWeights, LayerWeights, Mamba2LayerWeights, ModelWeights } from '../weights.js';
import { withSharedDevice, type GpuContext, type PipelineCache } from './device.js';
import { WebGPUKernels, type Cached, type GpuBuf, type GpuWeight, type GpuWeightFormat } from './kernels.js';

/** Most tokens one chained-decode block may hold. */
export const MAX_CHAIN = 64;

/** Decode steps per command buffer in a chained block. */
const SUBMIT_EVERY = 4;

/** Prompt tokens per command buffer on a hardware GPU: enough rows to fill its many cores. */
const GPU_CHUNK = 512;
import { hashShaders, loadShaderSources, type ShaderName } from './wgsl.js';
import { selfCheck } from './selfcheck.js';

/**
 * The fused decode step of one layer, per architecture: its kernels in order (shaders/step.wgsl says
 * what each does). Data, as the mixers of forward.ts are recipes over the shared kernels: one driver
 * (`fusedStep`) runs either, and chained blocks capture and replay whatever it recorded.
 */
export const FUSED_LAYER = {
  mamba1: ['mix_in', 'x_proj', 'scan_step', 'out_proj'],
  mamba2: ['mix_in', 'ssd_step', 'gate_out'],
} as const;
type FusedOp = (typeof FUSED_LAYER)[keyof typeof FUSED_LAYER][number];

/**
 * The shared layer loop (`KernelBackend`) over the WGSL kernels, plus what only a GPU needs:
 * weights are laid out on the device once at creation (host copies dropped), and `dispose()`
 * frees weights and caches (the device is shared: src/webgpu/device.ts).
 */
export class WebGPUBackend extends KernelBackend<GpuBuf, GpuWeight> {
  readonly gpu: GpuContext;
  readonly kernels: WebGPUKernels;

  /** Token ids of a chained-decode block [MAX_CHAIN]. */
  private chain: GpuBuf | undefined;

  /** Decode steps use the fused kernels of step.wgsl. */
  readonly fused: boolean;

  constructor(
    ctx: GpuContext,
    kernels: WebGPUKernels,
    description: string,
    config: MambaConfig,
    weights: ModelWeights,
    chunk?: number,
    fused = true,
  ) {
    super('webgpu', description, kernels, config, weights, chunk);
    this.gpu = ctx;
    this.kernels = kernels;
    this.fused = fused && kernels.fusedStep(config) !== undefined;
    kernels.prepare(this.w, config);
  }

  /**
   * A decode step (T = 1) in `FUSED_LAYER`'s dispatches per layer (Mamba-1 4 instead of 7, Mamba-2 3
   * instead of 8) where the fused kernels apply (shaders/step.wgsl says why): dispatches, not bytes,
   * bound a GPU's decode speed.
   */
  protected override chunkForward(st: LayerState<GpuBuf>[], tokens: Uint32Array, T: number): void {
    if (T !== 1 || !this.fused) return super.chunkForward(st, tokens, T);
    const k = this.kernels;
    if (!k.residentTokens) return this.fusedStep(st, tokens);
    // A chained step (token already on the GPU) dispatches exactly what the last one did: replay it.
    const hit = this.steps.get(st);
    if (hit && hit.tokensId === k.tokensId) return k.replay(hit.program);
    this.steps.set(st, { tokensId: k.tokensId, program: k.capture(() => this.fusedStep(st, tokens)) });
  }

  /** Bytes of the weights on the GPU, in their stored formats. */
  get weightBytes(): number {
    return this.kernels.weightBytes;
  }

  /**
   * Bytes a decode step reads: every weight except the embedding (one row a token), unless it is
   * the tied head. q8 / q4 shrink the projections' share (benches: decode GB/s = this × tok/s).
   */
  get decodeWeightBytes(): number {
    const { embedding, lmHead } = this.w as ModelWeights<GpuWeight>;
    return this.kernels.weightBytes - (embedding === lmHead ? 0 : (embedding.mat?.bytes ?? 0));
  }

  /** Per sequence: the dispatches of its chained decode step (see `WebGPUKernels.capture`). */
  private readonly steps = new WeakMap<LayerState<GpuBuf>[], { tokensId: number; program: readonly Cached[] }>();

  private fusedStep(st: LayerState<GpuBuf>[], tokens: Uint32Array): void {
    const { kernels: k, w, scratch: s, config: c } = this;
    const recipe = FUSED_LAYER[c.mamba2 ? 'mamba2' : 'mamba1'];
    k.embed(tokens, w.embedding, s.h, 1, c.dModel);
    for (let l = 0; l < c.nLayer; l++) for (const op of recipe) this.fusedOp(op, w.layers[l], st[l]);
    k.normHead(s.h, w.normF, w.lmHead, s.logits, c); //             h [D] → logits [V]
  }

  /** One kernel of a layer's fused step, on the scratch buffers (u [C], z [E], dbc, y [E], h [D]). */
  private fusedOp(op: FusedOp, L: AnyLayerWeights<GpuWeight>, st: LayerState<GpuBuf>): void {
    const { kernels: k, scratch: s, config: c } = this;
    const m1 = L as LayerWeights<GpuWeight>;
    const m2 = L as Mamba2LayerWeights<GpuWeight>;
    switch (op) {
      case 'mix_in': return k.mixIn(s.h, L, st.conv, s.u, s.z, c); //              h [D] → u [C], z [E]
      case 'x_proj': return this.xProj(s.u, m1, s.dbc, 1); //                        → dbc [R+2N]
      case 'scan_step': return k.scanStep(s.u, s.dbc, s.z, m1, st.ssm, s.y, c); //  → y [E]
      case 'out_proj': return k.matmul(s.y, m1.outProj, m1.outProjBias, s.h, 1, c.dInner, c.dModel, true); // h += out_proj(y)
      case 'ssd_step': return k.ssdStep(s.h, s.u, m2, st.ssm, s.y, c); //          h [D], u [C] → y [E]
      case 'gate_out': return k.gateOut(s.y, s.z, m2, s.h, c); //                  h += out_proj(gatedNorm(y, z))
    }
  }

  /** Dispatches one decode step (T = 1) records, counted by the recorder on a scratch state. */
  async stepDispatches(): Promise<number> {
    const st = this.createState();
    try {
      const before = this.kernels.dispatches;
      await this.forward(st, Uint32Array.of(0), 'last');
      return this.kernels.dispatches - before;
    } finally {
      this.releaseState(st);
    }
  }

  /**
   * Greedy next token after the last `forward`, computed on the GPU: reads back 8 bytes instead of
   * V floats. `lastChunkTokens` is the length of that forward's final chunk (1 for a decode step).
   * Not yet used by the shared driver (it would need a `want: 'argmax'` mode in forward.ts).
   */
  argmaxLast(lastChunkTokens: number): Promise<{ index: number; value: number }> {
    // KernelBackend keeps its scratch private; the logits buffer is what the LM head wrote last.
    const logits = (this as unknown as { scratch: { logits: GpuBuf } }).scratch.logits;
    const V = this.config.vocabSize;
    return this.kernels.argmax(logits, V, (lastChunkTokens - 1) * V);
  }

  /** The `k` most likely next tokens after the last `forward`, on the GPU (see `argmaxLast`). */
  topkLast(lastChunkTokens: number, k: number): Promise<{ index: number; value: number }[]> {
    const logits = (this as unknown as { scratch: { logits: GpuBuf } }).scratch.logits;
    const V = this.config.vocabSize;
    return this.kernels.topk(logits, V, k, (lastChunkTokens - 1) * V);
  }

  /**
   * Greedy decoding without a host round trip per token: a read-back costs a fixed latency that can
   * dwarf a whole step (about 11 ms in Deno's wgpu, which polls), so `n` steps are recorded into one
   * command buffer, each step's argmax feeding the next step's embedding on the GPU, and the tokens
   * plus the final logits are read back once. A call returns once its block is submitted, so the next
   * block (`first` = null: continue from this one's pick) runs while this one is read back.
   */
  readonly decodeAhead = true;

  decodeGreedy(state: StateHandle, first: number | null, n: number): Promise<DecodeBlock> {
    return this.decodeChain(state, first, n, (logits, V, chain, step, logitsAt) => this.kernels.argmaxFeed(logits, V, chain, step, logitsAt));
  }

  /** As `decodeGreedy`, drawing each token on the GPU (temperature / top-k / top-p, seeded). */
  decodeSampled(state: StateHandle, first: number | null, n: number, s: DeviceSampling): Promise<DecodeBlock> {
    return this.decodeChain(state, first, n, (logits, V, chain, step, logitsAt) => {
      if (step === 0) this.kernels.seedSampler(s.seed);
      this.kernels.sampleFeed(logits, V, chain, step, logitsAt, s);
    });
  }

  /**
   * Per sequence: its pick after its last block, on the GPU [1] and as read back, and how many of its
   * blocks are issued but not yet handed out.
   */
  private readonly feeds = new Map<number, { slot: GpuBuf; next?: number; pending: number }>();
  /** Block results are handed out in the order the blocks were issued (a block may need the previous pick). */
  private results: Promise<unknown> = Promise.resolve();

  /** Records `n` decode steps into one command buffer, `select` choosing each next token on the GPU. */
  private decodeChain(
    state: StateHandle,
    first: number | null,
    n: number,
    select: (logits: GpuBuf, V: number, chain: GpuBuf, step: number, logitsAt: number) => void,
  ): Promise<DecodeBlock> {
    if (!Number.isInteger(n) || n < 1 || n > MAX_CHAIN) throw new RangeError(`decode: n must be in [1, ${MAX_CHAIN}], got ${n}`);
    const k = this.kernels;
    const V = this.config.vocabSize;
    let read!: Promise<Float32Array>;
    // Only the recording is serialised with other calls: the GPU queue orders the work itself.
    const recorded = this.serialize(async () => {
      const st = this.layerStates(state);
      let feed = this.feeds.get(state.id);
      if (!feed) this.feeds.set(state.id, (feed = { slot: k.alloc(1), pending: 0 }));
      if (first === null && feed.next === undefined && feed.pending === 0) {
        throw new RangeError('decode: first = null continues a previous block of this sequence, and there is none');
      }
      this.chain ??= k.alloc(MAX_CHAIN + V); // [tokens of the block | logits after its last step]
      k.begin();
      try {
        if (first === null) k.loadFeed(feed.slot);
        for (let i = 0; i < n; i++) {
          k.residentTokens = i > 0 || first === null;
          this.chunkForward(st, Uint32Array.of(first ?? 0), 1);
          select(this.scratch.logits, V, this.chain, i, i === n - 1 ? MAX_CHAIN : 0);
          // Submit every few steps: the GPU starts on them while the rest of the block is recorded
          // (recording a step costs the host about as much as the GPU's share of it).
          if (i % SUBMIT_EVERY === SUBMIT_EVERY - 1 && i < n - 1) {
            k.end();
            k.begin();
          }
        }
        k.saveFeed(feed.slot);
      } catch (e) {
        k.end();
        throw e;
      } finally {
        k.residentTokens = false;
      }
      read = k.endAndRead(this.chain, MAX_CHAIN + V);
      read.catch(() => undefined); // awaited in turn below, possibly after it fails
      feed.pending++;
    });
    const result = this.results.then(async () => {
      await recorded;
      const feed = this.feeds.get(state.id)!;
      try {
        const back = await read;
        const chain = new Uint32Array(back.buffer, 0, n);
        const tokens = new Uint32Array(n);
        tokens[0] = first ?? feed.next!;
        for (let i = 1; i < n; i++) tokens[i] = chain[i - 1];
        feed.next = chain[n - 1];
        return { tokens, logits: back.slice(MAX_CHAIN), next: feed.next };
      } finally {
        feed.pending--;
      }
    });
    this.results = result.catch(() => undefined);
    return result;
  }

  override releaseState(state: StateHandle): void {
    const feed = this.feeds.get(state.id);
    if (feed) this.kernels.free(feed.slot);
    this.feeds.delete(state.id);
    super.releaseState(state);
  }

  override dispose(): void {
    super.dispose();
    this.kernels.release(); // the device stays: other models share it (device.ts)
  }
}

export async function createWebGPUBackend(config: MambaConfig, weights: ModelWeights, o: BackendOptions): Promise<Backend> {
  const dtype = o.dtype ?? 'f32';
  if (!GPU_DTYPES.includes(dtype)) throw new InvalidOptionError('dtype', `the webgpu backend stores ${GPU_DTYPES.join(', ')} weights, got ${dtype}`);
  const g = o.webgpuKernels;
  return createWebGPUBackendWith(config, weights, { dtype: dtype as GpuWeightFormat, fused: g?.fusedDecode, gemvLanes: g?.gemvLanes, selfCheck: g?.selfCheck, maxBindingBytes: g?.maxBindingBytes });
}

type WebGPUBackendKnobs = { dtype: GpuWeightFormat; maxBindingBytes?: number; gemvLanes?: number; flatGemm?: boolean; tokenScan?: boolean; chunk?: number; fused?: boolean; selfCheck?: boolean };

/**
 * Dispatches a decode step records per layer, and outside the layers (embedding, final norm, head):
 * `stepDispatches` of one- and two-layer cuts of the model (`config.nLayer` ≥ 2), so the numbers
 * are the recorder's, not a count written down here. Tests and bench/webgpu.js report them.
 */
export async function countStepDispatches(config: MambaConfig, weights: ModelWeights, o: WebGPUBackendKnobs): Promise<{ perLayer: number; outside: number; fused: boolean }> {
  if (config.nLayer < 2) throw new RangeError('countStepDispatches: needs a model of at least two layers');
  const count = async (n: number) => {
    const be = await createWebGPUBackendWith({ ...config, nLayer: n }, { ...weights, layers: weights.layers.slice(0, n) }, o);
    try {
      return { n: await be.stepDispatches(), fused: be.fused };
    } finally {
      be.dispose();
    }
  };
  const one = await count(1);
  const two = await count(2);
  return { perLayer: two.n - one.n, outside: 2 * one.n - two.n, fused: one.fused };
}

/** As `createWebGPUBackend`, with knobs for tests (forced weight splitting). */
export async function createWebGPUBackendWith(
  config: MambaConfig,
  weights: ModelWeights,
  o: WebGPUBackendKnobs,
): Promise<WebGPUBackend> {
  const shaders = await loadShaderSources();
  // q8 / q4 keep the embedding and LM head in f16 (kernels.ts `tableFormat`): shader-f16 helps them too.
  return withSharedDevice(o.dtype !== 'f32', hashShaders(shaders), (ctx, pipelineCache) => createOn(ctx, shaders, pipelineCache, config, weights, o));
}

async function createOn(
  ctx: GpuContext,
  shaders: Record<ShaderName, string>,
  pipelineCache: PipelineCache,
  config: MambaConfig,
  weights: ModelWeights,
  o: Parameters<typeof createWebGPUBackendWith>[2],
): Promise<WebGPUBackend> {
  const { device } = ctx;
  const kernelOptions = {
    dtype: o.dtype,
    shaderF16: ctx.hasF16,
    // CPU adapters: barrier-free kernel shapes (see matmul.wgsl).
    gemvLanes: o.gemvLanes ?? (ctx.software ? 1 : 32),
    flatGemm: o.flatGemm ?? ctx.software,
    tokenScan: o.tokenScan ?? ctx.software,
    pipelineCache,
  };
  // On software adapters the fused step is slower (measured with bench/webgpu-profile.js on lavapipe).
  const fused = o.fused ?? !ctx.software;
  if (o.selfCheck !== false) {
    // Before the model's weights go up: an adapter that computes wrong is refused (selfcheck.ts).
    await selfCheck(ctx, shaders, { kernels: kernelOptions, fused, model: config }, (c, w, chunk, f) =>
      new WebGPUBackend(ctx, new WebGPUKernels(device, shaders, kernelOptions), 'webgpu self-check', c, w, chunk, f),
    );
  }
  const kernels = new WebGPUKernels(device, shaders, { ...kernelOptions, maxBindingBytes: o.maxBindingBytes });
  const half = ctx.hasF16 ? 'shader-f16' : 'packed u32';
  const format = o.dtype === 'f16' ? `f16 (${half})` : o.dtype === 'f32' ? 'f32' : `${o.dtype} (embedding and head f16, ${half})`;
  const description = `webgpu ${ctx.source}, ${ctx.adapterName}${ctx.software ? ' (software)' : ''}, ${format}`;
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let backend: WebGPUBackend;
  try {
    const chunk = o.chunk ?? (ctx.software ? undefined : GPU_CHUNK);
    backend = new WebGPUBackend(ctx, kernels, description, config, weights, chunk, fused);
  } catch (e) {
    await device.popErrorScope();
    await device.popErrorScope();
    kernels.release();
    throw e;
  }
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  if (oom || validation) {
    backend.dispose();
    if (oom) throw new OutOfMemoryError(`the model does not fit in GPU memory: ${oom.message}`);
    throw new OutOfMemoryError(`GPU rejected the model's buffers (limits?): ${validation!.message}`);
  }
  return backend;
}
