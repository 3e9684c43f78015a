// Causal depthwise conv1d + SiLU over a chunk, continuing from the per-channel state.
//   x, out [T, E]; state [E, K-1] (oldest first); w [E, K]; bias [E] or 0
// The sequence seen by channel e is [state[e, :], x[:, e]]; output t uses entries t .. t+K-1 of it.
// T = 1 is the decode step; the same loop serves prefill.
import { silu1, silu4 } from './math';

/** Channels [eStart, eEnd). Afterwards state[e, :] holds the last K-1 entries of the sequence. */
export function conv1d(x: usize, state: usize, w: usize, bias: usize, out: usize, T: i32, E: i32, K: i32, eStart: i32, eEnd: i32): void {
  const P = K - 1;
  const rs = <usize>E << 2; // bytes per token row of x / out
  for (let e = eStart; e < eEnd; e++) {
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
