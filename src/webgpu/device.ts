import { BackendUnavailableError } from '../errors.js';

/** Where a GPUDevice came from: for the backend description and for tests. */
export interface GpuContext {
  device: GPUDevice;
  adapter: GPUAdapter;
  /** "dawn (node)" or "navigator.gpu". */
  source: string;
  /** Adapter description (vendor/device/driver), best effort. */
  adapterName: string;
  hasF16: boolean;
  /** A CPU implementation (SwiftShader, lavapipe/llvmpipe, WARP): kernels pick CPU-friendly shapes. */
  software: boolean;
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node && !('Deno' in globalThis);

/**
 * Software Vulkan drivers known to work with Dawn when the system's default ICD does not
 * (Debian 12's lavapipe is too old for Dawn). Tried only when the caller set no ICD of its own.
 */
const FALLBACK_ICDS = ['/usr/lib/chromium/vk_swiftshader_icd.json'];

type DawnModule = { create(flags: string[]): GPU; globals: Record<string, unknown> };

let dawnModule: Promise<DawnModule | undefined> | undefined;
let dawnGpu: GPU | undefined;

/**
 * Dawn for Node (the `webgpu` package), imported once; undefined when not installed. The specifier
 * is computed: a literal `import('webgpu')` would make app bundlers (esbuild, Vite, webpack) pull
 * the native addon into browser bundles.
 */
function importDawn(): Promise<DawnModule | undefined> {
  dawnModule ??= (async () => {
    try {
      const name = ['web', 'gpu'].join('');
      const mod = (await import(/* @vite-ignore */ /* webpackIgnore: true */ name)) as DawnModule;
      // Dawn's objects expect the WebGPU globals (GPUBufferUsage, ...); browsers and Deno have them.
      for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
      return mod;
    } catch {
      return undefined;
    }
  })();
  return dawnModule;
}

function dawnFlags(): string[] {
  const extra = process.env.MAMBA_EDGE_DAWN_FLAGS; // e.g. "backend=opengles" (comma separated)
  return extra ? extra.split(',').filter(Boolean) : [];
}

async function requestAdapter(gpu: GPU): Promise<GPUAdapter | null> {
  return (
    (await gpu.requestAdapter({ powerPreference: 'high-performance' })) ??
    (await gpu.requestAdapter({ forceFallbackAdapter: true }).catch(() => null)) ??
    // OpenGL ES-class devices (Dawn's GLES backend, older Android) only offer compatibility mode;
    // the kernels fit it (at most 6 storage buffers, no f16 requirement).
    (await gpu.requestAdapter({ featureLevel: 'compatibility' } as GPURequestAdapterOptions).catch(() => null))
  );
}

/**
 * Finds the adapter the webgpu backend runs on: `navigator.gpu` (browsers, Deno) first, then Dawn
 * in Node (Vulkan, then OpenGL ES, then a software Vulkan ICD). `probe()` reports this same adapter.
 */
export async function findAdapter(): Promise<{ adapter: GPUAdapter; source: string }> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (nav) {
    const adapter = await requestAdapter(nav);
    if (adapter) return { adapter, source: 'navigator.gpu' };
    if (!isNode) throw new BackendUnavailableError('webgpu', 'navigator.gpu returned no adapter');
  }
  if (!isNode) throw new BackendUnavailableError('webgpu', 'navigator.gpu is not available in this runtime');
  const dawn = await importDawn();
  if (!dawn) throw new BackendUnavailableError('webgpu', "no navigator.gpu, and the 'webgpu' (Dawn) package is not installed");
  // One Dawn instance per process once one has found an adapter.
  const tryDawn = async (flags: string[]) => {
    // Dawn's OpenGL ES backend (asked for, or the last resort below) goes through EGL, which must be
    // told to run surfaceless when there is no display.
    if (flags.includes('backend=opengles') && !process.env.EGL_PLATFORM && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) {
      process.env.EGL_PLATFORM = 'surfaceless';
    }
    const gpu = dawn.create(flags);
    const adapter = await requestAdapter(gpu);
    if (adapter) dawnGpu = gpu;
    return adapter;
  };
  let adapter = dawnGpu ? await requestAdapter(dawnGpu) : await tryDawn(dawnFlags());
  const chosenBackend = dawnFlags().some((f) => f.startsWith('backend='));
  if (!adapter && !chosenBackend) {
    // No Vulkan driver Dawn accepts: its OpenGL ES backend (compatibility mode), over the GPU's GL
    // driver or, without a GPU, Mesa's llvmpipe. Before SwiftShader below: on llvmpipe the test
    // suite's WebGPU files run ~3x faster (less to compile, cheaper dispatches).
    adapter = await tryDawn([...dawnFlags(), 'backend=opengles']);
  }
  if (!adapter && !process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES) {
    // The Vulkan loader reads these variables at every instance creation, so a second Dawn
    // instance can still see a software driver the first one did not.
    const fs = await import('node:fs');
    const icd = FALLBACK_ICDS.find((f) => fs.existsSync(f));
    if (icd) {
      process.env.VK_ICD_FILENAMES = icd;
      adapter = await tryDawn(dawnFlags());
    }
  }
  if (!adapter) {
    throw new BackendUnavailableError(
      'webgpu',
      'Dawn found no GPU adapter (no Vulkan driver it accepts, no OpenGL ES; for a software one set VK_ICD_FILENAMES, e.g. to SwiftShader)',
    );
  }
  return { adapter, source: 'dawn (node)' };
}

