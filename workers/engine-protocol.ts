/**
 * What the main thread (src/runtime.ts) and the engine worker (workers/engine-worker.ts) agree on:
 * the shape of the comlink API, and how errors cross the boundary with their class intact.
 * Type-only imports plus plain functions: no bare module imports, so browsers load it as is.
 */
import type { BackendName } from '../src/backend.js';
import type { BackendSelection } from '../src/backends.js';
import type { MambaConfig } from '../src/config.js';
import * as errors from '../src/errors.js';
import type { GenerateOptions, GenerationChunk } from '../src/generate.js';
import type { LogitsOptions } from '../src/inputs.js';
import type { LoadProgress } from '../src/loader.js';
import type { LoadOptions, Snapshot, SnapshotV1 } from '../src/model.js';
import type { TokenInput } from '../src/inputs.js';
import type { ProbeReport } from '../src/probe.js';

/** A model source that survives structured cloning (URL objects do not: they travel as href strings). */
export type WireSource = string | { files: Record<string, Uint8Array | ArrayBuffer | Blob | string> };

/** Load options minus what cannot be cloned (`onProgress` travels as a comlink proxy, `signal` stays on the main thread). */
export type WireLoadOptions = Omit<LoadOptions, 'onProgress' | 'signal'>;

/** Generation options minus the signal (aborts travel as `abort(streamId)` calls). */
export type WireGenerateOptions = Omit<GenerateOptions, 'signal'>;

/** Logits options minus the signal (aborts travel as `abort(opId)` calls). */
export type WireLogitsOptions = Omit<LogitsOptions, 'signal'>;

export interface LoadInfo {
  config: MambaConfig;
  backend: BackendName;
  description: string;
  selection?: BackendSelection;
  /** The model's tokenizer: `hf` (tokenizer.json: text is tokenized in the worker) or `byte`. */
  tokenizer: 'byte' | 'hf';
}

/** One round trip of a stream: every chunk produced within ~16 ms or 64 bytes (never one message per byte). */
export interface StreamBatch {
  chunks: GenerationChunk[];
  done: boolean;
}

/**
 * The worker's API. Ids are chosen by the main thread, so calls that create things (sessions,
 * streams) can be sent without waiting for an answer; comlink delivers messages in order.
 */
export interface EngineApi {
  load(source: WireSource, options: WireLoadOptions, onProgress?: (p: LoadProgress) => void): Promise<LoadInfo>;
  probe(): Promise<ProbeReport>;
  logits(input: TokenInput, options: WireLogitsOptions, opId: number): Promise<Float32Array>;
  bitsPerByte(input: TokenInput, opId: number): Promise<number>;
  createSession(id: number, snapshot?: Snapshot | SnapshotV1): Promise<void>;
  feed(id: number, text: TokenInput): Promise<void>;
  snapshot(id: number): Promise<Snapshot>;
  restore(id: number, snapshot: Snapshot | SnapshotV1): Promise<void>;
  fork(id: number, newId: number): Promise<void>;
  disposeSession(id: number): void;
  /** Starts generating on session `sessionId` (null: a one-off from an empty state). */
  startGenerate(streamId: number, sessionId: number | null, prompt: TokenInput, options: WireGenerateOptions): void;
  pull(streamId: number): Promise<StreamBatch>;
  /** Closes a stream the consumer stopped reading (`break` out of `for await`). */
  closeStream(streamId: number): Promise<void>;
  /** Aborts a stream or an operation (`bitsPerByte`, `logits`) by id. */
  abort(id: number): void;
  /** @internal what the worker holds (tests check that nothing is left behind). */
  holding(): { streams: number; sessions: number; operations: number };
}

// ---- errors across the boundary -----------------------------------------------------------------

interface WireError {
  name: string;
  message: string;
  stack?: string;
  /** Own enumerable fields of the error (code, option, backend, file, status, ...). */
  fields: Record<string, unknown>;
  cause?: WireError;
}

const ERROR_CLASSES: Record<string, new (...a: never[]) => Error> = {
  MambaError: errors.MambaError,
  ModelFormatError: errors.ModelFormatError,
  ModelNotFoundError: errors.ModelNotFoundError,
  UnsupportedModelError: errors.UnsupportedModelError,
  InvalidOptionError: errors.InvalidOptionError,
  BackendUnavailableError: errors.BackendUnavailableError,
  OutOfMemoryError: errors.OutOfMemoryError,
  FetchError: errors.FetchError,
  DisposedError: errors.DisposedError,
  DeviceLostError: errors.DeviceLostError,
  TypeError,
  RangeError,
  SyntaxError,
};

export function toWireError(e: unknown, depth = 0): WireError {
  if (!(e instanceof Error) && !(typeof e === 'object' && e !== null && 'message' in e)) {
    return { name: 'Error', message: String(e), fields: {} };
  }
  const err = e as Error;
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err)) {
    if (v === null || ['string', 'number', 'boolean', 'undefined'].includes(typeof v)) fields[k] = v;
  }
  const cause = err.cause !== undefined && depth < 3 ? toWireError(err.cause, depth + 1) : undefined;
  return { name: err.name, message: err.message, stack: err.stack, fields, cause };
}

/** Rebuilds an error as its own class (so `instanceof DisposedError` and `err.code` work on the main thread). */
export function fromWireError(w: WireError): Error {
  let e: Error;
  if (w.name === 'AbortError' && typeof DOMException !== 'undefined') {
    e = new DOMException(w.message, 'AbortError');
  } else {
    const C = ERROR_CLASSES[w.name] ?? Error;
    e = Object.create(C.prototype) as Error;
    Object.defineProperty(e, 'message', { value: w.message, writable: true, configurable: true });
    Object.defineProperty(e, 'name', { value: w.name, writable: true, configurable: true });
    Object.assign(e, w.fields);
    if (w.cause) Object.defineProperty(e, 'cause', { value: fromWireError(w.cause), writable: true, configurable: true });
  }
  // Keep the worker's stack: it says where the failure happened.
  if (w.stack) Object.defineProperty(e, 'stack', { value: w.stack, writable: true, configurable: true });
  return e;
}

interface ComlinkLike {
  transferHandlers: Map<string, { canHandle(v: unknown): boolean; serialize(v: unknown): [unknown, Transferable[]]; deserialize(v: unknown): unknown }>;
}

/**
 * Replaces comlink's "throw" handler (which keeps only name/message/stack) with one that keeps the
 * error class and its fields. Install on both sides.
 */
export function installErrorHandler(Comlink: ComlinkLike): void {
  const original = Comlink.transferHandlers.get('throw');
  if (!original || (original as { mambaEdge?: boolean }).mambaEdge) return;
  Comlink.transferHandlers.set('throw', {
    mambaEdge: true,
    canHandle: (v: unknown) => original.canHandle(v),
    serialize: (v: unknown) => {
      const { value } = v as { value: unknown };
      return [{ wireError: toWireError(value) }, []];
    },
    deserialize: (s: unknown) => {
      throw fromWireError((s as { wireError: WireError }).wireError);
    },
  } as never);
}

/** Transfers a typed array's buffer when it owns all of it (otherwise it is copied, leaving the source intact). */
export function ownedBuffers(...arrays: (ArrayBufferView | null | undefined)[]): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (const a of arrays) {
    if (!a || !(a.buffer instanceof ArrayBuffer)) continue;
    if (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && !out.includes(a.buffer)) out.push(a.buffer);
  }
  return out;
}
