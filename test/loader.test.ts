import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  encodeSafetensors,
  loadModel,
  ModelFormatError,
  ModelNotFoundError,
  parseConfig,
  parseSafetensors,
  UnsupportedModelError,
} from '../src/index.js';
import { syntheticModel } from '../src/synthetic.js';
import { maxHeaderBytesFor, toFloat32 } from '../src/safetensors.js';
import { expectedTensors } from '../src/weights.js';
import { FIXTURE_ROOT, loadFixtures, maxAbsDiff } from './helpers/fixtures.js';

const tinyDir = `${FIXTURE_ROOT}tiny-hf-f32`;
const tinyConfig = readFileSync(`${tinyDir}/config.json`, 'utf8');
const tinyWeights = new Uint8Array(readFileSync(`${tinyDir}/model.safetensors`));

/** Rewrites a safetensors header with `edit` applied to its JSON, keeping the data section. */
function withHeader(bytes: Uint8Array, edit: (h: Record<string, any>) => void): Uint8Array {
  const len = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
  edit(header);
  const head = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + head.length + bytes.length - 8 - len);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  out.set(bytes.subarray(8 + len), 8 + head.length);
  return out;
}

/** The same checkpoint written again without tensor `name`. */
function without(bytes: Uint8Array, name: string): Uint8Array {
  const tensors: Parameters<typeof encodeSafetensors>[0] = {};
  for (const [n, t] of parseSafetensors(bytes).tensors) {
    if (n !== name) tensors[n] = { dtype: t.dtype as 'F32' | 'F16' | 'BF16', shape: t.shape, data: toFloat32(t, 'model.safetensors') };
  }
  return encodeSafetensors(tensors);
}

async function loadError(files: Record<string, string | Uint8Array>): Promise<Error> {
  try {
    await loadModel({ files }, { backend: 'js' });
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected the load to fail');
}

describe('safetensors reader rejects malformed files with a ModelFormatError naming the problem', () => {
  const cases: Array<[string, () => Uint8Array, RegExp]> = [
    ['empty file', () => new Uint8Array(0), /too short/],
    ['truncated header', () => tinyWeights.subarray(0, 100), /runs past the end/],
    ['truncated data', () => tinyWeights.subarray(0, tinyWeights.length - 10), /past the data section.*truncated/],
    ['huge header length', () => { const b = tinyWeights.slice(); new DataView(b.buffer).setBigUint64(0, 2n ** 60n, true); return b; }, /header length .* out of range/],
    ['header not JSON', () => { const b = tinyWeights.slice(); b[9] = 0x7b; b[10] = 0x7b; return b; }, /header is not valid JSON \(expected a key string at byte 1\)/],
    ['header is an array', () => { const h = new TextEncoder().encode('[1,2]'); const b = new Uint8Array(8 + h.length); new DataView(b.buffer).setBigUint64(0, BigInt(h.length), true); b.set(h, 8); return b; }, /must be a JSON object/],
    ['unknown dtype', () => withHeader(tinyWeights, (h) => (h['backbone.norm_f.weight'].dtype = 'F13')), /norm_f\.weight\]: unknown dtype "F13"/],
    ['shape disagrees with span', () => withHeader(tinyWeights, (h) => (h['backbone.norm_f.weight'].shape = [65])), /needs 260 bytes but data_offsets span 256/],
    ['negative dimension', () => withHeader(tinyWeights, (h) => (h['backbone.norm_f.weight'].shape = [-64])), /bad dimension/],
    ['offsets reversed', () => withHeader(tinyWeights, (h) => (h['backbone.norm_f.weight'].data_offsets = [10, 2])), /bad data_offsets/],
    ['offsets outside file', () => withHeader(tinyWeights, (h) => { const o = h['backbone.norm_f.weight'].data_offsets; h['backbone.norm_f.weight'].data_offsets = [o[0] + 1e9, o[1] + 1e9]; }), /past the data section/],
    ['overlapping tensors', () => withHeader(tinyWeights, (h) => { h['backbone.norm_f.weight'].data_offsets = h['backbone.layers.0.norm.weight'].data_offsets; }), /overlaps/],
    // The data section must be tiled exactly, as safetensors' own reader demands.
    ['bytes that belong to no tensor', () => withHeader(tinyWeights, (h) => delete h['backbone.layers.1.mixer.x_proj.weight']), /bytes \d+\.\.\d+ of the data section before this tensor belong to no tensor/],
    ['trailing bytes', () => { const b = new Uint8Array(tinyWeights.length + 12); b.set(tinyWeights); return b; }, /12 bytes after the last tensor belong to no tensor/],
  ];
  test.each(cases)('%s', (_name, make, message) => {
    const bytes = make();
    expect(() => parseSafetensors(bytes)).toThrow(ModelFormatError);
    expect(() => parseSafetensors(bytes)).toThrow(message);
  });

  test('every truncation of a real file is rejected cleanly', () => {
    for (let cut = 0; cut < tinyWeights.length; cut += 997) {
      expect(() => parseSafetensors(tinyWeights.subarray(0, cut)), `cut at ${cut}`).toThrow(ModelFormatError);
    }
  });
});

