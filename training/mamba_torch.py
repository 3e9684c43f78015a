"""Byte-level Mamba-1 in plain PyTorch (1.13), math identical to Hugging Face
`MambaForCausalLM` (slow path), with a chunked selective scan for CPU training.

Notation follows the Mamba paper:
  x, z    : the two halves of in_proj            [B, L, E]   (E = d_inner = expand * d_model)
  u       : SiLU(causal depthwise conv1d(x))       [B, L, E]
  Δ/delta : softplus(dt_proj(dt) + dt_bias)        [B, L, E]
  A       : -exp(A_log)                            [E, N]
  B, C    : input / output projections of the SSM  [B, L, N]
  D       : skip connection                        [E]
  state_t = exp(Δ_t A) * state_{t-1} + Δ_t B_t u_t      [B, E, N]
  y_t     = state_t · C_t + D u_t
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# Chunked selective scan
# ----------------------------------------------------------------------------
#
# The sequence is cut into chunks of T steps. Inside a chunk the linear
# recurrence  h_t = a_t * h_{t-1} + b_t  is solved in parallel over time with a
# Hillis-Steele prefix scan (log2(T) vectorised steps; only products of decays
# a <= 1 appear, so it is numerically stable, unlike exp(+cumsum) tricks).
# Chunks are chained sequentially through the chunk-boundary state.
# Tensors of size [B, T, E, N] exist only for one chunk at a time, forward and
# backward (the backward pass recomputes chunk states from the saved boundary
# states), so memory is O(B*L*E + B*(L/T)*E*N) instead of O(B*L*E*N).


def _prefix_scan_(a, b, reverse=False):
    """In place, along dim 1:  b_t <- a_t * b_{t-1} + b_t  (reverse: b_t <- a_t * b_{t+1} + b_t).

    a, b: [B, T, E, N]. `a` is overwritten with running products. Returns b.
    """
    T = b.shape[1]
    k = 1
    while k < T:
        if not reverse:
            tmp_b = a[:, k:] * b[:, :-k]          # uses b before this step
            if 2 * k < T:
                tmp_a = a[:, k:] * a[:, :-k]
            b[:, k:] += tmp_b
            if 2 * k < T:
                a[:, k:] = tmp_a
        else:
            tmp_b = a[:, :-k] * b[:, k:]
            if 2 * k < T:
                tmp_a = a[:, :-k] * a[:, k:]
            b[:, :-k] += tmp_b
            if 2 * k < T:
                a[:, :-k] = tmp_a
        k *= 2
    return b


class SelectiveScan(torch.autograd.Function):
    """y_t = C_t · state_t  with  state_t = exp(Δ_t A) state_{t-1} + Δ_t B_t u_t,  state_{-1} = 0.

    u, delta: [B, L, E]   A: [E, N]   Bm, Cm: [B, L, N]   ->  y: [B, L, E]
    (the D*u skip term is added outside.)
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, chunk):
        Bsz, L, E = u.shape
        N = A.shape[1]
        T = chunk
        y = torch.empty_like(u)
        h = u.new_zeros(Bsz, E, N)                                   # [B, E, N]
        starts = []                                                  # state entering each chunk
        for c0 in range(0, L, T):
            c1 = min(c0 + T, L)
            starts.append(h)
            dA = (delta[:, c0:c1, :, None] * A).exp_()               # [B, T, E, N]
            dBu = (delta[:, c0:c1] * u[:, c0:c1])[..., None] * Bm[:, c0:c1, None, :]  # [B, T, E, N]
            dBu[:, 0] += dA[:, 0] * h
            H = _prefix_scan_(dA, dBu)                               # [B, T, E, N] states
            y[:, c0:c1] = (H * Cm[:, c0:c1, None, :]).sum(-1)            # [B, T, E]
            h = H[:, -1].clone()
        ctx.chunk = T
        ctx.save_for_backward(u, delta, A, Bm, Cm, torch.stack(starts, 0))
        return y

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, Bm, Cm, starts = ctx.saved_tensors
        T = ctx.chunk
        Bsz, L, E = u.shape
        gy = gy.contiguous()
        gu = torch.empty_like(u)
        gdelta = torch.empty_like(delta)
        gB = torch.empty_like(Bm)
        gC = torch.empty_like(Cm)
        gA = torch.zeros_like(A)
        G_next = None      # dL/dstate at the first step of the following chunk  [B, E, N]
        dA_next = None     # exp(Δ A) at the first step of the following chunk    [B, E, N]
        chunks = list(range(0, L, T))
        for ci in range(len(chunks) - 1, -1, -1):
            c0 = chunks[ci]
            c1 = min(c0 + T, L)
            d = delta[:, c0:c1]                                       # [B, T, E]
            du = d * u[:, c0:c1]                                      # [B, T, E]
            # recompute the chunk's states
            dA = (d[..., None] * A).exp_()                            # [B, T, E, N]
            dBu = du[..., None] * Bm[:, c0:c1, None, :]               # [B, T, E, N]
            h0 = starts[ci]
            dBu[:, 0] += dA[:, 0] * h0
            H = _prefix_scan_(dA.clone(), dBu)                        # [B, T, E, N]
            # y_t = H_t · C_t
            gyc = gy[:, c0:c1]                                        # [B, T, E]
            gC[:, c0:c1] = (gyc[..., None] * H).sum(2)                 # [B, T, N]
            G = gyc[..., None] * Cm[:, c0:c1, None, :]                 # [B, T, E, N] dL/dH (direct)
            # reverse recurrence: G_t += exp(Δ_{t+1} A) G_{t+1}
            a_rev = torch.empty_like(dA)
            a_rev[:, :-1] = dA[:, 1:]
            if G_next is not None:
                G[:, -1] += dA_next * G_next
            a_rev[:, -1] = 0.0
            G = _prefix_scan_(a_rev, G, reverse=True)                 # [B, T, E, N] total dL/dH
            # dL/d(dA_t) = G_t * h_{t-1};  dA = exp(Δ A)  ->  dL/d(Δ A) = G * h_{t-1} * dA
            gdAA = torch.empty_like(G)                                # [B, T, E, N]
            gdAA[:, 0] = G[:, 0] * h0
            torch.mul(G[:, 1:], H[:, :-1], out=gdAA[:, 1:])
            gdAA *= dA
            # dBu = Δ u B  ->  dL/d(Δ u) = Σ_n G B ,  dL/dB = Σ_e G Δ u
            gdu = (G * Bm[:, c0:c1, None, :]).sum(-1)                  # [B, T, E]
            gB[:, c0:c1] = (du[..., None] * G).sum(2)                  # [B, T, N]
            gdelta[:, c0:c1] = (gdAA * A).sum(-1) + gdu * u[:, c0:c1]
            gu[:, c0:c1] = gdu * d
            gA += (gdAA * d[..., None]).sum((0, 1))                    # [E, N]
            G_next = G[:, 0]
            dA_next = dA[:, 0]
        return gu, gdelta, gA, gB, gC, None


