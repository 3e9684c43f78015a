/**
 * The WebAssembly side of the CPU backend: one linear memory laid out by TypeScript (a bump allocator
 * with exact-size free lists), the kernel module from build/mamba.wasm, and a pool of worker threads
 * that instantiate the same module on the same shared memory.
 *
 * Jobs: the coordinating thread (where the synchronous kernel calls happen) writes a kernel id and its
 * arguments into a control block in shared memory and bumps SEQ; then it and the workers claim chunks of
 * the job (a CAS on CLAIM) and run them through the module's `runJob` until none is left, and the
 * coordinator waits until DONE counts them all. Workers poll SEQ for SPIN_US, then Atomics.wait on it; the
 * coordinator likewise polls DONE, then waits. A worker the OS does not schedule (a busy machine) simply
 * claims nothing: the coordinator runs the remaining chunks itself and waits only for chunks a worker has
 * claimed. Whether jobs are split at all is measured as they run (`Pacer`): on a machine whose cores are
 * taken by other processes, one thread can be faster than several.
 */
import { assetUrl, readAsset } from '../assets.js';
import { BackendUnavailableError, MambaError, OutOfMemoryError } from '../errors.js';
import { CTL, DTYPE_CODE, KERNEL, MAX_CHUNKS, quantizeQ4, quantizeQ8, SCRATCH_HEADER, tensorBytes } from './layout.js';

const PAGE = 65536;
const MAX_PAGES = 65536; // wasm32: 4 GiB
const ALIGN = 64; // cache line: keeps SIMD rows and per-thread areas from sharing lines
const WORKER_START_MS = 15_000;
/**
 * µs that an idle thread polls before it blocks (workers on SEQ, the coordinator on DONE). The jobs of one
 * decoded token follow each other within ~6 µs (p99) and a chunk lasts ~5-100 µs, so 50 µs keeps threads
 * hot within a token; between tokens (~90 µs of JavaScript) they sleep, and a wake-up costs ~10-50 µs once
 * per token. Polling for milliseconds (2 ms before) took a core from other processes, and from this
 * process's own coordinator when a busy process held the other core.
 */
const SPIN_US = 50;

/** The kernel exports of build/mamba.wasm that TypeScript calls directly. */
export interface KernelExports {
  runJob(ctl: number, part: number, thread: number): void;
  heapBase(): number;
  argmax(logits: number, n: number): number;
  topk(logits: number, n: number, k: number, outIdx: number, outVal: number): number;
}

/** `WebAssembly.validate` of a minimal function returning a v128 constant. */
export function simdSupported(): boolean {
  // prettier-ignore
  const probe = new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // type: () -> v128
    0x03, 0x02, 0x01, 0x00, // one function of type 0
    0x0a, 0x16, 0x01, 0x14, 0x00, 0xfd, 0x0c, ...new Array(16).fill(0), 0x0b, // v128.const 0; end
  ]);
  try {
    return typeof WebAssembly === 'object' && WebAssembly.validate(probe);
  } catch {
    return false;
  }
}

