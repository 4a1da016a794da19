#!/usr/bin/env bash
# Builds llama.cpp (CPU only, Release): the real consumer of our GGUF outputs in the tests (`make deps`
# runs it) and the SmolLM2 speed and quality anchors in bench/. Source: the llama-cpp-python 0.3.36 source distribution on PyPI, which vendors
# llama.cpp commit 0c1e57098 under vendor/llama.cpp. Idempotent: skips what is already there.
#   LLAMACPP_DIR  install prefix (default build/llama.cpp, git-ignored)
#   JOBS          parallel compile jobs (default 2: the machine has 2 cores)
# Prints the directory holding llama-bench, llama-perplexity, llama-quantize, llama-imatrix,
# llama-completion and llama-simple (llama-cli needs the server build, which is off).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${LLAMACPP_DIR:-build/llama.cpp}
JOBS=${JOBS:-2}
VERSION=0.3.36
BIN=$DIR/build/bin
TOOLS="llama-bench llama-perplexity llama-quantize llama-imatrix llama-completion llama-simple llama-tokenize"
# llama.cpp's logger writes from a worker thread that is never flushed at exit (the singleton is
# leaked on purpose: ggml-org/llama.cpp#22142), so llama-perplexity's last lines, its final
# estimate included, are lost on a loaded machine. The patch stops (and so drains) the logger
# before main returns; it changes no computation. PATCHED marks a build made with it.
PATCHED=$DIR/build/.as-log-flush
built() { for t in $TOOLS; do [ -x "$BIN/$t" ] || return 1; done; [ -f "$PATCHED" ]; }
if built; then
    echo "llama.cpp binaries: $(cd "$BIN" && pwd)"
    exit 0
fi
command -v cmake >/dev/null || { echo "llamacpp-build.sh: cmake not found (make deps installs it)" >&2; exit 1; }
mkdir -p "$DIR"
src=$DIR/src
if [ ! -f "$src/CMakeLists.txt" ]; then
    PIP=${PIP:-.venv/bin/pip}
    [ -x "$PIP" ] || PIP=pip3
    dl=$(mktemp -d "${TMPDIR:-/tmp}/llamacpp-sdist.XXXXXX")
    trap 'rm -rf "$dl"' EXIT
    # --no-binary for this package only: its build backend (scikit-build-core) may come as a wheel,
    # so pip's metadata step does not build every build dependency from source first.
    "$PIP" download -q --no-binary llama-cpp-python --no-deps -d "$dl" "llama-cpp-python==$VERSION"
    tar -xzf "$dl"/llama_cpp_python-$VERSION.tar.gz -C "$dl"
    rm -rf "$src.tmp"
    mv "$dl/llama_cpp_python-$VERSION/vendor/llama.cpp" "$src.tmp"
    mv "$src.tmp" "$src"
fi
ppl=$src/tools/perplexity/perplexity.cpp
if ! grep -q 'as-toolkit: drain the logger' "$ppl"; then
    last=$(grep -n '^    llama_backend_free();' "$ppl" | tail -1 | cut -d: -f1)
    [ -n "$last" ] || { echo "llamacpp-build.sh: $ppl: no llama_backend_free() to patch before" >&2; exit 1; }
    sed -i "${last}i\\    common_log_pause(common_log_main()); // as-toolkit: drain the logger (llama.cpp#22142)" "$ppl"
fi
# GGML_NATIVE: the binaries only run here, so use every instruction set this CPU has (as llama.cpp's
# default build does); LLAMA_CURL off: nothing is fetched at run time.
cmake -S "$src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_CUDA=OFF \
    -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=ON >"$DIR/cmake.log" 2>&1 ||
    { tail -20 "$DIR/cmake.log" >&2; exit 1; }
# shellcheck disable=SC2086
cmake --build "$DIR/build" -j "$JOBS" --target $TOOLS >"$DIR/build.log" 2>&1 ||
    { tail -20 "$DIR/build.log" >&2; exit 1; }
touch "$PATCHED"
built || { echo "llamacpp-build.sh: build finished without all of: $TOOLS" >&2; exit 1; }
echo "llama.cpp binaries: $(cd "$BIN" && pwd)"
