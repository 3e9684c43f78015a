#!/usr/bin/env node
// The llama.cpp table from one or more `bash bench/llama-cpp.sh --json` results (the script prints its own run
// through this too): each cell is the range over the runs. "of read": decode tok/s × the weight bytes a token reads / the read loop's GB/s of
// the same run (llama.cpp's column uses our byte count: its GGUF tensors are the same matrices, q8_0 / q4_0
// blocks of the same size).
//
//   node bench/llama-cpp-table.js bench/results/llama-cpp-vs-dev-vm-2026-12-02a.json [...b.json]
import { readFileSync } from 'node:fs';

const runs = process.argv.slice(2).map((f) => JSON.parse(readFileSync(f, 'utf8')));
if (runs.length === 0) throw new Error('usage: node bench/llama-cpp-table.js RESULT.json [RESULT.json ...]');
const fmt = (x, d) => x.toFixed(d);
const range = (xs, d = 1) => {
  const [lo, hi] = [Math.min(...xs), Math.max(...xs)].map((x) => fmt(x, d));
  return lo === hi ? lo : `${lo}–${hi}`;
};
const find = (list, r) => list.find((x) => x.dtype === r.dtype && x.threads === r.threads);
console.log('| dtype | threads | read GB/s | decode: SIMD128 | relaxed | llama.cpp | ratio | of read: ours / llama.cpp | prefill: SIMD128 | relaxed | llama.cpp | ratio |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const first of runs[0].rows) {
  const rows = runs.map((run) => find(run.rows, first));
  const ours = runs.map((run) => find(run.ours, first));
  const relaxed = runs.map((run) => find(run.relaxed, first)).filter(Boolean);
  const bytes = (ours[0].decodeGBps * 1e9) / ours[0].decodeTokPerSec; // weight bytes a decoded token reads
  const best = (i, key) => Math.max(ours[i][key], relaxed[i]?.[key] ?? 0);
  const share = (tokPerSec, i) => (100 * tokPerSec * bytes) / 1e9 / rows[i].readGBps;
  console.log(
    `| ${first.dtype} | ${first.threads} | ${range(rows.map((r) => r.readGBps))} ` +
      `| ${range(ours.map((o) => o.decodeTokPerSec))} | ${relaxed.length ? range(relaxed.map((o) => o.decodeTokPerSec)) : ''} ` +
      `| ${range(rows.map((r) => r.llamaDecode))} | ${range(rows.map((r, i) => best(i, 'decodeTokPerSec') / r.llamaDecode), 2)} ` +
      `| ${range(rows.map((r, i) => share(best(i, 'decodeTokPerSec'), i)), 0)} % / ${range(rows.map((r, i) => share(r.llamaDecode, i)), 0)} % ` +
      `| ${range(ours.map((o) => o.prefillTokPerSec))} | ${relaxed.length ? range(relaxed.map((o) => o.prefillTokPerSec)) : ''} ` +
      `| ${range(rows.map((r) => r.llamaPrefill))} | ${range(rows.map((r, i) => best(i, 'prefillTokPerSec') / r.llamaPrefill), 2)} |`,
  );
}
console.log('\nratio: the better of our two builds against llama.cpp, per run.');
