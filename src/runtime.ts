/**
 * The recommended way to run a model: in a worker, so a page stays responsive and a CLI or server's
 * event loop stays free. `loadModelInWorker` returns a `WorkerModel` with the same surface as the
 * in-process `Model` (`loadModel`), over comlink:
 *
 *   main thread                         worker (dist/workers/engine-worker.js)
 *   WorkerModel / WorkerSession  ──►    EngineHost → Model → backend (wasm threads / webgpu / js)
 *   generate(): async iterable   ◄──    pull(): chunks of ≤ ~16 ms / 64 bytes per round trip
 *   AbortSignal                  ──►    abort(id) → AbortController in the worker
 *   dispose()                           terminates the worker
 *
 * Browsers and Deno use a module Web Worker; Node uses `worker_threads`. The worker always runs
 * compiled JavaScript (`dist/workers/engine-worker.js`, found via `assetUrl`): Node 20 cannot start
 * a TypeScript worker.
 */
import * as Comlink from 'comlink';
import { assetUrl } from './assets.js';
import type { BackendName } from './backend.js';
import type { BackendSelection } from './backends.js';
import { checkBackendOptions } from './backends.js';
import { parameterCount, type MambaConfig } from './config.js';
import { resolveModelSource } from './defaults.js';
import { DisposedError, MambaError } from './errors.js';
import { looksLikeHubId } from './hub.js';
import { checkGenerateArgsEarly, type GenerateOptions, type GenerationChunk } from './generate.js';
import { checkSignal, checkTokenInput, isTextInput, planLogits, tokenCount, type LogitsOptions, type TokenInput } from './inputs.js';
import type { ModelSource } from './loader.js';
import type { LoadOptions, Snapshot, SnapshotV1 } from './model.js';
import { queuedGenerator, SessionQueue } from './session-queue.js';
import type { ProbeReport } from './probe.js';
import type { EngineApi, LoadInfo, WireGenerateOptions, WireSource } from '../workers/engine-protocol.js';
import { fromWireError, installErrorHandler } from '../workers/engine-protocol.js';

