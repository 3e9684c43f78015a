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

// Chained sampled decoding (temperature > 0, any V): the same filters as the host sampler
// (src/sampler.ts) — temperature, top-k, top-p — and a draw from a SplitMix32 stream kept on the GPU,
// so a block of sampled tokens needs no read-back per token. Results are reproducible for a seed on
// this backend; they are not bit-identical to the host sampler (f32 here, f64 there).
//
// One workgroup, for any vocabulary: a radix select (4 passes of an 8-bit histogram over an
// order-preserving key of each logit) finds the C = min(K, 256) best logits exactly — ties broken
// by smaller id, as the host's stable sort — without sorting V values; those C are bitonic-sorted in
// workgroup memory, then softmax, top-p and the draw run over them. The top-p goal is p times the
// probability mass of the *whole* top-k set (all V when top-k is off), summed in one more pass, so
// the nucleus cut is exact whenever the nucleus holds at most 256 tokens. Only when it holds more
// (or top-k > 256 with top-p off) is the draw limited to the 256 most likely tokens: the tokens
// dropped are each less likely than every token kept. Each lane reads a contiguous range of ids
// (lane order = id order, which the tie-break needs).
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

/** Candidates the draw can choose from: the sort size, one per lane. */
const CAP: u32 = WG;

var<workgroup> cum: array<f32, 512>; // [2, WG] prefix sums, ping-pong
var<workgroup> pick: array<u32, 2>; // [kept candidates, chosen token]
var<workgroup> draw: f32;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> laneGreater: array<u32, 256>; // per lane: ids above the threshold, then where its own go
var<workgroup> laneTies: array<u32, 256>; //    per lane: ids at the threshold, likewise
var<workgroup> sel: array<u32, 2>; // radix select result: [threshold key, ids at it to take]
var<workgroup> massPart: array<f32, 256>; // per lane: its share of the top-k set's mass

/** (v, i) ranks before (w, j) in the candidate order: larger value first, then smaller index. */
fn ranks_before(v: f32, i: u32, w: f32, j: u32) -> bool {
  return v > w || (v == w && i < j);
}

/** An order-preserving u32 of a float: a > b ⇔ key(a) > key(b). */
fn key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn unkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

/** This lane's ids [lo, hi): contiguous, in lane order. */
fn lane_range(li: u32, V: u32) -> vec2<u32> {
  let per = (V + WG - 1u) / WG;
  let lo = min(li * per, V);
  return vec2<u32>(lo, min(lo + per, V));
}

/**
 * The K-th best logit of logits[0, V) (1 ≤ K ≤ V): sel[0] = its key, sel[1] = how many ids with that
 * key are among the K best (the smallest ids), so #(key > sel[0]) + sel[1] = K.
 */
fn radix_select(li: u32, V: u32, K: u32) {
  let r = lane_range(li, V);
  var prefix = 0u;
  var need = K;
  for (var digit = 0u; digit < 4u; digit++) {
    let shift = 24u - 8u * digit;
    let mask = select(0u, 0xffffffffu << ((shift + 8u) & 31u), digit > 0u); // the digits fixed so far
    atomicStore(&hist[li], 0u);
    workgroupBarrier();
    for (var i = r.x; i < r.y; i++) {
      let k = key(logits[i]);
      if ((k & mask) == prefix) { atomicAdd(&hist[(k >> shift) & 255u], 1u); }
    }
    workgroupBarrier();
    if (li == 0u) {
      // From the top digit down, the bucket where the count reaches `need`.
      var above = 0u;
      var b = 255u;
      loop {
        let c = atomicLoad(&hist[b]);
        if (above + c >= need || b == 0u) { break; }
        above += c;
        b -= 1u;
      }
      sel[0] = prefix | (b << shift);
      sel[1] = need - above;
    }
    workgroupBarrier();
    prefix = sel[0];
    need = sel[1];
    workgroupBarrier(); // read before lane 0 writes the next digit
  }
}

