#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (fuzz/seeds/<target>/): tiny valid inputs the fuzzer
mutates. Deterministic; run from anywhere: python3 fuzz/make_seeds.py"""
import json, math, os, random, struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\xff\x00\xff"  # model_dir's part separator
rng = random.Random(7)

D, H, P, N, G, K, V = 8, 2, 4, 4, 1, 4, 16
DI, DC = H * P, H * P + 2 * G * N
CONFIG = {
    "model_type": "transmamba", "vocab_size": V, "hidden_size": D, "num_hidden_layers": 1,
    "num_heads": H, "head_dim": P, "state_size": N, "n_groups": G, "conv_kernel": K,
    "tie_word_embeddings": True, "transpoints": [2], "rope_theta": 10000.0,
}
TOKENIZER = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
    "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                                          "trim_offsets": True, "use_regex": True},
    "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                         "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
              "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "Ġ": 4, "Ġa": 5},
              "merges": ["a b", "Ġ a"]},
}
WORDS = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
    "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"hello": 0, "world": 1, "[UNK]": 2}, "unk_token": "[UNK]"},
}


def tensors():
    def t(*shape):
        n = math.prod(shape)
        return list(shape), [rng.uniform(-0.5, 0.5) for _ in range(n)]
    p = "backbone.layers.0."
    return {
        "backbone.embeddings.weight": t(V, D),
        p + "norm.weight": t(D),
        p + "mixer.in_proj.weight": t(DI + DC + H, D),
        p + "mixer.conv1d.weight": t(DC, 1, K),
        p + "mixer.conv1d.bias": t(DC),
        p + "mixer.dt_bias": t(H),
        p + "mixer.A_log": t(H),
        p + "mixer.D": t(H),
        p + "mixer.norm.weight": t(DI),
        p + "mixer.out_proj.weight": t(D, DI),
        "backbone.norm_f.weight": t(D),
    }


def safetensors(ts, metadata=None, dtype="F16"):
    header, blob = {}, b""
    for name, (shape, values) in sorted(ts.items()):
        data = struct.pack(f"<{len(values)}e" if dtype == "F16" else f"<{len(values)}f", *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


ts = tensors()
meta = {"config": json.dumps(CONFIG), "tokenizer": json.dumps(WORDS)}
write("safetensors_file", "tiny-f16", safetensors(ts, meta))
write("safetensors_file", "tiny-f32", safetensors(ts, {"config": json.dumps(CONFIG)}, "F32"))

names = sorted(ts)
a, b = names[: len(names) // 2], names[len(names) // 2:]
index = {"metadata": {}, "weight_map": {**{n: "a.safetensors" for n in a}, **{n: "b.safetensors" for n in b}}}
shard = lambda part: safetensors({n: ts[n] for n in part})
write("model_dir", "transmamba-two-shards",
      SEP.join([json.dumps(CONFIG).encode(), json.dumps(index).encode(), shard(a), shard(b)]))
hf = {k: v for k, v in CONFIG.items() if k not in ("transpoints", "rope_theta")}
hf["model_type"] = "mamba2"
hf["time_step_limit"] = [0.0, "Infinity"]
write("model_dir", "mamba2-one-file", SEP.join([json.dumps(hf).encode(), b"{}", shard(names)]))
ssm = {"d_model": D, "n_layer": 1, "vocab_size": V, "d_intermediate": 0,
       "ssm_cfg": {"layer": "Mamba2", "d_state": N, "headdim": P, "expand": 1, "ngroups": G}}
write("model_dir", "mamba-ssm-config", SEP.join([json.dumps(ssm).encode(), b"{}", shard(names)]))

write("tokenizer_json", "bytelevel-bpe", json.dumps(TOKENIZER))
write("tokenizer_json", "wordlevel", json.dumps(WORDS))

for i, s in enumerate(["paper", "config", "0,16,inf,3,4,5", "inf", "8", " 1, 2,3\n4", "@x", "0,128,256,512,1024,2048"]):
    write("schedule_and_tokens", f"s{i}", s)
