/**
 * Validation of what callers pass to the model API, in one place (in-process and on the main
 * thread before anything is posted to a worker): bad input is an `InvalidOptionError` naming the
 * argument, never a `TypeError` from deep inside.
 */
import { InvalidOptionError, OutOfMemoryError } from './errors.js';

const tag = (v: unknown) => Object.prototype.toString.call(v);

/** A typed array of `kind`, also one made in another realm (a worker, an iframe). */
export function isTyped(v: unknown, kind: 'Float32Array' | 'Uint8Array' | 'Uint32Array'): boolean {
  return ArrayBuffer.isView(v) && tag(v) === `[object ${kind}]`;
}

/**
 * What the API accepts as a prompt or input: text, UTF-8 bytes, or token ids. Text (a string, or a
 * `Uint8Array` of its UTF-8 bytes) is tokenized by the model's tokenizer: its tokenizer.json, or, for
 * a byte-level model, one token per byte (id = byte). A `Uint32Array` or an array of integers are
 * token ids, taken as they are.
 */
export type TokenInput = string | Uint8Array | Uint32Array | readonly number[];

/** A model's tokenizer, as far as turning input into ids goes (`Tokenizer`, without importing it here). */
export interface TextEncoderLike {
  readonly kind: 'byte' | 'hf';
  encode(text: string): Uint32Array;
}

/** Whether `input` is text (tokenized) rather than token ids (taken as they are). */
export function isTextInput(input: unknown): input is string | Uint8Array {
  return typeof input === 'string' || isTyped(input, 'Uint8Array');
}

/** Text input as a string: a `Uint8Array` must be valid UTF-8 (a tokenizer reads characters, not bytes). */
export function inputText(input: string | Uint8Array, what: string): string {
  if (typeof input === 'string') return input;
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(input);
  } catch {
    throw new InvalidOptionError(what, 'is not valid UTF-8 text: a model with a tokenizer.json reads text (token ids go in a Uint32Array or an array of integers)');
  }
}

/**
 * `toTokens` with the model's tokenizer: text through its tokenizer.json (when it has one), ids as they are.
 * Without a tokenizer.json, exactly `toTokens` (bytes are ids).
 */
export function tokenize(input: unknown, what: string, vocabSize: number, tokenizer?: TextEncoderLike): Uint32Array {
  if (tokenizer?.kind === 'hf' && isTextInput(input)) return toTokens(tokenizer.encode(inputText(input, what)), what, vocabSize);
  return toTokens(input, what, vocabSize);
}

/**
 * The checks `tokenize` makes that need no tokenizer (on a worker's main thread): the input's type,
 * and every given token id against the vocabulary. Text for a tokenizer.json model is tokenized later.
 */
export function checkTokenInput(input: unknown, what: string, vocabSize: number, hasTokenizer: boolean): void {
  if (hasTokenizer && isTextInput(input)) return;
  toTokens(input, what, vocabSize);
}

/**
 * The token ids of a prompt or input without a tokenizer.json (text is UTF-8 bytes, one id each), each
 * checked against the vocabulary: anything else, or an id ≥ `vocabSize`, is an `InvalidOptionError`
 * naming `what`. `tokenize` is the same with the model's tokenizer.
 */
export function toTokens(input: unknown, what: string, vocabSize: number): Uint32Array {
  let ids: Uint32Array;
  if (typeof input === 'string') return toTokens(new TextEncoder().encode(input), what, vocabSize);
  else if (isTyped(input, 'Uint8Array')) (ids = new Uint32Array((input as Uint8Array).length)).set(input as Uint8Array);
  else if (isTyped(input, 'Uint32Array')) ids = input as Uint32Array;
  else if (Array.isArray(input)) {
    ids = new Uint32Array(input.length);
    for (let i = 0; i < input.length; i++) {
      const v: unknown = input[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
        throw new InvalidOptionError(what, `token ids must be integers >= 0, got ${typeof v === 'number' ? v : typeof v} at index ${i}`);
      }
      if (v >= vocabSize) throw idError(what, v, i, vocabSize);
      ids[i] = v;
    }
    return ids;
  } else {
    const got = input === null ? 'null' : typeof input === 'object' ? tag(input).slice(8, -1) : typeof input;
    throw new InvalidOptionError(what, `must be a string, a Uint8Array of bytes, or token ids (a Uint32Array or an array of integers), got ${got}`);
  }
  for (let i = 0; i < ids.length; i++) if (ids[i] >= vocabSize) throw idError(what, ids[i], i, vocabSize);
  return ids;
}

