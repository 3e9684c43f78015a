/**
 * The engine as it runs inside the worker: an in-process `Model` plus the id tables the main thread
 * addresses it by. Independent of how messages arrive (comlink wiring is in engine-worker.ts).
 */
import type { Backend, StateData, StateHandle } from '../src/backend.js';
import type { BackendSelection, SelectedBackend } from '../src/backends.js';
import { createBackend, planBackend } from '../src/backends.js';
import { DisposedError, MambaError } from '../src/errors.js';
import type { GenerationChunk } from '../src/generate.js';
import type { LoadProgress } from '../src/loader.js';
import { readModel } from '../src/loader.js';
import { Model, weightsDigest, type Session, type Snapshot, type SnapshotV1 } from '../src/model.js';
import type { TokenInput } from '../src/inputs.js';
import { probe } from '../src/probe.js';
import type { EngineApi, LoadInfo, StreamBatch, WireGenerateOptions, WireLoadOptions, WireLogitsOptions, WireSource } from './engine-protocol.js';

/** A stream round trip ends after this long or this many bytes, whichever comes first. */
export const BATCH_MS = 16;
export const BATCH_BYTES = 64;

/** How long the engine may compute before letting queued messages (aborts) in. */
const YIELD_EVERY_MS = 8;

const now = () => performance.now();

/** Lets the event loop deliver pending messages. setImmediate in Node; a MessageChannel hop elsewhere (setTimeout is clamped to 4 ms). */
function yieldToEventLoop(): Promise<void> {
  const si = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate;
  if (si) return new Promise((r) => si(r));
  return new Promise((r) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      r();
    };
    ch.port2.postMessage(null);
  });
}

/** Forwards longer than this are run in slices (a multiple of the driver's 64-token chunk: same numerics). */
const SLICE_TOKENS = 512;

let lastYield = now();

/**
 * The backend, except that a forward lets the event loop in when the engine has been busy for a
 * while, and long forwards run in slices. The CPU backends compute inside promise chains
 * (microtasks only), so without this an `abort` message could not even be received until a long
 * `bitsPerByte` or prefill had finished. With a `signal`, a forward also stops between slices once
 * it is aborted (used for `bitsPerByte`, whose state is thrown away).
 */
class YieldingBackend implements Backend {
  constructor(
    readonly inner: Backend,
    private readonly signal?: AbortSignal,
  ) {}
  get name() {
    return this.inner.name;
  }
  get config() {
    return this.inner.config;
  }
  get description() {
    return this.inner.description;
  }
  createState(): StateHandle {
    return this.inner.createState();
  }
  async forward(state: StateHandle, tokens: Uint32Array, want: 'all' | 'last'): Promise<Float32Array> {
    if (tokens.length <= SLICE_TOKENS) {
      await this.pause();
      return this.inner.forward(state, tokens, want);
    }
    const V = this.inner.config.vocabSize;
    const all = want === 'all' ? new Float32Array(tokens.length * V) : null;
    let last: Float32Array | undefined;
    for (let t = 0; t < tokens.length; t += SLICE_TOKENS) {
      await this.pause();
      last = await this.inner.forward(state, tokens.subarray(t, t + SLICE_TOKENS), want);
      all?.set(last, t * V);
    }
    return all ?? last!;
  }
  private async pause(): Promise<void> {
    if (now() - lastYield >= YIELD_EVERY_MS) {
      await yieldToEventLoop();
      lastYield = now();
    }
    this.signal?.throwIfAborted();
  }
  readState(state: StateHandle): Promise<StateData> {
    return this.inner.readState(state);
  }
  writeState(state: StateHandle, data: StateData): Promise<void> {
    return this.inner.writeState(state, data);
  }
  releaseState(state: StateHandle): void {
    this.inner.releaseState(state);
  }
  dispose(): void {
    this.inner.dispose();
  }
}

interface Stream {
  gen: AsyncGenerator<GenerationChunk>;
  controller: AbortController;
  sessionId: number | null;
}

/** Everything except the transfer lists (added by the comlink wiring). */
export class EngineHost implements EngineApi {
  private model: Model | null = null;
  private backend: Backend | null = null;
  private readonly sessions = new Map<number, Session>();
  private readonly streams = new Map<number, Stream>();
  /** Abort controllers of operations in flight (streams and bitsPerByte), by id. */
  private readonly aborts = new Map<number, AbortController>();

