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

#include common

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

// ---- chunked prefill scan (T > 1): blocks of TB tokens, L lanes per channel -------------------
// The per-token kernel above pays, for every token, a barrier plus dependent global loads (dbc row
// → dt_proj dot product → softplus → state update → u, z → out): on a GPU each of those waits the
// full memory latency, ~9 µs per token per layer, while the arithmetic is ~0.2 µs. Only the
// state update h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t is sequential; everything around it is
// parallel over tokens. So, per block of TB tokens (3 barriers per block instead of 2 per token):
//   P1  the TB rows of dbc [TB, S] (one contiguous, coalesced range) → workgroup memory `rows`
//       (fetched into registers during the previous block, see `fetch_block`; u and z likewise)
//   P2  Δ = softplus(dt_proj·δ + b) and Δ·u for the TB tokens × CH channels, in parallel
//       (dt_proj's row is read once per block and reused for TB / L tokens per invocation)
//   P3  the recurrence: L lanes per channel, each with N / L states in registers; per token only
//       workgroup-memory reads, NL exp and 2·NL FMA; a lane writes its partial y_t to `yp`
//   P4  y_t = Σ_lanes yp + D·u_t, gated by SiLU(z_t), written out: TB / L tokens per invocation
// 64 invocations = CH channels × L lanes (invocation li: channel li % CH, lane li / CH, so
// consecutive invocations touch consecutive channels and the u, z, out accesses coalesce).
// E / CH workgroups (96 for E = 1536, L = 4) instead of E / 64 spread the scan over more SMs.
// TB is chosen by the host so that TB · (S + 3·CH + 64) floats fit in 16 KiB (default limit).

const L: u32 = {{L}}u;       // lanes per channel (divides N)
const NL: u32 = N / L;       // states per lane
const CH: u32 = WG / L;      // channels per workgroup
const TB: u32 = {{TB}}u;     // tokens per block (a multiple of L)
const TL: u32 = TB / L;      // tokens per invocation in P2 and P4

var<workgroup> rows: array<f32, TB * S>; // [TB, S]   δ | B | C of the block's tokens
var<workgroup> dl: array<f32, TB * CH>;  // [TB, CH]  Δ
var<workgroup> du: array<f32, TB * CH>;  // [TB, CH]  Δ·u
var<workgroup> us: array<f32, TB * CH>;  // [TB, CH]  u (for the D skip)
var<workgroup> yp: array<f32, TB * WG>;  // [TB, L, CH] partial y per lane

// The next block's global inputs, fetched into registers while the current block is scanned (the
// loads are in flight during P2-P4, which touch only workgroup memory and registers):
// dbc floats li, li + 64, ... of the block's contiguous [cnt, S] range; u and z of the tokens
// this invocation handles in P2 and P4 (lane, lane + L, ...).
const RPT: u32 = (TB * S + WG - 1u) / WG;
var<private> rr: array<f32, RPT>;
var<private> ur: array<f32, TL>;
var<private> zr: array<f32, TL>;

fn fetch_block(t0: u32, li: u32, lane: u32, ec: u32) {
  let cnt = min(TB, p.T - t0);
  for (var i = 0u; i < RPT; i++) {
    let idx = li + WG * i;
    if (idx < cnt * S) { rr[i] = dbc[t0 * S + idx]; }
  }
  for (var k = 0u; k < TL; k++) {
    let tb = lane + L * k;
    if (tb < cnt) {
      ur[k] = u[(t0 + tb) * p.E + ec];
      zr[k] = z[(t0 + tb) * p.E + ec];
    }
  }
}

// This invocation's states lane·NL .. lane·NL + NL - 1 of its channel, and A for them.
var<private> hp: array<f32, NL>;
var<private> ap: array<f32, NL>;

