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
      pacer.record(paceKey(kernel, work || n), false, performance.now() - t0);
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
    pacer?.record(paceKey(kernel, work || n), true, performance.now() - t0);
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

/** The Pacer's key of a job shape: its kernel and its size (`work`, e.g. multiply-adds). */
export function paceKey(kernel: number, work: number): number {
  return kernel * 2 ** 40 + work;
}

/** Per job shape (kernel and size): wall-time sums (ms) and counts, of a trial's two ways and of the current window. */
interface Pace {
  trialSolo: number;
  trialSoloN: number;
  trialSplit: number;
  trialSplitN: number;
  /** Mean time on one thread in the last trial that ran this shape both ways (NaN before). */
  soloMean: number;
  windowSum: number;
  windowN: number;
}

// A trial alternates the two ways in blocks (64 jobs, or 25 ms if sooner), so that both meet the same
// machine, and ends after an even number of blocks once it has run 1024 jobs (~7 decoded tokens of a
// 24-layer model) or 500 ms.
const BLOCK_JOBS = 64;
const BLOCK_MS = 25;
const TRIAL_JOBS = 1024;
const TRIAL_MS = 500;
// While splitting, a window (1024 split jobs, or 250 ms if sooner) is checked against the last trial's
// single-thread means; the first trial comes after two windows (past V8's tier-up).
const WINDOW_JOBS = 1024;
const WINDOW_MS = 250;
const FIRST_TRIAL_WINDOWS = 2;
const REFRESH_JOBS = 32_768; // split jobs between trials while splitting wins (a trial then costs < 1 %)
const SOLO_MIN = 2048; // single-thread jobs before the next trial, doubling while splitting loses...
const SOLO_MAX = 65_536; // ...up to this (a trial then costs < 0.5 % even where splitting is 2x slower)
// Split / single-thread speed below which jobs run on one thread, and above which they are split again: the
// gap keeps trials on a noisy machine from flipping the choice back and forth.
const LOSE = 0.97;
const WIN = 1.1;
// A trial ends early, after any pair of blocks, once it confirms the way taken by this much (split 1.4x
// faster while splitting, 0.7x as fast while on one thread): confirming costs nothing if it is wrong (the
// next trial comes as usual), and it keeps the trials' jobs of the slower way few. Switching always takes
// a whole trial, since a few stalls in a short one can make either way look slow.
const CONFIRM_WIN = 1.4;
const CONFIRM_LOSE = 0.7;

/**
 * Decides, by measuring, whether jobs are split over the threads or run on the coordinating thread alone.
 * Splitting loses when other processes hold the cores: a worker preempted in the middle of its chunk
 * makes the job wait for the OS to run it again (a time slice, ~4 ms), and threads polling for work take
 * the core from others. Neither shows in the thread count, so the runner compares the wall time of the same
 * job shapes (kernel and size, which repeat every decoded token) both ways.
 *
 * The cost of splitting on a busy machine is a rare, long stall (measured on 2 vCPUs with one busy process,
 * `bench/job-times.js --busy`: 0.3-0.5 % of split jobs wait ~4 ms, while the median split job is still
 * faster than one thread), and an idle virtual machine has the same stalls, only 5-10x rarer (0.05-0.09 %).
 * So only means over many jobs tell the two apart: one stall in 50 samples of a shape made a split job look
 * 2x slower than it was, and a pacer that decided on so few ran the idle machine on one thread 30-98 % of
 * the time. Hence:
 * - a trial runs ~1024 jobs, alternating the two ways, and compares the means of each shape (weighted by
 *   how often it ran); it ends after 128 jobs already when it confirms the way taken by a wide margin;
 * - while splitting wins, a trial comes every 32 K jobs, or sooner when the split jobs of a window took
 *   longer in total than the last trial's single-thread means predict;
 * - while one thread wins, a trial comes after 2 K single-thread jobs, doubling to 64 K while splitting
 *   keeps losing (back to 2 K once a trial finds that splitting wins again).
 * It costs two clock reads per job (jobs worth splitting last ≥ ~10 µs).
 */
