#!/usr/bin/env bash
# llama.cpp and mamba-edge side by side, in one run on this machine, on the same random 130m-shaped byte
# model (`npm run bench`'s): decode (tg128) and prefill (pp512) tok/s at 1 and 2 threads, for f32, f16,
# q8_0 / q8 and q4_0 / q4, next to the read bandwidth bench/run.js measures.
#
#   bash bench/llama-cpp.sh [--threads 1,2] [--repeat 2] [--json bench/results/llama-cpp-vs.json]
#
# llama.cpp is the commit that the node-llama-cpp npm package bundles (a git bundle inside the package:
# only the npm registry is needed), built with -DGGML_NATIVE=ON (llama-bench and llama-quantize only)
# into $LLAMA_CPP_DIR (default ~/.cache/mamba-edge/llama.cpp), once. The model goes to GGUF through
# bench/to-gguf.py (numpy and llama.cpp's gguf-py; llama.cpp's own converter needs torch), then
# llama-quantize makes f16 / q8_0 / q4_0. Needs cmake, a C++ compiler, python3 with numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=1,2
REPEAT=2
JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    *) echo "bench/llama-cpp.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
NODE_LLAMA_CPP=${NODE_LLAMA_CPP:-node-llama-cpp@3.22.1}
DIR=${LLAMA_CPP_DIR:-$HOME/.cache/mamba-edge/llama.cpp}
BIN=$DIR/build/bin

if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-quantize" ]; then
  mkdir -p "$(dirname "$DIR")"
  if [ ! -d "$DIR/.git" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack "$NODE_LLAMA_CPP" --silent > /dev/null && tar xzf ./*.tgz)
    git clone -q "$tmp/package/llama/gitRelease.bundle" "$DIR"
    rm -rf "$tmp"
  fi
  cmake -S "$DIR" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF > /dev/null
  cmake --build "$DIR/build" --target llama-bench llama-quantize -j "$(nproc)" > /dev/null
fi
echo "llama.cpp $(git -C "$DIR" log -1 --format=%h) ($NODE_LLAMA_CPP), built with GGML_NATIVE"

MODELS=$(mktemp -d)
trap 'rm -rf "$MODELS"' EXIT
npm run build --silent
node --input-type=module -e "
  const { syntheticModel, BENCH_SHAPES } = await import('./dist/src/synthetic.js');
  const fs = await import('node:fs');
  for (const [name, bytes] of Object.entries(syntheticModel(BENCH_SHAPES['130m'].spec))) fs.writeFileSync('$MODELS/' + name, bytes);
"
python3 bench/to-gguf.py "$DIR" "$MODELS" "$MODELS/f32.gguf" > /dev/null
for t in f16:F16 q8:Q8_0 q4:Q4_0; do
  "$BIN/llama-quantize" "$MODELS/f32.gguf" "$MODELS/${t%%:*}.gguf" "${t#*:}" > /dev/null 2>&1
done

# mamba-edge first (its own bandwidth figure; SIMD128, then relaxed SIMD as Chromium runs it), then
# llama.cpp, on the same files.
node bench/run.js --dtype f32,f16,q8,q4 --threads "$THREADS" --decode 128 --prompt 512 --repeat "$REPEAT" --json "$MODELS/ours.json" > /dev/null
node --experimental-wasm-relaxed-simd bench/run.js --dtype q8,q4 --threads "$THREADS" --decode 128 --prompt 512 --repeat "$REPEAT" --json "$MODELS/relaxed.json" > /dev/null
for d in f32 f16 q8 q4; do
  "$BIN/llama-bench" -m "$MODELS/$d.gguf" -t "$THREADS" -p 512 -n 128 -r "$REPEAT" -o json > "$MODELS/llama-$d.json" 2> /dev/null
done

RESULT=${JSON:-$MODELS/result.json}
node --input-type=module - "$MODELS" "$RESULT" "$(git -C "$DIR" log -1 --format=%h)" <<'EOF'
import { readFileSync, writeFileSync } from 'node:fs';
const [dir, out, commit] = process.argv.slice(2);
const ours = JSON.parse(readFileSync(`${dir}/ours.json`, 'utf8'));
const relaxed = JSON.parse(readFileSync(`${dir}/relaxed.json`, 'utf8'));
const rows = [];
for (const dtype of ['f32', 'f16', 'q8', 'q4']) {
  const llama = JSON.parse(readFileSync(`${dir}/llama-${dtype}.json`, 'utf8'));
  for (const threads of [...new Set(llama.map((r) => r.n_threads))]) {
    const l = (kind) => llama.find((r) => r.n_threads === threads && (kind === 'tg' ? r.n_gen > 0 : r.n_prompt > 0))?.avg_ts;
    const o = ours.results.find((r) => r.dtype === dtype && r.threads === threads);
    const x = relaxed.results.find((r) => r.dtype === dtype && r.threads === threads);
    rows.push({
      dtype, threads, readGBps: o?.readGBps,
      decode: o?.decodeTokPerSec, decodeRelaxed: x?.decodeTokPerSec, llamaDecode: l('tg'),
      prefill: o?.prefillTokPerSec, prefillRelaxed: x?.prefillTokPerSec, llamaPrefill: l('pp'),
    });
  }
}
writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), llamaCpp: commit, model: 'random 130m-shaped byte model (D768 L24 N16 E1536 R48 V256, tied)', ours: ours.results, relaxed: relaxed.results, rows }, null, 2) + '\n');
EOF
node bench/llama-cpp-table.js "$RESULT"
if [ -n "$JSON" ]; then echo "wrote $JSON"; fi
