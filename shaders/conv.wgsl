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

fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

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
