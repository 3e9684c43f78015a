import type { Backend, StateData } from './backend.js';
import { createBackend, type BackendOptions, type SelectedBackend } from './backends.js';
import type { MambaConfig } from './config.js';
import { parameterCount } from './config.js';
import { resolveModelSource } from './defaults.js';
import { DisposedError, MambaError } from './errors.js';
import { generateTokens, pushHistory, type GenerateOptions, type GenerationChunk, type SequenceState } from './generate.js';
import { readModel, readTokenizer, type ModelSource, type ReadOptions } from './loader.js';
import { ByteTokenizer, encode, type Tokenizer } from './tokenizer.js';

export interface LoadOptions extends BackendOptions, ReadOptions {}

/**
 * A saved conversation: a Mamba state has constant size, so this is all it takes to resume or fork
 * exactly. Plain data (typed arrays): structured-clone it to a worker or IndexedDB, or use
 * `encodeSnapshot` for bytes.
 */
export interface Snapshot {
  format: 'mamba-edge-snapshot';
  version: 1;
  /** Shape fingerprint of the model the state belongs to. */
  model: string;
  conv: Float32Array; // [L, E, K-1]
  ssm: Float32Array; // [L, E, N]
  /** Logits predicting the next byte [V], or null for an empty session. */
  logits: Float32Array | null;
  /** Recent bytes, for the repetition penalty. */
  history: Uint8Array;
}

function checkSnapshot(s: Snapshot, c: MambaConfig): void {
  if (s?.format !== 'mamba-edge-snapshot' || s.version !== 1) throw new MambaError('SNAPSHOT', 'not a mamba-edge snapshot (version 1)');
  const want = fingerprint(c);
  if (s.model !== want) throw new MambaError('SNAPSHOT', `snapshot is for model ${s.model}, this model is ${want}`);
  if (s.logits && s.logits.length !== c.vocabSize) throw new MambaError('SNAPSHOT', 'snapshot logits have the wrong size');
  if (s.conv.length !== c.nLayer * c.dInner * (c.dConv - 1) || s.ssm.length !== c.nLayer * c.dInner * c.dState) {
    throw new MambaError('SNAPSHOT', 'snapshot state has the wrong size for this model');
  }
}

const SNAPSHOT_MAGIC = 0x5353454d; // "MESS" little-endian: Mamba-Edge Session State

/**
 * A snapshot as bytes, for files or the network:
 * u32 magic, u32 header length, JSON header {model, version, sizes}, then conv, ssm, logits as f32 LE, history bytes.
 */
export function encodeSnapshot(s: Snapshot): Uint8Array {
  const header = new TextEncoder().encode(
    JSON.stringify({ model: s.model, version: s.version, conv: s.conv.length, ssm: s.ssm.length, logits: s.logits?.length ?? 0, history: s.history.length }),
  );
  const pad = (4 - (header.length % 4)) % 4;
  const floats = s.conv.length + s.ssm.length + (s.logits?.length ?? 0);
  const out = new Uint8Array(8 + header.length + pad + 4 * floats + s.history.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, SNAPSHOT_MAGIC, true);
  dv.setUint32(4, header.length + pad, true);
  out.set(header, 8);
  out.fill(0x20, 8 + header.length, 8 + header.length + pad);
  let p = 8 + header.length + pad;
  for (const a of [s.conv, s.ssm, s.logits ?? new Float32Array(0)]) {
    for (let i = 0; i < a.length; i++, p += 4) dv.setFloat32(p, a[i], true);
  }
  out.set(s.history, p);
  return out;
}

