/**
 * The WASM SIMD CPU backend: AssemblyScript kernels (assembly/) on one linear memory, split over worker
 * threads by output rows / channels. The layer loop is the shared driver (`KernelBackend`); this file
 * only maps the `Kernels` calls onto memory offsets and jobs.
 */
import type { Kernels } from '../backend.js';
import type { BackendOptions, WeightDtype } from '../backends.js';
import { convChannels, type MambaConfig } from '../config.js';
import { DEFAULT_CHUNK, KernelBackend, prefillChunk, uploadWeights } from '../forward.js';
import type { LayerWeights, Mamba2LayerWeights, ModelWeights } from '../weights.js';
import { canTile, DTYPE_CODE, KERNEL, quantizeQ4, quantizeQ8, SCALE_UNIT, tensorBytes, TILE_UNIT, TILED, tileRows, toHalfArray, type DtypeCode } from './layout.js';
import { defaultThreads, WasmRuntime } from './runtime.js';

/** A weight tensor in linear memory. */
export interface WasmTensor {
  dtype: number; // DtypeCode, plus TILED for f16 / q8 / q4 matrices stored in tiles of 4 rows
  ptr: number; // data [rows, cols] (q8 / q4: rows padded to whole blocks; tiled: see layout.ts tileRows)
  scales: number; // q8 / q4 block scales [rows, ceil(cols/32)] (f32 / f16), else 0
  rows: number;
  cols: number;
  /** A float32 copy for kernels that read the tensor directly (scan, conv, norms); -1 if none. */
  f32: number;
  bytes: number;
}

/** Activation / state buffers are plain byte offsets of float32 arrays. */
type Ptr = number;

// Below this many multiply-adds a job is not worth waking the workers (a wake-up costs ~1-5 µs).
const PARALLEL_MIN_WORK = 48 * 1024;
const CHUNKS_PER_THREAD = 2;

/**
 * Which tensors are stored in the requested dtype: the projection and embedding matrices (cols = D or E),
 * which are nearly all the bytes. Vectors and the small per-channel tensors of conv and scan
 * (conv [E, K], A [E, N], dt_proj [E, R]) stay float32; `upload` only sees shapes, so a tensor whose
 * width matches both kinds (tiny models) keeps both forms.
 */
function storagePlan(c: MambaConfig, dtype: DtypeCode, rows: number, cols: number): { dtype: DtypeCode; f32: boolean; tiled: boolean } {
  const matrix = rows > 1 && (cols === c.dModel || cols === c.dInner);
  if (!matrix || dtype === DTYPE_CODE.f32) return { dtype: DTYPE_CODE.f32, f32: true, tiled: false };
  const small = cols === c.dConv || cols === c.dState || cols === c.dtRank;
  return { dtype, f32: small, tiled: canTile(dtype, cols) };
}

function planBytes(c: MambaConfig, dtype: DtypeCode, rows: number, cols: number): number {
  const p = storagePlan(c, dtype, rows, cols);
  const t = tensorBytes(p.dtype, rows, cols, p.tiled);
  const pad = (n: number) => (n === 0 ? 0 : Math.ceil(n / 64) * 64);
  return pad(t.data) + pad(t.scales) + (p.f32 && p.dtype !== DTYPE_CODE.f32 ? pad(rows * cols * 4) : 0);
}

class WasmKernels implements Kernels<Ptr, WasmTensor> {
  private tokens: Ptr;
  private tokenCap = DEFAULT_CHUNK;
  /** Bytes of every uploaded tensor in its storage format (not counting f32 side copies). */
  weightBytes = 0;

  constructor(
    private readonly rt: WasmRuntime,
    private readonly config: MambaConfig,
    private readonly dtype: DtypeCode,
  ) {
    this.tokens = rt.allocBytes(4 * this.tokenCap); // u32 ids
  }

  upload(data: Float32Array, rows: number, cols: number): WasmTensor {
    const rt = this.rt;
    const plan = storagePlan(this.config, this.dtype, rows, cols);
    const size = tensorBytes(plan.dtype, rows, cols, plan.tiled);
    const ptr = rt.allocBytes(size.data);
    const scales = size.scales > 0 ? rt.allocBytes(size.scales) : 0;
    const v = rt.views();
    if (plan.dtype === DTYPE_CODE.f32) v.f32.set(data, ptr >> 2);
    else {
      // Row-major first (into a temporary when the rows get tiled), as the formats' reference code writes it.
      const flat = tensorBytes(plan.dtype, rows, cols);
      const at = (p: number, bytes: number) => (plan.tiled ? new Uint8Array(bytes) : new Uint8Array(v.u8.buffer, p, bytes));
      const rm = at(ptr, flat.data);
      const rs = at(scales, flat.scales);
      if (plan.dtype === DTYPE_CODE.f16) toHalfArray(data, new Uint16Array(rm.buffer, rm.byteOffset, rows * cols));
      else if (plan.dtype === DTYPE_CODE.q4) quantizeQ4(data, rows, cols, rm, new Uint16Array(rs.buffer, rs.byteOffset, flat.scales / 2));
      else quantizeQ8(data, rows, cols, new Int8Array(rm.buffer, rm.byteOffset, flat.data), new Float32Array(rs.buffer, rs.byteOffset, flat.scales / 4));
      if (plan.tiled) {
        tileRows(rm, rows, flat.data / rows, TILE_UNIT[plan.dtype], new Uint8Array(v.u8.buffer, ptr, size.data));
        // q8 / q4 scales [rows, blocks] follow the tiles: one scale per row and block.
        if (flat.scales > 0) tileRows(rs, rows, flat.scales / rows, SCALE_UNIT[plan.dtype as 2 | 3], new Uint8Array(v.u8.buffer, scales, size.scales));
      }
    }
    let f32 = plan.dtype === DTYPE_CODE.f32 ? ptr : -1;
    if (plan.f32 && f32 < 0) {
      f32 = rt.allocBytes(rows * cols * 4);
      rt.views().f32.set(data, f32 >> 2);
    }
    const bytes = size.data + size.scales;
    this.weightBytes += bytes;
    return { dtype: plan.dtype | (plan.tiled ? TILED : 0), ptr, scales, rows, cols, f32, bytes };
  }

