// Run by test/memory.test.ts as `node --expose-gc test/helpers/worker-heap.mjs CALLS` (needs `npm run build:ts`).
// Prints one JSON line: the main thread's heap after warm-up, after CALLS more WorkerModel calls, and
// what the worker still holds after streams were dropped without being finished.
const dist = process.env.MAMBA_EDGE_DIST ?? new URL('../../dist/', import.meta.url).href;
const { loadModelInWorker } = await import(new URL('src/runtime.js', dist).href);
const { syntheticModel } = await import(new URL('src/synthetic.js', dist).href);

const calls = Number(process.argv[2] ?? 100_000);
const heap = () => {
  globalThis.gc();
  globalThis.gc();
  return process.memoryUsage().heapUsed;
};
const tick = () => new Promise((r) => setTimeout(r, 20));

const files = syntheticModel({ hidden_size: 8, num_hidden_layers: 1, state_size: 4, seed: 3 });
const model = await loadModelInWorker({ files }, { backend: 'js' });
const input = Uint8Array.of(65);
// 200 calls in flight at a time: the round trips overlap, so 100,000 calls take seconds.
const run = async (n) => {
  for (let i = 0; i < n; i += 200) await Promise.all(Array.from({ length: Math.min(200, n - i) }, () => model.logits(input)));
};
// Streams pulled once and then dropped: once collected here, the worker closes them.
const dropStreams = async (n) => {
  for (let i = 0; i < n; i++) await model.generate('abc', { maxTokens: 1_000_000 }).next();
};
try {
  await run(5_000); // warm-up: JIT, comlink's maps at their size
  const heap0 = heap();
  const t0 = performance.now();
  await run(calls);
  const ms = performance.now() - t0;
  const heap1 = heap();

  const dropped = 50;
  await dropStreams(dropped);
  if (process.argv[3] === '--calls-only') {
    console.log(JSON.stringify({ calls, ms, heap0, heap1 }));
    process.exit(0);
  }
  const holding = () => model.api.holding();
  const before = await holding();
  let after = before;
  for (let i = 0; i < 100 && after.streams > 0; i++) {
    heap();
    await tick();
    after = await holding();
  }
  console.log(JSON.stringify({ calls, ms, heap0, heap1, pending: model.pendingCalls, dropped, before, after }));
} finally {
  model.dispose();
}
