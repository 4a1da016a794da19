#!/usr/bin/env bats
# as-pack's sharded output (Hugging Face layout): with a tiny --max-shard-size the bundled model
# splits into model-0000i-of-0000n.safetensors + model.safetensors.index.json. Checked
# independently of our reader: each shard's header (jq), the greedy size rule, the index listing
# every tensor exactly once with metadata.total_size the sum of the data; the Python safetensors
# package + the index reproduce the single-file output's tensors; as-eval gives the identical PPL.
# Shards written past the in-memory buffer (AS_PACK_SHARD_BUFFER=0: header space reserved, padded
# with spaces) hold the same tensors. Bad sizes and failures midway leave no output.

load helpers

setup_file() {
    import_model
    export Q=$BATS_FILE_TMPDIR/rtn.astr
    as-cat "$M" | as-gptq --method rtn -b 4 -g 32 >"$Q"
    as-pack -m "$M" -f gptq -o "$BATS_FILE_TMPDIR/one" <"$Q" 2>/dev/null
}

setup() { T=$BATS_TEST_TMPDIR; }

# shard_names DIR: the tensors of every shard of DIR, one "file<TAB>tensor" per line, from the
# headers themselves (not through our reader).
shard_names() {
    local f
    for f in "$1"/model-*-of-*.safetensors; do
        st_header "$f" | jq -r --arg f "$(basename "$f")" 'keys[] | select(. != "__metadata__") | [$f, .] | @tsv'
    done
}

# python_same A B: the Python safetensors package reads both checkpoints (B through its index)
# into the same tensors. The packages are installed by `make deps`: missing, the test fails.
python_same() {
    python3 - "$1" "$2" <<'EOF'
import json, os, sys
import numpy as np
from safetensors.numpy import load_file

def load(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return load_file(os.path.join(d, "model.safetensors"))
    wm = json.load(open(idx))["weight_map"]
    out = {}
    for f in sorted(set(wm.values())):
        for k, v in load_file(os.path.join(d, f)).items():
            assert wm.get(k) == f, f"{k}: in {f}, index says {wm.get(k)}"
            assert k not in out, f"{k} twice"
            out[k] = v
    assert set(out) == set(wm), "index and shards list different tensors"
    return out

a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    assert np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)), k
print(len(a))
EOF
}

@test "default: one model.safetensors, no index; a large --max-shard-size writes the same bytes" {
    local one=$BATS_FILE_TMPDIR/one
    [ -f "$one/model.safetensors" ]
    [ ! -e "$one/model.safetensors.index.json" ]
    as-pack -m "$M" -f gptq -o "$T/big" --max-shard-size 2GiB <"$Q" 2>/dev/null
    cmp "$one/model.safetensors" "$T/big/model.safetensors"
    [ -z "$(ls "$one" | grep -E 'part|tmp')" ]
}

