#!/usr/bin/env bats
# Fuzzing regression: every fuzz target (tests/fuzz/fuzz_*.c) replays its seed corpus once, no
# fuzzing (libFuzzer -runs=0), under ASan+UBSan. The corpora hold the seeds made from real files
# and every input that once crashed or hung a parser (regress-*), so a fixed bug stays fixed.
# Needs clang with the libFuzzer runtime (Debian: clang, libclang-rt-14-dev), which `make deps`
# installs: without it, or when a target fails to build, every test here FAILS (never skips).
# The targets are built (incrementally) into $BUILD/fuzz, or taken from FUZZ_BIN if set.

# A regressed hang must fail here, not after libFuzzer's default of 1200 s per input: every input
# of the corpora runs in well under 1 s alone (ASan build), the fuzzing runs use -timeout=10
# (run.sh); 25 s leaves room for a loaded CI machine.
REPLAY_TIMEOUT=25

setup_file() {
    cd "$BATS_TEST_DIRNAME/../.."
    export FUZZ_ROOT=$PWD FUZZ_FAIL=""
    if [ -z "${FUZZ_BIN:-}" ]; then
        export FUZZ_BIN=$PWD/${BUILD:-build/rel}/fuzz
        local probe=$BATS_FILE_TMPDIR/probe
        printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe.c"
        if ! clang -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" 2>"$BATS_FILE_TMPDIR/probe.log"; then
            export FUZZ_FAIL="clang with the libFuzzer runtime is not installed (make deps: clang, libclang-rt-14-dev): $(tail -1 "$BATS_FILE_TMPDIR/probe.log")"
            return 0
        fi
        if ! make -s -j2 -f tests/fuzz/Makefile BUILD="$FUZZ_BIN" >"$BATS_FILE_TMPDIR/build.log" 2>&1; then
            export FUZZ_FAIL="fuzz targets failed to build: $(tail -3 "$BATS_FILE_TMPDIR/build.log")"
        fi
    fi
}

# built: fails, naming the reason, when the targets could not be built
built() {
    if [ -n "$FUZZ_FAIL" ]; then
        echo "$FUZZ_FAIL" >&2
        return 1
    fi
}

replay() {
    built
    local t=$1 dir=$FUZZ_ROOT/tests/fuzz/corpus/$1 n
    if [ ! -x "$FUZZ_BIN/$t" ]; then
        echo "missing $FUZZ_BIN/$t" >&2
        return 1
    fi
    n=$(ls "$dir" | wc -l)
    [ "$n" -ge 3 ]
    # a failing input is written to the test's own directory, not the working tree
    run "$FUZZ_BIN/$t" -runs=0 -timeout="$REPLAY_TIMEOUT" -artifact_prefix="$BATS_TEST_TMPDIR/" "$dir"
    if [ "$status" -ne 0 ]; then
        echo "$output" | tail -40
        return 1
    fi
    # every file was executed (libFuzzer: "INITED ... N files found")
    [[ "$output" == *"$n files found"* ]]
}

@test "fuzz_safetensors replays its corpus" { replay fuzz_safetensors; }
@test "fuzz_stream replays its corpus" { replay fuzz_stream; }
@test "fuzz_config replays its corpus" { replay fuzz_config; }
@test "fuzz_tokenizer replays its corpus" { replay fuzz_tokenizer; }
@test "fuzz_gguf replays its corpus" { replay fuzz_gguf; }
@test "fuzz_llama2c replays its corpus (incl. the vocab < 259 encoder overflow)" { replay fuzz_llama2c; }

@test "every fuzz target has a corpus and a test here" {
    built
    for f in "$FUZZ_ROOT"/tests/fuzz/fuzz_*.c; do
        t=$(basename "$f" .c)
        if [ ! -d "$FUZZ_ROOT/tests/fuzz/corpus/$t" ]; then
            echo "no corpus for $t" >&2
            return 1
        fi
        if ! grep -q "replay $t;" "$BATS_TEST_FILENAME"; then
            echo "no replay test for $t" >&2
            return 1
        fi
    done
}