describe('loader checks the tensors against the config', () => {
  test('missing tensor names the tensor and the expected shape', async () => {
    const bytes = without(tinyWeights, 'backbone.layers.1.mixer.x_proj.weight');
    const e = await loadError({ 'config.json': tinyConfig, 'model.safetensors': bytes });
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/backbone\.layers\.1\.mixer\.x_proj\.weight.*missing tensor.*\[36, 128\]/);
  });

  test('wrong shape for the config', async () => {
    const cfg = JSON.parse(tinyConfig);
    cfg.state_size = 8;
    const e = await loadError({ 'config.json': JSON.stringify(cfg), 'model.safetensors': tinyWeights });
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/A_log\]: shape \[128, 16\] does not match the config, expected \[128, 8\]/);
  });

  test('extra layers in the file are reported, not silently ignored', async () => {
    const cfg = JSON.parse(tinyConfig);
    cfg.num_hidden_layers = 1;
    const e = await loadError({ 'config.json': JSON.stringify(cfg), 'model.safetensors': tinyWeights });
    expect(e.message).toMatch(/backbone\.layers\.1\..*not used by this config/);
  });

  test('NaN weights are reported', async () => {
    const files = syntheticModel({ hidden_size: 16, num_hidden_layers: 1 });
    const parsed = parseSafetensors(files['model.safetensors']);
    const t = parsed.tensors.get('backbone.layers.0.mixer.D')!;
    new DataView(t.data.buffer, t.data.byteOffset).setFloat32(4 * 3, NaN, true);
    const e = await loadError(files);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/mixer\.D.*non-finite value NaN at element 3/);
  });

  test('missing files', async () => {
    expect((await loadError({ 'model.safetensors': tinyWeights })).message).toMatch(/config\.json: not found/);
    expect((await loadError({ 'config.json': tinyConfig })).message).toMatch(/model\.safetensors.*not found.*never pickle/);
    await expect(loadModel('/nonexistent/model/dir', { backend: 'js' })).rejects.toThrow(ModelNotFoundError);
  });
});

