import type { Backend, BackendName, Kernels, StateData, StateHandle } from './backend.js';
import { convChannels, type MambaConfig } from './config.js';
import { DisposedError, MambaError } from './errors.js';
import { isMamba2Layer, type AnyLayerWeights, type LayerWeights, type Mamba2LayerWeights, type ModelWeights } from './weights.js';

/** Prompt tokens processed per chunk: bounds activation memory for any prompt length. */
export const DEFAULT_CHUNK = 64;

/**
 * The chunk a backend runs a prompt in. The wasm GEMMs expand each f16 / q8 / q4 weight tile to f32 once
 * per chunk, so Mamba-1 there takes 128 tokens at a time (q8 prefill +5-9 % over 64 on the 2-vCPU VM, the
 * other formats ±2 %); Mamba-2's SSD keeps 64, since its intra-chunk term grows with the chunk's square.
 * `undefined` (not settled yet): the largest any backend takes, for memory estimates.
 */
export function prefillChunk(c: MambaConfig, backend?: BackendName): number {
  return !c.mamba2 && (backend === 'wasm' || backend === undefined) ? 2 * DEFAULT_CHUNK : DEFAULT_CHUNK;
}

export interface LayerState<A> {
  conv: A; // [C, K-1]   C = conv channels: E (Mamba-1), E + 2GN (Mamba-2)
  ssm: A; // [E, N]      Mamba-2: [H, P, N], the same size
}

/** Activation buffers for one chunk of up to `chunk` tokens, allocated once per backend. */
interface Scratch<A> {
  h: A; // [T, D]   residual stream
  xn: A; // [T, D]  normalised input of the current block
  x: A; // [T, C]   conv branch before conv (Mamba-2: x | B | C; later the gated norm's output)
  z: A; // [T, E]   gate branch
  u: A; // [T, C]   conv branch after conv + SiLU
  dbc: A; // [T, R+2N]  Mamba-1: x_proj output; Mamba-2: dt [T, H]
  y: A; // [T, E]   scan output (already gated)
  logits: A; // [T, V]
}

/**
 * The one path from tokens to logits, shared by every backend, written once against `Kernels`:
 * embedding, then per block RMSNorm → mixer → residual add, then the final norm and LM head. The
 * mixer is the architecture's recipe over the shared kernels: Mamba-1 (and Falcon-Mamba, which
 * normalises Δ, B and C after x_proj) or Mamba-2.
 */
export class KernelBackend<A, W> implements Backend {
  readonly name: BackendName;
  readonly config: MambaConfig;
  readonly description: string;
  protected readonly k: Kernels<A, W>;
  protected readonly w: ModelWeights<W>;
  private readonly chunk: number;
  protected readonly scratch: Scratch<A>;
  private readonly states = new Map<number, LayerState<A>[]>();
  private nextId = 1;
  private disposed = false;
  /** Serialises forward passes: scratch buffers are shared by all states. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    name: BackendName,
    description: string,
    kernels: Kernels<A, W>,
    config: MambaConfig,
    weights: ModelWeights,
    chunk = DEFAULT_CHUNK,
  ) {
    this.name = name;
    this.description = description;
    this.k = kernels;
    this.config = config;
    this.chunk = chunk;
    this.w = uploadWeights(kernels, config, weights);
    const { dModel: D, dInner: E, dtRank: R, dState: N, vocabSize: V } = config;
    const C = convChannels(config);
    const k = kernels;
    this.scratch = {
      h: k.alloc(chunk * D),
      xn: k.alloc(chunk * D),
      x: k.alloc(chunk * C),
      z: k.alloc(chunk * E),
      u: k.alloc(chunk * C),
      dbc: k.alloc(chunk * Math.max(R + 2 * N, config.mamba2?.nHeads ?? 0)),
      y: k.alloc(chunk * E),
      logits: k.alloc(chunk * V),
    };
  }

  createState(): StateHandle {
    this.check();
    const { nLayer, dInner: E, dConv: K, dState: N } = this.config;
    const C = convChannels(this.config);
    const id = this.nextId++;
    this.states.set(
      id,
      Array.from({ length: nLayer }, () => ({ conv: this.k.alloc(C * (K - 1)), ssm: this.k.alloc(E * N) })),
    );
    return { id };
  }

  forward(state: StateHandle, tokens: Uint32Array, want: 'all' | 'last'): Promise<Float32Array> {
    return this.serialize(() => this.forwardNow(this.layerStates(state), tokens, want));
  }

  /** Runs `fn` after every earlier forward pass: they all share the scratch buffers. */
  protected serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async forwardNow(st: LayerState<A>[], tokens: Uint32Array, want: 'all' | 'last'): Promise<Float32Array> {
    this.check();
    const V = this.config.vocabSize;
    if (tokens.length === 0) throw new MambaError('EMPTY_INPUT', 'forward needs at least one token');
    const out = want === 'all' ? new Float32Array(tokens.length * V) : undefined;
    for (let t0 = 0; ; t0 += this.chunk) {
      const T = Math.min(this.chunk, tokens.length - t0);
      this.k.begin?.();
      this.chunkForward(st, tokens.subarray(t0, t0 + T), T);
      this.k.end?.();
      const last = t0 + T === tokens.length;
      if (out) out.set(await this.k.read(this.scratch.logits, T * V), t0 * V);
      // 'last' (every decode step): the read is already a fresh [V] copy, hand it over as is.
      if (last) return out ?? this.k.read(this.scratch.logits, V, (T - 1) * V);
    }
  }

