import type { Backend, StateData } from './backend.js';
import { createBackend, planBackend, type BackendOptions, type BackendSelection, type SelectedBackend } from './backends.js';
import { convChannels, parameterCount, type MambaConfig } from './config.js';
import { resolveModelSource } from './defaults.js';
import { DisposedError, MambaError, OutOfMemoryError } from './errors.js';
import { checkGenerateArgs, generateTokens, HISTORY, pushHistory, yieldToEventLoop, type GenerateOptions, type GenerationChunk, type SequenceState } from './generate.js';
import { checkSignal, inputText, isTextInput, isTyped, planLogits, tokenCount, tokenize, type LogitsOptions, type TokenInput } from './inputs.js';
import { readModel, readTokenizer, type ModelSource, type ReadOptions } from './loader.js';
import { queuedGenerator, SessionQueue } from './session-queue.js';
import { ByteTokenizer, type Tokenizer } from './tokenizer.js';
import type { ModelWeights } from './weights.js';

export interface LoadOptions extends BackendOptions, ReadOptions {}

/**
 * A saved conversation: a Mamba state has constant size, so this is all it takes to resume or fork
 * exactly. Plain data (typed arrays): structured-clone it to a worker or IndexedDB, or use
 * `encodeSnapshot` for bytes.
 */
export interface Snapshot {
  format: 'mamba-edge-snapshot';
  /** 2: token-id history. Version-1 snapshots (byte history) are still restored and decoded. */
  version: 2;
  /** The model the state belongs to: its architecture, shapes and a digest of its weights (`Model.identity`). */
  model: string;
  conv: Float32Array; // [L, C, K-1]  C = E (Mamba-1), E + 2GN (Mamba-2)
  ssm: Float32Array; // [L, E, N]    Mamba-2: [L, H, P, N]
  /** Logits predicting the next token [V], or null for an empty session. */
  logits: Float32Array | null;
  /** Recent token ids, for the repetition penalty. */
  history: Uint32Array;
}

/** What sessions saved before token ids were 32-bit: the same, with a byte history. Still restored. */
export interface SnapshotV1 extends Omit<Snapshot, 'version' | 'history'> {
  version: 1;
  history: Uint8Array;
}

export const SNAPSHOT_VERSION = 2;

const snapshotError = (why: string) => new MambaError('SNAPSHOT', why);

