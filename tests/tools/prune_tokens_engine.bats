#!/usr/bin/env bats
# as-prune tokens --model: token pruning inside the engine's prefill (lib/common/prune_engine.c) on
# the bundled stories260K, against tests/oracles/prune_engine.py (a float64 numpy forward pass of the
# llama2.c checkpoint with the same pruning written from the docs): kept indices exact, logits after
# the pruned prefill and after one more decoded token within 2e-4 (RoPE positions renumbered, KV
# cache of the layers before the cut compacted and rotated); the prompts mode's report; bad input.

load helpers
load assert_refused
set -o pipefail

ORACLE=$BATS_TEST_DIRNAME/../oracles/prune_engine.py
BIN=$L2C/stories260K.bin
# 48 token ids: BOS then 47 draws from the 512-token vocabulary (seeded)
IDS=1,132,387,325,221,226,453,42,346,103,468,403,367,44,263,481,112,183,218,289,76,406,186,467,26,93,427,168,90,470,353,261,500,224,40,377,262,201,442,163,104,491,371,25,208,311,57,44

setup_file() { import_model; }

# engine METHOD KEEP LAYER [args]: prune in the engine, then the oracle's check
engine() {
    local m=$1 k=$2 l=$3
    shift 3
    as-prune tokens --model "$M" --ids "$IDS" --method "$m" --keep "$k" --layer "$l" \
        -o "$BATS_TEST_TMPDIR/e.astr" "$@" >"$BATS_TEST_TMPDIR/rep.json"
    local kf=1 kl=1 p=() a
    while [ $# -gt 0 ]; do
        case $1 in
        --keep-first) kf=$2; shift 2 ;;
        --keep-last) kl=$2; shift 2 ;;
        --param) p+=("$2"); shift 2 ;;
        --importance) p+=("importance=$2"); shift 2 ;;
        *) shift ;;
        esac
    done
    python3 "$ORACLE" check "$BIN" "$IDS" "$m" "$k" "$l" "$kf" "$kl" "$BATS_TEST_TMPDIR/e.astr" "${p[@]}"
}

@test "engine: every method before layer 0 and at layer 2 equals the float64 oracle (kept, prefill and decode logits)" {
    local m
    for m in random idpruner divprune dart scope samp atome fastadasp; do
        engine $m 0.3 0
    done
    for m in random idpruner idpruner-paper fastv divprune visionzip dart scope vispruner samp atome fastadasp; do
        engine $m 0.3 2
    done
    # the settings in force: IDPruner's language-model defaults, the published ones by name, overrides
    run jq -c '[.importance, .lambda, .mmr_norm]' "$BATS_TEST_TMPDIR/rep.json"
    [ "$output" = '["last",0.5,0]' ] # fastadasp: the table defaults
    local want=('["recv",0.875,1]' '["last",0.5,0]' '["recv",0.5,1]' '["tail",0.875,1]' '["recv",0.875,0]')
    local args=("idpruner" "idpruner-paper" "idpruner --param lambda=0.5" "idpruner --importance tail --keep-last 3" "idpruner --param mmr_norm=0")
    local i
    for i in 0 1 2 3 4; do
        engine ${args[$i]%% *} 0.3 2 $([ "${args[$i]}" = "${args[$i]#* }" ] || echo "${args[$i]#* }")
        run jq -c '[.importance, .lambda, .mmr_norm]' "$BATS_TEST_TMPDIR/rep.json"
        [ "$output" = "${want[$i]}" ]
    done
}

@test "engine: FastV at every cut, protected spans, keep 1 is the unpruned model" {
    local l
    for l in 1 3 5; do
        engine fastv 0.25 $l
    done
    engine fastv 0.1 2 --keep-first 4 --keep-last 6
    run jq -c '.kept[:4], .kept[-6:]' "$BATS_TEST_TMPDIR/rep.json"
    [ "${lines[0]}" = '[0,1,2,3]' ]
    [ "${lines[1]}" = '[42,43,44,45,46,47]' ]
    # keep 1: nothing pruned, the oracle is then the plain forward pass
    engine idpruner 1 2
    run jq -c '[.n, .m]' "$BATS_TEST_TMPDIR/rep.json"
    [ "$output" = '[48,48]' ]
}

@test "engine: every importance source (the score the strategies read) equals the oracle's" {
    # FastV keeps the top of the score itself; IDPruner's LM default (recv) is checked above
    local i k=()
    for i in last tail recv accum norm; do
        engine fastv 0.25 2 --importance $i --keep-last 6
        k+=("$(jq -c .kept "$BATS_TEST_TMPDIR/rep.json")")
    done
    engine idpruner 0.25 0 --importance norm
    # the sources rank differently (else the checks above would not tell them apart)
    run bash -c 'printf "%s\n" "$@" | sort -u | wc -l' _ "${k[@]}"
    [ "$output" = 5 ]
    run --separate-stderr as-prune tokens --model "$M" --ids "$IDS" --method fastv --keep 0.5 --importance nosuch -o "$BATS_TEST_TMPDIR/bad.astr"
    refused "as-prune: tokens: --importance nosuch: unknown (last, tail, recv, accum, norm)"
    [ ! -e "$BATS_TEST_TMPDIR/bad.astr" ]
}

