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
var<workgroup> winV: array<f32, 2>; // topk: the winner of round r in slot r & 1
var<workgroup> winI: array<u32, 2>;

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
    // The winner moves to a slot of its own: the next round rewrites bestV/bestI[0] (lane 0) while
    // other lanes may still be reading them, since on OpenGL ES a barrier does not order workgroup
    // memory (see `channel_sum` in step.wgsl). Slot r & 1 is rewritten two rounds later, after
    // the next round's barriers, by which time every lane has used what it read.
    if (li == 0u) {
      winV[r & 1u] = bestV[0];
      winI[r & 1u] = bestI[0];
      result[2u * r] = bestI[0];
      result[2u * r + 1u] = bitcast<u32>(bestV[0]);
    }
    workgroupBarrier();
    lastV = winV[r & 1u];
    lastI = winI[r & 1u];
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

// Chained sampled decoding (temperature > 0, V ≤ 256): the same filters as the host sampler
// (src/sampler.ts) — temperature, top-k, top-p — and a draw from a SplitMix32 stream kept on the GPU,
// so a block of sampled tokens needs no read-back per token. Results are reproducible for a seed on
// this backend; they are not bit-identical to the host sampler (f32 here, f64 there).
struct SampleParams {
  V: u32,
  step: u32,
  logitsAt: u32,    // where in `chain` to copy the logits (0: don't)
  topK: u32,        // 0: off
  temperature: f32,
  topP: f32,        // 1: off
  _pad0: u32,
  _pad1: u32,
}
@group(0) @binding(3) var<storage, read_write> rng: array<u32>; // [1] SplitMix32 state
@group(0) @binding(4) var<uniform> sp: SampleParams;

var<workgroup> cum: array<f32, 512>; // [2, WG] prefix sums, ping-pong
var<workgroup> pick: array<u32, 2>; // [kept candidates, chosen token]
var<workgroup> draw: f32;

/** (v, i) ranks before (w, j) in the candidate order: larger value first, then smaller index. */
fn ranks_before(v: f32, i: u32, w: f32, j: u32) -> bool {
  return v > w || (v == w && i < j);
}

@compute @workgroup_size(256)
fn sample_feed(@builtin(local_invocation_index) li: u32) {
  // 1. Candidates: scaled logits, padded to 256 with -inf.
  bestV[li] = select(-3.4e38, logits[li] / sp.temperature, li < sp.V);
  bestI[li] = li;
  workgroupBarrier();
  // 2. Bitonic sort into candidate order (256 lanes, 36 compare-exchange rounds).
  for (var k = 2u; k <= WG; k <<= 1u) {
    for (var j = k >> 1u; j > 0u; j >>= 1u) {
      let other = li ^ j;
      if (other > li) {
        let first = (li & k) == 0u; // this pair sorts in candidate order, else reversed
        let swap = select(ranks_before(bestV[li], bestI[li], bestV[other], bestI[other]),
                          ranks_before(bestV[other], bestI[other], bestV[li], bestI[li]), first);
        if (swap) {
          let v = bestV[li]; bestV[li] = bestV[other]; bestV[other] = v;
          let i = bestI[li]; bestI[li] = bestI[other]; bestI[other] = i;
        }
      }
      workgroupBarrier();
    }
  }
  // 3. Unnormalised probabilities of the top-k, then their inclusive prefix sums.
  //    Hillis-Steele between the two halves of `cum`: in place ("read, barrier, add") went wrong on
  //    OpenGL ES, where a barrier does not order workgroup memory (see `channel_sum` in step.wgsl)
  //    and a lane could read its neighbour's sum after the neighbour had already added to it:
  //    wrong probabilities, and text of unlikely bytes. Each round reads one half and writes the
  //    other; log2(WG) = 8 rounds (even) leave the sums in the first half, which the steps below read.
  let K = select(min(sp.topK, sp.V), sp.V, sp.topK == 0u);
  cum[li] = select(0.0, exp(bestV[li] - bestV[0]), li < K);
  workgroupBarrier();
  var src = 0u;
  for (var s = 1u; s < WG; s <<= 1u) {
    cum[WG - src + li] = cum[src + li] + select(0.0, cum[src + select(0u, li - s, li >= s)], li >= s);
    workgroupBarrier();
    src = WG - src;
  }
  // 4. Top-p: keep the smallest prefix whose mass reaches topP of the total (the sums only grow,
  //    so exactly one lane sees the crossing).
  if (li == 0u) { pick[0] = K; }
  workgroupBarrier();
  let goal = sp.topP * cum[WG - 1u];
  if (sp.topP < 1.0 && li < K && cum[li] >= goal && (li == 0u || cum[li - 1u] < goal)) { pick[0] = li + 1u; }
  workgroupBarrier();
  let keep = pick[0];
  // 5. Draw r in [0, mass) and take the first candidate whose running sum passes it.
  if (li == 0u) {
    var z = rng[0] + 0x9e3779b9u;
    rng[0] = z;
    z = (z ^ (z >> 16u)) * 0x85ebca6bu;
    z = (z ^ (z >> 13u)) * 0xc2b2ae35u;
    z ^= z >> 16u;
    draw = f32(z >> 8u) / 16777216.0 * cum[keep - 1u];
    pick[1] = bestI[keep - 1u];
  }
  workgroupBarrier();
  if (li < keep && cum[li] > draw && (li == 0u || cum[li - 1u] <= draw)) { pick[1] = bestI[li]; }
  workgroupBarrier();
  if (li == 0u) {
    feed[0] = pick[1];
    chain[sp.step] = pick[1];
  }
  if (sp.logitsAt != 0u) {
    for (var i = li; i < sp.V; i += WG) { chain[sp.logitsAt + i] = bitcast<u32>(logits[i]); }
  }
}
