import type { Backend, BackendName } from './backend.js';
import type { MambaConfig } from './config.js';
import { parameterCount } from './config.js';
import { BackendUnavailableError, InvalidOptionError } from './errors.js';
import type { ProbeReport } from './probe.js';
import { createReferenceBackend } from './reference/backend.js';
import type { ModelWeights } from './weights.js';

export type BackendChoice = 'auto' | BackendName;
export type WeightDtype = 'f32' | 'f16' | 'q8' | 'q4';

export interface BackendOptions {
  /** Which compute backend; 'auto' probes the device and picks the fastest. Default 'auto'. */
  backend?: BackendChoice;
  /** Storage format of weights on the backend. Default 'f32'. */
  dtype?: WeightDtype;
  /** CPU worker threads for the wasm backend. Default: available cores. */
  threads?: number;
  /**
   * WebGPU kernel shapes, for tests and tuning; the defaults follow the adapter. `fusedDecode`: the
   * decode step's fused kernels (shaders/step.wgsl; default on hardware GPUs, off on software
   * adapters, where they are slower); `gemvLanes`: invocations per GEMV row (32 and up on GPUs, 1 on
   * software adapters). `selfCheck: false` skips the adapter self-check (src/webgpu/selfcheck.ts), for
   * tests and tuning only: it is what keeps an adapter that computes wrong from producing garbage.
   */
  webgpuKernels?: { fusedDecode?: boolean; gemvLanes?: number; selfCheck?: boolean };
}

const BACKENDS: BackendChoice[] = ['auto', 'js', 'wasm', 'webgpu'];
const DTYPES: WeightDtype[] = ['f32', 'f16', 'q8', 'q4'];

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
  const g = o.webgpuKernels;
  if (g !== undefined) {
    if (typeof g !== 'object' || g === null) throw new InvalidOptionError('webgpuKernels', 'must be an object');
    if (g.fusedDecode !== undefined && typeof g.fusedDecode !== 'boolean') {
      throw new InvalidOptionError('webgpuKernels', `fusedDecode must be a boolean, got ${JSON.stringify(g.fusedDecode)}`);
    }
    if (g.selfCheck !== undefined && typeof g.selfCheck !== 'boolean') {
      throw new InvalidOptionError('webgpuKernels', `selfCheck must be a boolean, got ${JSON.stringify(g.selfCheck)}`);
    }
    const l = g.gemvLanes;
    if (l !== undefined && !(Number.isInteger(l) && l >= 1 && l <= 256 && (l & (l - 1)) === 0)) {
      throw new InvalidOptionError('webgpuKernels', `gemvLanes must be a power of two in [1, 256], got ${l}`);
    }
  }
}

/** Why a backend was picked: `backend.selection` on a `Model` and a `WorkerModel` (`workerModel.backendReason` is its `reason`). */
export interface BackendSelection {
  /** The backend that runs the model. */
  backend: BackendName;
  /** One sentence: why this one, e.g. "software WebGPU adapter (SwiftShader) is slower than WASM SIMD". */
  reason: string;
  /** Candidates in order of preference; 'auto' falls through this list when one turns out unavailable. */
  order: BackendName[];
  /** The CPU backend that takes over if the GPU is lost mid-generation (webgpu picks only). */
  fallback?: BackendName;
}

/** wasm32 addresses 4 GiB; keep room for activations, states and the allocator. */
export const WASM_MEMORY_BUDGET = 3.5 * 2 ** 30;

const BYTES_PER_WEIGHT: Record<WeightDtype, number> = { f32: 4, f16: 2, q8: 1.0625, q4: 0.5625 }; // q8: 1 byte + a f32 scale per 64; q4: 16 bytes + an f16 scale per 32

/** Bytes the weights take in `dtype`, and the largest single tensor (what one GPU buffer must hold). */
export function weightFootprint(c: MambaConfig, dtype: WeightDtype): { total: number; largestTensor: number } {
  const b = BYTES_PER_WEIGHT[dtype];
  const { dModel: D, dInner: E, dState: N, dtRank: R, vocabSize: V } = c;
  const largest = Math.max(V * D, 2 * E * D, D * E, (R + 2 * N) * E, E * R, E * N);
  return { total: parameterCount(c) * b, largestTensor: largest * b };
}