/** Raises each limit we depend on to what the adapter offers (defaults are far below real GPUs). */
function wantedLimits(a: GPUAdapter): Record<string, number> {
  const names = [
    'maxStorageBufferBindingSize',
    'maxBufferSize',
    'maxStorageBuffersPerShaderStage',
    'maxComputeWorkgroupStorageSize',
    'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupsPerDimension',
    'maxComputeWorkgroupSizeX',
    'maxComputeWorkgroupSizeY',
    'maxStorageBuffersInComputeStage', // compatibility mode only
  ] as const;
  const out: Record<string, number> = {};
  for (const n of names) {
    const v = (a.limits as unknown as Record<string, number | undefined>)[n];
    if (typeof v === 'number') out[n] = v;
  }
  return out;
}

/** What the kernels assume (workgroups of 256 and 16×16, 6 storage buffers, ~8 KiB workgroup memory). */
const NEEDED: [string, number][] = [
  ['maxComputeInvocationsPerWorkgroup', 256],
  ['maxComputeWorkgroupSizeX', 256],
  ['maxComputeWorkgroupSizeY', 16],
  ['maxStorageBuffersPerShaderStage', 6],
  ['maxStorageBuffersInComputeStage', 6],
  ['maxComputeWorkgroupStorageSize', 8192],
];

/** Why the kernels cannot run on this adapter ('' = they can): a limit below what they assume. */
export function adapterShortfall(adapter: GPUAdapter): string {
  for (const [name, min] of NEEDED) {
    const v = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (v !== undefined && v < min) return `adapter limit ${name} is ${v}, the kernels need ${min}`;
  }
  return '';
}

/** Names of a CPU implementation of WebGPU: slower than WASM SIMD, and given CPU kernel shapes. */
const SOFTWARE_ADAPTER = /swiftshader|lavapipe|llvmpipe|softpipe|warp|basic render|software|cpu/i;

/** What an adapter says about itself, as `probe()` reports it. */
export interface AdapterInfoReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** A CPU implementation (SwiftShader, lavapipe, llvmpipe, or flagged as fallback): slower than WASM SIMD. */
  software: boolean;
}

/** What an adapter says about itself, as the backend and `probe()` both describe it. */
export function adapterIdentity(adapter: GPUAdapter): AdapterInfoReport & {
  /** One line: vendor, architecture, device, description. */
  name: string;
} {
  // Adapter info fields are getters (not own properties): copy them one by one.
  const info = (adapter as { info?: GPUAdapterInfo & { isFallbackAdapter?: boolean } }).info;
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  const [vendor, architecture, device, description] = [info?.vendor, info?.architecture, info?.device, info?.description].map(str);
  // `isFallbackAdapter` moved from the adapter to its info in the spec; read both.
  const isFallbackAdapter = !!(info?.isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter);
  const name = [vendor, architecture, device, description].filter((s) => s && s !== '0').join(' ') || 'unknown adapter';
  const software = isFallbackAdapter || SOFTWARE_ADAPTER.test(name);
  return { vendor, architecture, device, description, isFallbackAdapter, software, name };
}

