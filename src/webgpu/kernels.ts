import type { Kernels } from '../backend.js';
import { DeviceLostError, OutOfMemoryError } from '../errors.js';
import { isMamba2Layer, type AnyLayerWeights, type LayerWeights, type Mamba2LayerWeights, type ModelWeights } from '../weights.js';
import { convChannels, type MambaConfig } from '../config.js';
import { f32ToF16Bits, roundToF16 } from '../half.js';
import { dequantizeQ4, dequantizeQ8, Q4_BLOCK_BYTES, QBLOCK, quantizeQ4, quantizeQ8 } from '../quant.js';
import { preprocess, type ShaderName } from './wgsl.js';
import type { PipelineCache } from './device.js';

export type { PipelineCache };

/** An activation or state buffer: f32, STORAGE | COPY_SRC | COPY_DST. */
export interface GpuBuf {
  readonly id: number;
  buffer: GPUBuffer;
  readonly floats: number;
}

/** One row range of a matrix stored for matmul/embed: rows [rowStart, rowStart + rows). */
interface MatPart {
  id: number;
  buffer: GPUBuffer;
  rowStart: number;
  rows: number;
}

/** Storage format of a matrix on the GPU. */
export type GpuWeightFormat = 'f32' | 'f16' | 'q8' | 'q4';

/**
 * How a matrix sits on the GPU for matmul/embed, split by rows: f32 / f16 rows padded to an even
 * length `ks` (elements); q8 / q4 rows of `ks` u32 words, the first `ss` of them block scales
 * (`quantLayout`, shaders/quant.wgsl).
 */
interface MatLayout {
  fmt: GpuWeightFormat;
  ks: number;
  ss: number;
  parts: MatPart[];
  /** Bytes of all parts (what a GEMV over the whole matrix reads). */
  bytes: number;
}

/**
 * A q8 / q4 row of `cols` weights in u32 words: `ss` scale words (q8: one f32 a block; q4: two f16
 * a word), padded to 4 so that rows start on 16 bytes, then the blocks' quant words (q8: 8 a block
 * of 32, q4: 4); `rs` words in all.
 */
export function quantLayout(fmt: 'q8' | 'q4', cols: number): { blocks: number; ss: number; rs: number } {
  const blocks = Math.ceil(cols / QBLOCK);
  const ss = Math.ceil((fmt === 'q8' ? blocks : Math.ceil(blocks / 2)) / 4) * 4;
  return { blocks, ss, rs: ss + blocks * (fmt === 'q8' ? QBLOCK / 4 : Q4_BLOCK_BYTES / 4) };
}

/** `x` [rows, cols] quantized by src/quant.ts: q [rows, blocks·32] int8, scales [rows, blocks] f32. */
function q8Of(x: Float32Array, rows: number, cols: number): { q: Int8Array; scales: Float32Array } {
  const blocks = Math.ceil(cols / QBLOCK);
  const out = { q: new Int8Array(rows * blocks * QBLOCK), scales: new Float32Array(rows * blocks) };
  quantizeQ8(x, rows, cols, out.q, out.scales);
  return out;
}

/** `x` [rows, cols] quantized by src/quant.ts: q [rows, blocks·16] bytes, scales [rows, blocks] f16 bits. */
function q4Of(x: Float32Array, rows: number, cols: number): { q: Uint8Array; scales: Uint16Array } {
  const blocks = Math.ceil(cols / QBLOCK);
  const out = { q: new Uint8Array(rows * blocks * Q4_BLOCK_BYTES), scales: new Uint16Array(rows * blocks) };
  quantizeQ4(x, rows, cols, out.q, out.scales);
  return out;
}

/** Rows [r0, r0 + rows) of `data` [*, cols] quantized (src/quant.ts) into the words of `quantLayout`. */
function packQuant(fmt: 'q8' | 'q4', data: Float32Array, r0: number, rows: number, cols: number): Uint32Array {
  const { blocks, ss, rs } = quantLayout(fmt, cols);
  const src = data.subarray(r0 * cols, (r0 + rows) * cols);
  const out = new Uint32Array(rows * rs);
  const bytes = new Uint8Array(out.buffer);
  if (fmt === 'q8') {
    const { q, scales } = q8Of(src, rows, cols);
    const sw = new Uint32Array(scales.buffer);
    for (let r = 0; r < rows; r++) {
      out.set(sw.subarray(r * blocks, (r + 1) * blocks), r * rs);
      bytes.set(new Uint8Array(q.buffer, r * blocks * QBLOCK, blocks * QBLOCK), (r * rs + ss) * 4);
    }
  } else {
    const { q, scales } = q4Of(src, rows, cols);
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < blocks; b++) out[r * rs + (b >> 1)] |= scales[r * blocks + b] << (16 * (b & 1));
      bytes.set(q.subarray(r * blocks * Q4_BLOCK_BYTES, (r + 1) * blocks * Q4_BLOCK_BYTES), (r * rs + ss) * 4);
    }
  }
  return out;
}

/** Bytes of one stored row of `cols` weights. */
function rowBytes(fmt: GpuWeightFormat, cols: number): number {
  if (fmt === 'q8' || fmt === 'q4') return quantLayout(fmt, cols).rs * 4;
  return (cols + (cols & 1)) * (fmt === 'f16' ? 2 : 4);
}

/**
 * The embedding and LM head stay in a float format when the projections are q8 / q4: they are read
 * a row per token (embedding) or once per token as one GEMV whose share of a large model is small,
 * and keeping them f16 leaves the embedding kernel and the binding split of very large vocabularies
 * as they are.
 */
export function tableFormat(dtype: GpuWeightFormat): 'f32' | 'f16' {
  return dtype === 'f32' ? 'f32' : 'f16';
}

/** The float32 values a [*, cols] matrix `x` stands for once stored in `fmt`. */
export function storedMatrix(x: Float32Array, cols: number, fmt: GpuWeightFormat): Float32Array {
  if (fmt === 'f32') return x;
  if (fmt === 'f16') return roundToF16(x);
  const rows = x.length / cols;
  if (fmt === 'q8') {
    const { q, scales } = q8Of(x, rows, cols);
    return dequantizeQ8(q, scales, rows, cols);
  }
  const { q, scales } = q4Of(x, rows, cols);
  return dequantizeQ4(q, scales, rows, cols);
}

/**
 * The float32 values the WebGPU backend computes with for `dtype`: the projection matrices rounded
 * (f16) or quantized and dequantized (q8 / q4, src/quant.ts), the embedding and LM head in
 * `tableFormat`, everything else as is. The plain-TS reference run on these is what the GPU must
 * match up to accumulation order (self-check, conformance and kernel tests).
 */
export function storedWeights(w: ModelWeights, cfg: MambaConfig, dtype: GpuWeightFormat): ModelWeights {
  if (dtype === 'f32') return w;
  const as = (x: Float32Array, cols: number) => storedMatrix(x, cols, dtype);
  const { dModel: D, dInner: E } = cfg;
  const layers = w.layers.map((L) =>
    isMamba2Layer(L)
      ? { ...L, inProjX: as(L.inProjX, D), inProjZ: as(L.inProjZ, D), inProjDt: as(L.inProjDt, D), outProj: as(L.outProj, E) }
      : { ...L, inProjX: as(L.inProjX, D), inProjZ: as(L.inProjZ, D), xProj: as(L.xProj, E), outProj: as(L.outProj, E) },
  );
  const table = (x: Float32Array) => storedMatrix(x, D, tableFormat(dtype));
  const embedding = table(w.embedding);
  return { ...w, embedding, lmHead: w.lmHead === w.embedding ? embedding : table(w.lmHead), layers };
}