@test "--max-shard-size 100kB: HF shards + index, every tensor once, greedy size rule" {
    run --separate-stderr as-pack -m "$M" -f gptq -o "$T/s" --max-shard-size 100kB --json <"$Q"
    [ "$status" -eq 0 ]
    local n
    n=$(jq .shards <<<"$output")
    [ "$n" -gt 2 ]
    [ "$(ls "$T/s"/model-*-of-*.safetensors | wc -l)" -eq "$n" ]
    [ -e "$T/s/model-00001-of-$(printf %05d "$n").safetensors" ]
    [ ! -e "$T/s/model.safetensors" ]
    # the index lists exactly the shards' tensors, each once, where they are
    diff <(shard_names "$T/s" | sort) \
        <(jq -r '.weight_map | to_entries[] | [.value, .key] | @tsv' "$T/s/model.safetensors.index.json" | sort)
    [ -z "$(shard_names "$T/s" | cut -f2 | sort | uniq -d)" ]
    # the same tensor names as the single file
    diff <(shard_names "$T/s" | cut -f2 | sort) \
        <(st_header "$BATS_FILE_TMPDIR/one/model.safetensors" | jq -r 'keys[] | select(. != "__metadata__")' | sort)
    # total_size = the data bytes of all shards
    local total=0 f sizes
    for f in "$T/s"/model-*-of-*.safetensors; do
        total=$((total + $(st_header "$f" | jq '[.[] | .data_offsets?[1] // 0] | max')))
    done
    [ "$(jq .metadata.total_size "$T/s/model.safetensors.index.json")" -eq "$total" ]
    [ "$(jq .bytes <<<"$output")" -eq "$total" ]
    # greedy: a shard holds <= 100000 data bytes (or one larger tensor), and the next shard's
    # first tensor would not have fitted
    sizes=()
    for f in "$T/s"/model-*-of-*.safetensors; do
        local h
        h=$(st_header "$f")
        local used first count
        used=$(jq '[.[] | .data_offsets?[1] // 0] | max' <<<"$h")
        count=$(jq '[.[] | select(.data_offsets?)] | length' <<<"$h")
        first=$(jq '[.[] | select(.data_offsets?) | select(.data_offsets[0] == 0) | .data_offsets[1]] | .[0]' <<<"$h")
        if [ "$used" -gt 100000 ]; then
            [ "$count" -eq 1 ]
        fi
        sizes+=("$used:$first")
    done
    local i
    for ((i = 1; i < ${#sizes[@]}; i++)); do
        [ $((${sizes[i - 1]%%:*} + ${sizes[i]##*:})) -gt 100000 ]
    done
}

@test "sharded output: python safetensors + index reproduce the single file; as-eval identical PPL" {
    as-pack -m "$M" -f gptq -o "$T/s" --max-shard-size 100kB <"$Q" 2>/dev/null
    run python_same "$BATS_FILE_TMPDIR/one" "$T/s"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    local a b
    a=$(eval_json "$BATS_FILE_TMPDIR/one" - 20000 | jq .ppl)
    b=$(eval_json "$T/s" - 20000 | jq .ppl)
    [ -n "$a" ]
    [ "$a" = "$b" ]
}

@test "shards written past the buffer (reserved, space-padded headers): same tensors, all formats" {
    local f
    for f in gptq compressed-tensors fakequant; do
        as-pack -m "$M" -f "$f" -o "$T/$f.1" <"$Q" 2>/dev/null
        AS_PACK_SHARD_BUFFER=0 as-pack -m "$M" -f "$f" -o "$T/$f.s" --max-shard-size 150kB <"$Q" 2>/dev/null
        # the header is padded with spaces up to the data
        local first
        first=$(ls "$T/$f.s"/model-00001-of-*.safetensors)
        [ "$(st_header "$first" | tail -c 1)" = " " ]
        run python_same "$T/$f.1" "$T/$f.s"
        [ "$status" -eq 0 ] || { echo "$output"; false; }
    done
    # our loaders follow the index: the same PPL
    [ "$(eval_json "$T/fakequant.1" - 20000 | jq .ppl)" = "$(eval_json "$T/fakequant.s" - 20000 | jq .ppl)" ]
}

@test "as-pack --max-shard-size: bad sizes, and a failure midway, leave no output" {
    local s
    for s in 0 abc 5XB -1GB; do
        run --separate-stderr as-pack -m "$M" -f gptq -o "$T/out" --max-shard-size "$s" <"$Q"
        [ "$status" -eq 1 ]
        assert_error "as-pack: --max-shard-size: size '$s': expected e.g. 5GB, 2GiB, 500MB or a byte count"
        [ -z "$output" ]
        no_leftovers "$T" out
    done
    head -c 200000 "$Q" >"$T/cut.astr"
    run --separate-stderr bash -c "AS_PACK_SHARD_BUFFER=0 as-pack -m '$M' -f gptq -o '$T/out' --max-shard-size 20kB <'$T/cut.astr'"
    [ "$status" -eq 1 ]
    assert_error "as-pack: stream stdin: " "truncated"
    [ -z "$output" ]
    no_leftovers "$T" out
}
