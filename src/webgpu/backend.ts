import type { Backend } from '../backend.js';
import type { BackendOptions } from '../backends.js';
import type { MambaConfig } from '../config.js';
import { BackendUnavailableError } from '../errors.js';
import type { ModelWeights } from '../weights.js';

// Placeholder until the WGSL kernels land (issue 5).
export async function createWebGPUBackend(_c: MambaConfig, _w: ModelWeights, _o: BackendOptions): Promise<Backend> {
  throw new BackendUnavailableError('webgpu', 'the WebGPU kernels are not built yet');
}