export interface WorkerLoadOptions extends LoadOptions {
  /** Where the worker script is; default: the packaged `dist/workers/engine-worker.js`. */
  workerUrl?: string | URL;
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node && !('Deno' in globalThis);

/** A started worker, whatever the runtime. */
interface WorkerHandle {
  endpoint: Comlink.Endpoint;
  terminate(): void;
  /** Resolves when the worker is listening; rejects if it failed to start. */
  ready: Promise<void>;
  /** Rejects when the worker dies (crash, exit, or `terminate`). */
  ended: Promise<never>;
}

let live = 0;
/** Engine workers started by this thread and not yet ended (for tests and diagnostics). */
export function activeEngineWorkers(): number {
  return live;
}

type ReadyMessage = { type: 'mamba-edge:ready' } | { type: 'mamba-edge:failed'; error: Parameters<typeof fromWireError>[0] };

async function startWorker(url: URL): Promise<WorkerHandle> {
  let onReady!: () => void;
  let onFail!: (e: unknown) => void;
  let onEnd!: (e: unknown) => void;
  const ready = new Promise<void>((res, rej) => ((onReady = res), (onFail = rej)));
  const ended = new Promise<never>((_, rej) => (onEnd = rej));
  ended.catch(() => undefined);
  ready.catch(() => undefined);
  const handshake = (data: unknown) => {
    const m = data as ReadyMessage | undefined;
    if (m?.type === 'mamba-edge:ready') onReady();
    else if (m?.type === 'mamba-edge:failed') onFail(fromWireError(m.error));
  };
  let done = false;
  const finish = (e: unknown) => {
    if (done) return;
    done = true;
    live--;
    onFail(e);
    onEnd(e);
  };

  if (isNode) {
    const { Worker } = await import('node:worker_threads');
    // @ts-ignore -- comlink ships no typings for this subpath under NodeNext resolution
    const { default: nodeEndpoint } = await import('comlink/dist/esm/node-adapter.mjs');
    const w = new Worker(url);
    live++;
    w.on('message', handshake);
    w.on('error', (e) => finish(e));
    w.on('exit', (code) => finish(new MambaError('WORKER_EXIT', `the engine worker exited (code ${code})`)));
    return { endpoint: nodeEndpoint(w) as Comlink.Endpoint, terminate: () => void w.terminate(), ready, ended };
  }

  // Browsers ignore the page's import map inside workers: tell the worker where comlink is.
  const resolve = (import.meta as { resolve?: (s: string) => string }).resolve;
  let comlinkUrl: string | undefined;
  try {
    comlinkUrl = resolve?.('comlink');
  } catch {
    comlinkUrl = undefined; // Deno and bundlers resolve 'comlink' inside the worker themselves
  }
  if (comlinkUrl && /^(https?|blob|data):/.test(comlinkUrl)) url.searchParams.set('comlink', comlinkUrl);
  const w = new Worker(url, { type: 'module' });
  live++;
  w.addEventListener('message', (ev) => handshake(ev.data));
  w.addEventListener('error', (ev) => {
    ev.preventDefault?.();
    finish(new MambaError('WORKER_ERROR', `the engine worker failed: ${ev.message ?? 'could not load the worker script'}`));
  });
  return {
    endpoint: w,
    terminate: () => {
      w.terminate();
      finish(new DisposedError('model'));
    },
    ready,
    ended,
  };
}

/**
 * Dawn in a Node worker reads the OS environment, which only the main thread can change
 * (`process.env` in a worker is a private copy). The probe's rescue for a missing Vulkan driver
 * (pointing VK_ICD_FILENAMES at SwiftShader, see probe.ts) must therefore run here, before the
 * worker starts; it is cached, and leaves a working system driver alone.
 */
async function prepareNodeEnvironment(): Promise<void> {
  if (process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES) return;
  const { probe } = await import('./probe.js');
  await probe();
}

/** Describes the backend running in the worker (the in-process `Model.backend` is the object itself). */
export interface WorkerBackendInfo {
  readonly name: BackendName;
  readonly description: string;
  /** What `backend: 'auto'` picked and why (also set for explicit choices). */
  readonly selection?: BackendSelection;
}

/**
 * A model running in a worker: the same surface as `Model`. All calls are asynchronous messages;
 * `dispose()` terminates the worker and rejects whatever is still pending with `DisposedError`.
 */
export class WorkerModel {
  readonly config: MambaConfig;
  readonly backend: WorkerBackendInfo;
  disposed = false;
  /** @internal */
  declare readonly api: Comlink.Remote<EngineApi>;
  private readonly handle: WorkerHandle;
  /** Rejecters of the calls in flight: failed at once when the worker is disposed or dies. */
  private readonly pending = new Set<(e: unknown) => void>();
  private closedBy: { error: unknown } | undefined;
  /** Streams dropped without being finished or closed: closed in the worker once collected here. */
  private readonly dropped = new FinalizationRegistry<number>((id) => {
    if (!this.closedBy) void this.api.closeStream(id).catch(() => undefined);
  });
  private nextId = 1;
  /** @internal round trips made by streams so far (tests check batching). */
  pulls = 0;
  /**
   * Whether the model has a tokenizer.json: its text is tokenized in the worker (only there is
   * Tokenizers.js loaded), so here only token ids can be checked.
   */
  readonly hasTokenizer: boolean;

  /** @internal use `loadModelInWorker()` */
  constructor(handle: WorkerHandle, api: Comlink.Remote<EngineApi>, info: LoadInfo) {
    this.handle = handle;
    // Not enumerable: inspecting a comlink proxy (console.log, test matchers) would send calls to the worker.
    Object.defineProperty(this, 'api', { value: api, enumerable: false });
    this.config = info.config;
    this.backend = { name: info.backend, description: info.description, selection: info.selection };
    this.hasTokenizer = info.tokenizer === 'hf';
    handle.ended.catch((e) => this.close(e));
  }

