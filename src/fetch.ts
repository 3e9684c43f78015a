/**
 * Downloads model files over http(s) robustly: progress events, resume with HTTP Range after a
 * dropped connection, retries with backoff that always end (bounded in attempts without progress,
 * in all attempts and in bytes), stall detection, optional sha256 verification, redirects followed
 * by hand so that headers and credentials never leave the first origin, and an opt-in cache
 * (`cache.ts`) that only ever holds verified files and resumes partial downloads.
 *
 * Nothing here runs unless the caller passes an http(s) URL: directory and in-memory sources never
 * touch the network.
 */
import { openModelCache, sleep, type CacheWriter, type ModelCache } from './cache.js';
import { FetchError, InvalidOptionError, MambaError, OutOfMemoryError } from './errors.js';
import type { LoadProgress } from './loader.js';
import { parseSafetensors } from './safetensors.js';

export interface FetchOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /**
   * Extra `fetch` init (headers, credentials). Sent to the URL's own origin only: after a redirect to
   * another origin, requests carry nothing but the URL and its Range. Its `signal` and `redirect`
   * are ignored (use `signal`).
   */
  fetchInit?: RequestInit;
  /**
   * Keep downloaded files for next time. Browsers (and Deno): the Cache API (`caches`). Node: a
   * directory, `cacheDir` or `~/.cache/mamba-edge`. Off by default; giving `cacheDir` turns it on.
   */
  cache?: boolean;
  /**
   * Cache directory (Node); implies `cache: true`. Files are keyed by URL; safe to share between
   * processes. Only files that pass their checks are kept (see `SECURITY.md`), and a 404 of an
   * optional file is remembered, so a cached model loads without the network.
   */
  cacheDir?: string;
  /** Expected sha256 (hex) per file name, e.g. `{ 'model.safetensors': '9f86…' }`. */
  sha256?: Record<string, string>;
  /**
   * Retries after a failed attempt that got no further into the file than any attempt before
   * (attempts that do reset the count). Default 4. Whatever happens, a file gets at most
   * `4 * (retries + 1)` attempts, and is abandoned once it received more than twice its size (at least 2 MiB) in
   * bytes that did not extend it.
   */
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

/** Where a request goes, split from what may be shown: URL credentials never reach a message. */
interface Target {
  /** The URL without user:password. */
  href: string;
  origin: string;
  /** `Authorization: Basic` from the URL's user:password, sent to `origin` only. */
  auth?: string;
}

/** `url` with any user:password replaced by `***`, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '***';
    u.password = '';
    return u.href;
  } catch {
    return url.replace(/\/\/[^/?#]*@/, '//***@');
  }
}

/** The URL of model file `name` in the model directory `base`; a base that is not a URL is a FetchError. */
export function modelFileUrl(base: string, name: string): string {
  try {
    return new URL(name, base).href;
  } catch {
    throw new FetchError(redactUrl(`${base}${name}`), 'not a valid URL (check the host and port)');
  }
}

