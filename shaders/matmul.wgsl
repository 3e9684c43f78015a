// out[t, n0 + n] (+)= Σ_k x[t, k] · w[n, k] + bias[n0 + n]
// x [T, K] f32; w [N, KS] one part of a (possibly split) weight, rows padded to an even KS so a
// row is a whole number of pairs; out [T, ldo]; bias [n0 + N].
//
// Weights are read two at a time (`wpair`): the natural unit of packed f16 and of vec2<f32>, so the
// f32, packed-f16, shader-f16 and block-quantized (q8 / q4, see quant.wgsl) variants share one
// kernel body, except for the decode GEMV of q8 / q4 (`gemv_q`), which reads whole quant words.
// Accumulation is always f32: the narrow formats only shrink what is stored, which is where decode
// time goes (it is bandwidth-bound). The backend picks the variant with `#if F16` (adapter has
// shader-f16) / `#elif PACKED` / `#elif QUANT` (+ Q4).

#if F16
enable f16;
@group(0) @binding(1) var<storage, read> w: array<vec2<f16>>;
fn w2(i: u32) -> vec2<f32> { return vec2<f32>(w[i]); }
#elif PACKED
@group(0) @binding(1) var<storage, read> w: array<u32>;
fn w2(i: u32) -> vec2<f32> { return unpack2x16float(w[i]); }
#elif QUANT
@group(0) @binding(1) var<storage, read> w: array<u32>;
#include quant
#else
@group(0) @binding(1) var<storage, read> w: array<vec2<f32>>;
fn w2(i: u32) -> vec2<f32> { return w[i]; }
#endif

/** Weights 2q and 2q + 1 of row n. */
fn wpair(n: u32, q: u32) -> vec2<f32> {
#if QUANT
  let k = 2u * q;
  let row = n * p.ks2;
  return q_scale(w[row + q_sword(k / 32u)], k / 32u) * q_pair(w[row + p.ss + q_pair_word(k)], k);
#else
  return w2(n * p.ks2 + q);
#endif
}

