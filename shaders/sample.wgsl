// On-GPU sampling helpers over one row of logits [T, V] (the row starts at float `offset`), so a
// decode step can read back a few bytes instead of V floats:
//   argmax: result[0] = index, result[1] = bits of the value (greedy decoding);
//   topk:   result[2i] = index, result[2i+1] = bits of the value of the i-th largest, i < k
//           (what top-k sampling needs; the host does temperature / top-p on k values).
// Order is by value descending, then index ascending, as a stable sort would give.

struct Params {
  V: u32,
  offset: u32,
  k: u32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> result: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
var<workgroup> bestV: array<f32, 256>;
var<workgroup> bestI: array<u32, 256>;

/** (v, i) ranks before (bv, bi): larger value first, then smaller index. */
fn before(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return bi == NONE || (i != NONE && (v > bv || (v == bv && i < bi)));
}

/** Workgroup-wide best of the candidates each lane left in bestV/bestI[li]; the winner ends in [0]. */
fn reduce_best(li: u32) {
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s && before(bestV[li + s], bestI[li + s], bestV[li], bestI[li])) {
      bestV[li] = bestV[li + s];
      bestI[li] = bestI[li + s];
    }
    workgroupBarrier();
  }
}

/** Leaves the best (value, index) of logits[offset .. offset + V) in bestV[0] / bestI[0]. */
fn argmax_row(li: u32, V: u32, offset: u32) {
  var v = 0.0;
  var idx = NONE;
  for (var i = li; i < V; i += WG) {
    let x = logits[offset + i];
    if (before(x, i, v, idx)) { v = x; idx = i; }
  }
  bestV[li] = v;
  bestI[li] = idx;
  reduce_best(li);
}

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) li: u32) {
  argmax_row(li, p.V, p.offset);
  if (li == 0u) {
    result[0] = bestI[0];
    result[1] = bitcast<u32>(bestV[0]);
  }
}

// k rounds of "best element ranked after the previous winner": O(k·V/256) loads per lane and no
// extra memory, which for the k ≤ ~100 used in sampling beats sorting V values.
@compute @workgroup_size(256)
fn topk(@builtin(local_invocation_index) li: u32) {
  var lastV = 0.0;
  var lastI = NONE; // nothing selected yet: every element qualifies
  for (var r = 0u; r < p.k; r++) {
    var v = 0.0;
    var idx = NONE;
    for (var i = li; i < p.V; i += WG) {
      let x = logits[p.offset + i];
      // only elements ranked strictly after the previous winner
      if ((lastI == NONE || before(lastV, lastI, x, i)) && before(x, i, v, idx)) { v = x; idx = i; }
    }
    bestV[li] = v;
    bestI[li] = idx;
    reduce_best(li);
    lastV = bestV[0];
    lastI = bestI[0];
    if (li == 0u) {
      result[2u * r] = lastI;
      result[2u * r + 1u] = bitcast<u32>(lastV);
    }
    workgroupBarrier(); // everyone has read [0] before the next round overwrites it
  }
}

// Chained greedy decoding: the argmax of this step's logits becomes the next step's input token
// without leaving the GPU (embed reads `feed[0]`), and is also appended to `chain[step]` so the host
// reads every token of a block back at once. Bindings alias `result` / `p` of the entries above,
// which WGSL allows because no entry point uses both.
@group(0) @binding(1) var<storage, read_write> chain: array<u32>;
@group(0) @binding(2) var<storage, read_write> feed: array<u32>;
@group(0) @binding(3) var<uniform> pf: Params; // k = step; _pad = where in `chain` to copy the logits (0: don't)

@compute @workgroup_size(256)
fn argmax_feed(@builtin(local_invocation_index) li: u32) {
  argmax_row(li, pf.V, pf.offset);
  if (li == 0u) {
    feed[0] = bestI[0];
    chain[pf.k] = bestI[0];
  }
  // The last step also leaves its logits beside the tokens, so one read-back returns both.
  if (pf._pad != 0u) {
    for (var i = li; i < pf.V; i += WG) { chain[pf._pad + i] = bitcast<u32>(logits[pf.offset + i]); }
  }
}