/** Whether a shared WebAssembly.Memory can be created (SharedArrayBuffer; cross-origin isolation in browsers). */
function sharedMemorySupported(): boolean {
  if (typeof SharedArrayBuffer === 'undefined') return false;
  try {
    return new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}

const isNode = typeof process === 'object' && typeof process.versions?.node === 'string' && typeof (globalThis as { Deno?: unknown }).Deno === 'undefined';
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno === 'object';

/**
 * The most threads the runtime may use: os.availableParallelism() in Node, navigator.hardwareConcurrency
 * elsewhere. Whether jobs are split over them is measured while they run (`Pacer`), since what a machine
 * can give changes with the other processes on it.
 */
export async function defaultThreads(): Promise<number> {
  if (isNode) {
    const os = await import('node:os');
    return os.availableParallelism?.() ?? os.cpus().length;
  }
  return (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
}

/** Whether this thread may block in Atomics.wait (not on a browser's main thread). */
function canBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}

interface Modules {
  /** Shared-memory build: build/mamba-relaxed.wasm where the engine validates relaxed SIMD and computes with it what build/mamba.wasm computes, else build/mamba.wasm. */
  shared: WebAssembly.Module | null;
  relaxed: boolean;
  /** Why the engine's relaxed build was not taken although it validates ('' = taken, or not offered). */
  relaxedRefused: string;
  /** Non-shared build (no SharedArrayBuffer), build/mamba-st.wasm. */
  single: WebAssembly.Module | null;
}
let moduleCache: Promise<Modules> | undefined;

/** Compiles a packaged module; null if it is missing or (`optional`) this engine rejects it. */
async function compile(file: string, optional = false): Promise<WebAssembly.Module | null> {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = (await readAsset(file)) as Uint8Array<ArrayBuffer>;
  } catch {
    return null;
  }
  if (optional && !WebAssembly.validate(bytes)) return null;
  return WebAssembly.compile(bytes);
}

function loadModules(): Promise<Modules> {
  moduleCache ??= (async () => {
    // Relaxed SIMD (fused multiply-add, int8 dot products) is on by default in Chromium and Deno, behind a flag in Node 20.
    let relaxed = await compile('build/mamba-relaxed.wasm', true);
    const simd128 = await compile('build/mamba.wasm');
    let relaxedRefused = '';
    if (relaxed && simd128 && sharedMemorySupported()) {
      relaxedRefused = await relaxedDisagrees(relaxed, simd128);
      if (relaxedRefused) relaxed = null;
    }
    return { shared: relaxed ?? simd128, relaxed: relaxed !== null, relaxedRefused, single: await compile('build/mamba-st.wasm') };
  })();
  return moduleCache;
}

/**
 * Why this engine's relaxed-SIMD build cannot be trusted ('' = it can): the q8 and q4 decode GEMVs
 * (int8 dot products) and the f32 and q4 prefill GEMMs (fused multiply-adds) on fixed data, against the
 * SIMD128 build, within 1e-5 of the largest output. The relaxed instructions are young: V8 11.3 (Node 20)
 * returns twice the sum for i32x4.relaxed_dot_i8x16_i7x16_add_s on x64, which the kernels therefore
 * avoid; a wrong lowering of the ones they use would give wrong logits and no error, so the build is
 * checked before it is used, as WebGPU adapters are (src/webgpu/selfcheck.ts).
 */
