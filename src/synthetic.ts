import { encodeSafetensors } from './safetensors.js';

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

/** The synthetic shapes the benchmarks take by name (`--shape`). */
export const BENCH_SHAPES: Record<string, { spec: SyntheticSpec; label: string }> = {
  '130m': { spec: MAMBA_130M_BYTES, label: 'random 130m-shaped byte model (D768 L24 N16 E1536 R48 V256, tied)' },
  'mamba2-130m': { spec: MAMBA2_130M_BYTES, label: 'random mamba2-130m-shaped byte model (D768 L24 N128 E1536 H24x64 G1 V256, tied)' },
};

/**
 * Builds `config.json` + `model.safetensors` for a random Mamba-1 (or Mamba-2, Falcon-Mamba) with realistic value ranges
 * (mamba's own initialisation scales): for tests, fuzzing and benchmarks without a checkpoint.
 */
export function syntheticModel(spec: SyntheticSpec): { 'config.json': string; 'model.safetensors': Uint8Array } {
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
  const dtype = spec.dtype ?? 'F32';

  let s = (spec.seed ?? 1) >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const uniform = (n: number, scale: number) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
  const tensors: Record<string, { dtype: typeof dtype; shape: number[]; data: Float32Array }> = {};
  const put = (name: string, shape: number[], data: Float32Array) => (tensors[name] = { dtype, shape, data });

  put(naming === 'hf' ? 'backbone.embeddings.weight' : 'backbone.embedding.weight', [V, D], uniform(V * D, 1));
  const m2 = spec.mamba2;
  const H = m2 ? E / m2.head_dim : 0;
  const G = m2?.n_groups ?? 1;
  const C = E + 2 * G * N; // Mamba-2 conv channels: x | B | C
  for (let l = 0; l < spec.num_hidden_layers && m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    const rows = E + C + H; // z | xBC | dt
    put(`${p}norm.weight`, [D], Float32Array.from({ length: D }, () => 0.8 + 0.4 * rand()));
    put(`${m}in_proj.weight`, [rows, D], uniform(rows * D, 1 / Math.sqrt(D)));
    if (bias) put(`${m}in_proj.bias`, [rows], uniform(rows, 0.1));
    put(`${m}conv1d.weight`, [C, 1, K], uniform(C * K, 1 / Math.sqrt(K)));
    if (convBias) put(`${m}conv1d.bias`, [C], uniform(C, 0.1));
    put(`${m}dt_bias`, [H], Float32Array.from({ length: H }, () => {
      const dt = Math.exp(Math.log(1e-3) + rand() * Math.log(100));
      return dt + Math.log(-Math.expm1(-dt));
    }));
    put(`${m}A_log`, [H], Float32Array.from({ length: H }, () => Math.log(1 + 15 * rand())));
    put(`${m}D`, [H], Float32Array.from({ length: H }, () => 0.5 + rand()));
    put(`${m}norm.weight`, [E], Float32Array.from({ length: E }, () => 0.8 + 0.4 * rand()));
    put(`${m}out_proj.weight`, [D, E], uniform(D * E, 1 / Math.sqrt(E) / Math.sqrt(spec.num_hidden_layers)));
    if (bias) put(`${m}out_proj.bias`, [D], uniform(D, 0.1));
  }
  for (let l = 0; l < spec.num_hidden_layers && !m2; l++) {
    const p = `backbone.layers.${l}.`;
    const m = `${p}mixer.`;
    put(`${p}norm.weight`, [D], Float32Array.from({ length: D }, () => 0.8 + 0.4 * rand()));
    put(`${m}in_proj.weight`, [2 * E, D], uniform(2 * E * D, 1 / Math.sqrt(D)));
    if (bias) put(`${m}in_proj.bias`, [2 * E], uniform(2 * E, 0.1));
    put(`${m}conv1d.weight`, [E, 1, K], uniform(E * K, 1 / Math.sqrt(K)));
    if (convBias) put(`${m}conv1d.bias`, [E], uniform(E, 0.1));
    put(`${m}x_proj.weight`, [R + 2 * N, E], uniform((R + 2 * N) * E, 1 / Math.sqrt(E)));
    put(`${m}dt_proj.weight`, [E, R], uniform(E * R, 1 / Math.sqrt(R)));
    // dt bias = softplus⁻¹(Δ) for Δ log-uniform in [1e-3, 1e-1], as mamba initialises it.
    put(`${m}dt_proj.bias`, [E], Float32Array.from({ length: E }, () => {
      const dt = Math.exp(Math.log(1e-3) + rand() * Math.log(100));
      return dt + Math.log(-Math.expm1(-dt));
    }));
    put(`${m}A_log`, [E, N], Float32Array.from({ length: E * N }, (_, i) => Math.log(1 + (i % N))));
    put(`${m}D`, [E], Float32Array.from({ length: E }, () => 0.5 + rand()));
    put(`${m}out_proj.weight`, [D, E], uniform(D * E, 1 / Math.sqrt(E) / Math.sqrt(spec.num_hidden_layers)));
    if (bias) put(`${m}out_proj.bias`, [D], uniform(D, 0.1));
  }
  put('backbone.norm_f.weight', [D], Float32Array.from({ length: D }, () => 0.8 + 0.4 * rand()));
  if (!tied) put('lm_head.weight', [V, D], uniform(V * D, 1 / Math.sqrt(D)));

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
  return { 'config.json': JSON.stringify(config, null, 2), 'model.safetensors': encodeSafetensors(tensors) };
}
