// Deno: load the default model and stream a continuation to stdout.
//
//   npx deno run --allow-read --allow-env examples/deno/main.ts [--prompt TEXT] [--max-tokens N]
//        [--backend auto|webgpu|wasm|js] [--model DIR] [--seed S] [--temperature T]
//
// `--backend auto` (the default) uses Deno's built-in WebGPU (`navigator.gpu`) when it offers a hardware
// adapter, else the WASM SIMD backend (multi-threaded through Deno workers), else plain TypeScript. Statistics go to stderr as one JSON line starting with "stats ".
// It imports the compiled package (dist/, run `npm run build` first); in your own project use
// `import { loadModel } from 'npm:mamba-edge'` instead.
import { parseArgs } from 'node:util';
import { BackendUnavailableError, loadModel, type BackendChoice, type Model } from '../../dist/src/index.js';
import { defaultModelSource } from '../../dist/src/defaults.js';

const { values } = parseArgs({
  args: Deno.args,
  options: {
    prompt: { type: 'string', default: 'The fortune says: ' },
    'max-tokens': { type: 'string', default: '200' },
    backend: { type: 'string', default: 'auto' },
    model: { type: 'string' },
    seed: { type: 'string', default: '1' },
    temperature: { type: 'string', default: '0.8' },
  },
});

/** The bundled model; until it has been trained, the small test fixture. */
async function modelDir(): Promise<string> {
  if (values.model) return values.model;
  const bundled = defaultModelSource();
  try {
    await Deno.stat(`${bundled}/config.json`);
    return bundled;
  } catch {
    return new URL('../../test/fixtures/hf-mamba/small-hf-f16-untied/', import.meta.url).pathname;
  }
}

/**
 * `auto` lets the library decide: it probes the device and prefers a hardware GPU (Deno's `navigator.gpu`),
 * then WASM SIMD, then plain JS. An explicit backend that this machine cannot run falls back to `auto`.
 */
async function load(dir: string, backend: string): Promise<Model> {
  try {
    return await loadModel(dir, { backend: backend as BackendChoice });
  } catch (e) {
    if (!(e instanceof BackendUnavailableError) || backend === 'auto') throw e;
    console.error(`backend ${backend} is unavailable here (${e.message}); using auto`);
    return loadModel(dir, { backend: 'auto' });
  }
}

const dir = await modelDir();
const model = await load(dir, values.backend!);
// `selection` says why this backend runs ("requested backend 'wasm'" for an explicit choice).
const why = model.backend.selection?.reason;
console.error(`model ${dir}: ${model.parameters} parameters on ${model.backend.description}${why ? ` (${why})` : ''}`);

const out = Deno.stdout.writable.getWriter();
const enc = new TextEncoder();
await out.write(enc.encode(values.prompt));
for await (const chunk of model.generate(values.prompt!, {
  maxTokens: Number(values['max-tokens']),
  temperature: Number(values.temperature),
  seed: Number(values.seed),
})) {
  await out.write(enc.encode(chunk.text));
  if (chunk.stats) console.error(`\nstats ${JSON.stringify(chunk.stats)}`);
}
await out.write(enc.encode('\n'));
out.releaseLock();
model.dispose();
