#!/usr/bin/env bash
# Runs the fuzz targets: fuzz/run.sh SECONDS [TARGET...] (all six by default).
# Installs cargo-fuzz if missing. The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz
# pass its sanitizer flags. Each target starts from fuzz/seeds/<target>/ plus what earlier runs
# found (fuzz/corpus/<target>/, not committed); a crash is saved in fuzz/artifacts/<target>/
# and ends the run with a non-zero status. Prints a table: target, seconds, executions, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:?usage: fuzz/run.sh SECONDS [TARGET...]}"
shift
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(safetensors_file model_dir tokenizer_json schedule_and_tokens session_state gguf_file)

export PATH="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install -q --locked cargo-fuzz || cargo install -q cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >&2

status=0
printf '%-22s %8s %12s %8s\n' target seconds executions crashes
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="$(mktemp)"
  rc=0
  cargo fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -max_len=8192 -rss_limit_mb=3072 -timeout=20 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  execs="$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)"
  crashes=0
  if ((rc != 0)); then
    crashes=1
    status=1
    grep -E "panicked|ERROR|Test unit written" "$log" >&2 || tail -n 30 "$log" >&2
  fi
  printf '%-22s %8s %12s %8s\n' "$t" "$SECONDS_EACH" "${execs:-?}" "$crashes"
  rm -f "$log"
done
exit "$status"
