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
