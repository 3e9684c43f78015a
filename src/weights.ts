import { convChannels, type MambaConfig } from './config.js';
import { ModelFormatError } from './errors.js';
import { toFloat32, type TensorInfo } from './safetensors.js';

/** One residual block's parameters, in the shapes the kernels consume. */
export interface LayerWeights<W = Float32Array> {
  norm: W; // [D]
  inProjX: W; // [E, D]   first half of in_proj: the conv/SSM branch
  inProjZ: W; // [E, D]   second half of in_proj: the gate
  inProjXBias?: W; // [E]
  inProjZBias?: W; // [E]
  convW: W; // [E, K]
  convB?: W; // [E]
  xProj: W; // [R + 2N, E]  → Δ-rank, B, C
  dtProjW: W; // [E, R]
  dtProjB: W; // [E]
  A: W; // [E, N]   A = −exp(A_log), precomputed once at load
  D: W; // [E]
  outProj: W; // [D, E]
  outProjBias?: W; // [D]
}

/**
 * A Mamba-2 block's parameters (C = E + 2GN conv channels, H heads). in_proj is split at load into
 * its z | xBC | dt rows, so that each projection writes a contiguous [T, ·] buffer.
 */
export interface Mamba2LayerWeights<W = Float32Array> {
  norm: W; // [D]
  inProjZ: W; // [E, D]   the gate
  inProjX: W; // [C, D]   x | B | C, before the conv
  inProjDt: W; // [H, D]
  inProjZBias?: W; // [E]
  inProjXBias?: W; // [C]
  inProjDtBias?: W; // [H]
  convW: W; // [C, K]
  convB?: W; // [C]
  dtBias: W; // [H]
  A: W; // [H]   A = −exp(A_log)
  D: W; // [H]
  gateNorm: W; // [E]   the gated RMSNorm's weight
  outProj: W; // [D, E]
  outProjBias?: W; // [D]
}

export type AnyLayerWeights<W = Float32Array> = LayerWeights<W> | Mamba2LayerWeights<W>;

export function isMamba2Layer<W>(L: AnyLayerWeights<W>): L is Mamba2LayerWeights<W> {
  return 'gateNorm' in L;
}

export interface ModelWeights<W = Float32Array> {
  embedding: W; // [V, D]
  layers: AnyLayerWeights<W>[];
  normF: W; // [D]
  lmHead: W; // [V, D]  the embedding itself when tied
}

/** Looks tensors up by name across one or more safetensors files (sharded checkpoints). */
export type TensorSource = Map<string, { info: TensorInfo; file: string }>;

export interface ExpectedTensor {
  name: string;
  shape: number[];
  /** lm_head of a tied model: used when present. */
  optional?: boolean;
}

export function embeddingName(cfg: MambaConfig): string {
  return cfg.naming === 'hf' ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
}

/**
 * Every tensor the config implies, with its shape, in the order they are used. The loader bounds
 * headers, shard indexes and file sizes with it before reading weights; `buildWeights` checks files against it.
 */
export function expectedTensors(cfg: MambaConfig): ExpectedTensor[] {
  const { dModel: D, dInner: E, dState: N, dConv: K, dtRank: R, vocabSize: V } = cfg;
  const expected: ExpectedTensor[] = [{ name: embeddingName(cfg), shape: [V, D] }];
  const m2 = cfg.mamba2;
  const H = m2?.nHeads ?? 0;
  const C = convChannels(cfg);
  for (let l = 0; l < cfg.nLayer && m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    expected.push({ name: `${m}in_proj.weight`, shape: [E + C + H, D] });
    if (cfg.bias) expected.push({ name: `${m}in_proj.bias`, shape: [E + C + H] });
    expected.push(
      { name: `${m}A_log`, shape: [H] },
      { name: `${p}norm.weight`, shape: [D] },
      { name: `${m}conv1d.weight`, shape: [C, 1, K] },
    );
    if (cfg.convBias) expected.push({ name: `${m}conv1d.bias`, shape: [C] });
    expected.push(
      { name: `${m}dt_bias`, shape: [H] },
      { name: `${m}D`, shape: [H] },
      { name: `${m}norm.weight`, shape: [E] },
      { name: `${m}out_proj.weight`, shape: [D, E] },
    );
    if (cfg.bias) expected.push({ name: `${m}out_proj.bias`, shape: [D] });
  }
  for (let l = 0; l < cfg.nLayer && !m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    expected.push({ name: `${m}in_proj.weight`, shape: [2 * E, D] });
    if (cfg.bias) expected.push({ name: `${m}in_proj.bias`, shape: [2 * E] });
    expected.push(
      { name: `${m}A_log`, shape: [E, N] },
      { name: `${p}norm.weight`, shape: [D] },
      { name: `${m}conv1d.weight`, shape: [E, 1, K] },
    );
    if (cfg.convBias) expected.push({ name: `${m}conv1d.bias`, shape: [E] });
    expected.push(
      { name: `${m}x_proj.weight`, shape: [R + 2 * N, E] },
      { name: `${m}dt_proj.weight`, shape: [E, R] },
      { name: `${m}dt_proj.bias`, shape: [E] },
      { name: `${m}D`, shape: [E] },
      { name: `${m}out_proj.weight`, shape: [D, E] },
    );
    if (cfg.bias) expected.push({ name: `${m}out_proj.bias`, shape: [D] });
  }
  // A checkpoint may carry lm_head even when tied (transformers sometimes saves both): use it if present.
  expected.push({ name: 'backbone.norm_f.weight', shape: [D] }, { name: 'lm_head.weight', shape: [V, D], optional: cfg.tiedEmbeddings });

  return expected;
}

