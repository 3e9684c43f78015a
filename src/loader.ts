import { localPathExists, readLocalBytes } from './assets.js';
import type { BackendOptions } from './backends.js';
import { parameterCount, parseConfig, preview, type MambaConfig } from './config.js';
import { DEFAULT_MODEL_PATH } from './defaults.js';
import { InvalidOptionError, MambaError, ModelFormatError, ModelNotFoundError, OutOfMemoryError } from './errors.js';
import { checkFetchOptions, fetchModelFile, modelFileUrl, redactUrl, sha256Hex, type FetchOptions } from './fetch.js';
import { DEFAULT_CHUNK } from './forward.js';
import { MAX_HEADER_BYTES, parseSafetensors } from './safetensors.js';
import { tokenizerFromFiles, type Tokenizer, type TokenizerFiles } from './tokenizer.js';
import { buildWeights, type ModelWeights, type TensorSource } from './weights.js';

/** Where a model comes from: a directory path (Node, Deno), an http(s) URL, or files already in memory. */
export type ModelSource = string | URL | { files: Record<string, Uint8Array | ArrayBuffer | Blob | string> };

export interface LoadProgress {
  file: string;
  /** Bytes of this file received so far. */
  loaded: number;
  /** Total bytes of this file, when the server says (Content-Length); otherwise undefined. */
  total?: number;
}

/**
 * How to read a model. The network options (`cache`, `retries`, `stallTimeoutMs`, ...) only matter
 * for http(s) sources; see `FetchOptions`. `sha256` is checked for every source.
 */
export interface ReadOptions extends FetchOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** Extra `fetch` init for URL sources (headers, credentials). */
  fetchInit?: RequestInit;
  /**
   * Memory budget in bytes. The need is estimated from config.json alone (weights at the chosen
   * `dtype`, a float32 staging copy for non-js backends, one state, activation scratch), so a model
   * that cannot fit is refused with `OutOfMemoryError` before its weights are downloaded or allocated.
   */
  maxMemoryBytes?: number;
}

export interface LoadedFiles {
  config: MambaConfig;
  weights: ModelWeights;
  /** Total bytes of weight files read. */
  weightBytes: number;
  /** From tokenizer.json, or bytes (MambaByte) without one. */
  tokenizer: Tokenizer;
}

/**
 * Reads one model file; undefined when it does not exist (a 404 is an error for a required URL file).
 * `maxBytes` bounds what a download may deliver, so a hostile server cannot make us buffer without end.
 */
type Reader = (name: string, required: boolean, maxBytes: number) => Promise<Uint8Array | undefined>;

/** No real config.json or shard index comes near these. */
const MAX_CONFIG_BYTES = 16 * 2 ** 20;
const MAX_INDEX_BYTES = 64 * 2 ** 20;
/** The largest published tokenizer.json files (256k-token vocabularies) are ~35 MB. */
const MAX_TOKENIZER_BYTES = 64 * 2 ** 20;

/** The largest safetensors file a config can need: every tensor (and an lm_head) in float32, plus the header. */
function maxWeightFileBytes(c: MambaConfig): number {
  return (parameterCount(c) + c.vocabSize * c.dModel) * 4 + MAX_HEADER_BYTES + 8;
}

/** Opens a source: its reader (abort between files, sha256 of local and in-memory files) and its config.json. */
async function openSource(source: ModelSource, opts: ReadOptions): Promise<{ read: Reader; seen: string[]; config: MambaConfig; configBytes: Uint8Array }> {
  checkReadOptions(opts);
  const isUrl = isUrlSource(source);
  const baseRead = readerFor(source, opts);
  const seen: string[] = [];
  // Every file passes here: abort between files, and hashes for local and in-memory files
  // (downloads are verified inside fetchModelFile, which can then drop a bad cached copy).
  const read: Reader = async (name, required, maxBytes) => {
    opts.signal?.throwIfAborted();
    const bytes = await baseRead(name, required, maxBytes);
    if (!bytes) return undefined;
    seen.push(name);
    const expected = opts.sha256?.[name];
    if (expected && !isUrl) {
      const actual = await sha256Hex(bytes);
      if (actual !== expected.toLowerCase()) throw new ModelFormatError(name, `sha256 mismatch: expected ${expected.toLowerCase()}, got ${actual}`);
    }
    return bytes;
  };

  const configBytes = await read('config.json', true, MAX_CONFIG_BYTES);
  if (!configBytes) {
    const dir = localDir(source);
    if (dir === undefined) throw new ModelFormatError('config.json', `not found in ${describe(source)}`);
    if (await localPathExists(dir)) throw new ModelNotFoundError(dir, 'no config.json in this directory');
    const relative = !/^([/\\]|[A-Za-z]:)/.test(dir) ? ', relative to the working directory' : '';
    // The bundled model's path inside the package means nothing in the caller's project.
    const bundled = dir.replace(/[/\\]+$/, '').endsWith(DEFAULT_MODEL_PATH.replace(/\/$/, '')) ? '; the bundled model needs no path: loadModel() / loadModelInWorker() with no source' : '';
    throw new ModelNotFoundError(dir, `no such directory${relative}${bundled}`);
  }
  return { read, seen, config: parseConfig(new TextDecoder().decode(configBytes)), configBytes };
}

