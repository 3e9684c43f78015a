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
  input: Uint8Array;
  /** float32 logits [T, V] computed by transformers in float64 */
  logits: Float32Array;
  vocab: number;
  greedy: Uint8Array;
  greedyMargin: number;
  maxAbsLogit: number;
}

/**
 * Every byte-level Hugging Face fixture shipped in test/fixtures/<family>/ (copied from
 * ../shared/fixtures): a new family's directory joins the conformance table by being there.
 */
export function loadFixtures(): Fixture[] {
  const families = readdirSync(FIXTURES).filter((f) => f.startsWith('hf-')).sort();
  return families
    .flatMap((family) => readdirSync(`${FIXTURES}${family}`).map((name) => ({ family, name, dir: `${FIXTURES}${family}/${name}` })))
    .filter(({ dir }) => existsSync(`${dir}/expected.json`))
    .map(({ family, name, dir }) => ({ family, name, dir, exp: parseJsonText(readFileSync(`${dir}/expected.json`, 'utf8')) as Record<string, any> }))
    // Token-id fixtures (a tokenizer.json vocabulary) need the tokenizer path, not bytes.
    .filter(({ exp }) => Array.isArray(exp.input_bytes))
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
        input: Uint8Array.from(exp.input_bytes),
        logits,
        vocab: V,
        greedy: Uint8Array.from(exp.greedy_new_bytes),
        greedyMargin: exp.greedy_min_top2_margin,
        maxAbsLogit,
      };
    });
}

/** max |a - b| over all elements */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}