/**
 * Maps checkpoint tensors to `ModelWeights`, checking that every tensor the config implies is
 * present with the right shape, that nothing unexpected is left over, and that all values are finite.
 * Presence and shapes are checked for every tensor before any is decoded, so a file that does not
 * match its config fails before a single large allocation.
 */
export function buildWeights(cfg: MambaConfig, source: TensorSource): ModelWeights {
  const anyFile = source.values().next().value?.file ?? 'model.safetensors';

  // Pass 1: names and shapes only (no allocation), in the order the tensors are used below.
  const expected = expectedTensors(cfg);

  const used = new Set<string>();
  for (const { name, shape, optional } of expected) {
    const entry = source.get(name);
    if (!entry) {
      if (optional) continue;
      throw new ModelFormatError(anyFile, `missing tensor (expected shape [${shape.join(', ')}])`, name);
    }
    used.add(name);
    const { info, file } = entry;
    const same = info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i]);
    if (!same) {
      throw new ModelFormatError(file, `shape [${info.shape.join(', ')}] does not match the config, expected [${shape.join(', ')}]`, name);
    }
  }
  const unused = [...source.keys()].filter((k) => !used.has(k));
  if (unused.length > 0) {
    const entry = source.get(unused[0])!;
    throw new ModelFormatError(
      entry.file,
      `tensor is not used by this config (${unused.length} unused in all; does config.json match the weights? e.g. use_bias, use_conv_bias, num_hidden_layers)`,
      unused[0],
    );
  }

  // Pass 2: decode to float32 and reject non-finite values.
  const finite = (data: Float32Array, file: string, name: string, what = 'value') => {
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new ModelFormatError(file, `non-finite ${what} ${data[i]} at element ${i}`, name);
    }
    return data;
  };
  return assembleWeights(
    cfg,
    (name) => {
      const entry = source.get(name);
      return entry && finite(toFloat32(entry.info, entry.file), entry.file, name);
    },
    (name, data) => finite(data, source.get(name)!.file, name, 'A = -exp(A_log) ='),
  );
}

/**
 * Puts float32 tensors, looked up by checkpoint name, into the shapes the kernels consume (in_proj
 * split, A = −exp(A_log)). `take` gives a tensor once, or undefined where it is absent; `checkA` sees
 * each A (a finite A_log can still give an infinite A).
 */
export function assembleWeights(
  cfg: MambaConfig,
  take: (name: string) => Float32Array | undefined,
  checkA: (name: string, A: Float32Array) => Float32Array = (_, A) => A,
): ModelWeights {
  const { dModel: D, dInner: E } = cfg;
  const m2 = cfg.mamba2;
  const C = convChannels(cfg);
  const need = (name: string) => {
    const t = take(name);
    if (!t) throw new ModelFormatError('model.safetensors', 'missing tensor', name);
    return t;
  };
  // A = -exp(A_log) overflows float32 for A_log > ~88.7: a finite file can still give an infinite A.
  const negExp = (name: string) => checkA(name, need(name).map((a) => -Math.exp(a)));

  const embName = embeddingName(cfg);
  const embedding = need(embName);
  const layers: AnyLayerWeights[] = [];
  for (let l = 0; l < cfg.nLayer && m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    const inProj = need(`${m}in_proj.weight`); // [z E | xBC C | dt H, D]
    const inBias = cfg.bias ? need(`${m}in_proj.bias`) : undefined;
    layers.push({
      norm: need(`${p}norm.weight`),
      inProjZ: inProj.subarray(0, E * D),
      inProjX: inProj.subarray(E * D, (E + C) * D),
      inProjDt: inProj.subarray((E + C) * D),
      inProjZBias: inBias?.subarray(0, E),
      inProjXBias: inBias?.subarray(E, E + C),
      inProjDtBias: inBias?.subarray(E + C),
      convW: need(`${m}conv1d.weight`),
      convB: cfg.convBias ? need(`${m}conv1d.bias`) : undefined,
      dtBias: need(`${m}dt_bias`),
      A: negExp(`${m}A_log`),
      D: need(`${m}D`),
      gateNorm: need(`${m}norm.weight`),
      outProj: need(`${m}out_proj.weight`),
      outProjBias: cfg.bias ? need(`${m}out_proj.bias`) : undefined,
    });
  }
  for (let l = 0; l < cfg.nLayer && !m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    const inProj = need(`${m}in_proj.weight`);
    const inBias = cfg.bias ? need(`${m}in_proj.bias`) : undefined;
    const A = negExp(`${m}A_log`);
    layers.push({
      norm: need(`${p}norm.weight`),
      inProjX: inProj.subarray(0, E * D),
      inProjZ: inProj.subarray(E * D),
      inProjXBias: inBias?.subarray(0, E),
      inProjZBias: inBias?.subarray(E),
      convW: need(`${m}conv1d.weight`),
      convB: cfg.convBias ? need(`${m}conv1d.bias`) : undefined,
      xProj: need(`${m}x_proj.weight`),
      dtProjW: need(`${m}dt_proj.weight`),
      dtProjB: need(`${m}dt_proj.bias`),
      A,
      D: need(`${m}D`),
      outProj: need(`${m}out_proj.weight`),
      outProjBias: cfg.bias ? need(`${m}out_proj.bias`) : undefined,
    });
  }
  const normF = need('backbone.norm_f.weight');
  const lmHead = take('lm_head.weight') ?? embedding;
  return { embedding, layers, normF, lmHead };
}