/** How many tokens `input` holds, with `toTokens`'s type check but no copy: for limits checked before any work. */
export function tokenCount(input: unknown, what: string): number {
  if (isTyped(input, 'Uint8Array') || isTyped(input, 'Uint32Array') || Array.isArray(input)) return (input as ArrayLike<number>).length;
  if (typeof input === 'string') return new TextEncoder().encode(input).length;
  return toTokens(input, what, 0).length; // throws the type error
}

const idError = (what: string, id: number, at: number, V: number) =>
  new InvalidOptionError(what, `token id ${id} at index ${at} is out of range: this model's vocabulary has ${V} ids (0..${V - 1})`);

/** An options argument: omitted or a plain object. */
export function checkOptionsObject(o: unknown, what = 'options'): void {
  if (o === undefined) return;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) {
    throw new InvalidOptionError(what, `must be an object, got ${o === null ? 'null' : Array.isArray(o) ? 'an Array' : typeof o}`);
  }
}

/** An `AbortSignal` (or anything with its surface: polyfills, other realms), or undefined. */
export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  const s = signal as Partial<AbortSignal> | null;
  if (typeof s !== 'object' || s === null || typeof s.aborted !== 'boolean' || typeof s.addEventListener !== 'function' || typeof s.removeEventListener !== 'function') {
    throw new InvalidOptionError('signal', 'must be an AbortSignal');
  }
  return signal as AbortSignal;
}

export interface LogitsOptions {
  /**
   * Which positions to return: `'all'` (default) → `[T, V]`; `'last'` → `[V]`, the prediction after
   * the whole input; `{ start, end }` (half-open, `end` defaults to T) → `[end − start, V]`. The
   * model still reads the input from its start; nothing after `end` is computed.
   */
  positions?: 'all' | 'last' | { start: number; end?: number };
  /** The result larger than this is refused with `OutOfMemoryError` before anything is allocated. Default 1 GiB. */
  maxMemoryBytes?: number;
  /** Checked between slices of the input. */
  signal?: AbortSignal;
}

export const DEFAULT_LOGITS_LIMIT = 2 ** 30;

/** Checks `logits()` options for an input of T tokens: the rows to return, and the result's size against the limit. */
export function planLogits(T: number, V: number, options: LogitsOptions | undefined): { start: number; end: number; signal?: AbortSignal } {
  checkOptionsObject(options);
  const o = options ?? {};
  const signal = checkSignal(o.signal);
  const limit = o.maxMemoryBytes ?? DEFAULT_LOGITS_LIMIT;
  if (typeof limit !== 'number' || !(limit > 0) || !Number.isFinite(limit)) {
    throw new InvalidOptionError('maxMemoryBytes', `must be a finite number > 0, got ${String(limit)}`);
  }
  let start = 0;
  let end = T;
  const p = o.positions ?? 'all';
  if (p === 'last') {
    if (T === 0) throw new InvalidOptionError('input', "is empty: positions 'last' needs at least one token");
    start = T - 1;
  } else if (typeof p === 'object' && p !== null && !Array.isArray(p)) {
    start = p.start;
    end = p.end ?? T;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > T) {
      throw new InvalidOptionError('positions', `{ start, end } must be integers with 0 <= start <= end <= ${T} (the input length), got { start: ${String(p.start)}, end: ${String(p.end)} }`);
    }
  } else if (p !== 'all') {
    throw new InvalidOptionError('positions', `must be 'all', 'last' or { start, end }, got ${String(p)}`);
  }
  const need = (end - start) * V * 4;
  if (need > limit) {
    throw new OutOfMemoryError(
      `logits for ${end - start} positions x ${V} need ${need} bytes, more than maxMemoryBytes (${limit} bytes): ` +
        `ask for fewer positions ({ positions: 'last' } or { start, end }), or use bitsPerByte, which streams`,
    );
  }
  return { start, end, signal };
}
