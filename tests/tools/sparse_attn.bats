#!/usr/bin/env bats
# Sparse prefill attention in the engine (as-eval / as-gen --sparse-attn) and as-prune search /
# analyze, on the bundled stories260K model.
#  - A-shape in blocks of 16 through as-eval equals an independent numpy forward with the A-shape
#    block mask (tests/oracles/sparse_forward.py, on forward_oracle.py's reader and tokenizer);
#    it differs from dense, so the mask is really applied.
#  - the dense method through the sparse path equals plain dense exactly.
#  - as-prune analyze: a dense config recalls all attention mass (1 per head), A-shape less; the
#    SVG has a dense and a mask panel per head; as-prune search writes a config as-eval takes.
#  - bad input: a config for another model, a budget larger than the sequence, a sequence
#    longer than the model's context, an unknown method: one-line errors, nothing written.

bats_require_minimum_version 1.5.0
load assert_refused

setup_file() {
    export MODEL_DIR="$BATS_FILE_TMPDIR/stories260K-hf"
    local d=${AS_DATA:-../shared/data}/models/stories260K
    as-import -t "$d/tok512.bin" "$d/stories260K.bin" "$MODEL_DIR"
}

setup() {
    D=${AS_DATA:-../shared/data}/models/stories260K
    TEXT=${AS_DATA:-../shared/data}/text/austen/emma.txt
}

ppl_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'; }

@test "as-eval --sparse-attn a_shape equals the numpy forward with the A-shape block mask" {
    want=$(python3 "$BATS_TEST_DIRNAME/../oracles/sparse_forward.py" ppl "$D/stories260K.bin" \
        "$D/tok512.bin" "$TEXT" 30000 256 2 16 16 48)
    run --separate-stderr as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 --chunks 2 \
        --sparse-attn a_shape:n_init=16,n_local=48,block=16 --json
    [ "$status" -eq 0 ]
    got=$(printf '%s' "$output" | ppl_of)
    dens=$(printf '%s' "$output" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sparse_density"])')
    dense=$(as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 --chunks 2 --json | ppl_of)
    echo "sparse $got oracle $want dense $dense density $dens"
    python3 -c "import sys; g, w = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(g - w) > 1e-5 * w)" "$got" "$want"
    python3 -c "import sys; g, d = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(g - d) < 1e-2 * d)" "$got" "$dense"
    python3 -c "import sys; sys.exit(not 0.3 < float(sys.argv[1]) < 0.8)" "$dens"
}

@test "the dense method through the sparse path equals plain dense" {
    a=$(as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 --chunks 1 --json | ppl_of)
    b=$(as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 --chunks 1 --sparse-attn dense --json | ppl_of)
    [ "$a" = "$b" ]
}

@test "as-prune analyze: dense recalls everything, A-shape less; SVG panels; search config runs" {
    run --separate-stderr as-prune analyze -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 \
        --sparse-attn dense:block=16 --row-step 4
    [ "$status" -eq 0 ]
    printf '%s' "$output" | python3 -c '
import json, sys
d = json.load(sys.stdin)
heads = [h for l in d["layers"] for h in l["heads"]]
assert len(heads) == 5 * 8, len(heads)
assert all(abs(h["recall"] - 1) < 1e-9 and h["density"] == 1 for h in heads), heads[:2]'
    run --separate-stderr as-prune analyze -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 \
        --sparse-attn a_shape:n_init=16,n_local=32,block=16 --svg "$BATS_TEST_TMPDIR/m.svg" --svg-layer 3
    [ "$status" -eq 0 ]
    printf '%s' "$output" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert 0.2 < d["mean_recall"] < 0.999 and d["mean_density"] < 0.6, (d["mean_recall"], d["mean_density"])'
    python3 -c '
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
rects = [e for e in r.iter() if e.tag.endswith("rect")]
nb = 16  # 256 / 16
# per head: the sampled dense rows (8 .. 15, causal) and the whole causal mask
want = 8 * (sum(q + 1 for q in range(8, 16)) + nb * (nb + 1) // 2)
assert len(rects) == want, (len(rects), want)
assert sum(e.get("fill") == "#1f5fbf" for e in rects) > 0' "$BATS_TEST_TMPDIR/m.svg"
    run --separate-stderr as-prune search -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 \
        --block 16 -o "$BATS_TEST_TMPDIR/cfg.json"
    [ "$status" -eq 0 ]
    [ -s "$BATS_TEST_TMPDIR/cfg.json" ]
    run --separate-stderr as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 --chunks 1 \
        --sparse-attn "$BATS_TEST_TMPDIR/cfg.json" --json
    [ "$status" -eq 0 ]
}

@test "bad input: another model's config, budget over the sequence, sequence over the context" {
    cfg=$BATS_TEST_TMPDIR/other.json
    printf '{"schema_version": 1, "model_fingerprint": {"model_type": "llama", "rope_theta": 10000, "heads": 9, "kv_heads": 3, "hidden": 576, "layers": 30}, "default": {"method": "xattention"}}' > "$cfg"
    run --separate-stderr as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 --sparse-attn "$cfg"
    refused "as-eval: $cfg: model fingerprint mismatch: heads 9, model has 8"
    run --separate-stderr as-prune analyze -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 \
        --sparse-attn "$cfg" --svg "$BATS_TEST_TMPDIR/x.svg"
    refused "as-prune: $cfg: model fingerprint mismatch: heads 9, model has 8"
    [ ! -e "$BATS_TEST_TMPDIR/x.svg" ]
    run --separate-stderr as-eval -m "$MODEL_DIR" -f "$TEXT" --bytes 30000 -c 256 \
        --sparse-attn vertical_and_slash:vertical=100,slash=300
    refused "as-eval: sparse attention: layer 0 head 0: vertical_and_slash slash 300 larger than the sequence (256)"
    prompt=$(head -c 2000 "$TEXT")
    run --separate-stderr as-gen -m "$MODEL_DIR" -p "$prompt" -n 2000 --sparse-attn xattention
    [[ "$stderr" =~ ^"as-gen: sparse attention: sequence of "[0-9]+" tokens exceeds the model's context (512)"$ ]]
    [ "$status" -ne 0 ]
    [ -z "$output" ]
    run --separate-stderr as-eval -m "$MODEL_DIR" -f "$TEXT" -c 256 --sparse-attn magic
    refused "as-eval: --sparse-attn 'magic': neither a JSON file nor a method (dense, a_shape, tri_shape, dilated, strided, vertical_and_slash, block_sparse, xattention, flexprefill, stem)"
}
