// Causal depthwise conv1d + SiLU over a chunk, continuing from the per-channel state.
//   x, out [T, E]; state [E, K-1] (oldest first); w [E, K]; bias [E] or 0
// The sequence seen by channel e is [state[e, :], x[:, e]]; output t uses entries t .. t+K-1 of it.
// Three paths: the decode step (T = 1, branch-free per channel), prefill with K = 4 (four channels per
// vector, the window in registers), and a general per-channel loop for everything else.
import { silu1, silu4 } from './math';

/** Channels [eStart, eEnd). Afterwards state[e, :] holds the last K-1 entries of the sequence. */
export function conv1d(x: usize, state: usize, w: usize, bias: usize, out: usize, T: i32, E: i32, K: i32, eStart: i32, eEnd: i32): void {
  const P = K - 1;
  const rs = <usize>E << 2; // bytes per token row of x / out
  let e = eStart;
  // The usual K = 4, four channels per vector: a decode step reads the channels' taps and state rows as
  // whole vectors and transposes them; prefill slides the window in registers.
  if (K == 4 && T == 1) for (; e + 4 <= eEnd; e += 4) step4x4(x, state, w, bias, out, e);
  if (K == 4 && T > 1) for (; e + 4 <= eEnd; e += 4) conv4x4(x, state, w, bias, out, T, E, e);
  for (; e < eEnd; e++) {
    const we = w + ((<usize>e * <usize>K) << 2);
    const st = state + ((<usize>e * <usize>P) << 2);
    const xe = x + (<usize>e << 2);
    const b: f32 = bias ? load<f32>(bias + (<usize>e << 2)) : 0;
    if (T == 1) {
      // Decode step: window = [state, x], then the state drops its oldest entry. No per-tap branches.
      const xv = load<f32>(xe);
      let acc = b + load<f32>(we + (<usize>P << 2)) * xv;
      for (let j = 0; j < P; j++) acc += load<f32>(we + (<usize>j << 2)) * load<f32>(st + (<usize>j << 2));
      store<f32>(out + (<usize>e << 2), acc);
      for (let j = 0; j + 1 < P; j++) store<f32>(st + (<usize>j << 2), load<f32>(st + (<usize>(j + 1) << 2)));
      store<f32>(st + (<usize>(P - 1) << 2), xv);
      continue;
    }
    for (let t = 0; t < T; t++) {
      let acc = b;
      for (let j = 0; j < K; j++) {
        const s = t + j; // index into [state, x]
        const v = s < P ? load<f32>(st + (<usize>s << 2)) : load<f32>(xe + <usize>(s - P) * rs);
        acc += load<f32>(we + (<usize>j << 2)) * v;
      }
      store<f32>(out + <usize>t * rs + (<usize>e << 2), acc);
    }
    // Shift in place: entry T+i of the sequence becomes state i (reads are always ahead of writes).
    for (let i = 0; i < P; i++) {
      const s = T + i;
      const v = s < P ? load<f32>(st + (<usize>s << 2)) : load<f32>(xe + <usize>(s - P) * rs);
      store<f32>(st + (<usize>i << 2), v);
    }
  }
  siluRows(out, T, E, eStart, eEnd);
}

/** One token through channels e .. e+3 of a K = 4 convolution (before SiLU); state [E, 3], w [E, 4]. */
// @ts-ignore: decorator
@inline function step4x4(x: usize, state: usize, w: usize, bias: usize, out: usize, e: i32): void {
  const we = w + (<usize>e << 4), st = state + (<usize>e * 12);
  // w rows e .. e+3 are 16 contiguous floats: transposed, tap j of the four channels is one vector.
  const r0 = v128.load(we), r1 = v128.load(we, 16), r2 = v128.load(we, 32), r3 = v128.load(we, 48);
  const t0 = f32x4.shuffle(r0, r1, 0, 4, 1, 5), t1 = f32x4.shuffle(r2, r3, 0, 4, 1, 5);
  const t2 = f32x4.shuffle(r0, r1, 2, 6, 3, 7), t3 = f32x4.shuffle(r2, r3, 2, 6, 3, 7);
  const w0 = f32x4.shuffle(t0, t1, 0, 1, 4, 5), w1 = f32x4.shuffle(t0, t1, 2, 3, 6, 7);
  const w2 = f32x4.shuffle(t2, t3, 0, 1, 4, 5), w3 = f32x4.shuffle(t2, t3, 2, 3, 6, 7);
  // State rows e .. e+3 are 12 contiguous floats [a0 a1 a2 b0 | b1 b2 c0 c1 | c2 d0 d1 d2] (oldest first).
  const m0 = v128.load(st), m1 = v128.load(st, 16), m2 = v128.load(st, 32);
  const s0 = f32x4.shuffle(f32x4.shuffle(m0, m1, 0, 3, 6, 6), m2, 0, 1, 2, 5); // a0 b0 c0 d0
  const s1 = f32x4.shuffle(f32x4.shuffle(m0, m1, 1, 4, 7, 7), m2, 0, 1, 2, 6); // a1 b1 c1 d1
  const s2 = f32x4.shuffle(f32x4.shuffle(m0, m1, 2, 5, 5, 5), m2, 0, 1, 4, 7); // a2 b2 c2 d2
  const o = <usize>e << 2;
  const xv = v128.load(x + o);
  const b = bias ? v128.load(bias + o) : f32x4.splat(0);
  const acc = f32x4.add(
    f32x4.add(b, f32x4.mul(w0, s0)),
    f32x4.add(f32x4.add(f32x4.mul(w1, s1), f32x4.mul(w2, s2)), f32x4.mul(w3, xv)),
  );
  v128.store(out + o, acc);
  // The window drops its oldest entry: rows become [s1 s2 x] per channel, interleaved back the same way.
  const n01 = f32x4.shuffle(s1, s2, 0, 4, 1, 5); // a1 a2 b1 b2
  const n23 = f32x4.shuffle(s1, s2, 2, 6, 3, 7); // c1 c2 d1 d2
  v128.store(st, f32x4.shuffle(n01, xv, 0, 1, 4, 2)); // a1 a2 ax b1
  v128.store(st, f32x4.shuffle(f32x4.shuffle(n01, xv, 3, 5, 3, 5), n23, 0, 1, 4, 5), 16); // b2 bx c1 c2
  v128.store(st, f32x4.shuffle(f32x4.shuffle(xv, n23, 2, 6, 7, 3), xv, 0, 1, 2, 7), 32); // cx d1 d2 dx
}