  alloc(floats: number): Ptr {
    return this.rt.allocBytes(floats * 4);
  }

  free(buf: Ptr): void {
    this.rt.free(buf);
  }

  write(buf: Ptr, data: Float32Array): void {
    this.rt.views().f32.set(data, buf >> 2);
  }

  async read(buf: Ptr, floats: number, offsetFloats = 0): Promise<Float32Array> {
    const start = (buf >> 2) + offsetFloats;
    return this.rt.views().f32.slice(start, start + floats);
  }

  embed(tokens: Uint32Array, table: WasmTensor, out: Ptr, T: number, D: number): void {
    if (T > this.tokenCap) {
      this.rt.free(this.tokens);
      this.tokenCap = T;
      this.tokens = this.rt.allocBytes(4 * T);
    }
    this.rt.views().i32.set(tokens.subarray(0, T), this.tokens >> 2); // ids < vocab < 2^31: same bits as u32
    this.rt.run(KERNEL.EMBED, [table.dtype, this.tokens, table.ptr, table.scales, out, D, T], 1);
  }

  rmsnorm(x: Ptr, w: WasmTensor, out: Ptr, T: number, dim: number, eps: number): void {
    this.job(KERNEL.NORM, [x, w.f32, out, dim, WasmRuntime.floatArg(eps), T], T * dim);
  }

  normSegments(x: Ptr, T: number, segments: readonly number[], eps: number): void {
    if (segments.length !== 3) throw new RangeError('normSegments: the wasm kernel takes three segments');
    const [s0, s1, s2] = segments;
    this.job(KERNEL.NORM_SEGMENTS, [x, s0, s1, s2, WasmRuntime.floatArg(eps), T], T * (s0 + s1 + s2));
  }

  matmul(x: Ptr, w: WasmTensor, bias: WasmTensor | undefined, out: Ptr, T: number, K: number, N: number, accumulate: boolean): void {
    const args = [w.dtype, x, K, w.ptr, w.scales, bias?.f32 ?? 0, out, N, T, K, N, accumulate ? 1 : 0];
    this.job(KERNEL.MATMUL, args, T * K * N, N);
  }

  conv1d(x: Ptr, state: Ptr, w: WasmTensor, bias: WasmTensor | undefined, out: Ptr, T: number, E: number, K: number): void {
    // Per channel and token: K taps, the state shift and a SiLU, about 32 multiply-adds' worth (measured).
    this.job(KERNEL.CONV, [x, state, w.f32, bias?.f32 ?? 0, out, T, E, K], T * E * 32, E);
  }

  scan(u: Ptr, dbc: Ptr, z: Ptr, L: LayerWeights<WasmTensor>, state: Ptr, out: Ptr, T: number, c: MambaConfig): void {
    const { dInner: E, dtRank: R, dState: N } = c;
    const args = [u, dbc, z, L.dtProjW.f32, L.dtProjB.f32, L.A.f32, L.D.f32, state, out, T, E, R, N];
    // Each state element costs an exp (~20 SIMD ops for 4 lanes) plus the update.
    this.job(KERNEL.SCAN, args, T * E * (R + 8 * N), E);
  }

  ssd(xbc: Ptr, dt: Ptr, L: Mamba2LayerWeights<WasmTensor>, state: Ptr, y: Ptr, T: number, c: MambaConfig): void {
    const { dState: N } = c;
    const { nHeads: H, headDim: P, nGroups: G, dtMin, dtMax } = c.mamba2!;
    if (T > DEFAULT_CHUNK) throw new RangeError(`ssd: one call is one SSD chunk of at most ${DEFAULT_CHUNK} tokens, got ${T}`);
    const args = [xbc, dt, L.dtBias.f32, L.A.f32, L.D.f32, state, y, T, N, H, P, G, WasmRuntime.floatArg(dtMin), WasmRuntime.floatArg(dtMax)];
    // Per head: the [T, T] mask (N each), y (T·P·(N + T/2)) and the state update (T·P·N).
    this.job(KERNEL.SSD, args, H * T * (T * N + P * (2 * N + T)), H * 4);
  }