def selective_scan_chunked(u, delta, A, Bm, Cm, chunk=32):
    return SelectiveScan.apply(u, delta, A, Bm, Cm, chunk)


def selective_scan_sequential(u, delta, A, Bm, Cm):
    """Reference: one time step at a time (autograd-friendly, slow)."""
    Bsz, L, E = u.shape
    h = u.new_zeros(Bsz, E, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


# ----------------------------------------------------------------------------
# Model (module names match the Hugging Face checkpoint names)
# ----------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class MambaMixer(nn.Module):
    def __init__(self, d_model, d_state=16, expand=2, d_conv=4, dt_rank=None,
                 dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4, chunk=32):
        super().__init__()
        E = expand * d_model
        R = dt_rank or math.ceil(d_model / 16)
        self.E, self.N, self.R, self.chunk = E, d_state, R, chunk
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, d_model, bias=False)
        # Mamba initialisation
        dt_init_std = R ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))      # inverse softplus
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(E, 1)  # [E, N]
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(E))

    def forward(self, hs, scan="chunked"):                  # hs: [B, L, D]
        L = hs.shape[1]
        x, z = self.in_proj(hs).chunk(2, dim=-1)             # [B, L, E] each
        x = self.conv1d(x.transpose(1, 2))[..., :L]          # [B, E, L] causal (left padded)
        u = F.silu(x).transpose(1, 2)                        # [B, L, E]
        dt, Bm, Cm = torch.split(self.x_proj(u), [self.R, self.N, self.N], dim=-1)  # [B, L, R], [B, L, N], [B, L, N]
        delta = F.softplus(self.dt_proj(dt))                 # [B, L, E]
        A = -torch.exp(self.A_log.float())                   # [E, N]
        if scan == "chunked":
            y = selective_scan_chunked(u.contiguous(), delta.contiguous(), A,
                                       Bm.contiguous(), Cm.contiguous(), self.chunk)
        else:
            y = selective_scan_sequential(u, delta, A, Bm, Cm)
        y = y + u * self.D                                   # [B, L, E]
        y = y * F.silu(z)
        return self.out_proj(y)                              # [B, L, D]


class MambaBlock(nn.Module):
    def __init__(self, d_model, eps, **kw):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = MambaMixer(d_model, **kw)

    def forward(self, h, scan="chunked"):
        return h + self.mixer(self.norm(h), scan=scan)


class Backbone(nn.Module):
    def __init__(self, vocab, d_model, n_layer, eps, **kw):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList([MambaBlock(d_model, eps, **kw) for _ in range(n_layer)])
        self.norm_f = RMSNorm(d_model, eps)


class MambaLM(nn.Module):
    def __init__(self, d_model=256, n_layer=6, d_state=16, expand=2, d_conv=4, vocab=256,
                 eps=1e-5, chunk=32, dt_rank=None):
        super().__init__()
        self.cfg = dict(d_model=d_model, n_layer=n_layer, d_state=d_state, expand=expand,
                        d_conv=d_conv, vocab=vocab, eps=eps,
                        dt_rank=dt_rank or math.ceil(d_model / 16))
        self.backbone = Backbone(vocab, d_model, n_layer, eps, d_state=d_state, expand=expand,
                                 d_conv=d_conv, dt_rank=dt_rank, chunk=chunk)
        # mamba_ssm _init_weights: embedding N(0, 0.02); out_proj rescaled by 1/sqrt(n_layer)
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)
        for layer in self.backbone.layers:
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(n_layer)

    def forward(self, ids, scan="chunked"):                   # ids: [B, L] int64
        h = self.backbone.embeddings(ids)                       # [B, L, D]
        for layer in self.backbone.layers:
            h = layer(h, scan=scan)
        h = self.backbone.norm_f(h)
        return F.linear(h, self.backbone.embeddings.weight)    # [B, L, 256] (tied head)
