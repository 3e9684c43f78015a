#!/usr/bin/env bash
# What was run on the lent GPU machine (an H200; Deno's WebGPU over the NVIDIA Vulkan driver), from the
# repository root, with a built tree (dist/, build/) and a Deno binary:
#
#   DENO=/path/to/deno OUT=results-dir bash bench/gpu-machine.sh
#
# 1. examples/deno/gpu-check.ts: every fixture × f32/f16/q8/q4 against transformers' float64 logits;
# 2. bench/webgpu.js on the bench shapes: the byte-level 130m (Mamba-1), mamba2-130m, the real
#    mamba-130m-hf shape (vocabulary 50280) in every weight format, and a 2.8b-hf shape in f16.
set -uo pipefail
DENO=${DENO:-deno}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
run() { echo "+ $*" >&2; "$@"; }
run "$DENO" run -A --unstable-sloppy-imports examples/deno/gpu-check.ts > "$OUT/gpu-check-h200.txt" 2>&1; echo "gpu-check exit $?" >> "$OUT/gpu-check-h200.txt"
run "$DENO" run -A bench/webgpu.js --shape 130m --dtype f32,f16,q8,q4 --json "$OUT/webgpu-h200.json"
run "$DENO" run -A bench/webgpu.js --shape mamba2-130m --dtype f32,f16,q8,q4 --json "$OUT/webgpu-h200-mamba2-130m.json"
run "$DENO" run -A bench/webgpu.js --shape 130m-hf --dtype f32,f16,q8,q4 --prompt 512 --decode 128,512 --json "$OUT/webgpu-h200-130m-hf.json"
run "$DENO" run -A bench/webgpu.js --shape 2.8b-hf --dtype f16,q4 --prompt 512 --decode 128 --json "$OUT/webgpu-h200-2.8b-hf.json"
