#!/usr/bin/env python3
"""
A Hugging Face Mamba-1 checkpoint (config.json + model.safetensors, F32/F16/BF16) as an f32 GGUF
file, for llama.cpp's llama-bench (bench/llama-cpp.sh). Needs numpy and llama.cpp's own gguf-py
(pass the llama.cpp checkout), nothing from PyPI: llama.cpp's convert_hf_to_gguf.py needs torch.

It does what convert_hf_to_gguf.py's MambaModel does for these tensors: A = -exp(A_log), the conv
weight [E, 1, K] squeezed to [E, K], lm_head dropped when it equals the embedding, and the GPT-NeoX
vocabulary that llama.cpp ships for Mamba checkpoints without a tokenizer, cut to the model's size
(llama-bench feeds token ids, it never tokenizes).

    python3 bench/to-gguf.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf
"""
import json
import sys
from pathlib import Path

import numpy as np

llama_cpp, model_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
sys.path.insert(0, str(llama_cpp / "gguf-py"))
import gguf  # noqa: E402


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    body = memoryview(raw)[8 + n :]
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        if t["dtype"] == "F32":
            x = np.frombuffer(body[a:b], dtype="<f4")
        elif t["dtype"] == "F16":
            x = np.frombuffer(body[a:b], dtype="<f2").astype(np.float32)
        elif t["dtype"] == "BF16":
            x = (np.frombuffer(body[a:b], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{name}: dtype {t['dtype']} is not supported")
        tensors[name] = x.reshape(t["shape"])
    return tensors


cfg = json.loads((model_dir / "config.json").read_text())
if cfg.get("model_type") not in (None, "mamba"):
    raise SystemExit(f"model_type {cfg.get('model_type')}: this writer handles Mamba-1 only")
D = cfg["hidden_size"]
L = cfg["num_hidden_layers"]
E = cfg.get("intermediate_size", 2 * D)
N = cfg.get("state_size", 16)
K = cfg.get("conv_kernel", 4)
R = cfg.get("time_step_rank", -(D // -16))
V = cfg["vocab_size"]

w = gguf.GGUFWriter(str(out), "mamba")
w.add_name(model_dir.name)
w.add_context_length(2**20)
w.add_embedding_length(D)
w.add_feed_forward_length(0)
w.add_head_count(0)
w.add_block_count(L)
w.add_ssm_conv_kernel(K)
w.add_ssm_inner_size(E)
w.add_ssm_state_size(N)
w.add_ssm_time_step_rank(R)
w.add_layer_norm_rms_eps(cfg.get("layer_norm_epsilon", 1e-5))
w.add_ssm_dt_b_c_rms(False)
w.add_file_type(gguf.LlamaFileType.ALL_F32)

vocab = gguf.GGUFReader(llama_cpp / "models" / "ggml-vocab-gpt-neox.gguf", "r")
field = lambda k: vocab.get_field(k)  # noqa: E731
w.add_tokenizer_model(bytes(field(gguf.Keys.Tokenizer.MODEL).parts[-1]).decode())
w.add_tokenizer_pre("mpt")
tokens = field(gguf.Keys.Tokenizer.LIST)
w.add_token_list([bytes(tokens.parts[i]) for i in tokens.data][:V])
types = field(gguf.Keys.Tokenizer.TOKEN_TYPE)
w.add_token_types([types.parts[i].tolist()[0] for i in types.data][:V])
merges = field(gguf.Keys.Tokenizer.MERGES)
w.add_token_merges([bytes(merges.parts[i]) for i in merges.data])
w.add_bos_token_id(0)
w.add_eos_token_id(0)

names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MAMBA, L)
tensors = read_safetensors(model_dir / "model.safetensors")
embedding = None
for name, x in tensors.items():
    new = names.get_name(name, try_suffixes=(".weight", ".bias"))
    if new is None:
        raise SystemExit(f"{name}: no GGUF name for this tensor")
    if name.endswith(".A_log"):
        x = -np.exp(x)
    if new.endswith("ssm_conv1d.weight"):
        x = x.reshape(E, K)
    if new == "token_embd.weight":
        embedding = x
    if new == "output.weight" and embedding is not None and np.array_equal(x, embedding):
        continue
    w.add_tensor(new, np.ascontiguousarray(x, dtype=np.float32))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
