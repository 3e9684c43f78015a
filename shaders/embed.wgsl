// out[t, :] = table[tokens[t], :]     table [V, KS] (rows padded to an even KS), out [T, D]
// A table too large for one binding is split by rows; each part is one dispatch that writes only
// the tokens whose row it holds (rowStart <= token < rowEnd).

#if F16
enable f16;
@group(0) @binding(1) var<storage, read> table: array<vec2<f16>>;
fn w2(i: u32) -> vec2<f32> { return vec2<f32>(table[i]); }
#elif PACKED
@group(0) @binding(1) var<storage, read> table: array<u32>;
fn w2(i: u32) -> vec2<f32> { return unpack2x16float(table[i]); }
#else
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
fn w2(i: u32) -> vec2<f32> { return table[i]; }
#endif

struct Params {
  T: u32,
  D: u32,
  ks2: u32,
  rowStart: u32,
  rowEnd: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>) {
  let q = gid.x; // pair of columns
  let t = gid.y;
  if (t >= p.T || 2u * q >= p.D) { return; }
  let tok = tokens[t];
  if (tok < p.rowStart || tok >= p.rowEnd) { return; }
  let v = w2((tok - p.rowStart) * p.ks2 + q);
  out[t * p.D + 2u * q] = v.x;
  if (2u * q + 1u < p.D) { out[t * p.D + 2u * q + 1u] = v.y; }
}
