import type { Backend } from '../backend.js';
import type { BackendOptions } from '../backends.js';
import type { MambaConfig } from '../config.js';
import { InvalidOptionError, OutOfMemoryError } from '../errors.js';
import { KernelBackend } from '../forward.js';
import type { ModelWeights } from '../weights.js';
import { acquireDevice, type GpuContext } from './device.js';
import { WebGPUKernels, type GpuBuf, type GpuWeight } from './kernels.js';
import { loadShaderSources } from './wgsl.js';

/**
 * The shared layer loop (`KernelBackend`) over the WGSL kernels, plus what only a GPU needs:
 * weights are laid out on the device once at creation (host copies dropped), and `dispose()`
 * also destroys weights, caches and the device.
 */
export class WebGPUBackend extends KernelBackend<GpuBuf, GpuWeight> {
  readonly gpu: GpuContext;
  readonly kernels: WebGPUKernels;

  constructor(ctx: GpuContext, kernels: WebGPUKernels, description: string, config: MambaConfig, weights: ModelWeights) {
    super('webgpu', description, kernels, config, weights);
    this.gpu = ctx;
    this.kernels = kernels;
    kernels.prepare(this.w, config);
  }

  /**
   * Greedy next token after the last `forward`, computed on the GPU: reads back 8 bytes instead of
   * V floats. `lastChunkTokens` is the length of that forward's final chunk (1 for a decode step).
   * Not yet used by the shared driver (it would need a `want: 'argmax'` mode in forward.ts).
   */
  argmaxLast(lastChunkTokens: number): Promise<{ index: number; value: number }> {
    // KernelBackend keeps its scratch private; the logits buffer is what the LM head wrote last.
    const logits = (this as unknown as { scratch: { logits: GpuBuf } }).scratch.logits;
    const V = this.config.vocabSize;
    return this.kernels.argmax(logits, V, (lastChunkTokens - 1) * V);
  }

  /** The `k` most likely next tokens after the last `forward`, on the GPU (see `argmaxLast`). */
  topkLast(lastChunkTokens: number, k: number): Promise<{ index: number; value: number }[]> {
    const logits = (this as unknown as { scratch: { logits: GpuBuf } }).scratch.logits;
    const V = this.config.vocabSize;
    return this.kernels.topk(logits, V, k, (lastChunkTokens - 1) * V);
  }

  override dispose(): void {
    super.dispose();
    this.kernels.destroy();
  }
}

export async function createWebGPUBackend(config: MambaConfig, weights: ModelWeights, o: BackendOptions): Promise<Backend> {
  const dtype = o.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new InvalidOptionError('dtype', `the webgpu backend stores f32 or f16 weights, got ${dtype}`);
  return createWebGPUBackendWith(config, weights, { dtype });
}

/** As `createWebGPUBackend`, with knobs for tests (forced weight splitting). */
export async function createWebGPUBackendWith(
  config: MambaConfig,
  weights: ModelWeights,
  o: { dtype: 'f32' | 'f16'; maxBindingBytes?: number; gemvLanes?: number; flatGemm?: boolean },
): Promise<WebGPUBackend> {
  const [ctx, shaders] = await Promise.all([acquireDevice(o.dtype === 'f16'), loadShaderSources()]);
  const { device } = ctx;
  const kernels = new WebGPUKernels(device, shaders, {
    dtype: o.dtype,
    shaderF16: ctx.hasF16,
    maxBindingBytes: o.maxBindingBytes,
    // CPU adapters: barrier-free kernel shapes (see matmul.wgsl).
    gemvLanes: o.gemvLanes ?? (ctx.software ? 1 : 32),
    flatGemm: o.flatGemm ?? ctx.software,
  });
  const f16 = o.dtype === 'f16' ? (ctx.hasF16 ? 'f16 (shader-f16)' : 'f16 (packed u32)') : 'f32';
  const description = `webgpu ${ctx.source}, ${ctx.adapterName}${ctx.software ? ' (software)' : ''}, ${f16}`;
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let backend: WebGPUBackend;
  try {
    backend = new WebGPUBackend(ctx, kernels, description, config, weights);
  } catch (e) {
    await device.popErrorScope();
    await device.popErrorScope();
    kernels.destroy();
    throw e;
  }
  const validation = await device.popErrorScope();
  const oom = await device.popErrorScope();
  if (oom || validation) {
    backend.dispose();
    if (oom) throw new OutOfMemoryError(`the model does not fit in GPU memory: ${oom.message}`);
    throw new OutOfMemoryError(`GPU rejected the model's buffers (limits?): ${validation!.message}`);
  }
  return backend;
}
