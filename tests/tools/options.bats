#!/usr/bin/env bats
# Options no other test exercised, each against an independent expectation:
#  - the numpy forward pass (forward_oracle.py) first reproduces data/README.md's greedy test
#    vector, so it can serve as the reference for as-eval and as-gen below;
#  - as-eval --score all|half and --chunks: perplexity equal to the oracle's on the same windows;
#    --gen N reports a generation speed;
#  - as-gen sampling: the first sampled token's frequencies over many seeds follow the oracle's
#    softmax(logits / T) (Pearson chi-square at the 0.999 quantile); the same seed repeats;
#  - as-calib --seed (same seed: identical bytes; another: other windows), --no-weights, --arena;
#  - as-gptq --damp / --block: codes and W_hat equal tests/tools/gptq_oracle.py (a numpy
#    transcription of the reference fasterquant) run with the same damping and block size;
#  - act-order, static groups and scale search packed as GPTQ v1 / compressed-tensors and read back
#    by the independent reader gptq_pack_oracle.py;
#  - as-awq --no-duo-scaling / --loss-seqs / --clip-tokens; as-lepto --weights channel / --block
#    (bytes checked by fp_oracle.py) and --outlier-kurtosis (the flagged set equals numpy's).

load helpers

setup_file() {
    import_model
    export CAL=$BATS_FILE_TMPDIR/calib.astr
    as-calib -m "$M" -d "$AUSTEN" -n 16 -l 128 >"$CAL" 2>/dev/null
}

setup() {
    T=$BATS_TEST_TMPDIR
    O=$BATS_TEST_DIRNAME
    BIN_L2C=$L2C/stories260K.bin
}

@test "forward_oracle.py reproduces data/README.md's greedy test vector; as-gen greedy equals it" {
    run python3 "$O/forward_oracle.py" greedy "$BIN_L2C" "$L2C/tok512.bin" "Once upon a time" 256
    [ "$status" -eq 0 ]
    [ "$output" = "$(cat "$L2C/greedy-once-upon-a-time.txt")" ]
    run as-gen -m "$M" -p "Once upon a time" -n 256
    [ "$status" -eq 0 ]
    [ "$output" = "$(cat "$L2C/greedy-once-upon-a-time.txt")" ]
}

# eval_vs_oracle CTX MODE CHUNKS [as-eval options]: as-eval's tokens/windows/scored/PPL equal the
# oracle's on the first 3000 bytes of wikitext.
eval_vs_oracle() {
    local ctx=$1 mode=$2 chunks=$3
    shift 3
    run python3 "$O/forward_oracle.py" ppl "$BIN_L2C" "$L2C/tok512.bin" "$WIKI" 3000 "$ctx" "$mode" "$chunks"
    [ "$status" -eq 0 ]
    read -r tokens windows scored ppl <<<"$output"
    run as-eval -m "$M" -f "$WIKI" --bytes 3000 --ctx "$ctx" --json "$@"
    [ "$status" -eq 0 ]
    echo "oracle: $tokens $windows $scored $ppl; as-eval: $output"
    [ "$(jq .tokens <<<"$output")" -eq "$tokens" ]
    [ "$(jq .windows <<<"$output")" -eq "$windows" ]
    [ "$(jq .scored <<<"$output")" -eq "$scored" ]
    [ "$(jq -r .score <<<"$output")" = "$mode" ]
    # float32 engine vs float64 oracle: relative 1e-5
    awk -v a="$(jq .ppl <<<"$output")" -v b="$ppl" 'BEGIN { d = (a - b) / b; exit !(d < 1e-5 && d > -1e-5) }'
}

@test "as-eval --score all / half and --chunks: perplexity of the numpy oracle on the same windows" {
    eval_vs_oracle 64 all 3 --score all --chunks 3
    [ "$scored" -eq 189 ] # 3 windows x 63 positions
    eval_vs_oracle 64 half 3 --chunks 3
    [ "$scored" -eq 93 ] # 3 x (positions 32..62)
    eval_vs_oracle 64 all 0 --score all
    [ "$windows" -gt 3 ]
}

