/**
 * What this device can run: a JSON-serialisable capability report used by `backend: 'auto'`
 * (see `chooseBackend` in backends.ts) and printed by `mamba-edge probe`.
 *
 * Works in browsers (window and workers), Deno and Node. Node-only modules are imported
 * dynamically behind runtime checks, so this file loads unchanged in a browser.
 */

import { BackendUnavailableError } from './errors.js';
import { adapterIdentity, adapterShortfall, findAdapter, selfCheckResults, type AdapterInfoReport } from './webgpu/device.js';

export type RuntimeName = 'node' | 'deno' | 'browser' | 'browser-worker' | 'unknown';

/** The limits the kernels depend on (bytes / counts), as the adapter reports them. */
export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxStorageBuffersPerShaderStage: number;
}

export interface WebGPUReport {
  available: boolean;
  /** Why there is no adapter (when `available` is false). */
  reason?: string;
  /** Where the adapter came from: "navigator.gpu" (browsers, Deno) or "dawn (node)". */
  source?: string;
  adapter?: AdapterInfoReport;
  /**
   * The adapter self-check's verdicts in this process (src/webgpu/selfcheck.ts), one per weight
   * format and kernel shape checked; absent until a webgpu backend was created here.
   */
  selfCheck?: { ok: boolean; key: string; paths: string[]; failure?: string; ms: number }[];
  features?: string[];
  shaderF16?: boolean;
  subgroups?: boolean;
  limits?: GpuLimits;
}

export interface ProbeReport {
  runtime: RuntimeName;
  /** Node/Deno version or the browser's user agent. */
  version: string | null;
  webgpu: WebGPUReport;
  wasm: {
    simd: boolean;
    relaxedSimd: boolean;
    /** Shared memory + atomics + workers usable: the multi-threaded wasm path can run. */
    threads: boolean;
  };
  sharedArrayBuffer: boolean;
  /** `globalThis.crossOriginIsolated` (browsers); null where the concept does not exist (Node, Deno). */
  crossOriginIsolated: boolean | null;
  logicalCores: number | null;
  /** Device memory in bytes: `navigator.deviceMemory` (rounded, capped at 8 GiB by browsers) or `os.totalmem()`. */
  deviceMemoryBytes: number | null;
  /** Milliseconds the probe took. */
  probeMs: number;
}

export interface ProbeOptions {
  /** Probe WebGPU (loads Dawn in Node). Default true. */
  webgpu?: boolean;
  /** Give up on the WebGPU adapter after this many ms (Dawn can hang on broken drivers). Default 5000. */
  timeoutMs?: number;
}

// Tiny modules that only validate if the engine supports the feature (same bytes as wasm-feature-detect).
// simd: (func (result v128) i32.const 0 i8x16.splat i8x16.popcnt)
const SIMD_MODULE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);
// relaxed simd: (func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat i8x16.relaxed_swizzle)
const RELAXED_SIMD_MODULE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11,
]);

type Global = typeof globalThis & {
  Deno?: { version?: { deno?: string } };
  navigator?: { gpu?: GPU; hardwareConcurrency?: number; deviceMemory?: number; userAgent?: string };
  crossOriginIsolated?: boolean;
  WorkerGlobalScope?: unknown;
  document?: unknown;
};

function runtimeName(): RuntimeName {
  const g = globalThis as Global;
  if (g.Deno) return 'deno';
  if (typeof process !== 'undefined' && process.versions?.node) return 'node';
  if (typeof g.document !== 'undefined') return 'browser';
  if (typeof g.WorkerGlobalScope !== 'undefined') return 'browser-worker';
  return 'unknown';
}

function validate(bytes: Uint8Array<ArrayBuffer>): boolean {
  try {
    return WebAssembly.validate(bytes);
  } catch {
    return false;
  }
}

function sharedMemoryWorks(): boolean {
  if (typeof SharedArrayBuffer === 'undefined') return false;
  try {
    const m = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return m.buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}

let cached: Promise<ProbeReport> | undefined;

/**
 * Probes the device. The result with default options is cached for the process (the `auto`
 * backend choice calls this on every load); pass `{ fresh: true }` semantics by calling `probeDevice`.
 */
export function probe(options: ProbeOptions = {}): Promise<ProbeReport> {
  if (options.webgpu === undefined && options.timeoutMs === undefined) return (cached ??= probeDevice());
  return probeDevice(options);
}

/** An uncached probe. */
export async function probeDevice(options: ProbeOptions = {}): Promise<ProbeReport> {
  const t0 = performance.now();
  const g = globalThis as Global;
  const runtime = runtimeName();
  const node = runtime === 'node';
  const os = node ? await import('node:os').catch(() => undefined) : undefined;

  const coi = typeof g.crossOriginIsolated === 'boolean' ? g.crossOriginIsolated : null;
  const sab = typeof SharedArrayBuffer !== 'undefined';
  // Node and Deno have no cross-origin isolation: shared memory is always allowed there.
  const threads = sab && coi !== false && sharedMemoryWorks() && (node || typeof (globalThis as { Worker?: unknown }).Worker !== 'undefined');

  let logicalCores: number | null = g.navigator?.hardwareConcurrency ?? null;
  if (logicalCores === null && os) logicalCores = os.availableParallelism?.() ?? os.cpus().length;
  let deviceMemoryBytes: number | null = null;
  if (os) deviceMemoryBytes = os.totalmem();
  else if (typeof g.navigator?.deviceMemory === 'number') deviceMemoryBytes = g.navigator.deviceMemory * 2 ** 30;

  const webgpu: WebGPUReport =
    options.webgpu === false ? { available: false, reason: 'not probed' } : await probeWebGPU(options.timeoutMs ?? 5000);

  return {
    runtime,
    version: node ? `node ${process.versions.node}` : runtime === 'deno' ? `deno ${g.Deno?.version?.deno}` : (g.navigator?.userAgent ?? null),
    webgpu,
    wasm: { simd: validate(SIMD_MODULE), relaxedSimd: validate(RELAXED_SIMD_MODULE), threads },
    sharedArrayBuffer: sab,
    crossOriginIsolated: coi,
    logicalCores,
    deviceMemoryBytes,
    probeMs: Math.round(performance.now() - t0),
  };
}

async function probeWebGPU(timeoutMs: number): Promise<WebGPUReport> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<WebGPUReport>((resolve) => {
    timer = setTimeout(() => resolve({ available: false, reason: `no answer from the WebGPU adapter within ${timeoutMs} ms` }), timeoutMs);
  });
  try {
    return await Promise.race([findAdapter().then(describeAdapter), timeout]);
  } catch (e) {
    return { available: false, reason: e instanceof BackendUnavailableError ? e.reason : ((e as Error).message ?? String(e)) };
  } finally {
    clearTimeout(timer);
  }
}

function describeAdapter({ adapter, source }: { adapter: GPUAdapter; source: string }): WebGPUReport {
  const { name, ...identity } = adapterIdentity(adapter);
  // The kernels' limits decide availability here exactly as they do in the backend.
  const short = adapterShortfall(adapter);
  if (short) return { available: false, reason: short, source, adapter: identity };
  const checks = selfCheckResults.filter((r) => r.adapter === name).map(({ ok, key, paths, failure, ms }) => ({ ok, key, paths, failure, ms }));
  const features = [...adapter.features].map(String).sort();
  const l = adapter.limits;
  return {
    available: true,
    source,
    adapter: identity,
    ...(checks.length ? { selfCheck: checks } : {}),
    features,
    shaderF16: adapter.features.has('shader-f16'),
    subgroups: adapter.features.has('subgroups'),
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    },
  };
}
