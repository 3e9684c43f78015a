import type { Backend, DecodeBlock, StateHandle } from './backend.js';
import { InvalidOptionError } from './errors.js';
import { checkOptionsObject, checkSignal, toTokens } from './inputs.js';
import { resolveSampling, Sampler, type ResolvedSampling, type SamplingOptions } from './sampler.js';
import { concat, encode, Utf8Stream } from './tokenizer.js';

export interface GenerateOptions extends SamplingOptions {
  /** Maximum bytes (tokens) to generate. Default 256. */
  maxTokens?: number;
  /** Generation ends when any of these strings is produced; the stop string is not emitted. */
  stop?: string[];
  /** Ends the stream within one token; the model (and session) stay usable. */
  signal?: AbortSignal;
}

export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  /** Milliseconds from the call to the first generated token. */
  timeToFirstTokenMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  totalMs: number;
  finishReason: 'length' | 'stop' | 'abort';
  backend: string;
  /** The seed actually used: pass it back to reproduce this output. */
  seed: number;
}

/** A piece of the stream: complete UTF-8 characters only. The last chunk carries `stats`. */
export interface GenerationChunk {
  text: string;
  bytes: Uint8Array;
  stats?: GenerationStats;
}

/** What generation needs to remember between calls on the same sequence. */
export interface SequenceState {
  handle: StateHandle;
  /** Logits predicting the next byte, or null before anything was fed. */
  logits: Float32Array | null;
  /** Most recent tokens (for the repetition penalty), at most `HISTORY` long. */
  history: Uint8Array;
  /** A one-off sequence (`model.generate`): its state is dropped afterwards, so it may overshoot. */
  ephemeral?: boolean;
}

export const HISTORY = 1024;

/** Prompt bytes per backend call during prefill: the granularity at which an abort is noticed. */
const PREFILL_SLICE = 1024;

const now = () => performance.now();

/**
 * Lets timers, messages and UI events run. CPU backends compute synchronously, so without this an
 * `AbortSignal` fired by a timer or a click could not land until generation ended.
 * setImmediate / MessageChannel cost microseconds; setTimeout(0) would cost a millisecond per call.
 */
export function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (cb: () => void) => void };
  if (g.setImmediate) return new Promise((r) => g.setImmediate!(r));
  if (typeof MessageChannel !== 'undefined') {
    return new Promise((r) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        r();
      };
      ch.port2.postMessage(0);
    });
  }
  return new Promise((r) => setTimeout(r, 0));
}

/** Largest block of greedy tokens decoded on the device between two read-backs. */
const MAX_BLOCK = 64;

/** Yield at most this often during decode (ms). */
const YIELD_EVERY_MS = 8;

export function validateGenerateOptions(o: GenerateOptions): { maxTokens: number; stops: Uint8Array[] } {
  checkOptionsObject(o);
  checkSignal(o.signal);
  const maxTokens = o.maxTokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new InvalidOptionError('maxTokens', `must be an integer >= 0, got ${maxTokens}`);
  const stop = o.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new InvalidOptionError('stop', 'must be an array of non-empty strings');
  }
  return { maxTokens, stops: stop.map((s) => encode(s)) };
}

/**
 * Everything `generate(prompt, options)` is given, checked in one place (in-process, and on the main
 * thread before a worker is asked): a typed `InvalidOptionError` for anything else.
 */
export function checkGenerateArgs(
  prompt: unknown,
  options: GenerateOptions,
): { promptBytes: Uint8Array; maxTokens: number; stops: Uint8Array[]; sampling: ResolvedSampling } {
  const promptBytes = toTokens(prompt, 'prompt');
  return { promptBytes, ...validateGenerateOptions(options), sampling: resolveSampling(options) };
}

export function pushHistory(history: Uint8Array, tokens: Uint8Array): Uint8Array {
  const all = concat(history, tokens);
  return all.length > HISTORY ? all.slice(all.length - HISTORY) : all;
}

/**
 * The generation loop shared by every backend: prefill the prompt, then sample → feed → stream,
 * holding back bytes that might begin a stop string or a multi-byte character.
 */
