/**
 * Model fetching against a local HTTP server that misbehaves on purpose: truncated bodies, 500s,
 * stalls, wrong content, 404s, servers that ignore Range. Every scenario asserts the exact number
 * of requests, so retries are visibly bounded, and recovered downloads must load the same model.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { FetchError, InvalidOptionError, loadModel, ModelFormatError, type LoadProgress, type Model } from '../src/index.js';
import { fetchModelFile } from '../src/fetch.js';
import { syntheticModel } from '../src/synthetic.js';

const model = syntheticModel({ hidden_size: 16, num_hidden_layers: 2, seed: 21 });
const FILES: Record<string, Buffer> = {
  'config.json': Buffer.from(model['config.json']),
  'model.safetensors': Buffer.from(model['model.safetensors']),
};
const SIZE = FILES['model.safetensors'].length;
const SHA = createHash('sha256').update(FILES['model.safetensors']).digest('hex');
const ETAG = '"v1"';

interface Hit {
  path: string;
  range?: string;
  ifRange?: string;
}
let hits: Hit[] = [];
const count = (path: string) => hits.filter((h) => h.path === path).length;

/**
 * Sends `body` honouring Range (+ If-Range), optionally cutting the connection after `cutAt` bytes
 * of this response or going silent (`stallAt`) while keeping it open.
 */
function send(req: IncomingMessage, res: ServerResponse, body: Buffer, o: { cutAt?: number; stallAt?: number; ranges?: boolean; acceptRanges?: string } = {}) {
  let start = 0;
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const validatorOk = !req.headers['if-range'] || req.headers['if-range'] === ETAG;
  if (m && o.ranges !== false && validatorOk) start = Number(m[1]);
  const part = body.subarray(start);
  res.writeHead(start > 0 ? 206 : 200, {
    'content-length': String(part.length),
    etag: ETAG,
    ...(o.acceptRanges ? { 'accept-ranges': o.acceptRanges } : {}),
    ...(start > 0 ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
  });
  if (o.cutAt !== undefined) {
    res.write(part.subarray(0, o.cutAt));
    // Let the bytes reach the client, then drop the connection mid-body.
    setTimeout(() => res.socket?.destroy(), 30);
  } else if (o.stallAt !== undefined) {
    res.write(part.subarray(0, o.stallAt)); // ...and nothing more, connection left open
  } else {
    res.end(part);
  }
}

function handle(req: IncomingMessage, res: ServerResponse) {
  const path = new URL(req.url!, 'http://x').pathname;
  hits.push({ path, range: req.headers.range, ifRange: req.headers['if-range'] as string | undefined });
  const [, scenario, name] = path.split('/');
  const body = FILES[name];
  if (!body) return res.writeHead(404).end();
  const n = count(path); // this request's number for this path, from 1
  if (name === 'config.json') {
    if (scenario === 'no-config') return res.writeHead(404, 'Not Found').end('nope');
    return send(req, res, body);
  }
  switch (scenario) {
    case 'ok':
      return send(req, res, body);
    case 'truncate': // drops the connection halfway, then serves the rest as a 206
      return n === 1 ? send(req, res, body, { cutAt: Math.floor(SIZE / 2) }) : send(req, res, body);
    case 'truncate-twice':
      return n <= 2 ? send(req, res, body, { cutAt: Math.floor(SIZE / 3) }) : send(req, res, body);
    case 'flaky-500': // two 500s, then fine
      return n <= 2 ? res.writeHead(500, 'Internal Server Error').end() : send(req, res, body);
    case 'always-500':
      return res.writeHead(500, 'Internal Server Error').end();
    case 'forbidden':
      return res.writeHead(403, 'Forbidden').end();
    case 'stall': // goes silent after 1000 bytes once
      return n === 1 ? send(req, res, body, { stallAt: 1000 }) : send(req, res, body);
    case 'stall-always': // headers, then silence
      return send(req, res, body, { stallAt: 0 });
    case 'wrong': { // one flipped byte: loads fine but fails the hash
      const bad = Buffer.from(body);
      bad[bad.length - 3] ^= 1;
      return send(req, res, bad);
    }
    case 'no-range': // truncates once, and silently ignores Range: the client must start over
      return n === 1 ? send(req, res, body, { cutAt: 5000, ranges: false }) : send(req, res, body, { ranges: false });
    case 'ranges-none': // says up front that it cannot do ranges
      return n === 1 ? send(req, res, body, { cutAt: 5000, acceptRanges: 'none' }) : send(req, res, body, { acceptRanges: 'none' });
    case 'huge-length': // announces a terabyte, then hangs up
      res.writeHead(200, { 'content-length': String(1e12) }).flushHeaders();
      return void setTimeout(() => res.socket?.destroy(), 50);
    case 'slow': // 256 bytes every 20 ms, for the abort test
      res.writeHead(200, { 'content-length': String(SIZE) });
      for (let i = 0, p = 0; p < SIZE; i++, p += 256) {
        setTimeout(() => res.writable && res.write(body.subarray(p, p + 256)), 20 * i);
      }
      return;
    default:
      return res.writeHead(404).end();
  }
}

let server: Server;
let base: string;
let reference: Model;
let cacheRoot: string;

beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  reference = await loadModel({ files: model }, { backend: 'js' });
  cacheRoot = mkdtempSync(join(tmpdir(), 'mamba-edge-fetch-'));
});