  async load(source: WireSource, options: WireLoadOptions, onProgress?: (p: LoadProgress) => void): Promise<LoadInfo> {
    if (this.model) throw new MambaError('LOADED', 'this worker already holds a model');
    let plan: BackendSelection | undefined;
    const { config, weights, tokenizer } = await readModel(source, { ...options, onProgress: onProgress && ((p) => void onProgress(p)) }, async (c) => {
      plan = await planBackend(c, options);
      return { backend: plan.backend, dtype: plan.dtype };
    });
    const digest = weightsDigest(weights);
    const backend = (await createBackend(config, weights, options, plan)) as SelectedBackend;
    this.backend = backend;
    this.model = new Model(config, new YieldingBackend(backend), digest, tokenizer);
    return { config, backend: backend.name, description: backend.description, selection: backend.selection, tokenizer: tokenizer.kind };
  }

  probe() {
    return probe();
  }

  logits(input: TokenInput, options: WireLogitsOptions, opId: number): Promise<Float32Array> {
    return this.abortable(opId, (view, signal) => view.logits(input, { ...options, signal }));
  }

  bitsPerByte(input: TokenInput, opId: number): Promise<number> {
    return this.abortable(opId, (view, signal) => view.bitsPerByte(input, signal));
  }

  /**
   * Runs `fn` on a view of the model whose forwards stop between slices once `abort(opId)` arrives:
   * the abort lands within ~512 tokens instead of after a whole block.
   */
  private async abortable<T>(opId: number, fn: (view: Model, signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    this.aborts.set(opId, controller);
    try {
      const model = this.loaded();
      // A view of the same backend whose forwards stop between slices once aborted.
      return await fn(new Model(model.config, new YieldingBackend(this.backend!, controller.signal), model.identity, model.tokenizer), controller.signal);
    } finally {
      this.aborts.delete(opId);
    }
  }

  async createSession(id: number, snapshot?: Snapshot | SnapshotV1): Promise<void> {
    const s = this.loaded().createSession();
    this.sessions.set(id, s);
    if (snapshot) await s.restore(snapshot);
  }

  feed(id: number, text: TokenInput): Promise<void> {
    return this.session(id).feed(text);
  }

  snapshot(id: number): Promise<Snapshot> {
    return this.session(id).snapshot();
  }

  restore(id: number, snapshot: Snapshot | SnapshotV1): Promise<void> {
    return this.session(id).restore(snapshot);
  }

  async fork(id: number, newId: number): Promise<void> {
    this.sessions.set(newId, await this.session(id).fork());
  }

  disposeSession(id: number): void {
    for (const [streamId, stream] of this.streams) if (stream.sessionId === id) void this.closeStream(streamId);
    this.sessions.get(id)?.dispose();
    this.sessions.delete(id);
  }

  startGenerate(streamId: number, sessionId: number | null, prompt: TokenInput, options: WireGenerateOptions): void {
    const controller = new AbortController();
    const opts = { ...options, signal: controller.signal };
    // Generators are lazy: option errors surface at the first pull, as they would in-process.
    const gen = sessionId === null ? this.loaded().generate(prompt, opts) : this.session(sessionId).generate(prompt, opts);
    this.streams.set(streamId, { gen, controller, sessionId });
    this.aborts.set(streamId, controller);
  }

  async pull(streamId: number): Promise<StreamBatch> {
    const stream = this.streams.get(streamId);
    if (!stream) return { chunks: [], done: true };
    const start = now();
    const chunks: GenerationChunk[] = [];
    let bytes = 0;
    try {
      for (;;) {
        const r = await stream.gen.next();
        if (r.done) {
          this.endStream(streamId);
          return { chunks, done: true };
        }
        chunks.push(r.value);
        bytes += r.value.bytes.length;
        // A long prefill makes the first chunk arrive late: it goes out at once (time to first token).
        if (bytes >= BATCH_BYTES || now() - start >= BATCH_MS) return { chunks, done: false };
      }
    } catch (e) {
      this.endStream(streamId);
      throw e;
    }
  }

  async closeStream(streamId: number): Promise<void> {
    const stream = this.streams.get(streamId);
    this.endStream(streamId);
    await stream?.gen.return(undefined).catch(() => undefined);
  }

  abort(id: number): void {
    this.aborts.get(id)?.abort(new DOMException('aborted', 'AbortError'));
  }

  holding(): { streams: number; sessions: number; operations: number } {
    return { streams: this.streams.size, sessions: this.sessions.size, operations: this.aborts.size };
  }

  private endStream(id: number): void {
    this.streams.delete(id);
    this.aborts.delete(id);
  }

  private loaded(): Model {
    if (!this.model) throw new DisposedError('model (not loaded)');
    return this.model;
  }

  private session(id: number): Session {
    const s = this.sessions.get(id);
    if (!s) throw new DisposedError(`session ${id}`);
    return s;
  }
}
