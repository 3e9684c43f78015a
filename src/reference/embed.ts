/** out[t, :] = table[tokens[t], :]     table [V, D], out [T, D] */
export function embed(tokens: Uint32Array, table: Float32Array, out: Float32Array, T: number, D: number): void {
  for (let t = 0; t < T; t++) out.set(table.subarray(tokens[t] * D, (tokens[t] + 1) * D), t * D);
}