/**
 * tokenizer.json is optional: without it the model reads bytes (MambaByte). Only beside one are
 * tokenizer_config.json and generation_config.json looked for, so a byte-level model costs one
 * request more, not three.
 */
async function readTokenizerFiles(read: Reader, config: MambaConfig, configBytes: Uint8Array): Promise<Tokenizer> {
  const json = await read('tokenizer.json', false, MAX_TOKENIZER_BYTES);
  const files: TokenizerFiles = { 'config.json': configBytes };
  if (json) {
    files['tokenizer.json'] = json;
    files['tokenizer_config.json'] = await read('tokenizer_config.json', false, MAX_CONFIG_BYTES);
    files['generation_config.json'] = await read('generation_config.json', false, MAX_CONFIG_BYTES);
  }
  return tokenizerFromFiles(files, config.vocabSize);
}

/**
 * Only a model's tokenizer (config.json and the tokenizer files, no weights): for tokenizing text
 * without loading, or downloading, the model.
 */
export async function readTokenizer(source: ModelSource, opts: ReadOptions = {}): Promise<Tokenizer> {
  const { read, config, configBytes } = await openSource(source, opts);
  return readTokenizerFiles(read, config, configBytes);
}

/** Reads config.json + safetensors (single or sharded), and the tokenizer, from any source and validates them. */
export async function readModel(source: ModelSource, opts: ReadOptions & Pick<BackendOptions, 'dtype' | 'backend'> = {}): Promise<LoadedFiles> {
  const { read, seen, config, configBytes } = await openSource(source, opts);
  // Before any weight byte is fetched or allocated.
  if (opts.maxMemoryBytes !== undefined) checkMemoryBudget(config, opts.maxMemoryBytes, opts);
  // Before the weights too: a tokenizer that does not fit the model fails without the download.
  const tokenizer = await readTokenizerFiles(read, config, configBytes);

  const tensors: TensorSource = new Map();
  let weightBytes = 0;
  const addFile = (file: string, bytes: Uint8Array) => {
    weightBytes += bytes.byteLength;
    for (const [name, info] of parseSafetensors(bytes, file).tensors) {
      const prev = tensors.get(name);
      if (prev) throw new ModelFormatError(file, `tensor also present in ${prev.file}`, name);
      tensors.set(name, { info, file });
    }
  };

  const maxWeights = maxWeightFileBytes(config);
  // model.safetensors first, as transformers does, and the shard index only where it is absent: a single-file
  // checkpoint (the common case) then makes no request that fails (a 404 in every browser console, or the 200
  // HTML page that some dev servers send for a missing file).
  const single = await read('model.safetensors', false, maxWeights);
  const index = single ? undefined : await read('model.safetensors.index.json', false, MAX_INDEX_BYTES);
  if (single) {
    addFile('model.safetensors', single);
  } else if (index) {
    const map = shardMap(index);
    for (const file of [...new Set(map.values())].sort()) {
      const bytes = await read(file, true, maxWeights);
      if (!bytes) throw new ModelFormatError(file, `shard listed in model.safetensors.index.json is missing`);
      addFile(file, bytes);
    }
    // Other tools locate tensors through the index: a tensor found elsewhere than the index says
    // would make them and us read different weights from the same checkpoint.
    for (const [name, file] of map) {
      const found = tensors.get(name);
      if (!found) throw new ModelFormatError(file, 'tensor listed in model.safetensors.index.json is not in this shard', name);
      if (found.file !== file) throw new ModelFormatError(found.file, `tensor is listed under ${file} in model.safetensors.index.json`, name);
    }
  } else {
    throw new ModelFormatError(
      'model.safetensors',
      `not found in ${describe(source)}, nor model.safetensors.index.json (mamba-edge reads safetensors only, never pickle .bin files)`,
    );
  }
  // A digest for a file that was never read would silently verify nothing: say so.
  for (const name of Object.keys(opts.sha256 ?? {})) {
    if (!seen.includes(name)) throw new InvalidOptionError('sha256', `names ${name}, which this model does not have (read: ${seen.join(', ')})`);
  }
  let weights: ModelWeights;
  try {
    weights = buildWeights(config, tensors);
  } catch (e) {
    // Decoding allocates float32 copies of every tensor: running out of memory there is a RangeError.
    if (e instanceof RangeError) throw new OutOfMemoryError(`decoding ${parameterCount(config)} weights to float32 failed (${e.message})`);
    throw e;
  }
  return { config, weights, weightBytes, tokenizer };
}