@test "engine: theoretical FLOPs of the pruned prefill against an independent count" {
    engine fastv 0.25 2
    # stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, head_dim 8; N 48, M 2 + round(0.25 * 46) = 14
    run jq -r '"\(.n) \(.m) \(.flops_full) \(.flops_pruned)"' "$BATS_TEST_TMPDIR/rep.json"
    python3 - $output <<'EOF'
import sys
n, m, full, pruned = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
D, I, H, KV, hd, nl = 64, 172, 8, 4, 8, 5
def f(T, layers):
    lin = 2 * (D * H * hd * 2 + 2 * D * KV * hd + 3 * D * I)
    return layers * (T * lin + 2 * 2 * H * hd * T * (T + 1) / 2)
assert m == 14, m
assert abs(full - f(n, nl)) < 1e-6 * full, (full, f(n, nl))
assert abs(pruned - (f(n, 2) + f(m, nl - 2))) < 1e-6 * pruned, pruned
EOF
}

@test "engine --prompts: KLD, passkey hits, FLOP reduction and prefill times per prompt and in the summary" {
    local p=$BATS_TEST_TMPDIR/p.jsonl
    printf '%s\n' '{"context":"Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog.","question":" Lily liked to play in the","answer":"park"}' \
        '{"context":"Tom had a big red ball. He threw the ball to his friend Sam.","question":" Tom threw the ball to","answer":"Sam"}' >"$p"
    as-prune tokens --model "$M" --prompts "$p" --method fastv --keep 0.5 --layer 2 --gen 4 >"$BATS_TEST_TMPDIR/out.jsonl"
    # a --methods entry with its own settings equals the same run with them as options
    as-prune tokens --model "$M" --prompts "$p" --method fastv --keep 0.5 --gen 1 \
        --methods random,idpruner:lambda=0.8:importance=recv >"$BATS_TEST_TMPDIR/v.jsonl"
    as-prune tokens --model "$M" --prompts "$p" --method idpruner --keep 0.5 --gen 1 \
        --param lambda=0.8 --importance recv >"$BATS_TEST_TMPDIR/v1.jsonl"
    run jq -s -c 'map(select(.summary | not) | select(.method | startswith("idpruner")) | [.method, .kld])' "$BATS_TEST_TMPDIR/v.jsonl"
    local a=$output
    run jq -s -c 'map(select(.summary | not) | ["idpruner:lambda=0.8:importance=recv", .kld])' "$BATS_TEST_TMPDIR/v1.jsonl"
    [ "$a" = "$output" ]
    run jq -s -c 'map(select(.summary | not) | .kld) | unique | length' "$BATS_TEST_TMPDIR/v.jsonl"
    [ "$output" -gt 1 ]
    run jq -s -c 'length, (.[0] | [.n > .m, .kld >= 0, has("hit_pruned")]), (.[2] | [.summary, .prompts, .flops_reduction > 1, .token_ratio < 1, .prefill_speedup > 0])' "$BATS_TEST_TMPDIR/out.jsonl"
    [ "${lines[0]}" = 3 ]
    [ "${lines[1]}" = '[true,true,true]' ]
    [ "${lines[2]}" = '[true,2,true,true,true]' ]
    # keep 1 with the full model: KLD 0 and identical continuations
    as-prune tokens --model "$M" --prompts "$p" --method fastv --keep 1 --layer 2 --gen 4 >"$BATS_TEST_TMPDIR/k1.jsonl"
    run jq -s -c '.[:2] | map([.kld, .gen_full == .gen_pruned])' "$BATS_TEST_TMPDIR/k1.jsonl"
    [ "$output" = '[[0,true],[0,true]]' ]
}

