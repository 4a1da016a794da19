#!/usr/bin/env bats
# as-gen --batch (tools/as-gen/batch.c, as_forward_batch): many prompts decoded together must
# print, prompt by prompt, exactly what as-gen prints for that prompt alone (greedy and sampled,
# any batch size, sequences ending at different steps, chat prompts on SmolLM2); bad lines are
# refused before anything is generated.

bats_require_minimum_version 1.5.0
load helpers
load assert_refused

setup_file() {
    import_model
    export SMOL
    SMOL=$("$BATS_TEST_DIRNAME/../../pipelines/smollm2-gguf")
}

# jobs FILE: 9 stories260K prompts, greedy and sampled alternating, 6 to 70 steps (the short
# ones finish while others run, so slots are refilled mid-batch)
jobs() {
    local i p
    local prompts=("Once upon a time" "The cat" "Lily and Tom" "One day, a little" "The sun was"
        "Tim had a big" "She said" "A bird" "Mom and dad")
    : >"$1"
    for i in "${!prompts[@]}"; do
        p=${prompts[$i]}
        jq -cn --arg p "$p" --argjson t "$([ $((i % 2)) = 1 ] && echo 0.9 || echo 0)" \
            --argjson s $((i + 3)) --argjson n $((6 + (i * 37) % 65)) \
            '{prompt: $p, temp: $t, seed: $s, steps: $n}' >>"$1"
    done
}

# same_as_alone JOBS OUT [as-gen options]: line i of OUT is as-gen's output for job i alone
same_as_alone() {
    local i=0 l a b
    [ "$(wc -l <"$2")" = "$(wc -l <"$1")" ]
    while IFS= read -r l; do
        local opts=(-p "$(jq -r .prompt <<<"$l")")
        [ "$(jq -r '.temp // empty' <<<"$l")" ] && opts+=(--temp "$(jq -r .temp <<<"$l")")
        [ "$(jq -r '.seed // empty' <<<"$l")" ] && opts+=(--seed "$(jq -r .seed <<<"$l")")
        [ "$(jq -r '.steps // empty' <<<"$l")" ] && opts+=(-n "$(jq -r .steps <<<"$l")")
        [ "$(jq -r '.chat // false' <<<"$l")" = true ] && opts+=(--chat)
        a=$(as-gen -m "$3" "${opts[@]}" "${@:4}")
        b=$(sed -n "$((i + 1))p" "$2" | jq -r .text)
        if [ "$a" != "$b" ]; then
            printf 'job %d differs:\nalone: %s\nbatch: %s\n' "$i" "$a" "$b" >&2
            return 1
        fi
        [ "$(sed -n "$((i + 1))p" "$2" | jq -r .index)" = "$i" ]
        i=$((i + 1))
    done <"$1"
}

@test "batched generation prints what one-at-a-time generation prints (batch 1, 3, 4; 1 and 2 threads)" {
    jobs "$BATS_TEST_TMPDIR/jobs"
    local B
    for B in 1 3 4; do
        as-gen -m "$M" --batch "$BATS_TEST_TMPDIR/jobs" -B $B >"$BATS_TEST_TMPDIR/out$B"
        same_as_alone "$BATS_TEST_TMPDIR/jobs" "$BATS_TEST_TMPDIR/out$B" "$M"
    done
    OPENBLAS_NUM_THREADS=2 as-gen -m "$M" --batch - -B 4 <"$BATS_TEST_TMPDIR/jobs" \
        >"$BATS_TEST_TMPDIR/out2t"
    cmp "$BATS_TEST_TMPDIR/out4" "$BATS_TEST_TMPDIR/out2t"
    # the ids are the generated tokens: a sequence stops at EOS or at its steps
    run jq -s '[.[] | .ids | length] | add' "$BATS_TEST_TMPDIR/out4"
    [ "$output" -gt 100 ]
}

@test "the command line's options are the lines' defaults" {
    printf '{"prompt": "Once upon a time"}\n{"prompt": "Lily", "temp": 0}\n' >"$BATS_TEST_TMPDIR/j"
    as-gen -m "$M" --batch "$BATS_TEST_TMPDIR/j" --temp 0.8 --seed 11 -n 30 >"$BATS_TEST_TMPDIR/o"
    a=$(as-gen -m "$M" -p "Once upon a time" --temp 0.8 --seed 11 -n 30)
    [ "$(sed -n 1p "$BATS_TEST_TMPDIR/o" | jq -r .text)" = "$a" ]
    b=$(as-gen -m "$M" -p "Lily" --seed 11 -n 30)
    [ "$(sed -n 2p "$BATS_TEST_TMPDIR/o" | jq -r .text)" = "$b" ]
}

@test "SmolLM2 chat prompts, greedy and sampled, batched as alone" {
    : >"$BATS_TEST_TMPDIR/jobs"
    local q
    for q in "What is the capital of France?" "Name a fruit." "Say hello in French."; do
        jq -cn --arg p "$q" '{prompt: $p, chat: true, steps: 60}' >>"$BATS_TEST_TMPDIR/jobs"
    done
    jq -cn '{prompt: "The history of the city", temp: 0.7, seed: 5, steps: 24}' \
        >>"$BATS_TEST_TMPDIR/jobs"
    OPENBLAS_NUM_THREADS=2 as-gen -m "$SMOL" --batch "$BATS_TEST_TMPDIR/jobs" -B 4 \
        >"$BATS_TEST_TMPDIR/out"
    same_as_alone "$BATS_TEST_TMPDIR/jobs" "$BATS_TEST_TMPDIR/out" "$SMOL"
    # the first answer mentions Paris (a real answer, not an empty line)
    sed -n 1p "$BATS_TEST_TMPDIR/out" | jq -r .text | grep -q Paris
}

@test "bad input: bad lines refused with FILE:LINE before any output, bad options" {
    local j=$BATS_TEST_TMPDIR/j
    printf '{"prompt": "Lily"}\n\n{"prompt": 3}\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j"
    refused "as-gen: $j:3: \"prompt\" missing or not a string"
    printf '{"prompt": "Lily"}\n[1, 2]\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j"
    refused "as-gen: $j:2: not a JSON object"
    printf '{"prompt": "Lily", "temp": -1}\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j"
    refused "as-gen: $j:1: \"temp\" must be a number >= 0"
    printf '{"prompt": "Lily", "steps": 0}\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j"
    refused "as-gen: $j:1: \"steps\" must be a positive integer"
    printf '{"prompt": "Once upon a time there was", "steps": 3}\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j"
    refused "as-gen: $j:1: prompt is 6 tokens, more than its steps"
    printf '{"prompt": "Lily", "system": "Be brief."}\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j"
    refused "as-gen: $j:1: \"system\" needs chat"
    run --separate-stderr as-gen -m "$M" --batch "$BATS_TEST_TMPDIR/none"
    refused "as-gen: $BATS_TEST_TMPDIR/none: No such file or directory"
    printf '{"prompt": "Lily"}\n' >"$j"
    run --separate-stderr as-gen -m "$M" --batch "$j" -p Lily
    refused "as-gen: --batch takes its prompts from the file: no -p, --draft, -k, --sparse-attn, --prune or --chat-render"
    run --separate-stderr as-gen -m "$M" --batch "$j" -B 0
    refused 'as-gen: --batch-size: expected an integer in 1..64, got "0"'
}
