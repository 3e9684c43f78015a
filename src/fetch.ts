/**
 * Downloads model files over http(s) robustly: progress events, resume with HTTP Range after a
 * dropped connection, bounded retries with backoff, stall detection, optional sha256 verification,
 * and an opt-in cache (the Cache API where it exists, else a directory in Node) that also keeps
 * partial downloads (`.part`) so a later run can resume them.
 *
 * Nothing here runs unless the caller passes an http(s) URL: directory and in-memory sources never
 * touch the network.
 */
import { FetchError, InvalidOptionError, MambaError, OutOfMemoryError } from './errors.js';
import type { LoadProgress } from './loader.js';

export interface FetchOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** Extra `fetch` init (headers, credentials). Its `signal` is ignored: use `signal`. */
  fetchInit?: RequestInit;
  /**
   * Keep downloaded files for next time. Browsers (and Deno): the Cache API (`caches`). Node: a
   * directory, `cacheDir` or `~/.cache/mamba-edge`. Off by default; giving `cacheDir` turns it on.
   */
  cache?: boolean;
  /** Cache directory (Node); implies `cache: true`. Files are keyed by URL. */
  cacheDir?: string;
  /** Expected sha256 (hex) per file name, e.g. `{ 'model.safetensors': '9f86…' }`. */
  sha256?: Record<string, string>;
  /** Retries after a failed attempt that received no new bytes (attempts that make progress reset the count). Default 4. */
  retries?: number;
  /** First backoff delay; doubles with every failure in a row, capped at 30 s. Default 500 ms. */
  retryDelayMs?: number;
  /** An attempt that receives no bytes (headers or body) for this long is aborted and retried. Default 30 s. */
  stallTimeoutMs?: number;
  /** @internal Refuse a file larger than this (the loader derives it from config.json). */
  maxBytes?: number;
}

const DEFAULTS = { retries: 4, retryDelayMs: 500, stallTimeoutMs: 30_000 };
const MAX_BACKOFF_MS = 30_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Cache API bucket name (browsers, Deno). */
const CACHE_NAME = 'mamba-edge';

/** Checks the fetch options once, so a typo fails before any request is made. */
export function checkFetchOptions(o: FetchOptions): void {
  const nonNegInt = (key: 'retries', v: unknown) => {
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < 0 || (v as number) > 100)) {
      throw new InvalidOptionError(key, `must be an integer in [0, 100], got ${String(v)}`);
    }
  };
  const positive = (key: string, v: unknown) => {
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v))) {
      throw new InvalidOptionError(key, `must be a finite number >= 0, got ${String(v)}`);
    }
  };
  nonNegInt('retries', o.retries);
  positive('retryDelayMs', o.retryDelayMs);
  positive('stallTimeoutMs', o.stallTimeoutMs);
  if (o.stallTimeoutMs === 0) throw new InvalidOptionError('stallTimeoutMs', 'must be > 0');
  // Timers take at most 2^31 - 1 ms; a larger delay fires at once (every attempt "stalled").
  for (const key of ['retryDelayMs', 'stallTimeoutMs'] as const) {
    if (o[key] !== undefined && o[key]! > MAX_TIMER_MS) throw new InvalidOptionError(key, `must be at most ${MAX_TIMER_MS} ms, got ${o[key]}`);
  }
  if (o.cacheDir !== undefined && (typeof o.cacheDir !== 'string' || o.cacheDir === '')) {
    throw new InvalidOptionError('cacheDir', 'must be a non-empty path');
  }
  if (o.sha256 !== undefined) {
    if (typeof o.sha256 !== 'object' || o.sha256 === null) throw new InvalidOptionError('sha256', 'must map file names to hex digests');
    for (const [file, hex] of Object.entries(o.sha256)) {
      if (typeof hex !== 'string' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
        throw new InvalidOptionError('sha256', `digest for ${file} must be 64 hex digits`);
      }
    }
  }
}

/** Lower-case hex sha256 of `bytes` (WebCrypto: Node >= 19, Deno, browsers in secure contexts). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new MambaError('NO_CRYPTO', 'sha256 verification needs WebCrypto (crypto.subtle), which this environment lacks');
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Fetches `url` (the model file `name`). Returns undefined for a 404 of an `optional` file (e.g. the
 * shard index); every other failure is a `FetchError` with the URL and, when there is one, the status.
 * An abort via `signal` rejects with the signal's reason.
 */
