// The decode step (T = 1) in few dispatches per layer: Mamba-1 four instead of seven, Mamba-2
// three instead of eight.
// A token's arithmetic is tiny next to what a GPU dispatch costs: on an H100 in Deno/wgpu every
// dispatch takes ≥ 5 µs of launch and barrier however little it does (bench/webgpu-profile.js), and
// what a kernel adds to that is memory latency, not bandwidth: a layer's weights stream in ~1 µs,
// but a lane that waits on its loads one after another pays a memory round trip for each. So the
// step is fused along its data dependencies, and every lane issues its few loads together.
// Mamba-1:
//   mix_in     RMSNorm → in_proj x and z rows → causal conv step → SiLU       h [D] → u, z [E]
//   x_proj     `gemv4` in matmul.wgsl                                         u [E] → dbc [S]
//   scan_step  dt_proj → softplus → selective scan → D skip → ·SiLU(z)   u, z [E], dbc [S] → y [E]
//   out_proj   (+ residual) `gemv4` in matmul.wgsl                            y [E] → h [D]
// Mamba-2 (C = E + 2GN conv channels x | B | C):
//   mix_in     RMSNorm → in_proj xBC and z rows → conv step → SiLU          h [D] → u [C], z [E]
//   ssd_step   RMSNorm → in_proj dt row → Δ → SSD state update → C readout → D skip, per head
//                                                                            h [D], u [C] → y [E]
//   gate_out   gated RMSNorm (per group) → out_proj → + bias → residual add   y, z [E] → h [D]
// Both:
//   norm_gemv  final RMSNorm → LM head                                        h [D] → logits [V]
// (Computing x_proj inside the scan, redundantly in every workgroup, was tried: 42 µs a layer on the
// H100, against ~28 for the two dispatches; one SM pulls its S·E weights from L2 too slowly. Mamba-2's
// dt is one row of D values a head, so each ssd_step workgroup computes its head's Δ itself.)
// The conformance table's decode steps check these against the reference backend; the separate
// kernels remain the prefill path, and the decode path where these do not apply (`fusedStep` in
// src/webgpu/kernels.ts).
//
// Weights: matrices in the matmul layout (rows of D (gate_out: E) values, a multiple of 4), read four
// at a time in the model's format (mix_in / norm_gemv under q8 / q4: a quant word at a time, see
// quant.wgsl; Mamba-2's ssd_step and gate_out run on f32 / f16 only); vectors f32. Accumulation is f32
// throughout.

#if QUANT
alias W4 = u32; // one quant word (quant.wgsl)
#include quant
#elif F16
enable f16;
alias W4 = vec4<f16>;
fn f4(v: W4) -> vec4<f32> { return vec4<f32>(v); }
#elif PACKED
alias W4 = vec2<u32>;
fn f4(v: W4) -> vec4<f32> { return vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)); }
#else
alias W4 = vec4<f32>;
fn f4(v: W4) -> vec4<f32> { return v; }
#endif
#include common

const WG: u32 = 256u;
// Invocations sharing one weight row (a power of two): 32-128 on GPUs, so that a lane loads at most
// four quads of a row (`rowLanes` in src/webgpu/kernels.ts); 1 on CPU implementations, where a
// barrier costs more than it saves (as `gemv` in matmul.wgsl).
const LANES: u32 = {{LANES}}u;
const ROWS: u32 = WG / LANES; // weight rows per workgroup

@group(0) @binding(2) var<storage, read> wa: array<W4>; // [rows, ks] the (first) matrix (q8 / q4: its u32 words)
@group(0) @binding(3) var<storage, read> wb: array<W4>; // [rows, ks] mix_in: in_proj's z half

// ---- mix_in / norm_gemv: RMSNorm folded into the projection -----------------------------------
// xn = h / rms(h) ⊙ g, so w · xn = (w · (h ⊙ g)) / rms(h): each row's lanes, which cover all of h
// between them, sum Σ h² next to the dot product, and one reduction yields both. No workgroup
// needs a normalised copy of h, and the norm costs no dispatch of its own.

struct RowParams {
  D: u32,    // columns (h length)
  rows: u32, // rows of this projection (mix_in: x rows, E or Mamba-2's C; norm_gemv: V)
  ks: u32,   // row stride of the matrix: vec4s (f32, f16), u32 words (q8, q4)
  ss: u32,   // q8, q4: words of the scale section at the start of each row (quant.wgsl)
  eps: f32,
  zrows: u32, // mix_in: z rows (E)
  _pad2: u32,
  _pad3: u32,
}