/**
 * The pure decision behind `backend: 'auto'`: which backend should be fastest for this model on
 * this device, and why. An explicit `backend` wins. Otherwise, in order:
 *  - a hardware GPU (WebGPU adapter that is not software) when the model fits its buffers and the
 *    dtype is one the GPU stores (f32/f16);
 *  - WASM SIMD when the weights fit wasm32's 4 GiB (a software adapter — SwiftShader, lavapipe,
 *    llvmpipe, `isFallbackAdapter` — is ~10x slower than WASM SIMD, so it loses here);
 *  - the plain-JS reference (f32 only) as the last CPU resort;
 *  - a software GPU only after that (per-dispatch overhead makes it slower than JS on small models),
 *    or first when the model is too big for wasm32 but fits the GPU.
 */
export function chooseBackend(report: ProbeReport, config: MambaConfig, options: BackendOptions = {}): BackendSelection {
  const dtype = options.dtype ?? 'f32';
  const cpuFallback: BackendName = report.wasm.simd ? 'wasm' : 'js';
  if (options.backend && options.backend !== 'auto') {
    const b = options.backend;
    return { backend: b, reason: `requested backend '${b}'`, order: [b], fallback: b === 'webgpu' ? cpuFallback : undefined };
  }
  const size = weightFootprint(config, dtype);
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  const gpu = report.webgpu;
  // Some runtimes report the vendor as a PCI id number: leave those out of the sentence.
  const adapterName = gpu.adapter
    ? [gpu.adapter.vendor, gpu.adapter.architecture, gpu.adapter.description].filter((p) => p && !/^(0x)?[0-9a-f]+$/i.test(p)).join(' ') || 'unnamed adapter'
    : '';

  // Why each path can or cannot run this model; '' = it can.
  const gpuMaxBuffer = gpu.limits?.maxBufferSize ?? 0;
  const noGpu = !gpu.available
    ? `no WebGPU adapter (${gpu.reason ?? 'unavailable'})`
    : dtype === 'q8' || dtype === 'q4'
      ? `the webgpu backend stores f32/f16 weights, not ${dtype}`
      : size.largestTensor > gpuMaxBuffer
        ? `its largest tensor (${gib(size.largestTensor)}) exceeds the GPU's maxBufferSize (${gib(gpuMaxBuffer)})`
        : '';
  const noWasm = !report.wasm.simd
    ? 'no WASM SIMD'
    : size.total > WASM_MEMORY_BUDGET
      ? `${dtype} weights (${gib(size.total)}) do not fit wasm32's 4 GiB memory`
      : '';
  const noJs = dtype !== 'f32' ? `the js reference computes f32 only (dtype ${dtype})` : size.total > WASM_MEMORY_BUDGET * 4 ? 'too large for host arrays' : '';
  const software = !!gpu.adapter?.software;

  const order: BackendName[] = [];
  let reason: string;
  if (!noGpu && !software) {
    order.push('webgpu');
    reason = `hardware WebGPU adapter (${adapterName})`;
  } else if (!noGpu && software && noWasm && size.total > WASM_MEMORY_BUDGET) {
    order.push('webgpu');
    reason = `${noWasm}; the software WebGPU adapter (${adapterName}) can hold it`;
  } else if (!noWasm) {
    reason = noGpu ? `WASM SIMD (${noGpu})` : `software WebGPU adapter (${adapterName}) is slower than WASM SIMD`;
  } else {
    reason = `plain JS: ${noWasm}${noGpu ? `; ${noGpu}` : software ? '; a software WebGPU adapter has too much overhead' : ''}`;
  }
  if (!noWasm) order.push('wasm');
  if (!noJs || order.length === 0) order.push('js');
  if (!noGpu && !order.includes('webgpu')) order.push('webgpu');
  return { backend: order[0], reason, order, fallback: order[0] === 'webgpu' ? cpuFallback : undefined };
}