export async function relaxedDisagrees(relaxed: WebAssembly.Module, simd128: WebAssembly.Module): Promise<string> {
  const N = 8, K = 96, T = 3;
  let seed = 0x5eed;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const w = Float32Array.from({ length: N * K }, rand);
  const x = Float32Array.from({ length: T * K }, rand);
  const run = async (mod: WebAssembly.Module, dtype: number, t: number): Promise<Float32Array> => {
    const memory = new WebAssembly.Memory({ initial: 4, maximum: 4, shared: true });
    const k = (await WebAssembly.instantiate(mod, imports(memory))).exports as unknown as KernelExports & {
      matmul(dtype: number, x: number, ldx: number, w: number, scales: number, bias: number, out: number, ldo: number, T: number, K: number, r0: number, r1: number, acc: number, scratch: number): void;
    };
    const size = tensorBytes(dtype as 0 | 2 | 3, N, K);
    const at = align(k.heapBase());
    const [px, pw, ps, po, scratch] = [at, at + 4096, at + 8192 + align(size.data), at + 16384 + align(size.data), at + 20480 + align(size.data)];
    const u8 = new Uint8Array(memory.buffer);
    new Float32Array(memory.buffer, px, T * K).set(x);
    if (dtype === DTYPE_CODE.f32) new Float32Array(memory.buffer, pw, N * K).set(w);
    else if (dtype === DTYPE_CODE.q8) quantizeQ8(w, N, K, new Int8Array(memory.buffer, pw, size.data), new Float32Array(memory.buffer, ps, size.scales / 4));
    else quantizeQ4(w, N, K, u8.subarray(pw, pw + size.data), new Uint16Array(memory.buffer, ps, size.scales / 2));
    k.matmul(dtype, px, K, pw, ps, 0, po, N, t, K, 0, N, 0, scratch);
    return new Float32Array(memory.buffer, po, t * N).slice();
  };
  const cases: [string, number, number][] = [['q8 decode', DTYPE_CODE.q8, 1], ['q4 decode', DTYPE_CODE.q4, 1], ['f32 prefill', DTYPE_CODE.f32, T], ['q4 prefill', DTYPE_CODE.q4, T]];
  for (const [name, dtype, t] of cases) {
    try {
      const [got, want] = [await run(relaxed, dtype, t), await run(simd128, dtype, t)];
      let max = 0, diff = 0;
      for (let i = 0; i < want.length; i++) (max = Math.max(max, Math.abs(want[i]))), (diff = Math.max(diff, Math.abs(got[i] - want[i])));
      if (!(diff <= 1e-5 * max)) return `relaxed SIMD ${name} off by ${(diff / max).toExponential(1)} of the SIMD128 build's`;
    } catch (e) {
      return `relaxed SIMD ${name} failed: ${(e as Error).message}`;
    }
  }
  return '';
}

interface ThreadHandle {
  terminate(): void;
}

export interface RuntimeOptions {
  /** Threads including the coordinating one; 1 = no workers. */
  threads: number;
  /** Bytes the caller will allocate up front (weights, activations): the initial memory. */
  reserveBytes: number;
  /** Extra room for later allocations (recurrent states): memory may grow up to reserve + this. */
  growBytes: number;
  /** Bytes of private scratch per thread (q8/f16 prefill tiles). */
  scratchBytesPerThread: number;
  /** Measure whether splitting jobs pays and run them on this thread alone while it does not (default true). */
  adaptive?: boolean;
}

/** What the job runner did: for the bench and tests. */
export interface JobStats {
  /** Jobs split over the threads, and jobs that could have been but ran on this thread (see Pacer). */
  threadedJobs: number;
  soloJobs: number;
  /** Chunks of the threaded jobs, and how many of them the coordinating thread ran itself. */
  chunks: number;
  ownChunks: number;
  /** Times the coordinator blocked in Atomics.wait for a chunk a worker had claimed. */
  coordinatorWaits: number;
  /** Switches between split and single-thread runs that the measurements decided. */
  switches: number;
}

export class WasmRuntime {
  readonly memory: WebAssembly.Memory;
  readonly exports: KernelExports;
  /** Threads taking part in jobs, the caller's included (fewer than asked when workers cannot run). */
  threads: number;
  /** Why fewer threads than asked for run (no SharedArrayBuffer, workers failed to start), or ''. */
  threadNote: string;
  /** The kernels use relaxed-SIMD fused multiply-adds. */
  readonly relaxed: boolean;
  /** Why the engine's relaxed-SIMD build was refused ('' = not refused): it computed differently from SIMD128. */
  relaxedRefused = '';
  f32!: Float32Array;
  i32!: Int32Array;
  u8!: Uint8Array;
  private top: number;
  private readonly freeLists = new Map<number, number[]>();
  private readonly sizes = new Map<number, number>();
  private readonly ctlPtr: number;
  private ctl!: Int32Array; // the control block; re-created with the other views
  private readonly workers: ThreadHandle[];
  private readonly block: boolean;
  private disposed = false;
  private readonly pacer: Pacer | null;
  private spinUs = SPIN_US;
  readonly stats: JobStats = { threadedJobs: 0, soloJobs: 0, chunks: 0, ownChunks: 0, coordinatorWaits: 0, switches: 0 };

