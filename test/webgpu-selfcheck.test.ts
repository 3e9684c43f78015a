/**
 * The adapter self-check (src/webgpu/selfcheck.ts): it passes on this adapter for the kernel shapes
 * the backend runs, refuses the adapter — naming the path — when one path computes wrong (a hook
 * perturbs what the GPU returned), and `auto` then moves on to wasm.
 */
import { afterEach, describe, expect, test, vi } from 'vitest';
import { BackendUnavailableError } from '../src/errors.js';
import { readModel } from '../src/loader.js';
import { loadModel } from '../src/model.js';
import { createWebGPUBackendWith, WebGPUBackend } from '../src/webgpu/backend.js';
import { acquireDevice } from '../src/webgpu/device.js';
import { selfCheck, selfCheckHooks, selfCheckVerdicts } from '../src/webgpu/selfcheck.js';
import { WebGPUKernels } from '../src/webgpu/kernels.js';
import { loadShaderSources } from '../src/webgpu/wgsl.js';
import { FIXTURE_ROOT } from './helpers/fixtures.js';
import { probeDevice, type ProbeReport } from '../src/probe.js';

// `auto` ranks a hardware GPU first: make the probe report one (and a GPU device node), so the
// real adapter of this machine is tried first and its self-check decides.
const fakeHardware = vi.hoisted(() => ({ on: false }));
vi.mock('../src/probe.js', async (orig) => {
  const real = await orig<typeof import('../src/probe.js')>();
  return {
    ...real,
    probe: async (o?: object): Promise<ProbeReport> => {
      const r = await real.probe(o);
      if (!fakeHardware.on || !r.webgpu.available) return r;
      return { ...r, webgpu: { ...r.webgpu, adapter: { ...r.webgpu.adapter!, software: false } } };
    },
  };
});
vi.mock('node:fs', async (orig) => {
  const real = await orig<typeof import('node:fs')>();
  const readdirSync = ((dir: string, ...rest: unknown[]) =>
    fakeHardware.on && dir === '/dev/dri' ? ['renderD128'] : (real.readdirSync as (...a: unknown[]) => unknown)(dir, ...rest)) as typeof real.readdirSync;
  return { ...real, default: { ...real, readdirSync }, readdirSync };
});

let available = true;
try {
  (await acquireDevice(false)).device.destroy();
} catch (e) {
  if (!(e instanceof BackendUnavailableError)) throw e;
  available = false;
}

const TINY = `${FIXTURE_ROOT}tiny-hf-f32`;
const MAMBA2 = `${FIXTURE_ROOT}../hf-mamba2/mamba2-tiny-f32`;
type Shaders = Awaited<ReturnType<typeof loadShaderSources>>;

afterEach(() => {
  selfCheckHooks.perturb = undefined;
  fakeHardware.on = false;
});

/** A wrong kernel, as seen from outside: `path`'s output changed by 1e-2 of its largest value. */
function breakPath(path: string): void {
  selfCheckHooks.perturb = (p, out) => {
    if (p !== path) return;
    if (out instanceof Uint32Array) out[out.length - 1] ^= 1; // another token
    else out[3] += 1e-2 * Math.max(...out.map(Math.abs));
  };
}