@group(0) @binding(0) var<storage, read> h: array<vec4<f32>>;  // [D] residual stream
// mix_in: [g [D] | conv taps [C, K] | conv bias [C] | in_proj bias x [C] | z [E] | Mamba-2: see ssd_step];
// norm_gemv: [g [D]]
@group(0) @binding(1) var<storage, read> vp: array<vec4<f32>>;
var<workgroup> red2: array<vec2<f32>, WG>;

fn vs(i: u32) -> f32 { return vp[i >> 2u][i & 3u]; }

/**
 * (Σ_k w[row, k]·h[k]·g[k], Σ_k h[k]²) for matrix `wa` (or `wb`), summed over the LANES lanes of
 * the row; valid in the row's lane 0. Called by every invocation (it holds barriers).
 */
fn norm_dot(li: u32, row: u32, useB: bool, D: u32, ks: u32, ss: u32) -> vec2<f32> {
  let lane = li % LANES;
  let quads = D / 4u;
  var acc = vec2<f32>(0.0);
#if QUANT
  // A lane takes whole quant words, consecutive lanes consecutive words (see matmul.wgsl `gemv_q`);
  // the quads of h the words cover are each met once, so Σ h² comes out as for the float formats.
  let r0 = row * ks;
  let words = (D + 31u) / 32u * QWB;
  for (var i = lane; i < words; i += 2u * LANES) {
    let i1 = min(i + LANES, words - 1u);
    var w0: u32;
    var w1: u32;
    var s0: u32;
    var s1: u32;
    if (useB) {
      w0 = wb[r0 + ss + i]; w1 = wb[r0 + ss + i1]; s0 = wb[r0 + q_sword(i / QWB)]; s1 = wb[r0 + q_sword(i1 / QWB)];
    } else {
      w0 = wa[r0 + ss + i]; w1 = wa[r0 + ss + i1]; s0 = wa[r0 + q_sword(i / QWB)]; s1 = wa[r0 + q_sword(i1 / QWB)];
    }
    acc += q_norm_term(w0, s0, i, quads) + q_norm_term(w1, s1, i1, quads) * f32(i + LANES < words);
  }
#else
  // Two quads a lane per step, both loads issued before either is used (see matmul.wgsl `gemv4`).
  for (var q = lane; q < quads; q += 2u * LANES) {
    let q1 = min(q + LANES, quads - 1u);
    var w0: W4;
    var w1: W4;
    if (useB) { w0 = wb[row * ks + q]; w1 = wb[row * ks + q1]; } else { w0 = wa[row * ks + q]; w1 = wa[row * ks + q1]; }
    let h0 = h[q];
    let h1 = h[q1] * f32(q + LANES < quads); // a clamped duplicate adds nothing
    acc += vec2<f32>(dot(f4(w0), h0 * vp[q]) + dot(f4(w1), h1 * vp[q1]), dot(h0, h0) + dot(h1, h1));
  }
#endif
  red2[li] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red2[li] += red2[li + s]; }
    workgroupBarrier();
  }
  return red2[li];
}

#if QUANT
/** (scaled Σ w·h·g, Σ h²) over the weights of quant word i (word wd, its block's scale word sw). */
fn q_norm_term(wd: u32, sw: u32, i: u32, quads: u32) -> vec2<f32> {
  let qs = q_quads(i);
  let h0 = hquad(qs.x, quads);
  var t = vec2<f32>(dot(q_lo(wd), h0 * vp[min(qs.x, quads - 1u)]), dot(h0, h0));
#if Q4
  let h1 = hquad(qs.y, quads);
  t += vec2<f32>(dot(q_hi(wd), h1 * vp[min(qs.y, quads - 1u)]), dot(h1, h1));
#endif
  return vec2<f32>(q_scale(sw, i / QWB) * t.x, t.y);
}

/** Quad q of h, zero past D (the padding of a row's last block). */
fn hquad(q: u32, quads: u32) -> vec4<f32> {
  return select(vec4<f32>(0.0), h[min(q, quads - 1u)], q < quads);
}
#endif

@group(0) @binding(4) var<storage, read_write> conv_state: array<f32>; // [E, K-1] oldest first
@group(0) @binding(5) var<storage, read_write> u_out: array<f32>;      // [E] conv branch after SiLU
@group(0) @binding(6) var<storage, read_write> z_out: array<f32>;      // [E] gate branch
@group(0) @binding(7) var<uniform> pm: RowParams;

const K: u32 = {{K}}u;
var<workgroup> xrow: array<f32, WG>;