// The same bindings viewed four elements at a time, for `gemv4` (K % 4 == 0, so rows start on a
// 4-element boundary): wider loads keep more bytes in flight per lane, which is what a
// bandwidth-bound decode step needs. WGSL lets entry points that never share a variable alias a
// binding with different types. (q8 / q4: `gemv_q` reads x this way, its weights as u32 words.)
#if F16
@group(0) @binding(1) var<storage, read> wq: array<vec4<f16>>;
fn w4(i: u32) -> vec4<f32> { return vec4<f32>(wq[i]); }
#elif PACKED
@group(0) @binding(1) var<storage, read> wq: array<vec2<u32>>;
fn w4(i: u32) -> vec4<f32> { let v = wq[i]; return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
#elif QUANT
#else
@group(0) @binding(1) var<storage, read> wq: array<vec4<f32>>;
fn w4(i: u32) -> vec4<f32> { return wq[i]; }
#endif
@group(0) @binding(0) var<storage, read> xq: array<vec4<f32>>;

struct Params {
  T: u32,
  K: u32,
  N: u32,     // rows of this weight part
  n0: u32,    // first output column this part writes
  ldo: u32,   // row stride of out (the full N)
  ks2: u32,   // row stride of w: in pairs (f32, f16), in u32 words (q8, q4)
  flags: u32, // 1: add bias, 2: accumulate into out
  ss: u32,    // q8, q4: words of the scale section at the start of each row (quant.wgsl)
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

fn finish(t: u32, n: u32, acc: f32) {
  var v = acc;
  if ((p.flags & 1u) != 0u) { v += bias[p.n0 + n]; }
  let o = t * p.ldo + p.n0 + n;
  if ((p.flags & 2u) != 0u) { v += out[o]; }
  out[o] = v;
}

// ---- GEMV (decode, T = 1): 256 / LANES rows per workgroup, LANES lanes per row -----------------
// On a GPU, 32 lanes reading consecutive pairs of one row keep the loads coalesced; the per-row
// partial sums meet in workgroup memory because subgroup ops are not available everywhere.
// CPU implementations of WebGPU (SwiftShader, lavapipe) pay per workgroup and per barrier, not for
// coalescing, so the backend sets LANES = 1 there: one row per invocation, no reduction.

override LANES: u32 = 32u;
const ROWS_ALL: u32 = 256u;
var<workgroup> red: array<f32, 256>;

/** The output row this lane works on; large N is dispatched as a 2-D grid (≤ 65535 per dimension). */
fn gemv_row(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * (ROWS_ALL / LANES) + li / LANES;
}

@compute @workgroup_size(256)
fn gemv(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let lane = li % LANES;
  let n = gemv_row(li, wid, nwg);
  let valid = n < p.N;
  var acc = 0.0;
  if (valid) {
    let pairs = (p.K + 1u) / 2u;
    let odd = (p.K & 1u) != 0u;
    for (var q = lane; q < pairs; q += LANES) {
      let k = 2u * q;
      // The padding half of an odd row is zero in w, but x[K] belongs to the next row (or lies
      // past the end), so mask it rather than trust 0 · x.
      let x1 = select(x[k + 1u], 0.0, odd && k + 1u == p.K);
      let wv = wpair(n, q);
      acc += wv.x * x[k] + wv.y * x1;
    }
  }
  reduce_rows(li, n, valid, acc);
}

#if QUANT
@compute @workgroup_size(256)
fn gemv_q(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
  let lane = li % LANES;
  let n = gemv_row(li, wid, nwg);
  let valid = n < p.N;
  var acc = 0.0;
  if (valid) {
    let row = n * p.ks2;
    let words = (p.K + 31u) / 32u * QWB;
    // As `gemv4`: four quant words a lane per step, all loads issued before any is used (the host
    // picks LANES so a row takes one or two such steps).
    var a = vec4<f32>(0.0);
    for (var i = lane; i < words; i += 4u * LANES) {
      a += vec4<f32>(q_term(row, i, words), q_term(row, i + LANES, words), q_term(row, i + 2u * LANES, words), q_term(row, i + 3u * LANES, words));
    }
    acc = a.x + a.y + a.z + a.w;
  }
  reduce_rows(li, n, valid, acc);
}

/** Σ over the weights of quant word i of the row at `row` of w · x, scaled; 0 for i ≥ words. */
fn q_term(row: u32, i: u32, words: u32) -> f32 {
  let ic = min(i, words - 1u); // a clamped duplicate, masked below, keeps the loads unconditional
  let wd = w[row + p.ss + ic];
  let b = ic / QWB;
  let qs = q_quads(ic);
  var d = dot(q_lo(wd), xquad(qs.x));
#if Q4
  d += dot(q_hi(wd), xquad(qs.y));
#endif
  return select(0.0, q_scale(w[row + q_sword(b)], b) * d, i < words);
}

/** Quad q of x (K % 4 == 0); zero past K, where the weights are padding (zero) but x is not ours. */
fn xquad(q: u32) -> vec4<f32> {
  let nq = p.K / 4u;
  return select(vec4<f32>(0.0), xq[min(q, nq - 1u)], q < nq);
}

#else
@compute @workgroup_size(256)
fn gemv4(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
  let lane = li % LANES;
  let n = gemv_row(li, wid, nwg);
  let valid = n < p.N;
  var acc = 0.0;
  if (valid) {
    let quads = p.K / 4u;
    let wrow = n * (p.ks2 / 2u);
    let last = quads - 1u;
    // Four loads a lane per step, issued together: a decode step streams weights from memory once,
    // and a lane waiting on one load at a time pays the full memory latency per load (the host
    // picks LANES so a row takes one or two such steps).
    var a = vec4<f32>(0.0);
    for (var q = lane; q < quads; q += 4u * LANES) {
      let q1 = min(q + LANES, last);
      let q2 = min(q + 2u * LANES, last);
      let q3 = min(q + 3u * LANES, last);
      a += vec4<f32>(dot(w4(wrow + q), xq[q]), dot(w4(wrow + q1), xq[q1]), dot(w4(wrow + q2), xq[q2]), dot(w4(wrow + q3), xq[q3]))
        * vec4<f32>(1.0, f32(q + LANES < quads), f32(q + 2u * LANES < quads), f32(q + 3u * LANES < quads));
    }
    acc = a.x + a.y + a.z + a.w;
  }
  reduce_rows(li, n, valid, acc);
}

#endif

/** Sums the LANES partial dot products of each row and writes the row. Called by every lane. */
fn reduce_rows(li: u32, n: u32, valid: bool, acc: f32) {
  let lane = li % LANES;
  if (LANES == 1u) {
    if (valid) { finish(0u, n, acc); }
    return;
  }
  red[li] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  if (valid && lane == 0u) { finish(0u, n, red[li]); }
}

// ---- GEMM (prefill, T > 1): BT tokens × 64 outputs per workgroup, 4 × 4 per invocation ----------
// Each weight tile is loaded once per BT tokens instead of once per token, which is the whole
// point of processing a prompt in chunks. On a GPU the previous 32 × 64 tile (2 × 4 outputs per
// invocation) was latency-bound: 6 workgroup loads per 8 FMA, and every 16-wide k step waited
// for its global loads between two barriers. Here:
//   - 16 outputs per invocation from one vec4 of x and one vec4 of w per k: 2 workgroup loads
//     per 16 FMA (the x vec4 is a broadcast: the 32 invocations of a warp share 2 token rows);
//   - the next k tile is fetched into registers before the current one is multiplied, so the
//     global-load latency overlaps the FMAs instead of sitting between the barriers;
//   - BT = 32 (128 invocations) or 64 (256), chosen by the host (`GBT`): 32 gives twice the
//     workgroups (384 for in_proj at T = 512, ~3 per SM on a 132-SM H100, instead of 192, which
//     leaves some SMs one workgroup behind); 64 halves the weight-tile traffic once the grid is
//     large anyway. Workgroup memory (BT + 64) · 16 floats: 6 or 8 KiB of the 16 KiB default.
// Invocation (tx, ty) owns tokens t0 + 4·ty .. +3 and outputs n0 + 4·tx .. +3.

const BT: u32 = {{GBT}}u;
const BN: u32 = 64u;
const BK: u32 = 16u;           // elements; BK / 2 pairs
const TH: u32 = 4u * BT;       // invocations: 16 × BT / 4
const WPT: u32 = 512u / TH;    // w pairs each invocation loads per tile (64 rows × 8 pairs)
const WTR: u32 = 8u / WPT;     // invocations per w row
var<workgroup> xs: array<vec4<f32>, BK * BT / 4u>; // [BK, BT / 4]: xs[k · BT/4 + i] = x[4i .. 4i+3, k]
var<workgroup> ws: array<vec4<f32>, BK * BN / 4u>; // [BK, BN / 4]: ws[k · 16 + i] = w[4i .. 4i+3, k]

// The loader's registers, filled by `fetch_tile` one tile ahead of the multiply in `gemm`:
// x: token li / 4 of the tile, k = (li % 4)·4 .. +3 (4 consecutive floats of a row);
// w: row li / WTR, pairs (li % WTR)·WPT .. +WPT-1 (WPT = 2 or 4). Out of range loads as zero (the pad half of
// odd rows is zero in w; x beyond K is masked).
var<private> xr: vec4<f32>;
var<private> wa: vec4<f32>; // pairs 0, 1
var<private> wb: vec4<f32>; // pairs 2, 3 (WPT = 4 only)

fn xld(t: u32, k: u32) -> f32 {
  if (t < p.T && k < p.K) { return x[t * p.K + k]; }
  return 0.0;
}

fn wld(n: u32, q: u32) -> vec2<f32> {
  if (n < p.N && 2u * q < p.K) { return wpair(n, q); }
  return vec2<f32>(0.0);
}

// Written out without loops over register arrays: every index into xr, wa, wb is a constant.
fn fetch_tile(k0: u32, li: u32, t0: u32, n0: u32) {
  let xt = t0 + li / 4u;
  let kx = k0 + (li % 4u) * 4u;
  xr = vec4<f32>(xld(xt, kx), xld(xt, kx + 1u), xld(xt, kx + 2u), xld(xt, kx + 3u));
  let wn = n0 + li / WTR;
  let qg = k0 / 2u + (li % WTR) * WPT;
  wa = vec4<f32>(wld(wn, qg), wld(wn, qg + 1u));
  if (WPT == 4u) { wb = vec4<f32>(wld(wn, qg + 2u), wld(wn, qg + 3u)); }
}

@compute @workgroup_size(16, {{GTY}})
fn gemm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
  let n0 = wid.x * BN;
  let t0 = wid.y * BT;
  let xt = li / 4u;              // x tile: token, first k
  let xk = (li % 4u) * 4u;
  let wn = li / WTR;             // w tile: row, first k
  let wk = (li % WTR) * 2u * WPT;
  var acc: array<vec4<f32>, 4>;  // acc[i][j]: token t0 + 4·ty + i, output n0 + 4·tx + j
  fetch_tile(0u, li, t0, n0);
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    workgroupBarrier(); // everyone is done reading the previous tile
    let xo = xk * (BT / 4u) + xt / 4u; // element k = xk + c of token xt
    xs[xo][xt % 4u] = xr.x;
    xs[xo + BT / 4u][xt % 4u] = xr.y;
    xs[xo + BT / 2u][xt % 4u] = xr.z;
    xs[xo + 3u * BT / 4u][xt % 4u] = xr.w;
    let wo = wk * 16u + wn / 4u;      // element k = wk + c of row wn
    ws[wo][wn % 4u] = wa.x;
    ws[wo + 16u][wn % 4u] = wa.y;
    ws[wo + 32u][wn % 4u] = wa.z;
    ws[wo + 48u][wn % 4u] = wa.w;
    if (WPT == 4u) {
      ws[wo + 64u][wn % 4u] = wb.x;
      ws[wo + 80u][wn % 4u] = wb.y;
      ws[wo + 96u][wn % 4u] = wb.z;
      ws[wo + 112u][wn % 4u] = wb.w;
    }
    workgroupBarrier();
    // Prefetch the next tile into registers; its loads are in flight during the FMAs below.
    if (k0 + BK < p.K) { fetch_tile(k0 + BK, li, t0, n0); }
    for (var kk = 0u; kk < BK; kk++) {
      let xv = xs[kk * (BT / 4u) + lid.y];
      let wv = ws[kk * 16u + lid.x];
      acc[0] += xv.x * wv;
      acc[1] += xv.y * wv;
      acc[2] += xv.z * wv;
      acc[3] += xv.w * wv;
    }
  }
  // Constant indices into acc only: a dynamic index would make a compiler that does not unroll
  // the loop keep acc in (slow, per-thread) local memory for the whole kernel.
  let n = n0 + lid.x * 4u;
  let t = t0 + lid.y * 4u;
  finish4(t, n, acc[0]);
  finish4(t + 1u, n, acc[1]);
  finish4(t + 2u, n, acc[2]);
  finish4(t + 3u, n, acc[3]);
}

fn finish4(t: u32, n: u32, v: vec4<f32>) {
  if (t >= p.T) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (n + j < p.N) { finish(t, n + j, v[j]); }
  }
}

// ---- flat GEMM (prefill on software adapters): one invocation per output, no workgroup memory ---
// CPU implementations emulate barriers with fibers, which costs more than the reuse the tiles buy;
// their caches give the reuse anyway.

@compute @workgroup_size(64)
fn gemm_flat(@builtin(global_invocation_id) gid: vec3<u32>) {
  let n = gid.x;
  let t = gid.y;
  if (n >= p.N || t >= p.T) { return; }
  let pairs = (p.K + 1u) / 2u;
  let odd = (p.K & 1u) != 0u;
  let xrow = t * p.K;
  var acc = 0.0;
  for (var q = 0u; q < pairs; q++) {
    let k = 2u * q;
    let x1 = select(x[xrow + k + 1u], 0.0, odd && k + 1u == p.K);
    let wv = wpair(n, q);
    acc += wv.x * x[xrow + k] + wv.y * x1;
  }
  finish(t, n, acc);
}