@test "as-eval --gen N: generation speed reported only when asked" {
    run as-eval -m "$M" -f "$WIKI" --bytes 3000 --ctx 64 --chunks 1 --json
    [ "$status" -eq 0 ]
    [ "$(jq '.gen_tok_s' <<<"$output")" = null ]
    run as-eval -m "$M" -f "$WIKI" --bytes 3000 --ctx 64 --chunks 1 --gen 32 --json
    [ "$status" -eq 0 ]
    jq -e '.gen_tok_s > 0' <<<"$output"
}

@test "as-gen --temp: first sampled token follows softmax(logits/T) of the oracle (chi-square), seeds repeat" {
    prompt="Once upon a time, there was a"
    printf '%s' "$prompt" >"$T/prompt.txt"
    # positions: the prompt's tokens (BOS not counted) plus one sampled token
    np=$(python3 "$O/tokenizer_oracle.py" spm-encode "$L2C/tok512.bin" "$T/prompt.txt" 100 | wc -l)
    [ "$np" -gt 5 ]
    python3 "$O/forward_oracle.py" next-probs "$BIN_L2C" "$L2C/tok512.bin" "$prompt" 1.5 >"$T/probs.txt"
    for s in $(seq 1 600); do
        as-gen -m "$M" -p "$prompt" -n $((np + 1)) --temp 1.5 --seed "$s" | head -c -1 | tail -c +$((${#prompt} + 1)) | od -An -tx1 | tr -d ' \n'
        echo
    done >"$T/samples.txt"
    [ "$(sort -u "$T/samples.txt" | wc -l)" -gt 10 ]
    run python3 "$O/options_oracle.py" chisq "$T/samples.txt" "$T/probs.txt"
    echo "chi2 df critical: $output"
    [ "$status" -eq 0 ]
    # the same seed gives the same text; temperature 0 is greedy whatever the seed
    a=$(as-gen -m "$M" -p "$prompt" -n 40 --temp 1.5 --seed 7)
    b=$(as-gen -m "$M" -p "$prompt" -n 40 --temp 1.5 --seed 7)
    [ "$a" = "$b" ]
    [ "$(as-gen -m "$M" -p "$prompt" -n 40 --seed 7)" = "$(as-gen -m "$M" -p "$prompt" -n 40 --seed 8)" ]
}

@test "as-calib --seed: the same seed reproduces the stream bit for bit, another seed draws other windows" {
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --seed 5 >"$T/a" 2>/dev/null
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --seed 5 >"$T/b" 2>/dev/null
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --seed 6 >"$T/c" 2>/dev/null
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 >"$T/d" 2>/dev/null
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --seed 0 >"$T/e" 2>/dev/null
    cmp "$T/a" "$T/b"
    cmp "$T/d" "$T/e" # the documented default is seed 0
    # layer 0's q/k/v input depends only on the tokens: other windows, another Hessian
    python3 "$O/options_oracle.py" tensor "$T/a" model.layers.0.attn_qkv.hessian "$T/ha"
    python3 "$O/options_oracle.py" tensor "$T/c" model.layers.0.attn_qkv.hessian "$T/hc"
    ! cmp -s "$T/ha" "$T/hc"
    # and the seeds' windows differ for every layer's statistics
    [ "$(diff <(as-ls "$T/a" | jq -r 'select(.role == "hessian") | .payload.xxh3') \
              <(as-ls "$T/c" | jq -r 'select(.role == "hessian") | .payload.xxh3') | grep -c '^<')" -eq 20 ]
}

@test "as-calib --no-weights drops exactly the weight records; --arena moves payloads to a file, same bytes" {
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 >"$T/w" 2>/dev/null
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --no-weights >"$T/nw" 2>/dev/null
    [ "$(as-ls "$T/nw" | jq -s '[.[] | select(.role == "weight")] | length')" -eq 0 ]
    [ "$(as-ls "$T/w" | jq -s '[.[] | select(.role == "weight")] | length')" -eq 35 ]
    # everything else identical, record for record
    diff <(as-ls "$T/w" | jq -c 'select(.role != "weight") | [.name, .payload.xxh3]') \
        <(as-ls "$T/nw" | jq -c '[.name, .payload.xxh3]')
    mkdir "$T/arena"
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --arena "$T/arena" >"$T/ar" 2>/dev/null
    # statistics now travel by reference into an arena file of DIR; the pipe holds no payloads
    [ "$(as-ls "$T/ar" | jq -r 'select(.role == "hessian") | .payload.kind' | sort -u)" = ref ]
    [ "$(as-ls "$T/ar" | jq -r 'select(.role == "hessian") | .payload.file' | xargs -n1 dirname | sort -u)" = "$T/arena" ]
    [ "$(stat -c %s "$T/ar")" -lt 100000 ]
    # read through the independent stream reader, the payloads are the same bytes
    diff <(python3 "$O/stream_oracle.py" read "$T/w" | jq -c '[.name, .sha256]') \
        <(python3 "$O/stream_oracle.py" read "$T/ar" | jq -c '[.name, .sha256]')
}

# gptq_vs_oracle DAMP BLOCK ACT STATIC [as-gptq options]: layer 2's q_proj quantized by as-gptq
# (W4 g32 symmetric) equals gptq_oracle.py run on the same weight and Hessian.
gptq_vs_oracle() {
    local damp=$1 block=$2 act=$3 static=$4 d
    shift 4
    d=$T/o-$damp-$block-$act-$static
    mkdir -p "$d"
    as-cat --layer 2 "$CAL" | as-gptq -b 4 -g 32 --damp "$damp" --block "$block" --report "$d/rep" "$@" |
        as-pack -m "$M" -f fakequant -o "$d/fq" 2>/dev/null
    python3 "$O/options_oracle.py" tensor "$CAL" model.layers.2.attn_qkv.hessian "$d/H.f32"
    python3 "$O/options_oracle.py" st-tensor "$M/model.safetensors" model.layers.2.self_attn.q_proj.weight "$d/W.f32"
    python3 "$O/options_oracle.py" st-tensor "$d/fq/model.safetensors" model.layers.2.self_attn.q_proj.weight "$d/mine.f32"
    python3 "$O/options_oracle.py" gptq-dir "$d" 64 64 4 32 "$damp" "$block" "$act" "$static"
    python3 "$O/gptq_oracle.py" "$d"
    [ "$(jq -s '.[] | select(.name == "model.layers.2.self_attn.q_proj") | .percdamp' "$d/rep")" = "$damp" ]
    cmp_out=$(python3 "$O/options_oracle.py" compare "$d/mine.f32" "$d/what.f32" 64 64)
    read -r eq maxd <<<"$cmp_out"
    echo "damp $damp block $block act $act static $static: equal $eq, max |diff| $maxd"
    # float32 on both sides, different summation orders: every weight equal to float rounding but
    # at most 4 of 4096 (a rounding tie that flips one code)
    lt 0.999 "$eq"
    lt "$maxd" 0.2
    jq -s '.[] | select(.name == "model.layers.2.self_attn.q_proj") | .loss' "$d/rep" >"$d/loss"
}

@test "as-gptq --damp: equals the numpy GPTQ with that damping; more damping, a larger loss, a different result" {
    gptq_vs_oracle 0.01 128 0 0
    gptq_vs_oracle 0.5 128 0 0
    ! cmp -s "$T/o-0.01-128-0-0/mine.f32" "$T/o-0.5-128-0-0/mine.f32"
    # damping trades the Hessian-weighted error for stability: with 50x more it grows
    lt "$(cat "$T/o-0.01-128-0-0/loss")" "$(cat "$T/o-0.5-128-0-0/loss")"
}

@test "as-gptq --block: equals the numpy GPTQ with that block size; per channel the lazy batch changes nothing" {
    gptq_vs_oracle 0.01 8 0 0
    gptq_vs_oracle 0.01 128 0 0
    # with groups of 32 and blocks of 8, a group's scale is fitted from weights the lazy batch has
    # not yet updated (the reference's order): a different, equally valid result
    cmp_out=$(python3 "$O/options_oracle.py" compare "$T/o-0.01-8-0-0/mine.f32" "$T/o-0.01-128-0-0/mine.f32" 64 64)
    read -r eq maxd <<<"$cmp_out"
    echo "g32, block 8 vs 128: close $eq, max |diff| $maxd"
    lt "$eq" 0.99
    # per channel the lazy batch is an exact reformulation: the same weights to float rounding
    for b in 8 128; do
        as-cat --layer 2 "$CAL" | as-gptq -b 4 -g -1 --block $b | as-pack -m "$M" -f fakequant -o "$T/pc$b" 2>/dev/null
        python3 "$O/options_oracle.py" st-tensor "$T/pc$b/model.safetensors" model.layers.2.mlp.down_proj.weight "$T/pc$b.f32"
    done
    cmp_out=$(python3 "$O/options_oracle.py" compare "$T/pc8.f32" "$T/pc128.f32" 64 172)
    read -r eq maxd <<<"$cmp_out"
    echo "per channel, block 8 vs 128: close $eq, max |diff| $maxd"
    lt 0.999 "$eq"
}

@test "as-gptq --act-order [--static-groups]: equals the numpy GPTQ; GPTQ v1 and compressed-tensors read back by gptq_pack_oracle.py" {
    gptq_vs_oracle 0.01 128 1 0 --act-order
    gptq_vs_oracle 0.01 128 1 1 --act-order --static-groups
    ! cmp -s "$T/o-0.01-128-1-0/mine.f32" "$T/o-0.01-128-1-1/mine.f32"
    for opt in "--act-order" "--act-order --static-groups" "--scale-search"; do
        # shellcheck disable=SC2086
        as-gptq -b 4 -g 32 $opt <"$CAL" >"$T/q.astr"
        rm -rf "$T/fq" "$T/gq" "$T/ct"
        as-pack -m "$M" -f fakequant -o "$T/fq" <"$T/q.astr" 2>/dev/null
        as-pack -m "$M" -f gptq -o "$T/gq" <"$T/q.astr" 2>/dev/null
        as-pack -m "$M" -f compressed-tensors -o "$T/ct" <"$T/q.astr" 2>/dev/null
        python3 "$O/gptq_pack_oracle.py" gptq "$T/gq" "$T/fq" "$M"
        python3 "$O/gptq_pack_oracle.py" ct "$T/ct" "$T/fq" "$M"
        if [ "$opt" = --act-order ]; then
            # the g_idx of act-order is a permutation of the groups: GPTQ v1 declares desc_act
            jq -e '.quantization_config.desc_act == true' "$T/gq/config.json"
        fi
    done
}

@test "as-lepto --weights channel, --block 64: bytes match fp_oracle.py; --outlier-kurtosis flags what numpy flags" {
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 --no-weights >"$T/c" 2>/dev/null
    as-lepto -m "$M" -s fp8-static --weights channel "$T/c" >"$T/ch.astr"
    as-pack -m "$M" -f ct-fp -o "$T/ch" <"$T/ch.astr" 2>/dev/null
    jq -e '.quantization_config.config_groups.group_0.weights.strategy == "channel"' "$T/ch/config.json"
    python3 "$O/fp_oracle.py" float-quantized "$M" "$T/ch" "$T/c"
    as-lepto -m "$M" -s fp8-block --block 64 >"$T/b.astr"
    as-pack -m "$M" -f ct-fp -o "$T/b" <"$T/b.astr" 2>/dev/null
    jq -e '.quantization_config.config_groups.group_0.weights.block_structure == [64, 64]' "$T/b/config.json"
    python3 "$O/fp_oracle.py" float-quantized "$M" "$T/b"
    for k in 3.5 5 7; do
        want=$(python3 "$O/options_oracle.py" kurtosis "$M" "$k")
        got=$(as-lepto -m "$M" -s fp8-static --analyze --outlier-kurtosis "$k" "$T/c" 2>&1 |
            awk '$2 == "weight" && $NF == "OUTLIER" { print $1 }' | sort)
        echo "K=$k: numpy [$want] as-lepto [$got]"
        [ -n "$want" ]
        [ "$got" = "$want" ]
    done
}

@test "as-awq --duo-scaling / --no-duo-scaling: folded q/k/v scales follow docs/awq.md's formula at the reported alpha; --loss-seqs, --clip-tokens" {
    as-calib -m "$M" -d "$AUSTEN" -n 8 -l 64 --keep-seqs 4 --layers 1-1 >"$T/c" 2>/dev/null
    for duo in 1 0; do
        opt=--duo-scaling
        [ "$duo" = 1 ] || opt=--no-duo-scaling
        as-awq -m "$M" -b 4 -g 32 -e scaled "$opt" --report "$T/r$duo" <"$T/c" >"$T/s$duo"
        a=$(jq '.alpha.attn_qkv' "$T/r$duo")
        # alpha is on the documented grid i/20, i < 20
        awk -v a="$a" 'BEGIN { i = a * 20; d = i - int(i + 0.5); exit !(a >= 0 && a < 1 && d < 1e-4 && d > -1e-4) }'
        err=$(python3 "$O/options_oracle.py" awq-qkv "$M" "$T/c" "$T/s$duo" 1 32 "$a" "$duo")
        other=$(python3 "$O/options_oracle.py" awq-qkv "$M" "$T/c" "$T/s$duo" 1 32 "$a" $((1 - duo)))
        echo "duo $duo alpha $a: max rel err $err (the other formula: $other)"
        lt "$err" 1e-5
        lt 1e-2 "$other" # the two formulas are told apart
    done
    # --loss-seqs N: the losses use the first N kept windows
    as-awq -m "$M" -b 4 -g 32 -e scaled --loss-seqs 2 --report "$T/r2" <"$T/c" >"$T/ls"
    [ "$(jq '.seqs' "$T/r2")" -eq 2 ]
    [ "$(jq '.seqs' "$T/r1")" -eq 4 ]
    [ "$(jq -c '.loss_rtn' "$T/r2")" != "$(jq -c '.loss_rtn' "$T/r1")" ]
    # --clip-tokens: clipping (every linear but q/k) on another row sample changes o/gate/up/down
    # only; q and k are never clipped
    as-awq -m "$M" -b 4 -g 32 -e scaled --clip-tokens 16 <"$T/c" >"$T/ct"
    xx() { as-cat --inline "$1" | as-ls | jq -r --arg n "$2" 'select(.name == $n) | .payload.xxh3'; }
    for p in self_attn.q_proj self_attn.k_proj; do
        [ "$(xx "$T/s1" "model.layers.1.$p.weight")" = "$(xx "$T/ct" "model.layers.1.$p.weight")" ]
    done
    changed=0
    for p in self_attn.o_proj self_attn.v_proj mlp.gate_proj mlp.up_proj mlp.down_proj; do
        [ "$(xx "$T/s1" "model.layers.1.$p.weight")" = "$(xx "$T/ct" "model.layers.1.$p.weight")" ] || changed=$((changed + 1))
    done
    [ "$changed" -ge 3 ]
}

@test "--layers B-A (reversed) is refused by as-calib and as-lepto: status 1, one line, nothing written" {
    run -1 --separate-stderr as-calib -m "$M" -d "$AUSTEN" -n 2 -l 64 --layers 3-1
    [ "$stderr" = "as-calib: --layers '3-1': expected A or A-B within 0..4" ]
    [ -z "$output" ]
    run -1 --separate-stderr as-lepto -m "$M" -s fp8-static --layers 3-1 "$CAL"
    [ "$stderr" = "as-lepto: --layers '3-1': expected A or A-B within 0..4" ]
    [ -z "$output" ]
}