describe('config parsing', () => {
  const bad: Array<[string, object, RegExp, any]> = [
    ['other model_type', { model_type: 'jamba', hidden_size: 8 }, /model_type "jamba" is not supported/, UnsupportedModelError],
    ['unknown activation', { ...JSON.parse(tinyConfig), hidden_act: 'gelu' }, /hidden_act "gelu"/, UnsupportedModelError],
    ['wrong type', { ...JSON.parse(tinyConfig), hidden_size: '64' }, /hidden_size.*expected an integer/, ModelFormatError],
    ['negative size', { ...JSON.parse(tinyConfig), num_hidden_layers: -1 }, /num_hidden_layers.*out of range/, ModelFormatError],
    ['missing field', { model_type: 'mamba' }, /hidden_size.*missing/, ModelFormatError],
    ['Mamba3 in mamba_ssm', { d_model: 8, n_layer: 1, vocab_size: 256, ssm_cfg: { layer: 'Mamba3' } }, /Mamba3/, UnsupportedModelError],
    ['falcon_mamba eps', { ...JSON.parse(tinyConfig), model_type: 'falcon_mamba', mixer_rms_eps: 0 }, /mixer_rms_eps.*must be in \(0, 1\)/, ModelFormatError],
  ];
  test.each(bad)('%s', (_n, cfg, msg, type) => {
    expect(() => parseConfig(JSON.stringify(cfg))).toThrow(type);
    expect(() => parseConfig(JSON.stringify(cfg))).toThrow(msg);
  });
  test('falcon_mamba: Mamba-1 plus mixer_rms_eps (default 1e-6); Mamba-1 has none', () => {
    const falcon = { ...JSON.parse(tinyConfig), model_type: 'falcon_mamba' };
    expect(parseConfig(JSON.stringify(falcon)).mixerRmsEps).toBe(1e-6);
    expect(parseConfig(JSON.stringify({ ...falcon, mixer_rms_eps: 1e-5 })).mixerRmsEps).toBe(1e-5);
    expect(parseConfig(tinyConfig).mixerRmsEps).toBeUndefined();
  });
  test('not JSON', () => expect(() => parseConfig('{')).toThrow(/config\.json: not valid JSON/));

  test('time_step_rank "auto" = ceil(hidden/16); mamba_ssm pads the vocabulary', () => {
    expect(parseConfig(JSON.stringify({ ...JSON.parse(tinyConfig), hidden_size: 72, time_step_rank: 'auto', intermediate_size: 144 })).dtRank).toBe(5);
    const c = parseConfig(JSON.stringify({ d_model: 40, n_layer: 2, vocab_size: 250, pad_vocab_size_multiple: 8 }));
    expect(c).toMatchObject({ naming: 'mamba_ssm', vocabSize: 256, dInner: 80, dtRank: 3, tiedEmbeddings: true });
  });
});

