/** The bundled model (models/mambabyte-fortunes): loads by default and scores like PyTorch. */
import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { loadModel } from '../src/index.js';
import { defaultModelSource } from '../src/defaults.js';

const dir = defaultModelSource();
const excerpt = new Uint8Array(readFileSync(`${dir}val-excerpt.txt`));
const recorded = JSON.parse(readFileSync(`${dir}val-excerpt.json`, 'utf8')) as { bits_per_byte: number };

test('bits per byte of the committed validation excerpt matches PyTorch (training/eval.py) within 0.01', async () => {
  const model = await loadModel(dir, { backend: 'wasm' });
  try {
    const bpb = await model.bitsPerByte(excerpt);
    expect(Math.abs(bpb - recorded.bits_per_byte)).toBeLessThan(0.01);
    // The model card's quality bar: a trained model, far below the 8 bits of a uniform guess.
    expect(bpb).toBeLessThan(1.8);
  } finally {
    model.dispose();
  }
});

test('generates real text with a fixed seed', async () => {
  const model = await loadModel(dir, { backend: 'wasm' });
  try {
    let text = '';
    for await (const c of model.generate('%\nEl amor ', { maxTokens: 80, temperature: 0.8, seed: 1 })) text += c.text;
    // Mostly letters and spaces: a trained model, not noise.
    const letters = [...text].filter((ch) => /[\p{L}\s.,'-]/u.test(ch)).length;
    expect(letters / [...text].length).toBeGreaterThan(0.8);
  } finally {
    model.dispose();
  }
});
