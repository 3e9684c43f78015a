/**
 * Bounded JSON for untrusted model files. `JSON.parse` has no limits: a 99 MiB `[[[…]]]` or millions
 * of `{}` build gigabytes of objects (or overflow the stack) before anything can look at them. Here a
 * validating scan over the raw bytes runs first, in constant memory except for the keys of the open
 * objects: it enforces the grammar, a nesting limit, an entry limit and (optionally) unique keys, and
 * only text that passes is handed to `JSON.parse`, whose cost is then bounded by the caller's limits.
 */
import { ModelFormatError } from './errors.js';

export interface JsonLimits {
  /** Deepest nesting of arrays and objects. Default 128, the recursion limit of serde_json (behind the reference safetensors reader). */
  maxDepth?: number;
  /** Most values plus keys in the whole text (each `{}`, `[]`, number, key... counts one). */
  maxEntries: number;
  /** Most keys in one object (bounds the key set kept for `uniqueKeys`). Default: maxEntries. */
  maxKeys?: number;
  /** Refuse an object with the same key twice (parsers disagree on which one wins). */
  uniqueKeys?: boolean;
  /** Read a bare `Infinity` / `-Infinity` (Python's json.dumps of float('inf')) as ±Infinity. */
  allowInfinity?: boolean;
}

export const MAX_JSON_DEPTH = 128;
/** The scan yields to the event loop (and checks the signal) after this many bytes. */
const SLICE_BYTES = 1 << 20;

const enum S {
  Value, // a value must come next
  ValueOrClose, // just after '[': a value or ']'
  KeyOrClose, // just after '{': a key or '}'
  Key, // after ',' in an object
  Colon,
  CommaOrClose,
  Done,
}

/** Why a text was refused, with the byte offset; never any of the text itself (it may be anything). */
class Refused {
  constructor(
    /** A syntax error says "is not valid JSON (...)"; a limit names itself. */
    readonly syntax: boolean,
    readonly message: string,
    readonly key?: string,
  ) {}
}

const isWs = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;

/** A resumable validating scan of JSON bytes: `run(until)` advances to at least `until` (or the end). */
class Scanner {
  private pos = 0;
  private state = S.Value;
  private depth = 0;
  private entries = 0;
  /** Per open container: true for an object. */
  private readonly isObject: boolean[] = [];
  /** Per open object, the keys seen so far (only with uniqueKeys). */
  private readonly keys: Array<Set<string> | undefined> = [];
  /** Per open object, how many keys it has. */
  private readonly keyCount: number[] = [];
  /** Byte offsets of bare `Infinity` literals (allowInfinity). */
  readonly infinities: number[] = [];
  private readonly maxDepth: number;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(
    private readonly b: Uint8Array,
    private readonly limits: JsonLimits,
  ) {
    this.maxDepth = limits.maxDepth ?? MAX_JSON_DEPTH;
  }

  get done(): boolean {
    return this.pos >= this.b.length;
  }

  /** Throws `Refused`; returns when `until` is passed or the text ends (then it checks completeness). */
  run(until: number): void {
    const b = this.b;
    const n = b.length;
    while (this.pos < n && this.pos < until) {
      const c = b[this.pos];
      if (isWs(c)) {
        this.pos++;
        continue;
      }
      switch (this.state) {
        case S.Done:
          throw this.refuse('text after the top-level value');
        case S.Colon:
          if (c !== 0x3a) throw this.refuse("expected ':'");
          this.pos++;
          this.state = S.Value;
          continue;
        case S.CommaOrClose:
          if (c === 0x2c) {
            this.pos++;
            this.state = this.isObject[this.depth - 1] ? S.Key : S.Value;
          } else if (c === (this.isObject[this.depth - 1] ? 0x7d : 0x5d)) this.close();
          else throw this.refuse("expected ',' or a closing bracket");
          continue;
        case S.KeyOrClose:
        case S.Key:
          if (c === 0x7d && this.state === S.KeyOrClose) {
            this.close();
            continue;
          }
          if (c !== 0x22) throw this.refuse('expected a key string');
          this.key();
          this.state = S.Colon;
          continue;
        case S.ValueOrClose:
          if (c === 0x5d) {
            this.close();
            continue;
          }
          this.value(c);
          continue;
        case S.Value:
          this.value(c);
          continue;
      }
    }
    if (this.pos >= n && this.state !== S.Done) throw this.refuse('unexpected end of text');
  }

