import { parseConfig, type MambaConfig } from './config.js';
import { encodeSafetensors } from './safetensors.js';
import { assembleWeights, embeddingName, type ModelWeights } from './weights.js';

/** Shape of a synthetic Mamba-1 model (HF field names). */
export interface SyntheticSpec {
  hidden_size: number;
  num_hidden_layers: number;
  state_size?: number;
  expand?: number;
  conv_kernel?: number;
  time_step_rank?: number | 'auto';
  vocab_size?: number;
  use_bias?: boolean;
  use_conv_bias?: boolean;
  tie_word_embeddings?: boolean;
  naming?: 'hf' | 'mamba_ssm';
  /** Falcon-Mamba (`model_type: "falcon_mamba"`, HF naming only): Δ, B, C normalised after x_proj. */
  falcon?: boolean;
  /** Mamba-2 (`model_type: "mamba2"` / `ssm_cfg.layer: "Mamba2"`) with these head settings. */
  mamba2?: { head_dim: number; n_groups?: number; chunk_size?: number; norm_before_gate?: boolean; time_step_limit?: [number, number] };
  dtype?: 'F32' | 'F16' | 'BF16';
  seed?: number;
}

/** mamba-130m's shapes with a byte vocabulary: the model the benchmarks measure. */
export const MAMBA_130M_BYTES: SyntheticSpec = {
  hidden_size: 768,
  num_hidden_layers: 24,
  state_size: 16,
  expand: 2,
  conv_kernel: 4,
  time_step_rank: 48,
  vocab_size: 256,
  seed: 1,
};

/** mamba2-130m's shapes with a byte vocabulary (state 128, heads of 64, one group): Mamba-2's bench row. */
export const MAMBA2_130M_BYTES: SyntheticSpec = {
  hidden_size: 768,
  num_hidden_layers: 24,
  state_size: 128,
  expand: 2,
  conv_kernel: 4,
  vocab_size: 256,
  mamba2: { head_dim: 64, n_groups: 1, chunk_size: 256 },
  seed: 1,
};

/**
 * The shapes of the published `state-spaces/mamba-*-hf` checkpoints (their config.json): d_state 16,
 * expand 2, conv 4, dt_rank ceil(D/16), tied head, and vocab_size 50280 (GPT-NeoX's 50277 tokens padded
 * to a multiple of 8, as the checkpoints' embeddings are).
 */
const hf = (hidden_size: number, num_hidden_layers: number): SyntheticSpec => ({
  hidden_size,
  num_hidden_layers,
  state_size: 16,
  expand: 2,
  conv_kernel: 4,
  time_step_rank: Math.ceil(hidden_size / 16),
  vocab_size: 50280,
  tie_word_embeddings: true,
  seed: 1,
});
export const MAMBA_HF_SHAPES = {
  '130m-hf': hf(768, 24),
  '370m-hf': hf(1024, 48),
  '790m-hf': hf(1536, 48),
  '1.4b-hf': hf(2048, 48),
  '2.8b-hf': hf(2560, 64),
} as const satisfies Record<string, SyntheticSpec>;

const hfLabel = (name: string, s: SyntheticSpec) =>
  `random mamba-${name}-shaped model (D${s.hidden_size} L${s.num_hidden_layers} N16 E${2 * s.hidden_size} R${s.time_step_rank} V50280, tied)`;

/** The synthetic shapes the benchmarks and tests take by name (`--shape`). */
export const BENCH_SHAPES: Record<string, { spec: SyntheticSpec; label: string }> = {
  '130m': { spec: MAMBA_130M_BYTES, label: 'random 130m-shaped byte model (D768 L24 N16 E1536 R48 V256, tied)' },
  'mamba2-130m': { spec: MAMBA2_130M_BYTES, label: 'random mamba2-130m-shaped byte model (D768 L24 N128 E1536 H24x64 G1 V256, tied)' },
  ...Object.fromEntries(Object.entries(MAMBA_HF_SHAPES).map(([name, spec]) => [name, { spec, label: hfLabel(name, spec) }])),
};

