import { loadModel } from './dist/src/index.js';
const dir = process.argv[2] ?? 'test/fixtures/hf-mamba/tiny-hf-f32';
const kern = process.argv[3] === 'fused' ? { fusedDecode: true, gemvLanes: 32 } : undefined;
const t = () => performance.now();
let t0 = t();
const m = await loadModel(dir, { backend: 'webgpu', dtype: 'f32', webgpuKernels: kern });
console.log('load', Math.round(t() - t0), m.backend.description);
const bytes = new TextEncoder().encode('Hello world, this is a prompt of some length for testing.');
for (const n of [5, 5, 40]) { t0 = t(); await m.logits(bytes.subarray(0, n)); console.log('logits', n, Math.round(t() - t0)); }
const b = m.backend; const s = b.createState();
for (let i = 0; i < 6; i++) { t0 = t(); await b.forward(s, bytes.subarray(i, i + 1), 'last'); console.log('step', i, Math.round(t() - t0)); }
for (let i = 0; i < 3; i++) { t0 = t(); await b.decodeGreedy(s, i === 0 ? 65 : null, 8); console.log('greedy8', i, Math.round(t() - t0)); }
m.dispose();
