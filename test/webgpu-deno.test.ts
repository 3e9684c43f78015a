// The WebGPU backend under Deno: navigator.gpu (wgpu) instead of Dawn, over whatever Vulkan driver
// the machine has (Mesa lavapipe in CI, which also exposes shader-f16, so this is where the
// native-f16 kernel variant runs). Runs examples/deno/gpu-check.ts, which checks every fixture.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const deno = `${root}node_modules/.bin/deno`;

describe.skipIf(!existsSync(deno))('webgpu under deno', () => {
  test('gpu-check: f32 within 1e-4·max|logit|, f16 measured', (ctx) => {
    const r = spawnSync(deno, ['run', '-A', '--unstable-sloppy-imports', 'examples/deno/gpu-check.ts'], {
      cwd: root,
      encoding: 'utf8',
      timeout: 300_000,
      env: { ...process.env, NO_COLOR: '1', DENO_NO_UPDATE_CHECK: '1' },
    });
    const lines = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    if (r.status === 2) {
      console.warn(`deno has no WebGPU adapter here: ${String(lines[0]?.unavailable)}`);
      ctx.skip();
    }
    console.log(lines.map((l) => JSON.stringify(l)).join('\n'));
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const l of lines) {
      const tol = l.dtype === 'f32' ? 1e-4 : 3e-3;
      expect(l.prefillRel as number).toBeLessThan(tol);
      expect(l.decodeRel as number).toBeLessThan(tol);
    }
  });
});