@compute @workgroup_size(256)
fn sample_feed(@builtin(local_invocation_index) li: u32) {
  let V = sp.V;
  let r = lane_range(li, V);
  let kTotal = select(min(sp.topK, V), V, sp.topK == 0u); // the top-k set (all V when off)
  let C = min(kTotal, CAP); //                                 candidates held in workgroup memory
  // 1. The top-k set's threshold, when the set is larger than the candidates but not everything.
  var kKey = 0u;
  var kTies = 0u;
  if (kTotal > CAP && kTotal < V) {
    radix_select(li, V, kTotal);
    kKey = sel[0];
    kTies = sel[1];
    workgroupBarrier();
  }
  // 2. The C best, scaled by 1/temperature, into bestV/bestI (padded with -inf past C), in id order
  //    per lane: each lane's share of "above the threshold" and of the ties, as exclusive prefix sums.
  radix_select(li, V, C);
  let tKey = sel[0];
  let ties = sel[1];
  var g = 0u;
  var e = 0u;
  for (var i = r.x; i < r.y; i++) {
    let k = key(logits[i]);
    g += select(0u, 1u, k > tKey);
    e += select(0u, 1u, k == tKey);
  }
  laneGreater[li] = g;
  laneTies[li] = e;
  bestV[li] = -3.4e38;
  bestI[li] = NONE;
  workgroupBarrier();
  if (li == 0u) {
    var sg = 0u;
    var se = 0u;
    for (var l = 0u; l < WG; l++) {
      let a = laneGreater[l];
      laneGreater[l] = sg;
      sg += a;
      let b = laneTies[l];
      laneTies[l] = se;
      se += b;
    }
  }
  workgroupBarrier();
  var gAt = laneGreater[li];
  var eAt = laneTies[li];
  let G = C - ties;
  for (var i = r.x; i < r.y; i++) {
    let x = logits[i];
    let k = key(x);
    if (k > tKey) {
      bestV[gAt] = x / sp.temperature;
      bestI[gAt] = i;
      gAt++;
    } else if (k == tKey && eAt < ties) {
      bestV[G + eAt] = x / sp.temperature;
      bestI[G + eAt] = i;
      eAt++;
    }
  }
  workgroupBarrier();
  // 3. Bitonic sort into candidate order (256 lanes, 36 compare-exchange rounds).
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
  // 4. Unnormalised probabilities of the candidates, then their inclusive prefix sums.
  //    Hillis-Steele between the two halves of `cum`: in place ("read, barrier, add") went wrong on
  //    OpenGL ES, where a barrier does not order workgroup memory (see `channel_sum` in step.wgsl)
  //    and a lane could read its neighbour's sum after the neighbour had already added to it:
  //    wrong probabilities, and text of unlikely bytes. Each round reads one half and writes the
  //    other; log2(WG) = 8 rounds (even) leave the sums in the first half, which the steps below read.
  let top = bestV[0];
  cum[li] = select(0.0, exp(bestV[li] - top), li < C);
  workgroupBarrier();
  var src = 0u;
  for (var s = 1u; s < WG; s <<= 1u) {
    cum[WG - src + li] = cum[src + li] + select(0.0, cum[src + select(0u, li - s, li >= s)], li >= s);
    workgroupBarrier();
    src = WG - src;
  }
  // 5. The mass of the whole top-k set: the candidates' when they are all of it, else one more pass.
  var mass = 0.0;
  if (kTotal > CAP) {
    for (var i = r.x; i < r.y; i++) {
      let k = key(logits[i]);
      if (kTotal == V || k > kKey) { mass += exp(logits[i] / sp.temperature - top); }
    }
  }
  massPart[li] = mass;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { massPart[li] += massPart[li + s]; }
    workgroupBarrier();
  }
  let tiesMass = select(0.0, f32(kTies) * exp(unkey(kKey) / sp.temperature - top), kTies > 0u);
  let total = select(massPart[0] + tiesMass, cum[WG - 1u], kTotal <= CAP);
  // 6. Top-p: keep the smallest prefix whose mass reaches topP of the total (the sums only grow,
  //    so at most one lane sees the crossing; none when the nucleus is larger than the candidates).
  if (li == 0u) { pick[0] = C; }
  workgroupBarrier();
  let goal = sp.topP * total;
  if (sp.topP < 1.0 && li < C && cum[li] >= goal && (li == 0u || cum[li - 1u] < goal)) { pick[0] = li + 1u; }
  workgroupBarrier();
  let keep = pick[0];
  // 7. Draw r in [0, mass) and take the first candidate whose running sum passes it.
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
    for (var i = li; i < V; i += WG) { chain[sp.logitsAt + i] = bitcast<u32>(logits[i]); }
  }
}