/** A device of its own (tests, tools); backends use the shared one (`withSharedDevice`). */
export async function acquireDevice(wantF16: boolean): Promise<GpuContext> {
  const { adapter, source } = await findAdapter();
  const short = adapterShortfall(adapter);
  if (short) throw new BackendUnavailableError('webgpu', short);
  const hasF16 = wantF16 && adapter.features.has('shader-f16');
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      requiredFeatures: hasF16 ? ['shader-f16'] : [],
      requiredLimits: wantedLimits(adapter),
    });
  } catch (e) {
    throw new BackendUnavailableError('webgpu', `requestDevice failed: ${(e as Error).message}`);
  }
  const { name: adapterName, software } = adapterIdentity(adapter);
  return { device, adapter, source, adapterName, hasF16, software };
}

/**
 * The device every webgpu backend of this process runs on, with what was compiled on it.
 *
 * Sharing one device (as browsers advise) means a second model, or the same model loaded again,
 * reuses the pipelines the first one compiled: on a software adapter compiling them takes seconds
 * per model. It is created with shader-f16 whenever the adapter has it (enabling a feature costs
 * f32 kernels nothing). A backend's `dispose()` frees its own buffers and leaves the device; Node,
 * Deno and browsers all exit with a device alive. A lost device is dropped, so the next load starts
 * on a fresh one.
 */
interface Shared {
  ctx: Promise<GpuContext>;
  device?: GPUDevice;
  /** Compiled kernels by shader sources (a hash of them): see `pipelineCache`. */
  caches: Map<string, PipelineCache>;
  /** Creations in progress, one after another: their error scopes must not interleave. */
  lock: Promise<unknown>;
}

/** Shader modules and pipelines compiled on one device from one set of shader sources. */
export interface PipelineCache {
  modules: Map<string, GPUShaderModule>;
  pipelines: Map<string, GPUComputePipeline>;
}

let shared: Shared | undefined;

function openShared(): Shared {
  const s: Shared = { ctx: acquireDevice(true), caches: new Map(), lock: Promise.resolve() };
  s.ctx.then(
    (ctx) => {
      s.device = ctx.device;
      void ctx.device.lost.then(() => {
        if (shared === s) shared = undefined;
      });
    },
    () => {
      if (shared === s) shared = undefined; // no adapter now: ask again next time
    },
  );
  return s;
}

/**
 * Runs `create` on the shared device (created on first use) while no other creation runs on it, and
 * gives it the pipelines compiled there so far for `shaderKey` (a hash of the shader sources).
 * `hasF16`: the device has shader-f16 and the caller asked for f16 weights.
 */
export async function withSharedDevice<T>(
  wantF16: boolean,
  shaderKey: string,
  create: (ctx: GpuContext, cache: PipelineCache) => Promise<T>,
): Promise<T> {
  const s = (shared ??= openShared());
  const base = await s.ctx;
  const ctx = { ...base, hasF16: wantF16 && base.hasF16 };
  let cache = s.caches.get(shaderKey);
  if (!cache) s.caches.set(shaderKey, (cache = { modules: new Map(), pipelines: new Map() }));
  const run = s.lock.then(() => create(ctx, cache));
  s.lock = run.catch(() => undefined);
  return run;
}

/** What the self-check (selfcheck.ts) concluded for an adapter in this process. */
export interface SelfCheckResult {
  ok: boolean;
  adapter: string;
  /** Adapter, weight format and kernel shapes the verdict holds for. */
  key: string;
  paths: string[];
  failure?: string;
  ms: number;
}

/** Self-check verdicts reached so far in this process, oldest first (`probe()` reports them). */
export const selfCheckResults: SelfCheckResult[] = [];