/**
 * A weight tensor. The `Kernels` interface uploads tensors without saying what they are for, and
 * the same tensor may be needed in two layouts (matrices for matmul in the model's dtype, A and
 * vectors as plain f32), so the host copy is kept until `prepare()` (or first use) materialises
 * the layouts the kernels ask for, then dropped.
 */
export interface GpuWeight {
  readonly id: number;
  readonly rows: number;
  readonly cols: number;
  data?: Float32Array;
  raw?: GpuBuf; // plain f32 [rows, cols]
  mat?: MatLayout;
}

export interface WebGPUKernelOptions {
  /**
   * Storage format of the projection matrices: 'f16' halves memory and bandwidth, 'q8' / 'q4'
   * (blocks of 32, src/quant.ts) take about 1/4 / 1/7 of f32; state, A and Δ stay f32, the embedding
   * and LM head are f16 under q8 / q4 (`tableFormat`).
   */
  dtype: GpuWeightFormat;
  /** The adapter has shader-f16 and the device was created with it. */
  shaderF16: boolean;
  /** Upper bound for one weight part in bytes (tests force splitting with a small value). */
  maxBindingBytes?: number;
  /**
   * Invocations that share one output row in the decode GEMV (a power of two ≤ 256): at least 32
   * on GPUs (coalesced loads; long rows get more, see `rowLanes`); 1 on CPU implementations, where
   * each barrier costs more than it saves.
   */
  gemvLanes?: number;
  /** Prefill matmul without workgroup tiles (one invocation per output): faster on CPU adapters. */
  flatGemm?: boolean;
  /**
   * Prefill with the per-token scan (`scan`, the decode kernel) instead of the blocked `scan_chunk`:
   * on CPU adapters there is no memory latency for the blocks to hide, the per-token kernel runs
   * faster (SwiftShader, a 600-token prefill of small-hf-f16-untied: 2.9 s against 3.3 s) and
   * one pipeline fewer is compiled (scan_chunk takes ~1.8 s to compile there).
   */
  tokenScan?: boolean;
  /**
   * Compiled modules and pipelines to share with other kernel objects on the same device and
   * shader sources: the adapter self-check compiles what the model's backend then reuses.
   */
  pipelineCache?: PipelineCache;
}


type Shaders = Record<ShaderName, string>;

export interface Cached {
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
  uniform: GPUBuffer;
  buffers: GPUBuffer[];
}

const USAGE_RW = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */
const USAGE_UNIFORM = 0x40 /* UNIFORM */ | 0x08;
const USAGE_MAP_READ = 0x01 /* MAP_READ */ | 0x08;
const MAP_MODE_READ = 0x1;
const MAX_WG_PER_DIM = 65535;

/**
 * Block shape of `scan_chunk` (scan.wgsl): L lanes per channel (the largest of 4, 2, 1 dividing N)
 * and TB tokens per block, the largest of 16, 8, 4 (≥ L) whose workgroup arrays
 * TB · (S + 3·CH + 64) floats, plus the decode kernel's S-float row, fit the default 16 KiB.
 * TB = 0: does not fit (a very wide dbc row), use the per-token kernel.
 */
function scanShape(N: number, R: number): { L: number; TB: number } {
  const S = R + 2 * N;
  const L = N % 4 === 0 ? 4 : N % 2 === 0 ? 2 : 1;
  const CH = 64 / L;
  for (const TB of [16, 8, 4]) {
    if (TB >= L && (TB * (S + 3 * CH + 64) + S) * 4 <= 16384) return { L, TB };
  }
  return { L, TB: 0 };
}

/**
 * Where the fused step's vectors sit in a layer's `mixPack` buffer (floats): Mamba-2's per-head
 * [dt_bias | A | D | in_proj dt bias] at `oX`, its gate norm weight at `oW` (a multiple of 4), its
 * out_proj bias at `oO`; `size` in all.
 */
function mixLayout(cfg: MambaConfig): { oX: number; oW: number; oO: number; size: number } {
  const { dModel: D, dInner: E, dConv: K } = cfg;
  const C = convChannels(cfg);
  const oX = D + C * K + 2 * C + E;
  if (!cfg.mamba2) return { oX, oW: oX, oO: oX, size: oX };
  const oW = Math.ceil((oX + 4 * cfg.mamba2.nHeads) / 4) * 4;
  return { oX, oW, oO: oW + E, size: oW + E + D };
}

/**
 * The Mamba kernels on WebGPU. Calls between `begin()` and `end()` are recorded into one compute
 * pass and submitted as one command buffer (a token step is never split across command buffers;
 * chained decoding puts a few steps in each); a call outside that window is submitted by itself
 * (kernel tests).
 *
 * Everything a call needs — pipeline, uniform buffer, bind group — is created on the first call
 * with those buffers and parameters and cached: a decode step repeats exactly the calls of the
 * previous step, so after the first token nothing is allocated and no uniform is written.
 */
export class WebGPUKernels implements Kernels<GpuBuf, GpuWeight> {
  readonly device: GPUDevice;
  private readonly opts: WebGPUKernelOptions;
  private readonly shaders: Shaders;
  private readonly modules: Map<string, GPUShaderModule>;
  private readonly pipelines: Map<string, GPUComputePipeline>;
  private readonly calls = new Map<string, Cached>();
  private readonly callsByBuffer = new Map<GPUBuffer, Set<string>>();
  private readonly owned = new Set<GPUBuffer>(); // uniforms, weights, staging: destroyed by destroy()
  private readonly scanParams = new WeakMap<object, GpuBuf>();
  private readonly mixParams = new WeakMap<object, GpuBuf>();
  private nextId = 1;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private tokens: GpuBuf;
  private dummy: GpuBuf;
  private staging: GPUBuffer | null = null;
  private readLock: Promise<unknown> = Promise.resolve();
  private failure: Error | null = null;
  private readonly lost: Promise<never>;
  private readonly maxPartBytes: number;
  private readonly gemvLanes: number;
  private destroyed = false;

  constructor(device: GPUDevice, shaders: Shaders, opts: WebGPUKernelOptions) {
    this.device = device;
    this.shaders = shaders;
    this.opts = opts;
    this.modules = opts.pipelineCache?.modules ?? new Map();
    this.pipelines = opts.pipelineCache?.pipelines ?? new Map();
    const lim = device.limits;
    this.gemvLanes = opts.gemvLanes ?? 32;
    if (!(this.gemvLanes >= 1 && this.gemvLanes <= 256 && (this.gemvLanes & (this.gemvLanes - 1)) === 0)) {
      throw new Error(`gemvLanes must be a power of two in [1, 256], got ${this.gemvLanes}`);
    }
    this.maxPartBytes = Math.min(lim.maxStorageBufferBindingSize, lim.maxBufferSize, opts.maxBindingBytes ?? Infinity);
    // A lost device rejects every later call (and any read in flight) instead of hanging.
    this.lost = device.lost.then((info) => {
      const err = new DeviceLostError(`WebGPU device lost (${info.reason}): ${info.message}`);
      if (!this.destroyed) this.failure ??= err;
      throw err;
    });
    this.lost.catch(() => undefined);
    // The device may be shared with other models: listen, do not take `onuncapturederror` over.
    device.addEventListener('uncapturederror', this.onError);
    this.tokens = this.alloc(64);
    this.dummy = this.alloc(4);
  }

