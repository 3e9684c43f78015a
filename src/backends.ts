import type { Backend, BackendName } from './backend.js';
import type { MambaConfig } from './config.js';
import { convChannels, parameterCount } from './config.js';
import { BackendUnavailableError, InvalidOptionError, OutOfMemoryError } from './errors.js';
import type { ProbeReport } from './probe.js';
import { QBLOCK } from './quant.js';
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
   * `maxBindingBytes`: the most bytes one weight buffer may bind (default: the device's
   * `maxStorageBufferBindingSize`, itself raised to the adapter's limit); larger matrices — the
   * embedding / LM head above all — are split by rows across buffers. Lower it to test the split.
   */
  webgpuKernels?: { fusedDecode?: boolean; gemvLanes?: number; selfCheck?: boolean; maxBindingBytes?: number };
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
    const m = g.maxBindingBytes;
    if (m !== undefined && !(Number.isInteger(m) && m >= 256)) {
      throw new InvalidOptionError('webgpuKernels', `maxBindingBytes must be an integer of at least 256 bytes, got ${m}`);
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
  /** The weight format the backend stores (the requested `dtype`, or the first that fits). */
  dtype: WeightDtype;
  /** Each candidate's weight format. */
  dtypes?: Partial<Record<BackendName, WeightDtype>>;
}

/** wasm32 addresses 4 GiB; keep room for activations, states and the allocator. */
export const WASM_MEMORY_BUDGET = 3.5 * 2 ** 30;

/** What the js reference may hold in host arrays (float32 weights). */
export const JS_MEMORY_BUDGET = 4 * WASM_MEMORY_BUDGET;

/**
 * Bytes per weight of each storage format, per block of QBLOCK = 32: q8 one int8 each plus a float32
 * scale; q4 half a byte each plus an f16 scale.
 */
export const BYTES_PER_WEIGHT: Record<WeightDtype, number> = { f32: 4, f16: 2, q8: 1 + 4 / QBLOCK, q4: 0.5 + 2 / QBLOCK };

/**
 * Weight formats the webgpu backend stores. The one place that says so: planning (`chooseBackend`,
 * `planBackend`) and the backend's own option check read it; quantized GPU kernels add theirs here.
 */
export const GPU_DTYPES: WeightDtype[] = ['f32', 'f16', 'q8', 'q4'];

/** Each backend's weight formats, in the order an unset `dtype` tries them (most exact first). */
export function backendDtypes(name: BackendName): readonly WeightDtype[] {
  return name === 'js' ? ['f32'] : name === 'wasm' ? DTYPES : GPU_DTYPES;
}

/**
 * Bytes the weights take in `dtype` on `backend`, and the largest single tensor (what one GPU buffer
 * must hold). Only the projection matrices and the vocabulary tables take `dtype`; vectors and the
 * small per-channel tensors (conv, A, dt_proj) stay f32 on every backend, and the webgpu backend keeps a
 * q8 / q4 model's embedding and head in f16 (its gather and sampler read halves).
 */
export function weightFootprint(c: MambaConfig, dtype: WeightDtype, backend?: BackendName): { total: number; largestTensor: number; largestRow: number } {
  const b = BYTES_PER_WEIGHT[dtype];
  const { dModel: D, dInner: E, dState: N, dtRank: R, vocabSize: V, nLayer: L } = c;
  const vocabTables = (c.tiedEmbeddings ? 1 : 2) * V * D; // embedding, and the head when untied
  const tableBytes = backend === 'webgpu' && (dtype === 'q8' || dtype === 'q4') ? 2 : b;
  // in_proj, out_proj (and Mamba-1's x_proj) per layer: the matrices whose rows are D or E long.
  const projections = L * (c.mamba2 ? (E + convChannels(c) + c.mamba2.nHeads) * D + D * E : 2 * E * D + (R + 2 * N) * E + D * E);
  const rest = parameterCount(c) - vocabTables - projections;
  const total = projections * b + vocabTables * tableBytes + rest * 4;
  const largest = Math.max(V * D * tableBytes, 2 * E * D * b, D * E * b, (R + 2 * N) * E * b, E * R * 4, E * N * 4);
  // The webgpu backend splits a matrix by rows across bindings: only a row must fit one (rows of D or E).
  return { total, largestTensor: largest, largestRow: Math.max(D * tableBytes, Math.max(D, E) * b) };
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/**
 * Why `name` cannot hold this model's weights in `dtype` ('' = it can), from the config alone: wasm32's
 * 4 GiB; for WebGPU (given a probe report) a weight row must fit one binding (matrices are split by
 * rows across bindings) and, on a software adapter, the weights must fit host memory (its buffers live
 * there). WebGPU reports no memory size for a hardware GPU: there, a model too large fails when its
 * buffers are created, with `OutOfMemoryError`.
 */
export function cannotHold(name: BackendName, c: MambaConfig, dtype: WeightDtype, report?: ProbeReport): string {
  const size = weightFootprint(c, dtype, name);
  if (!backendDtypes(name).includes(dtype)) return `the ${name} backend stores ${backendDtypes(name).join('/')} weights, not ${dtype}`;
  if (name === 'js') return size.total > JS_MEMORY_BUDGET ? `float32 weights (${gib(size.total)}) are too large for host arrays` : '';
  if (name === 'wasm') return size.total > WASM_MEMORY_BUDGET ? `${dtype} weights (${gib(size.total)}) do not fit wasm32's 4 GiB memory` : '';
  const gpu = report?.webgpu;
  if (!gpu?.limits) return '';
  const binding = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  if (size.largestRow > binding) return `a ${dtype} weight row (${size.largestRow} bytes) exceeds the GPU's largest binding (${binding} bytes)`;
  const host = gpu.adapter?.software ? report?.deviceMemoryBytes : null;
  if (host && size.total > host) return `${dtype} weights (${gib(size.total)}) exceed the software adapter's host memory (${gib(host)})`;
  return '';
}

/** The weight format a backend takes when `dtype` is not given: the first of its formats it can hold. */
export function defaultDtype(name: BackendName, c: MambaConfig): WeightDtype | undefined {
  return fitDtype(name, c, undefined).dtype;
}

/**
 * For one backend: the first of its weight formats (or the requested one) that it can hold, or why
 * none fits.
 */
function fitDtype(name: BackendName, c: MambaConfig, dtype: WeightDtype | undefined, report?: ProbeReport): { dtype?: WeightDtype; why: string } {
  const tried: string[] = [];
  for (const d of dtype ? [dtype] : backendDtypes(name)) {
    const why = cannotHold(name, c, d, report);
    if (!why) return { dtype: d, why: '' };
    tried.push(why);
  }
  return { why: tried.join(', ') };
}

/**
 * The pure decision behind `backend: 'auto'`: which backend should be fastest for this model on
 * this device, with which weight format, and why. An explicit `backend` wins. Otherwise, in order:
 *  - a hardware GPU (WebGPU adapter that is not software) when the model fits its bindings in a
 *    format the GPU stores (`GPU_DTYPES`);
 *  - WASM SIMD when the weights fit wasm32's 4 GiB (a software adapter — SwiftShader, lavapipe,
 *    llvmpipe, `isFallbackAdapter` — is ~10x slower than WASM SIMD, so it loses here);
 *  - the plain-JS reference (f32 only) as the last CPU resort;
 *  - a software GPU only after that (per-dispatch overhead makes it slower than JS on small models),
 *    or first when the model is too big for wasm32 but fits the GPU.
 * Without a `dtype`, each backend takes the first of its formats (f32, f16, q8, q4) that it can hold, so
 * a 1.4b model runs f16 and a 2.8b model q8 on wasm32. A model that no backend can hold is refused
 * with `OutOfMemoryError`, from the config alone.
 */
export function chooseBackend(report: ProbeReport, config: MambaConfig, options: BackendOptions = {}): BackendSelection {
  const cpuFallback: BackendName = report.wasm.simd ? 'wasm' : 'js';
  if (options.backend && options.backend !== 'auto') {
    const b = options.backend;
    return { ...explicitPlan(b, config, options, report), fallback: b === 'webgpu' ? cpuFallback : undefined };
  }
  const gpu = report.webgpu;
  // Some runtimes report the vendor as a PCI id number: leave those out of the sentence.
  const adapterName = gpu.adapter
    ? [gpu.adapter.vendor, gpu.adapter.architecture, gpu.adapter.description].filter((p) => p && !/^(0x)?[0-9a-f]+$/i.test(p)).join(' ') || 'unnamed adapter'
    : '';

  // Why each path can or cannot run this model; '' = it can.
  const gpuFit = gpu.available ? fitDtype('webgpu', config, options.dtype, report) : { why: `no WebGPU adapter (${gpu.reason ?? 'unavailable'})` };
  const wasmFit = report.wasm.simd ? fitDtype('wasm', config, options.dtype, report) : { why: 'no WASM SIMD' };
  // The js reference ignores dtype in auto mode (it always computes f32).
  const jsFit = fitDtype('js', config, 'f32', report);
  const noGpu = gpuFit.why;
  const noWasm = wasmFit.why;
  const noJs = options.dtype !== undefined && options.dtype !== 'f32' ? `the js reference computes f32 only (dtype ${options.dtype})` : jsFit.why;
  const software = !!gpu.adapter?.software;
  const wasmTooSmall = report.wasm.simd && !!noWasm;

  const order: BackendName[] = [];
  let reason: string;
  if (!noGpu && !software) {
    order.push('webgpu');
    reason = `hardware WebGPU adapter (${adapterName})`;
  } else if (!noGpu && software && wasmTooSmall) {
    order.push('webgpu');
    reason = `${noWasm}; the software WebGPU adapter (${adapterName}) can hold it`;
  } else if (!noWasm) {
    reason = noGpu ? `WASM SIMD (${noGpu})` : `software WebGPU adapter (${adapterName}) is slower than WASM SIMD`;
  } else {
    reason = `plain JS: ${noWasm}${noGpu ? `; ${noGpu}` : software ? '; a software WebGPU adapter has too much overhead' : ''}`;
  }
  if (!noWasm) order.push('wasm');
  if (!noJs || (order.length === 0 && !jsFit.why)) order.push('js');
  if (!noGpu && !order.includes('webgpu')) order.push('webgpu');
  if (order.length === 0) {
    throw new OutOfMemoryError(
      `no backend can hold this model (${parameterCount(config)} parameters): webgpu: ${noGpu}; wasm: ${noWasm}; js: ${jsFit.why || noJs}`,
    );
  }
  const dtypes: Partial<Record<BackendName, WeightDtype>> = { webgpu: gpuFit.dtype, wasm: wasmFit.dtype, js: 'f32' };
  for (const b of ['webgpu', 'wasm', 'js'] as const) if (!order.includes(b)) delete dtypes[b];
  if (order[0] !== 'js' && dtypes[order[0]] !== (options.dtype ?? 'f32')) reason += `; ${dtypes[order[0]]} weights (f32 would not fit)`;
  return { backend: order[0], reason, order, dtype: dtypes[order[0]]!, dtypes, fallback: order[0] === 'webgpu' ? cpuFallback : undefined };
}

/** An explicit backend's plan: the requested dtype, or the first it can hold; `OutOfMemoryError` if it cannot. */
function explicitPlan(b: BackendName, config: MambaConfig, o: BackendOptions, report?: ProbeReport): BackendSelection {
  const base = { backend: b, reason: `requested backend '${b}'`, order: [b] };
  // A format the backend does not store at all is an option error, raised where the backend is created.
  if (o.dtype && !backendDtypes(b).includes(o.dtype)) return { ...base, dtype: o.dtype, dtypes: { [b]: o.dtype } };
  const fit = fitDtype(b, config, o.dtype, report);
  if (!fit.dtype) {
    const other = o.dtype ? backendDtypes(b).find((d) => !cannotHold(b, config, d, report)) : undefined;
    throw new OutOfMemoryError(`the ${b} backend cannot hold this model (${parameterCount(config)} parameters): ${fit.why}${other ? ` (dtype '${other}' would fit)` : ''}`);
  }
  return { ...base, dtype: fit.dtype, dtypes: { [b]: fit.dtype } };
}

/**
 * Which backend(s) and weight format will run this model, decided from its config alone (probing the
 * device for 'auto'): what `loadModel` settles before any weight is read, so that a model no backend
 * can hold is refused with `OutOfMemoryError` before it is downloaded or allocated.
 */
export async function planBackend(config: MambaConfig, o: BackendOptions = {}): Promise<BackendSelection> {
  checkBackendOptions(o);
  const choice = o.backend ?? 'auto';
  if (choice !== 'auto') return explicitPlan(choice, config, o);
  return chooseBackend(await autoProbe(), config, o);
}

/** The probe behind 'auto' (cached by probe.ts; without a GPU device node, WebGPU is not even tried). */
async function autoProbe(): Promise<ProbeReport> {
  const { probe } = await import('./probe.js');
  const gpu = await gpuDeviceNodes();
  const report = await probe(gpu === false ? { webgpu: false } : {});
  if (gpu !== false) return report;
  return { ...report, webgpu: { available: false, reason: 'no GPU device node (/dev/dri/renderD*, /dev/nvidia*): only a software adapter could answer' } };
}

/** `backend.selection`, set on backends made by `createBackend`. */
export type SelectedBackend = Backend & { readonly selection?: BackendSelection };

/**
 * Creates the requested backend; 'auto' probes the device, ranks the candidates and takes the first that
 * starts. `plan` is `planBackend`'s answer when the caller already has it (loadModel settles it before
 * reading the weights).
 */
export async function createBackend(config: MambaConfig, weights: ModelWeights, o: BackendOptions, plan?: BackendSelection): Promise<SelectedBackend> {
  checkBackendOptions(o);
  const selection = plan ?? (await planBackend(config, o));
  const choice = o.backend ?? 'auto';
  if (choice !== 'auto') {
    const backend = await createNamed(choice, config, weights, { ...o, dtype: selection.dtype });
    return withSelection(backend, { backend: choice, reason: selection.reason, order: [choice], dtype: selection.dtype, dtypes: selection.dtypes });
  }
  const skipped: string[] = [];
  const optionsFor = (name: BackendName): BackendOptions => ({ ...o, dtype: selection.dtypes?.[name] ?? (name === 'js' ? 'f32' : o.dtype) });
  for (const name of selection.order) {
    try {
      let backend: Backend = await createNamed(name, config, weights, optionsFor(name));
      if (name === 'webgpu') {
        // Keep generating on the CPU if the GPU is lost mid-run (see fallback.ts).
        const cpu = selection.order.find((b) => b !== 'webgpu') ?? 'js';
        const { FallbackBackend } = await import('./fallback.js');
        backend = new FallbackBackend(backend, () => createNamed(cpu, config, weights, optionsFor(cpu)));
        selection.fallback = cpu;
      }
      const reason = skipped.length ? `${selection.reason}; ${skipped.join('; ')}` : selection.reason;
      return withSelection(backend, { ...selection, backend: name, reason, dtype: optionsFor(name).dtype! });
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
