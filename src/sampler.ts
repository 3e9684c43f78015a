import { InvalidOptionError } from './errors.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 0.8. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 = off. Default 0. */
  topK?: number;
  /** Nucleus sampling: keep the smallest set whose probability reaches p; 1 = off. Default 0.95. */
  topP?: number;
  /** CTRL-style penalty (> 1 discourages repeats) on tokens in the recent history; 1 = off. Default 1. */
  repetitionPenalty?: number;
  /** How many recent tokens the repetition penalty looks at. Default 256. */
  repetitionWindow?: number;
  /** Same seed + same inputs → same output. Default: random (reported in the stats). */
  seed?: number;
}

export type ResolvedSampling = Required<Omit<SamplingOptions, 'seed'>> & { seed: number };

export function resolveSampling(o: SamplingOptions): ResolvedSampling {
  const r = {
    temperature: o.temperature ?? 0.8,
    topK: o.topK ?? 0,
    topP: o.topP ?? 0.95,
    repetitionPenalty: o.repetitionPenalty ?? 1,
    repetitionWindow: o.repetitionWindow ?? 256,
    seed: o.seed ?? Math.floor(Math.random() * 2 ** 32),
  };
  if (!Number.isFinite(r.temperature) || r.temperature < 0) throw new InvalidOptionError('temperature', `must be a finite number >= 0, got ${r.temperature}`);
  if (!Number.isInteger(r.topK) || r.topK < 0) throw new InvalidOptionError('topK', `must be an integer >= 0, got ${r.topK}`);
  if (!(r.topP > 0 && r.topP <= 1)) throw new InvalidOptionError('topP', `must be in (0, 1], got ${r.topP}`);
  if (!Number.isFinite(r.repetitionPenalty) || r.repetitionPenalty <= 0) {
    throw new InvalidOptionError('repetitionPenalty', `must be a finite number > 0, got ${r.repetitionPenalty}`);
  }
  if (!Number.isInteger(r.repetitionWindow) || r.repetitionWindow < 0) {
    throw new InvalidOptionError('repetitionWindow', `must be an integer >= 0, got ${r.repetitionWindow}`);
  }
  if (!Number.isInteger(r.seed) || r.seed < 0 || r.seed >= 2 ** 32) {
    throw new InvalidOptionError('seed', `must be an integer in [0, 2^32), got ${r.seed}`);
  }
  return r;
}

/** SplitMix32: tiny, fast, and identical on every JS engine, so seeds reproduce across devices. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 2 ** 32;
  };
}

/**
 * Picks the next token from logits [V]. Order follows Hugging Face's logits processors:
 * repetition penalty → temperature → top-k → top-p → draw. Only ids < `allowed` are eligible
 * (a byte-level runtime can only emit bytes, even if the head is padded wider).
 */
export class Sampler {
  private readonly random: () => number;
  constructor(
    readonly options: ResolvedSampling,
    private readonly allowed = 256,
  ) {
    this.random = rng(options.seed);
  }

  /** A 32-bit seed from this sampler's stream: seeds a device-side sampler deterministically. */
  nextSeed(): number {
    return Math.floor(this.random() * 2 ** 32) >>> 0;
  }

  sample(logits: Float32Array, recent: ArrayLike<number>): number {
    const o = this.options;
    const V = Math.min(this.allowed, logits.length);
    const l = Float64Array.from(logits.subarray(0, V));
    if (o.repetitionPenalty !== 1) {
      const seen = new Set<number>();
      for (let i = Math.max(0, recent.length - o.repetitionWindow); i < recent.length; i++) seen.add(recent[i]);
      for (const t of seen) if (t < V) l[t] = l[t] > 0 ? l[t] / o.repetitionPenalty : l[t] * o.repetitionPenalty;
    }
    if (o.temperature === 0) return argmax(l);

    // Candidates sorted by logit, truncated by top-k.
    let ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => l[b] - l[a] || a - b);
    if (o.topK > 0) ids = ids.slice(0, o.topK);
    const max = l[ids[0]];
    const p = ids.map((i) => Math.exp((l[i] - max) / o.temperature));
    const total = p.reduce((a, b) => a + b, 0);
    let keep = ids.length;
    if (o.topP < 1) {
      let cum = 0;
      for (let i = 0; i < ids.length; i++) {
        cum += p[i] / total;
        if (cum >= o.topP) {
          keep = i + 1;
          break;
        }
      }
    }
    let mass = 0;
    for (let i = 0; i < keep; i++) mass += p[i];
    let r = this.random() * mass;
    for (let i = 0; i < keep; i++) {
      r -= p[i];
      if (r < 0) return ids[i];
    }
    return ids[keep - 1];
  }
}

export function argmax(l: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
  return best;
}
