// Electron surface without Electron (its binary cannot be installed here): the example's entry points are run
// where they can be — the main-process engine and the IPC wiring of main.js + preload.js in Node (with a
// stand-in `electron` module), and the renderer page in headless Chromium (browser bundle in a Web Worker).
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { browserSkipReason, useBrowserAndServer } from './surfaces-helpers.js';

const EXAMPLE = new URL('../examples/electron/', import.meta.url);
const TINY = fileURLToPath(new URL('fixtures/hf-mamba/tiny-hf-f32/', import.meta.url));

/** A stand-in for the parts of Electron's API the example uses, wired main ↔ renderer in one process. */
function fakeElectron() {
  const handlers = new Map<string, (...a: any[]) => any>();
  const mainListeners = new Map<string, (...a: any[]) => void>();
  const rendererListeners = new Map<string, Set<(...a: any[]) => void>>();
  const exposed: Record<string, any> = {};
  const protocols: Record<string, (req: { url: string }) => Promise<Response>> = {};
  const windows: { url?: string; options: any }[] = [];
  const appEvents = new Map<string, (...a: any[]) => any>();
  const sender = { send: (ch: string, ...args: unknown[]) => rendererListeners.get(ch)?.forEach((fn) => fn({}, ...args)) };
  const electron = {
    app: { whenReady: () => Promise.resolve(), on: (ev: string, fn: any) => appEvents.set(ev, fn), quit: () => {} },
    protocol: { registerSchemesAsPrivileged: () => {}, handle: (scheme: string, fn: any) => (protocols[scheme] = fn) },
    net: { fetch: async (url: string) => new Response(readFileSync(fileURLToPath(url))) },
    BrowserWindow: class {
      constructor(options: unknown) {
        windows.push({ options });
      }
      loadURL(url: string) {
        windows[windows.length - 1].url = url;
      }
    },
    ipcMain: { handle: (ch: string, fn: any) => handlers.set(ch, fn), on: (ch: string, fn: any) => mainListeners.set(ch, fn) },
    ipcRenderer: {
      invoke: async (ch: string, ...args: unknown[]) => handlers.get(ch)!({ sender }, ...structuredClone(args)),
      send: (ch: string, ...args: unknown[]) => mainListeners.get(ch)?.({ sender }, ...args),
      on: (ch: string, fn: any) => rendererListeners.set(ch, (rendererListeners.get(ch) ?? new Set()).add(fn)),
      removeListener: (ch: string, fn: any) => rendererListeners.get(ch)?.delete(fn),
    },
    contextBridge: { exposeInMainWorld: (name: string, api: unknown) => (exposed[name] = api) },
  };
  return { electron, exposed, protocols, windows, rendererListeners, appEvents };
}

