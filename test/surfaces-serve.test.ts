// scripts/serve.js: the static server behind `npm run bench:page` and the browser tests.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedServer } from '../scripts/serve.js';
import { serveRepo } from './surfaces-helpers.js';

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
    const wasm = await fetch(new URL('build/mamba.wasm', server.url), { method: 'HEAD' });
    if (wasm.status === 200) expect(wasm.headers.get('content-type')).toBe('application/wasm');
    const redirect = await fetch(new URL('bench/page', server.url), { redirect: 'manual' });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get('location')).toBe('/bench/page/');
  });

  it('serves byte ranges (resumable model downloads)', async () => {
    const url = new URL('package.json', server.url);
    const full = readFileSync('package.json');
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
    expect((await fetch(new URL('no/such/file.txt', server.url))).status).toBe(404);
    expect((await fetch(new URL('package.json', server.url), { method: 'POST' })).status).toBe(405);
  });
});
