#!/usr/bin/env bats
# Fuzzing regression: every fuzz target (tests/fuzz/fuzz_*.c) replays its seed corpus once, no
# fuzzing (libFuzzer -runs=0), under ASan+UBSan. The corpora hold the seeds made from real files
# and every input that once crashed a parser (regress-*), so a fixed bug stays fixed.
# Needs clang with the libFuzzer runtime (Debian: clang, libclang-rt-14-dev); skips otherwise.
# The targets are built (incrementally) into $BUILD/fuzz, or taken from FUZZ_BIN if set.

setup_file() {
    cd "$BATS_TEST_DIRNAME/../.."
    export FUZZ_ROOT=$PWD
    if [ -z "${FUZZ_BIN:-}" ]; then
        export FUZZ_BIN=$PWD/${BUILD:-build/rel}/fuzz
        local probe=$BATS_FILE_TMPDIR/probe
        printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe.c"
        if ! clang -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" 2>/dev/null; then
            export FUZZ_SKIP="clang with the libFuzzer runtime is not installed (libclang-rt-14-dev)"
            return 0
        fi
        make -s -j2 -f tests/fuzz/Makefile BUILD="$FUZZ_BIN" >"$BATS_FILE_TMPDIR/build.log" 2>&1 ||
            export FUZZ_SKIP="fuzz targets failed to build: $(tail -3 "$BATS_FILE_TMPDIR/build.log")"
    fi
}

replay() {
    [ -z "${FUZZ_SKIP:-}" ] || skip "$FUZZ_SKIP"
    local t=$1 dir=$FUZZ_ROOT/tests/fuzz/corpus/$1
    [ -x "$FUZZ_BIN/$t" ] || { echo "missing $FUZZ_BIN/$t"; return 1; }
    [ "$(ls "$dir" | wc -l)" -ge 3 ]
    run "$FUZZ_BIN/$t" -runs=0 "$dir"
    [ "$status" -eq 0 ] || { echo "$output" | tail -40; return 1; }
    # every file was executed (libFuzzer: "INITED ... N files found")
    [[ "$output" == *"$(ls "$dir" | wc -l) files found"* ]]
}

@test "fuzz_safetensors replays its corpus" { replay fuzz_safetensors; }
@test "fuzz_stream replays its corpus" { replay fuzz_stream; }
@test "fuzz_config replays its corpus" { replay fuzz_config; }
@test "fuzz_tokenizer replays its corpus" { replay fuzz_tokenizer; }
@test "fuzz_gguf replays its corpus" { replay fuzz_gguf; }
@test "fuzz_llama2c replays its corpus (incl. the vocab < 259 encoder overflow)" { replay fuzz_llama2c; }

@test "every fuzz target has a corpus and a test here" {
    [ -z "${FUZZ_SKIP:-}" ] || skip "$FUZZ_SKIP"
    for f in "$FUZZ_ROOT"/tests/fuzz/fuzz_*.c; do
        t=$(basename "$f" .c)
        [ -d "$FUZZ_ROOT/tests/fuzz/corpus/$t" ] || { echo "no corpus for $t"; return 1; }
        grep -q "replay $t;" "$BATS_TEST_FILENAME" || { echo "no replay test for $t"; return 1; }
    done
}
