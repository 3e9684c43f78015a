import { ModelFormatError, UnsupportedModelError } from './errors.js';
import { parseJsonBytes } from './json.js';

/**
 * Everything about a Mamba-1 model that changes the math, normalised from either
 * the Hugging Face `MambaConfig` or the original `mamba_ssm` config.
 */
export interface MambaConfig {
  /** D: residual stream width (`hidden_size` / `d_model`). */
  dModel: number;
  nLayer: number;
  /** V: rows of the embedding and of the LM head (after mamba_ssm's padding). */
  vocabSize: number;
  /** N: SSM state size per channel. */
  dState: number;
  /** K: causal conv1d kernel width. */
  dConv: number;
  /** E: inner width (`intermediate_size`, normally expand·D). */
  dInner: number;
  /** R: rank of the Δ projection. */
  dtRank: number;
  /** in_proj / out_proj carry biases. */
  bias: boolean;
  /** conv1d carries a bias. */
  convBias: boolean;
  /** RMSNorm epsilon. */
  eps: number;
  /** LM head shares the embedding matrix. */
  tiedEmbeddings: boolean;
  /** Which tensor naming the checkpoint uses. */
  naming: 'hf' | 'mamba_ssm';
  /**
   * Falcon-Mamba (`model_type: "falcon_mamba"`): the epsilon of the weightless RMSNorms applied to
   * Δ (before dt_proj), B and C, each on its own, right after x_proj. Undefined for Mamba-1.
   */
  mixerRmsEps?: number;
  /**
   * Mamba-2 (SSD, `model_type: "mamba2"` or `ssm_cfg.layer: "Mamba2"`); undefined for Mamba-1 and
   * Falcon-Mamba. Then `dtRank` is 0 and the state per layer is conv [E + 2GN, K-1], ssm [H, P, N].
   */
  mamba2?: Mamba2Config;
}

/** What Mamba-2 adds to the shared fields (E = H·P = `dInner`, N = `dState`). */
export interface Mamba2Config {
  /** H: heads, each with its own scalar A, Δ and D. */
  nHeads: number;
  /** P: channels per head. */
  headDim: number;
  /** G: groups of heads sharing B and C (heads h·G/H .. of group g are contiguous). */
  nGroups: number;
  /** Tokens per chunk of the SSD's parallel form (the checkpoint's `chunk_size`; any value gives the same math). */
  chunkSize: number;
  /** Δ is clamped to [dtMin, dtMax] after softplus (`time_step_limit` / `dt_limit`). */
  dtMin: number;
  dtMax: number;
  /** norm(y)·SiLU(z) instead of norm(y·SiLU(z)). */
  normBeforeGate: boolean;
  /** The gated RMSNorm normalises groups of this many channels (E / G, as mamba_ssm's RMSNormGated). */
  normGroupSize: number;
  /** Its epsilon (transformers: `layer_norm_epsilon`; mamba_ssm: 1e-5). */
  normEps: number;
}

/** Channels of the causal conv: E for Mamba-1, x | B | C = E + 2·G·N for Mamba-2. */
export function convChannels(c: MambaConfig): number {
  return c.mamba2 ? c.dInner + 2 * c.mamba2.nGroups * c.dState : c.dInner;
}

type Json = Record<string, unknown>;

const FILE = 'config.json';

/**
 * Sanity bounds on every size field. config.json is untrusted input: these caps keep every product
 * of sizes far inside safe-integer range and refuse absurd models (hidden_size 1e9) from the config
 * alone, before any weight is read or allocated. Each is >10x the largest published Mamba.
 */
export const CONFIG_LIMITS = {
  hidden_size: 1 << 16,
  num_hidden_layers: 1 << 12,
  vocab_size: 1 << 21,
  intermediate_size: 1 << 18,
  expand: 64,
  state_size: 1 << 12,
  conv_kernel: 1 << 10,
  time_step_rank: 1 << 16,
  pad_vocab_size_multiple: 1 << 16,
} as const;
const L = CONFIG_LIMITS;