  private constructor(memory: WebAssembly.Memory, instance: WebAssembly.Instance, threads: number, note: string, relaxed: boolean, o: RuntimeOptions) {
    this.memory = memory;
    this.relaxed = relaxed;
    this.exports = instance.exports as unknown as KernelExports;
    this.threads = threads;
    this.threadNote = note;
    this.refreshViews();
    this.top = align(this.exports.heapBase() + 1024);
    this.ctlPtr = this.allocBytes(CTL.WORDS * 4);
    this.refreshViews();
    const stride = align(o.scratchBytesPerThread + SCRATCH_HEADER);
    this.ctl[CTL.SCRATCH_STRIDE] = stride;
    this.ctl[CTL.SCRATCH] = this.allocBytes(threads * stride);
    this.ctl[CTL.RESULT] = this.allocBytes(MAX_CHUNKS * 4);
    this.ctl[CTL.SPIN_US] = this.spinUs;
    this.workers = [];
    this.block = canBlock();
    this.pacer = o.adaptive === false ? null : new Pacer(this.stats);
  }

  /** Creates the memory, instantiates the module and starts `threads - 1` workers. */
  static async create(o: RuntimeOptions): Promise<WasmRuntime> {
    if (!simdSupported()) throw new BackendUnavailableError('wasm', 'this WebAssembly engine has no SIMD (v128) support');
    const mods = await loadModules();
    if (!mods.shared && !mods.single) {
      throw new BackendUnavailableError('wasm', 'build/mamba.wasm is missing: run `npm run build:wasm`');
    }
    let threads = Math.max(1, Math.floor(o.threads));
    let note = '';
    const shared = mods.shared !== null && sharedMemorySupported();
    if (!shared && threads > 1) {
      note = 'SharedArrayBuffer unavailable: 1 thread';
      threads = 1;
    }
    const fixed = 64 * 1024 + threads * (align(o.scratchBytesPerThread + SCRATCH_HEADER) + 64) + 4 * ALIGN;
    const initialBytes = o.reserveBytes + fixed + 1024 * 1024;
    const initial = Math.ceil(initialBytes / PAGE);
    if (initial > MAX_PAGES) {
      throw new OutOfMemoryError(
        `the model needs ${(initialBytes / 2 ** 30).toFixed(2)} GiB of WebAssembly memory, more than the 4 GiB wasm32 limit: use dtype 'f16', 'q8' or 'q4'`,
      );
    }
    const maximum = Math.min(MAX_PAGES, initial + Math.ceil(o.growBytes / PAGE));
    let memory: WebAssembly.Memory;
    try {
      memory = new WebAssembly.Memory({ initial, maximum, shared });
    } catch (e) {
      throw new OutOfMemoryError(`cannot reserve ${(initial * PAGE / 2 ** 20).toFixed(0)} MiB of WebAssembly memory: ${(e as Error).message}`);
    }
    const mod = (shared ? mods.shared : mods.single)!;
    const instance = await WebAssembly.instantiate(mod, imports(memory));
    const rt = new WasmRuntime(memory, instance, threads, note, shared && mods.relaxed, o);
    rt.relaxedRefused = shared ? mods.relaxedRefused : '';
    try {
      await rt.startWorkers(mod);
    } catch (e) {
      // Still usable on this thread alone (e.g. a page whose CSP forbids workers).
      rt.stopWorkers();
      rt.threads = 1;
      rt.threadNote = `worker threads unavailable (${(e as Error).message}): 1 thread`;
    }
    return rt;
  }

