// A compute thread of the wasm backend (src/wasm/runtime.ts). Plain ESM JavaScript so it runs unchanged
// under Node worker_threads, Deno and browser module workers. It instantiates the kernel module on the
// shared memory, then loops: wait for SEQ to change, run this thread's share of the job, count PENDING down.
// Word offsets mirror CTL in src/wasm/layout.ts.
const SEQ = 0, PENDING = 1, KERNEL = 2, NPARTS = 3, SLEEPERS = 24, COORD_SLEEPING = 25, ERROR = 26;
const EXIT = -1;
// Spin this long before sleeping: the gap between two kernels of one token is far shorter than a wake-up.
const SPIN_MS = 2;

function serve({ module, memory, ctl, index }, post) {
  const imports = { env: { memory, abort() { throw new Error('wasm kernel aborted'); } } };
  const { runJob } = new WebAssembly.Instance(module, imports).exports;
  const c = new Int32Array(memory.buffer, ctl, 32);
  let seen = Atomics.load(c, SEQ);
  post('ready');
  for (;;) {
    let seq = Atomics.load(c, SEQ);
    if (seq === seen) {
      const until = performance.now() + SPIN_MS;
      for (let i = 1; (seq = Atomics.load(c, SEQ)) === seen; i++) {
        if ((i & 1023) === 0 && performance.now() > until) {
          Atomics.add(c, SLEEPERS, 1);
          Atomics.wait(c, SEQ, seen);
          Atomics.sub(c, SLEEPERS, 1);
        }
      }
    }
    seen = seq;
    if (Atomics.load(c, KERNEL) === EXIT) return;
    if (index >= Atomics.load(c, NPARTS)) continue; // not part of this job
    try {
      runJob(ctl, index);
    } catch (e) {
      Atomics.store(c, ERROR, 1);
      post(String(e && e.stack || e));
    }
    if (Atomics.sub(c, PENDING, 1) === 1 && Atomics.load(c, COORD_SLEEPING) === 1) Atomics.notify(c, PENDING);
  }
}

if (typeof self !== 'undefined' && typeof self.postMessage === 'function' && typeof WorkerGlobalScope !== 'undefined') {
  self.onmessage = (e) => serve(e.data, (m) => self.postMessage(m));
} else {
  const { parentPort, workerData } = await import('node:worker_threads');
  serve(workerData, (m) => parentPort.postMessage(m));
}
