/**
 * The worker runtime in Deno: `loadModelInWorker` starts a module Web Worker from the compiled
 * dist/workers/engine-worker.js (comlink resolved from node_modules by Deno itself); fixture logits
 * through the worker match transformers, and an abort from the main side ends the stream.
 */
import { describe, expect, test } from 'vitest';
import { denoRun, NEEDS, requires } from './helpers/env.js';
import { loadFixtures, maxAbsDiff } from './helpers/fixtures.js';

const skip = requires(import.meta.url, NEEDS.deno, NEEDS.build);

describe.skipIf(skip)('loadModelInWorker in Deno (module Web Worker)', () => {
  test.for(loadFixtures({ bytesOnly: true }))('$name: logits through the worker match transformers', (fx) => {
    const code = `
      import { loadModelInWorker } from './dist/src/runtime.js';
      const model = await loadModelInWorker(${JSON.stringify(fx.dir)});
      const logits = await model.logits(new Uint8Array(${JSON.stringify(Array.from(fx.input))}));
      const controller = new AbortController();
      let n = 0, stats;
      for await (const c of model.generate('The ', { maxTokens: 1e6, signal: controller.signal })) {
        if (++n === 2) controller.abort();
        stats = c.stats ?? stats;
      }
      model.dispose();
      const b64 = btoa(String.fromCharCode(...new Uint8Array(logits.buffer)));
      console.log(JSON.stringify({ backend: model.backend, finishReason: stats.finishReason, logits: b64 }));`;
    const r = denoRun(['run', '--allow-read', '--allow-env', '--ext=js', '-'], { input: code });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    const buf = Buffer.from(out.logits, 'base64');
    const logits = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const ratio = maxAbsDiff(logits, fx.logits) / fx.maxAbsLogit;
    console.log(`deno worker ${fx.name}: ${out.backend.description} (${out.backend.selection?.reason}) max|Δ|/max|logit| ${ratio.toExponential(2)}`);
    expect(ratio).toBeLessThanOrEqual(1e-4);
    expect(out.finishReason).toBe('abort');
  });
});
