#!/usr/bin/env bash
# Builds the transmamba-web npm package and installs it into demo/ (idempotent).
#   out/web/package/                  the staged package (wasm-bindgen output + web/npm/*)
#   out/web/transmamba-web-<v>.tgz    `npm pack` of it
#   demo/node_modules/transmamba-web  the tarball, installed as a user would
# Honors CARGO_TARGET_DIR. Needs rustup, cargo, npm.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$ROOT/out/web"

# 1. toolchain: the wasm target and wasm-bindgen-cli at the exact version of the crate in Cargo.lock.
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [[ -z "$WB_VERSION" ]]; then
  echo "build.sh: no wasm-bindgen entry in Cargo.lock" >&2
  exit 1
fi
# Where `cargo install` puts binaries, first on PATH: a fresh CARGO_INSTALL_ROOT or a PATH
# without ~/.cargo/bin must still find the CLI this script installs.
export PATH="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin:$PATH"
wb_installed() { wasm-bindgen --version 2>/dev/null | awk '{print $2}'; }
if [[ "$(wb_installed)" != "$WB_VERSION" ]]; then
  # --locked first (the versions its authors tested); its lock file can pin a dependency version
  # the registry no longer serves (seen: webpki-roots 1.0.11), so fall back to a fresh resolution.
  # The CLI must equal the crate's version exactly: the glue and the wasm schema must match.
  echo "build.sh: installing wasm-bindgen-cli $WB_VERSION (a few minutes on a fresh machine)" >&2
  if ! cargo install --locked -q wasm-bindgen-cli --version "=$WB_VERSION"; then
    echo "build.sh: the --locked install failed; retrying with dependencies resolved afresh" >&2
    cargo install --force -q wasm-bindgen-cli --version "=$WB_VERSION"
  fi
  hash -r
  if [[ "$(wb_installed)" != "$WB_VERSION" ]]; then
    echo "build.sh: wasm-bindgen on PATH is '$(command -v wasm-bindgen || echo none)' at version" \
      "'$(wb_installed)', not $WB_VERSION: put cargo's install bin directory" \
      "(${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin) first on PATH" >&2
    exit 1
  fi
fi

# 2. the wasm module (profile wasm-release: size-optimised, no debug info).
cargo build -q --profile wasm-release --target wasm32-unknown-unknown -p transmamba-web
WASM="$TARGET_DIR/wasm32-unknown-unknown/wasm-release/transmamba_web.wasm"

# 2b. the same module with wasm threads, for the CPU engine on cross-origin-isolated pages:
# shared memory (imported, up to wasm32's 4 GiB) and atomics, which the prebuilt std lacks, so
# std is rebuilt from the toolchain's rust-src (`-Z build-std`). RUSTC_BOOTSTRAP lets the stable
# toolchain take that -Z flag: the same compiler as everything else, no nightly to pin.
# Its own target dir: these RUSTFLAGS would otherwise invalidate the other build each time.
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
THREADS_FLAGS="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals"
for a in --shared-memory --import-memory --max-memory=4294967296 \
  --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base; do
  THREADS_FLAGS+=" -C link-arg=$a"
done
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$TARGET_DIR/wasm-threads" RUSTFLAGS="$THREADS_FLAGS" \
  cargo build -q --profile wasm-release --target wasm32-unknown-unknown -p transmamba-web \
  -Z build-std=panic_abort,std 2> >(grep -v -e 'unstable feature specified for `-Ctarget-feature`: `atomics`' \
    -e '^  |$' -e 'this feature is not stably supported' -e '^$' >&2)
WASM_THREADS="$TARGET_DIR/wasm-threads/wasm32-unknown-unknown/wasm-release/transmamba_web.wasm"

# 3. stage the package: wasm-bindgen --target web, plus the hand-written ES module.
rm -rf "$OUT/package"
mkdir -p "$OUT/package/wasm" "$OUT/package/wasm-threads"
wasm-bindgen --target web --no-typescript --out-dir "$OUT/package/wasm" "$WASM"
wasm-bindgen --target web --no-typescript --out-dir "$OUT/package/wasm-threads" "$WASM_THREADS"
cp web/npm/package.json web/npm/index.js web/npm/index.d.ts web/npm/worker.js web/npm/thread.js web/npm/storage.js "$OUT/package/"
cp web/README.md "$OUT/package/README.md"

# 4. npm pack (prints the tarball name).
rm -f "$OUT"/transmamba-web-*.tgz
TGZ="$OUT/$(cd "$OUT" && npm pack --silent ./package)"
echo "build.sh: $TGZ ($(du -k "$TGZ" | cut -f1) KiB; wasm $(du -k "$OUT/package/wasm/transmamba_web_bg.wasm" | cut -f1) KiB, threaded $(du -k "$OUT/package/wasm-threads/transmamba_web_bg.wasm" | cut -f1) KiB)"

# 5. install the tarball into demo/ the way a user of the package would.
(cd demo && npm install --silent --no-save --no-package-lock --no-audit --no-fund "$TGZ")

# 6. the demo page's q4_0 variant of the demo model (tm-run quantize; not committed).
cargo run -q -p tm-run -- quantize --to q4_0 --out demo/transmamba-demo-q4_0.safetensors

echo "build.sh: done; serve demo/ with python3 demo/serve.py (cross-origin isolated: threads) or any static server"