/** Resolved sizes of a spec (defaults applied). */
function dims(spec: SyntheticSpec) {
  const D = spec.hidden_size;
  const N = spec.state_size ?? 16;
  const expand = spec.expand ?? 2;
  const E = expand * D;
  const K = spec.conv_kernel ?? 4;
  const rank = spec.time_step_rank ?? 'auto';
  const R = rank === 'auto' ? Math.ceil(D / 16) : rank;
  const V = spec.vocab_size ?? 256;
  const bias = spec.use_bias ?? false;
  const convBias = spec.use_conv_bias ?? true;
  const tied = spec.tie_word_embeddings ?? true;
  const naming = spec.naming ?? 'hf';
  const m2 = spec.mamba2;
  const H = m2 ? E / m2.head_dim : 0;
  const G = m2?.n_groups ?? 1;
  return { D, N, expand, E, K, rank, R, V, bias, convBias, tied, naming, m2, H, G };
}

/**
 * The tensors of a random model, one at a time in checkpoint order (HF or mamba_ssm names, float32
 * values), with realistic value ranges (mamba's own initialisation scales). One random stream runs
 * through all of them, so a spec always gives the same weights.
 */
export function* syntheticTensors(spec: SyntheticSpec, part: TensorPart = {}): Generator<{ name: string; shape: number[]; data: Float32Array }> {
  const { D, N, E, K, R, V, bias, convBias, tied, naming, m2, H, G } = dims(spec);
  const [from, to] = part.layers ?? [0, spec.num_hidden_layers];
  let s = (part.seed ?? spec.seed ?? 1) >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  // A plain loop, not Float32Array.from: a 2.8b-shaped model draws 2.8e9 values.
  const fill = (n: number, f: (i: number) => number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = f(i);
    return out;
  };
  // The bulk of the values: the same draws as `rand`, inlined (a call per value costs 3x the loop here).
  const uniform = (n: number, scale: number) => {
    const out = new Float32Array(n);
    let x = s;
    for (let i = 0; i < n; i++) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      out[i] = ((x / 2 ** 32) * 2 - 1) * scale;
    }
    s = x;
    return out;
  };
  const around1 = (n: number) => fill(n, () => 0.8 + 0.4 * rand());
  // dt bias = softplus⁻¹(Δ) for Δ log-uniform in [1e-3, 1e-1], as mamba initialises it.
  const dtBias = (n: number) =>
    fill(n, () => {
      const dt = Math.exp(Math.log(1e-3) + rand() * Math.log(100));
      return dt + Math.log(-Math.expm1(-dt));
    });
  const t = (name: string, shape: number[], data: Float32Array) => ({ name, shape, data });

  if (part.embedding ?? true) yield t(naming === 'hf' ? 'backbone.embeddings.weight' : 'backbone.embedding.weight', [V, D], uniform(V * D, 1));
  const C = E + 2 * G * N; // Mamba-2 conv channels: x | B | C
  for (let l = from; l < to && m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    const rows = E + C + H; // z | xBC | dt
    yield t(`${p}norm.weight`, [D], around1(D));
    yield t(`${m}in_proj.weight`, [rows, D], uniform(rows * D, 1 / Math.sqrt(D)));
    if (bias) yield t(`${m}in_proj.bias`, [rows], uniform(rows, 0.1));
    yield t(`${m}conv1d.weight`, [C, 1, K], uniform(C * K, 1 / Math.sqrt(K)));
    if (convBias) yield t(`${m}conv1d.bias`, [C], uniform(C, 0.1));
    yield t(`${m}dt_bias`, [H], dtBias(H));
    yield t(`${m}A_log`, [H], fill(H, () => Math.log(1 + 15 * rand())));
    yield t(`${m}D`, [H], fill(H, () => 0.5 + rand()));
    yield t(`${m}norm.weight`, [E], around1(E));
    yield t(`${m}out_proj.weight`, [D, E], uniform(D * E, 1 / Math.sqrt(E) / Math.sqrt(spec.num_hidden_layers)));
    if (bias) yield t(`${m}out_proj.bias`, [D], uniform(D, 0.1));
  }
  for (let l = from; l < to && !m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    yield t(`${p}norm.weight`, [D], around1(D));
    yield t(`${m}in_proj.weight`, [2 * E, D], uniform(2 * E * D, 1 / Math.sqrt(D)));
    if (bias) yield t(`${m}in_proj.bias`, [2 * E], uniform(2 * E, 0.1));
    yield t(`${m}conv1d.weight`, [E, 1, K], uniform(E * K, 1 / Math.sqrt(K)));
    if (convBias) yield t(`${m}conv1d.bias`, [E], uniform(E, 0.1));
    yield t(`${m}x_proj.weight`, [R + 2 * N, E], uniform((R + 2 * N) * E, 1 / Math.sqrt(E)));
    yield t(`${m}dt_proj.weight`, [E, R], uniform(E * R, 1 / Math.sqrt(R)));
    yield t(`${m}dt_proj.bias`, [E], dtBias(E));
    yield t(`${m}A_log`, [E, N], fill(E * N, (i) => Math.log(1 + (i % N))));
    yield t(`${m}D`, [E], fill(E, () => 0.5 + rand()));
    yield t(`${m}out_proj.weight`, [D, E], uniform(D * E, 1 / Math.sqrt(E) / Math.sqrt(spec.num_hidden_layers)));
    if (bias) yield t(`${m}out_proj.bias`, [D], uniform(D, 0.1));
  }
  if (part.tail ?? true) {
    yield t('backbone.norm_f.weight', [D], around1(D));
    if (!tied) yield t('lm_head.weight', [V, D], uniform(V * D, 1 / Math.sqrt(D)));
  }
}

