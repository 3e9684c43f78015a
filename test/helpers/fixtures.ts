import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const FIXTURE_ROOT = fileURLToPath(new URL('../fixtures/hf-mamba/', import.meta.url));

export interface Fixture {
  name: string;
  dir: string;
  input: Uint8Array;
  /** float32 logits [T, V] computed by transformers in float64 */
  logits: Float32Array;
  vocab: number;
  greedy: Uint8Array;
  greedyMargin: number;
  maxAbsLogit: number;
}

/** Every Hugging Face fixture shipped in test/fixtures/hf-mamba (copied from ../shared/fixtures). */
export function loadFixtures(): Fixture[] {
  return readdirSync(FIXTURE_ROOT)
    .filter((name) => existsSync(`${FIXTURE_ROOT}${name}/expected.json`))
    .sort()
    .map((name) => {
      const dir = `${FIXTURE_ROOT}${name}`;
      const exp = JSON.parse(readFileSync(`${dir}/expected.json`, 'utf8'));
      const raw = readFileSync(`${dir}/${exp.logits_file ?? 'logits.f32'}`);
      const logits = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      const [T, V] = exp.logits_shape as [number, number];
      if (logits.length !== T * V) throw new Error(`${name}: logits file has ${logits.length} values, expected ${T}x${V}`);
      let maxAbsLogit = 0;
      for (const v of logits) maxAbsLogit = Math.max(maxAbsLogit, Math.abs(v));
      return {
        name,
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