  private readonly onError = (ev: Event) => {
    const error = (ev as GPUUncapturedErrorEvent).error;
    this.failure ??= new DeviceLostError(`WebGPU error: ${error.message}`, { cause: error });
  };

  // ---- memory -----------------------------------------------------------------------------------

  /** Compute dispatches recorded so far (replays included): tests and the bench count a step's. */
  dispatches = 0;

  /** Buffers and bind groups created so far: tests check that a decode step creates none. */
  readonly stats = { buffers: 0, bindGroups: 0, pipelines: 0 };

  /** GPU buffers alive now (weights, states, scratch, uniforms): tests check that nothing leaks. */
  get liveBuffers(): number {
    return this.owned.size + (this.staging ? 1 : 0);
  }

  private buffer(bytes: number, usage: number, label: string): GPUBuffer {
    this.stats.buffers++;
    // Sizes must be multiples of 4; 16 also keeps bindings of vec types valid for tiny tensors.
    return this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage, label });
  }

  upload(data: Float32Array, rows: number, cols: number): GpuWeight {
    if (data.length !== rows * cols) throw new Error(`upload: ${data.length} values for [${rows}, ${cols}]`);
    return { id: this.nextId++, rows, cols, data };
  }

  alloc(floats: number): GpuBuf {
    this.check();
    const buffer = this.buffer(floats * 4, USAGE_RW, 'activation');
    this.owned.add(buffer);
    return { id: this.nextId++, buffer, floats };
  }

  free(buf: GpuBuf): void {
    // Calls cached with this buffer (a released session's conv/scan state) can never recur.
    for (const key of this.callsByBuffer.get(buf.buffer) ?? []) {
      const c = this.calls.get(key);
      if (!c) continue;
      this.calls.delete(key);
      this.owned.delete(c.uniform);
      c.uniform.destroy();
      for (const other of c.buffers) if (other !== buf.buffer) this.callsByBuffer.get(other)?.delete(key);
    }
    this.callsByBuffer.delete(buf.buffer);
    this.owned.delete(buf.buffer);
    buf.buffer.destroy();
  }

  write(buf: GpuBuf, data: Float32Array): void {
    this.check();
    this.device.queue.writeBuffer(buf.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
  }

  /** The plain f32 copy of a weight (vectors, A, conv taps, dt_proj). */
  private raw(w: GpuWeight): GpuBuf {
    if (w.raw) return w.raw;
    w.raw = this.constant(this.hostData(w), 'weight');
    return w.raw;
  }

  /**
   * The matmul/embed layout, split to fit a binding: in `fmt` (default: the model dtype) the first
   * time a matrix is asked for; later calls get that layout whatever they ask.
   */
  private mat(w: GpuWeight, fmt: GpuWeightFormat = this.opts.dtype): MatLayout {
    if (w.mat) return w.mat;
    const data = this.hostData(w);
    const quant = fmt === 'q8' || fmt === 'q4' ? quantLayout(fmt, w.cols) : undefined;
    const ks = quant ? quant.rs : w.cols + (w.cols & 1);
    const bytesPerRow = rowBytes(fmt, w.cols);
    const perPart = Math.floor(this.maxPartBytes / bytesPerRow);
    if (perPart < 1) throw new OutOfMemoryError(`a weight row of ${bytesPerRow} bytes exceeds the GPU binding limit`);
    const parts: MatPart[] = [];
    for (let r0 = 0; r0 < w.rows; r0 += perPart) {
      const rows = Math.min(perPart, w.rows - r0);
      let bytes: ArrayBufferView;
      if (fmt === 'q8' || fmt === 'q4') {
        bytes = packQuant(fmt, data, r0, rows, w.cols);
      } else if (fmt === 'f16') {
        const h = new Uint16Array(rows * ks);
        for (let r = 0; r < rows; r++) {
          const src = (r0 + r) * w.cols;
          for (let c = 0; c < w.cols; c++) h[r * ks + c] = f32ToF16Bits(data[src + c]);
        }
        bytes = h;
      } else if (ks === w.cols) {
        bytes = data.subarray(r0 * ks, (r0 + rows) * ks);
      } else {
        const f = new Float32Array(rows * ks);
        for (let r = 0; r < rows; r++) f.set(data.subarray((r0 + r) * w.cols, (r0 + r + 1) * w.cols), r * ks);
        bytes = f;
      }
      const buffer = this.buffer(bytes.byteLength, USAGE_RW, 'matrix');
      this.owned.add(buffer);
      this.device.queue.writeBuffer(buffer, 0, bytes.buffer, bytes.byteOffset, bytes.byteLength);
      parts.push({ id: this.nextId++, buffer, rowStart: r0, rows });
    }
    const bytes = w.rows * bytesPerRow;
    this.weightBytes += bytes;
    w.mat = { fmt, ks, ss: quant?.ss ?? 0, parts, bytes };
    return w.mat;
  }

  private hostData(w: GpuWeight): Float32Array {
    if (!w.data) throw new Error('weight was released from host memory before the GPU layout it needs was built');
    return w.data;
  }

  /**
   * Builds every GPU layout the model's kernels use, then drops the host copies: after this the
   * weights live only on the GPU.
   */
  prepare(w: ModelWeights<GpuWeight>, cfg: MambaConfig): void {
    this.mat(w.embedding, tableFormat(this.opts.dtype));
    this.mat(w.lmHead, tableFormat(this.opts.dtype));
    this.raw(w.normF);
    for (const L of w.layers) this.uploadedLayer(L, cfg);
    for (const x of [w.embedding, w.lmHead, w.normF]) delete x.data;
  }

  /** One block's layouts, then its host copies dropped (`Kernels.uploadedLayer`; `prepare` for the rest). */
  uploadedLayer(L: AnyLayerWeights<GpuWeight>, cfg: MambaConfig): void {
    const vec = (x: GpuWeight | undefined) => x && this.raw(x);
    vec(L.norm);
    if (isMamba2Layer(L)) {
      for (const m of [L.inProjX, L.inProjZ, L.inProjDt, L.outProj]) this.mat(m);
      for (const v of [L.inProjXBias, L.inProjZBias, L.inProjDtBias, L.convB, L.outProjBias, L.gateNorm]) vec(v);
      this.raw(L.convW);
      this.ssdPack(L, cfg);
      if (this.fusedStep(cfg)) this.mixPack(L, cfg);
    } else {
      for (const m of [L.inProjX, L.inProjZ, L.xProj, L.outProj]) this.mat(m);
      for (const v of [L.inProjXBias, L.inProjZBias, L.convB, L.outProjBias]) vec(v);
      this.raw(L.convW);
      this.scanPack(L, cfg);
      if (this.fusedStep(cfg)) this.mixPack(L, cfg);
    }
    for (const x of Object.values(L) as (GpuWeight | undefined)[]) if (x) delete x.data;
  }

  /** Mamba-2: [dt_bias [H] | A [H] | D [H]] as one f32 buffer (see ssd.wgsl). */
  private ssdPack(L: Mamba2LayerWeights<GpuWeight>, cfg: MambaConfig): GpuBuf {
    const hit = this.scanParams.get(L);
    if (hit) return hit;
    const H = cfg.mamba2!.nHeads;
    const packed = new Float32Array(3 * H);
    packed.set(this.hostData(L.dtBias), 0);
    packed.set(this.hostData(L.A), H);
    packed.set(this.hostData(L.D), 2 * H);
    const buf = this.constant(packed, 'ssd params');
    this.scanParams.set(L, buf);
    return buf;
  }

  /** [dt_proj.weight [E, R] | dt_proj.bias [E] | A [E, N] | D [E]] as one f32 buffer (see scan.wgsl). */
  private scanPack(L: LayerWeights<GpuWeight>, cfg: MambaConfig): GpuBuf {
    const hit = this.scanParams.get(L);
    if (hit) return hit;
    const { dInner: E, dtRank: R, dState: N } = cfg;
    const packed = new Float32Array(E * R + E + E * N + E);
    packed.set(this.hostData(L.dtProjW), 0);
    packed.set(this.hostData(L.dtProjB), E * R);
    packed.set(this.hostData(L.A), E * R + E);
    packed.set(this.hostData(L.D), E * R + E + E * N);
    const buf = this.constant(packed, 'scan params');
    this.scanParams.set(L, buf);
    return buf;
  }

  /**
   * The vectors of one layer's fused decode step as one f32 buffer (see step.wgsl), absent biases zero:
   * [norm [D] | conv taps [C, K] | conv bias [C] | in_proj bias x [C] | z [E]], and for Mamba-2 then
   * [dt_bias | A | D | in_proj dt bias] ([H] each) at `oX`, the gate norm's weight [E] at `oW` (a
   * multiple of 4: gate_out reads it in quads) and out_proj's bias [D] at `oO`.
   */
  private mixPack(L: AnyLayerWeights<GpuWeight>, cfg: MambaConfig): GpuBuf {
    const hit = this.mixParams.get(L);
    if (hit) return hit;
    const { dModel: D, dInner: E, dConv: K } = cfg;
    const C = convChannels(cfg);
    const o = mixLayout(cfg);
    const packed = new Float32Array(o.size);
    const put = (w: GpuWeight | undefined, at: number) => w && packed.set(this.hostData(w), at);
    put(L.norm, 0);
    put(L.convW, D);
    put(L.convB, D + C * K);
    put(L.inProjXBias, D + C * K + C);
    put(L.inProjZBias, D + C * K + 2 * C);
    if (isMamba2Layer(L)) {
      const H = cfg.mamba2!.nHeads;
      put(L.dtBias, o.oX);
      put(L.A, o.oX + H);
      put(L.D, o.oX + 2 * H);
      put(L.inProjDtBias, o.oX + 3 * H);
      put(L.gateNorm, o.oW);
      put(L.outProjBias, o.oO);
    }
    const buf = this.constant(packed, 'mix params');
    this.mixParams.set(L, buf);
    return buf;
  }

  /** Bytes of the weights on the GPU, in their stored formats (matrices, vectors, packed parameters). */
  weightBytes = 0;

  private constant(data: Float32Array, label: string): GpuBuf {
    this.weightBytes += data.byteLength;
    const buffer = this.buffer(data.byteLength, USAGE_RW, label);
    this.owned.add(buffer);
    this.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    return { id: this.nextId++, buffer, floats: data.length };
  }

  // ---- recording --------------------------------------------------------------------------------

  begin(): void {
    this.check();
    this.encoder = this.device.createCommandEncoder();
    this.pass = this.encoder.beginComputePass();
  }

  end(): void {
    if (!this.encoder || !this.pass) return;
    this.pass.end();
    const cmd = this.encoder.finish();
    this.encoder = null;
    this.pass = null;
    this.device.queue.submit([cmd]);
  }

  private dispatch(c: Cached): void {
    const auto = !this.pass;
    if (auto) this.begin();
    const pass = this.pass!;
    pass.setPipeline(c.pipeline);
    pass.setBindGroup(0, c.bindGroup);
    pass.dispatchWorkgroups(c.workgroups[0], c.workgroups[1], c.workgroups[2]);
    this.dispatches++;
    this.captured?.push(c);
    if (auto) this.end();
  }

  /** While capturing: every dispatch recorded, in order. */
  private captured: Cached[] | null = null;

  /**
   * Records what `record` dispatches, as usual, and also returns that list, which `replay` records
   * again. A decode step repeats exactly the dispatches of the previous one, and looking each one up
   * by its key (built from a dozen ids) costs the host several times what the dispatch itself costs
   * (measured in Deno: ~90 against ~20 µs a token). Only dispatches are captured: `record` must not
   * write buffers (the token upload of `embed`, for one, unless `residentTokens`).
   */
  capture(record: () => void): readonly Cached[] {
    this.captured = [];
    try {
      record();
      return this.captured;
    } finally {
      this.captured = null;
    }
  }

  /** Records a list from `capture` into the current pass. Valid while every buffer it names lives. */
  replay(list: readonly Cached[]): void {
    this.check();
    const pass = this.pass;
    if (!pass) throw new Error('replay: not recording (call begin() first)');
    for (const c of list) {
      pass.setPipeline(c.pipeline);
      pass.setBindGroup(0, c.bindGroup);
      pass.dispatchWorkgroups(c.workgroups[0], c.workgroups[1], c.workgroups[2]);
    }
    this.dispatches += list.length;
  }

  /** Changes whenever the token buffer is reallocated (a captured `embed` names it). */
  get tokensId(): number {
    return this.tokens.id;
  }

  private pipeline(
    shader: ShaderName,
    entry: string,
    defines: Record<string, string | number | boolean>,
    constants?: Record<string, number>,
  ): GPUComputePipeline {
    const key = `${shader}:${entry}:${JSON.stringify(defines)}:${JSON.stringify(constants ?? {})}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const mkey = `${shader}:${JSON.stringify(defines)}`;
      let module = this.modules.get(mkey);
      if (!module) {
        module = this.device.createShaderModule({ code: preprocess(this.shaders[shader], defines, (name) => this.shaders[name as ShaderName]), label: shader });
        this.modules.set(mkey, module);
      }
      this.stats.pipelines++;
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: entry, ...(constants ? { constants } : {}) }, label: `${shader}.${entry}` });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /** Looks a call up by `key`, building its uniform buffer and bind group the first time. */
  private call(
    key: string,
    build: () => { pipeline: GPUComputePipeline; buffers: GPUBuffer[]; params: ArrayBuffer; workgroups: [number, number, number] },
  ): void {
    this.check();
    let c = this.calls.get(key);
    if (!c) {
      const b = build();
      const uniform = this.buffer(b.params.byteLength, USAGE_UNIFORM, 'params');
      this.owned.add(uniform);
      this.device.queue.writeBuffer(uniform, 0, b.params);
      const entries: GPUBindGroupEntry[] = b.buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));
      entries.push({ binding: b.buffers.length, resource: { buffer: uniform } });
      this.stats.bindGroups++;
      const bindGroup = this.device.createBindGroup({ layout: b.pipeline.getBindGroupLayout(0), entries });
      c = { pipeline: b.pipeline, bindGroup, workgroups: b.workgroups, uniform, buffers: b.buffers };
      this.calls.set(key, c);
      for (const buf of b.buffers) {
        let keys = this.callsByBuffer.get(buf);
        if (!keys) this.callsByBuffer.set(buf, (keys = new Set()));
        keys.add(key);
      }
    }
    this.dispatch(c);
  }

  private weightDefines(fmt: GpuWeightFormat): Record<string, boolean> {
    return {
      F16: fmt === 'f16' && this.opts.shaderF16,
      PACKED: fmt === 'f16' && !this.opts.shaderF16,
      QUANT: fmt === 'q8' || fmt === 'q4',
      Q4: fmt === 'q4',
    };
  }

  // ---- kernels ----------------------------------------------------------------------------------

  embed(tokens: Uint32Array, table: GpuWeight, out: GpuBuf, T: number, D: number): void {
    if (this.tokens.floats < T) {
      this.free(this.tokens);
      this.tokens = this.alloc(T);
    }
    this.check();
    if (!this.residentTokens) this.device.queue.writeBuffer(this.tokens.buffer, 0, Uint32Array.from(tokens.subarray(0, T)));
    const m = this.mat(table, tableFormat(this.opts.dtype));
    if (m.fmt !== 'f32' && m.fmt !== 'f16') throw new Error(`embed: a ${m.fmt} table (the embedding is stored f32 or f16)`);
    for (const part of m.parts) {
      this.call(`embed:${this.tokens.id}:${part.id}:${out.id}:${T}:${D}`, () => ({
        pipeline: this.pipeline('embed', 'embed', this.weightDefines(m.fmt)),
        buffers: [this.tokens.buffer, part.buffer, out.buffer],
        params: new Uint32Array([T, D, m.ks / 2, part.rowStart, part.rowStart + part.rows, 0, 0, 0]).buffer,
        workgroups: [Math.ceil(Math.ceil(D / 2) / 64), T, 1],
      }));
    }
  }

  rmsnorm(x: GpuBuf, w: GpuWeight, out: GpuBuf, T: number, dim: number, eps: number): void {
    const wb = this.raw(w);
    this.call(`norm:${x.id}:${wb.id}:${out.id}:${T}:${dim}:${eps}`, () => {
      const params = new ArrayBuffer(16);
      new Uint32Array(params, 0, 2).set([T, dim]);
      new Float32Array(params, 8, 1)[0] = eps;
      return { pipeline: this.pipeline('norm', 'rmsnorm', {}), buffers: [x.buffer, wb.buffer, out.buffer], params, workgroups: [T, 1, 1] };
    });
  }

  normSegments(x: GpuBuf, T: number, segments: readonly number[], eps: number): void {
    if (segments.length < 1 || segments.length > 4) throw new RangeError('normSegments: 1 to 4 segments');
    this.call(`normseg:${x.id}:${T}:${segments.join(',')}:${eps}`, () => {
      const params = new ArrayBuffer(32);
      new Uint32Array(params, 0, 2).set([T, segments.reduce((a, b) => a + b, 0)]);
      new Float32Array(params, 8, 1)[0] = eps;
      new Uint32Array(params, 16, 4).set(segments);
      return { pipeline: this.pipeline('norm', 'norm_segments', {}), buffers: [x.buffer], params, workgroups: [T, segments.length, 1] };
    });
  }

  matmul(x: GpuBuf, w: GpuWeight, bias: GpuWeight | undefined, out: GpuBuf, T: number, K: number, N: number, accumulate: boolean): void {
    if (w.cols !== K || w.rows !== N) throw new Error(`matmul: weight [${w.rows}, ${w.cols}] used as [${N}, ${K}]`);
    const m = this.mat(w);
    const b = bias ? this.raw(bias) : this.dummy;
    for (const part of m.parts) {
      // Everything below the key is worked out once per call site: a decode step repeats its calls.
      this.call(`mm:${x.id}:${part.id}:${b.id}:${out.id}:${T}:${accumulate}`, () => {
        const quant = m.fmt === 'q8' || m.fmt === 'q4';
        const entry = T === 1 ? (K % 4 === 0 ? (quant ? 'gemv_q' : 'gemv4') : 'gemv') : this.opts.flatGemm ? 'gemm_flat' : 'gemm';
        // gemm's token tile (matmul.wgsl): 64 once even the 64-token grid has ≥ 528 workgroups (4 per
        // SM of a 132-SM GPU), else 32 for twice the workgroups. Every matmul pipeline gets GBT/GTY:
        // gemv and gemm share one module.
        const gbt = entry === 'gemm' && Math.ceil(T / 64) * Math.ceil(m.parts[0].rows / 64) >= 528 ? 64 : 32;
        const defines = { ...this.weightDefines(m.fmt), GBT: gbt, GTY: gbt / 4 };
        // gemv_q: a lane's unit is a quant word (4 or 8 weights) where gemv4's is a quad.
        const lanes = entry === 'gemv4' ? this.rowLanes(K) : entry === 'gemv_q' ? this.rowLanes(m.fmt === 'q4' ? K / 2 : K) : this.gemvLanes;
        let workgroups: [number, number, number];
        if (T === 1) {
          const groups = Math.ceil(part.rows / (256 / lanes));
          const gx = Math.min(groups, MAX_WG_PER_DIM);
          workgroups = [gx, Math.ceil(groups / gx), 1];
        } else if (this.opts.flatGemm) {
          workgroups = [Math.ceil(part.rows / 64), T, 1];
        } else {
          workgroups = [Math.ceil(part.rows / 64), Math.ceil(T / gbt), 1];
        }
        const flags = (bias ? 1 : 0) | (accumulate ? 2 : 0);
        return {
          pipeline: this.pipeline('matmul', entry, defines, T === 1 ? { LANES: lanes } : undefined),
          buffers: [x.buffer, part.buffer, b.buffer, out.buffer],
          params: new Uint32Array([T, K, part.rows, part.rowStart, N, quant ? m.ks : m.ks / 2, flags, m.ss]).buffer,
          workgroups,
        };
      });
    }
  }

  conv1d(x: GpuBuf, state: GpuBuf, w: GpuWeight, bias: GpuWeight | undefined, out: GpuBuf, T: number, E: number, K: number): void {
    const wb = this.raw(w);
    const b = bias ? this.raw(bias) : this.dummy;
    const params = () => new Uint32Array([T, E, bias ? 1 : 0, 0]).buffer;
    if (T === 1) {
      // decode: one token, the sequential kernel updates the state in the same pass
      this.call(`conv:${x.id}:${state.id}:${wb.id}:${b.id}:${out.id}:${T}:${E}:${K}`, () => ({
        pipeline: this.pipeline('conv', 'conv1d', { K }),
        buffers: [x.buffer, state.buffer, wb.buffer, b.buffer, out.buffer],
        params: params(),
        workgroups: [Math.ceil(E / 64), 1, 1],
      }));
      return;
    }
    // prefill: tokens in parallel (16 per invocation, see conv.wgsl), then the state shift
    this.call(`convc:${x.id}:${state.id}:${wb.id}:${b.id}:${out.id}:${T}:${E}:${K}`, () => ({
      pipeline: this.pipeline('conv', 'conv1d_chunk', { K }),
      buffers: [x.buffer, state.buffer, wb.buffer, b.buffer, out.buffer],
      params: params(),
      workgroups: [Math.ceil(E / 64), Math.ceil(T / 16), 1],
    }));
    if (K > 1) {
      this.call(`convs:${x.id}:${state.id}:${T}:${E}:${K}`, () => ({
        pipeline: this.pipeline('conv', 'conv1d_state', { K }),
        buffers: [x.buffer, state.buffer],
        params: params(),
        workgroups: [Math.ceil(E / 64), 1, 1],
      }));
    }
  }

  scan(u: GpuBuf, dbc: GpuBuf, z: GpuBuf, L: LayerWeights<GpuWeight>, state: GpuBuf, out: GpuBuf, T: number, cfg: MambaConfig): void {
    const { dInner: E, dtRank: R, dState: N } = cfg;
    const prm = this.scanPack(L, cfg);
    const shape = scanShape(N, R);
    // T = 1 (decode) keeps the one-invocation-per-channel kernel: one token needs no blocking.
    const chunked = T > 1 && shape.TB > 0 && !this.opts.tokenScan;
    this.call(`scan:${u.id}:${dbc.id}:${z.id}:${prm.id}:${state.id}:${out.id}:${T}`, () => ({
      pipeline: this.pipeline('scan', chunked ? 'scan_chunk' : 'scan', { N, R, S: R + 2 * N, L: shape.L, TB: Math.max(shape.TB, shape.L) }),
      buffers: [u.buffer, dbc.buffer, z.buffer, prm.buffer, state.buffer, out.buffer],
      params: new Uint32Array([T, E, 0, 0]).buffer,
      workgroups: [Math.ceil(E / (chunked ? 64 / shape.L : 64)), 1, 1],
    }));
  }

  ssd(xbc: GpuBuf, dt: GpuBuf, L: Mamba2LayerWeights<GpuWeight>, state: GpuBuf, y: GpuBuf, T: number, cfg: MambaConfig): void {
    const { nHeads: H, headDim: P, nGroups: G, dtMin, dtMax } = cfg.mamba2!;
    const prm = this.ssdPack(L, cfg);
    // Channels per workgroup: enough workgroups to fill a GPU, few enough that each rebuilds the
    // head's mask for many channels.
    const PT = Math.min(P, 16);
    this.call(`ssd:${xbc.id}:${dt.id}:${prm.id}:${state.id}:${y.id}:${T}`, () => {
      const params = new ArrayBuffer(32);
      new Uint32Array(params, 0, 5).set([T, cfg.dState, H, P, G]);
      new Float32Array(params, 20, 2).set([dtMin, Math.min(dtMax, 3.4e38)]);
      return {
        pipeline: this.pipeline('ssd', 'ssd', { PT }),
        buffers: [xbc.buffer, dt.buffer, prm.buffer, state.buffer, y.buffer],
        params,
        workgroups: [H, Math.ceil(P / PT), 1],
      };
    });
  }

  gatedNorm(y: GpuBuf, z: GpuBuf, w: GpuWeight, out: GpuBuf, T: number, cfg: MambaConfig): void {
    const { normGroupSize: S, normEps, normBeforeGate } = cfg.mamba2!;
    const wb = this.raw(w);
    this.call(`gnorm:${y.id}:${z.id}:${wb.id}:${out.id}:${T}`, () => {
      const params = new ArrayBuffer(16);
      new Uint32Array(params, 0, 2).set([cfg.dInner, S]);
      new Float32Array(params, 8, 1)[0] = normEps;
      new Uint32Array(params, 12, 1)[0] = normBeforeGate ? 1 : 0;
      return {
        pipeline: this.pipeline('norm', 'gated_norm', {}),
        buffers: [y.buffer, z.buffer, wb.buffer, out.buffer],
        params,
        workgroups: [T, cfg.dInner / S, 1],
      };
    });
  }

  // ---- the fused decode step (step.wgsl) -----------------------------------------------------------

  /**
   * Lanes per row for a decode GEMV over rows of K values: 1 on CPU implementations; on GPUs enough
   * that a lane reads at most 4 quads, issued together (matmul.wgsl `gemv4`), from `gemvLanes` up
   * to `max`.
   */
  private rowLanes(K: number, max = 256): number {
    if (this.gemvLanes === 1) return 1;
    let lanes = this.gemvLanes;
    while (lanes < max && lanes * 16 < K) lanes *= 2;
    return lanes;
  }

  /**
   * Shape of the fused decode kernels (step.wgsl) for this model, or undefined where they do not
   * apply and the backend keeps the separate kernels: a width that is not a multiple of 4 (vec4
   * rows), a matrix split across bindings, or an adapter with fewer than 7 storage buffers a stage;
   * for Mamba-2 also norm groups whose size is not a multiple of 4 or more than 256 of them.
   */
  fusedStep(cfg: MambaConfig): { LANES: number; NL: number } | undefined {
    const { dModel: D, dInner: E, dState: N } = cfg;
    const lim = this.device.limits as unknown as Record<string, number | undefined>;
    const buffers = Math.min(lim.maxStorageBuffersPerShaderStage ?? 8, lim.maxStorageBuffersInComputeStage ?? Infinity);
    // The in_proj parts ([E, D], Mamba-2's [C, D]), out_proj [D, E] and the [V, D] head must each fit one binding.
    const dt = this.opts.dtype;
    const fits = Math.max(convChannels(cfg) * rowBytes(dt, D), D * rowBytes(dt, E), cfg.vocabSize * rowBytes(tableFormat(dt), D)) <= this.maxPartBytes;
    if (D % 4 || !fits || buffers < 7) return undefined;
    const m2 = cfg.mamba2;
    // Mamba-2's ssd_step and gate_out read f32 / f16 rows only: q8 / q4 models take the separate kernels.
    if (m2 && (E % 4 || m2.normGroupSize % 4 || E / m2.normGroupSize > 256 || dt === 'q8' || dt === 'q4')) return undefined;
    let NL = 1; // lanes per channel in scan_step / ssd_step: a power of two dividing N, at most 16
    if (this.gemvLanes > 1) while (NL < 16 && N % (2 * NL) === 0) NL *= 2;
    // mix_in needs at least two rows (an x row and a z row) per workgroup of 256.
    return { LANES: this.rowLanes(D, 128), NL };
  }

  /** step.wgsl's defines for matrices in `fmt` (mix_in: the projections; norm_gemv: the head). */
  private stepDefines(cfg: MambaConfig, fmt: GpuWeightFormat = this.opts.dtype): Record<string, string | number | boolean> {
    const shape = this.fusedStep(cfg);
    if (!shape) throw new Error('the fused decode step does not apply to this model on this device');
    const { dConv: K, dtRank: R, dState: N } = cfg;
    return { ...this.weightDefines(fmt), K, N, R, ...shape };
  }

  private rowParams(D: number, rows: number, m: MatLayout, eps: number): ArrayBuffer {
    const params = new ArrayBuffer(32);
    const quant = m.fmt === 'q8' || m.fmt === 'q4';
    new Uint32Array(params, 0, 4).set([D, rows, quant ? m.ks : m.ks / 4, m.ss]);
    new Float32Array(params, 16, 1)[0] = eps;
    return params;
  }

  /**
   * RMSNorm → in_proj x and z rows → causal conv step → SiLU, for one token.    h [D] → u [C], z [E]
   * (C = E for Mamba-1; Mamba-2's x | B | C rows, C = E + 2GN.)
   */
  mixIn(h: GpuBuf, L: AnyLayerWeights<GpuWeight>, convState: GpuBuf, u: GpuBuf, z: GpuBuf, cfg: MambaConfig): void {
    const wx = this.mat(L.inProjX), wz = this.mat(L.inProjZ);
    const vec = this.mixPack(L, cfg);
    const C = convChannels(cfg);
    this.call(`mix_in:${h.id}:${vec.id}:${convState.id}:${u.id}:${z.id}`, () => {
      const defines = this.stepDefines(cfg);
      const params = this.rowParams(cfg.dModel, C, wx, cfg.eps);
      new Uint32Array(params, 20, 1)[0] = cfg.dInner; // z rows
      return {
        pipeline: this.pipeline('step', 'mix_in', defines),
        buffers: [h.buffer, vec.buffer, wx.parts[0].buffer, wz.parts[0].buffer, convState.buffer, u.buffer, z.buffer],
        params,
        // 256 / LANES rows a workgroup: half x rows, half z rows of as many channels
        workgroups: [Math.ceil(C / (128 / (defines.LANES as number))), 1, 1],
      };
    });
  }

  /**
   * Mamba-2: RMSNorm → in_proj dt row → Δ → SSD state update → C readout → D skip, per head, for one
   * token.    h [D], xbc [C] (after the conv) → state [H, P, N], y [E]
   */
  ssdStep(h: GpuBuf, xbc: GpuBuf, L: Mamba2LayerWeights<GpuWeight>, state: GpuBuf, y: GpuBuf, cfg: MambaConfig): void {
    const { nHeads: H, headDim: P, nGroups: G, dtMin, dtMax } = cfg.mamba2!;
    const wdt = this.mat(L.inProjDt);
    const vec = this.mixPack(L, cfg);
    this.call(`ssd_step:${h.id}:${vec.id}:${xbc.id}:${state.id}:${y.id}`, () => {
      const defines = this.stepDefines(cfg);
      const params = new ArrayBuffer(48);
      new Uint32Array(params, 0, 6).set([cfg.dModel, wdt.ks / 4, H, P, G, mixLayout(cfg).oX]);
      new Float32Array(params, 24, 3).set([cfg.eps, dtMin, Math.min(dtMax, 3.4e38)]);
      return {
        pipeline: this.pipeline('step', 'ssd_step', defines),
        buffers: [h.buffer, vec.buffer, wdt.parts[0].buffer, xbc.buffer, state.buffer, y.buffer],
        params,
        workgroups: [H, Math.ceil(P / (256 / (defines.NL as number))), 1],
      };
    });
  }

  /** Mamba-2: gated RMSNorm (per group) → out_proj → + bias, added to the residual.    y, z [E] → h [D] */
  gateOut(y: GpuBuf, z: GpuBuf, L: Mamba2LayerWeights<GpuWeight>, h: GpuBuf, cfg: MambaConfig): void {
    const { normGroupSize: S, normEps, normBeforeGate } = cfg.mamba2!;
    const m = this.mat(L.outProj);
    const vec = this.mixPack(L, cfg);
    this.call(`gate_out:${y.id}:${z.id}:${vec.id}:${h.id}`, () => {
      const defines = this.stepDefines(cfg);
      const E = cfg.dInner;
      const NG = E / S;
      let GL = 256; // lanes a group: the largest power of two with GL · NG ≤ 256
      while (GL * NG > 256) GL /= 2;
      const o = mixLayout(cfg);
      const params = new ArrayBuffer(48);
      new Uint32Array(params, 0, 8).set([cfg.dModel, E / 4, m.ks / 4, S / 4, NG, GL, o.oW / 4, o.oO]);
      new Float32Array(params, 32, 1)[0] = normEps;
      new Uint32Array(params, 36, 1)[0] = normBeforeGate ? 1 : 0;
      return {
        pipeline: this.pipeline('step', 'gate_out', defines),
        buffers: [y.buffer, vec.buffer, m.parts[0].buffer, z.buffer, h.buffer],
        params,
        workgroups: [Math.ceil(cfg.dModel / (256 / (defines.LANES as number))), 1, 1],
      };
    });
  }

  /** dt_proj → Δ → the selective scan step → D skip → SiLU(z) gate.    u, z [E], dbc [R+2N] → y [E] */
  scanStep(u: GpuBuf, dbc: GpuBuf, z: GpuBuf, L: LayerWeights<GpuWeight>, state: GpuBuf, y: GpuBuf, cfg: MambaConfig): void {
    const prm = this.scanPack(L, cfg);
    this.call(`scan_step:${u.id}:${prm.id}:${dbc.id}:${z.id}:${state.id}:${y.id}`, () => {
      const defines = this.stepDefines(cfg);
      return {
        pipeline: this.pipeline('step', 'scan_step', defines),
        buffers: [u.buffer, prm.buffer, dbc.buffer, z.buffer, state.buffer, y.buffer],
        params: new Uint32Array([cfg.dInner, 0, 0, 0]).buffer,
        workgroups: [Math.ceil(cfg.dInner / (256 / (defines.NL as number))), 1, 1],
      };
    });
  }

  /** Final RMSNorm → LM head, for one token.    h [D] → logits [V] */
  normHead(h: GpuBuf, norm: GpuWeight, head: GpuWeight, logits: GpuBuf, cfg: MambaConfig): void {
    const m = this.mat(head);
    const g = this.raw(norm);
    this.call(`norm_gemv:${h.id}:${g.id}:${m.parts[0].id}:${logits.id}`, () => {
      const defines = this.stepDefines(cfg, m.fmt);
      return {
        pipeline: this.pipeline('step', 'norm_gemv', defines),
        // The head is bound twice: norm_gemv shares norm_dot, which names mix_in's second matrix too.
        buffers: [h.buffer, g.buffer, m.parts[0].buffer, m.parts[0].buffer, logits.buffer],
        params: this.rowParams(cfg.dModel, cfg.vocabSize, m, cfg.eps),
        workgroups: [Math.ceil(cfg.vocabSize / (256 / (defines.LANES as number))), 1, 1],
      };
    });
  }

  // ---- read back --------------------------------------------------------------------------------

  read(buf: GpuBuf, floats: number, offsetFloats = 0): Promise<Float32Array> {
    const run = this.readLock.then(() => this.readNow(buf.buffer, floats, offsetFloats));
    this.readLock = run.catch(() => undefined);
    return run;
  }

  /** Greedy decoding on the GPU: the index of the largest of `V` logits starting at `offsetFloats`. */
  async argmax(logits: GpuBuf, V: number, offsetFloats = 0): Promise<{ index: number; value: number }> {
    const [best] = await this.select('argmax', logits, V, 1, offsetFloats);
    return best;
  }

  /** The `k` largest of `V` logits starting at `offsetFloats`, largest first (ties: lower index first). */
  topk(logits: GpuBuf, V: number, k: number, offsetFloats = 0): Promise<{ index: number; value: number }[]> {
    if (!Number.isInteger(k) || k < 1 || k > V) throw new RangeError(`topk: k must be in [1, ${V}], got ${k}`);
    return this.select('topk', logits, V, k, offsetFloats);
  }

  private async select(entry: 'argmax' | 'topk', logits: GpuBuf, V: number, k: number, offsetFloats: number) {
    if (!this.selectOut || this.selectOut.floats < 2 * k) {
      if (this.selectOut) this.free(this.selectOut);
      this.selectOut = this.alloc(Math.max(2 * k, 64));
    }
    const result = this.selectOut;
    this.call(`${entry}:${logits.id}:${result.id}:${V}:${k}:${offsetFloats}`, () => ({
      pipeline: this.pipeline('sample', entry, {}),
      buffers: [logits.buffer, result.buffer],
      params: new Uint32Array([V, offsetFloats, k, 0]).buffer,
      workgroups: [1, 1, 1],
    }));
    const f = await this.read(result, 2 * k);
    const u = new Uint32Array(f.buffer);
    return Array.from({ length: k }, (_, i) => ({ index: u[2 * i], value: f[2 * i + 1] }));
  }
  private selectOut: GpuBuf | undefined;

  /**
   * While set, `embed` reads the token id already on the GPU (written by `argmaxFeed`) instead of
   * uploading one: chained greedy decoding, where no step waits for the host.
   */
  residentTokens = false;

  /** SplitMix32 state of the on-GPU sampler [1]. */
  private rngState: GpuBuf | undefined;

  /** Seeds the on-GPU sampler's random stream (ordered before the next submit). */
  seedSampler(seed: number): void {
    this.rngState ??= this.alloc(4);
    this.device.queue.writeBuffer(this.rngState.buffer, 0, Uint32Array.of(seed >>> 0));
  }

  /**
   * Records: a token drawn from logits [V] with temperature / top-k / top-p → the next step's input
   * token and `chain[step]` (`logitsAt` as in `argmaxFeed`). Any V; the draw is among at most the
   * 256 most likely tokens (sample.wgsl says when that differs from the host sampler).
   */
  sampleFeed(logits: GpuBuf, V: number, chain: GpuBuf, step: number, logitsAt: number, s: { temperature: number; topK: number; topP: number }): void {
    this.rngState ??= this.alloc(4);
    const rngState = this.rngState;
    this.call(`sample_feed:${logits.id}:${chain.id}:${this.tokens.id}:${rngState.id}:${V}:${step}:${logitsAt}:${s.temperature}:${s.topK}:${s.topP}`, () => {
      const params = new ArrayBuffer(32);
      new Uint32Array(params, 0, 4).set([V, step, logitsAt, s.topK]);
      new Float32Array(params, 16, 2).set([s.temperature, s.topP]);
      return {
        pipeline: this.pipeline('sample', 'sample_feed', {}),
        buffers: [logits.buffer, chain.buffer, this.tokens.buffer, rngState.buffer],
        params,
        workgroups: [1, 1, 1],
      };
    });
  }

  /**
   * Records: argmax of logits [V] → the next step's input token and `chain[step]`; with
   * `logitsAt > 0` the logits are also copied to `chain[logitsAt ..]` (the block's last step).
   */
  argmaxFeed(logits: GpuBuf, V: number, chain: GpuBuf, step: number, logitsAt = 0): void {
    this.call(`argmax_feed:${logits.id}:${chain.id}:${this.tokens.id}:${V}:${step}:${logitsAt}`, () => ({
      pipeline: this.pipeline('sample', 'argmax_feed', {}),
      buffers: [logits.buffer, chain.buffer, this.tokens.buffer],
      params: new Uint32Array([V, 0, step, logitsAt]).buffer,
      workgroups: [1, 1, 1],
    }));
  }

  private async readNow(src: GPUBuffer, floats: number, offsetFloats: number): Promise<Float32Array> {
    this.check();
    const bytes = floats * 4;
    if (!this.staging || this.staging.size < bytes) {
      this.staging?.destroy();
      // Grow geometrically: want:'all' reads of different chunk lengths must not reallocate each time.
      this.staging = this.buffer(Math.max(bytes, 2 * (this.staging?.size ?? 0)), USAGE_MAP_READ, 'staging');
    }
    const staging = this.staging;
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, offsetFloats * 4, staging, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    return this.mapRead(staging, bytes);
  }

  /** Waits for `staging` to be mappable and returns a copy of its first `bytes`. */
  private async mapRead(staging: GPUBuffer, bytes: number): Promise<Float32Array> {
    try {
      await Promise.race([staging.mapAsync(MAP_MODE_READ, 0, bytes), this.lost]);
    } catch (e) {
      // mapAsync fails when the device went away under it; report that, not the bare AbortError.
      throw this.failure ?? (e instanceof DeviceLostError ? e : new DeviceLostError(`WebGPU read-back failed: ${(e as Error).message}`, { cause: e }));
    }
    const out = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
    staging.unmap();
    this.check(); // an error raised by the work just read makes its result untrustworthy
    return out;
  }

  /** Staging buffers of `endAndRead` not in use now. */
  private readonly stagingPool: GPUBuffer[] = [];

  /**
   * Ends the recording (as `end()`) with a copy of `floats` values of `buf` into a staging buffer of
   * its own, in the same submission, and returns them once mapped. Unlike `read`, nothing recorded
   * later can overwrite `buf` before the copy, so several submissions' reads can be in flight at
   * once: pipelined decode blocks.
   */
  endAndRead(buf: GpuBuf, floats: number): Promise<Float32Array> {
    if (!this.encoder || !this.pass) throw new Error('endAndRead: not recording (call begin() first)');
    const bytes = floats * 4;
    const i = this.stagingPool.findIndex((b) => b.size >= bytes);
    const staging = i >= 0 ? this.stagingPool.splice(i, 1)[0] : this.buffer(bytes, USAGE_MAP_READ, 'staging');
    this.owned.add(staging);
    this.pass.end();
    this.encoder.copyBufferToBuffer(buf.buffer, 0, staging, 0, bytes);
    const cmd = this.encoder.finish();
    this.encoder = null;
    this.pass = null;
    this.device.queue.submit([cmd]);
    return this.mapRead(staging, bytes).finally(() => this.stagingPool.push(staging));
  }

  /**
   * Records a copy of the next step's input token (as `argmaxFeed`/`sampleFeed` leave it) into a
   * sequence's own slot [1], or back: the token buffer is shared by all sequences, so a block that
   * continues a sequence's previous block restores it first.
   */
  saveFeed(slot: GpuBuf): void {
    this.copyInPass(this.tokens.buffer, slot.buffer);
  }

  loadFeed(slot: GpuBuf): void {
    this.copyInPass(slot.buffer, this.tokens.buffer);
  }

  private copyInPass(src: GPUBuffer, dst: GPUBuffer): void {
    if (!this.encoder || !this.pass) throw new Error('copy: not recording (call begin() first)');
    this.pass.end();
    this.encoder.copyBufferToBuffer(src, 0, dst, 0, 4);
    this.pass = this.encoder.beginComputePass();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Destroys every buffer this object created; the device stays (other models share it). */
  release(): void {
    this.device.removeEventListener('uncapturederror', this.onError);
    for (const b of this.owned) b.destroy();
    this.owned.clear();
    this.staging?.destroy();
    this.staging = null;
    this.calls.clear();
    this.callsByBuffer.clear();
  }

  /** Destroys every buffer this object created, and the device. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.release();
    this.device.destroy();
  }
}