afterAll(async () => {
  reference?.dispose();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(cacheRoot, { recursive: true, force: true });
});

beforeEach(() => {
  hits = [];
});

const FAST = { backend: 'js' as const, retryDelayMs: 5, stallTimeoutMs: 2000 };

/** The downloaded model computes exactly what the in-memory one does. */
async function expectSameModel(m: Model) {
  expect(Array.from(await m.logits('Hello, fetch!'))).toEqual(Array.from(await reference.logits('Hello, fetch!')));
  m.dispose();
}

describe('fetching a model over http', () => {
  test('plain download with progress events', async () => {
    const events: LoadProgress[] = [];
    const m = await loadModel(`${base}/ok/`, { ...FAST, onProgress: (p) => events.push({ ...p }) });
    await expectSameModel(m);
    const st = events.filter((e) => e.file === 'model.safetensors');
    expect(st.at(-1)).toEqual({ file: 'model.safetensors', loaded: SIZE, total: SIZE });
    for (let i = 1; i < st.length; i++) expect(st[i].loaded).toBeGreaterThanOrEqual(st[i - 1].loaded);
    // config.json, the optional shard index (404), model.safetensors: nothing else.
    expect(hits.map((h) => h.path)).toEqual(['/ok/config.json', '/ok/model.safetensors.index.json', '/ok/model.safetensors']);
  });

  test('a connection dropped mid-body resumes with a Range request', async () => {
    const events: LoadProgress[] = [];
    const m = await loadModel(`${base}/truncate`, { ...FAST, onProgress: (p) => p.file === 'model.safetensors' && events.push({ ...p }) });
    await expectSameModel(m);
    const reqs = hits.filter((h) => h.path === '/truncate/model.safetensors');
    expect(reqs).toHaveLength(2);
    expect(reqs[0].range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(reqs[1].range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(Math.floor(SIZE / 2));
    expect(reqs[1].ifRange).toBe(ETAG); // only resume if the file is still the same
    // Progress never goes backwards across the resume.
    for (let i = 1; i < events.length; i++) expect(events[i].loaded).toBeGreaterThanOrEqual(events[i - 1].loaded);
    expect(events.at(-1)!.loaded).toBe(SIZE);
  });

  test('several drops in a row still complete (each attempt makes progress)', async () => {
    await expectSameModel(await loadModel(`${base}/truncate-twice`, { ...FAST, retries: 1 }));
    expect(count('/truncate-twice/model.safetensors')).toBe(3);
  });

  test('a server that ignores Range (or says it has none) is downloaded again from the start', async () => {
    await expectSameModel(await loadModel(`${base}/no-range`, FAST));
    const reqs = hits.filter((h) => h.path === '/no-range/model.safetensors');
    expect(reqs).toHaveLength(2);
    expect(reqs[1].range).toMatch(/^bytes=\d+-$/);

    hits = [];
    await expectSameModel(await loadModel(`${base}/ranges-none`, FAST));
    const again = hits.filter((h) => h.path === '/ranges-none/model.safetensors');
    expect(again.map((h) => h.range)).toEqual([undefined, undefined]); // Accept-Ranges: none, so no Range asked
  });

  test('500s are retried with backoff, a bounded number of times', async () => {
    await expectSameModel(await loadModel(`${base}/flaky-500`, FAST));
    expect(count('/flaky-500/model.safetensors')).toBe(3);

    hits = [];
    const e = await loadModel(`${base}/always-500`, { ...FAST, retries: 2 }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.status).toBe(500);
    expect(e.url).toBe(`${base}/always-500/model.safetensors`);
    expect(e.message).toBe(`${base}/always-500/model.safetensors: HTTP 500 Internal Server Error (after 3 attempts)`);
    expect(count('/always-500/model.safetensors')).toBe(3);
  });

  test('client errors are not retried', async () => {
    const e = await loadModel(`${base}/forbidden`, FAST).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toBe(`${base}/forbidden/model.safetensors: HTTP 403 Forbidden`);
    expect(count('/forbidden/model.safetensors')).toBe(1);
  });

  test('404 for config.json names the URL and the status', async () => {
    const e = await loadModel(`${base}/no-config/`, FAST).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.status).toBe(404);
    expect(e.message).toMatch(new RegExp(`^${base}/no-config/config\\.json: HTTP 404 Not Found; config\\.json is required`));
    expect(hits).toHaveLength(1);
  });

  test('a stalled connection is abandoned after stallTimeoutMs and resumed', async () => {
    const t = performance.now();
    await expectSameModel(await loadModel(`${base}/stall`, { ...FAST, stallTimeoutMs: 300 }));
    const reqs = hits.filter((h) => h.path === '/stall/model.safetensors');
    expect(reqs).toHaveLength(2);
    expect(reqs[1].range).toBe('bytes=1000-');
    expect(performance.now() - t).toBeGreaterThanOrEqual(290);
  });

  test('a connection that always stalls fails with a clear FetchError', async () => {
    const e = await loadModel(`${base}/stall-always`, { ...FAST, stallTimeoutMs: 150, retries: 1 }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toBe(`${base}/stall-always/model.safetensors: stalled: no data for 150 ms (after 2 attempts)`);
    expect(count('/stall-always/model.safetensors')).toBe(2);
  });

  test('a file larger than the config can need is refused before it is buffered', async () => {
    const e = await loadModel(`${base}/huge-length`, FAST).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/huge-length\/model\.safetensors: file is 1000000000000 bytes, more than the \d+ a model of this config can need$/);
    expect(count('/huge-length/model.safetensors')).toBe(1);
  });

  test('sha256: the right file passes, wrong content fails with both digests', async () => {
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, sha256: { 'model.safetensors': SHA.toUpperCase() } }));
    const e = await loadModel(`${base}/wrong`, { ...FAST, sha256: { 'model.safetensors': SHA } }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(new RegExp(`wrong/model\\.safetensors: sha256 mismatch for model\\.safetensors: expected ${SHA}, got [0-9a-f]{64}`));
    // Without a hash the same bytes load (they are valid weights): the hash is what catches them.
    (await loadModel(`${base}/wrong`, FAST)).dispose();
  });

  test('sha256 is checked for in-memory sources too, and must name real files', async () => {
    await expect(loadModel({ files: model }, { backend: 'js', sha256: { 'model.safetensors': '0'.repeat(64) } })).rejects.toThrow(ModelFormatError);
    await expect(loadModel({ files: model }, { backend: 'js', sha256: { 'model.safetensors': SHA } })).resolves.toBeDefined();
    await expect(loadModel({ files: model }, { backend: 'js', sha256: { 'model.safetensor': SHA } })).rejects.toThrow(/sha256: names model\.safetensor, which this model does not have/);
    await expect(loadModel({ files: model }, { backend: 'js', sha256: { 'model.safetensors': 'abc' } })).rejects.toThrow(InvalidOptionError);
  });

  test('AbortSignal stops the download', async () => {
    const ctrl = new AbortController();
    const p = loadModel(`${base}/slow`, {
      ...FAST,
      signal: ctrl.signal,
      onProgress: (e) => e.file === 'model.safetensors' && e.loaded > 1000 && ctrl.abort(),
    });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    await new Promise((r) => setTimeout(r, 100));
    expect(count('/slow/model.safetensors')).toBe(1); // no retry after an abort
  });
});

