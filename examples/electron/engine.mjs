// The main process's engine: mamba-edge's Node build (dist/src), kept off the Electron main thread in a
// worker_threads worker (`loadModelInWorker`) so that window events never wait for a token. Plain Node: the
// tests import this file directly, without Electron. In your own app import from 'mamba-edge' instead.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../../dist/src/index.js';
import { defaultModelSource } from '../../dist/src/defaults.js';

/** The bundled model; until it has been trained, the small test fixture. */
export function defaultModelDir() {
  const bundled = defaultModelSource();
  if (existsSync(`${bundled}/config.json`)) return bundled;
  return fileURLToPath(new URL('../../test/fixtures/hf-mamba/small-hf-f16-untied/', import.meta.url));
}

/** `loadModelInWorker` when this build has it (src/runtime.ts), else the in-process `loadModel`. */
async function loader(inWorker) {
  if (inWorker) {
    const runtime = await import('../../dist/src/runtime.js').catch(() => null);
    if (runtime?.loadModelInWorker) return { load: runtime.loadModelInWorker, where: 'worker thread' };
  }
  return { load: loadModel, where: 'main thread' };
}

/**
 * Loads a model and returns a small streaming API:
 *   info                                   { model, parameters, backend, where }
 *   generate(prompt, options, onText)      calls onText(text) per chunk, resolves with the stats
 *   dispose()
 * `options` are mamba-edge GenerateOptions (maxTokens, temperature, stop, signal, ...).
 */
export async function createEngine({ model = defaultModelDir(), backend = 'auto', inWorker = true } = {}) {
  const { load, where } = await loader(inWorker);
  const m = await load(model, { backend });
  const description = typeof m.backend === 'string' ? m.backend : (m.backend?.description ?? m.backend?.name ?? String(m.backend));
  return {
    info: { model, parameters: m.parameters, backend: description, where },
    async generate(prompt, options = {}, onText = () => {}) {
      let stats;
      for await (const chunk of m.generate(prompt, options)) {
        if (chunk.text) onText(chunk.text);
        if (chunk.stats) stats = chunk.stats;
      }
      return stats;
    },
    dispose: () => m.dispose(),
  };
}
