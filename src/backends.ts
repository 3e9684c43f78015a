import type { Backend, BackendName } from './backend.js';
import type { MambaConfig } from './config.js';
import { BackendUnavailableError, InvalidOptionError } from './errors.js';
import { createReferenceBackend } from './reference/backend.js';
import type { ModelWeights } from './weights.js';

export type BackendChoice = 'auto' | BackendName;
export type WeightDtype = 'f32' | 'f16' | 'q8';

export interface BackendOptions {
  /** Which compute backend; 'auto' probes the device and picks the fastest. Default 'auto'. */
  backend?: BackendChoice;
  /** Storage format of weights on the backend. Default 'f32'. */
  dtype?: WeightDtype;
  /** CPU worker threads for the wasm backend. Default: available cores. */
  threads?: number;
}

const BACKENDS: BackendChoice[] = ['auto', 'js', 'wasm', 'webgpu'];
const DTYPES: WeightDtype[] = ['f32', 'f16', 'q8'];

export function checkBackendOptions(o: BackendOptions): void {
  if (o.backend !== undefined && !BACKENDS.includes(o.backend)) {
    throw new InvalidOptionError('backend', `must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(o.backend)}`);
  }
  if (o.dtype !== undefined && !DTYPES.includes(o.dtype)) {
    throw new InvalidOptionError('dtype', `must be one of ${DTYPES.join(', ')}, got ${JSON.stringify(o.dtype)}`);
  }
  if (o.threads !== undefined && (!Number.isInteger(o.threads) || o.threads < 1 || o.threads > 256)) {
    throw new InvalidOptionError('threads', `must be an integer in [1, 256], got ${o.threads}`);
  }
}

/** Creates the requested backend; 'auto' tries the faster ones first and falls back to the reference. */
export async function createBackend(config: MambaConfig, weights: ModelWeights, o: BackendOptions): Promise<Backend> {
  checkBackendOptions(o);
  const choice = o.backend ?? 'auto';
  if (choice === 'js') {
    if (o.dtype && o.dtype !== 'f32') throw new InvalidOptionError('dtype', `the js reference backend computes in f32 only, got ${o.dtype}`);
    return createReferenceBackend(config, weights);
  }
  if (choice === 'wasm') return (await import('./wasm/backend.js')).createWasmBackend(config, weights, o);
  if (choice === 'webgpu') return (await import('./webgpu/backend.js')).createWebGPUBackend(config, weights, o);
  try {
    return (await import('./wasm/backend.js')).createWasmBackend(config, weights, o);
  } catch (e) {
    if (!(e instanceof BackendUnavailableError)) throw e;
    return createReferenceBackend(config, weights);
  }
}
