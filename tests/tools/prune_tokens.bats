#!/usr/bin/env bats
# as-prune tokens: every strategy of lib/common/prune_tokens.c against the independent numpy
# implementation in tests/oracles/prune_tokens.py (written from the reference formulas): exact kept
# indices, merge matrix and merged features to 1e-6, and the invariants (count, order, text tokens
# never dropped, merge rows summing to one); planted-redundancy inputs whose right answer is known;
# one-line errors for bad input.

load helpers
load assert_refused
set -o pipefail

ORACLE=$BATS_TEST_DIRNAME/../oracles/prune_tokens.py
METHODS="random idpruner idpruner-paper fastv divprune visionzip dart scope vispruner samp atome fastadasp"

setup_file() {
    local o=$BATS_TEST_DIRNAME/../oracles/prune_tokens.py
    # 70 tokens (6 of them text at the end), D 24, 3 heads of causal attention
    python3 "$o" gen "$BATS_FILE_TMPDIR/rand.st" 70 24 3 6 11
    python3 "$o" gen "$BATS_FILE_TMPDIR/dup.st" 40 64 2 3 4 dup
    python3 "$o" gen "$BATS_FILE_TMPDIR/sal.st" 40 16 2 3 5 salient
}

T() { echo "$BATS_FILE_TMPDIR/$1"; }

# prune IN METHOD KEEP [args]: as-prune tokens into $(T out.astr), then the oracle's check.
prune() {
    local in=$1 m=$2 k=$3
    shift 3
    as-prune tokens -i "$in" --method "$m" --keep "$k" -o "$(T out.astr)" "$@" >"$(T rep.json)"
    local p=()
    local a
    for a in "$@"; do [ "$a" = --param ] || p+=("${a}"); done
    python3 "$ORACLE" check "$in" "$m" "$k" "$(T out.astr)" "${p[@]}"
}

@test "every method at keep 1, 0.5, 0.25, 0.1 equals the numpy oracle (indices exact)" {
    local m k
    for m in $METHODS; do
        for k in 1 0.5 0.25 0.1; do
            prune "$(T rand.st)" $m $k
        done
    done
}

@test "parameters reach the strategies: non-default values equal the oracle" {
    prune "$(T rand.st)" idpruner 0.25 --param lambda=0.8 --param parallel_k=3
    prune "$(T rand.st)" idpruner 0.25 --param mmr_norm=1
    prune "$(T rand.st)" idpruner 0.5 --param mmr_norm=1 --param lambda=0.3 --param parallel_k=2
    prune "$(T rand.st)" idpruner 0.5 --param mmr_norm=2
    prune "$(T rand.st)" random 0.25 --param seed=7
    prune "$(T rand.st)" visionzip 0.25 --param zip_ratio=0.5
    prune "$(T rand.st)" dart 0.25 --param n_pivots=2
    prune "$(T rand.st)" scope 0.25 --param alpha=2
    prune "$(T rand.st)" samp 0.5 --param threshold=0.2
    prune "$(T rand.st)" fastadasp 0.25 --param weighted=1
    prune "$(T dup.st)" samp 0.5 --param threshold=0.5
}

@test "the report: method, budget, kept indices equal to the stream's" {
    prune "$(T rand.st)" idpruner 0.25
    run jq -c '[.method, .kind, .n, .prunable, .k, .m]' "$(T rep.json)"
    [ "$output" = '["idpruner","select",70,64,16,22]' ]
    jq -c .kept "$(T rep.json)" >"$(T a)"
    python3 -c 'import sys, json; sys.path.insert(0, sys.argv[1]); import prune_tokens as p; print(json.dumps(p.read_stream(sys.argv[2])["kept"].tolist(), separators=(",", ":")))' \
        "$BATS_TEST_DIRNAME/../oracles" "$(T out.astr)" >"$(T b)"
    cmp "$(T a)" "$(T b)"
    # the text tokens (64..69) are all there
    run jq -c '.kept[-6:]' "$(T rep.json)"
    [ "$output" = '[64,65,66,67,68,69]' ]
}

@test "planted duplicates: diversity methods keep one copy, merging methods merge the copies" {
    # tokens 1..4 copy token 0 and 6..9 copy token 5 (D 64: the other tokens are near-orthogonal)
    local m
    # (DART is not among them: it adds the tokens least similar to each pivot, copies included)
    for m in divprune idpruner; do
        prune "$(T dup.st)" $m 0.5
        run jq '[.kept[] | select(. <= 9)] | length' "$(T rep.json)"
        [ "$output" -le 2 ]
    done
    # merging: the first output row merges exactly tokens 0..4, the second exactly 5..9 (Samp
    # weights them by attention received, FastAdaSP uniformly)
    for m in samp fastadasp; do
        prune "$(T dup.st)" $m 0.75
        python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import prune_tokens as p
w = p.read_stream(sys.argv[2])["merge"]
assert (w[0, :5] > 0).all() and w[0, 5:].max() == 0, w[0, :12]
assert (w[1, 5:10] > 0).all() and w[1, :5].max() == 0 and w[1, 10:].max() == 0, w[1, :12]' "$BATS_TEST_DIRNAME/../oracles" "$(T out.astr)"
    done
}

