import type { MambaConfig } from './config.js';
import { argmax, Sampler } from './sampler.js';
import type { AnyLayerWeights, LayerWeights, Mamba2LayerWeights } from './weights.js';

export type BackendName = 'js' | 'wasm' | 'webgpu';

/** The recurrent state of every layer, in host memory: what a snapshot stores. */
export interface StateData {
  conv: Float32Array; // [L, E, K-1]  the last K-1 conv inputs per channel, oldest first
  ssm: Float32Array; // [L, E, N]
}

/** The sampling filters a device applies itself (no repetition penalty); `seed` starts its random stream. */
export interface DeviceSampling {
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

/** Opaque per-sequence state owned by a backend. */
export interface StateHandle {
  readonly id: number;
}

/**
 * What the engine needs from a compute backend: run tokens through the model, advancing a state.
 * Everything above this (sampling, streaming, sessions) is shared and backend-agnostic.
 */
export interface Backend {
  readonly name: BackendName;
  readonly config: MambaConfig;
  /** One line for stats and probes, e.g. "wasm simd, 2 threads, q8". */
  readonly description: string;
  createState(): StateHandle;
  /**
   * Feeds `tokens` (ids < `config.vocabSize`) through the model starting from `state`, which advances.
   * Returns logits `[T, V]` (`want: 'all'`) or `[V]` for the last token (`want: 'last'`).
   */
  forward(state: StateHandle, tokens: Uint32Array, want: 'all' | 'last'): Promise<Float32Array>;
  /**
   * Optional, for devices where a read-back is slow (WebGPU): greedy decoding kept on the device.
   * Feeds `n` tokens — `first`, then each argmax of the logits it produced — with one read-back at
   * the end. Returns the tokens fed (`tokens[0] === first`) and the logits `[V]` after the last one.
   */
  decodeGreedy?(state: StateHandle, first: number | null, n: number): Promise<DecodeBlock>;
  /** As `decodeGreedy`, each next token drawn on the device (temperature / top-k / top-p over the whole vocabulary). */
  decodeSampled?(state: StateHandle, first: number | null, n: number, sampling: DeviceSampling): Promise<DecodeBlock>;
  /**
   * The decode calls above may be issued before earlier ones on the same sequence resolve, with
   * `first` = null meaning "continue with the previous block's `next`", so the device works on one
   * block while the previous one is read back. Without it, `first` must be a token.
   */
  readonly decodeAhead?: boolean;
  readState(state: StateHandle): Promise<StateData>;
  writeState(state: StateHandle, data: StateData): Promise<void>;
  releaseState(state: StateHandle): void;
  dispose(): void;
}

/**
 * The kernel set a backend implements so the shared driver (`src/forward.ts`) can run the model.
 * `A` is an activation/state buffer handle, `W` a weight handle. Calls may execute at once (CPU)
 * or be recorded and run at `end()` (GPU: one command buffer per chunk).
 * Shapes: T tokens in the chunk, D model width, E inner width, N state size, K conv width, R Δ-rank.
 */
export interface Kernels<A, W> {
  /** Uploads one float32 weight tensor of shape `[rows, cols]` (vectors: rows = 1). */
  upload(data: Float32Array, rows: number, cols: number): W;
  /**
   * Optional: every tensor of one block is uploaded. A backend that keeps host copies until it knows
   * what each tensor is for (WebGPU) builds that block's device layouts here and drops them, so the
   * host never holds more than a block of float32 beyond its input (see `syntheticWeights`' `lazy`).
   */
  uploadedLayer?(layer: AnyLayerWeights<W>, config: MambaConfig): void;
  /** A zero-filled buffer of `floats` float32 values. */
  alloc(floats: number): A;
  free(buf: A): void;
  write(buf: A, data: Float32Array): void;
  /** A fresh copy (the caller owns it) of `floats` values starting at `offsetFloats`. */
  read(buf: A, floats: number, offsetFloats?: number): Promise<Float32Array>;
  /** Called before and after each chunk's kernels. */
  begin?(): void;
  end?(): void;

