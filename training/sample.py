#!/usr/bin/env python3
"""Sample text from an exported Mamba byte model (reads the exported safetensors through
the reference implementation in eval.py and decodes recurrently, one byte per step).

  /usr/bin/python3 training/sample.py --model models/mambabyte-fortunes --temperature 0.8

Each prompt is preceded by "%\n" (the document separator of the corpus), so the model
starts a fresh fortune; generation stops at the next "\n%\n" or after --max-bytes.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval import NaiveMamba  # noqa: E402

DEFAULT_PROMPTS = ["The ", "Wer ", "El amor ", "Il ", "Жизнь ", "《", "Q:"]


def generate(model, prompt, max_bytes, temperature, gen):
    cache = model.new_cache()
    ctx = ("%\n" + prompt).encode("utf-8")
    for b in ctx[:-1]:
        model.step(b, cache)
    last = ctx[-1]
    out = bytearray()
    for _ in range(max_bytes):
        logits = model.step(last, cache)
        probs = torch.softmax(logits / temperature, dim=-1)
        last = int(torch.multinomial(probs, 1, generator=gen).item())
        out.append(last)
        if out.endswith(b"\n%\n"):
            out = out[:-3]
            break
    return prompt + out.decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-bytes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    ap.add_argument("prompts", nargs="*", default=DEFAULT_PROMPTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = NaiveMamba(args.model)
    gen = torch.Generator().manual_seed(args.seed)
    results = []
    with torch.no_grad():
        for p in args.prompts:
            text = generate(model, p, args.max_bytes, args.temperature, gen)
            results.append({"prompt": p, "text": text})
            if not args.json:
                print(f"--- prompt {p!r} (temperature {args.temperature}, seed {args.seed})")
                print(text, flush=True)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
