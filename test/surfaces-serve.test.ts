// scripts/serve.js: the static server behind `npm run bench:page` and the browser tests.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type StartedServer } from '../scripts/serve.js';
import { serveRepo } from './surfaces-helpers.js';

/**
 * One raw request: fetch() normalises the path (`/a/../b`) and will not send a Host header of our choosing,
 * which is exactly what these tests need to control.
 */
function raw(server: StartedServer, path: string, headers: Record<string, string | null> = {}, method = 'GET') {
  const all: Record<string, string> = {};
  for (const [k, v] of Object.entries({ Host: `127.0.0.1:${server.port}`, ...headers })) if (v !== null) all[k] = v;
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    // setHost: false, so that a test can send no Host header at all.
    const req = request({ host: '127.0.0.1', port: server.port, path, method, headers: all, setHost: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A Location header that keeps the browser on this server: a path with exactly one leading slash. */
const staysHere = (location: unknown) => typeof location === 'string' && /^\/(?![/\\])/.test(location);

describe('scripts/serve.js', () => {
  let server: StartedServer;
  beforeAll(async () => {
    server = await serveRepo();
  });
  afterAll(() => server?.close());

  it('sends the cross-origin isolation headers, types and lengths', async () => {
    const res = await fetch(new URL('bench/page/', server.url));
    expect(res.status).toBe(200);
    expect(res.headers.get('cross-origin-opener-policy')).toBe('same-origin');
    expect(res.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await res.text()).toContain('mamba-edge benchmark');
    const json = await fetch(new URL('bench/schema.json', server.url), { method: 'HEAD' });
    expect(json.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(Number(json.headers.get('content-length'))).toBe(readFileSync('bench/schema.json').length);
    const redirect = await fetch(new URL('bench/page', server.url), { redirect: 'manual' });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get('location')).toBe('/bench/page/');
  });

  it('serves byte ranges (resumable model downloads)', async () => {
    const path = 'models/mambabyte-fortunes/config.json';
    const url = new URL(path, server.url);
    const full = readFileSync(path);
    const part = await fetch(url, { headers: { Range: 'bytes=5-14' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 5-14/${full.length}`);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(full.subarray(5, 15));
    const tail = await fetch(url, { headers: { Range: 'bytes=-4' } });
    expect(Buffer.from(await tail.arrayBuffer())).toEqual(full.subarray(full.length - 4));
    expect((await fetch(url, { headers: { Range: `bytes=${full.length}-` } })).status).toBe(416);
  });

  it('refuses paths outside the root and answers 404 for missing files', async () => {
    expect((await fetch(`${server.url}..%2f..%2fetc%2fpasswd`)).status).toBe(403);
    expect((await raw(server, '/bench/page/../../../etc/passwd')).status).toBe(403);
    expect((await fetch(new URL('models/no/such/file.txt', server.url))).status).toBe(404);
    expect((await fetch(new URL('bench/schema.json', server.url), { method: 'POST' })).status).toBe(405);
  });

  it('serves only what the pages load: not .git, sources, node_modules or package.json', async () => {
    for (const path of ['/.git/config', '/.git/HEAD', '/package.json', '/src/index.ts', '/node_modules/comlink/package.json', '/scripts/serve.js', '/README.md', '/bench/run.js', '/dist/src/index.js', '/test/fetch.test.ts']) {
      const r = await raw(server, path);
      expect(r.status, path).toBe(404);
      expect(r.body, path).toBe('not found\n');
    }
    // Encoded, doubled or dotted spellings of the same files are refused too.
    for (const path of ['/%2Egit/config', '/.%67it/config', '//.git/config', '/models/../.git/config', '/models/..%2f.git/config', '/%2e%2e/%2egit/config']) {
      expect([403, 404], path).toContain((await raw(server, path)).status);
    }
    // Everything the pages do load is there.
    for (const path of ['/bench/page/bench.js', '/bench/page/report.js', '/examples/browser/main.js', '/models/mambabyte-fortunes/config.json', '/test/fixtures/hf-mamba/tiny-hf-f32/config.json']) {
      expect((await raw(server, path, {}, 'HEAD')).status, path).toBe(200);
    }
    const index = await raw(server, '/');
    expect(index.status).toBe(200);
    expect(index.body).toContain('href="/bench/page/"');
  });

  it('answers only requests addressed to it (Host header: DNS rebinding)', async () => {
    const port = server.port;
    for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1.evil.example:${port}`, '127.0.0.1:1', '127.0.0.1', null]) {
      const r = await raw(server, '/bench/page/', { Host: host });
      // No Host at all: Node's parser answers 400 itself (HTTP/1.1 requires one).
      expect(host === null ? [400, 421] : [421], String(host)).toContain(r.status);
      expect(r.body, String(host)).not.toContain('mamba-edge benchmark');
    }
    // Even a file that exists is not revealed by its status.
    expect((await raw(server, '/.git/config', { Host: 'evil.example' })).status).toBe(421);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
      expect((await raw(server, '/bench/page/', { Host: host })).status, host).toBe(200);
    }
  });

  it('never redirects off this origin', async () => {
    // Decoded whole, this path was `//evil.example/../examples`, answered with `Location: //evil.example/../examples/`.
    for (const path of ['/%2Fevil.example%2F..%2Fexamples', '/%5Cevil.example/../examples', '/%2F%2Fevil.example', '//evil.example/..%2Fexamples']) {
      const r = await raw(server, path);
      expect(r.headers.location === undefined || staysHere(r.headers.location), `${path} → ${r.status} ${r.headers.location}`).toBe(true);
      expect(r.status, path).not.toBe(301);
    }
    // A directory under doubled slashes redirects to its one canonical path, on this server.
    for (const path of ['//bench/page', '//bench//page', '/bench//page']) {
      const r = await raw(server, path);
      expect(r.status, path).toBe(301);
      expect(r.headers.location, path).toBe('/bench/page/');
    }
  });

  it('--root serves that directory whole, except dot files and links that lead out of it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'serve-root-'));
    const outside = mkdtempSync(join(tmpdir(), 'serve-outside-'));
    try {
      writeFileSync(join(dir, 'index.html'), '<!doctype html>app');
      writeFileSync(join(dir, 'k.wasm'), Buffer.from([0, 0x61, 0x73, 0x6d]));
      mkdirSync(join(dir, '.git'));
      writeFileSync(join(dir, '.git', 'config'), '[core]');
      writeFileSync(join(dir, '.env'), 'TOKEN=x');
      writeFileSync(join(outside, 'secret.txt'), 'secret');
      symlinkSync(join(outside, 'secret.txt'), join(dir, 'link.txt'));
      const app = await startServer({ root: dir, port: 0 });
      try {
        expect((await raw(app, '/')).body).toBe('<!doctype html>app');
        const wasm = await raw(app, '/k.wasm', {}, 'HEAD');
        expect([wasm.status, wasm.headers['content-type']]).toEqual([200, 'application/wasm']);
        for (const path of ['/.git/config', '/.env', '/link.txt']) expect([403, 404], path).toContain((await raw(app, path)).status);
        expect((await raw(app, '/', { Host: 'evil.example' })).status).toBe(421);
      } finally {
        await app.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('allowedHosts (--allow-host) adds a name; a server bound to all interfaces answers its own addresses', async () => {
    const app = await startServer({ port: 0, host: '0.0.0.0', allowedHosts: ['my-laptop.local'] });
    try {
      expect((await raw(app, '/bench/page/', { Host: `my-laptop.local:${app.port}` })).status).toBe(200);
      expect((await raw(app, '/bench/page/', { Host: `127.0.0.1:${app.port}` })).status).toBe(200);
      expect((await raw(app, '/bench/page/', { Host: `evil.example:${app.port}` })).status).toBe(421);
    } finally {
      await app.close();
    }
  });
});