  /** out[t, :] = table[tokens[t], :]          out [T, D] */
  embed(tokens: Uint32Array, table: W, out: A, T: number, D: number): void;
  /** out[t, :] = x[t, :] / rms(x[t, :]) · w    x, out [T, dim] */
  rmsnorm(x: A, w: W, out: A, T: number, dim: number, eps: number): void;
  /**
   * In place, per row t of x [T, Σ segments]: each consecutive segment of the row divided by its own
   * rms, with no weight (Falcon-Mamba's Δ | B | C norms):  x[t, s] ← x[t, s] / sqrt(mean(x[t, s]²) + eps)
   */
  normSegments(x: A, T: number, segments: readonly number[], eps: number): void;
  /** out[t, n] (+)= Σ_k x[t, k] · w[n, k] + bias[n]    x [T, K], w [N, K], out [T, N] */
  matmul(x: A, w: W, bias: W | undefined, out: A, T: number, K: number, N: number, accumulate: boolean): void;
  /** Causal depthwise conv over the sequence continuing `state`, then SiLU.  x, out [T, E]; state [E, K-1] */
  conv1d(x: A, state: A, w: W, bias: W | undefined, out: A, T: number, E: number, K: number): void;
  /**
   * The fused selective scan: Δ = softplus(dt_proj(dbc[:, :R]) + b), state ← exp(Δ·A)·state + Δ·B·u,
   * y = C·state + D·u, out = y · SiLU(z).    u, z, out [T, E]; dbc [T, R+2N]; state [E, N]
   */
  scan(u: A, dbc: A, z: A, layer: LayerWeights<W>, state: A, out: A, T: number, cfg: MambaConfig): void;
  /**
   * Mamba-2's scan (src/reference/ssd.ts): Δ = clamp(softplus(dt + dt_bias)), per head
   * S ← exp(Δ·A)·S + Δ·x ⊗ B, y = S·C + D·x.    xbc [T, E+2GN] (x | B | C), dt [T, H]; state [H, P, N]; y [T, E]
   */
  ssd(xbc: A, dt: A, layer: Mamba2LayerWeights<W>, state: A, y: A, T: number, cfg: MambaConfig): void;
  /** Mamba-2's gated RMSNorm per group: out = rmsnorm_g(y·SiLU(z))·w.    y, z, out [T, E]; out ≠ y */
  gatedNorm(y: A, z: A, w: W, out: A, T: number, cfg: MambaConfig): void;
}

/** A block of decoded tokens: those fed (`tokens[0]` = first), the logits after the last, the next pick. */
export interface DecodeBlock {
  tokens: Uint32Array;
  logits: Float32Array;
  /** The token chosen from `logits`: the next block's first. */
  next: number;
}

/** `decodeGreedy` semantics, one `forward` per token: for backends (or fallbacks) without a device loop. */
export function greedySteps(b: Backend, state: StateHandle, first: number, n: number): Promise<DecodeBlock> {
  return steps(b, state, first, n, argmax);
}

/** `decodeSampled` semantics on the host (a different random stream than a device's, same filters). */
export function sampledSteps(b: Backend, state: StateHandle, first: number, n: number, s: DeviceSampling): Promise<DecodeBlock> {
  const sampler = new Sampler({ ...s, repetitionPenalty: 1, repetitionWindow: 0 }, b.config.vocabSize);
  return steps(b, state, first, n, (logits) => sampler.sample(logits, []));
}

async function steps(b: Backend, state: StateHandle, first: number, n: number, pick: (logits: Float32Array) => number): Promise<DecodeBlock> {
  const tokens = new Uint32Array(n);
  tokens[0] = first;
  let logits: Float32Array = new Float32Array(0);
  for (let i = 0; i < n; i++) {
    logits = await b.forward(state, tokens.subarray(i, i + 1), 'last');
    if (i + 1 < n) tokens[i + 1] = pick(logits);
  }
  return { tokens, logits, next: pick(logits) };
}
