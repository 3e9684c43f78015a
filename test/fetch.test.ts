/**
 * Model fetching against a local HTTP server that misbehaves on purpose: truncated bodies, 500s,
 * stalls, wrong content, 404s, servers that ignore Range. Every scenario asserts the exact number
 * of requests, so retries are visibly bounded, and recovered downloads must load the same model.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
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
/** Body bytes the server has sent since the last reset. */
let sent = 0;
let portal = true;
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
  sent += o.cutAt !== undefined ? Math.min(o.cutAt, part.length) : o.stallAt !== undefined ? Math.min(o.stallAt, part.length) : part.length;
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
  const n = count(path); // this request's number for this path, from 1
  const html = '<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Wi-Fi login</body></html>';
  switch (scenario) {
    case 'loop': // redirects to itself, for ever
      return res.writeHead(302, { location: path }).end();
    case 'to-file':
      return res.writeHead(302, { location: 'file:///etc/passwd' }).end();
    case 'to-bad-port':
      return res.writeHead(302, { location: 'http://127.0.0.1:99999/x' }).end();
    case 'to-other': // every file lives on the other server (another origin: another port)
      return res.writeHead(302, { location: `${base2}/ok/${name}` }).end();
    case 'portal-once': // a captive portal answers every request until it is switched off
      if (portal) return res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
      break;
    case 'portal-sniff': // ... and one that does not even say it is HTML
      return res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(html);
    case 'vite': // a dev server: missing files get index.html with a 200
      if (!FILES[name]) return res.writeHead(200, { 'content-type': 'text/html' }).end(html);
      break;
    case 'once': // serves each file once, then is down
      if (n > 1) return res.writeHead(503, 'Service Unavailable').end();
      break;
    case 'creep-big': // ignores Range; the n-th response is cut after n * 64 KiB of a 3 MiB file
      return send(req, res, BIG, { ranges: false, cutAt: n * 65536 });
  }
  const body = FILES[name];
  if (!body) return res.writeHead(404).end();
  if (name === 'config.json') {
    if (scenario === 'no-config') return res.writeHead(404, 'Not Found').end('nope');
    return send(req, res, body);
  }
  switch (scenario) {
    case 'ok':
    case 'portal-once':
    case 'vite':
    case 'once':
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
    case 'short-body': // announces 100 bytes more than it has; a resume gets 416 with the real size
    case 'short-body-bare416': { // ... or a 416 that does not say the size
      if (req.headers.range) {
        return res.writeHead(416, scenario === 'short-body' ? { 'content-range': `bytes */${SIZE}` } : {}).end();
      }
      sent += SIZE;
      res.writeHead(200, { 'content-length': String(SIZE + 100), etag: ETAG }).write(body);
      return void setTimeout(() => res.socket?.destroy(), 30);
    }
    case 'bad-range': // cuts every body in half, and answers resumes with the wrong range
      if (!req.headers.range) return send(req, res, body, { cutAt: Math.floor(SIZE / 2) });
      sent += SIZE;
      return res.writeHead(206, { 'content-range': `bytes 0-${SIZE - 1}/${SIZE}`, 'content-length': String(SIZE) }).end(body);
    case 'creep': // ignores Range; the n-th response is cut after n * SIZE/50 bytes: always a bit further
      return send(req, res, body, { ranges: false, cutAt: Math.ceil((n * SIZE) / 50) });
    case 'slow-ok': // 4 KiB every 15 ms, so that concurrent clients overlap
      res.writeHead(200, { 'content-length': String(SIZE) });
      for (let i = 0, p = 0; p < SIZE; i++, p += 4096) {
        setTimeout(() => res.writable && (p + 4096 >= SIZE ? res.end(body.subarray(p)) : res.write(body.subarray(p, p + 4096))), 15 * i);
      }
      return;
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

/** 3 MiB, for the byte bound. */
const BIG = randomBytes(3 * 2 ** 20);

/** Another origin (another port): records every request's headers. */
let headers2: IncomingMessage['headers'][] = [];
function handle2(req: IncomingMessage, res: ServerResponse) {
  headers2.push(req.headers);
  const body = FILES[new URL(req.url!, 'http://x').pathname.split('/')[2]];
  return body ? send(req, res, body) : res.writeHead(404).end();
}

let server: Server;
let server2: Server;
let base: string;
let base2: string;
let reference: Model;
let cacheRoot: string;

beforeAll(async () => {
  server = createServer(handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  server2 = createServer(handle2);
  await new Promise<void>((r) => server2.listen(0, '127.0.0.1', r));
  base2 = `http://127.0.0.1:${(server2.address() as AddressInfo).port}`;
  reference = await loadModel({ files: model }, { backend: 'js' });
  cacheRoot = mkdtempSync(join(tmpdir(), 'mamba-edge-fetch-'));
});

afterAll(async () => {
  reference?.dispose();
  for (const srv of [server, server2]) {
    srv.closeAllConnections();
    await new Promise((r) => srv.close(r));
  }
  rmSync(cacheRoot, { recursive: true, force: true });
});

beforeEach(() => {
  hits = [];
  headers2 = [];
  sent = 0;
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
    // config.json, the optional tokenizer.json (a 404 here), model.safetensors: nothing else (the shard index is only
    // looked for when model.safetensors is absent).
    expect(hits.map((h) => h.path)).toEqual(['/ok/config.json', '/ok/tokenizer.json', '/ok/model.safetensors']);
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
    expect(first).toBe(3); // config.json, tokenizer.json (404, remembered), model.safetensors
    const events: LoadProgress[] = [];
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, cacheDir: dir, onProgress: (e) => events.push(e) }));
    // Nothing at all: the shard index is never asked for when model.safetensors exists.
    expect(hits.slice(first)).toEqual([]);
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
    const store = new Map<string, { body: ArrayBuffer; headers: Headers }>();
    const fake = {
      open: async () => ({
        match: async (url: string) => {
          const e = store.get(url);
          return e ? new Response(e.body, { headers: e.headers }) : undefined;
        },
        put: async (url: string, res: Response) => void store.set(url, { body: await res.arrayBuffer(), headers: res.headers }),
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

      // A whole model: the second load makes no request (the index's 404 is remembered).
      await expectSameModel(await loadModel(`${base}/ok/`, { ...FAST, cache: true }));
      hits = [];
      await expectSameModel(await loadModel(`${base}/ok/`, { ...FAST, cache: true }));
      expect(hits).toEqual([]);
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
      expect(files.map((f) => f.replace(/^[0-9a-f]{32}-/, '')).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json.absent']);
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

/** How long `f` takes, and what it threw. */
async function timed(f: () => Promise<unknown>): Promise<{ ms: number; error: unknown }> {
  const t = performance.now();
  const error = await f().then(
    () => undefined,
    (e) => e,
  );
  return { ms: performance.now() - t, error };
}

describe('downloads that always end', () => {
  // Default retries (4): the issue saw 90 requests in 45 s, and more, from these servers.
  const DEFAULT = { backend: 'js' as const, retryDelayMs: 5, stallTimeoutMs: 2000 };

  test('a body shorter than its Content-Length, resumes answered 416 with the real size: 2 requests, then FetchError', async () => {
    const { ms, error } = await timed(() => loadModel(`${base}/short-body`, DEFAULT));
    expect(error).toBeInstanceOf(FetchError);
    expect((error as Error).message).toBe(
      `${base}/short-body/model.safetensors: the server announced ${SIZE + 100} bytes but its file has ${SIZE} (a wrong Content-Length) (after 2 attempts)`,
    );
    expect(count('/short-body/model.safetensors')).toBe(2);
    expect(ms).toBeLessThan(5000);
  });

  test('the same with a bare 416: a restart to the same offset is not progress (retries + 1 requests)', async () => {
    const { ms, error } = await timed(() => loadModel(`${base}/short-body-bare416`, DEFAULT));
    expect(error).toBeInstanceOf(FetchError);
    // fetch 1 (progress), 416, re-fetch to the same offset, 416, re-fetch: 4 attempts without progress.
    expect(count('/short-body-bare416/model.safetensors')).toBe(5);
    expect(sent).toBeLessThanOrEqual(3 * SIZE + FILES['config.json'].length);
    expect(ms).toBeLessThan(5000);
  });

  test('truncated bodies and resumes with a wrong Content-Range: retries + 1 requests', async () => {
    const { ms, error } = await timed(() => loadModel(`${base}/bad-range`, DEFAULT));
    expect(error).toBeInstanceOf(FetchError);
    expect((error as Error).message).toMatch(/bad-range\/model\.safetensors: (connection (closed|failed)|server answered the resume).* \(after 5 attempts\)$/);
    expect(count('/bad-range/model.safetensors')).toBe(5);
    expect(ms).toBeLessThan(5000);
  });

  test('progress that never completes is bounded in attempts (4 x (retries + 1))', async () => {
    const { ms, error } = await timed(() => loadModel(`${base}/creep`, DEFAULT));
    expect((error as Error).message).toMatch(/creep\/model\.safetensors: connection failed.* \(gave up after 20 attempts\)$/);
    expect(count('/creep/model.safetensors')).toBe(20);
    expect(ms).toBeLessThan(10_000);
  });

  test('... and in bytes: at most 2 file sizes received that did not extend the download', async () => {
    const url = `${base}/creep-big/blob.bin`;
    const e = await fetchModelFile(url, 'blob.bin', { retryDelayMs: 1 }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/\(gave up after 15 attempts and \d+ bytes received for a file of 3145728\)$/);
    // Sent: 64 KiB x (1 + ... + 15) = 7.5 MiB; the furthest offset reached is 960 KiB.
    expect(count('/creep-big/blob.bin')).toBe(15);
    expect(sent).toBeLessThanOrEqual(3 * BIG.length);
  });

  test('errors that can never succeed are not retried', async () => {
    const loop = await timed(() => fetchModelFile(`${base}/loop/model.safetensors`, 'model.safetensors', { retryDelayMs: 5 }));
    expect((loop.error as Error).message).toBe(`${base}/loop/model.safetensors: HTTP 302 redirect after 10 redirects (a redirect loop?)`);
    expect(count('/loop/model.safetensors')).toBe(11); // one request and 10 redirects, once

    const file = await fetchModelFile(`${base}/to-file/model.safetensors`, 'model.safetensors', { retryDelayMs: 5 }).catch((x) => x);
    expect(file.message).toBe(`${base}/to-file/model.safetensors: HTTP 302 redirect to a file: URL, which is never followed`);
    expect(count('/to-file/model.safetensors')).toBe(1);

    const port = await fetchModelFile(`${base}/to-bad-port/model.safetensors`, 'model.safetensors', { retryDelayMs: 5 }).catch((x) => x);
    expect(port.message).toMatch(/to-bad-port\/model\.safetensors: HTTP 302 redirect to an invalid URL "http:\/\/127\.0\.0\.1:99999\/x"$/);
    expect(count('/to-bad-port/model.safetensors')).toBe(1);

    // A port fetch refuses to use (the Fetch standard's "bad ports", here 9): refused at once, once.
    const refused = await timed(() => loadModel('http://127.0.0.1:9/m/', DEFAULT));
    expect((refused.error as Error).message).toBe('http://127.0.0.1:9/m/config.json: connection failed (fetch failed: bad port)');
    expect(refused.ms).toBeLessThan(1000);

    const bad = await timed(() => loadModel('http://127.0.0.1:99999/m/', DEFAULT));
    expect(bad.error).toBeInstanceOf(FetchError);
    expect((bad.error as Error).message).toBe('http://127.0.0.1:99999/m/config.json: not a valid URL (check the host and port)');
    expect(bad.ms).toBeLessThan(1000);
  });
});

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('credentials stay with their origin', () => {
  test('fetchInit headers and URL user:password reach the first origin only, never a redirect target', async () => {
    const withCreds = base.replace('http://', 'http://alice:s3cret@');
    const m = await loadModel(`${withCreds}/to-other/`, { ...FAST, fetchInit: { headers: { 'x-api-key': 'KEY-123', cookie: 'session=abc' } } });
    await expectSameModel(m);
    // The first origin got the credentials (and redirected every file)...
    expect(hits.map((h) => h.path)).toEqual(['/to-other/config.json', '/to-other/tokenizer.json', '/to-other/model.safetensors']);
    // ...the other origin got the requests and nothing else.
    expect(headers2).toHaveLength(3);
    for (const h of headers2) {
      expect(h['x-api-key']).toBeUndefined();
      expect(h.cookie).toBeUndefined();
      expect(h.authorization).toBeUndefined();
      expect(JSON.stringify(h)).not.toMatch(/KEY-123|s3cret|session|YWxpY2U6czNjcmV0/);
    }
  });

  test('the URL user:password is sent as Basic auth to its own origin', async () => {
    let auth: string | undefined;
    const srv = createServer((req, res) => {
      auth = req.headers.authorization;
      res.writeHead(403, 'Forbidden').end();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    try {
      const e = await loadModel(`http://alice:s3cret@127.0.0.1:${port}/m/`, FAST).catch((x) => x);
      expect(auth).toBe(`Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
      expect(e.message).toBe(`http://127.0.0.1:${port}/m/config.json: HTTP 403 Forbidden`);
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });

  test('URL credentials never appear in an error, whatever fails', async () => {
    const creds = base.replace('http://', 'http://alice:s3cret@');
    const errors = [
      await loadModel(`${creds}/forbidden/`, FAST).catch((x) => x),
      await loadModel(`${creds}/no-config/`, FAST).catch((x) => x),
      await loadModel('http://alice:s3cret@127.0.0.1:99999/m/', FAST).catch((x) => x),
      // Nothing listens there any more: connection refused, retried, then reported.
      await loadModel(`http://alice:s3cret@127.0.0.1:${await closedPort()}/m/`, { ...FAST, retries: 1 }).catch((x) => x),
    ];
    for (const e of errors) {
      expect(e).toBeInstanceOf(FetchError);
      expect(`${e.message} ${e.url} ${e.stack} ${String(e.cause ?? '')}`).not.toMatch(/s3cret|alice/);
    }
    expect(errors[2].message).toMatch(/^http:\/\/\*\*\*@127\.0\.0\.1:99999\/m\/config\.json: not a valid URL/);
    expect(errors[3].message).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/m\/config\.json: connection failed \(fetch failed: ECONNREFUSED\) \(after 2 attempts\)$/);
  });
});

/** Cache entries by file name (the `<hash>-` prefix dropped), and everything else in the directory. */
function cacheFiles(dir: string) {
  const names = existsSync(dir) ? readdirSync(dir) : [];
  const entry = (file: string) => names.find((n) => n.replace(/^[0-9a-f]{32}-/, '') === file);
  return { names, entry: (file: string) => (entry(file) ? join(dir, entry(file)!) : undefined) };
}
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('a cache that cannot be corrupted', () => {
  test('an HTML page (captive portal) for a model file is an error that says so, and is never cached', async () => {
    const dir = join(cacheRoot, 'portal');
    const e = await loadModel(`${base}/portal-once`, { ...FAST, cacheDir: dir }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toMatch(/portal-once\/config\.json: the server answered with an HTML page, not config\.json \(a login or captive-portal page/);
    expect(cacheFiles(dir).names).toEqual([]);
    // The portal is gone: the next run loads, and caches the real files.
    portal = false;
    await expectSameModel(await loadModel(`${base}/portal-once`, { ...FAST, cacheDir: dir }));
    expect(readFileSync(cacheFiles(dir).entry('config.json')!).equals(FILES['config.json'])).toBe(true);

    // Without a Content-Type saying so, the bytes still are HTML.
    const sniffed = await loadModel(`${base}/portal-sniff`, FAST).catch((x) => x);
    expect(sniffed).toBeInstanceOf(FetchError);
    expect(sniffed.message).toMatch(/HTML page/);
  });

  test('a dev server that answers missing files with index.html (Vite) serves a non-sharded model', async () => {
    await expectSameModel(await loadModel(`${base}/vite/`, FAST));
    // model.safetensors is found first, so the index (which Vite would answer with HTML) is never asked for.
    expect(count('/vite/model.safetensors.index.json')).toBe(0);
    expect(count('/vite/model.safetensors')).toBe(1);
  });

  test('a truncated cached file is evicted and fetched again once; if that fails, the error names the cache path', async () => {
    const dir = join(cacheRoot, 'truncated');
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, cacheDir: dir }));
    const weights = cacheFiles(dir).entry('model.safetensors')!;
    truncateSync(weights, SIZE - 1000);
    hits = [];
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, cacheDir: dir }));
    expect(hits.map((h) => h.path)).toEqual(['/ok/model.safetensors']);
    expect(sha(readFileSync(weights))).toBe(SHA);

    // A cached config.json that is not JSON (an HTML page cached by an older version).
    writeFileSync(cacheFiles(dir).entry('config.json')!, '<!DOCTYPE html><html></html>');
    hits = [];
    await expectSameModel(await loadModel(`${base}/ok`, { ...FAST, cacheDir: dir }));
    expect(hits.map((h) => h.path)).toEqual(['/ok/config.json']);

    // Now a server that is down after the first run.
    const dir2 = join(cacheRoot, 'truncated-down');
    await expectSameModel(await loadModel(`${base}/once`, { ...FAST, cacheDir: dir2, retries: 0 }));
    const cached = cacheFiles(dir2).entry('model.safetensors')!;
    truncateSync(cached, 100);
    const e = await loadModel(`${base}/once`, { ...FAST, cacheDir: dir2, retries: 0 }).catch((x) => x);
    expect(e).toBeInstanceOf(FetchError);
    expect(e.message).toContain(`HTTP 503 Service Unavailable; the cached copy ${cached} does not parse (model.safetensors: `);
    expect(e.message).toContain('so it was removed and fetched again');
    expect(existsSync(cached)).toBe(false);
  });

  test('a lock and a partial left by a killed process: the next run takes over at once and resumes', async () => {
    const dir = join(cacheRoot, 'killed');
    await expect(loadModel(`${base}/truncate`, { ...FAST, cacheDir: dir, retries: 0 })).rejects.toThrow(FetchError);
    const parked = cacheFiles(dir).entry('model.safetensors.part')!;
    const entry = parked.replace(/\.part$/, '');
    // As a process killed mid-download leaves it: its own partial, and its lock.
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    renameSync(parked, `${entry}.${dead}-zz.part`);
    renameSync(`${parked}.json`, `${entry}.${dead}-zz.part.json`);
    writeFileSync(`${entry}.lock`, JSON.stringify({ pid: dead, host: hostname(), token: 'zz' }));
    hits = [];
    const t = performance.now();
    await expectSameModel(await loadModel(`${base}/truncate`, { ...FAST, cacheDir: dir }));
    expect(performance.now() - t).toBeLessThan(2000); // not the 10 s a silent lock is given
    const reqs = hits.filter((h) => h.path === '/truncate/model.safetensors');
    expect(reqs).toHaveLength(1);
    expect(reqs[0].range).toMatch(/^bytes=[1-9]\d*-$/); // resumed from the dead process's bytes
    expect(sha(readFileSync(entry))).toBe(SHA);
    expect(cacheFiles(dir).names.filter((n) => /\.(part|json|lock|tmp)$/.test(n) && !n.endsWith('-config.json'))).toEqual([]);
  });

  test('4 processes cold-starting on one cache dir: one download, identical weights, no temporary files left', async () => {
    const dir = join(cacheRoot, 'concurrent');
    const index = resolve('dist/src/index.js');
    const code = `
      const { loadModel } = await import(${JSON.stringify(index)});
      const { createHash } = await import('node:crypto');
      const m = await loadModel(process.argv[1], { backend: 'js', cacheDir: process.argv[2], retryDelayMs: 5 });
      const l = await m.logits('Hello, fetch!');
      process.stdout.write(createHash('sha256').update(new Uint8Array(l.buffer, l.byteOffset, l.byteLength)).digest('hex'));
      m.dispose();`;
    const run = () =>
      new Promise<{ code: number | null; out: string; err: string }>((done) => {
        const p = spawn(process.execPath, ['--input-type=module', '-e', code, `${base}/slow-ok/`, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('close', (c) => done({ code: c, out, err }));
      });
    const results = await Promise.all([run(), run(), run(), run()]);
    const l = await reference.logits('Hello, fetch!');
    const want = sha(new Uint8Array(l.buffer, l.byteOffset, l.byteLength));
    for (const r of results) expect(r, r.err).toMatchObject({ code: 0, out: want });
    // The lock: one process downloaded each file, the others waited and read the cache.
    expect(count('/slow-ok/model.safetensors')).toBe(1);
    expect(count('/slow-ok/config.json')).toBe(1);
    const { names, entry } = cacheFiles(dir);
    expect(names.map((n) => n.replace(/^[0-9a-f]{32}-/, '')).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json.absent']);
    expect(sha(readFileSync(entry('model.safetensors')!))).toBe(SHA);
  }, 60_000);
});
