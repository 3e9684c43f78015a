import type { MambaConfig } from './config.js';
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

export interface ModelWeights<W = Float32Array> {
  embedding: W; // [V, D]
  layers: LayerWeights<W>[];
  normF: W; // [D]
  lmHead: W; // [V, D]  the embedding itself when tied
}

/** Looks tensors up by name across one or more safetensors files (sharded checkpoints). */
export type TensorSource = Map<string, { info: TensorInfo; file: string }>;

/**
 * Maps checkpoint tensors to `ModelWeights`, checking that every tensor the config implies is
 * present with the right shape, that nothing unexpected is left over, and that all values are finite.
 */
export function buildWeights(cfg: MambaConfig, source: TensorSource): ModelWeights {
  const { dModel: D, dInner: E, dState: N, dConv: K, dtRank: R, vocabSize: V } = cfg;
  const used = new Set<string>();
  const anyFile = source.values().next().value?.file ?? 'model.safetensors';

  const take = (name: string, shape: number[], optional = false): Float32Array | undefined => {
    const entry = source.get(name);
    if (!entry) {
      if (optional) return undefined;
      throw new ModelFormatError(anyFile, `missing tensor (expected shape [${shape.join(', ')}])`, name);
    }
    used.add(name);
    const { info, file } = entry;
    const same = info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i]);
    if (!same) {
      throw new ModelFormatError(file, `shape [${info.shape.join(', ')}] does not match the config, expected [${shape.join(', ')}]`, name);
    }
    const data = toFloat32(info, file);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) {
        throw new ModelFormatError(file, `non-finite value ${data[i]} at element ${i}`, name);
      }
    }
    return data;
  };
  const need = (name: string, shape: number[]) => take(name, shape)!;

  const embName = cfg.naming === 'hf' ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const embedding = need(embName, [V, D]);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.nLayer; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    const inProj = need(`${m}in_proj.weight`, [2 * E, D]);
    const inBias = cfg.bias ? need(`${m}in_proj.bias`, [2 * E]) : undefined;
    const ALog = need(`${m}A_log`, [E, N]);
    layers.push({
      norm: need(`${p}norm.weight`, [D]),
      inProjX: inProj.subarray(0, E * D),
      inProjZ: inProj.subarray(E * D),
      inProjXBias: inBias?.subarray(0, E),
      inProjZBias: inBias?.subarray(E),
      convW: need(`${m}conv1d.weight`, [E, 1, K]),
      convB: cfg.convBias ? need(`${m}conv1d.bias`, [E]) : undefined,
      xProj: need(`${m}x_proj.weight`, [R + 2 * N, E]),
      dtProjW: need(`${m}dt_proj.weight`, [E, R]),
      dtProjB: need(`${m}dt_proj.bias`, [E]),
      A: ALog.map((a) => -Math.exp(a)),
      D: need(`${m}D`, [E]),
      outProj: need(`${m}out_proj.weight`, [D, E]),
      outProjBias: cfg.bias ? need(`${m}out_proj.bias`, [D]) : undefined,
    });
  }
  const normF = need('backbone.norm_f.weight', [D]);
  // A checkpoint may carry lm_head even when tied (transformers sometimes saves both): use it if present.
  const head = take('lm_head.weight', [V, D], cfg.tiedEmbeddings);
  const lmHead = head ?? embedding;

  const unused = [...source.keys()].filter((k) => !used.has(k));
  if (unused.length > 0) {
    const entry = source.get(unused[0])!;
    throw new ModelFormatError(
      entry.file,
      `tensor is not used by this config (${unused.length} unused in all; does config.json match the weights? e.g. use_bias, use_conv_bias, num_hidden_layers)`,
      unused[0],
    );
  }
  return { embedding, layers, normF, lmHead };
}