// P3 for token tb of the block: state update, this lane's share of y_t into `yp`.
fn scan_token(tb: u32, ch: u32, lane: u32, li: u32) {
  let delta = dl[tb * CH + ch];
  let x = du[tb * CH + ch];
  let bc = tb * S + R + lane * NL;
  var y = 0.0;
  for (var j = 0u; j < NL; j++) {
    hp[j] = exp(delta * ap[j]) * hp[j] + x * rows[bc + j];
    y += hp[j] * rows[bc + N + j];
  }
  yp[tb * WG + li] = y;
}

@compute @workgroup_size(64)
fn scan_chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let ch = li % CH;
  let lane = li / CH;
  let e = wid.x * CH + ch;
  let valid = e < p.E;
  let ec = min(e, p.E - 1u); // keeps loads in bounds for the idle tail channels
  let oB = p.E * R;
  let oA = oB + p.E;
  let oD = oA + p.E * N;
  for (var j = 0u; j < NL; j++) {
    hp[j] = state[ec * N + lane * NL + j];
    ap[j] = prm[oA + ec * N + lane * NL + j];
  }
  let dtB = prm[oB + ec];
  let dskip = prm[oD + ec];
  // Every invocation runs every block (no early return): the barriers must be reached uniformly.
  fetch_block(0u, li, lane, ec);
  for (var t0 = 0u; t0 < p.T; t0 += TB) {
    let cnt = min(TB, p.T - t0);
    // P1: rows t0 .. t0 + cnt of dbc (one contiguous range), from the registers fetched earlier.
    for (var i = 0u; i < RPT; i++) {
      let idx = li + WG * i;
      if (idx < cnt * S) { rows[idx] = rr[i]; }
    }
    let uc = ur;
    let zc = zr;
    workgroupBarrier();
    if (t0 + TB < p.T) { fetch_block(t0 + TB, li, lane, ec); }
    // P2: tokens lane, lane + L, ... of the block. r outer: one load of dt_proj[ec, r] per TL tokens;
    // the sum runs in the reference's order (b, then r = 0 .. R-1).
    var acc: array<f32, TL>;
    for (var k = 0u; k < TL; k++) { acc[k] = dtB; }
    for (var r = 0u; r < R; r++) {
      let wr = prm[ec * R + r];
      for (var k = 0u; k < TL; k++) { acc[k] += wr * rows[(lane + L * k) * S + r]; }
    }
    for (var k = 0u; k < TL; k++) {
      let tb = lane + L * k;
      if (tb < cnt) {
        let delta = softplus(acc[k]);
        let ut = uc[k];
        dl[tb * CH + ch] = delta;
        du[tb * CH + ch] = delta * ut;
        us[tb * CH + ch] = ut;
      }
    }
    workgroupBarrier();
    // P3: the sequential part; nothing here waits on global memory. A full block runs a loop of
    // constant trip count, which a compiler can unroll and software-pipeline: the loads and exp of
    // later tokens do not depend on h, only the one FMA per state and token does.
    if (cnt == TB) {
      for (var tb = 0u; tb < TB; tb++) { scan_token(tb, ch, lane, li); }
    } else {
      for (var tb = 0u; tb < cnt; tb++) { scan_token(tb, ch, lane, li); }
    }
    workgroupBarrier();
    // P4: the next block's P1 only rewrites `rows` (read in P3, before the barrier above), and its
    // P2 rewrites dl/du/us after the next barrier, so no barrier is needed after this phase.
    for (var k = 0u; k < TL; k++) {
      let tb = lane + L * k;
      if (tb < cnt && valid) {
        var y = 0.0;
        for (var l = 0u; l < L; l++) { y += yp[tb * WG + l * CH + ch]; }
        y += dskip * us[tb * CH + ch];
        out[(t0 + tb) * p.E + e] = y * silu(zc[k]);
      }
    }
  }
  if (valid) {
    for (var j = 0u; j < NL; j++) { state[e * N + lane * NL + j] = hp[j]; }
  }
}