@test "planted needle: IDPruner with the redundancy normalised keeps it among near-copies, the raw cosine drops it" {
    # 4 filler types x 5 near-copies (cosine within a type ~0.999, across types 0.81), scores
    # 0.3..1; token 20 unique (cosine 0.81 to every type) with the lowest score. K = 5: at
    # lambda 0.5 the raw max cosine (0.999 vs 0.81) cannot outweigh importance gaps above 0.19, so
    # copies win; normalised to [0, 1] over the candidates, one copy per type and the needle.
    python3 -c 'import sys, numpy as np; from safetensors.numpy import save_file
rng = np.random.default_rng(3)
x = np.zeros((21, 8)); sc = np.zeros(21)
for i in range(20):
    x[i, 0], x[i, 1 + i // 5] = 0.9, 0.4359
    x[i] += rng.normal(0, 0.01, 8); sc[i] = 0.3 + 0.7 * rng.random()
x[20, 0], x[20, 7] = 0.9, 0.4359
save_file({"features": x.astype(np.float32), "scores": sc.astype(np.float32)}, sys.argv[1])' "$(T needle.st)"
    prune "$(T needle.st)" idpruner 0.25 --param mmr_norm=1
    run jq -c '[.kept[] | if . == 20 then "n" else (. / 5 | floor) end] | sort_by(tostring)' "$(T rep.json)"
    [ "$output" = '[0,1,2,3,"n"]' ]
    prune "$(T needle.st)" idpruner 0.25
    run jq '.kept | index(20)' "$(T rep.json)"
    [ "$output" = null ]
}

@test "a planted salient token is kept at keep 0.1 by every importance-driven method" {
    local m
    for m in idpruner fastv visionzip vispruner scope; do
        prune "$(T sal.st)" $m 0.1
        run jq '.kept | index(3)' "$(T rep.json)"
        [ "$output" != null ]
    done
    # and random at the same budget does not have to (seed 0 drops it): the check bites
    prune "$(T sal.st)" random 0.1
    run jq '.kept | index(3)' "$(T rep.json)"
    [ "$output" = null ]
}

@test "bad input: keep outside (0, 1], NaN features, attention of the wrong shape, too many tokens" {
    local o=$(T bad.astr)
    run --separate-stderr as-prune tokens -i "$(T rand.st)" --method idpruner --keep 0 -o "$o"
    refused "as-prune: tokens: --keep 0 outside (0, 1]"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens -i "$(T rand.st)" --method idpruner --keep 1.5 -o "$o"
    refused "as-prune: tokens: --keep 1.5 outside (0, 1]"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens -i "$(T rand.st)" --method idpruner --keep 0.5 --max-tokens 64 -o "$o"
    refused "as-prune: $(T rand.st): 70 tokens, more than --max-tokens 64"
    [ ! -e "$o" ]
    python3 -c 'import sys; from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1]); t["features"][5, 2] = float("nan"); save_file(t, sys.argv[2])
t = load_file(sys.argv[1]); t["attention"] = t["attention"][:, :69, :]; save_file(t, sys.argv[3])
t = load_file(sys.argv[1]); del t["attention"]; del t["scores"]; save_file(t, sys.argv[4])' \
        "$(T rand.st)" "$(T nan.st)" "$(T shape.st)" "$(T noattn.st)"
    run --separate-stderr as-prune tokens -i "$(T nan.st)" --method divprune --keep 0.5 -o "$o"
    refused "as-prune: $(T nan.st): features: element 122 is not finite (nan)"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens -i "$(T shape.st)" --method fastv --keep 0.5 -o "$o"
    refused "as-prune: $(T shape.st): attention [3, 69, 70] does not match features [70, 24]: expected [H, 70, 70]"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens -i "$(T noattn.st)" --method fastv --keep 0.5 -o "$o"
    refused "as-prune: $(T noattn.st): method fastv needs attention or scores"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens -i "$(T rand.st)" --method idpruner --keep 0.5 --param mmr_norm=3 -o "$o"
    refused "as-prune: $(T rand.st): method idpruner: bad parameters (parallel_k >= 1, n_pivots >= 0, zip_ratio in [0, 1], mmr_norm 0, 1 or 2)"
    [ ! -e "$o" ]
    run --separate-stderr as-prune tokens -i "$(T rand.st)" --method nosuch --keep 0.5 -o "$o"
    refused "as-prune: tokens: unknown method 'nosuch' (as-prune tokens --help lists them)"
    [ ! -e "$o" ]
}