  private async startWorkers(mod: WebAssembly.Module): Promise<void> {
    const url = assetUrl('workers/wasm-thread.js');
    const init = (index: number) => ({ module: mod, memory: this.memory, ctl: this.ctlPtr, index });
    const started: Promise<void>[] = [];
    // Node's worker_threads, also in Deno: there a Web Worker cannot be unref'd, so a program that ends without
    // dispose() would never exit (the threads sit in Atomics.wait). The browser bundle rejects this import: Web Workers.
    const threads = isNode || isDeno ? await import('node:worker_threads').catch(() => null) : null;
    for (let i = 1; i < this.threads; i++) {
      if (threads) {
        // Workers inherit the process's flags; --input-type (node -e) is refused for a file worker, and so are
        // V8's --experimental-wasm-* (e.g. Node 20's relaxed SIMD), which hold for every isolate anyway.
        const execArgv = isNode ? { execArgv: process.execArgv.filter((a) => !a.startsWith('--input-type') && !a.startsWith('--experimental-wasm-')) } : {};
        const w = new threads.Worker(url, { workerData: init(i), ...execArgv });
        w.unref(); // a blocked compute thread must never keep the process alive
        this.workers.push(w);
        started.push(
          new Promise((resolve, reject) => {
            w.once('message', () => resolve());
            w.once('error', (e) => reject(new Error(e.message)));
          }),
        );
      } else {
        const w = new Worker(url, { type: 'module' });
        this.workers.push(w);
        started.push(
          new Promise((resolve, reject) => {
            w.onmessage = () => resolve();
            w.onerror = (e) => reject(new Error(e.message));
          }),
        );
        w.postMessage(init(i));
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${WORKER_START_MS / 1000} s`)), WORKER_START_MS);
    });
    try {
      await Promise.race([Promise.all(started), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private stopWorkers(): void {
    if (this.workers.length > 0) {
      this.ctl[CTL.KERNEL] = KERNEL.EXIT;
      Atomics.add(this.ctl, CTL.SEQ, 1);
      Atomics.notify(this.ctl, CTL.SEQ);
    }
    for (const w of this.workers) void w.terminate();
    this.workers.length = 0;
  }

  // ---- memory ----

  private refreshViews(): void {
    const buf = this.memory.buffer;
    this.f32 = new Float32Array(buf);
    this.i32 = new Int32Array(buf);
    this.u8 = new Uint8Array(buf);
    // A non-shared memory detaches its old buffer on growth, so even the control block's view is renewed.
    if (this.ctlPtr !== undefined) this.ctl = new Int32Array(buf, this.ctlPtr, CTL.WORDS);
  }

  /** Views over the whole memory, re-created if it grew (views keep the old length otherwise). */
  views(): this {
    if (this.u8.byteLength !== this.memory.buffer.byteLength) this.refreshViews();
    return this;
  }

  /** Zero-filled, 64-byte aligned bytes; reuses freed blocks of the same size. */
  allocBytes(bytes: number): number {
    const size = align(Math.max(bytes, 4));
    const reuse = this.freeLists.get(size)?.pop();
    if (reuse !== undefined) {
      this.views().u8.fill(0, reuse, reuse + size);
      this.sizes.set(reuse, size);
      return reuse;
    }
    const ptr = this.top;
    const end = ptr + size;
    if (end > this.memory.buffer.byteLength) {
      const pages = Math.ceil((end - this.memory.buffer.byteLength) / PAGE);
      try {
        this.memory.grow(pages);
      } catch {
        throw new OutOfMemoryError(
          `WebAssembly memory is exhausted (${(this.memory.buffer.byteLength / 2 ** 20).toFixed(0)} MiB): release sessions you no longer need`,
        );
      }
      this.refreshViews();
    }
    this.top = end;
    this.sizes.set(ptr, size);
    return ptr;
  }

  free(ptr: number): void {
    const size = this.sizes.get(ptr);
    if (size === undefined) return;
    this.sizes.delete(ptr);
    const list = this.freeLists.get(size);
    if (list) list.push(ptr);
    else this.freeLists.set(size, [ptr]);
  }

  /** Bytes of linear memory currently in use. */
  get usedBytes(): number {
    return this.top;
  }

  // ---- jobs ----

  /**
   * Runs `kernel` with `args` split into `parts` chunks (1 = on this thread only), synchronously.
   * Integer args are written as i32; floats must be passed through `floatArg`. `work` (e.g. multiply-adds)
   * identifies jobs of the same shape for the measurements that decide whether to split; 0 = use `parts`.
   */
  run(kernel: number, args: ArrayLike<number>, parts: number, work = 0): void {
    if (this.disposed) throw new MambaError('DISPOSED', 'wasm runtime has been disposed');
    const ctl = this.ctl;
    const n = this.threads === 1 ? 1 : Math.max(1, Math.min(parts, MAX_CHUNKS));
    ctl[CTL.KERNEL] = kernel;
    ctl[CTL.NPARTS] = n;
    ctl[CTL.JOB] = (ctl[CTL.JOB] + 1) | 0;
    for (let i = 0; i < args.length; i++) ctl[CTL.ARGS + i] = args[i];
    if (n === 1) {
      this.exports.runJob(this.ctlPtr, 0, 0);
      return;
    }
    const pacer = this.pacer;
    const t0 = performance.now();
    if (pacer?.solo()) {
      ctl[CTL.NPARTS] = 1;
      this.exports.runJob(this.ctlPtr, 0, 0);
      this.stats.soloJobs++;
      pacer.record(kernel * 2 ** 40 + (work || n), false, performance.now() - t0);
      return;
    }
    const seq = (Atomics.load(ctl, CTL.SEQ) + 1) | 0;
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.store(ctl, CTL.CLAIM, (seq & 0xffff) << 16);
    Atomics.store(ctl, CTL.SEQ, seq);
    if (Atomics.load(ctl, CTL.SLEEPERS) > 0) Atomics.notify(ctl, CTL.SEQ);
    let own = 0;
    for (let c = claim(ctl, seq, n); c >= 0; c = claim(ctl, seq, n)) {
      this.exports.runJob(this.ctlPtr, c, 0);
      Atomics.add(ctl, CTL.DONE, 1);
      own++;
    }
    this.join(n);
    const s = this.stats;
    s.threadedJobs++;
    s.chunks += n;
    s.ownChunks += own;
    pacer?.record(kernel * 2 ** 40 + (work || n), true, performance.now() - t0);
    if (ctl[CTL.ERROR] !== 0) {
      ctl[CTL.ERROR] = 0;
      throw new MambaError('WASM_WORKER', `a wasm worker thread failed in kernel ${kernel}`);
    }
  }

  /**
   * Waits until all n chunks are done: only chunks that workers claimed and are still running remain.
   * Polls for SPIN_US, then blocks: a worker preempted in the middle of its chunk may then be moved by the
   * OS onto the core this thread leaves free, instead of waiting for the busy process on its own core.
   */
  private join(n: number): void {
    const ctl = this.ctl;
    if (Atomics.load(ctl, CTL.DONE) === n) return;
    const until = performance.now() + this.spinUs / 1000;
    for (let i = 1; Atomics.load(ctl, CTL.DONE) !== n; i++) {
      if ((i & 63) === 0 && performance.now() > until) break;
    }
    while (true) {
      const done = Atomics.load(ctl, CTL.DONE);
      if (done === n) return;
      if (!this.block) continue; // a browser main thread may only spin
      this.stats.coordinatorWaits++;
      Atomics.store(ctl, CTL.COORD_SLEEPING, 1);
      Atomics.wait(ctl, CTL.DONE, done, 50);
      Atomics.store(ctl, CTL.COORD_SLEEPING, 0);
    }
  }

  /** Test hooks: make every worker sleep `stallUs` after waking for a job and `holdUs` after claiming a chunk. */
  setWorkerStall(stallUs: number, holdUs = 0): void {
    Atomics.store(this.ctl, CTL.STALL_US, Math.max(0, Math.round(stallUs)));
    Atomics.store(this.ctl, CTL.HOLD_US, Math.max(0, Math.round(holdUs)));
  }

  /** Workers currently blocked in Atomics.wait for the next job. */
  get sleepingWorkers(): number {
    return Atomics.load(this.ctl, CTL.SLEEPERS);
  }

  /** Times workers have blocked in Atomics.wait for a job so far (each one a wake-up later). */
  get workerSleeps(): number {
    return Atomics.load(this.ctl, CTL.WORKER_SLEEPS);
  }

  /** Test and bench hook: µs an idle thread polls before it blocks (SPIN_US by default). */
  setSpin(us: number): void {
    this.spinUs = Math.max(0, Math.round(us));
    Atomics.store(this.ctl, CTL.SPIN_US, this.spinUs);
  }

  /** The bits of float32 `x` as an i32 argument. */
  static floatArg(x: number): number {
    F32[0] = x;
    return I32[0];
  }

  /** Stops the workers (they may be blocked in Atomics.wait) and makes the runtime unusable. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.stopWorkers();
  }
}

/**
 * Per job shape: its wall time (ms) on one thread and split over the threads: the mean over the last probe
 * of that way, or a moving average while it is the way taken.
 */
interface Pace {
  solo: number;
  split: number;
  /** The probe whose samples `probeSum` / `probeCount` hold. */
  probe: number;
  probeSum: number;
  probeCount: number;
  /** Job count at the last split run: what a check looks at. */
  splitAt: number;
}

const EMA = 0.03; // ~ the last 30-60 runs of a shape (1-3 tokens of a 24-layer model): one preempted run moves it little
const PROBE_JOBS = 256; // jobs of a probe of the other way (~2-10 decoded tokens)
const CHECK_JOBS = 64; // split jobs between two looks at whether splitting still pays
const FIRST_PROBE = 512; // split jobs before the first single-thread probe (after V8's tier-up)
const REFRESH_JOBS = 16_384; // split jobs between single-thread probes while splitting wins (~1 % of the time)
const SOLO_MIN = 2048; // single-thread jobs before the next split probe, doubling while splitting loses...
const SOLO_MAX = 65_536; // ...up to this (a probe then costs < 0.5 % even where splitting is 2x slower)
// Split / single-thread speed below which jobs run on one thread, and above which they are split again: the
// gap keeps probes on a noisy machine from flipping the choice back and forth (each flip costs ~1 K jobs).
const LOSE = 0.97;
const WIN = 1.1;

/**
 * Decides, by measuring, whether jobs are split over the threads or run on the coordinating thread alone.
 * Splitting loses when other processes hold the cores: a worker preempted in the middle of its chunk
 * makes the job wait for the OS to run it again, and threads polling for work take the core from others.
 * Neither shows in the thread count, so the runner compares the wall time of the same job shapes (kernel and
 * size, which repeat every decoded token) both ways: it keeps the faster way and probes the other now and
 * then: 256 jobs on one thread every 16 K split jobs (or as soon as split jobs get slower than the last
 * single-thread times), and 256 split jobs after 2 K single-thread ones, doubling to 64 K while splitting
 * keeps losing (back to 2 K once a single-thread probe confirms that splitting wins again). The comparison is between runs a few milliseconds apart, so it holds on a machine whose
 * load changes, and it costs two clock reads per job (jobs worth splitting last ≥ ~10 µs).
 */
export class Pacer {
  private readonly paces = new Map<number, Pace>();
  private splitting = true;
  private probeLeft = 0; // jobs left in a probe of the way not taken
  private probe = 0; // probes so far
  private jobs = 0;
  private sinceCheck = 0;
  private sinceSoloProbe = REFRESH_JOBS - FIRST_PROBE;
  private soloLen = SOLO_MIN;
  private soloLeft = 0;

  constructor(private readonly stats: JobStats) {}

  /** Whether the next job runs on the coordinating thread alone. */
  solo(): boolean {
    return this.probeLeft > 0 ? this.splitting : !this.splitting;
  }

  /** Records a job of shape `key` that took `ms` (`split`: over the threads), then decides what comes next. */
  record(key: number, split: boolean, ms: number): void {
    this.jobs++;
    let p = this.paces.get(key);
    if (!p) {
      p = { solo: NaN, split: NaN, probe: -1, probeSum: 0, probeCount: 0, splitAt: 0 };
      this.paces.set(key, p);
    }
    const probing = this.probeLeft > 0;
    let t = ms;
    if (probing) {
      // A probe is short, so it takes all its samples alike: a preempted run is part of the cost.
      if (p.probe !== this.probe) {
        p.probe = this.probe;
        p.probeSum = p.probeCount = 0;
      }
      t = (p.probeSum += ms) / ++p.probeCount;
    }
    const prev = split ? p.split : p.solo;
    if (!probing && !Number.isNaN(prev)) t = prev + EMA * (ms - prev);
    if (split) {
      p.split = t;
      p.splitAt = this.jobs;
    } else p.solo = t;
    if (probing) {
      if (--this.probeLeft === 0) this.decide();
    } else if (this.splitting) {
      this.sinceSoloProbe++;
      if (++this.sinceCheck < CHECK_JOBS) return;
      this.sinceCheck = 0;
      // Split jobs slower than the last single-thread times: see whether one thread is faster now.
      if (this.sinceSoloProbe >= REFRESH_JOBS || (this.sinceSoloProbe >= 4 * PROBE_JOBS && this.gain(false) < LOSE)) this.startProbe();
    } else if (--this.soloLeft <= 0) this.startProbe();
  }

  private startProbe(): void {
    this.probe++;
    this.probeLeft = PROBE_JOBS;
  }

  /**
   * Time on one thread / time split, summed over the job shapes measured both ways: those of the probe that
   * just ended (`probed`), or those split in the last CHECK_JOBS jobs.
   */
  private gain(probed: boolean): number {
    let solo = 0;
    let split = 0;
    for (const p of this.paces.values()) {
      if (Number.isNaN(p.solo) || Number.isNaN(p.split)) continue;
      const fresh = probed ? p.probe === this.probe : p.splitAt > this.jobs - CHECK_JOBS;
      if (!fresh) continue;
      solo += p.solo;
      split += p.split;
    }
    return split > 0 ? solo / split : NaN;
  }

  private decide(): void {
    const g = this.gain(true);
    if (this.splitting) {
      this.sinceSoloProbe = 0;
      if (!(g < LOSE)) {
        this.soloLen = SOLO_MIN; // splitting won twice in a row: the machine has room again
        return;
      }
      this.splitting = false;
      this.soloLeft = this.soloLen;
      this.stats.switches++;
    } else if (g > WIN) {
      // soloLen stays: if this probe was lucky, the next single-thread period is no shorter.
      this.splitting = true;
      this.sinceCheck = 0;
      this.stats.switches++;
    } else {
      this.soloLen = Math.min(2 * this.soloLen, SOLO_MAX);
      this.soloLeft = this.soloLen;
    }
  }
}

/**
 * Claims the next chunk of job `seq` (of n), or returns -1 when none is left or the job has changed.
 * Same logic as in workers/wasm-thread.js.
 */
function claim(ctl: Int32Array, seq: number, n: number): number {
  for (;;) {
    const v = Atomics.load(ctl, CTL.CLAIM);
    if (v >>> 16 !== (seq & 0xffff) || (v & 0xffff) >= n) return -1;
    if (Atomics.compareExchange(ctl, CTL.CLAIM, v, v + 1) === v) return v & 0xffff;
  }
}

const F32 = new Float32Array(1);
const I32 = new Int32Array(F32.buffer);

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

export function imports(memory: WebAssembly.Memory): WebAssembly.Imports {
  return {
    env: {
      memory,
      abort: () => {
        throw new MambaError('WASM_ABORT', 'wasm kernel aborted');
      },
    },
  };
}
