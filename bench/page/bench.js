// The cross-device benchmark page: probe the device, run one workload on each backend, show, export, compare.
//
// Query parameters preset the form (and let tests drive the page):
//   ?model=URL&prompt=128&tokens=64&threads=N&dtype=f32&backends=webgpu,wasm,js&worker=1&autorun=1
import { BackendUnavailableError, loadModel, loadModelInWorker, probe } from '../../dist/browser/mamba-edge.js';
import { FORMAT, VERSION, deviceLabel, renderCharts, renderLegend, renderTable, validateReport } from './report.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/** Everything the page shows: this device's run (if any) and imported reports, in legend order. */
const state = { current: null, imported: [], running: false };
// For tests and the console: the latest report of this device, and a promise for the running benchmark.
window.mambaBench = { state, done: null };

const DEFAULT_MODELS = ['../../models/mambabyte-fortunes/', '../../test/fixtures/hf-mamba/small-hf-f16-untied/'];

function log(line) {
  const el = $('status');
  el.textContent += `${line}\n`;
  el.scrollTop = el.scrollHeight;
}

/** Replaces the last status line (download progress). */
function setStatusLine(line) {
  const el = $('status');
  const lines = el.textContent.split('\n');
  lines[lines.length - 2] = line;
  el.textContent = lines.join('\n');
}

/** The first default model that is actually served here (the bundled one is still being trained). */
async function defaultModel() {
  for (const m of DEFAULT_MODELS) {
    const url = new URL(m, location.href);
    const res = await fetch(new URL('config.json', url), { method: 'HEAD' }).catch(() => null);
    if (res?.ok) return url.href;
  }
  return new URL(DEFAULT_MODELS[0], location.href).href;
}

/** A deterministic ASCII prompt of exactly `n` bytes (one byte = one token for byte-level models). */
function promptOfLength(n) {
  const base = 'The quick brown fox jumps over the lazy dog while the fortune teller reads the stars. ';
  return base.repeat(Math.ceil(n / base.length)).slice(0, n);
}

const BYTES_PER_WEIGHT = { f32: 4, f16: 2, q8: 1, q4: 0.5625 };

/**
 * Memory in use after a run: the page-wide measurement when the browser offers one (it needs cross-origin
 * isolation and may wait for a garbage collection, hence the time limit; it includes workers), else the JS
 * heap of this thread (Chromium only; engine on this thread), else the size of the weights on the backend.
 */
async function measureMemory(weightBytes, inWorker) {
  if (typeof performance.measureUserAgentSpecificMemory === 'function' && self.crossOriginIsolated) {
    const m = await Promise.race([
      performance.measureUserAgentSpecificMemory().catch(() => null),
      new Promise((r) => setTimeout(() => r(null), 1500)),
    ]);
    if (m?.bytes) return { memoryBytes: m.bytes, memorySource: 'measureUserAgentSpecificMemory' };
  }
  // performance.memory sees this thread's heap only: meaningless when the engine lives in a worker.
  if (!inWorker && performance.memory?.usedJSHeapSize) return { memoryBytes: performance.memory.usedJSHeapSize, memorySource: 'performance.memory' };
  return { memoryBytes: weightBytes, memorySource: 'weights' };
}

/**
 * Why `backend` cannot run here, from the device probe, or null. Checked before anything is downloaded: a row that
 * cannot run must not cost the model download first.
 */
function cannotRun(backend, dtype, device) {
  if (backend === 'webgpu') {
    if (!device.webgpu.available) return device.webgpu.reason || 'no WebGPU adapter';
    if (dtype === 'q8' || dtype === 'q4') return `${dtype} weights are CPU-only (wasm) for now`;
  }
  if (backend === 'wasm' && !device.wasm.simd) return "this browser's WebAssembly has no SIMD";
  return null;
}

/** The weight format and thread count that actually ran, from the backend's description (e.g. "wasm simd, 2 threads, q8"). */
function ranAs(backend, description) {
  if (backend === 'js') return { dtype: 'f32', threads: 1 };
  const dtype = /\b(f32|f16|q8|q4)\b/.exec(description)?.[1];
  // A GPU has no thread count to show; wasm says how many threads it got (1 without cross-origin isolation).
  const threads = backend === 'wasm' ? Number(/(\d+) threads?\b/.exec(description)?.[1]) || undefined : undefined;
  return { dtype, threads };
}

