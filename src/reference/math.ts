export const silu = (x: number): number => x / (1 + Math.exp(-x));

/** PyTorch's softplus (beta 1, threshold 20): linear above the threshold, where exp would overflow float32. */
export const softplus = (x: number): number => (x > 20 ? x : Math.log1p(Math.exp(x)));