/** A short, safe rendering of an untrusted JSON value for an error message (never throws, bounded). */
export function preview(v: unknown, max = 60): string {
  // JSON.stringify renders Infinity (1e400 in a file) as "null": say what it is.
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  let s: string;
  try {
    // JSON.stringify recurses: a deeply nested value from a hostile file overflows the stack.
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = Array.isArray(v) ? '[...]' : typeof v === 'object' && v !== null ? '{...}' : typeof v;
  }
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

function int(cfg: Json, key: string, max: number, fallback?: number, min = 1): number {
  const v = cfg[key] ?? fallback;
  if (v === undefined) throw new ModelFormatError(FILE, 'required field is missing', key);
  if (typeof v === 'number' && !Number.isFinite(v)) throw notFinite(key);
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new ModelFormatError(FILE, `expected an integer, got ${preview(v)}`, key);
  }
  if (v < min || v > max) throw new ModelFormatError(FILE, `value ${v} is out of range [${min}, ${max}]`, key);
  return v;
}

function num(cfg: Json, key: string, fallback: number): number {
  const v = cfg[key] ?? fallback;
  if (typeof v === 'number' && !Number.isFinite(v)) throw notFinite(key);
  if (typeof v !== 'number') throw new ModelFormatError(FILE, `expected a number, got ${preview(v)}`, key);
  return v;
}

/** A literal like 1e400 (or Python's Infinity) where a finite number belongs. */
function notFinite(key: string): ModelFormatError {
  return new ModelFormatError(FILE, 'number is out of range (not finite as a double, e.g. 1e400)', key);
}

function bool(cfg: Json, key: string, fallback: boolean): boolean {
  const v = cfg[key] ?? fallback;
  if (typeof v !== 'boolean') throw new ModelFormatError(FILE, `expected a boolean, got ${preview(v)}`, key);
  return v;
}

function dtRankOf(cfg: Json, key: string, dModel: number): number {
  const v = cfg[key] ?? 'auto';
  // "auto" is ceil(D / 16) in both transformers and mamba_ssm.
  return v === 'auto' ? Math.ceil(dModel / 16) : int(cfg, key, CONFIG_LIMITS.time_step_rank);
}

/** Unsupported-model messages name the file too, so every load failure says where to look. */
function unsupported(message: string): UnsupportedModelError {
  return new UnsupportedModelError(`${FILE}: ${message}`);
}

/**
 * Largest config.json accepted: real ones are a few kB. Bounds the parse (with `CONFIG_JSON_LIMITS`)
 * and is checked before a file is read.
 */
export const MAX_CONFIG_BYTES = 1 << 20;
/**
 * Nesting as serde_json; entries far above any real config (a few dozen fields). A bare `Infinity`
 * outside strings (Python's `json.dumps` of float('inf'), e.g. in `time_step_limit`) reads as Infinity.
 */
const CONFIG_JSON_LIMITS = { maxDepth: 128, maxEntries: 1 << 16, maxKeys: 4096, allowInfinity: true };

/**
 * JSON.parse that also reads Python's bare `Infinity` (for trusted files such as test fixtures;
 * untrusted ones go through `parseConfig`'s bounds).
 */
export function parseJsonText(text: string): unknown {
  return parseJsonBytes(new TextEncoder().encode(text), 'JSON', { maxEntries: Number.MAX_SAFE_INTEGER, allowInfinity: true });
}

/** Parses and validates `config.json` (text or UTF-8 bytes). Throws `ModelFormatError` / `UnsupportedModelError`. */
export function parseConfig(text: string | Uint8Array): MambaConfig {
  // A string's UTF-8 form is at least as long as the string: refuse before encoding it.
  const size = typeof text === 'string' ? text.length : text?.byteLength;
  if (typeof size !== 'number') throw new ModelFormatError(FILE, 'must be text or bytes');
  if (size > MAX_CONFIG_BYTES) throw new ModelFormatError(FILE, `is ${size} ${typeof text === 'string' ? 'characters' : 'bytes'}, more than the ${MAX_CONFIG_BYTES} accepted`);
  const bytes = typeof text === 'string' ? new TextEncoder().encode(text) : text;
  const raw = parseJsonBytes(bytes, FILE, CONFIG_JSON_LIMITS);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ModelFormatError(FILE, 'top level must be a JSON object');
  }
  const cfg = raw as Json;
  const modelType = cfg.model_type;
  if (modelType === undefined && 'd_model' in cfg) return parseMambaSsm(cfg);
  if (modelType === 'mamba2') return parseMamba2Hf(cfg);
  if (modelType !== 'mamba' && modelType !== 'falcon_mamba') {
    throw unsupported(
      `model_type ${preview(modelType)} is not supported: mamba-edge runs Mamba-1 ("mamba", or an original mamba_ssm config), Mamba-2 ("mamba2") and Falcon-Mamba ("falcon_mamba")`,
    );
  }
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish') {
    throw unsupported(`hidden_act ${preview(act)} is not supported (only "silu")`);
  }
  const dModel = int(cfg, 'hidden_size', L.hidden_size);
  const expand = int(cfg, 'expand', L.expand, 2);
  return check({
    dModel,
    nLayer: int(cfg, 'num_hidden_layers', L.num_hidden_layers),
    vocabSize: int(cfg, 'vocab_size', L.vocab_size),
    dState: int(cfg, 'state_size', L.state_size, 16),
    dConv: int(cfg, 'conv_kernel', L.conv_kernel, 4),
    dInner: int(cfg, 'intermediate_size', L.intermediate_size, expand * dModel),
    dtRank: dtRankOf(cfg, 'time_step_rank', dModel),
    bias: bool(cfg, 'use_bias', false),
    convBias: bool(cfg, 'use_conv_bias', true),
    eps: num(cfg, 'layer_norm_epsilon', 1e-5),
    tiedEmbeddings: bool(cfg, 'tie_word_embeddings', true),
    naming: 'hf',
    // transformers' FalconMambaConfig defaults mixer_rms_eps to 1e-6.
    ...(modelType === 'falcon_mamba' ? { mixerRmsEps: num(cfg, 'mixer_rms_eps', 1e-6) } : {}),
  });
}

