#!/usr/bin/env bats
# Real consumer: Hugging Face transformers (torch, CPU) loads the checkpoints our tools write
# (as-import dense; as-pack compressed-tensors and GPTQ v1, group 32 and per-channel) and must
# compute what our engine computes: same token ids, the greedy test vector, and the perplexity of
# as-eval --score all within 1e-4 relative. tests/tools/consumer_transformers.py runs every check
# in one Python process; docs/consumers.md has the numbers and the install.
# Python: .venv-consumer/bin/python3 (tests/requirements-consumer.txt, about 3 GB; `make deps`
# installs it). Without that venv every test skips with a reason starting "optional:" (tests/run
# accepts those), unless AS_REQUIRE_CONSUMER=1 (make check), which makes its absence a failure.
# Once the venv exists, a package of requirements-consumer.txt missing from it, the C tokenizer
# driver missing or a consumer crash is a failure, never a skip.

# a failure anywhere in a pipeline fails the test, not only its last command
set -o pipefail

setup_file() {
    ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
    local build=${BUILD:-build/rel}
    [[ $build == /* ]] || build="$ROOT/$build"
    export TT="$build/tests/test_tokenizer"
    export DATA=${AS_DATA:-$ROOT/../shared/data}
    export REF="$DATA/models/stories260K/greedy-once-upon-a-time.txt"
    export W="$BATS_FILE_TMPDIR" R="$BATS_FILE_TMPDIR/report.json"
    export CONSUMER_SKIP="" CONSUMER_MISSING=""
    local PY=$ROOT/.venv-consumer/bin/python3
    if [ ! -x "$PY" ]; then
        if [ "${AS_REQUIRE_CONSUMER:-0}" = 1 ]; then
            export CONSUMER_MISSING="AS_REQUIRE_CONSUMER=1 but $PY does not exist (make deps)"
        else
            export CONSUMER_SKIP="optional: .venv-consumer absent (make deps installs transformers + torch, ~3 GB; AS_REQUIRE_CONSUMER=1 (make check) makes this a failure)"
        fi
        return 0
    fi
    local missing
    missing=$("$PY" -c "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))" \
        torch transformers compressed_tensors optimum gptqmodel 2>&1) || missing="(python failed: $missing)"
    if [ -n "$missing" ]; then
        export CONSUMER_MISSING="$PY lacks $missing (pip install -r tests/requirements-consumer.txt)"
        return 0
    fi

    local m=$DATA/models/stories260K
    as-import -t "$m/tok512.bin" "$m/stories260K.bin" "$W/model"
    as-calib -m "$W/model" -d "$DATA/text/austen" -n 16 -l 128 >"$W/calib.stream" 2>/dev/null
    # 3000 bytes of wikitext: starts with a space and has CRLF lines (tokenizer edge cases)
    head -c 3000 "$DATA/text/wikitext-2-raw/wiki.test.raw" >"$W/text.txt"
    local specs=("dense:$W/model") g s f
    for g in 32 -1; do
        s=$([ "$g" = 32 ] && echo "" || echo "-pc")
        as-gptq -b 4 -g "$g" <"$W/calib.stream" >"$W/q$s.stream" 2>/dev/null
        for f in compressed-tensors:ct gptq:gptq fakequant:fq; do
            as-pack -m "$W/model" -f "${f%%:*}" -o "$W/${f#*:}$s" <"$W/q$s.stream" 2>/dev/null
        done
        specs+=("ct:$W/ct$s" "gptq:$W/gptq$s:$W/fq$s")
    done
    for d in model ct ct-pc gptq gptq-pc fq fq-pc; do
        as-eval -m "$W/$d" -f "$W/text.txt" --ctx 128 --score all --json >"$W/$d.eval"
    done
    as-gen -m "$W/ct" -p "Once upon a time" >"$W/ct.gen"
    as-gen -m "$W/ct-pc" -p "Once upon a time" >"$W/ct-pc.gen"
    "$PY" "$BATS_TEST_DIRNAME/consumer_transformers.py" "$R" "$W/text.txt" 128 "Once upon a time" 256 \
        "${specs[@]}" >"$W/consumer.log" 2>&1 || true # a crash shows in every test (rep)
}

# the opt-in skip (no venv, not required), or a failure naming what is missing
need() {
    if [ -n "$CONSUMER_SKIP" ]; then
        skip "$CONSUMER_SKIP"
    fi
    if [ -n "$CONSUMER_MISSING" ]; then
        echo "$CONSUMER_MISSING" >&2
        return 1
    fi
}

# value of KEY (a jq path) in the consumer's report, failing on a recorded error
rep() {
    local err
    [ -s "$R" ] || { echo "consumer wrote no report:" >&2; tail -20 "$W/consumer.log" >&2; return 1; }
    err=$(jq -r --arg k "$1" '.[$k].error // empty' "$R")
    [ -z "$err" ] || { echo "consumer: $err" >&2; tail -20 "$W/consumer.log" >&2; return 1; }
    jq -r --arg k "$1" ".[\$k]$2" "$R"
}
ours() { jq -r ".$2" "$W/$1.eval"; }
# |A - B| <= TOL * |B|, printing both
close() {
    echo "consumer $1 vs ours $2 (tolerance $3 relative)"
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(a != "" && d <= t * m) }'
}

@test "transformers loads the as-import checkpoint; its tokenizer.json encodes as our tokenizer" {
    need
    [ "$(rep dense:model .fast_bos_first)" = true ]
    # same count as our engine's tokenizer (as-eval), BOS included
    [ "$(rep dense:model .tokens)" = "$(ours model tokens)" ]
    # and the same ids as the C tokenizer's test driver (built with the unit tests: required)
    [ -x "$TT" ]
    "$TT" encode "$W/model/tokenizer.json" "$W/text.txt" >"$W/c.ids"
    ids=$(rep dense:model .fast_ids)
    cmp "$W/c.ids" "$ids"
    # AutoTokenizer agrees on text that does not start with a space (docs/consumers.md)
    [ "$(rep dense:model .auto_equal_lstripped)" = true ]
    [ "$(rep dense:model '.kinds["torch.nn.modules.linear.Linear"]')" -eq 36 ]
}

@test "transformers greedy generation from 'Once upon a time' reproduces the test vector" {
    need
    [ "$(rep dense:model .greedy_len)" -eq 257 ]
    rep dense:model .greedy | head -c -1 >"$W/tf.gen" # jq adds a newline
    cmp "$W/tf.gen" "$REF"
}

@test "transformers perplexity of the dense checkpoint equals as-eval within 1e-4" {
    need
    [ "$(rep dense:model .scored)" = "$(ours model scored)" ]
    [ "$(ours model scored)" -eq $((14 * 127)) ]
    close "$(rep dense:model .ppl)" "$(ours model ppl)" 1e-4
}

@test "compressed-tensors (g32 and per-channel): transformers perplexity equals as-eval on it and on fake-quant" {
    need
    for s in "" -pc; do
        close "$(rep "ct:ct$s" .ppl)" "$(ours "ct$s" ppl)" 1e-4
        close "$(rep "ct:ct$s" .ppl)" "$(ours "fq$s" ppl)" 1e-4
        # the comparison can tell: 4-bit quantization moves perplexity by far more than that
        run close "$(rep "ct:ct$s" .ppl)" "$(ours model ppl)" 1e-2
        [ "$status" -eq 1 ]
        rep "ct:ct$s" .greedy | head -c -1 >"$W/tf$s.gen"
        cmp "$W/tf$s.gen" "$W/ct$s.gen"
    done
}

@test "gptq (g32 and per-channel): transformers+gptqmodel dequantize to our quantizer's weights and perplexity" {
    need
    for s in "" -pc; do
        k="gptq:gptq$s"
        [ "$(rep "$k" .weights.packed)" -eq 20 ]
        # packed: fp16 scales, so within 2^-10 of the f32 fake-quant weights (a wrong code, zero
        # point or group is off by a whole step, >= 1/8 relative); kept (ragged/172): exact
        awk -v r="$(rep "$k" .weights.bound_ratio_packed)" 'BEGIN { exit !(r <= 1) }'
        [ "$(rep "$k" .weights.max_abs_kept)" = 0 ]
        # fp16 scales widened to f32 inside the consumer: our engine's precision
        close "$(rep "$k" .ppl_f32)" "$(ours "gptq$s" ppl)" 1e-4
        close "$(rep "$k" .ppl_f32)" "$(ours "fq$s" ppl)" 1e-3
        # as a user gets it: gptqmodel's CPU kernels compute in fp16/bf16
        close "$(rep "$k" .ppl_auto)" "$(ours "gptq$s" ppl)" 1e-2
        run close "$(rep "$k" .ppl_auto)" "$(ours model ppl)" 1e-2
        [ "$status" -eq 1 ]
    done
}

@test "gptq: gptqmodel's own loader reads the checkpoint as written (per-module 'dynamic' exclusions)" {
    need
    for s in "" -pc; do
        err=$(rep "gptq:gptq$s" '.gptqmodel_error // empty')
        echo "gptqmodel error: '$err'"
        [ -z "$err" ]
        [ "$(rep "gptq:gptq$s" '.kinds_gptqmodel["torch.nn.modules.linear.Linear"]')" -eq 16 ]
        close "$(rep "gptq:gptq$s" .ppl_gptqmodel)" "$(ours "gptq$s" ppl)" 1e-2
    done
}
