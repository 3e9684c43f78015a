// Scalar functions shared by several kernels (`#include common`, see src/webgpu/wgsl.ts).

fn silu(v: f32) -> f32 { return v / (1.0 + exp(-v)); }

// PyTorch's softplus (threshold 20). WGSL has no log1p: log(1 + e) loses all digits of a tiny e,
// so small e uses the series e - e²/2 + e³/3 (error < e⁴/4).
fn softplus(v: f32) -> f32 {
  if (v > 20.0) { return v; }
  let e = exp(v);
  if (e < 1e-2) { return e * (1.0 - e * (0.5 - e / 3.0)); }
  return log(1.0 + e);
}
