// Sampling helpers over logits [n]: argmax and top-k (the TS sampler may call them for large vocabularies).

/** Index of the largest logit (the first one on ties). */
export function argmax(logits: usize, n: i32): i32 {
  let best = 0;
  let bv = load<f32>(logits);
  for (let i = 1; i < n; i++) {
    const v = load<f32>(logits + (<usize>i << 2));
    if (v > bv) { bv = v; best = i; }
  }
  return best;
}

/**
 * The k largest logits, descending: indices to outIdx [k] (i32), values to outVal [k] (f32).
 * Insertion into a sorted list of k: O(n·k) worst case, O(n) for the usual k ≪ n. Returns min(k, n).
 */
export function topk(logits: usize, n: i32, k: i32, outIdx: usize, outVal: usize): i32 {
  k = min(k, n);
  let filled = 0;
  for (let i = 0; i < n; i++) {
    const v = load<f32>(logits + (<usize>i << 2));
    if (filled == k && v <= load<f32>(outVal + (<usize>(k - 1) << 2))) continue;
    let j = filled < k ? filled++ : k - 1;
    // Shift smaller entries down one place until v's slot is found.
    while (j > 0 && load<f32>(outVal + (<usize>(j - 1) << 2)) < v) {
      store<f32>(outVal + (<usize>j << 2), load<f32>(outVal + (<usize>(j - 1) << 2)));
      store<i32>(outIdx + (<usize>j << 2), load<i32>(outIdx + (<usize>(j - 1) << 2)));
      j--;
    }
    store<f32>(outVal + (<usize>j << 2), v);
    store<i32>(outIdx + (<usize>j << 2), i);
  }
  return k;
}
