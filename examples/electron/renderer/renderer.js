// Renderer: streams generated text into the window from one of two engines —
//  - "worker": the browser bundle's `loadModelInWorker` (a module Web Worker; WebGPU when the GPU is usable,
//    else WASM SIMD threads, which need the COOP/COEP headers main.js sends);
//  - "main": the main process's Node engine through the preload bridge (`window.mamba`), when present.
// Also runs in a plain browser tab (then only "worker" exists): the tests load it that way.
//
// Query parameters (for tests): ?model=URL&backend=auto&maxTokens=N&prompt=TEXT&autorun=1
import { loadModelInWorker } from '../../../dist/browser/mamba-edge.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const bridge = window.mamba; // from preload.js, only inside Electron

const MODELS = ['../../../models/mambabyte-fortunes/', '../../../test/fixtures/hf-mamba/small-hf-f16-untied/'];

/** The first model directory that is actually there (the bundled model may not be trained yet). */
async function modelUrl() {
  if (params.has('model')) return new URL(params.get('model'), location.href).href;
  for (const m of MODELS) {
    const url = new URL(m, location.href);
    if ((await fetch(new URL('config.json', url), { method: 'HEAD' }).catch(() => null))?.ok) return url.href;
  }
  return new URL(MODELS[0], location.href).href;
}

let model = null; // the worker engine, loaded on first use; reloaded when the backend changes
let modelBackend = null;
let controller = null;

async function workerEngine(backend) {
  if (model && modelBackend === backend) return model;
  model?.dispose();
  model = null;
  const url = await modelUrl();
  $('status').textContent = `loading ${url} in a Web Worker…`;
  model = await loadModelInWorker(url, {
    backend,
    onProgress: (p) => ($('status').textContent = `loading ${p.file}: ${(p.loaded / 2 ** 20).toFixed(1)} MiB`),
  });
  modelBackend = backend;
  return model;
}

function show(text) {
  $('output').append(text);
}

function showStats(s, where) {
  $('stats').textContent = s
    ? `${where} · ${s.backend} · first token ${s.timeToFirstTokenMs.toFixed(0)} ms · prefill ${s.prefillTokensPerSecond.toFixed(0)} tok/s · decode ${s.decodeTokensPerSecond.toFixed(0)} tok/s · ${s.finishReason}`
    : '';
}

async function generate() {
  controller?.abort();
  const prompt = $('prompt').value;
  const options = { maxTokens: Number($('maxTokens').value) || 200, temperature: 0.8, seed: Date.now() % 2 ** 31 };
  $('output').innerHTML = '';
  const p = document.createElement('span');
  p.className = 'prompt';
  p.textContent = prompt;
  $('output').append(p);
  showStats(null);
  $('go').disabled = true;
  try {
    if ($('engine').value === 'main') {
      const info = await bridge.info();
      $('status').textContent = `main process: ${info.backend} (${info.where})`;
      showStats(await bridge.generate(prompt, options, show), 'main process');
    } else {
      const m = await workerEngine($('backend').value);
      $('status').textContent = `Web Worker: ${m.backend.description ?? m.backend.name ?? ''}`;
      controller = new AbortController();
      let stats;
      for await (const chunk of m.generate(prompt, { ...options, signal: controller.signal })) {
        show(chunk.text);
        stats = chunk.stats ?? stats;
      }
      showStats(stats, 'Web Worker');
    }
  } catch (e) {
    $('status').textContent = `error: ${e?.message ?? e}`;
    throw e;
  } finally {
    $('go').disabled = false;
  }
}

function stop() {
  controller?.abort();
  bridge?.abort();
}

for (const k of ['backend', 'maxTokens', 'prompt']) if (params.has(k)) $(k).value = params.get(k);
if (!bridge) $('engine').querySelector('option[value=main]').disabled = true;
$('go').addEventListener('click', () => (window.demo.done = generate()));
$('stop').addEventListener('click', stop);
window.demo = { done: null };
if (params.get('autorun') === '1') window.demo.done = generate();