export async function* generateTokens(
  backend: Backend,
  seq: SequenceState,
  prompt: string | Uint8Array,
  options: GenerateOptions,
): AsyncGenerator<GenerationChunk> {
  const start = now();
  const { promptBytes, maxTokens, stops, sampling } = checkGenerateArgs(prompt, options);
  const sampler = new Sampler(sampling);
  if (promptBytes.length === 0 && !seq.logits) {
    throw new InvalidOptionError('prompt', 'is empty and the session has no context yet: give at least one byte');
  }
  const { signal } = options;
  const stats: GenerationStats = {
    promptTokens: promptBytes.length,
    generatedTokens: 0,
    timeToFirstTokenMs: 0,
    prefillTokensPerSecond: 0,
    decodeTokensPerSecond: 0,
    totalMs: 0,
    finishReason: 'length',
    backend: backend.description,
    seed: sampling.seed,
  };

  // Prefill in slices so an abort lands within one slice even for a huge prompt; the sequence then
  // holds exactly the consumed prefix (state, logits and history agree), so a session stays consistent.
  let consumed = 0;
  while (consumed < promptBytes.length && (await yieldToEventLoop(), !signal?.aborted)) {
    const slice = promptBytes.subarray(consumed, consumed + PREFILL_SLICE);
    seq.logits = await backend.forward(seq.handle, slice, 'last');
    seq.history = pushHistory(seq.history, slice);
    consumed += slice.length;
  }
  stats.promptTokens = consumed;
  const prefillEnd = now();
  if (consumed > 0) stats.prefillTokensPerSecond = consumed / ((prefillEnd - start) / 1000);

  const utf8 = new Utf8Stream();
  const stopMatcher = new StopMatcher(stops); // holds back generated bytes that could still begin a stop string
  // Decoding can stay on the device (one read-back per block instead of per token) when the backend
  // offers it: argmax for greedy, a seeded on-device draw otherwise (no repetition penalty there).
  // The state then covers the whole block, so a session uses it only when no stop string can end
  // generation mid-block; a one-off generation just drops what it does not emit.
  const greedy = sampling.temperature === 0;
  const chained =
    (greedy ? backend.decodeGreedy : backend.decodeSampled) !== undefined &&
    sampling.repetitionPenalty === 1 &&
    backend.config.vocabSize <= 256 &&
    (seq.ephemeral === true || stops.length === 0);
  let blockSize = 4;
  // Blocks may also overlap (decodeAhead): the next one runs on the device while this one is read back.
  const ahead = chained && backend.decodeAhead === true;
  let planned = 0; // tokens covered by the blocks issued so far
  let inflight: Promise<DecodeBlock> | undefined; // the block issued ahead, continuing the last one
  const issue = (first: number | null): Promise<DecodeBlock> => {
    const n = Math.min(blockSize, maxTokens - planned);
    planned += n;
    blockSize = Math.min(2 * blockSize, MAX_BLOCK);
    return greedy
      ? backend.decodeGreedy!(seq.handle, first, n)
      : backend.decodeSampled!(seq.handle, first, n, { ...sampling, seed: sampler.nextSeed() });
  };

  /** The next token from the host's logits (every token, or a block's first when the device chains). */
  const sampleFirst = (): number => {
    const token = sampler.sample(seq.logits!, seq.history);
    if (stats.generatedTokens === 0) stats.timeToFirstTokenMs = now() - start;
    return token;
  };

  let lastYield = now();
  decode: while (stats.generatedTokens < maxTokens) {
    if (now() - lastYield > YIELD_EVERY_MS) {
      await yieldToEventLoop();
      lastYield = now();
    }
    // A session's state already covers a block issued ahead: it is emitted before the abort lands.
    const aborting = signal?.aborted === true;
    if (aborting && (!inflight || seq.ephemeral)) {
      stats.finishReason = 'abort';
      break;
    }
    // Feed what was sampled right away so the state always covers everything emitted: a session can continue.
    let block: Uint8Array;
    if (chained) {
      const r = inflight ?? issue(sampleFirst());
      inflight = undefined;
      if (ahead && !aborting && planned < maxTokens) {
        inflight = issue(null);
        inflight.catch(() => undefined); // if `r` fails first, this one's failure is not left unhandled
      }
      const got = await r;
      block = got.tokens;
      seq.logits = got.logits;
    } else {
      block = Uint8Array.of(sampleFirst());
      seq.logits = await backend.forward(seq.handle, block, 'last');
    }
    seq.history = pushHistory(seq.history, block);

    for (let i = 0; i < block.length; i++) {
      if (i > 0 && seq.ephemeral && signal?.aborted) {
        stats.finishReason = 'abort';
        break decode;
      }
      stats.generatedTokens++;
      const { emit, stopped } = stopMatcher.push(block[i]);
      const chunk = utf8.push(emit);
      if (chunk.bytes.length) yield chunk;
      if (stopped) {
        stats.finishReason = 'stop';
        break decode;
      }
    }
    if (aborting) {
      stats.finishReason = 'abort';
      break;
    }
  }
  // A one-off generation that stopped early drops the block it issued ahead (its state is discarded).
  await inflight?.catch(() => undefined);

  const rest = utf8.push(stopMatcher.rest());
  const tail = utf8.flush();
  const end = now();
  const decodeMs = end - prefillEnd;
  stats.totalMs = end - start;
  stats.decodeTokensPerSecond = stats.generatedTokens > 0 ? stats.generatedTokens / (decodeMs / 1000) : 0;
  yield { text: rest.text + tail.text, bytes: concat(rest.bytes, tail.bytes), stats };
}

