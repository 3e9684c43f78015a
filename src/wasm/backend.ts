import type { Backend } from '../backend.js';
import type { BackendOptions } from '../backends.js';
import type { MambaConfig } from '../config.js';
import { BackendUnavailableError } from '../errors.js';
import type { ModelWeights } from '../weights.js';

// Placeholder until the AssemblyScript kernels land (issue 4).
export async function createWasmBackend(_c: MambaConfig, _w: ModelWeights, _o: BackendOptions): Promise<Backend> {
  throw new BackendUnavailableError('wasm', 'the WASM SIMD kernels are not built yet');
}