/** Loads the model on one backend, warms it up, then measures one generation. Never throws: errors become rows. */
async function runBackend(backend, cfg, device) {
  // dtype and threads are filled in from what ran; a row that did not run shows neither.
  const row = { backend, worker: cfg.worker };
  const dtype = backend === 'js' ? 'f32' : cfg.dtype;
  const why = cannotRun(backend, dtype, device);
  if (why) {
    row.error = `unavailable: ${why}`;
    log(`${backend}: ${row.error}`);
    return row;
  }
  log(`${backend}: loading ${cfg.model}`);
  let model;
  try {
    const t0 = performance.now();
    // In a Web Worker (how apps should run it: the page stays responsive) or on this thread.
    const load = cfg.worker ? loadModelInWorker : loadModel;
    const onProgress = ({ file, loaded }) => setStatusLine(`${backend}: loading ${file}: ${(loaded / 2 ** 20).toFixed(1)} MiB`);
    model = await load(cfg.model, { backend, dtype, threads: backend === 'wasm' ? cfg.threads : undefined, onProgress });
    row.loadMs = performance.now() - t0;
    row.description = model.backend.description;
    Object.assign(row, ranAs(backend, row.description));
    row.parameters = model.parameters;
    // Bytes a decode step streams when the backend says (wasm), else parameters x bytes per weight.
    row.weightBytes = model.backend.decodeWeightBytes ?? model.parameters * BYTES_PER_WEIGHT[row.dtype ?? dtype];
    const prompt = promptOfLength(cfg.prompt);
    const opts = { temperature: 0, seed: 1 };
    // Warm-up: compiles shaders / JITs the kernels, so the timed run measures steady state.
    for await (const _ of model.generate(prompt.slice(0, 8), { ...opts, maxTokens: 2 }));
    let stats;
    for await (const c of model.generate(prompt, { ...opts, maxTokens: cfg.tokens })) if (c.stats) stats = c.stats;
    Object.assign(row, {
      decodeTokPerSec: stats.decodeTokensPerSecond,
      prefillTokPerSec: stats.prefillTokensPerSecond,
      timeToFirstTokenMs: stats.timeToFirstTokenMs,
      promptTokens: stats.promptTokens,
      generatedTokens: stats.generatedTokens,
      totalMs: stats.totalMs,
    });
    Object.assign(row, await measureMemory(row.weightBytes, cfg.worker));
    log(`${backend}: decode ${row.decodeTokPerSec.toFixed(1)} tok/s, prefill ${row.prefillTokPerSec.toFixed(1)} tok/s, first token ${row.timeToFirstTokenMs.toFixed(1)} ms`);
  } catch (e) {
    row.error = `${e instanceof BackendUnavailableError ? 'unavailable: ' : ''}${e?.message ?? e}`;
    log(`${backend}: ${row.error}`);
  } finally {
    model?.dispose();
  }
  return row;
}

function readForm() {
  return {
    model: new URL($('model').value, location.href).href,
    prompt: Math.max(1, Number($('prompt').value) | 0),
    tokens: Math.max(1, Number($('tokens').value) | 0),
    threads: Math.max(1, Number($('threads').value) | 0 || navigator.hardwareConcurrency || 1),
    dtype: $('dtype').value,
    worker: $('worker').checked,
    backends: [...$('backends').querySelectorAll('input:checked')].map((i) => i.value),
  };
}