/**
 * `time_step_limit` / `dt_limit`: [min, max], where max is often infinite. transformers writes
 * infinity as `{"__float__": "Infinity"}`, Python's json as a bare `Infinity` (see `parseJsonText`).
 */
function dtLimit(cfg: Json, key: string): [number, number] {
  const v = cfg[key];
  if (v === undefined || v === null) return [0, Infinity];
  const bound = (x: unknown): number => {
    if (typeof x === 'number' && !Number.isNaN(x)) return x;
    const f = typeof x === 'object' && x !== null ? (x as Json).__float__ : undefined;
    if (f === 'Infinity' || f === 'inf') return Infinity;
    throw new ModelFormatError(FILE, `expected [min, max] numbers, got ${preview(v)}`, key);
  };
  if (!Array.isArray(v) || v.length !== 2) throw new ModelFormatError(FILE, `expected [min, max], got ${preview(v)}`, key);
  const [lo, hi] = [bound(v[0]), bound(v[1])];
  if (!(lo >= 0 && hi > lo)) throw new ModelFormatError(FILE, `expected 0 <= min < max, got [${lo}, ${hi}]`, key);
  return [lo, hi];
}

/** transformers' `Mamba2Config`. */
function parseMamba2Hf(cfg: Json): MambaConfig {
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'swish') throw unsupported(`hidden_act ${preview(act)} is not supported (only "silu")`);
  if (cfg.rms_norm === false) throw unsupported('rms_norm=false is not supported; only RMSNorm Mamba models');
  const dModel = int(cfg, 'hidden_size', L.hidden_size);
  const expand = int(cfg, 'expand', L.expand, 2);
  const E = expand * dModel;
  const nHeads = int(cfg, 'num_heads', L.intermediate_size, 128);
  const headDim = int(cfg, 'head_dim', L.intermediate_size, 64);
  if (nHeads * headDim !== E) {
    throw new ModelFormatError(FILE, `num_heads x head_dim = ${nHeads * headDim} must equal expand x hidden_size = ${E}`, 'num_heads');
  }
  const nGroups = int(cfg, 'n_groups', L.intermediate_size, 8);
  const eps = num(cfg, 'layer_norm_epsilon', 1e-5);
  const [dtMin, dtMax] = dtLimit(cfg, 'time_step_limit');
  return check({
    dModel,
    nLayer: int(cfg, 'num_hidden_layers', L.num_hidden_layers),
    vocabSize: int(cfg, 'vocab_size', L.vocab_size),
    dState: int(cfg, 'state_size', L.state_size, 128),
    dConv: int(cfg, 'conv_kernel', L.conv_kernel, 4),
    dInner: E,
    dtRank: 0,
    bias: bool(cfg, 'use_bias', false),
    convBias: bool(cfg, 'use_conv_bias', true),
    eps,
    tiedEmbeddings: bool(cfg, 'tie_word_embeddings', true),
    naming: 'hf',
    mamba2: {
      nHeads,
      headDim,
      nGroups,
      chunkSize: int(cfg, 'chunk_size', 1 << 16, 256),
      dtMin,
      dtMax,
      normBeforeGate: bool(cfg, 'norm_before_gate', false),
      // Per group, as mamba_ssm: transformers 5.17 normalises over all of E, which agrees only for G = 1.
      normGroupSize: E / nGroups,
      normEps: eps,
    },
  });
}

