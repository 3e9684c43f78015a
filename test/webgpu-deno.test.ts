// The WebGPU backend under Deno: navigator.gpu (wgpu) instead of Dawn, over whatever driver the
// machine has (Mesa lavapipe in CI, which also exposes shader-f16, so this is where the native-f16
// kernel variant runs; without a Vulkan driver, wgpu's GL backend over llvmpipe). Runs
// examples/deno/gpu-check.ts: every fixture, a 91-byte prefill, then 16 decode steps; without a
// hardware GPU two fixtures and 4 steps (a step on lavapipe took 0.2-0.7 s on a loaded 2-core machine).
import { describe, expect, test } from 'vitest';
import { denoRun, NEEDS, requires, skipLine } from './helpers/env.js';

const skip = requires(import.meta.url, NEEDS.deno);
const steps = NEEDS.gpu.present ? 16 : 4;

describe.skipIf(skip)('webgpu under deno', () => {
  test(`gpu-check: f32 within 1e-4·max|logit|, f16 measured (prefill, ${steps} steps)`, (ctx) => {
    // Without a hardware GPU, one fixture of Mamba-1 and one of Mamba-2 (each load checks the adapter
    // and compiles its pipelines: seconds each on llvmpipe or lavapipe); a GPU gets every fixture.
    const fixtures = NEEDS.gpu.present ? [] : ['test/fixtures/hf-mamba/tiny-hf-f32', 'test/fixtures/hf-mamba2/mamba2-tiny-f32'];
    const r = denoRun(['run', '-A', '--unstable-sloppy-imports', 'examples/deno/gpu-check.ts', '--steps', String(steps), '--dtypes', 'f32,f16', ...fixtures], { timeoutMs: 100_000 });
    const lines = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    if (r.code === 2) {
      skipLine(import.meta.url, `Deno has no WebGPU adapter (${String(lines[0]?.unavailable)}): needs ${NEEDS.lavapipe.what} (${NEEDS.lavapipe.install})`, { ci: true });
      return ctx.skip();
    }
    console.log(lines.map((l) => JSON.stringify(l)).join('\n'));
    expect(r.code, r.stderr.slice(-2000)).toBe(0);
    expect(lines.length).toBeGreaterThanOrEqual(4); // 2 fixtures × f32, f16
    for (const l of lines) {
      const tol = l.dtype === 'f32' ? 1e-4 : 3e-3;
      expect(l.prefillRel as number).toBeLessThan(tol);
      expect(l.decodeRel as number).toBeLessThan(tol);
    }
    // lavapipe offers shader-f16: the native-f16 kernels are the ones checked there.
    if (NEEDS.lavapipe.present) expect(lines.filter((l) => l.dtype === 'f16').map((l) => l.backend)).toEqual(expect.arrayContaining([expect.stringContaining('shader-f16')]));
  });
});