  private refuse(what: string): Refused {
    return new Refused(true, `${what} at byte ${this.pos}`);
  }

  private count(): void {
    if (++this.entries > this.limits.maxEntries) {
      throw new Refused(false, `has more than ${this.limits.maxEntries} entries (values and keys; at byte ${this.pos})`);
    }
  }

  private open(object: boolean): void {
    if (this.depth >= this.maxDepth) throw new Refused(false, `is nested deeper than ${this.maxDepth} levels (at byte ${this.pos})`);
    this.isObject[this.depth] = object;
    this.keys[this.depth] = object && this.limits.uniqueKeys ? new Set() : undefined;
    this.keyCount[this.depth] = 0;
    this.depth++;
    this.pos++;
    this.state = object ? S.KeyOrClose : S.ValueOrClose;
  }

  private close(): void {
    this.depth--;
    this.keys[this.depth] = undefined;
    this.pos++;
    this.after();
  }

  /** State after a complete value. */
  private after(): void {
    this.state = this.depth === 0 ? S.Done : S.CommaOrClose;
  }

  private value(c: number): void {
    this.count();
    if (c === 0x7b) return this.open(true);
    if (c === 0x5b) return this.open(false);
    if (c === 0x22) this.string();
    else if (this.limits.allowInfinity && (c === 0x49 || (c === 0x2d && this.b[this.pos + 1] === 0x49))) {
      if (c === 0x2d) this.pos++;
      this.infinities.push(this.pos);
      this.literal('Infinity');
    } else if (c === 0x2d || isDigit(c)) this.number();
    else if (c === 0x74) this.literal('true');
    else if (c === 0x66) this.literal('false');
    else if (c === 0x6e) this.literal('null');
    else throw this.refuse('unexpected byte');
    this.after();
  }

  private literal(word: string): void {
    for (let i = 0; i < word.length; i++) {
      if (this.b[this.pos + i] !== word.charCodeAt(i)) throw this.refuse('invalid literal');
    }
    this.pos += word.length;
  }

  private number(): void {
    const b = this.b;
    let p = this.pos;
    if (b[p] === 0x2d) p++;
    if (b[p] === 0x30) p++;
    else if (isDigit(b[p]) && b[p] !== 0x30) while (isDigit(b[p])) p++;
    else throw this.refuse('invalid number');
    if (b[p] === 0x2e) {
      p++;
      if (!isDigit(b[p])) throw this.refuse('invalid number');
      while (isDigit(b[p])) p++;
    }
    if (b[p] === 0x65 || b[p] === 0x45) {
      p++;
      if (b[p] === 0x2b || b[p] === 0x2d) p++;
      if (!isDigit(b[p])) throw this.refuse('invalid number');
      while (isDigit(b[p])) p++;
    }
    this.pos = p;
  }