// A workgroup owns CH = ROWS / 2 channels: rows 0 .. CH-1 of it are their in_proj x rows, rows
// CH .. 2CH-1 their z rows (Mamba-2 has more x rows, C, than z rows, E: the last workgroups' z rows
// idle); then its first CH invocations run the conv step of those channels.
@compute @workgroup_size(256)
fn mix_in(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let CH = ROWS / 2u;
  let C = pm.rows;
  let r = li / LANES;
  let isZ = r >= CH;
  let e = wid.x * CH + r % CH;
  let n = select(C, pm.zrows, isZ);
  let t = norm_dot(li, min(e, n - 1u), isZ, pm.D, pm.ks, pm.ss);
  let oT = pm.D;              // conv taps
  let oC = oT + C * K;        // conv bias
  let oB = oC + C;            // in_proj bias, x rows then z rows
  if (li % LANES == 0u && e < n) {
    let v = t.x * inverseSqrt(t.y / f32(pm.D) + pm.eps) + vs(oB + select(0u, C, isZ) + e);
    if (isZ) { z_out[e] = v; } else { xrow[r] = v; }
  }
  workgroupBarrier();
  let ec = wid.x * CH + li;
  if (li < CH && ec < C) {
    let xv = xrow[li];
    let s0 = ec * (K - 1u);
    var acc = vs(oC + ec) + vs(oT + ec * K + K - 1u) * xv;
    for (var j = 0u; j + 1u < K; j++) { acc += vs(oT + ec * K + j) * conv_state[s0 + j]; }
    for (var j = 0u; j + 2u < K; j++) { conv_state[s0 + j] = conv_state[s0 + j + 1u]; }
    if (K > 1u) { conv_state[s0 + K - 2u] = xv; }
    u_out[ec] = silu(acc);
  }
}

@group(0) @binding(4) var<storage, read_write> logits: array<f32>; // [V]
@group(0) @binding(5) var<uniform> pn: RowParams;

// ROWS rows of the LM head per workgroup. `norm_dot` names both matrices, so the host binds the
// head as `wa` and again as `wb` (read-only aliases are allowed).
@compute @workgroup_size(256)
fn norm_gemv(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let n = wid.x * ROWS + li / LANES;
  let t = norm_dot(li, min(n, pn.rows - 1u), false, pn.D, pn.ks, pn.ss);
  if (li % LANES == 0u && n < pn.rows) {
    logits[n] = t.x * inverseSqrt(t.y / f32(pn.D) + pn.eps);
  }
}

// ---- scan_step: the selective scan of one token -------------------------------------------------
// scan.wgsl's `scan` gives a channel one invocation, which then walks its R dt_proj weights and N
// states in turn: ~R + 2N dependent memory round trips. Here NL lanes share a channel (N / NL states
// each, R / NL of the dt_proj dot product), so every lane has a few loads, all issued up front.
// Δ, A and the state stay f32 (scan.wgsl says why).

const N: u32 = {{N}}u;
const R: u32 = {{R}}u;
const NL: u32 = {{NL}}u; // lanes per channel, dividing N
const NS: u32 = N / NL;  // states per lane