function allFinite(a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

/** The model-independent checks: a snapshot object with arrays of the right kinds and finite states. */
function checkSnapshotShape(s: unknown): asserts s is Snapshot | SnapshotV1 {
  const o = s as Partial<Snapshot | SnapshotV1> | null;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw snapshotError('not a mamba-edge snapshot: expected the object session.snapshot() returns');
  if (o.format !== 'mamba-edge-snapshot' || (o.version !== 1 && o.version !== 2)) throw snapshotError('not a mamba-edge snapshot (version 1 or 2)');
  if (typeof o.model !== 'string') throw snapshotError('snapshot.model must be a string');
  for (const key of ['conv', 'ssm'] as const) {
    if (!isTyped(o[key], 'Float32Array')) throw snapshotError(`snapshot.${key} must be a Float32Array`);
    if (!allFinite(o[key]!)) throw snapshotError(`snapshot.${key} holds NaN or infinite values`);
  }
  if (o.logits !== null && !isTyped(o.logits, 'Float32Array')) throw snapshotError('snapshot.logits must be a Float32Array or null');
  if (o.logits && !allFinite(o.logits)) throw snapshotError('snapshot.logits holds NaN or infinite values');
  if (o.version === 1 && !isTyped(o.history, 'Uint8Array')) throw snapshotError('snapshot.history must be a Uint8Array (version 1)');
  if (o.version === 2 && !isTyped(o.history, 'Uint32Array')) throw snapshotError('snapshot.history must be a Uint32Array of token ids');
}

/** Everything, against the model it is being restored into. */
function checkSnapshot(s: unknown, model: Model): asserts s is Snapshot | SnapshotV1 {
  checkSnapshotShape(s);
  const c = model.config;
  if (s.model !== model.identity) {
    const sameShapes = s.model.split(':W')[0] === shapeFingerprint(c);
    throw snapshotError(
      `snapshot is for model ${s.model}, this model is ${model.identity}${sameShapes ? ' (same shapes, different weights)' : ''}`,
    );
  }
  if (s.logits && s.logits.length !== c.vocabSize) throw snapshotError('snapshot logits have the wrong size');
  for (const id of s.history) if (id >= c.vocabSize) throw snapshotError(`snapshot history holds token id ${id}, outside this model's vocabulary (${c.vocabSize})`);
  if (s.conv.length !== c.nLayer * convChannels(c) * (c.dConv - 1) || s.ssm.length !== c.nLayer * c.dInner * c.dState) {
    throw snapshotError('snapshot state has the wrong size for this model');
  }
}

const SNAPSHOT_MAGIC = 0x5353454d; // "MESS" little-endian: Mamba-Edge Session State

/**
 * A snapshot as bytes, for files or the network:
 * u32 magic, u32 header length, JSON header {model, version, sizes}, then conv, ssm, logits as f32 LE,
 * then the history: u32 LE token ids (version 2; version 1, still decoded, had one byte per token).
 */
export function encodeSnapshot(s: Snapshot | SnapshotV1): Uint8Array {
  checkSnapshotShape(s);
  const header = new TextEncoder().encode(
    JSON.stringify({ model: s.model, version: SNAPSHOT_VERSION, conv: s.conv.length, ssm: s.ssm.length, logits: s.logits?.length ?? 0, history: s.history.length }),
  );
  const pad = (4 - (header.length % 4)) % 4;
  const floats = s.conv.length + s.ssm.length + (s.logits?.length ?? 0);
  const out = new Uint8Array(8 + header.length + pad + 4 * (floats + s.history.length));
  const dv = new DataView(out.buffer);
  dv.setUint32(0, SNAPSHOT_MAGIC, true);
  dv.setUint32(4, header.length + pad, true);
  out.set(header, 8);
  out.fill(0x20, 8 + header.length, 8 + header.length + pad);
  let p = 8 + header.length + pad;
  for (const a of [s.conv, s.ssm, s.logits ?? new Float32Array(0)]) {
    for (let i = 0; i < a.length; i++, p += 4) dv.setFloat32(p, a[i], true);
  }
  for (let i = 0; i < s.history.length; i++, p += 4) dv.setUint32(p, s.history[i], true);
  return out;
}

export function decodeSnapshot(bytes: Uint8Array): Snapshot {
  const bad = (why: string) => snapshotError(`not a valid encoded snapshot: ${why}`);
  if (!isTyped(bytes, 'Uint8Array')) throw bad('expected a Uint8Array');
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
  if (typeof h !== 'object' || h === null || Array.isArray(h)) throw bad('header is not a JSON object');
  if ((h.version !== 1 && h.version !== 2) || typeof h.model !== 'string') throw bad('header needs version 1 or 2 and a model string');
  const sizes = [h.conv, h.ssm, h.logits, h.history];
  if (!sizes.every((n) => Number.isSafeInteger(n) && n >= 0)) throw bad('bad sizes');
  const idBytes = h.version === 1 ? 1 : 4;
  if (bytes.length !== 8 + hlen + 4 * (h.conv + h.ssm + h.logits) + idBytes * h.history) throw bad('length does not match the header');
  let p = 8 + hlen;
  const floats = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++, p += 4) a[i] = dv.getFloat32(p, true);
    return a;
  };
  const conv = floats(h.conv);
  const ssm = floats(h.ssm);
  const logits = h.logits ? floats(h.logits) : null;
  const history = new Uint32Array(h.history);
  for (let i = 0; i < h.history; i++, p += idBytes) history[i] = idBytes === 1 ? bytes[p] : dv.getUint32(p, true);
  const s: Snapshot = { format: 'mamba-edge-snapshot', version: 2, model: h.model, conv, ssm, logits, history };
  checkSnapshotShape(s); // finite states
  return s;
}