function parseMambaSsm(cfg: Json): MambaConfig {
  const ssm = (cfg.ssm_cfg ?? {}) as Json;
  if (typeof ssm !== 'object' || ssm === null || Array.isArray(ssm)) {
    throw new ModelFormatError(FILE, `expected an object, got ${preview(ssm)}`, 'ssm_cfg');
  }
  if (ssm.layer !== undefined && ssm.layer !== 'Mamba1' && ssm.layer !== 'Mamba2') {
    throw unsupported(`ssm_cfg.layer ${preview(ssm.layer)} is not supported (Mamba1, Mamba2)`);
  }
  if (cfg.rms_norm === false) {
    throw unsupported('rms_norm=false (LayerNorm blocks) is not supported; only RMSNorm Mamba models');
  }
  if (cfg.attn_layer_idx !== undefined && Array.isArray(cfg.attn_layer_idx) && cfg.attn_layer_idx.length > 0) {
    throw unsupported('hybrid attention layers (attn_layer_idx) are not supported');
  }
  const dModel = int(cfg, 'd_model', L.hidden_size);
  const expand = int(ssm, 'expand', L.expand, 2);
  const vocab = int(cfg, 'vocab_size', L.vocab_size);
  const multiple = int(cfg, 'pad_vocab_size_multiple', L.pad_vocab_size_multiple, 8);
  if (ssm.layer === 'Mamba2') {
    if (cfg.d_intermediate !== undefined && cfg.d_intermediate !== 0) {
      throw unsupported(`d_intermediate ${preview(cfg.d_intermediate)} (an MLP after each mixer) is not supported (only 0)`);
    }
    const E = expand * dModel;
    if (ssm.d_ssm !== undefined && ssm.d_ssm !== null && ssm.d_ssm !== E) {
      throw unsupported(`ssm_cfg.d_ssm ${preview(ssm.d_ssm)} differs from expand x d_model (${E}): the gated MLP part is not supported`);
    }
    if (ssm.rmsnorm === false) throw unsupported('ssm_cfg.rmsnorm=false (no gated norm) is not supported');
    if (ssm.D_has_hdim === true) throw unsupported('ssm_cfg.D_has_hdim=true (D per channel) is not supported');
    const headDim = int(ssm, 'headdim', L.intermediate_size, 64);
    const nGroups = int(ssm, 'ngroups', L.intermediate_size, 1);
    const [dtMin, dtMax] = dtLimit(ssm, 'dt_limit');
    return check({
      dModel,
      nLayer: int(cfg, 'n_layer', L.num_hidden_layers),
      vocabSize: Math.ceil(vocab / multiple) * multiple,
      dState: int(ssm, 'd_state', L.state_size, 128),
      dConv: int(ssm, 'd_conv', L.conv_kernel, 4),
      dInner: E,
      dtRank: 0,
      bias: bool(ssm, 'bias', false),
      convBias: bool(ssm, 'conv_bias', true),
      eps: num(cfg, 'norm_epsilon', 1e-5),
      tiedEmbeddings: bool(cfg, 'tie_embeddings', true),
      naming: 'mamba_ssm',
      mamba2: {
        nHeads: E / headDim,
        headDim,
        nGroups,
        chunkSize: int(ssm, 'chunk_size', 1 << 16, 256),
        dtMin,
        dtMax,
        normBeforeGate: bool(ssm, 'norm_before_gate', false),
        normGroupSize: E / nGroups,
        normEps: 1e-5, // mamba_ssm's RMSNormGated is built with its default eps
      },
    });
  }
  return check({
    dModel,
    nLayer: int(cfg, 'n_layer', L.num_hidden_layers),
    // mamba_ssm rounds the vocabulary up so the embedding rows are a multiple of this.
    vocabSize: Math.ceil(vocab / multiple) * multiple,
    dState: int(ssm, 'd_state', L.state_size, 16),
    dConv: int(ssm, 'd_conv', L.conv_kernel, 4),
    dInner: expand * dModel,
    dtRank: dtRankOf(ssm, 'dt_rank', dModel),
    bias: bool(ssm, 'bias', false),
    convBias: bool(ssm, 'conv_bias', true),
    eps: num(cfg, 'norm_epsilon', 1e-5),
    tiedEmbeddings: bool(cfg, 'tie_embeddings', true),
    naming: 'mamba_ssm',
  });
}