struct ScanParams {
  E: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> su: array<f32>;  // [E] conv branch u
// [dt_proj.weight [E, R] | dt_proj.bias [E] | A [E, N] | D [E]], as for scan.wgsl
@group(0) @binding(1) var<storage, read> prm: array<f32>;
@group(0) @binding(2) var<storage, read> dbc: array<f32>; // [R + 2N] x_proj output: δ | B | C
@group(0) @binding(3) var<storage, read> sz: array<f32>;  // [E] gate branch z
@group(0) @binding(4) var<storage, read_write> ssm: array<f32>;   // [E, N] state
@group(0) @binding(5) var<storage, read_write> y_out: array<f32>; // [E]
@group(0) @binding(6) var<uniform> ps: ScanParams;

// One region per `channel_sum` call of a dispatch, never reused: on OpenGL ES a barrier does not
// order workgroup memory (Tint's GLSL has `barrier()` only, which ESSL 3.2 defines as execution
// ordering), and Mesa's llvmpipe sinks a load whose value is used only after the barrier below it.
// With one shared array, lanes 8-15 of a channel read `red[base]` after lanes 0-7 had already
// written the next sum's partials there: Δ and the state of half the lanes were wrong (1e-1).
// So no invocation writes a location that another may still read: a read-after-write across a
// barrier is fine, a write-after-read is not.
var<workgroup> red: array<f32, 2u * WG>;

/** Σ over the NL lanes of each channel of `v`, in region `slot` of `red`; every lane gets its channel's total. */
fn channel_sum(li: u32, v: f32, slot: u32) -> f32 {
  let i = slot * WG + li;
  red[i] = v;
  workgroupBarrier();
  for (var s = NL / 2u; s > 0u; s >>= 1u) {
    if (li % NL < s) { red[i] += red[i + s]; }
    workgroupBarrier();
  }
  return red[i - li % NL];
}

@compute @workgroup_size(256)
fn scan_step(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let E = ps.E;
  let e = wid.x * (WG / NL) + li / NL;
  let ec = min(e, E - 1u); // keeps loads in bounds for the idle tail lanes
  let l = li % NL;
  let oA = E * R + E;
  // Every load this lane needs, before any result is used.
  var dt = 0.0;
  for (var r = l; r < R; r += NL) { dt += prm[ec * R + r] * dbc[r]; }
  var a: array<f32, NS>;
  var hs: array<f32, NS>;
  for (var j = 0u; j < NS; j++) {
    a[j] = prm[oA + ec * N + l * NS + j];
    hs[j] = ssm[ec * N + l * NS + j];
  }
  let ut = su[ec];
  let gate = silu(sz[ec]);
  let dskip = prm[oA + E * N + ec];
  let delta = softplus(channel_sum(li, dt, 0u) + prm[E * R + ec]);
  var y = 0.0;
  for (var j = 0u; j < NS; j++) {
    let n = l * NS + j;
    let hn = exp(delta * a[j]) * hs[j] + delta * ut * dbc[R + n];
    if (e < E) { ssm[ec * N + n] = hn; }
    y += hn * dbc[R + N + n];
  }
  y = channel_sum(li, y, 1u);
  if (l == 0u && e < E) { y_out[e] = (y + dskip * ut) * gate; }
}

// Mamba-2's kernels read f32 / f16 rows (`f4`): under q8 / q4 the model keeps its separate kernels
// (kernels.ts `fusedStep`), so they are left out of the quantized builds of this module.
#if QUANT
#else
// ---- ssd_step: Mamba-2's scan of one token, per head ----------------------------------------------
// Workgroup (head h, tile) owns WG / NL channels p of head h, NL lanes a channel (N / NL states each)
// as in scan_step. Δ needs in_proj's dt row h against the normalised h: D values, computed by the
// whole workgroup (each workgroup of a head again: cheaper than a dispatch), while the lanes'
// state, B and C loads are in flight. src/reference/ssd.ts `ssd` is the recurrence:
//   Δ = clamp(softplus(dt + dt_bias), dtMin, dtMax);  S = exp(Δ·A)·S + Δ·x ⊗ B;  y = S·C + D·x

struct SsdStepParams {
  D: u32,
  ks4: u32,  // in_proj dt row stride in vec4s
  H: u32,
  P: u32,
  G: u32,
  oX: u32,   // [dt_bias [H] | A [H] | D [H] | in_proj dt bias [H]] in vp (floats)
  eps: f32,
  dtMin: f32,
  dtMax: f32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(3) var<storage, read> xbc: array<f32>;              // [C] after conv + SiLU: x | B | C
@group(0) @binding(4) var<storage, read_write> ssd_state: array<f32>;  // [H, P, N]
@group(0) @binding(5) var<storage, read_write> ssd_y: array<f32>;      // [E]
@group(0) @binding(6) var<uniform> pd: SsdStepParams;
var<workgroup> red_dt: array<vec2<f32>, WG>;

@compute @workgroup_size(256)
fn ssd_step(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let hd = wid.x;
  let H = pd.H;
  let P = pd.P;
  let E = H * P;
  let p = wid.y * (WG / NL) + li / NL;
  let c = hd * P + min(p, P - 1u); // the tail lanes load in bounds, store nothing
  let l = li % NL;
  let g = (hd * pd.G) / H;
  let oB = E + g * N;
  let oCc = E + pd.G * N + g * N;
  // This lane's loads, issued before the Δ reduction waits on anything.
  var hs: array<f32, NS>;
  var bn: array<f32, NS>;
  var cn: array<f32, NS>;
  for (var j = 0u; j < NS; j++) {
    let n = l * NS + j;
    hs[j] = ssd_state[c * N + n];
    bn[j] = xbc[oB + n];
    cn[j] = xbc[oCc + n];
  }
  let x = xbc[c];
  // (w_dt · (h ⊙ g), Σ h²) over the workgroup: as norm_dot, one row shared by all 256 lanes.
  var acc = vec2<f32>(0.0);
  for (var q = li; q < pd.D / 4u; q += WG) {
    let hq = h[q];
    acc += vec2<f32>(dot(f4(wa[hd * pd.ks4 + q]), hq * vp[q]), dot(hq, hq));
  }
  red_dt[li] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red_dt[li] += red_dt[li + s]; }
    workgroupBarrier();
  }
  let t = red_dt[0];
  let o = pd.oX;
  let dt = t.x * inverseSqrt(t.y / f32(pd.D) + pd.eps) + vs(o + 3u * H + hd);
  let delta = clamp(softplus(dt + vs(o + hd)), pd.dtMin, pd.dtMax);
  let decay = exp(delta * vs(o + H + hd));
  var y = 0.0;
  for (var j = 0u; j < NS; j++) {
    let v = decay * hs[j] + delta * x * bn[j];
    if (p < P) { ssd_state[c * N + l * NS + j] = v; }
    y += v * cn[j];
  }
  y = channel_sum(li, y, 0u);
  if (l == 0u && p < P) { ssd_y[c] = y + vs(o + 2u * H + hd) * x; }
}