  get parameters(): number {
    return parameterCount(this.config);
  }

  /**
   * Why this backend runs: `backend.selection.reason`, e.g. "software WebGPU adapter (SwiftShader) is slower than
   * WASM SIMD", or "requested backend 'wasm'" for an explicit choice.
   */
  get backendReason(): string {
    return this.backend.selection?.reason ?? `backend '${this.backend.name}'`;
  }

  /** A one-off generation from an empty state, streamed in batches of chunks. */
  generate(prompt: TokenInput, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk> {
    const id = this.id();
    return this.track(this.stream(id, null, prompt, options), id);
  }

  createSession(snapshot?: Snapshot | SnapshotV1): WorkerSession {
    this.check();
    // The shape checks against the model happen in the worker and surface on the session's next call.
    if (snapshot !== undefined && (snapshot?.format !== 'mamba-edge-snapshot' || (snapshot.version !== 1 && snapshot.version !== 2))) {
      throw new MambaError('SNAPSHOT', 'not a mamba-edge snapshot (version 1 or 2)');
    }
    const id = this.id();
    // Sent without waiting: later calls on the session queue behind it (comlink keeps order).
    return new WorkerSession(this, id, this.call(this.api.createSession(id, snapshot)));
  }

  /**
   * Logits from an empty state (see `Model.logits`: `positions`, `maxMemoryBytes`, `signal`), float32,
   * transferred, not copied. A result over the limit is refused here, before the worker is asked.
   */
  async logits(input: TokenInput, options?: LogitsOptions): Promise<Float32Array> {
    this.check();
    // Text for a tokenizer.json model has no token count until the worker tokenizes it: checked there.
    const counted = !(this.hasTokenizer && isTextInput(input));
    const { signal } = counted ? planLogits(tokenCount(input, 'input'), this.config.vocabSize, options) : { signal: checkSignal(options?.signal) };
    checkTokenInput(input, 'input', this.config.vocabSize, this.hasTokenizer);
    const { positions, maxMemoryBytes } = options ?? {};
    return this.abortable(signal, (id) => this.api.logits(input, { positions, maxMemoryBytes }, id));
  }

  /** Bits per byte of `input` (see `Model.bitsPerByte`); `signal` aborts the computation in the worker. */
  async bitsPerByte(input: TokenInput, signal?: AbortSignal): Promise<number> {
    this.check();
    checkTokenInput(input, 'input', this.config.vocabSize, this.hasTokenizer);
    return this.abortable(checkSignal(signal), (id) => this.api.bitsPerByte(input, id));
  }

  /** Runs an operation of the worker that an abort message can stop. */
  private async abortable<T>(signal: AbortSignal | undefined, run: (id: number) => Promise<T>): Promise<T> {
    signal?.throwIfAborted();
    const id = this.id();
    const onAbort = () => void this.api.abort(id).catch(() => undefined);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await this.call(run(id));
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The capability report as seen from inside the worker (where the engine runs). */
  probe(): Promise<ProbeReport> {
    this.check();
    return this.call(this.api.probe());
  }

  /** Terminates the worker. Pending calls reject with `DisposedError`; open streams end with it. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.close(new DisposedError('model'));
    this.api[Comlink.releaseProxy]();
    this.handle.terminate();
  }

  /** @internal */
  id(): number {
    return this.nextId++;
  }

  /**
   * @internal a call that also fails when the worker is disposed or dies. Not `Promise.race` with a
   * promise that only settles at the end: every race would leave a reaction on it (~0.5 KB a call).
   */
  call<T>(p: Promise<T>): Promise<T> {
    p.catch(() => undefined); // may never settle once the worker is gone; its rejection is not ours to report
    if (this.closedBy) return Promise.reject(this.closedBy.error);
    return new Promise<T>((resolve, reject) => {
      this.pending.add(reject);
      p.then(
        (v) => {
          this.pending.delete(reject);
          resolve(v);
        },
        (e) => {
          this.pending.delete(reject);
          reject(e);
        },
      );
    });
  }

  /** @internal calls in flight (tests check that none is left behind). */
  get pendingCalls(): number {
    return this.pending.size;
  }

  private close(error: unknown): void {
    if (this.closedBy) return;
    this.closedBy = { error };
    for (const reject of this.pending) reject(error);
    this.pending.clear();
  }

  /** @internal closes stream `id` in the worker if `stream` is garbage-collected before it ends. */
  track(stream: AsyncGenerator<GenerationChunk>, id: number): AsyncGenerator<GenerationChunk> {
    this.dropped.register(stream, id, stream);
    return stream;
  }

  /** @internal */
  check(): void {
    if (this.disposed) throw new DisposedError('model');
  }

  /** @internal Streams a generation: one `pull` round trip per batch of chunks. */
  async *stream(id: number, sessionId: number | null, prompt: TokenInput, options: GenerateOptions): AsyncGenerator<GenerationChunk> {
    this.check();
    // Checked here, so bad arguments never reach the worker (and fail as they do in-process).
    checkGenerateArgsEarly(prompt, options, this.config.vocabSize, this.hasTokenizer);
    const { signal } = options;
    // Starts lazily, like the in-process generator: nothing happens until the first `next()`.
    await this.call(Promise.resolve(this.api.startGenerate(id, sessionId, prompt, wireGenerateOptions(options))));
    const onAbort = () => void this.api.abort(id).catch(() => undefined);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    let done = false;
    try {
      while (!done) {
        const batch = await this.call(this.api.pull(id));
        this.pulls++;
        done = batch.done;
        for (const chunk of batch.chunks) {
          this.check(); // chunks already received are dropped once the model is disposed
          yield chunk;
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // The consumer stopped early (break/return/throw): end the generator in the worker too.
      if (!done && !this.disposed) await this.call(this.api.closeStream(id)).catch(() => undefined);
    }
  }
}

/** The generation options the worker needs: known fields only (a signal or a stray callback cannot be cloned). */
function wireGenerateOptions(o: GenerateOptions): WireGenerateOptions {
  const { maxTokens, stop, ignoreEos, temperature, topK, topP, repetitionPenalty, repetitionWindow, seed } = o;
  return { maxTokens, stop, ignoreEos, temperature, topK, topP, repetitionPenalty, repetitionWindow, seed };
}

/**
 * A sequence living in the worker: same surface as `Session`, and the same call order: calls queue
 * here on the main thread, when they are made, and reach the worker one at a time in that order (an
 * idle generator is ended by a later call, as in-process; see session-queue.ts).
 */
export class WorkerSession {
  private disposed = false;
  private readonly queue = new SessionQueue();

  /** @internal use `model.createSession()` */
  constructor(
    private readonly model: WorkerModel,
    private readonly id: number,
    private readonly created: Promise<void>,
  ) {
    created.catch(() => undefined); // reported by the session's next call
  }

  /** Streams a continuation of everything this session has seen, then `prompt`. */
  generate(prompt: TokenInput, options: GenerateOptions = {}): AsyncGenerator<GenerationChunk> {
    const ticket = this.queue.enter(true);
    const streamId = this.model.id();
    const stream = queuedGenerator(
      ticket,
      () => checkGenerateArgsEarly(prompt, options, this.model.config.vocabSize, this.model.hasTokenizer),
      () => this.check(),
      async () => {
        await this.created;
        return this.model.stream(streamId, this.id, prompt, options);
      },
    );
    return this.model.track(stream, streamId);
  }

  /** Feeds text (tokenized in the worker by the model's tokenizer) or token ids into the state without generating. */
  async feed(text: TokenInput): Promise<void> {
    checkTokenInput(text, 'text', this.model.config.vocabSize, this.model.hasTokenizer);
    return this.run(() => this.model.api.feed(this.id, text));
  }

  snapshot(): Promise<Snapshot> {
    return this.run(() => this.model.api.snapshot(this.id));
  }

  restore(snapshot: Snapshot | SnapshotV1): Promise<void> {
    return this.run(() => this.model.api.restore(this.id, snapshot));
  }

  /** A new session starting from this one's current state (copied inside the worker). */
  async fork(): Promise<WorkerSession> {
    const id = this.model.id();
    await this.run(() => this.model.api.fork(this.id, id));
    return new WorkerSession(this.model, id, Promise.resolve());
  }

  /** Frees the state in the worker once the call running now has finished; later calls fail with `DisposedError`. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const ticket = this.queue.enter();
    const free = () => {
      if (!this.model.disposed) void this.model.api.disposeSession(this.id).catch(() => undefined);
    };
    if (ticket.granted) {
      free();
      ticket.release();
    } else {
      ticket.turn().then(free).finally(() => ticket.release());
    }
  }

  /** Sends `fn`'s message in this call's turn. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    const ticket = this.queue.enter();
    try {
      await ticket.turn();
      this.check();
      await this.created;
      return await this.model.call(fn());
    } finally {
      ticket.release();
    }
  }

  private check(): void {
    if (this.disposed) throw new DisposedError('session');
    this.model.check();
  }
}

/** Makes a source cloneable, and relative URLs absolute (the worker's base URL is its own script). */
function wireSource(source: ModelSource): WireSource {
  if (source instanceof URL) return source.href;
  if (typeof source !== 'string') return source;
  const base = (globalThis as { location?: { href: string } }).location?.href;
  // A Hub id (`org/name`) is not a path beside the page (`./org/name` is).
  if (!isNode && base && !/^[a-z][a-z0-9+.-]*:/i.test(source) && !looksLikeHubId(source)) return new URL(source, base).href;
  return source;
}

/**
 * Loads a model into a new worker. Recommended over `loadModel` (which computes on the calling
 * thread): generation never blocks the caller's event loop, the wasm backend's threads and a GPU
 * device live with the engine, and `dispose()` gives everything back at once. Without a source
 * (or `undefined`), the model bundled with the package (Node, Deno).
 */
export async function loadModelInWorker(source?: ModelSource, options: WorkerLoadOptions = {}): Promise<WorkerModel> {
  const { onProgress, signal, workerUrl, ...rest } = options;
  checkBackendOptions(rest); // fail fast, before starting a thread
  // Here, not in the worker: the worker script may live elsewhere (`workerUrl`).
  const wire = wireSource(resolveModelSource(source));
  signal?.throwIfAborted();
  installErrorHandler(Comlink as never);
  if (isNode && (rest.backend === undefined || rest.backend === 'auto' || rest.backend === 'webgpu')) await prepareNodeEnvironment();
  let abort: (() => void) | undefined;
  const aborted = new Promise<never>((_, rej) => {
    abort = () => rej(signal!.reason ?? new DOMException('aborted', 'AbortError'));
    if (signal?.aborted) abort();
    else signal?.addEventListener('abort', abort, { once: true });
  });
  aborted.catch(() => undefined);
  const url = new URL(workerUrl ?? assetUrl('dist/workers/engine-worker.js'));
  const handle = await startWorker(url);
  const api = Comlink.wrap<EngineApi>(handle.endpoint);
  try {
    await Promise.race([handle.ready, handle.ended, aborted]);
    // Loading reads files inside the worker; an abort simply ends the worker.
    const info = await Promise.race([
      api.load(wire, rest, onProgress ? Comlink.proxy(onProgress) : undefined),
      handle.ended,
      aborted,
    ]);
    return new WorkerModel(handle, api, info);
  } catch (e) {
    api[Comlink.releaseProxy]();
    handle.terminate();
    throw e;
  } finally {
    if (abort) signal?.removeEventListener('abort', abort);
  }
}
