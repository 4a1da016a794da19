#!/usr/bin/env bats
# A tour of every as-* program and its main options on tiny inputs, plus their error paths: the
# tool tests CI runs under valgrind memcheck (`make check` runs `tests/run` with VALGRIND=1 on
# the unit tests and on this file, the stream, hostile-stream, engine and tokenizer tests; any
# memory error or definite/indirect leak of any process is a failure). Run natively it is a fast
# smoke test: every command must succeed and produce a loadable result.

load helpers

setup_file() {
    import_model
    export W=$BATS_FILE_TMPDIR
    as-calib -m "$M" -d "$AUSTEN" -n 2 -l 32 --kv-stats > "$W/calib.astr" 2>/dev/null
}

ev() { # ev MODEL: a short evaluation that must give a finite perplexity
    local j
    j=$(as-eval -m "$1" -b "$M" -f "$WIKI" --bytes 600 --ctx 32 --json "${@:2}")
    jq -e '.ppl > 1 and .ppl < 1e6' <<<"$j" >/dev/null
}

@test "memcheck: as-import, as-ls, as-cat (filters, split, inline, arena), as-gen" {
    as-ls "$M" | jq -e 'select(.name == "model.norm.weight")' >/dev/null
    as-ls --summary "$W/calib.astr" >/dev/null
    as-cat "$M" --layer 1 -x mlp | as-ls | jq -s -e 'length > 0' >/dev/null
    as-cat --split-layers "$W/split" "$W/calib.astr"
    [ -f "$W/split/layer.0.astr" ]
    as-cat --inline "$W/split/layer.1.astr" | as-cat --ref "$W" -V | as-ls >/dev/null
    [ -n "$(as-gen -m "$M" -p "Once upon a time" -n 12)" ]
    as-gen -m "$M" -p "Lily" --temp 0.8 --seed 3 -n 8 >/dev/null
}

@test "memcheck: as-gptq (gptq, act-order, rtn, float-min) and every as-pack format, evaluated" {
    as-gptq -b 4 -g 32 < "$W/calib.astr" > "$W/g.astr"
    as-gptq -b 4 -g 32 --act-order --static-groups --scale-search --signed-scale \
        < "$W/calib.astr" > "$W/ga.astr"
    as-gptq -b 4 -g 32 --asym --float-min < "$W/calib.astr" > "$W/gf.astr"
    as-cat "$M" | as-gptq -m rtn -b 8 -g 32 > "$W/r8.astr"
    for f in gptq compressed-tensors fakequant; do
        as-pack -m "$M" -f $f -o "$W/ck-$f" < "$W/g.astr" 2>/dev/null
    done
    ev "$W/ck-gptq"
    as-pack -m "$M" -f gptq -o "$W/ck-act" < "$W/ga.astr" 2>/dev/null
    as-pack -m "$M" -f compressed-tensors -o "$W/ck-sh" --max-shard-size 100kB < "$W/g.astr" 2>/dev/null
    ev "$W/ck-sh"
    as-pack -m "$M" -f gguf -o "$W/q40.gguf" < "$W/ga.astr" 2>/dev/null
    as-pack -m "$M" -f gguf -o "$W/q41.gguf" < "$W/gf.astr" 2>/dev/null
    as-pack -m "$M" -f gguf -o "$W/q80.gguf" < "$W/r8.astr" 2>/dev/null
    ev "$W/q41.gguf"
}

@test "memcheck: as-calib --keep-seqs, as-awq, as-pack -f awq; sequential GPTAQ" {
    as-calib -m "$M" -d "$AUSTEN" -n 2 -l 32 --keep-seqs 1 > "$W/cs.astr" 2>/dev/null
    as-awq -m "$M" -b 4 -g 32 -e quantized --grid 2 < "$W/cs.astr" > "$W/awq.astr" 2>/dev/null
    as-pack -m "$M" -f awq -o "$W/ck-awq" < "$W/awq.astr" 2>/dev/null
    ev "$W/ck-awq"
    as-calib -m "$M" -d "$AUSTEN" -n 2 -l 32 --gptaq \
        --sequential "as-gptq -b 4 -g 32 -m gptaq" > "$W/gptaq.astr" 2>/dev/null
    as-pack -m "$M" -f fakequant -o "$W/ck-gptaq" < "$W/gptaq.astr" 2>/dev/null
    ev "$W/ck-gptaq"
}

@test "memcheck: as-lepto schemes, LeptoQuant, KV-cache scales, analysis, activation simulation" {
    as-calib -m "$M" -d "$AUSTEN" -n 2 -l 32 --kv-stats --keep-seqs 1 > "$W/cl.astr" 2>/dev/null
    as-lepto -m "$M" -s fp8-static --method lepto --kv-cache fp8 < "$W/cl.astr" > "$W/l.astr" 2>/dev/null
    as-pack -m "$M" -f ct-fp -o "$W/ck-fp8" < "$W/l.astr" 2>/dev/null
    ev "$W/ck-fp8"
    for s in nvfp4 mxfp4 int8-dynamic; do
        as-lepto -m "$M" -s $s < "$W/calib.astr" > "$W/$s.astr" 2>/dev/null
        as-pack -m "$M" -f ct-fp -o "$W/ck-$s" < "$W/$s.astr" 2>/dev/null
    done
    ev "$W/ck-nvfp4" --act-quant mxfp4
    as-lepto -m "$M" --analyze --svg "$W/h.svg" --tensor model.layers.0.mlp.up_proj.weight \
        < "$W/calib.astr" > "$W/analysis.json" 2>/dev/null
    [ -s "$W/h.svg" ]
}

@test "memcheck: error paths release everything (bad files, truncated streams, bad options)" {
    head -c 5000 "$W/calib.astr" > "$W/cut.astr"
    run as-gptq -b 4 -g 32 < "$W/cut.astr"
    [ "$status" -ne 0 ]
    run as-pack -m "$M" -f gptq -o "$W/none" < "$W/cut.astr"
    [ "$status" -ne 0 ] && [ ! -e "$W/none" ]
    run as-ls "$W/cut.astr"
    [ "$status" -ne 0 ]
    run as-eval -m "$W/nowhere" -f "$WIKI"
    [ "$status" -ne 0 ]
    run as-lepto -m "$M" -s fp8-static < "$W/cut.astr"
    [ "$status" -ne 0 ]
    run as-awq -m "$M" -b 4 -g 32 < "$W/cut.astr"
    [ "$status" -ne 0 ]
    run as-calib -m "$M" -d "$W/nowhere" -n 2 -l 32
    [ "$status" -ne 0 ]
    run as-gptq -b 9 < "$W/calib.astr"
    [ "$status" -ne 0 ]
    run as-import -t "$L2C/tok512.bin" "$W/cut.astr" "$W/imp"
    [ "$status" -ne 0 ] && [ ! -e "$W/imp" ]
}