/** The architecture and every shape a state depends on: a snapshot restores only into the same. */
function shapeFingerprint(c: MambaConfig): string {
  const shapes = `D${c.dModel}:L${c.nLayer}:E${c.dInner}:N${c.dState}:K${c.dConv}:V${c.vocabSize}`;
  if (c.mamba2) return `mamba2:${shapes}:H${c.mamba2.nHeads}:G${c.mamba2.nGroups}`;
  return `${c.mixerRmsEps !== undefined ? 'falcon_mamba' : 'mamba1'}:${shapes}:R${c.dtRank}`;
}

/** Values sampled per tensor for the weights digest: enough to tell fine-tunes apart, cheap for any model size. */
const DIGEST_SAMPLES = 64;

/**
 * A digest of the weights (FNV-1a over the bits of up to 64 evenly spaced values of every tensor,
 * as float32): two checkpoints with the same shapes get different identities, so a snapshot of one
 * is not silently restored into the other. Computed once at load, in microseconds.
 */
export function weightsDigest(w: ModelWeights): string {
  let h = 0x811c9dc5;
  const bits = new Float32Array(1);
  const u = new Uint32Array(bits.buffer);
  const layerTensors = w.layers.flatMap((l) => Object.keys(l).sort().map((k) => l[k as keyof typeof l]));
  const tensors = [w.embedding, w.normF, w.lmHead, ...layerTensors].filter((t): t is Float32Array => t !== undefined);
  for (const t of tensors) {
    const step = Math.max(1, Math.floor(t.length / DIGEST_SAMPLES));
    for (let i = 0; i < t.length; i += step) {
      bits[0] = t[i];
      h = Math.imul(h ^ u[0], 0x01000193) >>> 0;
    }
  }
  return h.toString(16).padStart(8, '0');
}

/** A sequence with its own recurrent state: generate, continue, snapshot, restore, fork. */
export class Session {
  private readonly seq: SequenceState;
  /** Calls run one at a time, in the order they were made (see session-queue.ts for abandoned generators). */
  private readonly queue = new SessionQueue();
  private disposed = false;

  /** @internal use `model.createSession()` */
  constructor(
    private readonly model: Model,
    ephemeral = false,
  ) {
    this.seq = { handle: model.backend.createState(), logits: null, history: new Uint32Array(0), ephemeral };
  }