export async function fetchModelFile(url: string, name: string, opts: FetchOptions = {}, optional = false): Promise<Uint8Array | undefined> {
  checkFetchOptions(opts);
  opts.signal?.throwIfAborted();
  const expected = opts.sha256?.[name]?.toLowerCase();
  const store = await openCache(opts);
  try {
    return await fetchVia(store, url, name, opts, optional, expected);
  } finally {
    await store?.release(url);
  }
}

async function fetchVia(
  store: CacheStore | undefined,
  url: string,
  name: string,
  opts: FetchOptions,
  optional: boolean,
  expected: string | undefined,
): Promise<Uint8Array | undefined> {
  const cached = await store?.get(url);
  if (cached) {
    if (!expected || (await sha256Hex(cached)) === expected) {
      opts.onProgress?.({ file: name, loaded: cached.byteLength, total: cached.byteLength });
      return cached;
    }
    await store!.delete(url); // stale or corrupt: fetch it again
  }

  const bytes = await download(url, name, opts, store, optional);
  if (!bytes) return undefined;
  if (expected) {
    const actual = await sha256Hex(bytes);
    if (actual !== expected) {
      await store?.discardPart(url);
      throw new FetchError(url, `sha256 mismatch for ${name}: expected ${expected}, got ${actual} (wrong or corrupted file)`);
    }
  }
  await store?.commit(url, bytes);
  return bytes;
}