/** Lanes i = p[i·stride] (strided gather of four floats). */
// @ts-ignore: decorator
@inline function gather4(p: usize, stride: usize): v128 {
  let v = f32x4.splat(load<f32>(p));
  v = f32x4.replace_lane(v, 1, load<f32>(p + stride));
  v = f32x4.replace_lane(v, 2, load<f32>(p + 2 * stride));
  return f32x4.replace_lane(v, 3, load<f32>(p + 3 * stride));
}

/** Channels e .. e+3 of a K = 4 convolution over T tokens (before SiLU); state [E, 3], w [E, 4]. */
// @ts-ignore: decorator
@inline function conv4x4(x: usize, state: usize, w: usize, bias: usize, out: usize, T: i32, E: i32, e: i32): void {
  const rs = <usize>E << 2;
  const we = w + (<usize>e << 4), st = state + (<usize>e * 12);
  // Taps j of the four channels (w rows are 16 bytes apart), and the window [s0, s1, s2] of past inputs.
  const w0 = gather4(we, 16), w1 = gather4(we + 4, 16), w2 = gather4(we + 8, 16), w3 = gather4(we + 12, 16);
  let s0 = gather4(st, 12), s1 = gather4(st + 4, 12), s2 = gather4(st + 8, 12);
  const b = bias ? v128.load(bias + (<usize>e << 2)) : f32x4.splat(0);
  for (let t = 0; t < T; t++) {
    const o = <usize>t * rs + (<usize>e << 2);
    const xt = v128.load(x + o);
    const acc = f32x4.add(
      f32x4.add(b, f32x4.mul(w0, s0)),
      f32x4.add(f32x4.add(f32x4.mul(w1, s1), f32x4.mul(w2, s2)), f32x4.mul(w3, xt)),
    );
    v128.store(out + o, acc);
    s0 = s1; s1 = s2; s2 = xt;
  }
  // The last three inputs become the state, channel by channel.
  store<f32>(st, f32x4.extract_lane(s0, 0)); store<f32>(st, f32x4.extract_lane(s1, 0), 4); store<f32>(st, f32x4.extract_lane(s2, 0), 8);
  store<f32>(st, f32x4.extract_lane(s0, 1), 12); store<f32>(st, f32x4.extract_lane(s1, 1), 16); store<f32>(st, f32x4.extract_lane(s2, 1), 20);
  store<f32>(st, f32x4.extract_lane(s0, 2), 24); store<f32>(st, f32x4.extract_lane(s1, 2), 28); store<f32>(st, f32x4.extract_lane(s2, 2), 32);
  store<f32>(st, f32x4.extract_lane(s0, 3), 36); store<f32>(st, f32x4.extract_lane(s1, 3), 40); store<f32>(st, f32x4.extract_lane(s2, 3), 44);
}

/** out[t, e] = SiLU(out[t, e]) for e in [eStart, eEnd), four channels per vector. */
export function siluRows(out: usize, T: i32, E: i32, eStart: i32, eEnd: i32): void {
  for (let t = 0; t < T; t++) {
    const row = out + ((<usize>t * <usize>E) << 2);
    let e = eStart;
    for (; e + 4 <= eEnd; e += 4) {
      const p = row + (<usize>e << 2);
      v128.store(p, silu4(v128.load(p)));
    }
    for (; e < eEnd; e++) {
      const p = row + (<usize>e << 2);
      store<f32>(p, silu1(load<f32>(p)));
    }
  }
}