@test "as-eval --prune-tokens: FLOP reduction from the shapes, keep 1 is the unpruned PPL, bad input" {
    local j=$BATS_TEST_TMPDIR/ev.json
    as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 64 --chunks 3 --prune-tokens fastv:0.25 --json >"$j"
    # 3 windows, prompt = first half (32 tokens, BOS and the last one protected): M = 2 + round(0.25 * 30) = 10
    run jq -r '.prune | "\(.prompt_tokens) \(.kept_tokens) \(.flops_full) \(.flops_pruned) \(.flops_reduction)"' "$j"
    python3 - $output <<'EOF'
import sys
n, m, full, pruned, red = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
D, I, H, KV, hd, nl = 64, 172, 8, 4, 8, 5
def f(T, layers):
    lin = 2 * (D * H * hd * 2 + 2 * D * KV * hd + 3 * D * I)
    return layers * (T * lin + 2 * 2 * H * hd * T * (T + 1) / 2)
assert (n, m) == (96, 30), (n, m)
F, P = 3 * f(32, nl), 3 * (f(32, 2) + f(10, nl - 2))
assert abs(full - F) < 1e-9 * F and abs(pruned - P) < 1e-9 * P, (full, F, pruned, P)
assert abs(red - F / P) < 1e-6 * red, (red, F / P)
EOF
    # 3 windows x 31 scored positions; pruning changes the predictions
    run jq -r '[.scored, (.prune | .kld_mean > 0.001, .ppl != null, .prefill_full_s > 0, .prefill_pruned_s > 0)] | @tsv' "$j"
    [ "$output" = "$(printf '93\ttrue\ttrue\ttrue\ttrue')" ]
    # keep 1: the second halves decoded after the (unpruned) prompt give the plain PPL
    as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 64 --chunks 3 --prune-tokens idpruner:1:2 --json >"$j"
    run jq -r '[(.prune.ppl / .ppl - 1 | fabs < 1e-5), .prune.kld_mean < 1e-9, .prune.same_top, .prune.kept_tokens] | @tsv' "$j"
    [ "$output" = "$(printf 'true\ttrue\t1\t96')" ]
    # the text report names both prefill costs
    run as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 64 --chunks 1 --prune-tokens fastv:0.5
    [[ "$output" == *"pruned cost  "*"x fewer prefill FLOPs, measured prefill speedup "* ]]
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 64 --score all --prune-tokens fastv:0.5
    refused "as-eval: --prune-tokens: needs -f TEXT and --score half (the pruned prompt is each window's first half), without --sparse-attn"
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 64 --prune-tokens fastv:1.5
    refused "as-eval: --prune-tokens fastv:1.5: keep 1.5 outside (0, 1]"
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 64 --prune-tokens fastv:0.5:0
    refused "as-eval: $M: window 0: prune: method fastv needs attention: choose a layer >= 1"
}

@test "engine bad input: prompt longer than the context, FastV before layer 0, layer out of range, keep-last 0" {
    local o=$BATS_TEST_TMPDIR/bad.astr long
    long=$(python3 -c 'print(",".join(["1"] * 513))')
    run --separate-stderr as-prune tokens --model "$M" --ids "$long" --method fastv --keep 0.5 -o "$o"
    refused "as-prune: tokens: 513 tokens, more than the model's context (512)"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens --model "$M" --ids "$IDS" --method fastv --keep 0.5 --layer 0 -o "$o"
    refused "as-prune: prune: method fastv needs attention: choose a layer >= 1"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens --model "$M" --ids "$IDS" --method fastv --keep 0.5 --layer 6 -o "$o"
    refused "as-prune: prune: layer 6 outside 0..5"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens --model "$M" --ids "$IDS" --method fastv --keep 0.5 --keep-last 0 -o "$o"
    refused "as-prune: tokens: --keep-last must be >= 1 (the last token predicts the next)"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens --model "$M" --ids "$IDS" --method fastv --keep 0 -o "$o"
    refused "as-prune: tokens: --keep 0 outside (0, 1]"
    [ ! -e "$o" ]
}

@test "as-gen --prune: keep 1 generates exactly the unpruned text; bad specs refused before any output" {
    local p="Once upon a time, there was a little girl named Lily. She liked to play in the park"
    as-gen -m "$M" -p "$p" -n 60 >"$BATS_TEST_TMPDIR/full.txt"
    as-gen -m "$M" -p "$p" -n 60 --prune fastv:1:2 >"$BATS_TEST_TMPDIR/k1.txt"
    cmp "$BATS_TEST_TMPDIR/full.txt" "$BATS_TEST_TMPDIR/k1.txt"
    as-gen -m "$M" -p "$p" -n 60 --prune idpruner:1:0:1 >"$BATS_TEST_TMPDIR/k1l0.txt"
    cmp "$BATS_TEST_TMPDIR/full.txt" "$BATS_TEST_TMPDIR/k1l0.txt"
    # pruned: the prompt is echoed, then a continuation of the kept tokens
    as-gen -m "$M" -p "$p" -n 60 --prune fastv:0.5:2:3 >"$BATS_TEST_TMPDIR/half.txt"
    run cat "$BATS_TEST_TMPDIR/half.txt"
    [[ "$output" == "$p"* ]]
    run --separate-stderr as-gen -m "$M" -p "$p" --prune fastv:2
    refused "as-gen: --prune fastv:2: keep 2 outside (0, 1]"
    run --separate-stderr as-gen -m "$M" -p "$p" --prune nosuch:0.5
    refused "as-gen: --prune nosuch:0.5: unknown method 'nosuch'"
    run --separate-stderr as-gen -m "$M" -p "$p" --prune fastv:0.5:2:0
    refused "as-gen: --prune fastv:0.5:2:0: KEEP_LAST must be >= 1"
}
