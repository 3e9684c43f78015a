import type { Kernels } from '../backend.js';
import type { MambaConfig } from '../config.js';
import { KernelBackend } from '../forward.js';
import type { ModelWeights } from '../weights.js';
import { conv1d } from './conv.js';
import { embed } from './embed.js';
import { matmul } from './matmul.js';
import { gatedNorm, normSegments, rmsnorm } from './norm.js';
import { scan } from './scan.js';
import { ssd } from './ssd.js';

/** The reference kernels: plain float32 arrays, one function per op, executed at once. */
const referenceKernels: Kernels<Float32Array, Float32Array> = {
  upload: (data) => data,
  alloc: (floats) => new Float32Array(floats),
  free: () => {},
  write: (buf, data) => buf.set(data),
  read: async (buf, floats, offset = 0) => buf.slice(offset, offset + floats),
  embed,
  rmsnorm,
  normSegments,
  matmul,
  conv1d,
  scan,
  ssd,
  gatedNorm,
};

/** The readable specification every other backend is tested against. */
export function createReferenceBackend(config: MambaConfig, weights: ModelWeights): KernelBackend<Float32Array, Float32Array> {
  return new KernelBackend('js', 'reference (plain TypeScript, float32)', referenceKernels, config, weights);
}