  /**
   * Streams a continuation of everything this session has seen, then `prompt`. Takes its place
   * among the session's calls now; ended by a later call if its consumer stops reading it.
   */
  generate(prompt: TokenInput, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk> {
    const ticket = this.queue.enter(true);
    let ids: Uint32Array; // the prompt tokenized once, when checked
    return queuedGenerator(
      ticket,
      () => void (ids = checkGenerateArgs(prompt, options, this.model.config.vocabSize, this.model.tokenizer).promptTokens),
      () => this.check(),
      () => generateTokens(this.model.backend, this.seq, ids, options, this.model.tokenizer),
    );
  }

  /** Feeds text (tokenized by the model's tokenizer) or token ids into the state without generating (e.g. a system prompt). */
  async feed(text: TokenInput): Promise<void> {
    const ids = tokenize(text, 'text', this.model.config.vocabSize, this.model.tokenizer);
    if (ids.length === 0) return;
    await this.run(async () => {
      this.seq.logits = await this.model.backend.forward(this.seq.handle, ids, 'last');
      this.seq.history = pushHistory(this.seq.history, ids);
    });
  }

  snapshot(): Promise<Snapshot> {
    return this.run(async () => {
      const { conv, ssm } = await this.model.backend.readState(this.seq.handle);
      return {
        format: 'mamba-edge-snapshot' as const,
        version: 2 as const,
        model: this.model.identity,
        conv,
        ssm,
        logits: this.seq.logits?.slice() ?? null,
        history: this.seq.history.slice(),
      };
    });
  }

  /** Also takes a version-1 snapshot (byte history) saved before token ids were 32-bit. */
  restore(s: Snapshot | SnapshotV1): Promise<void> {
    return this.run(async () => {
      checkSnapshot(s, this.model);
      const data: StateData = { conv: s.conv, ssm: s.ssm };
      await this.model.backend.writeState(this.seq.handle, data);
      this.seq.logits = s.logits ? s.logits.slice() : null;
      this.seq.history = Uint32Array.from(s.history.subarray(-HISTORY));
    });
  }

  /** A new session starting from this one's current state. */
  async fork(): Promise<Session> {
    const copy = this.model.createSession();
    await copy.restore(await this.snapshot());
    return copy;
  }

  /** Frees the state once the call running now has finished; later calls fail with `DisposedError`. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const free = () => {
      if (!this.model.disposed) this.model.backend.releaseState(this.seq.handle);
    };
    const ticket = this.queue.enter();
    if (ticket.granted) {
      free();
      ticket.release();
      return;
    }
    // A waiting call: an abandoned generator ahead of it is ended rather than waited for.
    ticket.turn().then(free).finally(() => ticket.release());
  }

  private failure: unknown;

  /** @internal a restore that was started by `createSession(snapshot)` failed: later calls report it. */
  fail(e: unknown): void {
    this.failure = e;
  }

  /** Runs `fn` in this call's turn. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    const ticket = this.queue.enter();
    try {
      await ticket.turn();
      this.check();
      return await fn();
    } finally {
      ticket.release();
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.disposed) throw new DisposedError('session');
    if (this.model.disposed) throw new DisposedError('model');
  }
}

/** Positions per backend call in `logits()` (where an abort is noticed): a multiple of the driver's 64-token chunk, so the numerics equal one call. */
const LOGITS_SLICE = 1024;
/** At most this many bytes of logits per backend call (large vocabularies get fewer positions). */
const LOGITS_SLICE_BYTES = 16 * 2 ** 20;

export class Model {
  disposed = false;
  /** What snapshots are checked against: the shapes and a digest of the weights. */
  readonly identity: string;

  /** @internal use `loadModel()` */
  constructor(
    readonly config: MambaConfig,
    /** The backend, with `selection` (why it was picked) when `loadModel` chose it. */
    readonly backend: SelectedBackend,
    weights?: ModelWeights | string,
    /**
     * Text ↔ token ids: the model's tokenizer.json (Tokenizers.js), or, without one, UTF-8 bytes
     * (MambaByte). `model.tokenizer.encode(text)`, `model.tokenizer.decode(ids)`.
     */
    readonly tokenizer: Tokenizer = new ByteTokenizer(),
  ) {
    const digest = typeof weights === 'string' ? weights : weights ? weightsDigest(weights) : undefined;
    this.identity = shapeFingerprint(config) + (digest ? `:W${digest}` : '');
  }

  get parameters(): number {
    return parameterCount(this.config);
  }

  /** A one-off generation from an empty state. Concurrent calls each get their own state. */
  async *generate(prompt: TokenInput, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk> {
    this.check();
    const session = new Session(this, true);
    try {
      yield* session.generate(prompt, options);
    } finally {
      session.dispose();
    }
  }

  /** A new, empty sequence; or one resuming `snapshot` (checked at once, applied before the first call). */
  createSession(snapshot?: Snapshot | SnapshotV1): Session {
    this.check();
    if (snapshot !== undefined) checkSnapshot(snapshot, this);
    const s = new Session(this);
    if (snapshot) s.restore(snapshot).catch((e) => s.fail(e));
    return s;
  }

  /**
   * Logits from an empty state: float32 `[T, V]` for every token of `input` (text is tokenized by the
   * model's tokenizer; T = its token count), or fewer rows with
   * `positions` (`'last'` → `[V]`, `{ start, end }` → `[end − start, V]`). A result over
   * `maxMemoryBytes` (default 1 GiB) is refused with `OutOfMemoryError` before anything is
   * allocated; the input is read in slices, so `signal` lands between them.
   */
  async logits(input: TokenInput, options?: LogitsOptions): Promise<Float32Array> {
    this.check();
    const V = this.config.vocabSize;
    // The size limit first: a huge input is refused before it is even copied (text for a tokenizer.json
    // model has to be tokenized to be counted).
    const early = this.tokenizer.kind === 'hf' && isTextInput(input) ? undefined : tokenCount(input, 'input');
    if (early !== undefined) planLogits(early, V, options);
    const bytes = tokenize(input, 'input', V, this.tokenizer);
    const { start, end, signal } = planLogits(bytes.length, V, options);
    let out: Float32Array;
    try {
      out = new Float32Array((end - start) * V);
    } catch (e) {
      throw new OutOfMemoryError(`could not allocate logits for ${end - start} positions x ${V}: ${(e as Error).message}`);
    }
    const rows = Math.max(64, Math.min(LOGITS_SLICE, Math.floor(LOGITS_SLICE_BYTES / (4 * V) / 64) * 64));
    const state = this.backend.createState();
    try {
      // Positions before the first wanted row only advance the state (the last one aligned to 64).
      const from = start - (start % 64);
      for (let t = 0; t < end; ) {
        signal?.throwIfAborted();
        if (t > 0) await yieldToEventLoop(); // lets a timer's abort land
        if (t < from) {
          const stop = Math.min(from, t + LOGITS_SLICE);
          await this.backend.forward(state, bytes.subarray(t, stop), 'last');
          t = stop;
          continue;
        }
        const stop = Math.min(end, t + rows);
        const l = await this.backend.forward(state, bytes.subarray(t, stop), 'all');
        const skip = Math.max(0, start - t);
        out.set(l.subarray(skip * V), (t + skip - start) * V);
        t = stop;
      }
      signal?.throwIfAborted();
    } finally {
      this.backend.releaseState(state);
    }
    return out;
  }

  /**
   * Bits per UTF-8 byte of `input` under the model: the total negative log-likelihood of its tokens
   * t ≥ 1, −Σ log2 p(token_t | tokens_<t), divided by the UTF-8 bytes of their text (the first token
   * has no context and is not scored, nor are its bytes counted). A byte-level model: the mean over
   * bytes t ≥ 1. With a tokenizer.json this still counts bytes of text, not tokens: the measure that
   * compares models across tokenizers. Streams in blocks, so memory stays bounded.
   */
  async bitsPerByte(input: TokenInput, signal?: AbortSignal): Promise<number> {
    this.check();
    const bytes = tokenize(input, 'input', this.config.vocabSize, this.tokenizer);
    checkSignal(signal);
    if (bytes.length < 2) throw new MambaError('EMPTY_INPUT', `bits per byte needs at least 2 tokens, got ${bytes.length}`);
    const scoredBytes = this.scoredBytes(input, bytes);
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
    return nats / scoredBytes / Math.LN2;
  }

  /** UTF-8 bytes of the text of `ids` after the first (the scored ones): byte models, one per id. */
  private scoredBytes(input: TokenInput, ids: Uint32Array): number {
    if (this.tokenizer.kind === 'byte') return ids.length - 1;
    const utf8 = (s: string) => new TextEncoder().encode(s).length;
    const text = isTextInput(input) ? inputText(input, 'input') : this.tokenizer.decode(ids, { skipSpecialTokens: false });
    // The first token's bytes; one that ends inside a character decodes with a trailing U+FFFD, not counted.
    const first = this.tokenizer.decode(ids.subarray(0, 1), { skipSpecialTokens: false }).replace(/\uFFFD+$/, '');
    const n = utf8(text) - utf8(first);
    if (n <= 0) throw new MambaError('EMPTY_INPUT', 'bits per byte needs text after the first token');
    return n;
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
  let plan: BackendSelection | undefined;
  // The backend and weight format are settled from config.json: a model none can hold is refused unread.
  const { config, weights, tokenizer } = await readModel(resolveModelSource(source), options, async (c) => {
    plan = await planBackend(c, options);
    return { backend: plan.backend, dtype: plan.dtype };
  });
  const digest = weightsDigest(weights); // before the backend takes the weights over
  const backend = await createBackend(config, weights, options, plan);
  return new Model(config, backend, digest, tokenizer);
}

/**
 * Only the tokenizer of a model (config.json and tokenizer.json, no weights read or downloaded):
 * the same `Tokenizer` as `(await loadModel(source)).tokenizer`.
 */
export async function loadTokenizer(source?: ModelSource, options: ReadOptions = {}): Promise<Tokenizer> {
  return readTokenizer(resolveModelSource(source), options);
}