describe.skipIf(!available)('webgpu adapter self-check', () => {
  test.each([
    { kernels: 'default', o: {} },
    { kernels: 'fused', o: { fused: true, gemvLanes: 32 } },
  ])('passes on this adapter, covering every path ($kernels kernels)', async ({ o }) => {
    const { config, weights } = await readModel(TINY);
    const before = selfCheckVerdicts().length;
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32', ...o });
    try {
      const v = selfCheckVerdicts().slice(before);
      expect(v).toHaveLength(1);
      expect(v[0]).toMatchObject({ ok: true, adapter: be.gpu.adapterName });
      expect(v[0].paths).toEqual(['prefill', be.fused ? 'fused decode step' : 'decode step', 'chained greedy decode', 'sampled decode']);
      console.log(`self-check (${o.fused ? 'fused' : 'default'} kernels) on ${v[0].adapter}: ${v[0].ms} ms`);
      // Once per process and shape: a second backend does not check again.
      const again = await createWebGPUBackendWith(config, weights, { dtype: 'f32', ...o });
      again.dispose();
      expect(selfCheckVerdicts().length).toBe(before + 1);
    } finally {
      be.dispose();
    }
  });

  test.each([
    { path: 'prefill', o: {} },
    { path: 'fused decode step', o: { fused: true, gemvLanes: 32 } },
    { path: 'decode step', o: { fused: false } },
    { path: 'chained greedy decode', o: {} },
    { path: 'sampled decode', o: {} },
  ])('refuses the adapter when the $path is wrong, naming that path', async ({ path, o }) => {
    const { config, weights } = await readModel(TINY);
    breakPath(path);
    const err = await createWebGPUBackendWith(config, weights, { dtype: 'f32', ...o }).catch((e) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect(err.message).toContain(`self-check failed: ${path} off by`);
    expect(err.message).toMatch(/\(tolerance 1e-4\) on \S/);
  });

  // Wrong kernels in WGSL itself, through `selfCheck` with edited shader sources.
  async function checkWith(edit: (s: Shaders) => Shaders, o: { gemvLanes: number; fused: boolean; dtype?: 'f32' | 'q8' | 'q4' }, model = TINY) {
    const { config } = await readModel(model);
    const ctx = await acquireDevice(false);
    const shaders = edit(await loadShaderSources());
    const kernels = { dtype: o.dtype ?? 'f32', shaderF16: false, gemvLanes: o.gemvLanes, flatGemm: ctx.software, tokenScan: ctx.software };
    try {
      return await selfCheck(ctx, shaders, { kernels, fused: o.fused, model: config }, (c, w, chunk, f) =>
        new WebGPUBackend(ctx, new WebGPUKernels(ctx.device, shaders, kernels), 'self-check test', c, w, chunk, f),
      ).then((v) => v.paths.join(', '), (e: Error) => e);
    } finally {
      ctx.device.destroy();
    }
  }

  // q8 / q4: the check runs the model's weight format, against the reference on the same quantized
  // values (kernels.ts `storedWeights`). One pass and one refusal (each check compiles its own pipelines).
  test('q4 weights: passes on this adapter, a verdict of its own', async () => {
    const { config, weights } = await readModel(TINY);
    const before = selfCheckVerdicts().length;
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'q4' });
    try {
      const v = selfCheckVerdicts().slice(before);
      expect(v).toHaveLength(1);
      expect(v[0]).toMatchObject({ ok: true, adapter: be.gpu.adapterName });
      expect(v[0].key.split('|')).toContain('q4');
      expect(v[0].paths).toContain(be.fused ? 'fused decode step' : 'decode step');
    } finally {
      be.dispose();
    }
  });

  test('q8 weights whose bytes a kernel reads in the wrong order are refused', async () => {
    const edit = (s: Shaders) => ({ ...s, quant: s.quant.replace('<< vec4<u32>(24u, 16u, 8u, 0u)', '<< vec4<u32>(0u, 8u, 16u, 24u)') });
    expect(edit(await loadShaderSources()).quant).toContain('(0u, 8u, 16u, 24u)) >> vec4<u32>(24u)');
    const r = await checkWith(edit, { gemvLanes: 32, fused: true, dtype: 'q8' });
    expect(r).toBeInstanceOf(BackendUnavailableError);
    expect((r as Error).message).toMatch(/self-check failed: (prefill|fused decode step) off by \S+ \(tolerance 1e-3\)/);
  });

  test("Mamba-2's fused step passes on this adapter, every path checked; a wrong ssd_step is refused", async () => {
    const { config, weights } = await readModel(MAMBA2);
    const before = selfCheckVerdicts().length;
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32', fused: true, gemvLanes: 32 });
    try {
      expect(be.fused).toBe(true);
      const [v] = selfCheckVerdicts().slice(before);
      expect(v).toMatchObject({ ok: true, paths: ['prefill', 'fused decode step', 'chained greedy decode', 'sampled decode'] });
      expect(v.key).toContain('mamba2');
    } finally {
      be.dispose();
    }
    // The state decay left out of the SSD step: valid WGSL, wrong numbers.
    const edit = (s: Shaders) => ({ ...s, step: s.step.replace('let v = decay * hs[j] + delta * x * bn[j];', 'let v = hs[j] + delta * x * bn[j];') });
    expect(edit(await loadShaderSources()).step).toContain('let v = hs[j] + delta');
    const r = await checkWith(edit, { gemvLanes: 32, fused: true }, MAMBA2);
    expect(r).toBeInstanceOf(BackendUnavailableError);
    expect((r as Error).message).toMatch(/self-check failed: fused decode step off by \S+ \(tolerance 1e-4\)/);
  });

  test('a sampler that draws from half the mass is refused on any adapter', async () => {
    const edit = (s: Shaders) => ({ ...s, sample: s.sample.replace('16777216.0 * cum[keep - 1u]', '16777216.0 * 0.5 * cum[keep - 1u]') });
    const r = await checkWith(edit, { gemvLanes: 32, fused: true });
    expect(r).toBeInstanceOf(BackendUnavailableError);
    expect((r as Error).message).toMatch(/self-check failed: sampled decode drew token \d+ where the draw/);
  });

  test("the fault found on OpenGL ES (a workgroup sum's memory reused across a barrier) is refused there", async () => {
    // step.wgsl before the fix: both of scan_step's sums in one region of `red`, a barrier between
    // the last read of one and the first write of the next (valid WGSL, so a correct compiler passes).
    const edit = (s: Shaders) => ({
      ...s,
      step: s.step
        .replace('channel_sum(li, y, 1u)', 'channel_sum(li, y, 0u)')
        .replace('  return red[i - li % NL];', '  let total = red[i - li % NL];\n  workgroupBarrier();\n  return total;'),
    });
    const edited = edit(await loadShaderSources()).step;
    expect(edited).not.toContain('channel_sum(li, y, 1u)'); // scan_step's second sum moved (ssd_step's one sum uses region 0 anyway)
    expect(edited).toContain('let total = red[i - li % NL];');
    const r = await checkWith(edit, { gemvLanes: 32, fused: true });
    const ctx = await acquireDevice(false);
    const gles = /OpenGL ES/.test(ctx.adapterName);
    ctx.device.destroy();
    if (gles) {
      expect(r).toBeInstanceOf(BackendUnavailableError);
      expect((r as Error).message).toMatch(/self-check failed: fused decode step off by \S+ \(tolerance 1e-4\)/);
    } else {
      expect(r).toBe('prefill, fused decode step, chained greedy decode, sampled decode'); // a correct compiler
    }
  });

  test('a sampled token the filters do not allow is refused, naming the path', async () => {
    const { config, weights } = await readModel(TINY);
    breakPath('sampled decode tokens');
    const err = await createWebGPUBackendWith(config, weights, { dtype: 'f32' }).catch((e) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect(err.message).toMatch(/self-check failed: sampled decode (drew token|continued with)/);
  });

  test("an explicit 'webgpu' surfaces the refusal; 'auto' moves on to wasm", async () => {
    breakPath('fused decode step');
    await expect(loadModel(TINY, { backend: 'webgpu', webgpuKernels: { fusedDecode: true, gemvLanes: 32 } })).rejects.toThrow(
      /self-check failed: fused decode step off by/,
    );
    fakeHardware.on = true; // 'auto' now ranks this adapter first
    const m = await loadModel(TINY, { backend: 'auto', webgpuKernels: { fusedDecode: true, gemvLanes: 32 } });
    try {
      expect(m.backend.name).toBe('wasm');
      const sel = (m.backend as { selection?: { order: string[]; reason: string } }).selection!;
      expect(sel.order[0]).toBe('webgpu');
      expect(sel.reason).toMatch(/webgpu unavailable \(.*self-check failed: fused decode step/);
    } finally {
      m.dispose();
    }
  });

  test('probe reports the adapter the backend runs on, and its verdicts', async () => {
    const { config, weights } = await readModel(TINY);
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32' });
    be.dispose();
    const r = await probeDevice({ timeoutMs: 20_000 });
    expect(r.webgpu).toMatchObject({ available: true, source: be.gpu.source });
    const a = r.webgpu.adapter!;
    expect([a.vendor, a.architecture, a.device, a.description].filter((x) => x && x !== '0').join(' ')).toBe(be.gpu.adapterName);
    expect(a.software).toBe(be.gpu.software);
    expect(r.webgpu.selfCheck?.some((v) => v.ok && v.paths.includes('sampled decode'))).toBe(true);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  test('opting out skips the check', async () => {
    const { config, weights } = await readModel(TINY);
    breakPath('prefill');
    const be = await createWebGPUBackendWith(config, weights, { dtype: 'f32', selfCheck: false });
    be.dispose();
  });
});