export function decodeSnapshot(bytes: Uint8Array): Snapshot {
  const bad = (why: string) => new MambaError('SNAPSHOT', `not a valid encoded snapshot: ${why}`);
  if (bytes.length < 8) throw bad('too short');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, true) !== SNAPSHOT_MAGIC) throw bad('wrong magic');
  const hlen = dv.getUint32(4, true);
  if (8 + hlen > bytes.length) throw bad('truncated header');
  let h: { model: string; version: number; conv: number; ssm: number; logits: number; history: number };
  try {
    h = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + hlen)));
  } catch {
    throw bad('header is not JSON');
  }
  const sizes = [h.conv, h.ssm, h.logits, h.history];
  if (!sizes.every((n) => Number.isSafeInteger(n) && n >= 0)) throw bad('bad sizes');
  if (bytes.length !== 8 + hlen + 4 * (h.conv + h.ssm + h.logits) + h.history) throw bad('length does not match the header');
  let p = 8 + hlen;
  const floats = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++, p += 4) a[i] = dv.getFloat32(p, true);
    return a;
  };
  const conv = floats(h.conv);
  const ssm = floats(h.ssm);
  const logits = h.logits ? floats(h.logits) : null;
  return { format: 'mamba-edge-snapshot', version: 1, model: h.model, conv, ssm, logits, history: bytes.slice(p) };
}

function fingerprint(c: MambaConfig): string {
  return `mamba1:D${c.dModel}:L${c.nLayer}:E${c.dInner}:N${c.dState}:K${c.dConv}:R${c.dtRank}:V${c.vocabSize}`;
}

/** Runs `fn` after every earlier call has finished: one sequence never interleaves two generations. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    return release;
  }
}

/** A sequence with its own recurrent state: generate, continue, snapshot, restore, fork. */
export class Session {
  private readonly seq: SequenceState;
  private readonly mutex = new Mutex();
  private disposed = false;

  /** @internal use `model.createSession()` */
  constructor(
    private readonly model: Model,
    ephemeral = false,
  ) {
    this.seq = { handle: model.backend.createState(), logits: null, history: new Uint8Array(0), ephemeral };
  }

  /** Streams a continuation of everything this session has seen, then `prompt`. */
  async *generate(prompt: string | Uint8Array, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk> {
    const release = await this.mutex.lock();
    try {
      this.check();
      yield* generateTokens(this.model.backend, this.seq, prompt, options);
    } finally {
      release();
    }
  }

  /** Feeds text into the state without generating (e.g. a system prompt). */
  async feed(text: string | Uint8Array): Promise<void> {
    const bytes = encode(text);
    if (bytes.length === 0) return;
    const release = await this.mutex.lock();
    try {
      this.check();
      this.seq.logits = await this.model.backend.forward(this.seq.handle, bytes, 'last');
      this.seq.history = pushHistory(this.seq.history, bytes);
    } finally {
      release();
    }
  }

  async snapshot(): Promise<Snapshot> {
    const release = await this.mutex.lock();
    try {
      this.check();
      const { conv, ssm } = await this.model.backend.readState(this.seq.handle);
      return {
        format: 'mamba-edge-snapshot',
        version: 1,
        model: fingerprint(this.model.config),
        conv,
        ssm,
        logits: this.seq.logits?.slice() ?? null,
        history: this.seq.history.slice(),
      };
    } finally {
      release();
    }
  }

  async restore(s: Snapshot): Promise<void> {
    const release = await this.mutex.lock();
    try {
      this.check();
      checkSnapshot(s, this.model.config);
      const data: StateData = { conv: s.conv, ssm: s.ssm };
      await this.model.backend.writeState(this.seq.handle, data);
      this.seq.logits = s.logits ? s.logits.slice() : null;
      this.seq.history = s.history.slice();
    } finally {
      release();
    }
  }

  /** A new session starting from this one's current state. */
  async fork(): Promise<Session> {
    const copy = this.model.createSession();
    await copy.restore(await this.snapshot());
    return copy;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (!this.model.disposed) this.model.backend.releaseState(this.seq.handle);
  }

  private failure: unknown;

  /** @internal a restore that was started by `createSession(snapshot)` failed: later calls report it. */
  fail(e: unknown): void {
    this.failure = e;
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.disposed) throw new DisposedError('session');
    if (this.model.disposed) throw new DisposedError('model');
  }
}

export class Model {
  disposed = false;