  /** Skips a string; returns whether it had escapes (its end is `this.pos`). */
  private string(): boolean {
    const b = this.b;
    const n = b.length;
    let p = this.pos + 1;
    let escaped = false;
    for (;;) {
      if (p >= n) throw this.refuse('unterminated string');
      const c = b[p];
      if (c === 0x22) break;
      if (c < 0x20) {
        this.pos = p;
        throw this.refuse('control character in a string');
      }
      if (c === 0x5c) {
        escaped = true;
        const e = b[p + 1];
        if (e === 0x75) {
          for (let k = 2; k < 6; k++) {
            const h = b[p + k];
            if (!(isDigit(h) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66))) {
              this.pos = p;
              throw this.refuse('invalid \\u escape');
            }
          }
          p += 6;
          continue;
        }
        if (!(e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74)) {
          this.pos = p;
          throw this.refuse('invalid escape');
        }
        p += 2;
        continue;
      }
      p++;
    }
    this.pos = p + 1;
    return escaped;
  }

  private key(): void {
    this.count();
    const max = this.limits.maxKeys ?? this.limits.maxEntries;
    if (++this.keyCount[this.depth - 1] > max) throw new Refused(false, `has an object with more than ${max} keys (at byte ${this.pos})`);
    const start = this.pos;
    const escaped = this.string();
    const keys = this.keys[this.depth - 1];
    if (!keys) return;
    let key: string;
    try {
      const raw = this.decoder.decode(this.b.subarray(escaped ? start : start + 1, escaped ? this.pos : this.pos - 1));
      // Compare decoded keys: "a" and "\u0061" are the same name.
      key = escaped ? (JSON.parse(raw) as string) : raw;
    } catch {
      throw new Refused(true, `invalid UTF-8 in a key at byte ${start}`);
    }
    if (keys.has(key)) throw new Refused(false, 'key appears more than once in an object', key);
    keys.add(key);
  }
}

function refusal(e: unknown, file: string, what: string): never {
  if (!(e instanceof Refused)) throw e;
  if (e.key !== undefined) throw new ModelFormatError(file, e.message, e.key);
  const subject = what ? `${what} ` : '';
  throw new ModelFormatError(file, e.syntax ? `${what ? `${what} is ` : ''}not valid JSON (${e.message})` : `${subject}${e.message}`);
}

/** JSON.parse of text the scan accepted; only UTF-8 can still fail. */
function finish(bytes: Uint8Array, file: string, what: string, infinities: number[]): unknown {
  if (infinities.length > 0) {
    // `Infinity` -> `1e999   ` (same length, so offsets hold), which JSON.parse reads as Infinity.
    bytes = bytes.slice();
    for (const at of infinities) bytes.set([0x31, 0x65, 0x39, 0x39, 0x39, 0x20, 0x20, 0x20], at);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ModelFormatError(file, `${what ? `${what} is ` : ''}not valid UTF-8`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    // JSON.parse quotes the text in its message: never pass file content on. (The scan accepted the
    // text, so only running out of memory is expected here.)
    throw new ModelFormatError(file, `${what ? `${what} ` : ''}cannot be parsed (${e instanceof RangeError ? 'too large' : 'invalid JSON'})`);
  }
}

/**
 * Parses untrusted JSON bytes within `limits`, or throws `ModelFormatError(file, ...)` saying which
 * limit or rule failed and at which byte (never quoting the text).
 */
export function parseJsonBytes(bytes: Uint8Array, file: string, limits: JsonLimits, what = ''): unknown {
  const scanner = new Scanner(bytes, limits);
  try {
    scanner.run(Infinity);
  } catch (e) {
    refusal(e, file, what);
  }
  return finish(bytes, file, what, scanner.infinities);
}

/** As `parseJsonBytes`, yielding to the event loop every MiB so `signal` can stop a long scan. */
export async function parseJsonBytesAsync(bytes: Uint8Array, file: string, limits: JsonLimits, what = '', signal?: AbortSignal): Promise<unknown> {
  const scanner = new Scanner(bytes, limits);
  for (let until = SLICE_BYTES; ; until += SLICE_BYTES) {
    signal?.throwIfAborted();
    try {
      scanner.run(until);
    } catch (e) {
      refusal(e, file, what);
    }
    if (scanner.done) break;
    await yieldToEventLoop();
  }
  signal?.throwIfAborted();
  return finish(bytes, file, what, scanner.infinities);
}

/** A macrotask turn, so an abort() queued by another task is seen. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