/** Why an attempt ended without the whole file; `retry: false` ends the download. */
class AttemptFailed extends Error {
  constructor(
    message: string,
    readonly retry: boolean,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

async function download(url: string, name: string, opts: FetchOptions, store: CacheStore | undefined, optional: boolean): Promise<Uint8Array | undefined> {
  const retries = opts.retries ?? DEFAULTS.retries;
  const baseDelay = opts.retryDelayMs ?? DEFAULTS.retryDelayMs;
  const stallMs = opts.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs;
  const { signal } = opts;

  const sink = new Sink(url, opts.maxBytes ?? Number.MAX_SAFE_INTEGER);
  // What the bytes in `sink` belong to: the validator (strong ETag or Last-Modified) and full size.
  let validator: string | undefined;
  let total: number | undefined;
  const part = await store?.readPart(url);
  if (part && part.bytes.byteLength <= (opts.maxBytes ?? Number.MAX_SAFE_INTEGER)) {
    sink.append(part.bytes);
    validator = part.validator;
    total = part.total;
    // A previous run got every byte but stopped before moving the file into place.
    if (total === sink.length) return sink.bytes();
  }
  const restart = async () => {
    sink.reset();
    validator = undefined;
    total = undefined;
    await store?.discardPart(url);
  };

  let failures = 0;
  let attempts = 0;
  // False once a response says its bytes cannot be resumed with a Range (compressed, or no ranges).
  let resumable = true;
  for (;;) {
    attempts++;
    const before = sink.length;
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let stalled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Re-armed on every chunk: fires only after `stallMs` without a single byte.
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        stalled = true;
        ctrl.abort(new Error('stalled'));
      }, stallMs);
    };
    try {
      const offset = sink.length;
      const headers = new Headers(opts.fetchInit?.headers);
      if (offset > 0) {
        headers.set('Range', `bytes=${offset}-`);
        // If the file changed on the server since the partial was written, it answers 200 (whole new file).
        if (validator) headers.set('If-Range', validator);
      }
      arm();
      let res: Response;
      try {
        res = await fetch(url, { ...opts.fetchInit, headers, signal: ctrl.signal });
      } catch (e) {
        throw networkFailure(e, stalled, stallMs);
      }

      if (res.status === 404 && offset === 0 && optional) {
        await res.body?.cancel().catch(() => {});
        return undefined;
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        if (res.status === 416 && offset > 0) {
          // Our partial does not fit the file any more (it shrank or changed): start over.
          await restart();
          throw new AttemptFailed(`HTTP 416 for a resume at byte ${offset}; restarting`, true, 416);
        }
        const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
        const what = res.status === 404 ? `; ${name} is required` : '';
        throw new AttemptFailed(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${what}`, retryable, res.status, retryAfter(res));
      }

      // Compressed transfer: sizes on the wire are not file sizes and ranges are not byte ranges.
      const encoded = !/^(identity)?$/i.test(res.headers.get('content-encoding') ?? '');
      resumable = !encoded && res.headers.get('accept-ranges')?.toLowerCase() !== 'none';
      const length = encoded ? undefined : parseLength(res.headers.get('content-length'));
      const newValidator = strongValidator(res);
      if (res.status === 206 && offset > 0) {
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        const fileTotal = range && range[3] !== '*' ? Number(range[3]) : undefined;
        if (!range || Number(range[1]) !== offset || (total !== undefined && fileTotal !== undefined && fileTotal !== total)) {
          await res.body?.cancel().catch(() => {});
          await restart();
          throw new AttemptFailed(`server answered the resume at byte ${offset} with range ${JSON.stringify(res.headers.get('content-range'))}; restarting`, true, 206);
        }
        total = fileTotal ?? total;
      } else {
        // A full body: the server ignored or refused our Range (or the file changed). Start over.
        if (offset > 0) await restart();
        total = length;
        validator = newValidator;
        await store?.startPart(url, { url, validator, total });
      }
      sink.reserve(total);

      opts.onProgress?.({ file: name, loaded: sink.length, total });
      const reader = res.body?.getReader();
      if (reader) {
        for (;;) {
          let chunk: ReadableStreamReadResult<Uint8Array>;
          try {
            chunk = await reader.read();
          } catch (e) {
            throw networkFailure(e, stalled, stallMs, sink.length, total);
          }
          if (chunk.done) break;
          arm();
          sink.append(chunk.value);
          await store?.appendPart(url, chunk.value);
          opts.onProgress?.({ file: name, loaded: sink.length, total });
        }
      }
      if (total !== undefined && sink.length !== total) {
        throw new AttemptFailed(`connection closed after ${sink.length} of ${total} bytes`, sink.length < total);
      }
      return sink.bytes();
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      if (!(e instanceof AttemptFailed)) throw e;
      if (!resumable && sink.length > 0) await restart();
      // A flaky link that keeps delivering data is not failing: only attempts without progress count.
      failures = sink.length > before ? 1 : failures + 1;
      if (!e.retry || failures > retries) {
        const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
        throw new FetchError(url, `${e.message}${tries}`, e.status);
      }
      const backoff = Math.min(baseDelay * 2 ** (failures - 1), MAX_BACKOFF_MS);
      await sleep(Math.max(backoff, e.retryAfterMs ?? 0), signal);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

function networkFailure(e: unknown, stalled: boolean, stallMs: number, got?: number, total?: number): AttemptFailed {
  if (stalled) return new AttemptFailed(`stalled: no data for ${stallMs} ms`, true);
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const why = [err?.message, err?.cause?.code ?? err?.cause?.message].filter(Boolean).join(': ') || String(e);
  const where = got !== undefined ? ` after ${got}${total !== undefined ? ` of ${total}` : ''} bytes` : '';
  return new AttemptFailed(`connection failed${where} (${why})`, true);
}

function parseLength(h: string | null): number | undefined {
  return h !== null && /^\d{1,16}$/.test(h.trim()) ? Number(h.trim()) : undefined;
}

/** If-Range needs a strong validator: a weak ETag (W/"...") may not be used for byte ranges. */
function strongValidator(res: Response): string | undefined {
  const etag = res.headers.get('etag');
  if (etag && !etag.startsWith('W/')) return etag;
  return res.headers.get('last-modified') ?? undefined;
}

/** Retry-After in ms (seconds or an HTTP date), capped at a minute. */
function retryAfter(res: Response): number | undefined {
  const h = res.headers.get('retry-after');
  if (!h) return undefined;
  const ms = /^\d+$/.test(h) ? Number(h) * 1000 : Date.parse(h) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), 60_000) : undefined;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The bytes received so far. With a known size it fills one preallocated buffer (no 2x peak when
 * joining chunks); otherwise it keeps chunks and joins them at the end.
 */
class Sink {
  private buf: Uint8Array | undefined;
  private chunks: Uint8Array[] = [];
  length = 0;
  constructor(
    private readonly url: string,
    private readonly maxBytes: number,
  ) {}

  reserve(total: number | undefined): void {
    if (total === undefined || this.buf?.byteLength === total) return;
    if (total > this.maxBytes) throw this.tooLarge(total);
    let buf: Uint8Array;
    try {
      buf = new Uint8Array(total);
    } catch (e) {
      // The size comes from the server: a hostile Content-Length must not surface as a RangeError.
      throw new OutOfMemoryError(`${this.url}: cannot allocate ${total} bytes for the download (${(e as Error).message})`);
    }
    buf.set(this.bytes().subarray(0, Math.min(this.length, total)));
    this.buf = buf;
    this.chunks = [];
  }

  private tooLarge(n: number): AttemptFailed {
    return new AttemptFailed(`file is ${n} bytes, more than the ${this.maxBytes} a model of this config can need`, false);
  }

  append(chunk: Uint8Array): void {
    if (this.length + chunk.byteLength > this.maxBytes) throw this.tooLarge(this.length + chunk.byteLength);
    if (this.buf) {
      if (this.length + chunk.byteLength > this.buf.byteLength) {
        throw new AttemptFailed(`server sent more than the ${this.buf.byteLength} bytes it announced`, false);
      }
      this.buf.set(chunk, this.length);
    } else {
      this.chunks.push(chunk.slice());
    }
    this.length += chunk.byteLength;
  }

  reset(): void {
    this.buf = undefined;
    this.chunks = [];
    this.length = 0;
  }

  bytes(): Uint8Array {
    if (this.buf) return this.length === this.buf.byteLength ? this.buf : this.buf.subarray(0, this.length);
    if (this.chunks.length !== 1) {
      const out = new Uint8Array(this.length);
      let p = 0;
      for (const c of this.chunks) {
        out.set(c, p);
        p += c.byteLength;
      }
      this.chunks = [out];
    }
    return this.chunks[0] ?? new Uint8Array(0);
  }
}

// --- caches -------------------------------------------------------------------------------------

interface PartMeta {
  url: string;
  validator?: string;
  total?: number;
}

/** Where finished (and, in Node, partial) downloads are kept between runs. Keyed by URL. */
interface CacheStore {
  get(url: string): Promise<Uint8Array | undefined>;
  delete(url: string): Promise<void>;
  commit(url: string, bytes: Uint8Array): Promise<void>;
  readPart(url: string): Promise<{ bytes: Uint8Array; validator?: string; total?: number } | undefined>;
  startPart(url: string, meta: PartMeta): Promise<void>;
  appendPart(url: string, chunk: Uint8Array): Promise<void>;
  discardPart(url: string): Promise<void>;
  /** Closes whatever is open for `url` (the download ended, however it ended). */
  release(url: string): Promise<void>;
}

async function openCache(o: FetchOptions): Promise<CacheStore | undefined> {
  if (!o.cache && o.cacheDir === undefined) return undefined;
  const g = globalThis as { caches?: CacheStorage; process?: { versions?: { node?: string } } };
  if (o.cacheDir === undefined && g.caches) return new CacheApiStore(await g.caches.open(CACHE_NAME));
  if (!g.process?.versions?.node) {
    throw new InvalidOptionError('cache', 'no Cache API here and no file system: pass cache: false');
  }
  const { homedir } = await import('node:os');
  const { join } = await import('node:path');
  return new DirStore(o.cacheDir ?? join(homedir(), '.cache', 'mamba-edge'));
}

/** Browsers and Deno: whole files only (a partial download resumes within the session, not across). */
class CacheApiStore implements CacheStore {
  constructor(private readonly cache: Cache) {}
  async get(url: string) {
    const res = await this.cache.match(url);
    return res ? new Uint8Array(await res.arrayBuffer()) : undefined;
  }
  async delete(url: string) {
    await this.cache.delete(url);
  }
  async commit(url: string, bytes: Uint8Array) {
    await this.cache.put(url, new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { 'content-length': String(bytes.byteLength) } }));
  }
  async readPart() {
    return undefined;
  }
  async startPart() {}
  async appendPart() {}
  async discardPart() {}
  async release() {}
}

/**
 * Node: `<dir>/<sha256(url)[0:32]>-<file name>`, with `.part` (bytes so far) and `.part.json`
 * (the URL, validator and size they belong to) while a download is unfinished.
 */
class DirStore implements CacheStore {
  private handles = new Map<string, import('node:fs/promises').FileHandle>();
  constructor(private readonly dir: string) {}

  private async path(url: string): Promise<string> {
    const { createHash } = await import('node:crypto');
    const { join } = await import('node:path');
    const base = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '').replace(/[^\w.-]/g, '_').slice(-80) || 'file';
    return join(this.dir, `${createHash('sha256').update(url).digest('hex').slice(0, 32)}-${base}`);
  }

  private async io<T>(what: string, f: (fs: typeof import('node:fs/promises')) => Promise<T>): Promise<T> {
    const fs = await import('node:fs/promises');
    try {
      return await f(fs);
    } catch (e) {
      throw new MambaError('CACHE', `model cache ${this.dir}: cannot ${what} (${(e as Error).message})`, { cause: e });
    }
  }

  async get(url: string) {
    const p = await this.path(url);
    return this.io('read a cached file', async (fs) => {
      try {
        const buf = await fs.readFile(p);
        return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      } catch (e) {
        if ((e as { code?: string }).code === 'ENOENT') return undefined;
        throw e;
      }
    });
  }

  async delete(url: string) {
    const p = await this.path(url);
    await this.io('delete a cached file', (fs) => fs.rm(p, { force: true }));
  }

  async commit(url: string, bytes: Uint8Array) {
    const p = await this.path(url);
    await this.closePart(url);
    await this.io('store a download', async (fs) => {
      await fs.mkdir(this.dir, { recursive: true });
      // The .part already holds exactly these bytes when the download streamed into it; else write them.
      const st = await fs.stat(`${p}.part`).catch(() => undefined);
      if (st?.size !== bytes.byteLength) await fs.writeFile(`${p}.part`, bytes);
      await fs.rename(`${p}.part`, p); // atomic: a reader sees the old state or the whole file
      await fs.rm(`${p}.part.json`, { force: true });
    });
  }

  async readPart(url: string) {
    const p = await this.path(url);
    return this.io('read a partial download', async (fs) => {
      let meta: PartMeta;
      try {
        meta = JSON.parse(await fs.readFile(`${p}.part.json`, 'utf8'));
      } catch {
        return undefined; // no partial, or one we cannot trust: download from the start
      }
      if (meta?.url !== url) return undefined;
      const buf = await fs.readFile(`${p}.part`).catch(() => undefined);
      if (!buf || buf.byteLength === 0 || (meta.total !== undefined && buf.byteLength > meta.total)) return undefined;
      return { bytes: new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), validator: meta.validator, total: meta.total };
    });
  }

  async startPart(url: string, meta: PartMeta) {
    const p = await this.path(url);
    await this.closePart(url);
    await this.io('start a partial download', async (fs) => {
      await fs.mkdir(this.dir, { recursive: true });
      await fs.writeFile(`${p}.part.json`, JSON.stringify(meta));
      this.handles.set(url, await fs.open(`${p}.part`, 'w'));
    });
  }

  async appendPart(url: string, chunk: Uint8Array) {
    let h = this.handles.get(url);
    if (!h) {
      // Resuming a partial from an earlier run: append to it.
      const p = await this.path(url);
      h = await this.io('resume a partial download', (fs) => fs.open(`${p}.part`, 'a'));
      this.handles.set(url, h);
    }
    await this.io('write a partial download', () => h!.write(chunk));
  }

  async discardPart(url: string) {
    const p = await this.path(url);
    await this.closePart(url);
    await this.io('discard a partial download', async (fs) => {
      await fs.rm(`${p}.part`, { force: true });
      await fs.rm(`${p}.part.json`, { force: true });
    });
  }

  async release(url: string) {
    await this.closePart(url);
  }

  private async closePart(url: string) {
    const h = this.handles.get(url);
    this.handles.delete(url);
    await h?.close().catch(() => {});
  }
}
