// Deno surface: examples/deno/main.ts streams text from the default model (or the small fixture until the
// bundled model exists), choosing WebGPU (Deno's navigator.gpu) or WASM; and Deno can import the browser bundle.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { denoRun as deno, NEEDS, requires } from './helpers/env.js';

const skip = requires(import.meta.url, NEEDS.deno, NEEDS.build);
// Without a hardware GPU, Deno's WebGPU is a software adapter (lavapipe, or llvmpipe over GL): the
// WebGPU run gets the small fixture and fewer bytes (issue #12: with the bundled model, the first token
// came after 62 s on a fresh 2-core machine).
const softwareGpu = !NEEDS.gpu.present;

/** The README's Deno snippet (section "### Deno"), importing the compiled package instead of npm:mamba-edge. */
function readmeSnippet(): string {
  const readme = readFileSync('README.md', 'utf8');
  const section = readme.slice(readme.indexOf('\n### Deno\n'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  expect(code, 'README has a ```ts block under ### Deno').toBeDefined();
  expect(code).toContain("from 'npm:mamba-edge'");
  return code!.replace("'npm:mamba-edge'", "'./dist/src/index.js'");
}

function stats(stderr: string) {
  const line = stderr.split('\n').find((l) => l.startsWith('stats '));
  expect(line, stderr).toBeDefined();
  return JSON.parse(line!.slice('stats '.length));
}

describe.skipIf(skip)('Deno', () => {
  for (const backend of ['auto', 'webgpu']) {
    const small = backend === 'webgpu' && softwareGpu;
    const n = small ? 8 : 32;
    it(`examples/deno/main.ts --backend ${backend} streams ${n} bytes with stats${small ? ' (small fixture: software adapter)' : ''}`, () => {
      const prompt = 'Q: What does the fortune say?\nA:';
      // Read access is all the example needs; --allow-env only lets optional MAMBA_EDGE_* settings through.
      const perms = backend === 'auto' ? ['--allow-read'] : ['--allow-read', '--allow-env'];
      const model = small ? ['--model', 'test/fixtures/hf-mamba/tiny-hf-f32'] : [];
      const r = deno(['run', ...perms, 'examples/deno/main.ts', ...model, '--max-tokens', String(n), '--prompt', prompt, '--backend', backend]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.startsWith(prompt)).toBe(true);
      expect(Buffer.byteLength(r.stdout.slice(prompt.length))).toBeGreaterThan(1);
      const s = stats(r.stderr);
      expect(s.generatedTokens).toBe(n);
      expect(s.finishReason).toBe('length');
      expect(s.decodeTokensPerSecond).toBeGreaterThan(0);
      expect(s.timeToFirstTokenMs).toBeGreaterThan(0);
      // An explicit backend either ran or said why it fell back.
      if (backend === 'webgpu' && !s.backend.startsWith('webgpu')) expect(r.stderr).toContain('unavailable');
      // With mesa-vulkan-drivers (as in CI) Deno's wgpu has lavapipe: the WebGPU backend itself must run.
      if (backend === 'webgpu' && NEEDS.lavapipe.present) expect(s.backend, r.stderr).toMatch(/^webgpu/);
      console.log(`deno --backend ${backend}: ${s.backend}, decode ${s.decodeTokensPerSecond.toFixed(0)} tok/s`);
    });
  }

  // Deno stays alive while a Web Worker exists, and a Web Worker there cannot be unref'd: the wasm compute
  // threads are node:worker_threads workers (unref'd) in Deno too, so a program that never disposes still ends.
  it("the README's snippet exits without dispose(), its wasm threads running", () => {
    const code = readmeSnippet();
    const r = deno(['run', '--allow-read', '--allow-env', '--ext=ts', '-'], { input: code.replace('maxTokens: 200', 'maxTokens: 24'), timeoutMs: 60_000 });
    expect(r.signal, `killed after ${r.ms.toFixed(0)} ms: the process did not exit\n${r.stderr}`).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('generatedTokens: 24');
    console.log(`README snippet: exited in ${r.ms.toFixed(0)} ms`);
  });

  it('wasm with 2 threads, never disposed: the process ends once the program does', () => {
    const code = `
      import { loadModel } from './dist/src/index.js';
      const model = await loadModel('test/fixtures/hf-mamba/tiny-hf-f32', { backend: 'wasm', threads: 2 });
      let n = 0, s;
      for await (const c of model.generate('Hello', { maxTokens: 8, temperature: 0 })) { n += c.bytes.length; s = c.stats ?? s; }
      console.log(JSON.stringify({ n, backend: s.backend }));`;
    const r = deno(['run', '--allow-read', '--ext=js', '-'], { input: code, timeoutMs: 60_000 });
    expect(r.signal, `killed after ${r.ms.toFixed(0)} ms: the process did not exit\n${r.stderr}`).toBeNull();
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out).toEqual({ n: 8, backend: expect.stringMatching(/^wasm simd.*, 2 threads, f32$/) });
  });

  it('imports the browser bundle (inlined wasm, blob worker threads)', () => {
    const code = `
      import { loadModel } from './dist/browser/mamba-edge.js';
      const model = await loadModel('test/fixtures/hf-mamba/tiny-hf-f32', { backend: 'wasm', threads: 2 });
      let n = 0, s;
      for await (const c of model.generate('Hello', { maxTokens: 8, temperature: 0 })) { n += c.bytes.length; s = c.stats ?? s; }
      model.dispose();
      console.log(JSON.stringify({ n, backend: s.backend }));`;
    const r = deno(['run', '--allow-read', '--allow-env', '--ext=js', '-'], { input: code });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.n).toBe(8);
    expect(out.backend).toMatch(/^wasm/);
  });
});