export class Pacer {
  private readonly paces = new Map<number, Pace>();
  private splitting = true;
  private inTrial = false;
  private blockSolo = false; // the way of the trial's current block
  private blockJobs = 0;
  private blockMs = 0;
  private blocks = 0; // blocks of the current trial so far
  private trialJobs = 0;
  private trialMs = 0;
  private windowJobs = 0;
  private windowMs = 0;
  private windows = 0; // windows since the runtime started (the first trial waits for FIRST_TRIAL_WINDOWS)
  private sinceTrial = 0;
  private soloLen = SOLO_MIN;
  private soloLeft = 0;

  constructor(private readonly stats: JobStats) {}

  /** Whether the next job runs on the coordinating thread alone. */
  solo(): boolean {
    return this.inTrial ? this.blockSolo : !this.splitting;
  }

  /** Records a job of shape `key` that took `ms` (`split`: over the threads), then decides what comes next. */
  record(key: number, split: boolean, ms: number): void {
    let p = this.paces.get(key);
    if (!p) {
      p = { trialSolo: 0, trialSoloN: 0, trialSplit: 0, trialSplitN: 0, soloMean: NaN, windowSum: 0, windowN: 0 };
      this.paces.set(key, p);
    }
    if (this.inTrial) {
      if (split) (p.trialSplit += ms), p.trialSplitN++;
      else (p.trialSolo += ms), p.trialSoloN++;
      this.trialJobs++;
      this.trialMs += ms;
      if (++this.blockJobs < BLOCK_JOBS && (this.blockMs += ms) < BLOCK_MS) return;
      this.blockJobs = this.blockMs = 0;
      this.blockSolo = !this.blockSolo;
      if (++this.blocks % 2 !== 0) return;
      if (this.trialJobs >= TRIAL_JOBS || this.trialMs >= TRIAL_MS) this.decide();
      else {
        const g = this.trialGain();
        if (this.splitting ? g > CONFIRM_WIN : g < CONFIRM_LOSE) this.decide();
      }
    } else if (this.splitting) {
      p.windowSum += ms;
      p.windowN++;
      this.sinceTrial++;
      if (++this.windowJobs < WINDOW_JOBS && (this.windowMs += ms) < WINDOW_MS) return;
      // The window's split jobs against what the last trial's single-thread means say they would have taken.
      let predicted = 0;
      let took = 0;
      for (const q of this.paces.values()) {
        if (q.windowN > 0 && !Number.isNaN(q.soloMean)) (predicted += q.windowN * q.soloMean), (took += q.windowSum);
        q.windowSum = q.windowN = 0;
      }
      this.windowJobs = this.windowMs = 0;
      const first = ++this.windows === FIRST_TRIAL_WINDOWS;
      if (first || this.sinceTrial >= REFRESH_JOBS || predicted < LOSE * took) this.startTrial();
    } else if (--this.soloLeft <= 0) this.startTrial();
  }

  private startTrial(): void {
    this.inTrial = true;
    this.blockSolo = false;
    this.blockJobs = this.blockMs = this.blocks = this.trialJobs = this.trialMs = 0;
  }

  /** Single-thread time / split time over the shapes the trial has run both ways, weighted by their counts. */
  private trialGain(): number {
    let solo = 0;
    let split = 0;
    for (const p of this.paces.values()) {
      if (p.trialSoloN > 0 && p.trialSplitN > 0) {
        const n = p.trialSoloN + p.trialSplitN;
        solo += (n * p.trialSolo) / p.trialSoloN;
        split += (n * p.trialSplit) / p.trialSplitN;
      }
    }
    return split > 0 ? solo / split : NaN;
  }

  /** Ends a trial: keeps or switches the way by its gain, and keeps its single-thread means for the windows. */
  private decide(): void {
    this.inTrial = false;
    const gain = this.trialGain();
    for (const p of this.paces.values()) {
      if (p.trialSoloN > 0 && p.trialSplitN > 0) p.soloMean = p.trialSolo / p.trialSoloN;
      p.trialSolo = p.trialSoloN = p.trialSplit = p.trialSplitN = p.windowSum = p.windowN = 0;
    }
    this.sinceTrial = this.windowJobs = this.windowMs = 0;
    if (this.splitting) {
      if (!(gain < LOSE)) {
        this.soloLen = SOLO_MIN; // splitting still wins: the machine has room again
        return;
      }
      this.splitting = false;
      this.soloLeft = this.soloLen;
      this.stats.switches++;
    } else if (gain > WIN) {
      // soloLen stays: if this trial was lucky, the next single-thread period is no shorter.
      this.splitting = true;
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