  gatedNorm(y: Ptr, z: Ptr, w: WasmTensor, out: Ptr, T: number, c: MambaConfig): void {
    const { normGroupSize: S, normEps, normBeforeGate } = c.mamba2!;
    this.job(KERNEL.GATED_NORM, [y, z, w.f32, out, c.dInner, S, WasmRuntime.floatArg(normEps), normBeforeGate ? 1 : 0, T], T * c.dInner * 8);
  }

  /**
   * Runs a job of `work` multiply-adds over `rows` independent rows (split in runs of 4) in two chunks per
   * thread, so that a thread the OS is slow to schedule costs at most a small share of the job. `work`
   * also tells the runtime which jobs have the same shape (it times them to decide whether to split).
   */
  private job(kernel: number, args: number[], work: number, rows = Infinity): void {
    const parts = work < PARALLEL_MIN_WORK || this.rt.threads === 1 ? 1 : Math.min(CHUNKS_PER_THREAD * this.rt.threads, Math.ceil(rows / 4));
    this.rt.run(kernel, args, parts, work);
  }
}

/** KernelBackend that also owns the runtime, so dispose() stops the worker threads. */
export class WasmBackend extends KernelBackend<Ptr, WasmTensor> {
  constructor(
    readonly runtime: WasmRuntime,
    private readonly kernels: WasmKernels,
    description: string,
    config: MambaConfig,
    weights: ModelWeights,
  ) {
    super('wasm', description, kernels, config, weights, prefillChunk(config, 'wasm'));
  }

  /** Bytes of all uploaded weights (in their storage dtype). */
  get weightBytes(): number {
    return this.kernels.weightBytes;
  }

  /** Bytes streamed for each decoded token: every weight except the embedding (one row), unless it is the tied head. */
  get decodeWeightBytes(): number {
    const { embedding, lmHead } = this.w;
    return this.kernels.weightBytes - (embedding === lmHead ? 0 : embedding.bytes);
  }

  override dispose(): void {
    super.dispose();
    this.runtime.dispose();
  }
}

/**
 * Creates the wasm backend: `dtype` is the storage of the projection/embedding matrices, `threads` the
 * number of threads including the caller's (default: available cores; 1 without SharedArrayBuffer), over which
 * jobs are split only while that measures faster than the caller's thread alone (src/wasm/runtime.ts Pacer).
 */
export async function createWasmBackend(config: MambaConfig, weights: ModelWeights, o: BackendOptions): Promise<WasmBackend> {
  const dtypeName: WeightDtype = o.dtype ?? 'f32';
  const dtype = DTYPE_CODE[dtypeName];
  const { dModel: D, dInner: E, dtRank: R, dState: N, vocabSize: V, nLayer, dConv: K } = config;

  // Size the memory before creating it: a dry run of the upload counts every tensor's bytes.
  let weightBytes = 0;
  const sizer = {
    upload: (_d: Float32Array, rows: number, cols: number) => {
      weightBytes += planBytes(config, dtype, rows, cols);
      return 0;
    },
  } as unknown as Kernels<number, number>;
  uploadWeights(sizer, config, weights);
  const Q = prefillChunk(config, 'wasm');
  const C = convChannels(config);
  // The scratch of forward.ts: h, xn [Q, D]; x, u [Q, C]; z, y [Q, E]; dbc; logits [Q, V].
  const activationBytes = 4 * Q * (2 * D + 2 * C + 2 * E + Math.max(R + 2 * N, config.mamba2?.nHeads ?? 0) + V) + 16 * 64;
  const stateBytes = 4 * nLayer * (C * (K - 1) + E * N) + 2 * nLayer * 64;
  const runtime = await WasmRuntime.create({
    threads: o.threads ?? (await defaultThreads()),
    reserveBytes: weightBytes + activationBytes + 4 * stateBytes + 4096,
    growBytes: Math.max(256 * 2 ** 20, 32 * stateBytes),
    // f16/q8 GEMVs keep a converted x; Mamba-2's SSD its [T, T] mask (assembly/ssd.ts).
    scratchBytesPerThread: Math.max(4 * 4 * Math.max(D, E), config.mamba2 ? 4 * (Q * Q + 3 * Q) : 0),
  });
  try {
    const kernels = new WasmKernels(runtime, config, dtype);
    const threads = runtime.threads;
    const simd = runtime.relaxed ? 'wasm simd (relaxed: fma, int8 dot)' : runtime.relaxedRefused ? `wasm simd (${runtime.relaxedRefused}: not used)` : 'wasm simd';
    const description = `${simd}, ${threads} thread${threads === 1 ? '' : 's'}, ${dtypeName}${runtime.threadNote ? ` (${runtime.threadNote})` : ''}`;
    return new WasmBackend(runtime, kernels, description, config, weights);
  } catch (e) {
    runtime.dispose();
    throw e;
  }
}