/** Which tensors `syntheticTensors` makes: all by default; `lazy` weights make one block at a time. */
interface TensorPart {
  embedding?: boolean;
  /** Blocks [from, to). */
  layers?: [number, number];
  /** norm_f and an untied lm_head. */
  tail?: boolean;
  /** Starts the random stream here instead of at the spec's seed. */
  seed?: number;
}

/**
 * Builds `config.json` + `model.safetensors` for a random Mamba-1 (or Mamba-2, Falcon-Mamba) with realistic value ranges
 * (mamba's own initialisation scales): for tests, fuzzing and benchmarks without a checkpoint.
 */
export function syntheticModel(spec: SyntheticSpec): { 'config.json': string; 'model.safetensors': Uint8Array } {
  const dtype = spec.dtype ?? 'F32';
  const tensors: Record<string, { dtype: typeof dtype; shape: number[]; data: Float32Array }> = {};
  for (const { name, shape, data } of syntheticTensors(spec)) tensors[name] = { dtype, shape, data };
  return { 'config.json': JSON.stringify(syntheticConfig(spec), null, 2), 'model.safetensors': encodeSafetensors(tensors) };
}

/**
 * The parsed config and float32 weights of a random model, built straight from the generated tensors:
 * no safetensors bytes and no decoded copy, so the host holds the model once (a 2.8b-shaped model's
 * float32 weights are 11 GB; through `syntheticModel` + `readModel` it would be held three times, and
 * its file would exceed what one ArrayBuffer may hold).
 */
export function syntheticWeights(spec: SyntheticSpec, o: { lazy?: boolean } = {}): { config: MambaConfig; weights: ModelWeights } {
  const config = parseConfig(JSON.stringify(syntheticConfig(spec)));
  if (o.lazy) return { config, weights: lazyWeights(spec, config) };
  return { config, weights: assemble(config, syntheticTensors(spec)) };
}

function assemble(config: MambaConfig, tensors: Iterable<{ name: string; data: Float32Array }>, rename = (name: string) => name): ModelWeights {
  const byName = new Map<string, Float32Array>();
  for (const { name, data } of tensors) byName.set(rename(name), data);
  return assembleWeights(config, (name) => {
    const data = byName.get(name);
    byName.delete(name); // each tensor is taken once: what the weights do not keep can be collected
    return data;
  });
}

/**
 * `lazy`: each block's tensors are made when one of them is first read, from a stream seeded by the
 * block's index (other values than the eager weights', the same distributions), and only the block
 * read last is kept. Backends read a block's tensors together once, while uploading (wasm copies them,
 * WebGPU builds their layouts block by block): the host then holds the embedding plus one block of
 * float32, not the whole model (11 GB for 2.8b-hf). Not for the js backend, which computes on the
 * arrays it is given and would make every block again at every token.
 */