// ---- gate_out: gated RMSNorm → out_proj → residual ------------------------------------------------
// out = rmsnorm_g(y ⊙ SiLU(z)) ⊙ w (or, norm before gate, rmsnorm_g(y) ⊙ w ⊙ SiLU(z)), per group of S
// channels (norm.wgsl `gated_norm`), then h += out_proj(out) + bias. Every workgroup first sums the
// groups' squares itself (E values: cheaper than a dispatch), GL lanes a group; then ROWS rows of
// out_proj, each row's lanes scaling the quads they read by their group's 1/rms.

struct GateOutParams {
  rows: u32, // D
  E4: u32,   // quads of y
  ks4: u32,  // out_proj row stride in vec4s
  S4: u32,   // quads a norm group
  NG: u32,   // norm groups
  GL: u32,   // lanes summing one group (a power of two, GL · NG ≤ 256)
  oW: u32,   // gate-norm weight [E] in vp (vec4s)
  oO: u32,   // out_proj bias [D] in vp (floats)
  eps: f32,
  normFirst: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> gy: array<vec4<f32>>;        // [E] ssd_step's y
@group(0) @binding(3) var<storage, read> gz: array<vec4<f32>>;        // [E] mix_in's z
@group(0) @binding(4) var<storage, read_write> gh: array<f32>;        // [D] residual stream
@group(0) @binding(5) var<uniform> pg: GateOutParams;
var<workgroup> red_g: array<f32, WG>;
var<workgroup> red_o: array<f32, WG>;

fn silu4(v: vec4<f32>) -> vec4<f32> { return v / (1.0 + exp(-v)); }

/** Quad q of what is normalised: y ⊙ SiLU(z), or y alone when the norm comes before the gate. */
fn gate_in(q: u32) -> vec4<f32> {
  return select(gy[q] * silu4(gz[q]), gy[q], pg.normFirst != 0u);
}

@compute @workgroup_size(256)
fn gate_out(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let gl = li % pg.GL;
  let gi = li / pg.GL;
  var ss = 0.0;
  if (gi < pg.NG) {
    for (var q = gl; q < pg.S4; q += pg.GL) {
      let v = gate_in(gi * pg.S4 + q);
      ss += dot(v, v);
    }
  }
  red_g[li] = ss;
  workgroupBarrier();
  for (var s = pg.GL / 2u; s > 0u; s >>= 1u) {
    if (gl < s) { red_g[li] += red_g[li + s]; }
    workgroupBarrier();
  }
  // Group g's Σ now sits in red_g[g · GL]; red_g is not written again.
  let lane = li % LANES;
  let n = wid.x * ROWS + li / LANES;
  let row = min(n, pg.rows - 1u) * pg.ks4;
  let S = f32(4u * pg.S4);
  var acc = 0.0;
  for (var q = lane; q < pg.E4; q += LANES) {
    let g = q / pg.S4;
    let scale = inverseSqrt(red_g[g * pg.GL] / S + pg.eps);
    let w = vp[pg.oW + q] * select(vec4<f32>(1.0), silu4(gz[q]), pg.normFirst != 0u);
    acc += dot(f4(wa[row + q]), gate_in(q) * w) * scale;
  }
  red_o[li] = acc;
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { red_o[li] += red_o[li + s]; }
    workgroupBarrier();
  }
  if (lane == 0u && n < pg.rows) { gh[n] += red_o[li] + vs(pg.oO + n); }
}
#endif
