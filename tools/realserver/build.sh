#!/usr/bin/env bash
# Build a REAL OpenAI-compatible server for the integration tests: llama.cpp's
# own `llama-server` (CPU only), compiled from the llama.cpp tree vendored in
# the llama-cpp-python sdist on PyPI, plus a tiny random-weight GGUF model made
# locally by make_model.py (no model hub). Idempotent: a rerun takes ~1 s.
#
#   bash tools/realserver/build.sh
#
# Cache root: $PARALLELIZE_REALSERVER_DIR, else $XDG_CACHE_HOME/parallelize/realserver
# (default ~/.cache/parallelize/realserver). Knobs: PYTHON (default python3),
# JOBS (default 2). First run: ~10-15 min on 2 cores, ~80 MB download.
set -euo pipefail

LCP_VERSION=0.3.36          # llama-cpp-python sdist that carries vendor/llama.cpp
PINS=(gguf==0.19.0 tokenizers==0.23.3 "numpy==2.2.6; python_version < '3.11'"
  "numpy==2.3.5; python_version >= '3.11'")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${PARALLELIZE_REALSERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/parallelize/realserver}
PY=${PYTHON:-python3}
JOBS=${JOBS:-2}
VENV=$ROOT/venv
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF
  -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DGGML_HIP=OFF
  -DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_RPC=OFF
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON)
# GGML_NATIVE=OFF still assumes AVX2/FMA/F16C/BMI2; turn them off on CPUs without AVX2.
if [ -r /proc/cpuinfo ] && ! grep -qw avx2 /proc/cpuinfo; then
  CMAKE_ARGS+=(-DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF)
fi

short_hash() {
  if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-10
}
log_fail() { echo "FAILED: $1 (log: $2)" >&2; tail -n 40 "$2" >&2; exit 1; }

mkdir -p "$ROOT/models" "$ROOT/dl"
T0=$SECONDS
exec 9>"$ROOT/.lock"          # one build at a time per cache root
if command -v flock >/dev/null; then flock 9; fi

# --- 1. small venv for make_model.py (never llama-cpp-python itself) --------
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c pass 2>/dev/null; then
  rm -rf "$VENV"      # e.g. the base interpreter was upgraded or removed
fi
if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "${PINS[*]}" ]; then
  echo "== venv $VENV (${PINS[*]})"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
  echo "${PINS[*]}" >"$VENV/.pins"
fi

# --- 2. tiny model, keyed by make_model.py + interpreter + pins --------------
MODEL_KEY=$({ cat "$HERE/make_model.py"; echo "${PINS[*]}"
  "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | short_hash)
MODEL=$ROOT/models/tiny-llama-$MODEL_KEY.gguf
if [ ! -s "$MODEL" ]; then
  echo "== model $MODEL"
  t=$SECONDS
  "$VENV/bin/python" "$HERE/make_model.py" "$MODEL"   # writes .part, then renames
  echo "   model made in $((SECONDS - t)) s"
fi

# --- 3. llama-server, keyed by version + CPU flags + compiler + flags --------
CPU=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null \
  || sysctl -n machdep.cpu.brand_string 2>/dev/null || true)
BUILD_KEY=$({ uname -sm; echo "$CPU"; "${CXX:-c++}" --version 2>/dev/null | head -n1
  cmake --version | head -n1; echo "${CMAKE_ARGS[*]}"; } | short_hash)
DEST=$ROOT/llama-server-$LCP_VERSION-$BUILD_KEY
BIN=$DEST/bin/llama-server
if [ ! -x "$BIN" ]; then
  TGZ=$ROOT/dl/llama_cpp_python-$LCP_VERSION.tar.gz
  if [ ! -s "$TGZ" ]; then
    echo "== downloading llama-cpp-python==$LCP_VERSION sdist"
    # --no-binary for this package only: ':all:' would build its build deps from source
    rm -rf "$ROOT/dl/tmp"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$LCP_VERSION" -d "$ROOT/dl/tmp"
    mv "$ROOT/dl/tmp/$(basename "$TGZ")" "$TGZ" && rm -rf "$ROOT/dl/tmp"
  fi
  WORK=$ROOT/work-$LCP_VERSION-$BUILD_KEY       # kept on failure: a rerun resumes
  LOG=$ROOT/build-$LCP_VERSION-$BUILD_KEY.log
  TOP=$WORK/llama_cpp_python-$LCP_VERSION SRC=$WORK/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp
  if [ ! -d "$TOP" ]; then     # unpack aside, then rename: never a half-extracted tree
    rm -rf "$WORK.tmp" && mkdir -p "$WORK.tmp" "$WORK" && tar xzf "$TGZ" -C "$WORK.tmp"
    mv "$WORK.tmp/llama_cpp_python-$LCP_VERSION" "$TOP" && rm -rf "$WORK.tmp"
  fi
  echo "== building llama-server (cmake -j $JOBS, ~10-15 min on 2 cores; log: $LOG)"
  t=$SECONDS
  GEN_ARGS=()
  if [ ! -f "$WORK/build/CMakeCache.txt" ] && command -v ninja >/dev/null; then GEN_ARGS=(-G Ninja); fi
  # the sdist has no .git: take the vendored upstream commit from its CHANGELOG
  COMMIT=$(sed -n "/^## \[$LCP_VERSION\]/,/^## \[/s/.*llama\.cpp@\([0-9a-f]\{7,\}\).*/\1/p" \
    "$TOP/CHANGELOG.md" | head -n1)
  cmake -S "$SRC" -B "$WORK/build" ${GEN_ARGS[@]+"${GEN_ARGS[@]}"} "${CMAKE_ARGS[@]}" \
    -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT="${COMMIT:-unknown}" >"$LOG" 2>&1 \
    || log_fail "cmake configure" "$LOG"
  cmake --build "$WORK/build" --target llama-server -j "$JOBS" >>"$LOG" 2>&1 \
    || log_fail "cmake build" "$LOG"
  "$WORK/build/bin/llama-server" --version >>"$LOG" 2>&1 || log_fail "llama-server --version" "$LOG"
  STAGE=$ROOT/.stage-$BUILD_KEY-$$
  rm -rf "$STAGE" && mkdir -p "$STAGE/bin"
  cp "$WORK/build/bin/llama-server" "$STAGE/bin/"
  rm -rf "$DEST" && mv "$STAGE" "$DEST"        # atomic: DEST exists only when complete
  rm -rf "$WORK"
  echo "   llama-server built in $((SECONDS - t)) s"
fi

# --- 4. report + manifest read by serve.find_build() -------------------------
"$BIN" --version >"$ROOT/server-version.txt" 2>&1
"$VENV/bin/python" -c 'import json, sys; print(json.dumps(dict(zip(
  ["binary", "model", "llama_cpp_python"], sys.argv[1:]))))' \
  "$BIN" "$MODEL" "$LCP_VERSION" >"$ROOT/build.json.tmp"
mv "$ROOT/build.json.tmp" "$ROOT/build.json"
echo "== ready in $((SECONDS - T0)) s"
echo "   binary:  $BIN"
echo "   model:   $MODEL ($(du -h "$MODEL" | cut -f1))"
echo "   version: $ROOT/server-version.txt"
sed 's/^/     /' "$ROOT/server-version.txt"
