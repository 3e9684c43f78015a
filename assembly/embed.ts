// Embedding lookup: out[t, :] = table[tokens[t], :]     tokens [T] u32, table [V, D] (f32/f16/q8), out [T, D]
import { dequantRow } from './matmul';

/** Looks up tokens [tStart, tEnd); q8/f16 rows are expanded to f32 on the way. */
export function embed(dtype: i32, tokens: usize, table: usize, scales: usize, out: usize, D: i32, tStart: i32, tEnd: i32): void {
  for (let t = tStart; t < tEnd; t++) {
    dequantRow(dtype, table, scales, <i32>load<u32>(tokens + (<usize>t << 2)), D, out + ((<usize>t * <usize>D) << 2));
  }
}