function parseTarget(url: string): Target {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new FetchError(redactUrl(url), 'not a valid URL (check the host and port)');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new FetchError(redactUrl(url), `only http(s) URLs are fetched, not ${u.protocol}`);
  let auth: string | undefined;
  if (u.username || u.password) {
    const raw = new TextEncoder().encode(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`);
    auth = `Basic ${btoa(String.fromCharCode(...raw))}`;
    u.username = '';
    u.password = '';
  }
  return { href: u.href, origin: u.origin, auth };
}

/** A file the server does not have; `remember` only for a real 404/410 (not an HTML fallback page). */
interface Absent {
  remember: boolean;
}

/**
 * Fetches `url` (the model file `name`). Returns undefined for a 404 of an `optional` file (e.g. the
 * shard index); every other failure is a `FetchError` with the URL (credentials removed) and, when
 * there is one, the status. An abort via `signal` rejects with the signal's reason.
 */
export async function fetchModelFile(url: string, name: string, opts: FetchOptions = {}, optional = false): Promise<Uint8Array | undefined> {
  checkFetchOptions(opts);
  opts.signal?.throwIfAborted();
  const target = parseTarget(url);
  const expected = opts.sha256?.[name]?.toLowerCase();
  const store = await openModelCache(opts);
  if (!store) {
    const got = await downloadChecked(target, name, opts, optional, expected, undefined);
    return got instanceof Uint8Array ? got : undefined;
  }
  return fetchCached(store, target.href, target, name, opts, optional, expected);
}

/**
 * @internal `fetchModelFile` into the caller's store under the caller's key (the Hub cache: blobs
 * named by ETag). The cache options in `opts` are not used; every other option is.
 */
export async function fetchModelFileInto(store: ModelCache, key: string, url: string, name: string, opts: FetchOptions = {}): Promise<Uint8Array> {
  checkFetchOptions(opts);
  opts.signal?.throwIfAborted();
  const got = await fetchCached(store, key, parseTarget(url), name, opts, false, opts.sha256?.[name]?.toLowerCase());
  return got!; // a required file: every way of not getting it throws
}

async function fetchCached(
  store: ModelCache,
  key: string,
  target: Target,
  name: string,
  opts: FetchOptions,
  optional: boolean,
  expected: string | undefined,
): Promise<Uint8Array | undefined> {
  // Set when a cached copy failed its checks: a failed re-fetch then says where the bad copy was.
  let note = '';
  /** The entry, if usable; a bad one is evicted (and re-fetched once, below). */
  const lookup = async (): Promise<Uint8Array | Absent | undefined> => {
    const hit = await store.get(key);
    if (!hit) return undefined;
    if ('absent' in hit) return optional ? { remember: true } : undefined;
    const bad = await problemWith(name, hit.bytes, expected);
    if (!bad) {
      opts.onProgress?.({ file: name, loaded: hit.bytes.byteLength, total: hit.bytes.byteLength });
      return hit.bytes;
    }
    await store.evict(key);
    note = `; the cached copy ${store.where(key)} ${bad}, so it was removed and fetched again`;
    return undefined;
  };

  let writer: CacheWriter | undefined;
  for (;;) {
    const found = await lookup();
    if (found instanceof Uint8Array) return found;
    if (found) return undefined;
    // Another process may be downloading this file: wait for it, then read what it published.
    writer = await store.lock(key, opts.signal);
    if (writer) break;
  }
  try {
    // Published by another process between our lookup and our lock.
    const found = note ? undefined : await lookup();
    if (found instanceof Uint8Array) return found;
    if (found) return undefined;
    const got = await downloadChecked(target, name, opts, optional, expected, writer);
    if (!(got instanceof Uint8Array)) {
      if (got.remember) await store.markAbsent(key);
      return undefined;
    }
    // A file that does not parse is returned (the loader reports what is wrong) but never cached.
    if (verifyModelBytes(name, got)) await writer.discardPartial();
    else await writer.publish(got);
    return got;
  } catch (e) {
    if (note && e instanceof FetchError) throw new FetchError(e.url, `${e.message.slice(e.url.length + 2)}${note}`, e.status, { cause: e });
    throw e;
  } finally {
    await writer.release();
  }
}

/** Why these bytes cannot be `name` (HTML, wrong hash, do not parse), or undefined if they can. */
async function problemWith(name: string, bytes: Uint8Array, expected: string | undefined): Promise<string | undefined> {
  if (looksLikeHtml(bytes)) return 'is an HTML page';
  if (expected) {
    const actual = await sha256Hex(bytes);
    if (actual !== expected) return `has sha256 ${actual}, not the expected ${expected}`;
  }
  return verifyModelBytes(name, bytes);
}

/** The checks that need no hash: JSON files parse, a safetensors file has exactly the size its header implies. */
function verifyModelBytes(name: string, bytes: Uint8Array): string | undefined {
  try {
    if (name.endsWith('.json')) JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    else if (name.endsWith('.safetensors')) parseSafetensors(bytes, name);
    return undefined;
  } catch (e) {
    return `does not parse (${(e as Error).message.slice(0, 200)})`;
  }
}

/** An HTML document where a model file should be: a login or captive-portal page, or an SPA fallback. */
function looksLikeHtml(bytes: Uint8Array): boolean {
  const head = new TextDecoder().decode(bytes.subarray(0, 256)).replace(/^\uFEFF/, '');
  return /^\s*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>]|!--)/i.test(head);
}

const htmlAnswer = (name: string) =>
  `the server answered with an HTML page, not ${name} (a login or captive-portal page, or a dev server that answers missing files with its index.html?)`;

/** A download with the checks every source of bytes gets: no HTML, the right hash. */
async function downloadChecked(
  target: Target,
  name: string,
  opts: FetchOptions,
  optional: boolean,
  expected: string | undefined,
  writer: CacheWriter | undefined,
): Promise<Uint8Array | Absent> {
  const bytes = await download(target, name, opts, optional, writer);
  if (!(bytes instanceof Uint8Array)) return bytes;
  if (looksLikeHtml(bytes)) {
    await writer?.discardPartial();
    if (optional) return { remember: false };
    throw new FetchError(target.href, htmlAnswer(name), 200);
  }
  if (expected) {
    const actual = await sha256Hex(bytes);
    if (actual !== expected) {
      await writer?.discardPartial();
      throw new FetchError(target.href, `sha256 mismatch for ${name}: expected ${expected}, got ${actual} (wrong or corrupted file)`);
    }
  }
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

/** Redirects followed per request, as browsers do (20) but tighter: model hosts use one or two. */
const MAX_REDIRECTS = 10;
/** Every attempt may be a retry that makes progress; this bounds them all (per `retries + 1`). */
const ATTEMPTS_PER_TRY = 4;
/** Bytes received that did not extend the furthest offset reached, in file sizes, before giving up. */
const WASTE_FILES = 2;

async function download(target: Target, name: string, opts: FetchOptions, optional: boolean, writer: CacheWriter | undefined): Promise<Uint8Array | Absent> {
  const retries = opts.retries ?? DEFAULTS.retries;
  const baseDelay = opts.retryDelayMs ?? DEFAULTS.retryDelayMs;
  const stallMs = opts.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs;
  const { signal } = opts;
  const url = target.href;

  const sink = new Sink(url, opts.maxBytes ?? Number.MAX_SAFE_INTEGER);
  // What the bytes in `sink` belong to: the validator (strong ETag or Last-Modified) and full size.
  let validator: string | undefined;
  let total: number | undefined;
  const part = await writer?.takePartial();
  if (part && part.meta.url === url && part.bytes.byteLength <= (opts.maxBytes ?? Number.MAX_SAFE_INTEGER)) {
    sink.append(part.bytes);
    validator = part.meta.validator;
    total = part.meta.total;
    // A previous run got every byte but stopped before moving the file into place.
    if (total === sink.length) return sink.bytes();
  } else if (part) {
    await writer!.discardPartial();
  }
  const restart = async () => {
    sink.reset();
    validator = undefined;
    total = undefined;
    await writer?.discardPartial();
  };

  // Progress is only what extends the furthest offset ever reached: a restart that re-downloads
  // bytes we had before is not progress, so a server that can never complete runs out of retries.
  const start = sink.length;
  let furthest = start;
  let received = 0;
  let failures = 0;
  let attempts = 0;
  // False once a response says its bytes cannot be resumed with a Range (compressed, or no ranges).
  let resumable = true;
  for (;;) {
    attempts++;
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
      const range: Record<string, string> = {};
      if (offset > 0) {
        range.Range = `bytes=${offset}-`;
        // If the file changed on the server since the partial was written, it answers 200 (whole new file).
        if (validator) range['If-Range'] = validator;
      }
      arm();
      const res = await request(target, range, opts, ctrl.signal, () => stalled, stallMs);

      if ((res.status === 404 || res.status === 410) && offset === 0 && optional) {
        await res.body?.cancel().catch(() => {});
        return { remember: true };
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        if (res.status === 416 && offset > 0) {
          // The server has no byte at `offset`. If it says its file ends exactly there, the size it
          // announced before was wrong and no retry can deliver the rest.
          const has = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
          if (has && Number(has[1]) === offset && total !== undefined && total > offset) {
            throw new AttemptFailed(`the server announced ${total} bytes but its file has ${offset} (a wrong Content-Length)`, false, 416);
          }
          // Our partial does not fit the file any more (it shrank or changed): start over.
          await restart();
          throw new AttemptFailed(`HTTP 416 for a resume at byte ${offset}; restarting`, true, 416);
        }
        const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
        const what = res.status === 404 ? `; ${name} is required` : '';
        throw new AttemptFailed(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}${what}`, retryable, res.status, retryAfter(res));
      }
      if (/^\s*(text\/html|application\/xhtml\+xml)\b/i.test(res.headers.get('content-type') ?? '')) {
        await res.body?.cancel().catch(() => {});
        // A dev server (Vite) answers every missing file with its index.html: for an optional
        // file that means "not there", but it is not a 404 to remember.
        if (optional && offset === 0) return { remember: false };
        throw new AttemptFailed(htmlAnswer(name), false, res.status);
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
        await writer?.startPartial({ url, validator, total });
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
          received += chunk.value.byteLength;
          sink.append(chunk.value);
          await writer?.appendPartial(chunk.value);
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
      const reached = sink.length;
      if (!resumable && sink.length > 0) await restart();
      // A flaky link that keeps delivering new data is not failing: only attempts that get no
      // further than any attempt before count.
      if (reached > furthest) {
        furthest = reached;
        failures = 1;
      } else {
        failures++;
      }
      const size = Math.max(total ?? 0, furthest);
      const wasted = received - (furthest - start);
      let why = '';
      if (!e.retry || failures > retries) why = attempts > 1 ? ` (after ${attempts} attempts)` : '';
      else if (attempts >= ATTEMPTS_PER_TRY * (retries + 1)) why = ` (gave up after ${attempts} attempts)`;
      else if (wasted > WASTE_FILES * Math.max(size, 2 ** 20)) why = ` (gave up after ${attempts} attempts and ${received} bytes received for a file of ${size})`;
      else {
        const backoff = Math.min(baseDelay * 2 ** (failures - 1), MAX_BACKOFF_MS);
        await sleep(Math.max(backoff, e.retryAfterMs ?? 0), signal);
        continue;
      }
      throw new FetchError(url, `${e.message}${why}`, e.status);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * One GET, following redirects by hand: the caller's headers, credentials and URL user:password go
 * to the first origin only; once a redirect leaves it, nothing but the request itself (the URL and
 * its Range) is sent. Redirects that can never work end the download at once.
 */
async function request(target: Target, range: Record<string, string>, opts: FetchOptions, signal: AbortSignal, stalled: () => boolean, stallMs: number): Promise<Response> {
  let url = target.href;
  let crossed = false;
  for (let hop = 0; ; hop++) {
    const own = new Headers(crossed ? undefined : opts.fetchInit?.headers);
    if (!crossed && target.auth && !own.has('authorization')) own.set('authorization', target.auth);
    for (const [k, v] of Object.entries(range)) own.set(k, v);
    const bare: RequestInit = { headers: range, signal, credentials: 'omit', referrerPolicy: 'no-referrer' };
    const init: RequestInit = crossed ? { ...bare, redirect: 'manual' } : { ...opts.fetchInit, headers: own, signal, redirect: 'manual' };
    let res: Response;
    try {
      res = await fetch(url, init);
      // Browsers hide where a redirect goes: follow it with nothing but the request itself.
      if (res.type === 'opaqueredirect') res = await fetch(url, { ...bare, redirect: 'follow' });
    } catch (e) {
      throw networkFailure(e, stalled(), stallMs);
    }
    if (![301, 302, 303, 307, 308].includes(res.status)) return res;
    await res.body?.cancel().catch(() => {});
    const location = res.headers.get('location');
    const fail = (why: string) => new AttemptFailed(`HTTP ${res.status} redirect ${why}`, false, res.status);
    if (!location) throw fail('without a Location');
    if (hop >= MAX_REDIRECTS) throw fail(`after ${MAX_REDIRECTS} redirects (a redirect loop?)`);
    let next: URL;
    try {
      next = new URL(location, url);
    } catch {
      throw fail(`to an invalid URL ${JSON.stringify(redactUrl(location).slice(0, 200))}`);
    }
    if (next.protocol !== 'http:' && next.protocol !== 'https:') throw fail(`to a ${next.protocol} URL, which is never followed`);
    if (url.startsWith('https:') && next.protocol === 'http:') throw fail('from https to plain http, which is never followed');
    next.username = '';
    next.password = '';
    if (next.origin !== target.origin) crossed = true;
    url = next.href;
  }
}

function networkFailure(e: unknown, stalled: boolean, stallMs: number, got?: number, total?: number): AttemptFailed {
  if (stalled) return new AttemptFailed(`stalled: no data for ${stallMs} ms`, true);
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const why = redactUrl([err?.message, err?.cause?.code ?? err?.cause?.message].filter(Boolean).join(': ') || String(e));
  const where = got !== undefined ? ` after ${got}${total !== undefined ? ` of ${total}` : ''} bytes` : '';
  // What fetch refuses before connecting (a bad port, a scheme, a URL it cannot parse) fails the
  // same way every time; network errors carry a system or socket error code.
  const permanent = !err?.cause?.code && /bad port|scheme|invalid url|parse url|credentials|redirect/i.test(`${err?.message} ${err?.cause?.message}`);
  return new AttemptFailed(`connection failed${where} (${why})`, !permanent);
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