/** `backend.selection`, set on backends made by `createBackend`. */
export type SelectedBackend = Backend & { readonly selection?: BackendSelection };

/** Creates the requested backend; 'auto' probes the device, ranks the candidates and takes the first that starts. */
export async function createBackend(config: MambaConfig, weights: ModelWeights, o: BackendOptions): Promise<SelectedBackend> {
  checkBackendOptions(o);
  const choice = o.backend ?? 'auto';
  if (choice !== 'auto') {
    const backend = await createNamed(choice, config, weights, o);
    return withSelection(backend, { backend: choice, reason: `requested backend '${choice}'`, order: [choice] });
  }
  const { probe } = await import('./probe.js');
  const gpu = await gpuDeviceNodes();
  let report = await probe(gpu === false ? { webgpu: false } : {});
  if (gpu === false) {
    report = { ...report, webgpu: { available: false, reason: 'no GPU device node (/dev/dri/renderD*, /dev/nvidia*): only a software adapter could answer' } };
  }
  const selection = chooseBackend(report, config, o);
  const skipped: string[] = [];
  for (const name of selection.order) {
    try {
      // The js reference ignores dtype in auto mode (it always computes f32).
      let backend: Backend = await createNamed(name, config, weights, name === 'js' ? { ...o, dtype: 'f32' } : o);
      if (name === 'webgpu') {
        // Keep generating on the CPU if the GPU is lost mid-run (see fallback.ts).
        const cpu = selection.order.find((b) => b !== 'webgpu') ?? 'js';
        const { FallbackBackend } = await import('./fallback.js');
        backend = new FallbackBackend(backend, () => createNamed(cpu, config, weights, cpu === 'js' ? { ...o, dtype: 'f32' } : o));
        selection.fallback = cpu;
      }
      const reason = skipped.length ? `${selection.reason}; ${skipped.join('; ')}` : selection.reason;
      return withSelection(backend, { ...selection, backend: name, reason });
    } catch (e) {
      if (!(e instanceof BackendUnavailableError)) throw e;
      skipped.push(`${name} unavailable (${e.message})`);
    }
  }
  throw new BackendUnavailableError('auto', skipped.join('; '));
}

async function createNamed(name: BackendName, config: MambaConfig, weights: ModelWeights, o: BackendOptions): Promise<Backend> {
  if (name === 'js') {
    if (o.dtype && o.dtype !== 'f32') throw new InvalidOptionError('dtype', `the js reference backend computes in f32 only, got ${o.dtype}`);
    return createReferenceBackend(config, weights);
  }
  if (name === 'wasm') return (await import('./wasm/backend.js')).createWasmBackend(config, weights, o);
  return (await import('./webgpu/backend.js')).createWebGPUBackend(config, weights, o);
}

function withSelection(backend: Backend, selection: BackendSelection): SelectedBackend {
  Object.defineProperty(backend, 'selection', { value: selection, enumerable: false, configurable: true });
  return backend;
}

/**
 * On Linux, whether any GPU device node exists (true/false); undefined elsewhere (unknown).
 * Without one, WebGPU can only offer a software adapter, which 'auto' never prefers, so the probe
 * skips loading Dawn/Vulkan: faster, and no driver chatter on stderr for a CPU-only machine.
 */
export async function gpuDeviceNodes(): Promise<boolean | undefined> {
  const g = globalThis as { process?: { platform?: string }; Deno?: { build?: { os?: string } } };
  const linux = g.Deno?.build?.os === 'linux' || (!g.Deno && g.process?.platform === 'linux');
  if (!linux) return undefined;
  try {
    const fs = await import('node:fs');
    const has = (dir: string, re: RegExp) => {
      try {
        return fs.readdirSync(dir).some((f) => re.test(f));
      } catch {
        return false;
      }
    };
    return has('/dev/dri', /^renderD\d+$/) || has('/dev', /^(nvidia\d+|dxg|kgsl-3d0|mali\d*)$/);
  } catch {
    return undefined;
  }
}