  /** One chunk of T tokens through every block; leaves logits [T, V] in scratch. */
  protected chunkForward(st: LayerState<A>[], tokens: Uint32Array, T: number): void {
    const { k, w, scratch: s, config: c } = this;
    const { dModel: D, vocabSize: V, eps } = c;
    k.embed(tokens, w.embedding, s.h, T, D);
    for (let l = 0; l < c.nLayer; l++) {
      const L = w.layers[l];
      k.rmsnorm(s.h, L.norm, s.xn, T, D, eps);
      if (isMamba2Layer(L)) this.mamba2Mixer(L, st[l], T);
      else this.mamba1Mixer(L, st[l], T);
    }
    k.rmsnorm(s.h, w.normF, s.xn, T, D, eps);
    k.matmul(s.xn, w.lmHead, undefined, s.logits, T, D, V, false);
  }

  /** Mamba-1 / Falcon-Mamba mixer, added to the residual:  xn [T, D] → h [T, D] += out_proj(y) */
  private mamba1Mixer(L: LayerWeights<W>, st: LayerState<A>, T: number): void {
    const { k, scratch: s, config: c } = this;
    const { dModel: D, dInner: E, dConv: K } = c;
    k.matmul(s.xn, L.inProjX, L.inProjXBias, s.x, T, D, E, false);
    k.matmul(s.xn, L.inProjZ, L.inProjZBias, s.z, T, D, E, false);
    k.conv1d(s.x, st.conv, L.convW, L.convB, s.u, T, E, K);
    this.xProj(s.u, L, s.dbc, T);
    k.scan(s.u, s.dbc, s.z, L, st.ssm, s.y, T, c);
    k.matmul(s.y, L.outProj, L.outProjBias, s.h, T, E, D, true); // residual add
  }

  /** Mamba-2 mixer, added to the residual:  xn [T, D] → h [T, D] += out_proj(gatedNorm(ssd(conv(xBC)), z)) */
  private mamba2Mixer(L: Mamba2LayerWeights<W>, st: LayerState<A>, T: number): void {
    const { k, scratch: s, config: c } = this;
    const { dModel: D, dInner: E, dConv: K } = c;
    const C = convChannels(c);
    k.matmul(s.xn, L.inProjZ, L.inProjZBias, s.z, T, D, E, false); //                z [T, E]
    k.matmul(s.xn, L.inProjX, L.inProjXBias, s.x, T, D, C, false); //                xBC [T, C]
    k.matmul(s.xn, L.inProjDt, L.inProjDtBias, s.dbc, T, D, c.mamba2!.nHeads, false); // dt [T, H]
    k.conv1d(s.x, st.conv, L.convW, L.convB, s.u, T, C, K); //                      x | B | C after SiLU
    k.ssd(s.u, s.dbc, L, st.ssm, s.y, T, c); //                                      y [T, E]
    k.gatedNorm(s.y, s.z, L.gateNorm, s.x, T, c); //                                 [T, E], into x
    k.matmul(s.x, L.outProj, L.outProjBias, s.h, T, E, D, true); //                  residual add
  }

  /** dbc = x_proj(u), then Falcon-Mamba's weightless RMSNorms of Δ, B and C.    u [T, E] → dbc [T, R+2N] */
  protected xProj(u: A, L: LayerWeights<W>, dbc: A, T: number): void {
    const { dInner: E, dtRank: R, dState: N, mixerRmsEps } = this.config;
    this.k.matmul(u, L.xProj, undefined, dbc, T, E, R + 2 * N, false);
    if (mixerRmsEps !== undefined) this.k.normSegments(dbc, T, [R, N, N], mixerRmsEps);
  }

