#!/usr/bin/env bash
# tm-run against llama.cpp's CPU backend on the same machine, same model (random weights, the
# mamba2-130m shape, f32 by default), prefill 512 and decode 128 tokens, alternating the two
# engines RUNS times (default 3) and printing the medians. Not part of the build or of CI.
#
#   docs/bench/compare-llama-cpp.sh [RUNS]      env: WORK (scratch, /tmp/tm-vs-llama),
#                                                THREADS (2), OUTTYPE (f32 | f16 | q8_0 | q4_0)
#
# OUTTYPE f16 / q8_0 converts the GGUF to that type (q4_0: the f32 GGUF through llama-quantize
# --pure) and runs tm-run on the same GGUF file with `--weights auto`: the very same blocks.
#
# It fetches llama.cpp the way the issue measured it: the llama-cpp-python sdist from PyPI
# (which vendors llama.cpp), built with CMake (GGML_NATIVE) — about 25 min on 2 cores, once.
# The GGUF comes from llama.cpp's own convert_hf_to_gguf.py, run on `tm-run make-model` output
# whose config.json is rewritten into transformers' mamba2 dialect (same tensor names). Python
# needs torch, numpy, safetensors, sentencepiece, transformers (pip installs them if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUNS="${1:-3}"
WORK="${WORK:-/tmp/tm-vs-llama}"
THREADS="${THREADS:-2}"
OUTTYPE="${OUTTYPE:-f32}"
mkdir -p "$WORK"
cd "$WORK"

# 1. llama.cpp from the llama-cpp-python sdist.
if [[ ! -x llama/build/bin/llama-bench ]]; then
  url="$(curl -sf https://pypi.org/simple/llama-cpp-python/ \
    | grep -o 'https://[^"#]*llama_cpp_python-[0-9.]*\.tar\.gz' \
    | awk -F'llama_cpp_python-' '{print $2" "$0}' | sort -V | tail -1 | cut -d' ' -f2)"
  echo "llama.cpp: $url" >&2
  curl -sf -o sdist.tgz "$url"
  rm -rf sdist && mkdir sdist && tar xzf sdist.tgz -C sdist --strip-components=1
  rm -rf llama && cp -r sdist/vendor/llama.cpp llama
  pip install -q cmake >/dev/null
  cmake -S llama -B llama/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF >/dev/null
  cmake --build llama/build -j"$(nproc)" --target llama-bench llama-quantize >/dev/null
fi
if [[ "$OUTTYPE" == q4_0 && ! -x llama/build/bin/llama-quantize ]]; then
  cmake --build llama/build -j"$(nproc)" --target llama-quantize >/dev/null
fi

# 2. the model: tm-run's mamba2-130m preset, config in transformers' mamba2 dialect, and its GGUF.
TM_RUN="$ROOT/target/release/tm-run"
(cd "$ROOT" && cargo build -q --release -p tm-run)
if [[ ! -f "model-$OUTTYPE.gguf" ]]; then
  python3 -c "import torch, numpy, safetensors, sentencepiece, transformers" 2>/dev/null \
    || pip install -q torch numpy safetensors sentencepiece transformers
  rm -rf model && "$TM_RUN" make-model --preset mamba2-130m --out model
  python3 - model/config.json <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
hf = {
    "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2",
    "hidden_size": c["hidden_size"], "num_hidden_layers": c["num_hidden_layers"],
    "num_heads": c["num_heads"], "head_dim": c["head_dim"], "state_size": c["state_size"],
    "n_groups": c["n_groups"], "conv_kernel": c["conv_kernel"],
    "expand": c["num_heads"] * c["head_dim"] // c["hidden_size"],
    "vocab_size": c["vocab_size"], "use_bias": c["use_bias"], "use_conv_bias": c["use_conv_bias"],
    "layer_norm_epsilon": c["layer_norm_epsilon"], "tie_word_embeddings": c["tie_word_embeddings"],
    "time_step_limit": [0.0, {"__float__": "Infinity"}], "chunk_size": c["chunk_size"],
}
assert all(t in (0, None) for t in c["transpoints"]) and c["mlp_intermediate_size"] == 0
json.dump(hf, open(p, "w"), indent=1)
PY
  if [[ "$OUTTYPE" == q4_0 ]]; then
    [[ -f model-f32.gguf ]] || python3 llama/convert_hf_to_gguf.py model --outtype f32 \
      --outfile model-f32.gguf >/dev/null 2>convert.log || { tail -20 convert.log >&2; exit 1; }
    llama/build/bin/llama-quantize --pure model-f32.gguf model-q4_0.gguf q4_0 >/dev/null 2>&1
  else
    python3 llama/convert_hf_to_gguf.py model --outtype "$OUTTYPE" --outfile "model-$OUTTYPE.gguf" >/dev/null 2>convert.log \
      || { tail -20 convert.log >&2; exit 1; }
  fi
fi

# 3. alternate the engines; each run prints prefill and decode tokens/s.
llama_run() {
  "llama/build/bin/llama-bench" -m "model-$OUTTYPE.gguf" -p 512 -n 128 -t "$THREADS" -r 1 -o json 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); p=[x for x in r if x["n_prompt"]>0][0]; g=[x for x in r if x["n_gen"]>0][0]; print(p["avg_ts"], g["avg_ts"])'
}
tm_run() {
  if [[ "$OUTTYPE" == q8_0 || "$OUTTYPE" == q4_0 ]]; then m="model-$OUTTYPE.gguf"; else m=model; fi
  RAYON_NUM_THREADS="$THREADS" "$TM_RUN" bench --model "$m" --prompt-len 512 --gen 128 --repeats 1 --json --weights "$OUTTYPE" 2>/dev/null \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["prefill"]["tokens_per_s"], r["decode"]["tokens_per_s"], "|", r["backend"])'
}
for i in $(seq "$RUNS"); do
  echo "run $i llama.cpp   $(llama_run)"
  echo "run $i tm-run      $(tm_run)"
done | tee "runs-$OUTTYPE.txt"
python3 - "runs-$OUTTYPE.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    parts = line.split()
    rows.setdefault(parts[2], []).append((float(parts[3]), float(parts[4])))
med = {k: (statistics.median(p for p, _ in v), statistics.median(d for _, d in v)) for k, v in rows.items()}
for k, (p, d) in med.items():
    print(f"median {k:10s} prefill {p:8.1f} tokens/s   decode {d:6.1f} tokens/s")
lp, ld = med["llama.cpp"]; tp, td = med["tm-run"]
print(f"tm-run / llama.cpp: prefill {tp / lp:.2f}x, decode {td / ld:.2f}x")
PY
