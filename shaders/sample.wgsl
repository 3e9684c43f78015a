// On-GPU greedy sampling: argmax over one row of logits, so a greedy decode step reads back
// 8 bytes instead of V floats. logits [T, V]; result = (index, bits of the max value).
// Ties go to the lowest index, as a sequential scan would pick.

struct Params {
  V: u32,
  offset: u32, // first float of the row
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> result: array<u32, 2>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> bestV: array<f32, 256>;
var<workgroup> bestI: array<u32, 256>;

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) li: u32) {
  var v = -3.4028234e38;
  var idx = 0xffffffffu;
  for (var i = li; i < p.V; i += WG) {
    let x = logits[p.offset + i];
    if (x > v || idx == 0xffffffffu) { v = x; idx = i; }
  }
  bestV[li] = v;
  bestI[li] = idx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) {
      let ov = bestV[li + s];
      let oi = bestI[li + s];
      if (oi != 0xffffffffu && (ov > bestV[li] || (ov == bestV[li] && oi < bestI[li]))) {
        bestV[li] = ov;
        bestI[li] = oi;
      }
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    result[0] = bestI[0];
    result[1] = bitcast<u32>(bestV[0]);
  }
}
