/**
 * The worker runtime in headless Chromium: a page served with COOP/COEP (crossOriginIsolated, so
 * SharedArrayBuffer and the threaded wasm path are allowed) loads a fixture model in a module Web
 * Worker from the compiled dist/ tree and compares its logits with transformers'. Skipped (one line)
 * only when /usr/bin/chromium is missing (or dist/ was not built).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fileURLToPath } from 'node:url';
import { relative } from 'node:path';
import { loadFixtures, maxAbsDiff } from '../helpers/fixtures.js';
import { serveStatic, type StaticServer } from './server.js';
import { launchChromium } from '../surfaces-helpers.js';
import { NEEDS, requires } from '../helpers/env.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const skip = requires(import.meta.url, NEEDS.chromium, NEEDS.build);
const fixtures = loadFixtures({ bytesOnly: true }); // the page compares bytes (and has no import map for Tokenizers.js)

type Browser = import('playwright-core').Browser;
type Page = import('playwright-core').Page;

describe.skipIf(skip)('loadModelInWorker in headless Chromium', () => {
  let server: StaticServer;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];

  beforeAll(async () => {
    server = await serveStatic(ROOT);
    browser = await launchChromium();
    page = await browser.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    // 404s are expected: the loader asks for optional files (model.safetensors.index.json).
    page.on('console', (m) => m.type() === 'error' && !/status of 404/.test(m.text()) && errors.push(m.text()));
    await page.goto(`${server.url}/test/browser/index.html`);
    await page.waitForFunction(() => (window as { mambaReady?: boolean }).mambaReady === true, undefined, { timeout: 30_000 });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  test('the page is cross-origin isolated and the probe sees it', async () => {
    const report = await page.evaluate(() => (window as any).mambaTest.probe());
    expect(report.runtime).toBe('browser');
    expect(report.crossOriginIsolated).toBe(true);
    expect(report.sharedArrayBuffer).toBe(true);
    expect(report.wasm.simd).toBe(true);
    expect(report.wasm.threads).toBe(true);
    expect(report.logicalCores).toBeGreaterThan(0);
    console.log(`chromium probe: ${JSON.stringify(report.webgpu.adapter ?? report.webgpu.reason)}`);
    if (report.webgpu.available) expect(report.webgpu.limits.maxBufferSize).toBeGreaterThan(0);
    else expect(report.webgpu.reason).toBeTruthy();
  });

  // WebGPU here is SwiftShader inside Chromium: each load in a new worker compiles every pipeline and
  // runs the adapter self-check (~10 s on two cores), so it meets one model of each kernel family
  // (Mamba-1, Mamba-2); test/conformance.test.ts runs every fixture on WebGPU in Node.
  const GPU_FIXTURES = new Set(['tiny-hf-f32', 'mamba2-tiny-f32']);
  const cases: { label: string; options: Record<string, unknown>; only?: Set<string> }[] = [
    { label: 'auto', options: {} },
    { label: 'wasm, 2 threads', options: { backend: 'wasm', threads: 2 } },
    { label: 'js', options: { backend: 'js' } },
    { label: 'webgpu', options: { backend: 'webgpu' }, only: GPU_FIXTURES },
  ];
  for (const { label, options, only } of cases) {
    test.for(fixtures.filter((f) => !only || only.has(f.name)))(`${label} · $name: logits from a worker match transformers`, async (fx, ctx) => {
      const dir = `/${relative(ROOT, fx.dir)}/`;
      const r = await page.evaluate(
        ([d, input, o, n]) => (window as any).mambaTest.run(d, input, o, n),
        [dir, Array.from(fx.input), options, fx.greedy.length] as const,
      );
      if (!r.ok) {
        if (r.code === 'BACKEND_UNAVAILABLE') return ctx.skip(r.message);
        throw new Error(`${r.name}: ${r.message}`);
      }
      const ratio = maxAbsDiff(Float32Array.from(r.logits), fx.logits) / fx.maxAbsLogit;
      console.log(`chromium ${label.padEnd(16)} ${fx.name.padEnd(22)} ${r.backend.description} — max|Δ|/max|logit| ${ratio.toExponential(2)}, load ${Math.round(r.loadMs)} ms`);
      expect(ratio).toBeLessThanOrEqual(1e-4);
      expect(r.workerProbe.crossOriginIsolated).toBe(true);
      expect(r.workerProbe.runtime).toBe('browser-worker');
      if (options.backend) expect(r.backend.name).toBe(options.backend);
      else expect(r.backend.selection.reason).toBeTruthy();
      if (fx.greedyMargin > 2e-4 * fx.maxAbsLogit) expect(Uint8Array.from(r.greedy)).toEqual(fx.greedy);
      expect(r.stats.generatedTokens).toBe(fx.greedy.length);
      expect(r.aborted.finishReason).toBe('abort');
      expect(errors).toEqual([]);
    });
  }
});