describe('download cache', () => {
  test('cacheDir: the second load makes no request', async () => {
    const dir = join(cacheRoot, 'plain');
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, cacheDir: dir }));
    const first = hits.length;
    expect(first).toBe(3);
    const events: LoadProgress[] = [];
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, cacheDir: dir, onProgress: (e) => events.push(e) }));
    // Only the optional shard index (a 404 is not cached) goes to the server again.
    expect(hits.slice(first).map((h) => h.path)).toEqual(['/ok/model.safetensors.index.json']);
    expect(events.find((e) => e.file === 'model.safetensors')).toEqual({ file: 'model.safetensors', loaded: SIZE, total: SIZE });
    expect(readdirSync(dir).some((f) => f.endsWith('.part'))).toBe(false);
  });

  test('a partial download is kept as .part and resumed by the next run', async () => {
    const dir = join(cacheRoot, 'partial');
    // No retries: the truncated first response fails this load but leaves the bytes it got.
    await expect(loadModel(`${base}/truncate`, { ...FAST, cacheDir: dir, retries: 0 })).rejects.toThrow(FetchError);
    const parts = readdirSync(dir).filter((f) => f.endsWith('.part'));
    expect(parts).toHaveLength(1);
    await expectSameModel(await loadModel(`${base}/truncate`, { ...FAST, cacheDir: dir }));
    const reqs = hits.filter((h) => h.path === '/truncate/model.safetensors');
    expect(reqs).toHaveLength(2);
    expect(reqs[1].range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(readdirSync(dir).filter((f) => f.includes('.part'))).toEqual([]);
    expect(existsSync(join(dir, parts[0].replace(/\.part$/, '')))).toBe(true);
  });

  test('a cached file that fails the hash is fetched again', async () => {
    const dir = join(cacheRoot, 'corrupt');
    await expect(loadModel(`${base}/wrong`, { ...FAST, cacheDir: dir, sha256: { 'model.safetensors': SHA } })).rejects.toThrow(/sha256 mismatch/);
    // The bad download was not cached.
    expect(readdirSync(dir).filter((f) => f.endsWith('model.safetensors'))).toEqual([]);
    // Poison the cache by loading without a hash, then load with one: it is fetched again (and fails again).
    (await loadModel(`${base}/wrong`, { ...FAST, cacheDir: dir })).dispose();
    hits = [];
    await expect(loadModel(`${base}/wrong`, { ...FAST, cacheDir: dir, sha256: { 'model.safetensors': SHA } })).rejects.toThrow(/sha256 mismatch/);
    expect(count('/wrong/model.safetensors')).toBe(1);
  });

  test('the Cache API is used where it exists (browsers, Deno)', async () => {
    const store = new Map<string, ArrayBuffer>();
    const fake = {
      open: async () => ({
        match: async (url: string) => (store.has(url) ? new Response(store.get(url)!) : undefined),
        put: async (url: string, res: Response) => void store.set(url, await res.arrayBuffer()),
        delete: async (url: string) => store.delete(url),
      }),
    };
    (globalThis as { caches?: unknown }).caches = fake;
    try {
      const url = `${base}/ok/model.safetensors`;
      const a = await fetchModelFile(url, 'model.safetensors', { cache: true });
      const b = await fetchModelFile(url, 'model.safetensors', { cache: true });
      expect(Buffer.from(b!).equals(FILES['model.safetensors'])).toBe(true);
      expect(Buffer.from(a!).equals(FILES['model.safetensors'])).toBe(true);
      expect(count('/ok/model.safetensors')).toBe(1);
      expect([...store.keys()]).toEqual([url]);
    } finally {
      delete (globalThis as { caches?: unknown }).caches;
    }
  });

  test('cache: true uses ~/.cache/mamba-edge', async () => {
    const home = mkdtempSync(join(tmpdir(), 'mamba-edge-home-'));
    const old = process.env.HOME;
    process.env.HOME = home; // os.homedir() reads $HOME on POSIX
    try {
      (await loadModel(`${base}/ok`, { ...FAST, cache: true })).dispose();
      const files = readdirSync(join(home, '.cache', 'mamba-edge'));
      expect(files.map((f) => f.replace(/^[0-9a-f]{32}-/, '')).sort()).toEqual(['config.json', 'model.safetensors']);
    } finally {
      process.env.HOME = old;
      rmSync(home, { recursive: true, force: true });
    }
  });

  test('without cache options nothing is written', async () => {
    const home = mkdtempSync(join(tmpdir(), 'mamba-edge-home-'));
    const old = process.env.HOME;
    process.env.HOME = home;
    try {
      (await loadModel(`${base}/ok`, FAST)).dispose();
      expect(readdirSync(home)).toEqual([]);
    } finally {
      process.env.HOME = old;
      rmSync(home, { recursive: true, force: true });
    }
  });

  test('bad options fail before any request', async () => {
    for (const o of [{ retries: -1 }, { retries: 1.5 }, { stallTimeoutMs: 0 }, { stallTimeoutMs: 2 ** 31 }, { retryDelayMs: NaN }, { retryDelayMs: 2 ** 31 }, { cacheDir: '' }, { sha256: { 'model.safetensors': 'xyz' } }]) {
      await expect(loadModel(`${base}/ok`, { backend: 'js', ...o } as never), JSON.stringify(o)).rejects.toThrow(InvalidOptionError);
    }
    expect(hits).toEqual([]);
  });
});
