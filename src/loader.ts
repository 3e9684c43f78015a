import { localPathExists } from './assets.js';
import { defaultDtype, weightFootprint, type BackendOptions, type WeightDtype } from './backends.js';
import { MAX_CONFIG_BYTES, parameterCount, parseConfig, preview, type MambaConfig } from './config.js';
import { DEFAULT_MODEL_PATH } from './defaults.js';
import { InvalidOptionError, ModelFormatError, ModelNotFoundError, OutOfMemoryError } from './errors.js';
import { checkFetchOptions, fetchModelFile, modelFileUrl, redactUrl, sha256Hex, type FetchOptions } from './fetch.js';
import { prefillChunk } from './forward.js';
import { checkHubOptions, hubIdOf, hubReader, type HubOptions } from './hub.js';
import { parseJsonBytesAsync } from './json.js';
import { readLocalFile } from './localfile.js';
import { checkHeaderLength, maxHeaderBytesFor, parseSafetensorsAsync } from './safetensors.js';
import { tokenizerFromFiles, type Tokenizer, type TokenizerFiles } from './tokenizer.js';
import { buildWeights, expectedTensors, type ExpectedTensor, type ModelWeights, type TensorSource } from './weights.js';

/**
 * Where a model comes from: a directory path (Node, Deno), an http(s) URL, a Hugging Face Hub id
 * (`org/name[@revision]`, see `src/hub.ts` for when a string is one), or files already in memory.
 */
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
export interface ReadOptions extends FetchOptions, HubOptions {
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

/** What a file may be: its size bound (checked before reading where the source allows) and its first bytes. */
interface FileBound {
  maxBytes: number;
  /** The error for a file over `maxBytes`. */
  tooLarge: (size: number) => Error;
  /** Checks the first 8 bytes and the size before the rest is read (local files) or parsed. */
  checkHead?: (head: Uint8Array, size: number) => void;
}

/**
 * Reads one model file; undefined when it does not exist (a 404 is an error for a required URL file).
 * `bound.maxBytes` bounds what a download may deliver and what a local file may be, before reading.
 */
type Reader = (name: string, required: boolean, bound: FileBound) => Promise<Uint8Array | undefined>;

const INDEX_FILE = 'model.safetensors.index.json';
/** The largest published tokenizer.json files (256k-token vocabularies) are ~35 MB. */
const MAX_TOKENIZER_BYTES = 64 * 2 ** 20;

/** Float32 bytes of tensors: no supported dtype is wider, so no weight file needs more. */
function f32Bytes(ts: readonly ExpectedTensor[]): number {
  return ts.reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
}

interface OpenSource {
  read: Reader;
  seen: string[];
  config: MambaConfig;
  configBytes: Uint8Array;
  plainBound: (name: string, maxBytes: number) => FileBound;
}

/** Opens a source: its reader (abort between files, bounds, sha256 of local and in-memory files) and its config.json. */
async function openSource(source: ModelSource, opts: ReadOptions): Promise<OpenSource> {
  checkReadOptions(opts);
  const hub = await hubIdOf(source);
  // Downloads (URL and Hub sources) verify their hashes themselves, so a bad file is never cached.
  const isUrl = isUrlSource(source) || hub !== undefined;
  const baseRead = hub ? hubReader(hub, opts) : readerFor(source, opts);
  const seen: string[] = [];
  // Every file passes here: abort between files, the bound for every source, and hashes for local
  // and in-memory files (downloads are verified inside fetchModelFile, which can then drop a bad cached copy).
  const read: Reader = async (name, required, bound) => {
    opts.signal?.throwIfAborted();
    const bytes = await baseRead(name, required, bound);
    opts.signal?.throwIfAborted();
    if (!bytes) return undefined;
    if (bytes.byteLength > bound.maxBytes) throw bound.tooLarge(bytes.byteLength);
    bound.checkHead?.(bytes, bytes.byteLength);
    seen.push(name);
    const expected = opts.sha256?.[name];
    if (expected && !isUrl) {
      const actual = await sha256Hex(bytes);
      if (actual !== expected.toLowerCase()) throw new ModelFormatError(name, `sha256 mismatch: expected ${expected.toLowerCase()}, got ${actual}`);
    }
    return bytes;
  };
  const plainBound = (name: string, maxBytes: number): FileBound => ({
    maxBytes,
    tooLarge: (size) => new ModelFormatError(name, `file is ${size} bytes, more than the ${maxBytes} accepted`),
  });

  const configBytes = await read('config.json', true, plainBound('config.json', MAX_CONFIG_BYTES));
  if (!configBytes) {
    const dir = localDir(source);
    if (dir === undefined) throw new ModelFormatError('config.json', `not found in ${describe(source)}`);
    if (await localPathExists(dir)) throw new ModelNotFoundError(dir, 'no config.json in this directory');
    const relative = !/^([/\\]|[A-Za-z]:)/.test(dir) ? ', relative to the working directory' : '';
    // The bundled model's path inside the package means nothing in the caller's project.
    const bundled = dir.replace(/[/\\]+$/, '').endsWith(DEFAULT_MODEL_PATH.replace(/\/$/, '')) ? '; the bundled model needs no path: loadModel() / loadModelInWorker() with no source' : '';
    throw new ModelNotFoundError(dir, `no such directory${relative}${bundled}`);
  }
  return { read, seen, config: parseConfig(configBytes), configBytes, plainBound };
}

/**
 * tokenizer.json is optional: without it the model reads bytes (MambaByte). It is looked for only when
 * the vocabulary is larger than bytes (a byte model, 256 ids, needs none: no request that fails, no 404
 * in a browser console), and only beside one are tokenizer_config.json and generation_config.json.
 */
async function readTokenizerFiles({ read, config, configBytes, plainBound }: OpenSource): Promise<Tokenizer> {
  const json = config.vocabSize > 256 ? await read('tokenizer.json', false, plainBound('tokenizer.json', MAX_TOKENIZER_BYTES)) : undefined;
  const files: TokenizerFiles = { 'config.json': configBytes };
  if (json) {
    files['tokenizer.json'] = json;
    files['tokenizer_config.json'] = await read('tokenizer_config.json', false, plainBound('tokenizer_config.json', MAX_CONFIG_BYTES));
    files['generation_config.json'] = await read('generation_config.json', false, plainBound('generation_config.json', MAX_CONFIG_BYTES));
  }
  return await tokenizerFromFiles(files, config.vocabSize);
}

/**
 * Only a model's tokenizer (config.json and the tokenizer files, no weights): for tokenizing text
 * without loading, or downloading, the model.
 */
export async function readTokenizer(source: ModelSource, opts: ReadOptions = {}): Promise<Tokenizer> {
  return readTokenizerFiles(await openSource(source, opts));
}

/** Reads config.json + safetensors (single or sharded), and the tokenizer, from any source and validates them. */
/**
 * `beforeWeights` runs once config.json is parsed, before any weight byte is fetched or allocated: a
 * caller settles there which backend and weight format will hold the model (`planBackend`), or refuses
 * it; what it returns replaces `opts.backend` / `opts.dtype` in the `maxMemoryBytes` estimate.
 */
export async function readModel(
  source: ModelSource,
  opts: ReadOptions & Pick<BackendOptions, 'dtype' | 'backend'> = {},
  beforeWeights?: (config: MambaConfig) => Promise<Pick<BackendOptions, 'dtype' | 'backend'> | void>,
): Promise<LoadedFiles> {
  const opened = await openSource(source, opts);
  const { read, seen, config, plainBound } = opened;
  // Before any weight byte is fetched or allocated.
  const limit = opts.maxMemoryBytes;
  // The caller's budget first where the options fix the weight format (a dtype, or the f32-only js backend).
  if (limit !== undefined && (opts.dtype || opts.backend === 'js')) checkMemoryBudget(config, limit, opts);
  const planned = await beforeWeights?.(config);
  if (limit !== undefined) checkMemoryBudget(config, limit, planned ?? opts);
  // Before the weights too: a tokenizer that does not fit the model fails without the download.
  const tokenizer = await readTokenizerFiles(opened);

  // Everything below is bounded by what the config implies: its tensors, their float32 sizes, and
  // header room per tensor.
  const expected = expectedTensors(config);
  const maxTensors = expected.length;
  // One file's header: room for the expected tensors; up to twice their count (still bounded by the
  // config), so a file with a few extra layers gets the precise "not used by this config" from
  // buildWeights rather than a count.
  const fileLimits = { maxTensors: 2 * maxTensors + 16, maxHeaderBytes: maxHeaderBytesFor(maxTensors) };
  // The byte budget of all weight files together: the data at float32 plus each file's header room,
  // and never more than maxMemoryBytes. Set for one file, then for the shards the index names.
  let configAllows = 0;
  let budget = 0;
  const setBudget = (shards: Map<string, ExpectedTensor[]>) => {
    configAllows = f32Bytes(expected);
    for (const ts of shards.values()) configAllows += 8 + maxHeaderBytesFor(ts.length);
    budget = Math.min(configAllows, opts.maxMemoryBytes ?? Infinity);
  };
  let weightBytes = 0;
  const weightBound = (file: string): FileBound => {
    const left = budget - weightBytes;
    return {
      maxBytes: left,
      tooLarge: (size) =>
        budget < configAllows && size > left
          ? new OutOfMemoryError(`${file} is ${size} bytes: with the ${weightBytes} bytes of weight files before it, more than maxMemoryBytes ${budget}`)
          : new ModelFormatError(
              file,
              `file is ${size} bytes, more than the ${left} bytes left of the ${configAllows} that config.json allows for all weight files (${maxTensors} tensors at float32, plus headers)`,
            ),
      checkHead: (head, size) => checkHeaderLength(head, size, file, fileLimits.maxHeaderBytes),
    };
  };

  const tensors: TensorSource = new Map();
  /** Tensor → the shard the index puts it in (sharded checkpoints only). */
  let listedIn: Map<string, string> | undefined;
  const addFile = async (file: string, bytes: Uint8Array, shard?: ExpectedTensor[]) => {
    weightBytes += bytes.byteLength;
    const parsed = await parseSafetensorsAsync(bytes, file, { ...fileLimits, signal: opts.signal });
    for (const [name, info] of parsed.tensors) {
      const prev = tensors.get(name);
      if (prev) throw new ModelFormatError(file, `tensor also present in ${prev.file}`, name);
      // Other tools locate tensors through the index: a tensor found elsewhere than the index says
      // would make them and us read different weights from the same checkpoint.
      const listed = listedIn?.get(name);
      if (listedIn && listed !== file) {
        throw new ModelFormatError(file, listed ? `tensor is listed under ${listed} in ${INDEX_FILE}` : `tensor is not listed in ${INDEX_FILE}`, name);
      }
      tensors.set(name, { info, file });
    }
    for (const t of shard ?? []) {
      if (!parsed.tensors.has(t.name)) throw new ModelFormatError(file, `tensor listed in ${INDEX_FILE} is not in this shard`, t.name);
    }
  };

  // model.safetensors first, as transformers does, and the shard index only where it is absent: a single-file
  // checkpoint (the common case) then makes no request that fails (a 404 in every browser console, or the 200
  // HTML page that some dev servers send for a missing file).
  setBudget(new Map([['model.safetensors', expected]]));
  const single = await read('model.safetensors', false, weightBound('model.safetensors'));
  if (single) {
    await addFile('model.safetensors', single);
  } else {
    const index = await read(INDEX_FILE, false, plainBound(INDEX_FILE, maxHeaderBytesFor(maxTensors)));
    if (!index) {
      throw new ModelFormatError(
        'model.safetensors',
        `not found in ${describe(source)}, nor ${INDEX_FILE} (mamba-edge reads safetensors only, never pickle .bin files)`,
      );
    }
    // Shard → the tensors it must hold: the index is checked against the config before any shard is read.
    const shards = shardsOf(await shardMap(index, maxTensors, opts.signal), expected);
    listedIn = new Map([...shards].flatMap(([f, ts]) => ts.map((t) => [t.name, f] as const)));
    setBudget(shards);
    for (const file of [...shards.keys()].sort()) {
      const bytes = await read(file, true, weightBound(file));
      if (!bytes) throw new ModelFormatError(file, `shard listed in ${INDEX_FILE} is missing`);
      await addFile(file, bytes, shards.get(file));
    }
  }
  // A digest for a file that was never read would silently verify nothing: say so.
  for (const name of Object.keys(opts.sha256 ?? {})) {
    if (!seen.includes(name)) throw new InvalidOptionError('sha256', `names ${name}, which this model does not have (read: ${seen.join(', ')})`);
  }
  opts.signal?.throwIfAborted();
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
  checkHubOptions(o);
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
  /** That format: the requested `dtype`, else the first the named backend can hold, else f32. */
  dtype: WeightDtype;
  /** Float32 copies decoded from the files, alive until a non-js backend has its own copy. */
  staging: number;
  /** One sequence's recurrent state (conv + SSM); each extra session adds this much. */
  state: number;
  /** Activation scratch for one prompt chunk, including its logits. */
  activations: number;
}

export function estimateMemoryBytes(c: MambaConfig, o: Pick<BackendOptions, 'dtype' | 'backend'> = {}): MemoryEstimate {
  const params = parameterCount(c);
  // Without a dtype, a named backend takes the first format it can hold (1.4b on wasm: f16); 'auto' is
  // settled by planBackend, which passes its pick here.
  const dtype = o.dtype ?? (o.backend && o.backend !== 'auto' ? defaultDtype(o.backend, c) : undefined) ?? 'f32';
  const { dModel: D, dInner: E, dState: N, dConv: K, dtRank: R, vocabSize: V, nLayer } = c;
  const weights = Math.ceil(weightFootprint(c, dtype, o.backend === 'auto' ? undefined : o.backend).total);
  // The js backend computes on the decoded float32 arrays themselves; the others copy them.
  const staging = o.backend === 'js' ? 0 : params * 4;
  const state = nLayer * E * (K - 1 + N) * 4;
  const activations = prefillChunk(c, o.backend === 'auto' ? undefined : o.backend) * (2 * D + 4 * E + R + 2 * N + V) * 4;
  return { total: weights + staging + state + activations, weights, dtype, staging, state, activations };
}

function checkMemoryBudget(c: MambaConfig, limit: number, o: Pick<BackendOptions, 'dtype' | 'backend'>): void {
  const e = estimateMemoryBytes(c, o);
  if (e.total <= limit) return;
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  throw new OutOfMemoryError(
    `config.json describes a model of ${parameterCount(c)} parameters that needs about ${mib(e.total)} (${e.total} bytes: ` +
      `weights ${mib(e.weights)} as ${e.dtype}, float32 staging ${mib(e.staging)}, state ${mib(e.state)}, ` +
      `activations ${mib(e.activations)}), more than maxMemoryBytes ${mib(limit)} (${limit} bytes)`,
  );
}

/** Tensor name → shard file, from model.safetensors.index.json (bounded: about two entries a tensor). */
async function shardMap(indexBytes: Uint8Array, maxTensors: number, signal?: AbortSignal): Promise<Map<string, string>> {
  const file = INDEX_FILE;
  // Unique keys: a tensor listed twice is in two places at once.
  const index = await parseJsonBytesAsync(indexBytes, file, { maxEntries: 2 * maxTensors + 4096, maxKeys: maxTensors + 4096, uniqueKeys: true }, '', signal);
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

/**
 * Groups the index by shard after checking its tensor names against the config: a name the config
 * does not use, or a required tensor the index lacks, fails here, before any shard is fetched or read.
 */
function shardsOf(map: Map<string, string>, expected: ExpectedTensor[]): Map<string, ExpectedTensor[]> {
  const byName = new Map(expected.map((t) => [t.name, t]));
  const shards = new Map<string, ExpectedTensor[]>();
  for (const [name, file] of map) {
    const t = byName.get(name);
    if (!t) throw new ModelFormatError(INDEX_FILE, 'tensor is not used by this config (does config.json match the weights?)', name);
    shards.set(file, [...(shards.get(file) ?? []), t]);
  }
  for (const t of expected) {
    if (!t.optional && !map.has(t.name)) throw new ModelFormatError(INDEX_FILE, `lists no shard for a tensor the config needs (shape [${t.shape.join(', ')}])`, t.name);
  }
  return shards;
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
    return async (name, _required, bound) => {
      // Own properties only: "constructor" or "__proto__" must not resolve through the prototype.
      const f = Object.hasOwn(files, name) ? (files as Record<string, unknown>)[name] : undefined;
      if (f === undefined) return undefined;
      // Sizes before conversions: a 512 Mi-character string must not be encoded first.
      const size = typeof f === 'string' ? f.length : typeof Blob !== 'undefined' && f instanceof Blob ? f.size : undefined;
      if (size !== undefined && size > bound.maxBytes) throw bound.tooLarge(size);
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
    return (name, required, bound) => fetchModelFile(modelFileUrl(base, name), name, { ...opts, maxBytes: bound.maxBytes }, !required);
  }
  if (/^[a-z][a-z\d+.-]*:\/\//i.test(s) && !s.startsWith('file:')) {
    throw new InvalidOptionError('source', `unsupported URL scheme in ${s} (use http, https, file or a path)`);
  }
  const dir = localDir(source)!;
  return async (name, _required, bound) => {
    const bytes = await readLocalFile(dir, name, { ...bound, signal: opts.signal });
    if (bytes) opts.onProgress?.({ file: name, loaded: bytes.byteLength, total: bytes.byteLength });
    return bytes;
  };
}
