#!/usr/bin/env python3
"""Independent reference evaluator for an exported Mamba byte model.

Reads DIR/config.json and DIR/model.safetensors with a hand-written safetensors
parser (no training code is imported), runs the Hugging Face MambaForCausalLM
math with a plain sequential scan (one time step at a time) in float64, and
prints the bits per byte of FILE:

  /usr/bin/python3 training/eval.py --model models/mambabyte-fortunes --input FILE

Scoring convention: FILE is one byte stream; the first byte is context only and
every following byte is predicted from all bytes before it (no state reset), i.e.
bits_per_byte = sum_{t>=1} -log2 p(b_t | b_<t) / (n - 1).
`--window W` instead resets the state every W scored bytes (windows of W+1 bytes
overlapping by one), which is what train.py's validation does (W = 1024).
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] == "BF16":
            a, b = info["data_offsets"]
            raw = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            a, b = info["data_offsets"]
            arr = np.frombuffer(data[a:b], dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))
    return out


class NaiveMamba:
    """Sequential reference implementation (float64)."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.n_layer = self.cfg["num_hidden_layers"]
        self.eps = self.cfg["layer_norm_epsilon"]
        self.R = self.cfg["time_step_rank"]
        self.N = self.cfg["state_size"]
        self.E = self.cfg["intermediate_size"]
        self.K = self.cfg["conv_kernel"]

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def layer_seq(self, i, h):
        """h: [L, D] -> mixer output [L, D], scanning one time step at a time."""
        p = f"backbone.layers.{i}.mixer."
        w = self.w
        L = h.shape[0]
        xz = h @ w[p + "in_proj.weight"].T                          # [L, 2E]
        x, z = xz[:, :self.E], xz[:, self.E:]                       # [L, E]
        cw = w[p + "conv1d.weight"][:, 0, :]                        # [E, K]
        xpad = torch.cat([torch.zeros(self.K - 1, self.E, dtype=x.dtype), x], 0)  # [L+K-1, E]
        conv = w[p + "conv1d.bias"].expand(L, self.E).clone()
        for k in range(self.K):
            conv += xpad[k:k + L] * cw[:, k]
        u = F.silu(conv)                                            # [L, E]
        dbc = u @ w[p + "x_proj.weight"].T                          # [L, R+2N]
        dt, Bm, Cm = dbc[:, :self.R], dbc[:, self.R:self.R + self.N], dbc[:, self.R + self.N:]
        delta = F.softplus(dt @ w[p + "dt_proj.weight"].T + w[p + "dt_proj.bias"])  # [L, E]
        A = -torch.exp(w[p + "A_log"])                              # [E, N]
        D = w[p + "D"]
        state = torch.zeros(self.E, self.N, dtype=h.dtype)          # [E, N]
        y = torch.empty(L, self.E, dtype=h.dtype)
        for t in range(L):
            state = torch.exp(delta[t, :, None] * A) * state + (delta[t] * u[t])[:, None] * Bm[t][None, :]
            y[t] = state @ Cm[t] + D * u[t]
        y = y * F.silu(z)
        return y @ w[p + "out_proj.weight"].T                       # [L, D]

    def logits_seq(self, ids):
        h = self.w["backbone.embeddings.weight"][ids]               # [L, D]
        for i in range(self.n_layer):
            h = h + self.layer_seq(i, self.rms(h, self.w[f"backbone.layers.{i}.norm.weight"]))
        h = self.rms(h, self.w["backbone.norm_f.weight"])
        return h @ self.w["backbone.embeddings.weight"].T           # [L, 256]

    # --- recurrent single-step decoding (used by sample.py) ---
    def new_cache(self):
        return [{"conv": torch.zeros(self.K - 1, self.E, dtype=torch.float64),
                 "ssm": torch.zeros(self.E, self.N, dtype=torch.float64)} for _ in range(self.n_layer)]

    def step(self, token, cache):
        w = self.w
        h = w["backbone.embeddings.weight"][token]                  # [D]
        for i in range(self.n_layer):
            p = f"backbone.layers.{i}.mixer."
            c = cache[i]
            xn = self.rms(h, w[f"backbone.layers.{i}.norm.weight"])
            xz = w[p + "in_proj.weight"] @ xn
            x, z = xz[:self.E], xz[self.E:]
            win = torch.cat([c["conv"], x[None]], 0)                # [K, E]
            c["conv"] = win[1:]
            u = F.silu((win * w[p + "conv1d.weight"][:, 0, :].T).sum(0) + w[p + "conv1d.bias"])
            dbc = w[p + "x_proj.weight"] @ u
            dt, Bm, Cm = dbc[:self.R], dbc[self.R:self.R + self.N], dbc[self.R + self.N:]
            delta = F.softplus(w[p + "dt_proj.weight"] @ dt + w[p + "dt_proj.bias"])
            A = -torch.exp(w[p + "A_log"])
            c["ssm"] = torch.exp(delta[:, None] * A) * c["ssm"] + (delta * u)[:, None] * Bm[None, :]
            y = (c["ssm"] @ Cm + w[p + "D"] * u) * F.silu(z)
            h = h + w[p + "out_proj.weight"] @ y
        h = self.rms(h, w["backbone.norm_f.weight"])
        return w["backbone.embeddings.weight"] @ h                  # [256]


def bits_per_byte(model, data, window=0):
    ids = torch.tensor(list(data), dtype=torch.long)
    n = len(ids)
    W = window if window > 0 else n
    nats, count = 0.0, 0
    for s in range(0, n - 1, W):
        seg = ids[s:min(s + W + 1, n)]
        logits = model.logits_seq(seg[:-1])
        nats += F.cross_entropy(logits, seg[1:], reduction="sum").item()
        count += len(seg) - 1
    return nats / count / math.log(2), count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--window", type=int, default=0, help="reset state every W scored bytes (0 = never)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = NaiveMamba(args.model)
    with open(args.input, "rb") as f:
        data = f.read()
    with torch.no_grad():
        bpb, count = bits_per_byte(model, data, args.window)
    print(f"scored_bytes {count}")
    print(f"bits_per_byte {bpb:.6f}")


if __name__ == "__main__":
    main()
