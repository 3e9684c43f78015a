// The fused selective scan (src/reference/scan.ts; Mamba paper eq. 2a-2b), one dispatch per layer:
//   Δ_t   = softplus(dt_proj(δ_t) + b)                  δ_t = dbc[t, :R]
//   h_t   = exp(Δ_t · A) ⊙ h_{t-1} + (Δ_t · u_t) B_t    B_t = dbc[t, R:R+N]
//   y_t   = h_t · C_t + D ⊙ u_t                         C_t = dbc[t, R+N:]
//   out_t = y_t ⊙ SiLU(z_t)
// u, z, out [T, E]; dbc [T, S] with S = R+2N; state h [E, N];
// prm = [dt_proj.weight [E, R] | dt_proj.bias [E] | A [E, N] | D [E]] packed into one buffer so the
// dispatch needs 6 storage bindings, within the default limit of 8 everywhere.
//
// One invocation per channel e holds h[e, :] in registers across all T tokens of the chunk: the
// recurrence is sequential in t but independent across channels, so the same kernel is the decode
// step (T = 1) and the chunked prefill scan, and the state touches memory once per chunk.
// Δ, A and the state stay f32 in every weight format: exp(Δ·A) compounds over thousands of steps.

const N: u32 = {{N}}u;
const R: u32 = {{R}}u;
const S: u32 = {{S}}u;
const WG: u32 = 64u;

struct Params {
  T: u32,
  E: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> u: array<f32>;
@group(0) @binding(1) var<storage, read> dbc: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> prm: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

// Every channel of the workgroup reads the same row of dbc: stage it once per token.
var<workgroup> row: array<f32, S>;

fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

// PyTorch's softplus (threshold 20). WGSL has no log1p: log(1 + e) loses all digits of a tiny e,
// so small e uses the series e - e²/2 + e³/3 (error < e⁴/4).
fn softplus(v: f32) -> f32 {
  if (v > 20.0) { return v; }
  let e = exp(v);
  if (e < 1e-2) { return e * (1.0 - e * (0.5 - e / 3.0)); }
  return log(1.0 + e);
}

@compute @workgroup_size(64)
fn scan(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let e = gid.x;
  let valid = e < p.E;
  let ec = min(e, p.E - 1u); // keeps loads in bounds for the idle tail lanes
  let oB = p.E * R;          // dt_proj.bias
  let oA = oB + p.E;         // A
  let oD = oA + p.E * N;     // D
  var h: array<f32, N>;
  var a: array<f32, N>;
  for (var n = 0u; n < N; n++) {
    h[n] = state[ec * N + n];
    a[n] = prm[oA + ec * N + n];
  }
  let dtB = prm[oB + ec];
  let dskip = prm[oD + ec];
  // Every lane runs the token loop (no early return): the barriers must be reached uniformly.
  for (var t = 0u; t < p.T; t++) {
    for (var i = li; i < S; i += WG) { row[i] = dbc[t * S + i]; }
    workgroupBarrier();
    var dt = dtB;
    for (var r = 0u; r < R; r++) { dt += prm[ec * R + r] * row[r]; }
    let delta = softplus(dt);
    let ut = u[t * p.E + ec];
    let du = delta * ut;
    var y = 0.0;
    for (var n = 0u; n < N; n++) {
      h[n] = exp(delta * a[n]) * h[n] + du * row[R + n];
      y += h[n] * row[R + N + n];
    }
    y += dskip * ut;
    if (valid) { out[t * p.E + e] = y * silu(z[t * p.E + e]); }
    workgroupBarrier();
  }
  if (valid) {
    for (var n = 0u; n < N; n++) { state[e * N + n] = h[n]; }
  }
}
