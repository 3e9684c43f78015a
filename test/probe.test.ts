/** The capability probe and the pure `auto` backend choice made from it. */
import { describe, expect, test } from 'vitest';
import { loadModel, parseConfig } from '../src/index.js';
import { chooseBackend, weightFootprint, type SelectedBackend } from '../src/backends.js';
import { probeDevice, type ProbeReport, type WebGPUReport } from '../src/probe.js';
import { loadFixtures } from './helpers/fixtures.js';

const LIMITS = {
  maxStorageBufferBindingSize: 2 ** 30,
  maxBufferSize: 2 ** 31,
  maxComputeWorkgroupSizeX: 1024,
  maxComputeInvocationsPerWorkgroup: 1024,
  maxStorageBuffersPerShaderStage: 10,
};
const GPU: Record<string, WebGPUReport> = {
  none: { available: false, reason: 'no adapter' },
  hardware: {
    available: true,
    source: 'navigator.gpu',
    adapter: { vendor: 'nvidia', architecture: 'hopper', device: '', description: 'NVIDIA H100', isFallbackAdapter: false, software: false },
    features: ['shader-f16', 'subgroups'],
    shaderF16: true,
    subgroups: true,
    limits: LIMITS,
  },
  swiftshader: {
    available: true,
    source: 'dawn (node)',
    adapter: { vendor: 'google', architecture: 'swiftshader', device: '', description: 'SwiftShader driver', isFallbackAdapter: true, software: true },
    features: [],
    shaderF16: false,
    subgroups: false,
    limits: { ...LIMITS, maxBufferSize: 2 ** 30, maxStorageBufferBindingSize: 2 ** 27 },
  },
};
const tinyGpu: WebGPUReport = { ...GPU.hardware, limits: { ...LIMITS, maxBufferSize: 2 ** 10 } };

function report(webgpu: WebGPUReport, simd = true): ProbeReport {
  return {
    runtime: 'browser',
    version: null,
    webgpu,
    wasm: { simd, relaxedSimd: false, threads: true },
    sharedArrayBuffer: true,
    crossOriginIsolated: true,
    logicalCores: 8,
    deviceMemoryBytes: 8 * 2 ** 30,
    probeMs: 1,
  };
}

const config = (hidden: number, layers: number) =>
  parseConfig(JSON.stringify({ model_type: 'mamba', hidden_size: hidden, num_hidden_layers: layers, state_size: 16, vocab_size: 256 }));
const small = config(768, 24); // ~130M parameters: 0.5 GiB in f32
const huge = config(4096, 24); // ~2.5B parameters: 9.4 GiB in f32, 2.5 GiB in q8

