// README: no references a reader cannot follow, commands that run here, and the documented types.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { loadModel, loadModelInWorker } from '../src/index.js';

const README = readFileSync('README.md', 'utf8');

describe('README', () => {
  it('points only to files that ship and to no issue numbers', () => {
    expect(README).not.toMatch(/PLATFORM\.md/);
    expect(README).not.toMatch(/\bissue #?\d+/i);
    // Every repository path it names in backticks exists (URLs, globs and placeholders aside).
    const paths = [...README.matchAll(/`((?:src|bench|examples|models|scripts|shaders|workers|test|training|assembly)\/[\w./-]*)`/g)].map((m) => m[1]);
    expect(paths.length).toBeGreaterThan(20);
    const missing = paths.filter((p) => !p.includes('*') && !existsSync(p.replace(/\/$/, '')));
    expect(missing).toEqual([]);
  });

  it('runs Deno as `npx deno` (deno is a dev dependency, not on PATH)', () => {
    const calls = [...README.matchAll(/(\S*)\s+deno run\b/g)].map((m) => m[1]);
    expect(calls.length).toBeGreaterThan(2);
    expect(calls.filter((c) => !c.endsWith('npx'))).toEqual([]);
  });

  it('says WebGPU stores q8 and q4, and a dtype no backend stores is a typed error', async () => {
    expect(README).toMatch(/WebGPU stores\s+all four/);
    expect(README).not.toMatch(/q8 is CPU-only/);
    await expect(loadModel('test/fixtures/hf-mamba/tiny-hf-f32', { backend: 'webgpu', dtype: 'q3' as never })).rejects.toMatchObject({ name: 'InvalidOptionError' });
  });

  it('workerModel.backendReason is the selection reason, a string', async () => {
    expect(README).toContain('`backendReason`, that `reason` as a `string`');
    const model = await loadModelInWorker('test/fixtures/hf-mamba/tiny-hf-f32', { backend: 'js' });
    try {
      expectTypeOf(model.backendReason).toEqualTypeOf<string>();
      expect(model.backendReason).toBe("requested backend 'js'");
      expect(model.backendReason).toBe(model.backend.selection?.reason);
    } finally {
      model.dispose();
    }
    const local = await loadModel('test/fixtures/hf-mamba/tiny-hf-f32', { backend: 'js' });
    expectTypeOf(local.backend.selection?.reason).toEqualTypeOf<string | undefined>();
    expect(local.backend.selection?.reason).toBe("requested backend 'js'");
    local.dispose();
  });
});
