// RMSNorm per row: out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · w
// x, out [T, dim]; w [dim]. One workgroup per row: a row is at most a few thousand floats, so a
// single workgroup reduction beats a second pass.

#include common

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

// ---- gated_norm: Mamba-2's gated RMSNorm per group of S channels ----------------------------------
// out = rmsnorm_g(y ⊙ SiLU(z)) ⊙ w, or with normFirst rmsnorm_g(y) ⊙ w ⊙ SiLU(z) (src/reference/norm.ts).
// y, z, out [T, E]; w [E]; workgroup (t, group).

struct GateParams {
  E: u32,
  S: u32,
  eps: f32,
  normFirst: u32,
}

@group(0) @binding(0) var<storage, read> gy: array<f32>;
@group(0) @binding(1) var<storage, read> gz: array<f32>;
@group(0) @binding(2) var<storage, read> gw: array<f32>;
@group(0) @binding(3) var<storage, read_write> gout: array<f32>;
@group(0) @binding(4) var<uniform> pg: GateParams;

fn gated(i: u32) -> f32 {
  return select(gy[i] * silu(gz[i]), gy[i], pg.normFirst != 0u);
}

@compute @workgroup_size(256)
fn gated_norm(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let c0 = wid.y * pg.S;
  let base = wid.x * pg.E + c0;
  var ss = 0.0;
  for (var i = li; i < pg.S; i += WG) {
    let v = gated(base + i);
    ss += v * v;
  }
  let scale = inverseSqrt(wg_sum(li, ss) / f32(pg.S) + pg.eps);
  for (var i = li; i < pg.S; i += WG) {
    let gate = select(1.0, silu(gz[base + i]), pg.normFirst != 0u);
    gout[base + i] = gated(base + i) * scale * gw[c0 + i] * gate;
  }
}