function lazyWeights(spec: SyntheticSpec, config: MambaConfig): ModelWeights {
  const head = assemble({ ...config, nLayer: 0 }, syntheticTensors(spec, { layers: [0, 0] }));
  // One block as a 1-block model's (its names renamed to block 0; no embedding / tail to make).
  const block = (l: number) => {
    const tensors = syntheticTensors(spec, { embedding: false, tail: false, layers: [l, l + 1], seed: ((spec.seed ?? 1) * 1000003 + l + 1) >>> 0 });
    const empty = new Float32Array(0);
    const one = assemble({ ...config, nLayer: 1, tiedEmbeddings: true }, [...tensors, { name: embeddingName(config), data: empty }, { name: 'backbone.norm_f.weight', data: empty }], (n) =>
      n.replace(`backbone.layers.${l}.`, 'backbone.layers.0.'),
    );
    return one.layers[0];
  };
  let last = { l: 0, layer: block(0) };
  const fields = Object.keys(last.layer);
  const layers = Array.from({ length: config.nLayer }, (_, l) => {
    const lazy = {};
    for (const f of fields) {
      Object.defineProperty(lazy, f, {
        enumerable: true,
        get: () => {
          if (last.l !== l) last = { l, layer: block(l) };
          return (last.layer as unknown as Record<string, Float32Array | undefined>)[f];
        },
      });
    }
    return lazy as typeof last.layer;
  });
  return { ...head, layers };
}

/** The `config.json` object of a spec (HF or mamba_ssm fields). */
export function syntheticConfig(spec: SyntheticSpec): Record<string, unknown> {
  const { D, N, expand, E, K, rank, V, bias, convBias, tied, naming, m2, H, G } = dims(spec);
  const config = m2
    ? naming === 'hf'
      ? {
          model_type: 'mamba2',
          architectures: ['Mamba2ForCausalLM'],
          hidden_size: D,
          num_hidden_layers: spec.num_hidden_layers,
          state_size: N,
          expand,
          num_heads: H,
          head_dim: m2.head_dim,
          n_groups: G,
          conv_kernel: K,
          chunk_size: m2.chunk_size ?? 256,
          vocab_size: V,
          use_bias: bias,
          use_conv_bias: convBias,
          tie_word_embeddings: tied,
          layer_norm_epsilon: 1e-5,
          norm_before_gate: m2.norm_before_gate ?? false,
          time_step_limit: m2.time_step_limit ?? [0, { __float__: 'Infinity' }],
          rms_norm: true,
          hidden_act: 'silu',
        }
      : {
          d_model: D,
          d_intermediate: 0,
          n_layer: spec.num_hidden_layers,
          vocab_size: V,
          pad_vocab_size_multiple: 1,
          tie_embeddings: tied,
          rms_norm: true,
          ssm_cfg: {
            layer: 'Mamba2',
            d_state: N,
            d_conv: K,
            expand,
            headdim: m2.head_dim,
            ngroups: G,
            chunk_size: m2.chunk_size ?? 256,
            bias,
            conv_bias: convBias,
            norm_before_gate: m2.norm_before_gate ?? false,
            ...(m2.time_step_limit ? { dt_limit: m2.time_step_limit } : {}),
          },
        }
    : naming === 'hf'
      ? {
          model_type: spec.falcon ? 'falcon_mamba' : 'mamba',
          architectures: [spec.falcon ? 'FalconMambaForCausalLM' : 'MambaForCausalLM'],
          ...(spec.falcon ? { mixer_rms_eps: 1e-6 } : {}),
          hidden_size: D,
          num_hidden_layers: spec.num_hidden_layers,
          state_size: N,
          expand,
          intermediate_size: E,
          conv_kernel: K,
          time_step_rank: rank,
          vocab_size: V,
          use_bias: bias,
          use_conv_bias: convBias,
          tie_word_embeddings: tied,
          layer_norm_epsilon: 1e-5,
          hidden_act: 'silu',
        }
      : {
          d_model: D,
          n_layer: spec.num_hidden_layers,
          vocab_size: V,
          pad_vocab_size_multiple: 1,
          tie_embeddings: tied,
          rms_norm: true,
          ssm_cfg: { d_state: N, d_conv: K, expand, dt_rank: rank, bias, conv_bias: convBias },
        };
  return config;
}