async function run() {
  if (state.running) return;
  state.running = true;
  $('run').disabled = true;
  $('status').textContent = '';
  try {
    const cfg = readForm();
    log(`probing the device…`);
    const device = await probe();
    showDevice(device);
    const results = [];
    for (const backend of cfg.backends) {
      results.push(await runBackend(backend, cfg, device));
      // Let the page repaint between backends.
      await new Promise((r) => setTimeout(r, 0));
    }
    state.current = {
      source: 'this device',
      report: {
        format: FORMAT,
        version: VERSION,
        tool: 'bench-page',
        createdAt: new Date().toISOString(),
        model: { source: cfg.model, parameters: results.find((r) => r.parameters)?.parameters ?? null },
        workload: { promptTokens: cfg.prompt, maxTokens: cfg.tokens, temperature: 0, warmup: true, worker: cfg.worker },
        device,
        results,
      },
    };
    state.current.label = `${deviceLabel(state.current.report)} (this device)`;
    $('export').disabled = false;
    render();
    log('done');
  } finally {
    state.running = false;
    $('run').disabled = false;
  }
}

function showDevice(d) {
  const gpu = d.webgpu.available
    ? `${d.webgpu.adapter?.description || [d.webgpu.adapter?.vendor, d.webgpu.adapter?.architecture].filter(Boolean).join(' ') || 'adapter'}${d.webgpu.adapter?.software ? ' (software)' : ''}${d.webgpu.shaderF16 ? ', shader-f16' : ''}`
    : `none (${d.webgpu.reason ?? 'unavailable'})`;
  const items = [
    ['runtime', `${d.runtime} ${d.version ?? ''}`],
    ['WebGPU', gpu],
    ['WASM', `SIMD ${d.wasm.simd ? 'yes' : 'no'}, relaxed SIMD ${d.wasm.relaxedSimd ? 'yes' : 'no'}, threads ${d.wasm.threads ? 'yes' : 'no'}`],
    ['cross-origin isolated', String(d.crossOriginIsolated)],
    ['logical cores', String(d.logicalCores ?? '?')],
    ['device memory', d.deviceMemoryBytes ? `${(d.deviceMemoryBytes / 2 ** 30).toFixed(1)} GiB` : '?'],
  ];
  $('device').innerHTML = items.map(([k, v]) => `<dt>${k}</dt><dd>${String(v).replace(/</g, '&lt;')}</dd>`).join('');
}

function runs() {
  return [...(state.current ? [state.current] : []), ...state.imported];
}

function render() {
  const all = runs();
  renderLegend($('legend'), all);
  renderTable($('results').tBodies[0], all);
  renderCharts($('charts'), all);
}

function exportJson() {
  if (!state.current) return;
  const blob = new Blob([JSON.stringify(state.current.report, null, 2)], { type: 'application/json' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  const stamp = state.current.report.createdAt.replace(/[:.]/g, '-');
  a.download = `mamba-edge-bench-${state.current.report.device.runtime}-${stamp}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function importFiles(files) {
  for (const file of files) {
    try {
      const report = validateReport(JSON.parse(await file.text()), file.name);
      state.imported.push({ source: 'import', file: file.name, report, label: deviceLabel(report) });
      log(`imported ${file.name}: ${report.results.length} results from ${deviceLabel(report)}`);
    } catch (e) {
      log(`cannot import ${file.name}: ${e.message}`);
    }
  }
  render();
}

async function init() {
  $('model').value = params.get('model') ?? (await defaultModel());
  for (const k of ['prompt', 'tokens', 'threads', 'dtype']) if (params.has(k)) $(k).value = params.get(k);
  if (params.has('worker')) $('worker').checked = params.get('worker') === '1';
  if (!$('threads').value) $('threads').value = navigator.hardwareConcurrency || 1;
  if (params.has('backends')) {
    const want = params.get('backends').split(',');
    for (const box of $('backends').querySelectorAll('input')) box.checked = want.includes(box.value);
  }
  $('run').addEventListener('click', () => (window.mambaBench.done = run()));
  $('export').addEventListener('click', exportJson);
  $('import').addEventListener('change', (e) => importFiles([...e.target.files]).then(() => (e.target.value = '')));
  $('clear').addEventListener('click', () => {
    state.imported = [];
    render();
  });
  render();
  if (!self.crossOriginIsolated) log('note: not cross-origin isolated (no COOP/COEP headers): the wasm backend runs on 1 thread');
  if (params.get('autorun') === '1') window.mambaBench.done = run();
}

window.mambaBench.ready = init();
