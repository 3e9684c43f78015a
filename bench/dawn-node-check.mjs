#!/usr/bin/env node
// Does Dawn in Node (the `webgpu` package) work on this machine, and where does it stop if not?
// Each stage is marked on stderr synchronously, so an abort shows the last stage reached.
//
//   [DAWN_FLAGS=backend=vulkan] [RUN_MODEL=1] node bench/dawn-node-check.mjs
//
// On the H100 host (Node 20.20.2, webgpu 0.6.2, Debian's libvulkan1 carried, VK_DRIVER_FILES set to
// the NVIDIA ICD) every stage passed, with and without backend=vulkan.
import { writeSync } from 'node:fs';
const mark = (s) => writeSync(2, `[diag ${new Date().toISOString().slice(11, 23)}] ${s}\n`);
const flags = (process.env.DAWN_FLAGS ?? '').split(',').filter(Boolean);
mark(`import webgpu, flags ${JSON.stringify(flags)}`);
const { create, globals } = await import('webgpu');
Object.assign(globalThis, globals);
const gpu = create(flags);
mark('create ok; requestAdapter');
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
mark(`adapter: ${adapter ? JSON.stringify(adapter.info) : 'null'}`);
if (!adapter) process.exit(3);
const device = await adapter.requestDevice();
mark('device ok; compute');
const buf = device.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const out = device.createBuffer({ size: 1024, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const mod = device.createShaderModule({ code: '@group(0) @binding(0) var<storage, read_write> b: array<u32>; @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) { b[g.x] = g.x * 3u; }' });
const pipe = device.createComputePipeline({ layout: 'auto', compute: { module: mod, entryPoint: 'main' } });
const bg = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] });
const enc = device.createCommandEncoder();
const pass = enc.beginComputePass();
pass.setPipeline(pipe); pass.setBindGroup(0, bg); pass.dispatchWorkgroups(4); pass.end();
enc.copyBufferToBuffer(buf, 0, out, 0, 1024);
device.queue.submit([enc.finish()]);
await out.mapAsync(GPUMapMode.READ);
mark(`read back: ${new Uint32Array(out.getMappedRange()).slice(0, 4).join(',')}`);
out.unmap();
if (process.env.RUN_MODEL) {
  const { loadModel } = await import(new URL('../dist/src/index.js', import.meta.url).href);
  const m = await loadModel(new URL('../test/fixtures/hf-mamba/tiny-hf-f32/', import.meta.url).pathname, { backend: 'webgpu' });
  mark(`model: ${m.backend.description}`);
  const t0 = performance.now();
  let n = 0; for await (const c of m.generate('Hello', { temperature: 0, maxTokens: 32 })) n += c.bytes.length;
  mark(`generated ${n} bytes in ${(performance.now() - t0).toFixed(0)} ms`);
  m.dispose();
}
device.destroy();
mark('device destroyed; exiting');
