// Causal depthwise conv1d continuing from `state`, then SiLU (src/reference/conv.ts).
// x, out [T, E]; state [E, K-1] oldest first; w [E, K]; bias [E].
// One invocation per channel: channels are independent and the sequence is short (a chunk), so
// the K-wide window lives in registers and slides over the T tokens.

const K: u32 = {{K}}u;

struct Params {
  T: u32,
  E: u32,
  hasBias: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> state: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

#include common

@compute @workgroup_size(64)
fn conv1d(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x;
  if (e >= p.E) { return; }
  var wk: array<f32, K>;
  var win: array<f32, K>; // win[0..K-2] the past inputs, win[K-1] the current one
  for (var j = 0u; j < K; j++) { wk[j] = w[e * K + j]; }
  for (var j = 0u; j < K - 1u; j++) { win[j] = state[e * (K - 1u) + j]; }
  var b = 0.0;
  if (p.hasBias != 0u) { b = bias[e]; }
  for (var t = 0u; t < p.T; t++) {
    win[K - 1u] = x[t * p.E + e];
    var acc = b;
    for (var j = 0u; j < K; j++) { acc += wk[j] * win[j]; }
    out[t * p.E + e] = silu(acc);
    for (var j = 0u; j < K - 1u; j++) { win[j] = win[j + 1u]; }
  }
  for (var j = 0u; j < K - 1u; j++) { state[e * (K - 1u) + j] = win[j]; }
}

// ---- prefill (T > 1): tokens in parallel -----------------------------------------------------
// `conv1d` above walks the T tokens of a channel in order: on a GPU every step waits for its x
// load (hundreds of cycles), T = 512 steps per layer, on only E / 64 = 24 workgroups. Nothing but
// the window needs the order: out[t] reads inputs t-K+1 .. t, from x or (t < 0) from the state.
// So `conv1d_chunk` gives each invocation CT consecutive tokens of one channel (all K-1+CT loads
// independent, issued together) over a [E / 64, T / CT] grid, and leaves the state alone;
// `conv1d_state`, the next dispatch, shifts the state, once every read of the old one is done.

const CT: u32 = 16u; // tokens per invocation

@compute @workgroup_size(64)
fn conv1d_chunk(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x;
  let t0 = gid.y * CT;
  if (e >= p.E || t0 >= p.T) { return; }
  var wk: array<f32, K>;
  for (var j = 0u; j < K; j++) { wk[j] = w[e * K + j]; }
  // win[i] = input t0 - (K-1) + i, from the state (oldest first) where that is before token 0
  var win: array<f32, K - 1u + CT>;
  for (var i = 0u; i < K - 1u + CT; i++) {
    let s = t0 + i; // input index + (K-1)
    var v = 0.0;
    if (s < K - 1u) { v = state[e * (K - 1u) + s]; } else if (s - (K - 1u) < p.T) { v = x[(s - (K - 1u)) * p.E + e]; }
    win[i] = v;
  }
  var b = 0.0;
  if (p.hasBias != 0u) { b = bias[e]; }
  // Constant trip counts (the tail is masked at the store), so the loops unroll and win/wk stay
  // in registers instead of per-thread local memory.
  for (var i = 0u; i < CT; i++) {
    var acc = b; // same order as `conv1d`: bias, then taps oldest first
    for (var j = 0u; j < K; j++) { acc += wk[j] * win[i + j]; }
    if (t0 + i < p.T) { out[(t0 + i) * p.E + e] = silu(acc); }
  }
}

// New state [E, K-1] = the last K-1 inputs of [old state, x] (some of the old state when T < K-1).
// Only x, the state and the uniform are bound: `ps` aliases binding 2 (w in the entries above).
@group(0) @binding(2) var<uniform> ps: Params;

@compute @workgroup_size(64)
fn conv1d_state(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x;
  if (e >= ps.E) { return; }
  var nw: array<f32, K>; // K ≥ 1 entries; the first K-1 are used
  for (var j = 0u; j < K - 1u; j++) {
    let s = ps.T + j; // index into [old state (K-1), x (T)]
    if (s < K - 1u) { nw[j] = state[e * (K - 1u) + s]; } else { nw[j] = x[(s - (K - 1u)) * ps.E + e]; }
  }
  for (var j = 0u; j < K - 1u; j++) { state[e * (K - 1u) + j] = nw[j]; }
}
