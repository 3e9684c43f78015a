#!/usr/bin/env python3
"""Train a byte-level Mamba-1 (vocab 256) on training/data/{train,val}.txt and export it
in the Hugging Face `MambaForCausalLM` format (config.json + model.safetensors).

Example:
  /usr/bin/python3 training/train.py --d-model 256 --n-layer 6 --d-state 16 \
      --time-budget-minutes 55 --out models/mambabyte-fortunes
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mamba_torch import MambaLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------

def hf_config(model, dtype_name):
    c = model.cfg
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "vocab_size": c["vocab"],
        "hidden_size": c["d_model"],
        "state_size": c["d_state"],
        "num_hidden_layers": c["n_layer"],
        "expand": c["expand"],
        "intermediate_size": c["expand"] * c["d_model"],
        "conv_kernel": c["d_conv"],
        "time_step_rank": c["dt_rank"],
        "use_bias": False,
        "use_conv_bias": True,
        "layer_norm_epsilon": c["eps"],
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "tie_word_embeddings": True,
        "torch_dtype": dtype_name,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "initializer_range": 0.1,
        "rescale_prenorm_residual": False,
        "time_step_scale": 1.0,
        "time_step_min": 0.001,
        "time_step_max": 0.1,
        "time_step_init_scheme": "random",
        "time_step_floor": 0.0001,
        "use_cache": True,
    }


def write_safetensors(path, tensors, dtype="F32"):
    """Minimal safetensors writer: u64 LE header length, JSON header, raw LE data."""
    np_dtype = {"F32": "<f4", "F16": "<f2"}[dtype]
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        arr = np.ascontiguousarray(t.detach().cpu().float().numpy().astype(np_dtype))
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad header so data is 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def export(model, out_dir, max_bytes=16 * 1024 * 1024):
    os.makedirs(out_dir, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()}
    n_params = sum(v.numel() for v in sd.values())
    dtype = "F32" if n_params * 4 + 65536 <= max_bytes else "F16"
    write_safetensors(os.path.join(out_dir, "model.safetensors"), sd, dtype)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model, "float32" if dtype == "F32" else "float16"), f, indent=2)
        f.write("\n")
    return dtype


# ----------------------------------------------------------------------------
# data / eval
# ----------------------------------------------------------------------------

def load_bytes(path):
    return np.fromfile(path, dtype=np.uint8)


def get_batch(data, batch, seq_len, gen):
    ix = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=gen).numpy()
    x = np.stack([data[i:i + seq_len + 1] for i in ix]).astype(np.int64)
    x = torch.from_numpy(x)
    return x[:, :-1], x[:, 1:]


@torch.no_grad()
def evaluate_bpb(model, data, window=1024, batch=8, max_bytes=None):
    """Bits per byte over `data` cut into consecutive windows (state reset per window;
    every byte after the first of the stream is scored exactly once)."""
    model.eval()
    if max_bytes is not None:
        data = data[:max_bytes]
    n = len(data)
    starts = list(range(0, n - 1, window))
    tot_nats, tot = 0.0, 0
    for i in range(0, len(starts), batch):
        grp = starts[i:i + batch]
        seqs = [data[s:min(s + window + 1, n)] for s in grp]
        for s in seqs:  # variable last window: run it alone
            pass
        full = [s for s in seqs if len(s) == window + 1]
        rest = [s for s in seqs if len(s) != window + 1]
        for group in ([full] if full else []) + [[r] for r in rest]:
            x = torch.from_numpy(np.stack(group).astype(np.int64)).to(next(model.parameters()).device)
            logits = model(x[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1), reduction="sum")
            tot_nats += loss.item()
            tot += x[:, 1:].numel()
    model.train()
    return tot_nats / tot / math.log(2)


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", required=True, help="export directory, e.g. models/mambabyte-fortunes")
    ap.add_argument("--ckpt", default=os.path.join(HERE, "checkpoints", "last.pt"))
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=8, help="selective-scan chunk length")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--time-budget-minutes", type=float, default=55.0,
                    help="wall-clock training budget; the cosine schedule follows the elapsed-time fraction")
    ap.add_argument("--max-steps", type=int, default=0, help="optional hard step limit (0 = none)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-bytes", type=int, default=65536, help="validation bytes used for periodic evals")
    ap.add_argument("--export-every-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="initial torch threads (1 or 2)")
    ap.add_argument("--adaptive-threads", type=int, default=1,
                    help="every 100 steps, time a few steps with 1 and 2 threads and keep the faster "
                         "(the 2 cores are shared: with other load, 2 OpenMP threads stall on barriers)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    # exp(Δ A) and its running products underflow into denormals once Δ grows; denormal
    # arithmetic is ~100x slower on x86, so flush them to zero (values < 1.2e-38).
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train = load_bytes(os.path.join(args.data, "train.txt"))
    val = load_bytes(os.path.join(args.data, "val.txt"))
    print(f"train {len(train)} bytes, val {len(val)} bytes", flush=True)

    model = MambaLM(d_model=args.d_model, n_layer=args.n_layer, d_state=args.d_state,
                    expand=args.expand, chunk=args.chunk)
    model.to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {json.dumps(model.cfg)}  params {n_params}", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # no weight decay on norms, biases, A_log, D (and the tied embedding is 2-D: decayed)
        if p.ndim < 2 or name.endswith("A_log") or name.endswith(".D") or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    budget_s = args.time_budget_minutes * 60.0
    t0 = time.time()
    last_export = t0
    step = 0
    tokens = 0
    ema_loss = None
    best_val = float("inf")
    os.makedirs(os.path.dirname(args.ckpt), exist_ok=True)

    def lr_at(step, frac):
        if step < args.warmup_steps:
            return args.lr * (step + 1) / args.warmup_steps
        m = args.min_lr_frac
        return args.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def save(tag):
        dt = export(model, args.out)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "args": vars(args)}, args.ckpt)
        print(f"[{tag}] exported {args.out} ({dt}), checkpoint {args.ckpt}", flush=True)

    cur_threads = args.threads
    step_times = {1: [], 2: []}
    probe_until = -1

    model.train()
    while True:
        ts = time.time()
        elapsed = time.time() - t0
        frac = elapsed / budget_s
        if frac >= 1.0 or (args.max_steps and step >= args.max_steps):
            break
        lr = lr_at(step, frac)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(train, args.batch, args.seq_len, gen)
        x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
        logits = model(x)                                         # [B, L, 256]
        loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        tokens += x.numel()
        step_times[cur_threads] = (step_times[cur_threads] + [time.time() - ts])[-6:]
        if args.adaptive_threads:
            other = step_times[3 - cur_threads]
            if probe_until > 0 and other and step_times[cur_threads][-1] > 1.5 * sorted(other)[len(other) // 2]:
                probe_until = step                     # probe is clearly slower: stop it now
            if step == probe_until:
                med = {k: sorted(v)[len(v) // 2] for k, v in step_times.items() if v}
                cur_threads = min(med, key=med.get)
                torch.set_num_threads(cur_threads)
                probe_until = -1
                print(f"threads: median step s {med} -> using {cur_threads}", flush=True)
            elif step == 20 or step % 100 == 0:
                cur_threads = 3 - cur_threads          # probe the other setting for 6 steps
                torch.set_num_threads(cur_threads)
                step_times[cur_threads] = []
                probe_until = step + 6
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 25 == 0 or step == 1:
            el = time.time() - t0
            print(f"step {step:6d}  t {el / 60:6.2f}m  lr {lr:.2e}  loss {loss.item():.4f}  "
                  f"ema_bpb {ema_loss / math.log(2):.4f}  gnorm {gnorm:.2f}  tok/s {tokens / el:.0f}  thr {cur_threads}",
                  flush=True)
        if step % args.eval_every == 0:
            vb = evaluate_bpb(model, val, max_bytes=args.eval_bytes)
            best_val = min(best_val, vb)
            print(f"eval step {step}  val_bpb(first {args.eval_bytes} B) {vb:.4f}", flush=True)
        if time.time() - last_export > args.export_every_minutes * 60:
            save("periodic")
            last_export = time.time()

    train_time = time.time() - t0
    save("final")
    t1 = time.time()
    vb = evaluate_bpb(model, val)
    summary = {"steps": step, "tokens": tokens, "train_minutes": round(train_time / 60, 2),
               "tokens_per_s": round(tokens / train_time), "val_bpb_full": round(vb, 4),
               "val_bytes": int(len(val)), "final_ema_train_bpb": round(ema_loss / math.log(2), 4),
               "params": n_params, "eval_seconds": round(time.time() - t1, 1)}
    print("SUMMARY " + json.dumps(summary), flush=True)
    with open(os.path.join(os.path.dirname(args.ckpt), "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