describe('the same weights load identically from every naming and dtype', () => {
  const [tiny] = loadFixtures().filter((f) => f.name === 'tiny-hf-f32');
  const parsed = parseSafetensors(tinyWeights);
  const asF32 = (dtype: 'F32' | 'F16' | 'BF16', rename = (n: string) => n) =>
    encodeSafetensors(
      Object.fromEntries(
        [...parsed.tensors].map(([name, t]) => [
          rename(name),
          { dtype, shape: t.shape, data: new Float32Array(t.data.slice().buffer) },
        ]),
      ),
    );

  test('mamba_ssm naming and config reproduce the transformers logits', async () => {
    const hf = JSON.parse(tinyConfig);
    const config = {
      d_model: hf.hidden_size,
      n_layer: hf.num_hidden_layers,
      vocab_size: hf.vocab_size,
      pad_vocab_size_multiple: 8,
      tie_embeddings: true,
      ssm_cfg: { d_state: hf.state_size, d_conv: hf.conv_kernel, expand: hf.expand, dt_rank: hf.time_step_rank },
    };
    const weights = asF32('F32', (n) => n.replace('backbone.embeddings.', 'backbone.embedding.'));
    const m = await loadModel({ files: { 'config.json': JSON.stringify(config), 'model.safetensors': weights } }, { backend: 'js' });
    expect(maxAbsDiff(await m.logits(tiny.input), tiny.logits) / tiny.maxAbsLogit).toBeLessThan(1e-6);
  });

  test('sharded checkpoint (model.safetensors.index.json)', async () => {
    const names = [...parsed.tensors.keys()];
    const shard = (part: string[]) =>
      encodeSafetensors(Object.fromEntries(part.map((n) => {
        const t = parsed.tensors.get(n)!;
        return [n, { dtype: 'F32' as const, shape: t.shape, data: new Float32Array(t.data.slice().buffer) }];
      })));
    const half = Math.ceil(names.length / 2);
    const index = { weight_map: Object.fromEntries(names.map((n, i) => [n, i < half ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'])) };
    const m = await loadModel({
      files: {
        'config.json': tinyConfig,
        'model.safetensors.index.json': JSON.stringify(index),
        'model-00001-of-00002.safetensors': shard(names.slice(0, half)),
        'model-00002-of-00002.safetensors': shard(names.slice(half)),
      },
    }, { backend: 'js' });
    expect(maxAbsDiff(await m.logits(tiny.input), tiny.logits) / tiny.maxAbsLogit).toBeLessThan(1e-6);
  });

  test('F16 and BF16 storage decode to the rounded values', async () => {
    for (const [dtype, tol] of [['F16', 5e-3], ['BF16', 3e-2]] as const) {
      const m = await loadModel({ files: { 'config.json': tinyConfig, 'model.safetensors': asF32(dtype) } }, { backend: 'js' });
      const ratio = maxAbsDiff(await m.logits(tiny.input), tiny.logits) / tiny.maxAbsLogit;
      expect(ratio, dtype).toBeLessThan(tol);
      expect(ratio, dtype).toBeGreaterThan(0); // really rounded, not read as f32
    }
  });
});

describe('bounds from the config, typed errors (issue #13 items 2 and 9)', () => {
  const files = syntheticModel({ hidden_size: 8, num_hidden_layers: 1, seed: 5 });
  const header = parseSafetensors(files['model.safetensors']);
  const names = [...header.tensors.keys()];

  test('a number out of double range (1e400) is reported as such, not as "got null"', () => {
    const cfg = JSON.parse(files['config.json']);
    for (const key of ['hidden_size', 'layer_norm_epsilon']) {
      const text = JSON.stringify({ ...cfg, [key]: '__X__' }).replace('"__X__"', '1e400');
      expect(() => parseConfig(text)).toThrow(new RegExp(`config\\.json \\[${key}\\]: number is out of range \\(not finite as a double, e\\.g\\. 1e400\\)`));
    }
  });

  test('a 10 MB tensor name gives a short message, wherever it is reported', async () => {
    const long = 'n'.repeat(10_000_000);
    expect(new ModelFormatError('model.safetensors', 'x', long).message.length).toBeLessThan(300);
    const entry = { dtype: 'F13', shape: [1], data_offsets: [0, 4] };
    const st = withHeader(encodeSafetensors({ a: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }), (h) => {
      delete h.a;
      h[long] = entry;
    });
    const e = await Promise.resolve().then(() => parseSafetensors(st)).catch((x) => x);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toMatch(/^model\.safetensors \[n{200}\.\.\.\]: unknown dtype "F13"$/);
    expect(e.item.length).toBe(203);
  });

  test('an in-memory config.json of 600 MB is refused from its size, before decoding (was ERR_STRING_TOO_LONG)', async () => {
    const huge = new Uint8Array(600e6); // zero pages: not touched, so not resident
    const t = performance.now();
    await expect(loadModel({ files: { 'config.json': huge, 'model.safetensors': files['model.safetensors'] } }, { backend: 'js' })).rejects.toThrow(
      /^config\.json: file is 600000000 bytes, more than the 1048576 accepted$/,
    );
    expect(performance.now() - t).toBeLessThan(1000);
    expect(() => parseConfig('x'.repeat(2 ** 20 + 1))).toThrow(/config\.json: is 1048577 characters, more than the 1048576 accepted/);
  });

  test('the index is checked against the config before any shard is read', async () => {
    const read: string[] = [];
    // A files object that records which files the loader takes.
    const spy = (f: Record<string, string | Uint8Array>) =>
      new Proxy(f, {
        getOwnPropertyDescriptor(target, p) {
          if (typeof p === 'string' && Object.hasOwn(target, p)) read.push(p);
          return Reflect.getOwnPropertyDescriptor(target, p);
        },
      });
    const shard = files['model.safetensors'];
    const base = { 'config.json': files['config.json'], 'a.safetensors': shard };
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ ...Object.fromEntries(names.map((n) => [n, 'a.safetensors'])), 'backbone.layers.7.mixer.D': 'a.safetensors' }, /index\.json \[backbone\.layers\.7\.mixer\.D\]: tensor is not used by this config/],
      [Object.fromEntries(names.slice(1).map((n) => [n, 'a.safetensors'])), new RegExp(`index\\.json \\[${names[0].replace(/\./g, '\\.')}\\]: lists no shard for a tensor the config needs`)],
    ];
    for (const [weightMap, message] of cases) {
      read.length = 0;
      const source = spy({ ...base, 'model.safetensors.index.json': JSON.stringify({ weight_map: weightMap }) });
      await expect(loadModel({ files: source }, { backend: 'js' })).rejects.toThrow(message);
      expect(read).toEqual(['config.json', 'model.safetensors.index.json']);
    }
  });

  test('weight files together stay within what the config implies: the shard that would pass it is refused before parsing', async () => {
    const half = Math.ceil(names.length / 2);
    const weightMap = Object.fromEntries(names.map((n, i) => [n, i < half ? 'a.safetensors' : 'b.safetensors']));
    const shard = (part: string[], pad = 0) =>
      encodeSafetensors(
        Object.fromEntries(part.map((n) => [n, { dtype: 'F32' as const, shape: header.tensors.get(n)!.shape, data: toFloat32(header.tensors.get(n)!, 'x') }])),
        { format: 'pt', pad: 'x'.repeat(pad) },
      );
    const a = shard(names.slice(0, half));
    // The budget: per file 8 bytes + header room for its tensors, plus every tensor at float32.
    const expected = expectedTensors(parseConfig(files['config.json']));
    const budget = 2 * 8 + maxHeaderBytesFor(half) + maxHeaderBytesFor(names.length - half) + expected.reduce((s, t) => s + 4 * t.shape.reduce((x, y) => x * y, 1), 0);
    const b = shard(names.slice(half), budget - a.length - shard(names.slice(half)).length + 64);
    expect(b.length).toBeLessThan(budget); // alone it would fit
    const load = (bFile: Uint8Array) =>
      loadModel({ files: { 'config.json': files['config.json'], 'model.safetensors.index.json': JSON.stringify({ weight_map: weightMap }), 'a.safetensors': a, 'b.safetensors': bFile } }, { backend: 'js' });
    const e = await load(b).catch((x) => x);
    expect(e).toBeInstanceOf(ModelFormatError);
    expect(e.message).toBe(`b.safetensors: file is ${b.length} bytes, more than the ${budget - a.length} bytes left of the ${budget} that config.json allows for all weight files (${expected.length} tensors at float32, plus headers)`);
    // Without the padding the same shards load.
    (await load(shard(names.slice(half)))).dispose();
  });

  test('a header longer than the config implies is refused from its 8-byte length', () => {
    const st = files['model.safetensors'];
    const len = Number(new DataView(st.buffer, st.byteOffset).getBigUint64(0, true));
    expect(() => parseSafetensors(st, 'model.safetensors', { maxHeaderBytes: len - 1 })).toThrow(
      /header length is out of range: more than the \d+ bytes its tensors can need/,
    );
    expect(() => parseSafetensors(st, 'model.safetensors', { maxTensors: names.length - 1 })).toThrow(/header lists more than the \d+ tensors expected/);
    expect(parseSafetensors(st, 'model.safetensors', { maxHeaderBytes: len, maxTensors: names.length }).tensors.size).toBe(names.length);
  });
});
