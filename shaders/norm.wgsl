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

@compute @workgroup_size(256)
fn rmsnorm(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.x * p.dim;
  var ss = 0.0;
  for (var i = li; i < p.dim; i += WG) {
    let v = x[row + i];
    ss += v * v;
  }
  red[li] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  let scale = inverseSqrt(red[0] / f32(p.dim) + p.eps);
  for (var i = li; i < p.dim; i += WG) {
    out[row + i] = x[row + i] * scale * w[i];
  }
}