function check(c: MambaConfig): MambaConfig {
  const naming = (hf: string, ssm: string) => (c.naming === 'hf' ? hf : ssm);
  if (!(c.eps > 0 && c.eps < 1)) {
    throw new ModelFormatError(FILE, `epsilon ${c.eps} must be in (0, 1)`, naming('layer_norm_epsilon', 'norm_epsilon'));
  }
  if (c.mixerRmsEps !== undefined && !(c.mixerRmsEps > 0 && c.mixerRmsEps < 1)) {
    throw new ModelFormatError(FILE, `epsilon ${c.mixerRmsEps} must be in (0, 1)`, 'mixer_rms_eps');
  }
  const m2 = c.mamba2;
  if (m2) {
    const where = naming('n_groups', 'ssm_cfg.ngroups');
    if (c.dInner % m2.headDim !== 0) throw new ModelFormatError(FILE, `inner width ${c.dInner} is not a multiple of the head size ${m2.headDim}`, naming('head_dim', 'ssm_cfg.headdim'));
    if (m2.nHeads % m2.nGroups !== 0) throw new ModelFormatError(FILE, `${m2.nHeads} heads do not split into ${m2.nGroups} groups`, where);
  }
  if (c.dConv < 2) throw unsupported(`conv kernel ${c.dConv} is not supported (need >= 2)`);
  // Derived sizes get the same caps as stated ones (mamba_ssm's expand * d_model, the padded vocabulary).
  if (c.dInner > CONFIG_LIMITS.intermediate_size) {
    throw new ModelFormatError(FILE, `inner width ${c.dInner} (expand x hidden size) is out of range [1, ${CONFIG_LIMITS.intermediate_size}]`, naming('intermediate_size', 'ssm_cfg.expand'));
  }
  if (c.vocabSize > CONFIG_LIMITS.vocab_size) {
    throw new ModelFormatError(FILE, `padded vocabulary ${c.vocabSize} is out of range [256, ${CONFIG_LIMITS.vocab_size}]`, 'vocab_size');
  }
  // Tokens are UTF-8 bytes 0..255: a smaller embedding would be indexed past its end.
  if (c.vocabSize < 256) throw unsupported(`vocab_size ${c.vocabSize} is too small: mamba-edge feeds UTF-8 bytes, ids 0..255 (need >= 256)`);
  return c;
}

/** Parameter count implied by a config (what the loader expects to find). */
export function parameterCount(c: MambaConfig): number {
  const { dModel: D, dInner: E, dState: N, dConv: K, dtRank: R, vocabSize: V } = c;
  const head = V * D + D + (c.tiedEmbeddings ? 0 : V * D);
  if (c.mamba2) {
    const H = c.mamba2.nHeads;
    const C = convChannels(c);
    const inRows = E + C + H; // z | xBC | dt
    const perLayer2 =
      D + // norm
      inRows * D + (c.bias ? inRows : 0) + // in_proj
      C * K + (c.convBias ? C : 0) + // conv1d
      3 * H + // dt_bias, A_log, D
      E + // gated norm
      D * E + (c.bias ? D : 0); // out_proj
    return head + c.nLayer * perLayer2;
  }
  const perLayer =
    D + // norm
    2 * E * D + (c.bias ? 2 * E : 0) + // in_proj
    E * K + (c.convBias ? E : 0) + // conv1d
    (R + 2 * N) * E + // x_proj
    E * R + E + // dt_proj
    E * N + E + // A_log, D
    D * E + (c.bias ? D : 0); // out_proj
  return V * D + c.nLayer * perLayer + D + (c.tiedEmbeddings ? 0 : V * D);
}

/**
 * `eos_token_id` of config.json or generation_config.json: an integer or a list of integers (none when
 * absent or null). Every id must be a token of the model's vocabulary [0, vocabSize).
 */
export function parseEosTokenIds(value: unknown, file: string, vocabSize: number): number[] {
  if (value === undefined || value === null) return [];
  const ids = Array.isArray(value) ? value : [value];
  for (const id of ids) {
    if (typeof id !== 'number' || !Number.isInteger(id)) throw new ModelFormatError(file, `expected an integer or a list of integers, got ${preview(value)}`, 'eos_token_id');
    if (id < 0 || id >= vocabSize) throw new ModelFormatError(file, `token id ${id} is outside the model's vocabulary [0, ${vocabSize})`, 'eos_token_id');
  }
  return [...new Set(ids as number[])];
}
