// Browser surface: examples/browser served as static files, and the same app bundled by an app bundler
// (Vite, as a user would) — the engine worker, .wasm and WGSL must still load from wherever it puts them.
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { startServer } from '../scripts/serve.js';
import { browserSkipReason, useBrowserAndServer } from './surfaces-helpers.js';

const skip = browserSkipReason(import.meta.url);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Opens `url` (the example page with ?autorun=1), waits for the stream to finish, returns text and stats. */
async function runPage(browser: Browser, url: string) {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => (window as any).done, undefined, { timeout: 30_000 });
  await page.evaluate(() => (window as any).done);
  const result = {
    out: (await page.textContent('#out'))!,
    stats: (await page.textContent('#stats'))!,
    isolated: await page.evaluate(() => crossOriginIsolated),
    errors,
  };
  await page.close();
  return result;
}

describe.skipIf(skip)('browser example (headless Chromium)', () => {
  const env = useBrowserAndServer();

  it('static files: examples/browser/ streams text from the browser bundle', async () => {
    const model = new URL('test/fixtures/hf-mamba/tiny-hf-f32/', env.server.url).href;
    const r = await runPage(env.browser, `${env.server.url}examples/browser/?model=${encodeURIComponent(model)}&maxTokens=32&autorun=1`);
    expect(r.errors).toEqual([]);
    expect(r.isolated).toBe(true);
    expect(r.out.length).toBeGreaterThan('The fortune says: '.length);
    expect(r.stats).toMatch(/tok\/s/);
    console.log(`browser example (static): ${r.stats}`);
  });

  it('a double click starts one load, one worker and one generation; no request fails', async () => {
    const page = await env.browser.newPage();
    const workers: string[] = [];
    const failed: string[] = [];
    const requests: string[] = [];
    page.on('worker', (w) => workers.push(w.url()));
    page.on('request', (q) => requests.push(new URL(q.url()).pathname));
    // (The browser's own favicon request is not the page's doing.)
    const mine = (url: string) => !url.endsWith('/favicon.ico');
    page.on('response', (r) => r.status() >= 400 && mine(r.url()) && failed.push(`${r.status()} ${r.url()}`));
    // Requests the loader cancels itself once it has the bytes (ERR_ABORTED) are not failures (as in the Electron test).
    page.on('requestfailed', (q) => mine(q.url()) && !q.failure()?.errorText.includes('ERR_ABORTED') && failed.push(`${q.failure()?.errorText} ${q.url()}`));
    const model = new URL('test/fixtures/hf-mamba/tiny-hf-f32/', env.server.url).href;
    // js: the engine worker is the only worker, so the count is exactly the number of loads.
    await page.goto(`${env.server.url}examples/browser/?model=${encodeURIComponent(model)}&backend=js&maxTokens=24`);
    await page.dblclick('#go');
    await page.click('#go', { force: true }); // a third click while it runs (the button is disabled meanwhile)
    await page.waitForFunction(() => (window as any).done, undefined, { timeout: 30_000 });
    await page.evaluate(() => (window as any).done);
    const out = (await page.textContent('#out'))!;
    const stats = (await page.textContent('#stats'))!;
    await page.close();
    expect(stats, stats).toMatch(/^reference .*tok\/s/);
    expect(workers).toHaveLength(1);
    expect(requests.filter((p) => p.endsWith('/config.json'))).toHaveLength(1);
    expect(requests.filter((p) => p.endsWith('/model.safetensors'))).toHaveLength(1);
    // One generation of 24 bytes after the prompt (two would interleave up to 48).
    expect(out.startsWith('The fortune says: ')).toBe(true);
    expect(Buffer.byteLength(out) - Buffer.byteLength('The fortune says: ')).toBeLessThanOrEqual(24);
    expect(failed, failed.join("\n")).toEqual([]);
    expect(requests.some((p) => p.endsWith('.index.json'))).toBe(false);
  });

  it('bundled by Vite: the worker is copied as an asset and still finds its wasm and shaders', async () => {
    const { build } = await import('vite');
    const out = mkdtempSync(join(tmpdir(), 'mamba-edge-vite-'));
    try {
      await build({
        root: join(ROOT, 'examples/browser'),
        base: './',
        configFile: false,
        logLevel: 'silent',
        build: { outDir: out, emptyOutDir: true },
      });
      const assets = readdirSync(join(out, 'assets'));
      expect(assets.some((f) => /^engine-worker-.*\.js$/.test(f))).toBe(true);
      // The app's own server: only the build output and a model, nothing from the package.
      cpSync(join(ROOT, 'test/fixtures/hf-mamba/tiny-hf-f32'), join(out, 'model'), { recursive: true });
      const app = await startServer({ root: out, port: 0 });
      try {
        // wasm: the inlined kernels and blob: compute threads; webgpu: the inlined WGSL.
        for (const backend of ['wasm', 'webgpu']) {
          const r = await runPage(env.browser, `${app.url}?model=${encodeURIComponent(`${app.url}model/`)}&backend=${backend}&maxTokens=16&autorun=1`);
          expect(r.errors).toEqual([]);
          expect(r.out.length).toBeGreaterThan('The fortune says: '.length);
          expect(r.stats.startsWith(backend)).toBe(true);
          console.log(`browser example (vite build, ${backend}): ${r.stats}`);
        }
      } finally {
        await app.close();
      }
    } finally {
      if (existsSync(out)) rmSync(out, { recursive: true, force: true });
    }
  });
});