  /** @internal use `loadModel()` */
  constructor(
    readonly config: MambaConfig,
    /** The backend, with `selection` (why it was picked) when `loadModel` chose it. */
    readonly backend: SelectedBackend,
    /**
     * Text ↔ token ids: the model's tokenizer.json (Tokenizers.js), or, without one, UTF-8 bytes
     * (MambaByte). `model.tokenizer.encode(text)`, `model.tokenizer.decode(ids)`.
     */
    readonly tokenizer: Tokenizer = new ByteTokenizer(),
  ) {}

  get parameters(): number {
    return parameterCount(this.config);
  }

  /** A one-off generation from an empty state. Concurrent calls each get their own state. */
  async *generate(prompt: string | Uint8Array, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk> {
    this.check();
    const session = new Session(this, true);
    try {
      yield* session.generate(prompt, options);
    } finally {
      session.dispose();
    }
  }

  /** A new, empty sequence; or one resuming `snapshot` (checked at once, applied before the first call). */
  createSession(snapshot?: Snapshot): Session {
    this.check();
    if (snapshot) checkSnapshot(snapshot, this.config);
    const s = new Session(this);
    if (snapshot) s.restore(snapshot).catch((e) => s.fail(e));
    return s;
  }

  /** Logits for every position of `input`, from an empty state: float32 [T, V]. */
  async logits(input: string | Uint8Array): Promise<Float32Array> {
    this.check();
    const bytes = encode(input);
    const state = this.backend.createState();
    try {
      return await this.backend.forward(state, bytes, 'all');
    } finally {
      this.backend.releaseState(state);
    }
  }

  /**
   * Bits per byte of `input` under the model: the mean of −log2 p(byte_t | bytes_<t) over t ≥ 1
   * (the first byte has no context and is not scored). Streams in blocks, so memory stays bounded.
   */
  async bitsPerByte(input: string | Uint8Array, signal?: AbortSignal): Promise<number> {
    this.check();
    const bytes = encode(input);
    if (bytes.length < 2) throw new MambaError('EMPTY_INPUT', 'bits per byte needs at least 2 bytes');
    const V = this.config.vocabSize;
    const state = this.backend.createState();
    const block = 4096;
    let nats = 0;
    try {
      for (let t0 = 0; t0 < bytes.length - 1; t0 += block) {
        signal?.throwIfAborted();
        const T = Math.min(block, bytes.length - 1 - t0);
        const logits = await this.backend.forward(state, bytes.subarray(t0, t0 + T), 'all');
        for (let t = 0; t < T; t++) {
          const row = logits.subarray(t * V, (t + 1) * V);
          let max = -Infinity;
          for (let v = 0; v < V; v++) max = Math.max(max, row[v]);
          let sum = 0;
          for (let v = 0; v < V; v++) sum += Math.exp(row[v] - max);
          nats += Math.log(sum) + max - row[bytes[t0 + t + 1]];
        }
      }
    } finally {
      this.backend.releaseState(state);
    }
    return nats / (bytes.length - 1) / Math.LN2;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.backend.dispose();
  }

  private check(): void {
    if (this.disposed) throw new DisposedError('model');
  }
}

/**
 * Loads a model from a directory, a URL or in-memory files, on the chosen (or best available) backend.
 * Without a source (or `undefined`), the model bundled with the package (Node, Deno).
 */
export async function loadModel(source?: ModelSource, options: LoadOptions = {}): Promise<Model> {
  const { config, weights, tokenizer } = await readModel(resolveModelSource(source), options);
  const backend = await createBackend(config, weights, options);
  return new Model(config, backend, tokenizer);
}

/**
 * Only the tokenizer of a model (config.json and tokenizer.json, no weights read or downloaded):
 * the same `Tokenizer` as `(await loadModel(source)).tokenizer`.
 */
export async function loadTokenizer(source?: ModelSource, options: ReadOptions = {}): Promise<Tokenizer> {
  return readTokenizer(resolveModelSource(source), options);
}