describe('Electron example in Node', () => {
  it('engine.mjs (main-process engine) streams a generation from the Node build', async () => {
    const path = new URL('engine.mjs', EXAMPLE).href;
    const { createEngine } = await import(path);
    const engine = await createEngine({ model: TINY, backend: 'auto' });
    try {
      const chunks: string[] = [];
      const stats = await engine.generate('Hello', { maxTokens: 24, temperature: 0 }, (t: string) => chunks.push(t));
      expect(stats.generatedTokens).toBe(24);
      expect(stats.decodeTokensPerSecond).toBeGreaterThan(0);
      expect(chunks.join('').length).toBeGreaterThan(0);
      expect(engine.info.parameters).toBeGreaterThan(0);
      console.log(`electron engine.mjs: ${engine.info.backend} (${engine.info.where}), ${chunks.length} chunks`);
    } finally {
      engine.dispose();
    }
  });

  it('main.js + preload.js: the bridged generate API streams over IPC; the app:// scheme sends COOP/COEP', async () => {
    const fake = fakeElectron();
    const require = createRequire(import.meta.url);
    const Module = require('node:module') as { _load: (req: string, ...rest: unknown[]) => unknown };
    const original = Module._load;
    Module._load = function (request: string, ...rest: unknown[]) {
      return request === 'electron' ? fake.electron : original.call(this, request, ...rest);
    };
    const mainPath = fileURLToPath(new URL('main.js', EXAMPLE));
    const preloadPath = fileURLToPath(new URL('preload.js', EXAMPLE));
    try {
      require(mainPath);
      require(preloadPath);
    } finally {
      Module._load = original;
    }
    await new Promise((r) => setTimeout(r, 0)); // app.whenReady().then(...)
    expect(fake.windows[0].url).toMatch(/^app:\/\/bundle\/examples\/electron\/renderer\/index\.html$/);
    expect(fake.windows[0].options.webPreferences).toMatchObject({ contextIsolation: true, sandbox: true, nodeIntegration: false });

    const res = await fake.protocols.app({ url: 'app://bundle/examples/electron/renderer/index.html' });
    expect(res.headers.get('cross-origin-opener-policy')).toBe('same-origin');
    expect(res.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
    expect(res.headers.get('content-type')).toBe('text/html');
    expect(await res.text()).toContain('renderer.js');
    expect((await fake.protocols.app({ url: 'app://bundle/no/such/file.js' })).status).toBe(404);

    // The default engine loads the bundled model (or the fixture): the same path a real app takes.
    const mamba = fake.exposed.mamba;
    const info = await mamba.info();
    expect(info.parameters).toBeGreaterThan(0);
    const chunks: string[] = [];
    const stats = await mamba.generate('The fortune says: ', { maxTokens: 16, temperature: 0 }, (t: string) => chunks.push(t));
    expect(stats.generatedTokens).toBe(16);
    expect(chunks.length).toBeGreaterThan(0);
    expect(fake.rendererListeners.get('mamba:chunk')?.size ?? 0).toBe(0); // listener removed when done
    console.log(`electron main.js via preload: ${info.backend} (${info.where}), ${chunks.length} chunks`);
    // Closing the last window disposes the engine (and its worker thread).
    await fake.appEvents.get('window-all-closed')!();
  });
});

const skip = browserSkipReason(import.meta.url, 'renderer page');

describe.skipIf(skip)('Electron renderer page in headless Chromium', () => {
  const env = useBrowserAndServer();

  it('streams text into the window from the browser bundle in a Web Worker', async () => {
    const page = await env.browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    // Requests the loader cancels itself (ERR_ABORTED, e.g. after reading headers) are not failures.
    page.on('requestfailed', (r) => {
      const why = r.failure()?.errorText ?? '';
      if (!why.includes('ERR_ABORTED')) errors.push(`request failed: ${r.url()} ${why}`);
    });
    // (HEAD requests are the page looking for the bundled model, which may not exist yet.)
    page.on('response', (r) => {
      if (r.status() >= 400 && r.request().method() !== 'HEAD') errors.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    // No ?model=: the page finds the bundled model, or the small fixture until that is trained.
    await page.goto(`${env.server.url}examples/electron/renderer/index.html?maxTokens=64`);
    // Count text insertions into the output as they happen: streaming means several, not one at the end.
    await page.evaluate(() => {
      (window as any).inserts = 0;
      new MutationObserver((list) => ((window as any).inserts += list.length)).observe(document.getElementById('output')!, { childList: true });
    });
    await page.click('#go');
    await page.waitForFunction(() => document.getElementById('stats')!.textContent!.includes('decode'), undefined, { timeout: 60_000 });
    const output = await page.textContent('#output');
    const stats = await page.textContent('#stats');
    const inserts = await page.evaluate(() => (window as any).inserts);
    console.log(`electron renderer: ${stats} (${inserts} DOM inserts): ${JSON.stringify(output)}`);
    expect(output!.startsWith('The fortune says: ')).toBe(true);
    expect(output!.length).toBeGreaterThan('The fortune says: '.length);
    expect(stats).toMatch(/Web Worker · \S+/);
    expect(inserts).toBeGreaterThan(2); // the prompt span + more than one chunk
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    expect(errors).toEqual([]);
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/electron-renderer.png' });
    await page.close();
  });
});
