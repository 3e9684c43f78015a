// The cross-device benchmark page (bench/page/) in headless Chromium: a short run on every backend the
// browser offers, the results table and charts, JSON export → import round trip, and a screenshot
// (test-results/bench-page.png) for a human look.
import { mkdirSync, readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { browserSkipReason, useBrowserAndServer } from './surfaces-helpers.js';

const skip = browserSkipReason(import.meta.url);

interface Row {
  run: string;
  backend: string;
  ok: boolean;
  dtype: string;
  threads: string;
  ttft: number;
  prefill: number;
  decode: number;
  note: string;
}

async function tableRows(page: Page): Promise<Row[]> {
  return page.$$eval('#results tbody tr[data-run]', (trs) =>
    trs.map((tr) => {
      const el = tr as HTMLElement;
      const num = (cls: string) => Number(el.querySelector(`td.${cls}`)?.textContent);
      return {
        run: el.dataset.run!,
        backend: el.dataset.backend!,
        ok: el.dataset.ok === '1',
        dtype: el.querySelector('td.dtype')?.textContent ?? '',
        threads: el.querySelector('td.threads')?.textContent ?? '',
        ttft: num('ttft'),
        prefill: num('prefill'),
        decode: num('decode'),
        note: el.lastElementChild?.textContent ?? '',
      };
    }),
  );
}

describe.skipIf(skip)('bench page (headless Chromium)', () => {
  const env = useBrowserAndServer();

  it('runs each backend, renders results and charts, and round-trips export → import', async () => {
    const page = await env.browser.newPage({ acceptDownloads: true, viewport: { width: 1200, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const model = new URL('test/fixtures/hf-mamba/tiny-hf-f32/', env.server.url).href;
    await page.goto(`${env.server.url}bench/page/?model=${encodeURIComponent(model)}&prompt=32&tokens=8&autorun=1`);
    // The run is short (tiny model) but WebGPU on SwiftShader compiles every pipeline on a shared CPU.
    await page.waitForFunction(() => (window as any).mambaBench?.state.current, undefined, { timeout: 100_000, polling: 250 });

    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    const rows = await tableRows(page);
    console.log('bench page rows:', JSON.stringify(rows));
    expect(rows.map((r) => r.backend).sort()).toEqual(['js', 'wasm', 'webgpu']);
    // The reference backend runs everywhere; the others either ran (positive numbers) or say why not.
    expect(rows.find((r) => r.backend === 'js')!.ok).toBe(true);
    expect(rows.filter((r) => r.ok).every((r) => r.note.endsWith('Web Worker'))).toBe(true);
    for (const r of rows) {
      if (r.ok) {
        expect(r.decode).toBeGreaterThan(0);
        expect(r.prefill).toBeGreaterThan(0);
        expect(r.ttft).toBeGreaterThan(0);
      } else {
        expect(r.note).not.toBe('');
      }
    }
    expect(await page.locator('#charts figure svg rect').count()).toBeGreaterThan(0);
    expect(await page.locator('#device dd').first().textContent()).toContain('browser');

    // Export: the file is the shared report format (device = probe report, results = one row per backend).
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    const file = await download.path();
    const report = JSON.parse(readFileSync(file, 'utf8'));
    expect(report.format).toBe('mamba-edge-bench');
    expect(report.device.runtime).toBe('browser');
    expect(report.results).toHaveLength(3);
    const js = report.results.find((r: { backend: string }) => r.backend === 'js');
    expect(js.decodeTokPerSec).toBeGreaterThan(0);
    expect(js.weightBytes).toBeGreaterThan(0);
    expect(js.memoryBytes).toBeGreaterThan(0);

    // Import the same file: a second run appears beside the first, with the same numbers.
    await page.setInputFiles('#import', file);
    await page.waitForSelector('#results tbody tr[data-run="1"]');
    const after = await tableRows(page);
    const strip = (r: Row) => ({ ...r, run: '' });
    expect(after.filter((r) => r.run === '1').map(strip)).toEqual(after.filter((r) => r.run === '0').map(strip));
    expect(await page.locator('#legend > span').count()).toBe(2);

    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/bench-page.png', fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('also runs on the page thread (loadModel) when asked', async () => {
    const page = await env.browser.newPage();
    const model = new URL('test/fixtures/hf-mamba/tiny-hf-f32/', env.server.url).href;
    await page.goto(`${env.server.url}bench/page/?model=${encodeURIComponent(model)}&prompt=16&tokens=8&backends=wasm,js&worker=0&autorun=1`);
    await page.waitForFunction(() => (window as any).mambaBench?.state.current, undefined, { timeout: 60_000, polling: 250 });
    const rows = await tableRows(page);
    expect(rows.map((r) => [r.backend, r.ok])).toEqual([['wasm', true], ['js', true]]);
    expect(rows.every((r) => r.decode > 0 && r.note.endsWith('page thread'))).toBe(true);
    await page.close();
  });

  it('a backend that cannot run here says why, before downloading anything for it', async () => {
    const model = new URL('test/fixtures/hf-mamba/tiny-hf-f32/', env.server.url).href;
    const run = async (query: string, hideGpu: boolean) => {
      const page = await env.browser.newPage();
      // A browser without WebGPU (the probe then finds no navigator.gpu).
      if (hideGpu) await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined }));
      const weights: string[] = [];
      page.on('request', (q) => q.url().endsWith('.safetensors') && weights.push(q.url()));
      await page.goto(`${env.server.url}bench/page/?model=${encodeURIComponent(model)}&prompt=16&tokens=4&${query}&autorun=1`);
      await page.waitForFunction(() => (window as any).mambaBench?.state.current, undefined, { timeout: 60_000, polling: 250 });
      const rows = await tableRows(page);
      await page.close();
      return { rows, weights };
    };

    // No WebGPU: the row says so, and shows no weight format or thread count (nothing ran).
    const noGpu = await run('backends=webgpu,js&dtype=f16', true);
    expect(noGpu.rows.map((r) => [r.backend, r.ok, r.dtype, r.threads])).toEqual([['webgpu', false, '–', '–'], ['js', true, 'f32', '1']]);
    expect(noGpu.rows[0].note).toMatch(/^unavailable: .*(WebGPU|navigator\.gpu)/i);
    expect(noGpu.weights).toHaveLength(1); // the js row's download only

    // q8 (which WebGPU stores too): the GPU row is refused only for the missing adapter; wasm shows
    // what ran (q8, the 2 threads asked for on this isolated page).
    const q8 = await run('backends=webgpu,wasm&dtype=q8&threads=2', true);
    expect(q8.rows.map((r) => [r.backend, r.ok, r.dtype, r.threads])).toEqual([['webgpu', false, '–', '–'], ['wasm', true, 'q8', '2']]);
    expect(q8.rows[0].note).toMatch(/^unavailable: .*(WebGPU|navigator\.gpu)/i);
    expect(q8.weights).toHaveLength(1);
  });

  it('at 1280 px the table fits: the note column is not clipped', async () => {
    const page = await env.browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${env.server.url}bench/page/?backends=js`);
    await page.evaluate(() => (window as any).mambaBench.ready);
    // Rows as long as real ones: a WebGPU adapter name, an error message, a long device label.
    const cli = {
      device: { cpu: 'AMD EPYC 9B45 128-Core Processor with a long marketing name', cores: 128, memoryGiB: 512, node: 'v20.20.2', platform: 'linux x64' },
      results: [
        { backend: 'webgpu', dtype: 'f16', description: 'webgpu navigator.gpu, NVIDIA H100 80GB HBM3 (nvidia hopper), f16 (shader-f16)', decodeTokPerSec: 1220.5, prefillTokPerSec: 14120.3, timeToFirstTokenMs: 145.2, weightBytes: 1.8e8, memoryBytes: 2.1e8, loadMs: 1234, worker: true },
        { backend: 'wasm', dtype: 'q8', threads: 128, description: 'wasm simd (relaxed fma), 128 threads, q8', decodeTokPerSec: 280.6, prefillTokPerSec: 425.1, timeToFirstTokenMs: 89.3, weightBytes: 1.1e8, memoryBytes: 1.3e8, loadMs: 987, worker: true },
        { backend: 'js', error: 'unavailable: a long reason why this backend could not run on this device, as the engine words it' },
      ],
    };
    await page.setInputFiles('#import', { name: 'wide.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(cli)) });
    await page.waitForSelector('#results tbody tr[data-run="0"]');
    const fit = await page.evaluate(() => {
      const scroll = document.querySelector('#results')!.parentElement!;
      const box = scroll.getBoundingClientRect();
      const notes = [...document.querySelectorAll('#results tbody tr')].map((tr) => tr.lastElementChild!.getBoundingClientRect());
      return { scrollWidth: scroll.scrollWidth, clientWidth: scroll.clientWidth, right: box.right, noteRight: Math.max(...notes.map((n) => n.right)), page: document.documentElement.scrollWidth };
    });
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/bench-page-1280.png', fullPage: true });
    await page.close();
    expect(fit.scrollWidth, JSON.stringify(fit)).toBeLessThanOrEqual(fit.clientWidth);
    expect(fit.noteRight).toBeLessThanOrEqual(fit.right + 0.5);
    expect(fit.page).toBeLessThanOrEqual(1280);
  });

  it('rejects a file that is not a report; imports a report from the Node bench CLI', async () => {
    const page = await env.browser.newPage();
    await page.goto(`${env.server.url}bench/page/?backends=js`);
    await page.evaluate(() => (window as any).mambaBench.ready);
    await page.setInputFiles('#import', { name: 'bad.json', mimeType: 'application/json', buffer: Buffer.from('{"results": 3}') });
    await page.waitForFunction(() => document.getElementById('status')!.textContent!.includes('cannot import bad.json'));
    expect(await page.locator('#results tbody tr[data-run]').count()).toBe(0);

    // A report from `npm run bench -- --json` (bench/run.js): machine facts instead of a probe report.
    const cli = {
      device: { cpu: 'Test CPU @ 3GHz', cores: 8, memoryGiB: 16, node: 'v20.20.2', platform: 'linux x64' },
      results: [{ backend: 'wasm', dtype: 'q8', threads: 8, description: 'wasm simd, 8 threads, q8', decodeTokPerSec: 123.4, prefillTokPerSec: 456.7, timeToFirstTokenMs: 89, weightBytes: 1e8, decodeGBps: 12.3, readGBps: 20 }],
    };
    await page.setInputFiles('#import', { name: 'cli.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(cli)) });
    await page.waitForSelector('#results tbody tr[data-run="0"]');
    const rows = await tableRows(page);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ backend: 'wasm', ok: true, decode: 123.4, prefill: 456.7, ttft: 89 });
    expect(await page.textContent('#legend')).toContain('Test CPU @ 3GHz');
    expect(await page.locator('#charts figure').count()).toBe(3);
    await page.close();
  });
});
