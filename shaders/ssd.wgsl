// Mamba-2's scan (SSD) in its chunked, parallel form (src/reference/ssd.ts `ssdChunked`,
// assembly/ssd.ts): per sub-chunk of Q tokens and per head, with a_s = Δ_s·A, cum_t = Σ_{s≤t} a_s,
//   y_t = Σ_{s≤t} (C_t·B_s)·exp(cum_t − cum_s)·Δ_s · x_s  +  exp(cum_t)·S·C_t  +  D·x_t
//   S  ← exp(cum_{Q−1})·S + Σ_s exp(cum_{Q−1} − cum_s)·Δ_s · x_s ⊗ B_s
// Rows p of a head's state are independent, so workgroup (h, pt) owns channels
// p ∈ [pt·PT, pt·PT + PT) of head h and walks the T tokens of the call in sub-chunks of Q: within
// a sub-chunk nothing waits on the previous token. Every workgroup of a head rebuilds that head's
// [Q, Q] mask M (Q·Q·N/2 multiply-adds): cheaper than a second dispatch.
// xbc [T, E + 2GN] (x | B | C after the conv); dt [T, H]; prm [dt_bias [H] | A [H] | D [H]];
// state [H, P, N]; y [T, E].

#include common

const Q: u32 = 32u;  // tokens per sub-chunk: M is Q·Q floats of workgroup memory
const PT: u32 = {{PT}}u; // channels per workgroup
const WG: u32 = 256u;

struct Params {
  T: u32,
  N: u32,
  H: u32,
  P: u32,
  G: u32,
  dtMin: f32,
  dtMax: f32,
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> xbc: array<f32>;
@group(0) @binding(1) var<storage, read> dt: array<f32>;
@group(0) @binding(2) var<storage, read> prm: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> M: array<f32, 1024>; // [Q, Q], lower triangle used
var<workgroup> delta: array<f32, 32>;
var<workgroup> cum: array<f32, 32>;

@compute @workgroup_size(256)
fn ssd(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let h = wid.x;
  let p0 = wid.y * PT;
  let N = p.N;
  let H = p.H;
  let P = p.P;
  let E = H * P;
  let W = E + 2u * p.G * N; // xbc row length
  let g = (h * p.G) / H;
  let xo = h * P;
  let bo = E + g * N;
  let co = E + p.G * N + g * N;
  let A = prm[H + h];
  let Dh = prm[2u * H + h];
  let bias = prm[h];
  for (var t0 = 0u; t0 < p.T; t0 += Q) {
    let q = min(Q, p.T - t0);
    if (li < q) {
      delta[li] = clamp(softplus(dt[(t0 + li) * H + h] + bias), p.dtMin, p.dtMax);
    }
    workgroupBarrier();
    if (li == 0u) {
      var run = 0.0;
      for (var s = 0u; s < q; s++) { run += delta[s] * A; cum[s] = run; }
    }
    workgroupBarrier();
    // M[t, s] = (C_t · B_s) · exp(cum_t − cum_s) · Δ_s, s ≤ t
    for (var i = li; i < q * q; i += WG) {
      let t = i / q;
      let s = i % q;
      var v = 0.0;
      if (s <= t) {
        let ct = (t0 + t) * W + co;
        let bs = (t0 + s) * W + bo;
        for (var n = 0u; n < N; n++) { v += xbc[ct + n] * xbc[bs + n]; }
        v *= exp(cum[t] - cum[s]) * delta[s];
      }
      M[t * Q + s] = v;
    }
    workgroupBarrier();
    // y_t[p] for this workgroup's channels, from the state as the sub-chunk found it.
    let pw = min(PT, P - p0);
    for (var i = li; i < q * pw; i += WG) {
      let t = i / pw;
      let c = p0 + i % pw;
      let row = (t0 + t) * W;
      var acc = 0.0;
      for (var s = 0u; s <= t; s++) { acc += M[t * Q + s] * xbc[(t0 + s) * W + xo + c]; }
      let sb = (h * P + c) * N;
      var sc = 0.0;
      for (var n = 0u; n < N; n++) { sc += state[sb + n] * xbc[row + co + n]; }
      y[(t0 + t) * E + xo + c] = acc + exp(cum[t]) * sc + Dh * xbc[row + xo + c];
    }
    storageBarrier();
    workgroupBarrier();
    // S[c, n] ← exp(cum_last)·S[c, n] + Σ_s exp(cum_last − cum_s)·Δ_s · x_s[c] · B_s[n]
    let last = cum[q - 1u];
    for (var i = li; i < pw * N; i += WG) {
      let c = p0 + i / N;
      let n = i % N;
      var acc = 0.0;
      for (var s = 0u; s < q; s++) {
        let r = (t0 + s) * W;
        acc += exp(last - cum[s]) * delta[s] * xbc[r + xo + c] * xbc[r + bo + n];
      }
      let k = (h * P + c) * N + n;
      state[k] = exp(last) * state[k] + acc;
    }
    storageBarrier();
    workgroupBarrier();
  }
}