describe('chooseBackend', () => {
  test('a hardware GPU wins, with the CPU path as live fallback', () => {
    const s = chooseBackend(report(GPU.hardware), small);
    expect(s.backend).toBe('webgpu');
    expect(s.fallback).toBe('wasm');
    expect(s.reason).toMatch(/hardware WebGPU adapter/);
    expect(s.order).toEqual(['webgpu', 'wasm', 'js']);
  });

  test('a software adapter (SwiftShader, isFallbackAdapter) loses to WASM SIMD', () => {
    const s = chooseBackend(report(GPU.swiftshader), small);
    expect(s.backend).toBe('wasm');
    expect(s.reason).toMatch(/software WebGPU adapter .*slower than WASM SIMD/);
    expect(s.order).toEqual(['wasm', 'js', 'webgpu']);
    const lavapipe: WebGPUReport = { ...GPU.swiftshader, adapter: { ...GPU.swiftshader.adapter!, software: true, isFallbackAdapter: false, description: 'llvmpipe' } };
    expect(chooseBackend(report(lavapipe), small).backend).toBe('wasm');
  });

  test('no WASM SIMD and no GPU: plain JS', () => {
    const s = chooseBackend(report(GPU.none, false), small);
    expect(s).toMatchObject({ backend: 'js', order: ['js'] });
    expect(s.reason).toMatch(/no WASM SIMD/);
    // A software GPU is still ranked after JS (dispatch overhead), but kept as a candidate.
    expect(chooseBackend(report(GPU.swiftshader, false), small).order).toEqual(['js', 'webgpu']);
  });

  test('no GPU: WASM SIMD', () => {
    const s = chooseBackend(report(GPU.none), small);
    expect(s.backend).toBe('wasm');
    expect(s.reason).toMatch(/no WebGPU adapter/);
  });

  test('a model too large for wasm32 goes to the GPU, even a software one', () => {
    expect(weightFootprint(huge, 'f32').total).toBeGreaterThan(4 * 2 ** 30);
    // f16 (4.7 GiB) does not fit wasm32 either; the software adapter holds it in host memory (8 GiB).
    const s = chooseBackend(report(GPU.swiftshader), huge, { dtype: 'f16' });
    expect(s).toMatchObject({ backend: 'webgpu', dtype: 'f16' });
    expect(s.reason).toMatch(/do not fit wasm32/);
    // q8 / q4 weights: a hardware GPU stores them too, and is preferred; a software one still loses to
    // wasm once the q8 weights fit wasm32.
    expect(chooseBackend(report(GPU.hardware), huge, { dtype: 'q8' }).backend).toBe('webgpu');
    expect(chooseBackend(report(GPU.hardware), huge, { dtype: 'q4' }).backend).toBe('webgpu');
    expect(chooseBackend(report(GPU.swiftshader), huge, { dtype: 'q8' }).backend).toBe('wasm');
    // Without a dtype, wasm32 takes the first format that fits it: q8 (2.6 GiB), faster than a software GPU.
    const auto = chooseBackend(report(GPU.swiftshader), huge);
    expect(auto).toMatchObject({ backend: 'wasm', dtype: 'q8' });
    expect(auto.reason).toMatch(/q8 weights \(f32 would not fit\)/);
  });

  test('matrices larger than a GPU binding are split by rows: only a weight row must fit one', () => {
    // 1 MiB buffers: in_proj's [1536, 768] f32 halves (4.5 MiB) are split, the GPU still runs the model.
    const split: WebGPUReport = { ...GPU.hardware, limits: { ...LIMITS, maxBufferSize: 2 ** 20 } };
    expect(chooseBackend(report(split), small)).toMatchObject({ backend: 'webgpu', dtype: 'f32' });
    // A 4 KiB buffer cannot hold an f32 row of E = 1536 (6 KiB), an f16 row (3 KiB) it can.
    const narrow: WebGPUReport = { ...GPU.hardware, limits: { ...LIMITS, maxBufferSize: 2 ** 12 } };
    expect(chooseBackend(report(narrow), small)).toMatchObject({ backend: 'webgpu', dtype: 'f16' });
  });

  test('a model whose weight rows exceed the GPU maxBufferSize goes to the CPU', () => {
    // Without a dtype the GPU takes the first format whose rows fit; none does here: even at q8 / q4 it
    // keeps the embedding in f16, rows of 768 × 2 bytes.
    expect(chooseBackend(report(tinyGpu), small)).toMatchObject({ backend: 'wasm' });
    expect(chooseBackend(report(tinyGpu), small, { dtype: 'q4' }).reason).toMatch(/a q4 weight row \(1536 bytes\) exceeds the GPU's largest binding \(1024 bytes\)/);
    const s = chooseBackend(report(tinyGpu), small, { dtype: 'f32' });
    expect(s.backend).toBe('wasm');
    expect(s.reason).toMatch(/exceeds the GPU's largest binding \(1024 bytes\)/);
    expect(s.order).not.toContain('webgpu');
  });

  test('an explicit backend overrides the choice', () => {
    for (const b of ['js', 'wasm', 'webgpu'] as const) {
      const s = chooseBackend(report(GPU.none, false), small, { backend: b });
      expect(s).toMatchObject({ backend: b, order: [b] });
      expect(s.reason).toMatch(/requested/);
    }
  });
});

describe('probe', () => {
  test('reports WASM features, threads, cores and memory without WebGPU', async () => {
    const r = await probeDevice({ webgpu: false });
    expect(r.runtime).toBe('node');
    expect(r.wasm.simd).toBe(true); // Node 20 has SIMD
    expect(typeof r.wasm.relaxedSimd).toBe('boolean');
    expect(r.wasm.threads).toBe(true);
    expect(r.sharedArrayBuffer).toBe(true);
    expect(r.crossOriginIsolated).toBeNull();
    expect(r.logicalCores).toBeGreaterThan(0);
    expect(r.deviceMemoryBytes).toBeGreaterThan(2 ** 28);
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  test('WebGPU through Dawn (SwiftShader here) is described or explained, within the timeout', async () => {
    const r = await probeDevice({ timeoutMs: 20_000 });
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
    if (!r.webgpu.available) {
      expect(r.webgpu.reason).toBeTruthy();
      return;
    }
    expect(r.webgpu.source).toBe('dawn (node)');
    expect(r.webgpu.limits!.maxBufferSize).toBeGreaterThan(0);
    expect(r.webgpu.limits!.maxComputeInvocationsPerWorkgroup).toBeGreaterThan(0);
    expect(typeof r.webgpu.shaderF16).toBe('boolean');
    expect(typeof r.webgpu.subgroups).toBe('boolean');
    if (/swiftshader/i.test(JSON.stringify(r.webgpu.adapter))) expect(r.webgpu.adapter!.software).toBe(true);
  });
});

test("backend 'auto' records what it picked and why", async () => {
  const fx = loadFixtures()[0];
  const model = await loadModel(fx.dir);
  try {
    const { selection } = model.backend as SelectedBackend;
    expect(selection).toBeDefined();
    expect(selection!.backend).toBe(model.backend.name);
    expect(selection!.reason.length).toBeGreaterThan(5);
  } finally {
    model.dispose();
  }
});
