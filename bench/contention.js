// `npm run bench -- --contention`: decode speed of one thread against the default thread count, on an idle
// machine and with one competing busy process pinned to one core (issue #16: the default must never lose
// to --threads 1). bench/run.js parses the options and calls runContention().
import { spawn, spawnSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

const dist = new URL('../dist/src/', import.meta.url);
const { createWasmBackend } = await import(new URL('wasm/backend.js', dist).href);
const { defaultThreads } = await import(new URL('wasm/runtime.js', dist).href);
const { readModel } = await import(new URL('loader.js', dist).href);
const { syntheticModel, MAMBA_130M_BYTES } = await import(new URL('synthetic.js', dist).href);
const { readBandwidth } = await import('./bandwidth.js');

const BUNDLED = fileURLToPath(new URL('../models/mambabyte-fortunes/', import.meta.url));

function argmax(x) {
  let b = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
  return b;
}

/** Tokens per second of `tokens` greedy single-byte forwards on a fresh state, after a short prompt. */
async function decodeRate(backend, tokens) {
  const st = backend.createState();
  try {
    let logits = await backend.forward(st, new TextEncoder().encode('The '), 'last');
    const t0 = performance.now();
    for (let i = 0; i < tokens; i++) logits = await backend.forward(st, Uint8Array.of(argmax(logits)), 'last');
    return tokens / ((performance.now() - t0) / 1000);
  } finally {
    backend.releaseState(st);
  }
}

/**
 * One busy process pinned to core 0 (`taskset -c 0`); mamba-edge itself stays unpinned. Without taskset
 * (macOS, Windows) the hog runs unpinned, which the report says.
 */
export function startHog() {
  const pinned = spawnSync('taskset', ['-V'], { stdio: 'ignore' }).status === 0;
  const loop = ['-e', 'for(;;){}'];
  const child = pinned ? spawn('taskset', ['-c', '0', process.execPath, ...loop], { stdio: 'ignore' }) : spawn(process.execPath, loop, { stdio: 'ignore' });
  const stop = () => child.kill('SIGKILL');
  process.once('exit', stop);
  return {
    pinned,
    stop: () => {
      process.off('exit', stop);
      stop();
    },
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * For each model (the bundled one and the random 130m-shaped one) and each condition (idle, one pinned busy
 * process): decode tok/s on 1 thread and on the default thread count, `repeat` alternating runs each
 * (median reported), next to the read bandwidth measured in the same condition.
 */
export async function runContention({ dtype, repeat, mib, decode, spinUs }) {
  const threads = await defaultThreads();
  console.log(`${os.cpus()[0]?.model ?? 'unknown'}, ${os.availableParallelism()} cores, ${process.version}; load ${os.loadavg()[0].toFixed(2)}`);
  console.log(`contention: 1 thread vs the default (${threads} threads, adaptive), idle and with one busy process pinned to core 0; dtype ${dtype}; median of ${repeat}`);
  if (spinUs !== undefined) console.log(`idle threads poll ${spinUs} µs before blocking (--spin-us)`);
  const models = [
    { name: 'bundled mambabyte-fortunes (5.9 M)', source: BUNDLED, tokens: decode ?? 512 },
    { name: 'random 130m-shaped', source: { files: syntheticModel(MAMBA_130M_BYTES) }, tokens: decode ?? 48 },
  ];
  const backends = [];
  for (const m of models) {
    const { config, weights } = await readModel(m.source);
    const dflt = await createWasmBackend(config, weights, { dtype });
    if (spinUs !== undefined) dflt.runtime.setSpin(spinUs);
    backends.push({ m, one: await createWasmBackend(config, weights, { dtype, threads: 1 }), dflt });
  }
  const rows = [];
  try {
    for (const condition of ['idle', 'contended']) {
      const hog = condition === 'contended' ? startHog() : null;
      try {
        if (hog) await new Promise((r) => setTimeout(r, 300)); // let the hog start spinning
        const read1 = await readBandwidth(1, mib);
        const readN = await readBandwidth(threads, mib);
        for (const { m, one, dflt } of backends) {
          // Warm-up: V8 tiers the kernels up, and the default runtime settles on threads or one thread.
          await decodeRate(one, Math.ceil(m.tokens / 4));
          await decodeRate(dflt, Math.ceil(m.tokens / 4));
          const r1 = [];
          const rN = [];
          const before = { ...dflt.runtime.stats };
          const sleeps0 = dflt.runtime.workerSleeps;
          for (let rep = 0; rep < repeat; rep++) {
            // Alternate the order so that a slow phase of the machine hits both sides alike.
            if (rep % 2 === 0) r1.push(await decodeRate(one, m.tokens));
            rN.push(await decodeRate(dflt, m.tokens));
            if (rep % 2 === 1) r1.push(await decodeRate(one, m.tokens));
          }
          const st = dflt.runtime.stats;
          const split = st.threadedJobs - before.threadedJobs;
          const solo = st.soloJobs - before.soloJobs;
          const row = {
            condition: hog && !hog.pinned ? 'contended (unpinned: no taskset)' : condition,
            model: m.name,
            threads,
            oneTokPerSec: median(r1),
            defaultTokPerSec: median(rN),
            oneRuns: r1,
            defaultRuns: rN,
            readGBps1: read1,
            readGBpsDefault: readN,
            // Of the default runs' jobs worth splitting: how many were split, and what share of their chunks the workers ran.
            splitShare: split / Math.max(1, split + solo),
            workerChunkShare: 1 - (st.ownChunks - before.ownChunks) / Math.max(1, st.chunks - before.chunks),
            // Wake-ups the workers needed per decoded token (they block after the poll of SPIN_US).
            workerSleepsPerToken: (dflt.runtime.workerSleeps - sleeps0) / (repeat * m.tokens),
          };
          row.ratio = row.defaultTokPerSec / row.oneTokPerSec;
          rows.push(row);
        }
      } finally {
        hog?.stop();
      }
    }
  } finally {
    for (const b of backends) {
      b.one.dispose();
      b.dflt.dispose();
    }
  }
  const pad = (s, n) => String(s).padStart(n);
  console.log(`\n${pad('condition', 9)} ${'model'.padEnd(34)} ${pad('1 thr tok/s', 11)} ${pad(`default (${threads}) tok/s`, 19)} ${pad('default/1', 9)} ${pad('read GB/s 1 / default', 21)} ${pad('split', 5)} ${pad('by workers', 10)} ${pad('sleeps/tok', 10)}`);
  for (const r of rows) {
    console.log(
      `${pad(r.condition, 9)} ${r.model.padEnd(34)} ${pad(r.oneTokPerSec.toFixed(1), 11)} ${pad(r.defaultTokPerSec.toFixed(1), 19)} ${pad(r.ratio.toFixed(2) + '×', 9)} ${pad(`${r.readGBps1.toFixed(1)} / ${r.readGBpsDefault.toFixed(1)}`, 21)} ${pad((100 * r.splitShare).toFixed(0) + '%', 5)} ${pad((100 * r.workerChunkShare).toFixed(0) + '%', 10)} ${pad(r.workerSleepsPerToken.toFixed(1), 10)}`,
    );
  }
  return rows;
}
