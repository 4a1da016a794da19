#!/usr/bin/env bats
# A tour of every as-* program and its main options on tiny inputs, plus their error paths: the
# tool tests CI runs under valgrind memcheck (`make check` runs `tests/run` with VALGRIND=1 on
# the unit tests and on this file, the stream, hostile-stream, engine and tokenizer tests; any
# memory error or definite/indirect leak of any process is a failure). Run natively it is a fast
# smoke test: every command must succeed and produce a loadable result.

load helpers
load stream_check

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

# fails_cleanly TOOL MESSAGE: after `run --separate-stderr`: exit status 1, exactly the one
# stderr line "TOOL: MESSAGE", and no complete stream on stdout (saved to $T/stdout).
fails_cleanly() {
    if [ "$status" -ne 1 ]; then
        echo "expected status 1, got $status; stderr: $stderr" >&2
        return 1
    fi
    if [ "${#stderr_lines[@]}" -ne 1 ] || [ "$stderr" != "$1: $2" ]; then
        echo "stderr: $stderr" >&2
        echo "wanted: $1: $2" >&2
        return 1
    fi
}

@test "memcheck: error paths release everything (bad files, truncated streams, bad options)" {
    T=$BATS_TEST_TMPDIR
    head -c 5000 "$W/calib.astr" > "$T/cut.astr"
    local cut="record 2 (model.layers.0.attn_qkv.hessian): truncated in payload (got 4232 of 16384 bytes)"
    run --separate-stderr bash -c "as-gptq -b 4 -g 32 < '$T/cut.astr' > '$T/o.astr'"
    fails_cleanly as-gptq "stream stdin: $cut"
    [ ! -s "$T/o.astr" ] # it fails before its first output record
    run --separate-stderr as-pack -m "$M" -f gptq -o "$T/none" < "$T/cut.astr"
    fails_cleanly as-pack "stream stdin: $cut"
    [ -z "$output" ]
    no_leftovers "$T" none
    run --separate-stderr as-ls "$T/cut.astr"
    fails_cleanly as-ls "stream $T/cut.astr: $cut"
    run --separate-stderr as-eval -m "$T/nowhere" -f "$WIKI"
    fails_cleanly as-eval "file $T/nowhere/config.json: cannot parse JSON: unable to open $T/nowhere/config.json: No such file or directory (line -1)"
    [ -z "$output" ]
    run --separate-stderr bash -c "as-lepto -m '$M' -s fp8-static < '$T/cut.astr' > '$T/o.astr'"
    fails_cleanly as-lepto "stream stdin: $cut"
    [ ! -s "$T/o.astr" ]
    run --separate-stderr bash -c "as-awq -m '$M' -b 4 -g 32 < '$T/cut.astr' > '$T/o.astr'"
    fails_cleanly as-awq "stream stdin: $cut"
    no_stream "$T/o.astr" # (it passes the records before the cut on)
    run --separate-stderr bash -c "as-calib -m '$M' -d '$T/nowhere' -n 2 -l 32 > '$T/o.astr'"
    fails_cleanly as-calib "$T/nowhere: No such file or directory"
    [ ! -s "$T/o.astr" ]
    run --separate-stderr bash -c "as-gptq -b 9 < '$W/calib.astr' > '$T/o.astr'"
    fails_cleanly as-gptq "--bits 9: expected 2..8"
    [ ! -s "$T/o.astr" ]
    run --separate-stderr as-import -t "$L2C/tok512.bin" "$T/cut.astr" "$T/imp"
    # the header's seventh int32 is the first record's header checksum, which depends on the
    # calibration's floating-point sums (OpenBLAS picks its kernels per CPU): read it from the file
    local seq_len
    seq_len=$(od -An -t d4 -j 24 -N 4 "$T/cut.astr" | tr -d ' ')
    fails_cleanly as-import "file $T/cut.astr: not a llama2.c checkpoint (header dim=1381258049 hidden=65537 layers=224 heads=56 kv_heads=8 vocab=0 seq_len=$seq_len)"
    [ -z "$output" ]
    no_leftovers "$T" imp
}

@test "memcheck: as-qat (seq2 + KD, state, resume, codes, fakequant output) and its error path" {
    head -c 20000 "$AUSTEN/emma.txt" >"$W/qat.txt"
    as-qat -m "$M" -t "$M" -d "$W/qat.txt" --steps 2 --seq 16 --batch 1 --state "$W/qat.state" --stop-after 1
    as-qat -m "$M" -t "$M" -d "$W/qat.txt" --steps 2 --seq 16 --batch 1 --state "$W/qat.state" --resume \
        --scheme seq2 --codes "$W/qat.astr" --log "$W/qat.jsonl" --svg "$W/qat.svg" -o "$W/qat"
    ev "$W/qat"
    as-qat -m "$M" -d "$W/qat.txt" --steps 1 --seq 16 --batch 1 --scheme tequila --group 32 --codes "$W/qat-t.astr"
    as-ls "$W/qat-t.astr" | jq -s -e 'length > 0' >/dev/null
    run as-qat -m "$M" -d "$W/qat.txt" --steps 2 --seq 16 --lr 2e-3 --state "$W/qat.state" --resume
    [ "$status" -eq 1 ]
}