  async readState(state: StateHandle): Promise<StateData> {
    await this.queue;
    const st = this.layerStates(state);
    const { nLayer, dInner: E, dConv: K, dState: N } = this.config;
    const C = convChannels(this.config);
    const conv = new Float32Array(nLayer * C * (K - 1));
    const ssm = new Float32Array(nLayer * E * N);
    for (let l = 0; l < nLayer; l++) {
      conv.set(await this.k.read(st[l].conv, C * (K - 1)), l * C * (K - 1));
      ssm.set(await this.k.read(st[l].ssm, E * N), l * E * N);
    }
    return { conv, ssm };
  }

  async writeState(state: StateHandle, data: StateData): Promise<void> {
    await this.queue;
    const st = this.layerStates(state);
    const { nLayer, dInner: E, dConv: K, dState: N } = this.config;
    const C = convChannels(this.config);
    if (data.conv.length !== nLayer * C * (K - 1) || data.ssm.length !== nLayer * E * N) {
      throw new MambaError('STATE_SHAPE', 'state does not match this model (conv or ssm size differs)');
    }
    for (let l = 0; l < nLayer; l++) {
      this.k.write(st[l].conv, data.conv.subarray(l * C * (K - 1), (l + 1) * C * (K - 1)));
      this.k.write(st[l].ssm, data.ssm.subarray(l * E * N, (l + 1) * E * N));
    }
  }

  releaseState(state: StateHandle): void {
    const st = this.states.get(state.id);
    if (!st) return;
    for (const { conv, ssm } of st) {
      this.k.free(conv);
      this.k.free(ssm);
    }
    this.states.delete(state.id);
  }

  dispose(): void {
    if (this.disposed) return;
    for (const id of [...this.states.keys()]) this.releaseState({ id });
    for (const buf of Object.values(this.scratch)) this.k.free(buf as A);
    this.disposed = true;
  }

  protected layerStates(state: StateHandle): LayerState<A>[] {
    this.check();
    const st = this.states.get(state.id);
    if (!st) throw new DisposedError(`state ${state.id}`);
    return st;
  }

  private check(): void {
    if (this.disposed) throw new DisposedError(`${this.name} backend`);
  }
}

/** Uploads every tensor once, reusing the embedding's handle for a tied head. */
export function uploadWeights<A, W>(k: Kernels<A, W>, c: MambaConfig, w: ModelWeights): ModelWeights<W> {
  const { dModel: D, dInner: E, dConv: K, dtRank: R, dState: N, vocabSize: V } = c;
  const vec = (x: Float32Array) => k.upload(x, 1, x.length);
  const opt = (x: Float32Array | undefined) => (x ? vec(x) : undefined);
  const C = convChannels(c);
  const H = c.mamba2?.nHeads ?? 0;
  const layers = w.layers.map((L): AnyLayerWeights<W> => {
    const up = uploadLayer(L);
    k.uploadedLayer?.(up, c);
    return up;
  });
  const embedding = k.upload(w.embedding, V, D);
  const lmHead = w.lmHead === w.embedding ? embedding : k.upload(w.lmHead, V, D);
  return { embedding, layers, normF: vec(w.normF), lmHead };

  function uploadLayer(L: AnyLayerWeights): AnyLayerWeights<W> {
    return isMamba2Layer(L)
      ? {
          norm: vec(L.norm),
          inProjZ: k.upload(L.inProjZ, E, D),
          inProjX: k.upload(L.inProjX, C, D),
          inProjDt: k.upload(L.inProjDt, H, D),
          inProjZBias: opt(L.inProjZBias),
          inProjXBias: opt(L.inProjXBias),
          inProjDtBias: opt(L.inProjDtBias),
          convW: k.upload(L.convW, C, K),
          convB: opt(L.convB),
          dtBias: vec(L.dtBias),
          A: vec(L.A),
          D: vec(L.D),
          gateNorm: vec(L.gateNorm),
          outProj: k.upload(L.outProj, D, E),
          outProjBias: opt(L.outProjBias),
        }
      : {
          norm: vec(L.norm),
          inProjX: k.upload(L.inProjX, E, D),
          inProjZ: k.upload(L.inProjZ, E, D),
          inProjXBias: opt(L.inProjXBias),
          inProjZBias: opt(L.inProjZBias),
          convW: k.upload(L.convW, E, K),
          convB: opt(L.convB),
          xProj: k.upload(L.xProj, R + 2 * N, E),
          dtProjW: k.upload(L.dtProjW, E, R),
          dtProjB: vec(L.dtProjB),
          A: k.upload(L.A, E, N),
          D: vec(L.D),
          outProj: k.upload(L.outProj, D, E),
          outProjBias: opt(L.outProjBias),
        };
  }
}
