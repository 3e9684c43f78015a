// The smallest browser app: load a model in a Web Worker and stream text into the page.
// Serve the repository root with COOP/COEP headers (`node scripts/serve.js`) and open /examples/browser/.
// In your app: `import { loadModelInWorker } from 'mamba-edge'` (bundlers pick dist/browser/mamba-edge.js,
// its worker and assets), or copy dist/browser/ next to your page and import it by path as here.
import { loadModelInWorker } from '../../dist/browser/mamba-edge.js';

const params = new URLSearchParams(location.search);
// Any directory with config.json + model.safetensors, as an absolute URL (here: ?model=…, else the bundled model).
const modelUrl = new URL(params.get('model') ?? '../../models/mambabyte-fortunes/', location.href).href;

const out = document.getElementById('out');
const statsLine = document.getElementById('stats');
const go = document.getElementById('go');
let loading; // one model (one worker) for the page, however many clicks
let running; // the generation in progress: a second click (or a double click) waits for it instead of starting another

async function generate() {
  // 'auto': WebGPU on a hardware GPU, else WASM SIMD (multi-threaded when the page is cross-origin isolated).
  loading ??= loadModelInWorker(modelUrl, { backend: params.get('backend') ?? 'auto' });
  let model;
  try {
    model = await loading;
  } catch (e) {
    loading = undefined; // let the next click try again
    throw e;
  }
  const prompt = document.getElementById('prompt').value;
  out.textContent = prompt;
  for await (const chunk of model.generate(prompt, { maxTokens: Number(params.get('maxTokens') ?? 200), temperature: 0.8 })) {
    out.append(chunk.text);
    if (chunk.stats) {
      const s = chunk.stats;
      statsLine.textContent = `${s.backend}: first token ${s.timeToFirstTokenMs.toFixed(0)} ms, ${s.decodeTokensPerSecond.toFixed(0)} tok/s`;
    }
  }
}

function start() {
  if (running) return running;
  go.disabled = true;
  running = generate()
    .catch((e) => {
      statsLine.textContent = `error: ${e?.message ?? e}`;
    })
    .finally(() => {
      running = undefined;
      go.disabled = false;
    });
  return running;
}

go.addEventListener('click', () => (window.done = start()));
if (params.get('autorun') === '1') window.done = start();
