// A compute thread of the wasm backend (src/wasm/runtime.ts). Plain ESM JavaScript so it runs unchanged
// under Node worker_threads, Deno and browser module workers. It instantiates the kernel module on the
// shared memory, then loops: wait for SEQ to change, claim chunks of that job and run them until none is
// left, counting each in DONE. Word offsets mirror CTL in src/wasm/layout.ts.
const SEQ = 0, DONE = 1, KERNEL = 2, NPARTS = 3, CLAIM = 7, SLEEPERS = 24, COORD_SLEEPING = 25, ERROR = 26;
const SPIN_US = 28, STALL_US = 29, HOLD_US = 30, WORKER_SLEEPS = 31;
const EXIT = -1;
const nap = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for `us` µs (test hooks STALL_US / HOLD_US: a thread the OS does not run). */
function stall(us) {
  if (us > 0) Atomics.wait(nap, 0, 0, us / 1000);
}

/** Next chunk of job `seq` (of n), or -1 when none is left or the job has changed (as in runtime.ts). */
function claim(c, seq, n) {
  for (;;) {
    const v = Atomics.load(c, CLAIM);
    if (v >>> 16 !== (seq & 0xffff) || (v & 0xffff) >= n) return -1;
    if (Atomics.compareExchange(c, CLAIM, v, v + 1) === v) return v & 0xffff;
  }
}

function serve({ module, memory, ctl, index }, post) {
  const imports = { env: { memory, abort() { throw new Error('wasm kernel aborted'); } } };
  const { runJob } = new WebAssembly.Instance(module, imports).exports;
  const c = new Int32Array(memory.buffer, ctl, 32);
  let seen = Atomics.load(c, SEQ);
  post('ready');
  for (;;) {
    let seq = Atomics.load(c, SEQ);
    if (seq === seen) {
      // Poll only briefly: the jobs of one token follow each other within microseconds, but a thread that
      // polls for longer takes the core from whoever else needs it (the coordinator, another process),
      // and on a busy machine that costs more than the wake-up it saves.
      const until = performance.now() + Atomics.load(c, SPIN_US) / 1000;
      for (let i = 1; (seq = Atomics.load(c, SEQ)) === seen; i++) {
        if ((i & 63) === 0 && performance.now() > until) {
          Atomics.add(c, SLEEPERS, 1);
          Atomics.add(c, WORKER_SLEEPS, 1);
          Atomics.wait(c, SEQ, seen);
          Atomics.sub(c, SLEEPERS, 1);
        }
      }
    }
    seen = seq;
    if (Atomics.load(c, KERNEL) === EXIT) return;
    stall(Atomics.load(c, STALL_US));
    // NPARTS may already belong to a newer job; claim() then fails on the sequence tag.
    const n = Atomics.load(c, NPARTS);
    for (let part = claim(c, seq, n); part >= 0; part = claim(c, seq, n)) {
      stall(Atomics.load(c, HOLD_US));
      try {
        runJob(ctl, part, index);
      } catch (e) {
        Atomics.store(c, ERROR, 1);
        post(String((e && e.stack) || e));
      }
      if (Atomics.add(c, DONE, 1) + 1 === n && Atomics.load(c, COORD_SLEEPING) === 1) Atomics.notify(c, DONE);
    }
  }
}

if (typeof self !== 'undefined' && typeof self.postMessage === 'function' && typeof WorkerGlobalScope !== 'undefined') {
  self.onmessage = (e) => serve(e.data, (m) => self.postMessage(m));
} else {
  const { parentPort, workerData } = await import('node:worker_threads');
  serve(workerData, (m) => parentPort.postMessage(m));
}
