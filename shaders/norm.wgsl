// RMSNorm per row: out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · w
// x, out [T, dim]; w [dim]. One workgroup per row: a row is at most a few thousand floats, so a
// single workgroup reduction beats a second pass.

struct Params {
  T: u32,
  dim: u32,
  eps: f32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

/** Σ of `v` over the workgroup; every invocation gets it. Called by all invocations (barriers). */
fn wg_sum(li: u32, v: f32) -> f32 {
  red[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  return red[0];
}

@compute @workgroup_size(256)
fn rmsnorm(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x * p.dim;
  var ss = 0.0;
  for (var i = li; i < p.dim; i += WG) {
    let v = x[row + i];
    ss += v * v;
  }
  let scale = inverseSqrt(wg_sum(li, ss) / f32(p.dim) + p.eps);
  for (var i = li; i < p.dim; i += WG) {
    out[row + i] = x[row + i] * scale * w[i];
  }
}

// ---- norm_segments: Falcon-Mamba's weightless RMSNorms of Δ | B | C, in place ----------------
// xs [T, s0+s1+s2]; workgroup (t, s) normalises segment s of row t on its own.

struct SegParams {
  T: u32,
  width: u32,        // s0 + s1 + s2
  eps: f32,
  _pad: u32,
  seg: vec4<u32>,    // segment lengths (s0, s1, s2, 0)
}

@group(0) @binding(0) var<storage, read_write> xs: array<f32>;
@group(0) @binding(1) var<uniform> ps: SegParams;

@compute @workgroup_size(256)
fn norm_segments(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let s = wid.y;
  let len = ps.seg[s];
  var start = wid.x * ps.width;
  for (var j = 0u; j < s; j++) { start += ps.seg[j]; }
  var ss = 0.0;
  for (var i = li; i < len; i += WG) {
    let v = xs[start + i];
    ss += v * v;
  }
  let scale = inverseSqrt(wg_sum(li, ss) / f32(len) + ps.eps);
  for (var i = li; i < len; i += WG) { xs[start + i] *= scale; }
}
