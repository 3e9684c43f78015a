import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseJsonText } from '../../src/config.js';

export const FIXTURE_ROOT = fileURLToPath(new URL('../fixtures/hf-mamba/', import.meta.url));
/** Every model family's fixtures: test/fixtures/<family>/<name>/ (copied from ../shared/fixtures). */
const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface Fixture {
  name: string;
  /** The family directory: hf-mamba, hf-falcon-mamba, ... */
  family: string;
  dir: string;
  /** The input as bytes: `input_bytes`, or the UTF-8 of `text` for a fixture with a tokenizer.json. */
  input: Uint8Array;
  /** The input's token ids: `input_ids` for a fixture with a tokenizer.json, else its bytes. */
  ids: Uint32Array;
  /** float32 logits [T, V] computed by transformers in float64 */
  logits: Float32Array;
  vocab: number;
  /** The greedy continuation as bytes: `greedy_new_bytes`, or the UTF-8 of `greedy_new_text`. */
  greedy: Uint8Array;
  /** Greedy continuation ids: `greedy_new_ids`, else `greedy_new_bytes`. */
  greedyIds: Uint32Array;
  /** The greedy continuation's text (`greedy_new_text`, else the bytes decoded). */
  greedyText: string;
  /** Whether the model reads tokens of a tokenizer.json (else bytes). */
  tokenizer: boolean;
  greedyMargin: number;
  maxAbsLogit: number;
}

/**
 * Every Hugging Face fixture shipped in test/fixtures/<family>/ (copied from ../shared/fixtures), byte-level
 * (`input_bytes`) or with a tokenizer.json (`input_ids`): a new family's directory joins the conformance
 * table by being there. `bytesOnly`: just the byte-level ones (tests that compare bytes).
 */
export function loadFixtures({ bytesOnly = false } = {}): Fixture[] {
  const families = readdirSync(FIXTURES).filter((f) => f.startsWith('hf-')).sort();
  return families
    .flatMap((family) => readdirSync(`${FIXTURES}${family}`).map((name) => ({ family, name, dir: `${FIXTURES}${family}/${name}` })))
    .filter(({ dir }) => existsSync(`${dir}/expected.json`))
    .map(({ family, name, dir }) => ({ family, name, dir, exp: parseJsonText(readFileSync(`${dir}/expected.json`, 'utf8')) as Record<string, any> }))
    .filter(({ exp }) => Array.isArray(exp.input_bytes) || (!bytesOnly && Array.isArray(exp.input_ids)))
    .map(({ family, name, dir, exp }) => {
      const raw = readFileSync(`${dir}/${exp.logits_file ?? 'logits.f32'}`);
      const logits = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      const [T, V] = exp.logits_shape as [number, number];
      if (logits.length !== T * V) throw new Error(`${name}: logits file has ${logits.length} values, expected ${T}x${V}`);
      let maxAbsLogit = 0;
      for (const v of logits) maxAbsLogit = Math.max(maxAbsLogit, Math.abs(v));
      return {
        name,
        family,
        dir,
        input: exp.input_bytes ? Uint8Array.from(exp.input_bytes) : new TextEncoder().encode(exp.text),
        ids: Uint32Array.from(exp.input_ids ?? exp.input_bytes),
        logits,
        vocab: V,
        greedy: exp.greedy_new_bytes ? Uint8Array.from(exp.greedy_new_bytes) : new TextEncoder().encode(exp.greedy_new_text),
        greedyIds: Uint32Array.from(exp.greedy_new_ids ?? exp.greedy_new_bytes),
        greedyText: exp.greedy_new_text ?? new TextDecoder().decode(Uint8Array.from(exp.greedy_new_bytes)),
        tokenizer: existsSync(`${dir}/tokenizer.json`),
        greedyMargin: exp.greedy_min_top2_margin,
        maxAbsLogit,
      };
    });
}

/** max |a - b| over all elements */
/**
 * max |got − ref| / max |ref| over ref's length (max |ref| floored at 1e-6): the error measure of the
 * kernel and model tests. Infinity when `got` holds a NaN or an infinity.
 */
export function relDiff(got: Float32Array, ref: Float32Array): number {
  let d = 0;
  let m = 1e-6;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(got[i])) return Infinity;
    d = Math.max(d, Math.abs(got[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return d / m;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}