function checkReadOptions(o: ReadOptions): void {
  if (typeof o !== 'object' || o === null) throw new InvalidOptionError('options', 'must be an object');
  checkFetchOptions(o);
  const m = o.maxMemoryBytes;
  if (m !== undefined && (typeof m !== 'number' || !(m > 0) || !Number.isFinite(m))) {
    throw new InvalidOptionError('maxMemoryBytes', `must be a positive number of bytes, got ${String(m)}`);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new InvalidOptionError('onProgress', 'must be a function');
}

/** Memory a model needs on a backend, estimated from its config. */
export interface MemoryEstimate {
  /** Everything below, summed: compare with a budget. */
  total: number;
  /** Weights in the backend's storage format. */
  weights: number;
  /** Float32 copies decoded from the files, alive until a non-js backend has its own copy. */
  staging: number;
  /** One sequence's recurrent state (conv + SSM); each extra session adds this much. */
  state: number;
  /** Activation scratch for one prompt chunk, including its logits. */
  activations: number;
}

/** Bytes per weight for each backend storage format (q8: int8 plus a float32 scale per 32 weights). */
const BYTES_PER_WEIGHT = { f32: 4, f16: 2, q8: 1.125 } as const;

export function estimateMemoryBytes(c: MambaConfig, o: Pick<BackendOptions, 'dtype' | 'backend'> = {}): MemoryEstimate {
  const params = parameterCount(c);
  const perWeight = BYTES_PER_WEIGHT[o.dtype ?? 'f32'] ?? 4;
  const { dModel: D, dInner: E, dState: N, dConv: K, dtRank: R, vocabSize: V, nLayer } = c;
  const weights = Math.ceil(params * perWeight);
  // The js backend computes on the decoded float32 arrays themselves; the others copy them.
  const staging = o.backend === 'js' ? 0 : params * 4;
  const state = nLayer * E * (K - 1 + N) * 4;
  const activations = DEFAULT_CHUNK * (2 * D + 4 * E + R + 2 * N + V) * 4;
  return { total: weights + staging + state + activations, weights, staging, state, activations };
}

function checkMemoryBudget(c: MambaConfig, limit: number, o: Pick<BackendOptions, 'dtype' | 'backend'>): void {
  const e = estimateMemoryBytes(c, o);
  if (e.total <= limit) return;
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  throw new OutOfMemoryError(
    `config.json describes a model of ${parameterCount(c)} parameters that needs about ${mib(e.total)} (${e.total} bytes: ` +
      `weights ${mib(e.weights)} as ${o.dtype ?? 'f32'}, float32 staging ${mib(e.staging)}, state ${mib(e.state)}, ` +
      `activations ${mib(e.activations)}), more than maxMemoryBytes ${mib(limit)} (${limit} bytes)`,
  );
}

/** Tensor name → shard file, from model.safetensors.index.json. */
function shardMap(indexBytes: Uint8Array): Map<string, string> {
  const file = 'model.safetensors.index.json';
  let index: unknown;
  try {
    index = JSON.parse(new TextDecoder().decode(indexBytes));
  } catch (e) {
    throw new ModelFormatError(file, `not valid JSON (${preview((e as Error).message, 120)})`);
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new ModelFormatError(file, 'weight_map must be an object', 'weight_map');
  const out = new Map<string, string>();
  for (const [tensor, f] of Object.entries(map)) {
    // Shard names are joined onto a directory or URL: refuse anything that could escape it
    // (no separators, so no "..", no absolute paths, no other hosts).
    if (typeof f !== 'string' || !/^[\w.-]+\.safetensors$/.test(f)) throw new ModelFormatError(file, `bad shard file name ${preview(f)}`, tensor);
    out.set(tensor, f);
  }
  if (out.size === 0) throw new ModelFormatError(file, 'weight_map lists no tensors', 'weight_map');
  return out;
}

function describe(source: ModelSource): string {
  return typeof source === 'string' || source instanceof URL ? redactUrl(String(source)) : 'the in-memory files';
}

/** The directory of a local source (a path or file: URL); undefined for URLs and in-memory files. */
function localDir(source: ModelSource): string | undefined {
  if (!(typeof source === 'string' || source instanceof URL) || isUrlSource(source)) return undefined;
  const s = String(source);
  return s.startsWith('file:') ? decodeURIComponent(new URL(s).pathname) : s;
}

function isUrlSource(source: ModelSource): boolean {
  return (typeof source === 'string' || source instanceof URL) && /^https?:\/\//i.test(String(source));
}

function readerFor(source: ModelSource, opts: ReadOptions): Reader {
  if (typeof source === 'object' && source !== null && !(source instanceof URL)) {
    const files = (source as { files?: unknown }).files;
    if (typeof files !== 'object' || files === null) {
      throw new InvalidOptionError('source', 'an in-memory source must be { files: { "config.json": ..., "model.safetensors": ... } }');
    }
    return async (name) => {
      // Own properties only: "constructor" or "__proto__" must not resolve through the prototype.
      const f = Object.hasOwn(files, name) ? (files as Record<string, unknown>)[name] : undefined;
      if (f === undefined) return undefined;
      if (typeof f === 'string') return new TextEncoder().encode(f);
      if (f instanceof Uint8Array) return f;
      if (f instanceof ArrayBuffer) return new Uint8Array(f);
      if (ArrayBuffer.isView(f)) return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
      if (typeof Blob !== 'undefined' && f instanceof Blob) return new Uint8Array(await f.arrayBuffer());
      throw new ModelFormatError(name, `in-memory file must be a string, Uint8Array, ArrayBuffer or Blob, got ${f === null ? 'null' : typeof f}`);
    };
  }
  if (typeof source !== 'string' && !(source instanceof URL)) {
    throw new InvalidOptionError('source', `must be a directory path, an http(s) URL or { files }, got ${source === null ? 'null' : typeof source}`);
  }
  const s = String(source);
  if (isUrlSource(source)) {
    const base = s.endsWith('/') ? s : `${s}/`;
    // Shard names were restricted by shardMap, so joining cannot leave the model's URL directory.
    return (name, required, maxBytes) => fetchModelFile(modelFileUrl(base, name), name, { ...opts, maxBytes }, !required);
  }
  if (/^[a-z][a-z\d+.-]*:\/\//i.test(s) && !s.startsWith('file:')) {
    throw new InvalidOptionError('source', `unsupported URL scheme in ${s} (use http, https, file or a path)`);
  }
  const dir = localDir(source)!;
  return async (name) => {
    const bytes = await readLocalFile(dir, name);
    if (bytes) opts.onProgress?.({ file: name, loaded: bytes.byteLength, total: bytes.byteLength });
    return bytes;
  };
}

async function readLocalFile(dir: string, name: string): Promise<Uint8Array | undefined> {
  const path = `${dir.replace(/\/+$/, '')}/${name}`;
  try {
    return await readLocalBytes(path);
  } catch (e) {
    const code = (e as { code?: string; name?: string }).code ?? (e as { name?: string }).name;
    if (code === 'ENOENT' || code === 'NotFound') return undefined;
    if (code === 'ENOTDIR' || code === 'EISDIR') throw new ModelFormatError(name, `${path} is not a readable model file (${code})`);
    // ERR_FS_FILE_TOO_LARGE: Node reads at most 2 GiB into one buffer.
    throw new MambaError('IO', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}