/**
 * Incremental stop-string matching: one Knuth–Morris–Pratt automaton per stop string, fed one
 * generated byte at a time, and the held-back bytes in a buffer that is compacted only when full.
 * Each byte costs amortised O(1) work per stop string, however long the strings and however often
 * the output almost matches them (rescanning and copying the held-back bytes for every token costs
 * O(L) to O(L²) each, which a model that keeps nearly producing a long stop string hits).
 */
export class StopMatcher {
  /** Per stop string s: fail[i] = length of the longest proper prefix of s[0..i] that is also its suffix. */
  private readonly fail: Int32Array[];
  /** Per stop string: length of its longest prefix that the output ends with. */
  private readonly state: Int32Array;
  /** Bytes not emitted yet: buf[start, end) (at most the longest stop string). */
  private readonly buf: Uint8Array;
  private start = 0;
  private end = 0;
  /** Byte comparisons made so far (tests bound this: at most 2 per byte per stop string). */
  comparisons = 0;

  constructor(private readonly stops: Uint8Array[]) {
    this.state = new Int32Array(stops.length);
    this.fail = stops.map((s) => {
      const f = new Int32Array(s.length);
      for (let i = 1, k = 0; i < s.length; i++) {
        while (k > 0 && s[i] !== s[k]) k = f[k - 1];
        if (s[i] === s[k]) k++;
        f[i] = k;
      }
      return f;
    });
    this.buf = new Uint8Array(2 * Math.max(1, ...stops.map((s) => s.length)) + 2);
  }

  /**
   * Feeds one generated byte. `emit`: the bytes that can no longer be part of a stop string (a copy);
   * `stopped`: a stop string ended with this byte, and `emit` is everything before it.
   */
  push(b: number): { emit: Uint8Array; stopped: boolean } {
    if (this.end === this.buf.length) {
      // Held bytes are fewer than the longest stop string: compaction frees at least half the buffer.
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    this.buf[this.end++] = b;
    let hit = 0;
    let held = 0;
    for (let j = 0; j < this.stops.length; j++) {
      const s = this.stops[j];
      const f = this.fail[j];
      let q = this.state[j];
      for (;;) {
        this.comparisons++;
        if (s[q] === b) {
          q++;
          break;
        }
        if (q === 0) break;
        q = f[q - 1];
      }
      if (q === s.length) {
        hit = Math.max(hit, q);
        q = f[q - 1];
      }
      this.state[j] = q;
      held = Math.max(held, q);
    }
    const cut = hit > 0 ? this.end - hit : this.end - held;
    const emit = this.buf.slice(this.start, cut);
    this.start = hit > 0 ? this.end : cut;
    return { emit, stopped: hit > 0 };
  }

  /** The bytes still held back (when generation ends for another reason). */
  rest(): Uint8Array {
    const r = this.buf.slice(this.start, this.end);
    this.start = this.end;
    return r;
  }
}
