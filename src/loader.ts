import { parseConfig, type MambaConfig } from './config.js';
import { FetchError, MambaError, ModelFormatError } from './errors.js';
import { parseSafetensors } from './safetensors.js';
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

export interface ReadOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** Extra `fetch` init for URL sources (headers, credentials). */
  fetchInit?: RequestInit;
}

export interface LoadedFiles {
  config: MambaConfig;
  weights: ModelWeights;
  /** Total bytes of weight files read. */
  weightBytes: number;
}

type Reader = (name: string) => Promise<Uint8Array | undefined>;

/** Reads config.json + safetensors (single or sharded) from any source and validates them. */
export async function readModel(source: ModelSource, opts: ReadOptions = {}): Promise<LoadedFiles> {
  const read = readerFor(source, opts);
  const configBytes = await read('config.json');
  if (!configBytes) throw new ModelFormatError('config.json', `not found in ${describe(source)}`);
  const config = parseConfig(new TextDecoder().decode(configBytes));

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

  const index = await read('model.safetensors.index.json');
  if (index) {
    for (const file of shardFiles(index)) {
      const bytes = await read(file);
      if (!bytes) throw new ModelFormatError(file, `shard listed in model.safetensors.index.json is missing`);
      addFile(file, bytes);
    }
  } else {
    const bytes = await read('model.safetensors');
    if (!bytes) {
      throw new ModelFormatError('model.safetensors', `not found in ${describe(source)} (mamba-edge reads safetensors only, never pickle .bin files)`);
    }
    addFile('model.safetensors', bytes);
  }
  return { config, weights: buildWeights(config, tensors), weightBytes };
}

function shardFiles(indexBytes: Uint8Array): string[] {
  const file = 'model.safetensors.index.json';
  let index: unknown;
  try {
    index = JSON.parse(new TextDecoder().decode(indexBytes));
  } catch (e) {
    throw new ModelFormatError(file, `not valid JSON (${(e as Error).message})`);
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new ModelFormatError(file, 'weight_map must be an object', 'weight_map');
  const files = new Set<string>();
  for (const [tensor, f] of Object.entries(map)) {
    // Shard names are joined onto a directory or URL: refuse anything that could escape it.
    if (typeof f !== 'string' || !/^[\w.-]+\.safetensors$/.test(f)) throw new ModelFormatError(file, `bad shard file name ${JSON.stringify(f)}`, tensor);
    files.add(f);
  }
  return [...files].sort();
}

function describe(source: ModelSource): string {
  return typeof source === 'string' || source instanceof URL ? String(source) : 'the in-memory files';
}

function readerFor(source: ModelSource, opts: ReadOptions): Reader {
  if (typeof source === 'object' && !(source instanceof URL)) {
    const files = source.files;
    return async (name) => {
      const f = files[name];
      if (f === undefined) return undefined;
      if (typeof f === 'string') return new TextEncoder().encode(f);
      if (f instanceof Uint8Array) return f;
      if (f instanceof ArrayBuffer) return new Uint8Array(f);
      return new Uint8Array(await f.arrayBuffer());
    };
  }
  const s = String(source);
  if (/^https?:\/\//i.test(s)) {
    const base = s.endsWith('/') ? s : `${s}/`;
    return (name) => fetchFile(new URL(name, base).href, name, opts);
  }
  const dir = s.startsWith('file:') ? decodeURIComponent(new URL(s).pathname) : s;
  return (name) => readLocalFile(dir, name);
}

async function readLocalFile(dir: string, name: string): Promise<Uint8Array | undefined> {
  const deno = (globalThis as { Deno?: { readFile(p: string): Promise<Uint8Array> } }).Deno;
  const path = `${dir.replace(/\/+$/, '')}/${name}`;
  try {
    if (deno) return await deno.readFile(path);
    const fs = await import('node:fs/promises');
    const buf = await fs.readFile(path);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    const code = (e as { code?: string; name?: string }).code ?? (e as { name?: string }).name;
    if (code === 'ENOENT' || code === 'NotFound') return undefined;
    if (code === 'ENOTDIR' || code === 'EISDIR') throw new ModelFormatError(name, `${path} is not a readable model file (${code})`);
    throw new MambaError('IO', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

/** Fetches one file, reporting progress; 404 means "absent" (optional files), other failures are errors. */
async function fetchFile(url: string, name: string, opts: ReadOptions): Promise<Uint8Array | undefined> {
  let res: Response;
  try {
    res = await fetch(url, { ...opts.fetchInit, signal: opts.signal });
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? e;
    throw new FetchError(url, `request failed (${(e as Error).message})`, undefined, { cause: e });
  }
  if (res.status === 404) return undefined;
  if (!res.ok) throw new FetchError(url, `HTTP ${res.status} ${res.statusText}`, res.status);
  const header = res.headers.get('content-length');
  const total = header !== null && /^\d+$/.test(header) ? Number(header) : undefined;
  const reader = res.body?.getReader();
  if (!reader) return new Uint8Array(await res.arrayBuffer());
  const parts: Uint8Array[] = [];
  let loaded = 0;
  opts.onProgress?.({ file: name, loaded, total });
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.byteLength;
    opts.onProgress?.({ file: name, loaded, total });
  }
  if (total !== undefined && loaded !== total) {
    throw new FetchError(url, `response truncated: got ${loaded} of ${total} bytes`, res.status);
  }
  const out = new Uint8Array(loaded);
  let p = 0;
  for (const part of parts) {
    out.set(part, p);
    p += part.byteLength;
  }
  return out;
}
