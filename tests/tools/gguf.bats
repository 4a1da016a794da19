#!/usr/bin/env bats
# as-pack -f gguf and as-eval on GGUF files, with the bundled model and round-to-nearest layers:
#  - the GGUF and compressed-tensors (fp16 scales) outputs of one quantization evaluate to the
#    same perplexity and KLD, digit for digit (Q4_0, Q8_0); Q4_1 differs only by fp16(m);
#  - an independent reader (tests/tools/gguf_reader.py, from the spec) checks every key and
#    tensor info and the dequantized weights; llama.cpp's gguf package agrees (skips if absent);
#  - q/k rows are llama2.c's (Meta's interleaved) rows, as llama.cpp's converter makes them;
#  - corrupted files are refused with one line naming the file;
#  - as-gptq --float-min layers (w = d*q + m, m free) become Q4_1 blocks that the independent
#    reader dequantizes to the fakequant weights of the same stream, bit for bit; formats with an
#    integer zero point (gptq, compressed-tensors, awq) refuse those layers with a reason and keep
#    them as dequantized weights.

setup_file() {
    export W="$BATS_FILE_TMPDIR"
    local d=${AS_DATA:-../shared/data}/models/stories260K
    export L2C="$d/stories260K.bin"
    export WIKI=${AS_DATA:-../shared/data}/text/wikitext-2-raw/wiki.test.raw
    export READER="$BATS_TEST_DIRNAME/gguf_reader.py"
    as-import -t "$d/tok512.bin" "$L2C" "$W/base"
    as-cat "$W/base" > "$W/in.stream"
    as-gptq -m rtn -b 4 -g 32 --sym < "$W/in.stream" > "$W/s4.stream"
    as-gptq -m rtn -b 4 -g 32 --asym < "$W/in.stream" > "$W/a4.stream"
    as-gptq -m rtn -b 8 -g 32 --sym < "$W/in.stream" > "$W/s8.stream"
    for q in s4 a4 s8; do
        as-pack -m "$W/base" -f gguf -o "$W/$q.gguf" < "$W/$q.stream" 2> "$W/$q.log"
        as-pack -m "$W/base" -f compressed-tensors --scale-dtype f16 -o "$W/$q.ct" < "$W/$q.stream" 2>/dev/null
        as-pack -m "$W/base" -f fakequant -o "$W/$q.fq" < "$W/$q.stream" 2>/dev/null
    done
    export HAVE_PY=0
    python3 -c 'import numpy, safetensors' 2>/dev/null && HAVE_PY=1 || true
}

need_py() { [ "$HAVE_PY" = 1 ] || skip "python3 with numpy and safetensors not available"; }

evaljson() { # MODEL -> compact "tokens ppl kld" of the 20 KB protocol against the base
    as-eval -m "$1" -b "$W/base" -f "$WIKI" --bytes 20000 --ctx 256 --json |
        jq -r '"\(.tokens) \(.ppl) \(.kld.mean) \(.same_top)"'
}

@test "gguf: Q4_0 and Q8_0 files evaluate exactly like compressed-tensors with fp16 scales" {
    for q in s4 s8; do
        g=$(evaljson "$W/$q.gguf")
        c=$(evaljson "$W/$q.ct")
        echo "$q gguf: $g / ct: $c"
        [ "$g" = "$c" ]
        # the GGUF-only tokenizer gives the README's 12,349 tokens
        [ "${g%% *}" = 12349 ]
    done
    grep -q "30 as blocks, 5 as floats, verified" "$W/s4.log"
    grep -q "tensor model.layers.0.mlp.down_proj.weight: K = 172 is not a multiple of 32" "$W/s4.log"
}

@test "gguf: Q4_1 differs from compressed-tensors only by the fp16 rounding of m" {
    g=$(evaljson "$W/a4.gguf")
    c=$(evaljson "$W/a4.ct")
    echo "gguf: $g / ct: $c"
    awk -v a="$g" -v b="$c" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = x[2] - y[2]; if (d < 0) d = -d; exit !(x[1] == y[1] && d / y[2] < 1e-3) }'
    # general.file_type is MOSTLY_Q4_1
    [ "$(as-pack -m "$W/base" -f gguf -o "$W/a4b.gguf" --json < "$W/a4.stream" 2>/dev/null | jq .file_type)" = 3 ]
}

@test "gguf: the independent reader accepts every key, tensor info and weight" {
    need_py
    for q in s4 a4 s8; do
        run python3 "$READER" check "$W/$q.gguf" "$W/base" "$W/$q.ct" "$W/$q.fq"
        echo "$q: $output"
        [ "$status" -eq 0 ]
    done
    [[ "$output" == *'"Q8_0": 30'* ]]
}

@test "gguf: q/k rows are llama2.c's interleaved rows (llama.cpp's converter permutation)" {
    need_py
    run python3 "$READER" llama2c "$W/s8.gguf" "$L2C"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "gguf: llama.cpp's gguf package reads the same keys, tensors and values" {
    need_py
    python3 -c 'import gguf' 2>/dev/null || skip "python package gguf not installed"
    for q in s4 a4 s8; do
        run python3 "$READER" pkg "$W/$q.gguf"
        echo "$output"
        [ "$status" -eq 0 ]
    done
}

@test "gguf: corrupted files are refused by the reader and by as-eval, one line each" {
    need_py
    python3 "$READER" corrupt "$W/s4.gguf" "$W/bad"
    for f in truncated badmagic badalign misplaced; do
        run python3 "$READER" parse "$W/bad/$f.gguf"
        [ "$status" -eq 1 ]
        run as-eval -m "$W/bad/$f.gguf" -f "$WIKI" --bytes 2000 --ctx 64
        echo "$f: $output"
        [ "$status" -eq 1 ]
        [ "${#lines[@]}" -eq 1 ]
        [[ "$output" == "as-eval: file $W/bad/$f.gguf: "* ]]
    done
    run as-eval -m "$W/bad/badmagic.gguf" -f "$WIKI"
    [[ "$output" == *"bad magic"* ]]
    run as-eval -m "$W/bad/badalign.gguf" -f "$WIKI"
    [[ "$output" == *"general.alignment"* ]]
    run as-eval -m "$W/bad/truncated.gguf" -f "$WIKI"
    [[ "$output" == *"truncated"* ]]
}

@test "gguf: as-pack options and errors" {
    run as-pack -m "$W/base" -f gguf -o "$W/x.gguf" --gguf-float f8 < "$W/s4.stream"
    [ "$status" -eq 1 ]
    [[ "$output" == *"--gguf-float 'f8'"* ]]
    run as-pack -m "$W/base" -f gguf -o "$W/nodir/x.gguf" < "$W/s4.stream"
    [ "$status" -eq 1 ]
    [[ "${lines[-1]}" == *"nodir/x.gguf"* ]]
    [ ! -e "$W/nodir" ]
    # F16 floats, Q4_1 for symmetric layers, original down projections
    as-pack -m "$W/base" -f gguf -o "$W/o.gguf" --gguf-float f16 --gguf-q4-1 \
        --gguf-fallback original < "$W/s4.stream" 2> "$W/o.log"
    grep -q "written as F16 (the checkpoint's unquantized weights)" "$W/o.log"
    run as-pack -m "$W/base" -f gguf -o "$W/o.gguf" --gguf-float f16 --json < "$W/s4.stream"
    [ "$(echo "${lines[-1]}" | jq -r '.file_type, .packed, .fallback' | tr '\n' ' ')" = "2 30 5 " ]
    # smaller than the F32 file: embeddings and fallbacks at half size
    [ "$(stat -c %s "$W/o.gguf")" -lt "$(stat -c %s "$W/s4.gguf")" ]
    # no temporaries left behind
    run bash -c "ls '$W'/*.verify.* 2>/dev/null"
    [ -z "$output" ]
}

@test "gguf: AWQ layers keep W_hat under --gguf-fallback original, norms come from the stream" {
    as-calib -m "$W/base" -d "${AS_DATA:-../shared/data}/text/austen" -n 8 -l 128 --keep-seqs 8 2>/dev/null |
        as-awq -m "$W/base" -b 4 -g 32 --asym -e quantized --no-clip > "$W/awq.stream" 2>/dev/null
    as-pack -m "$W/base" -f gguf -o "$W/awq.gguf" --gguf-fallback original < "$W/awq.stream" 2> "$W/awq.log"
    grep -q "AWQ rescaled this layer" "$W/awq.log"
    as-pack -m "$W/base" -f compressed-tensors --scale-dtype f16 -o "$W/awq.ct" < "$W/awq.stream" 2>/dev/null
    g=$(evaljson "$W/awq.gguf")
    c=$(evaljson "$W/awq.ct")
    echo "gguf: $g / ct: $c"
    awk -v a="$g" -v b="$c" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = x[2] - y[2]; if (d < 0) d = -d; exit !(x[1] == y[1] && d / y[2] < 1e-3) }'
}

@test "gguf: --float-min layers are exact Q4_1 blocks; integer-zero formats keep them dequantized" {
    as-gptq -m rtn -b 4 -g 32 --asym --float-min < "$W/in.stream" > "$W/f4.stream"
    as-pack -m "$W/base" -f gguf -o "$W/f4.gguf" < "$W/f4.stream" 2> "$W/f4.log"
    grep -q "30 as blocks, 5 as floats, verified" "$W/f4.log"
    as-pack -m "$W/base" -f fakequant -o "$W/f4.fq" < "$W/f4.stream" 2>/dev/null
    # the file evaluates exactly like the quantizer's W_hat (blocks are bit-exact, the 172-wide
    # down projections are W_hat at F32)
    g=$(evaljson "$W/f4.gguf")
    f=$(evaljson "$W/f4.fq")
    echo "gguf: $g / fakequant: $f"
    [ "$g" = "$f" ]
    # and better than the integer-zero Q4_1 of the same round-to-nearest
    a=$(evaljson "$W/a4.gguf")
    awk -v a="$g" -v b="$a" 'BEGIN { split(a, x, " "); split(b, y, " "); exit !(x[3] < y[3]) }'
    # integer-zero formats: one reason per layer, layers kept as dequantized weights
    for fmt in gptq compressed-tensors awq; do
        run as-pack -m "$W/base" -f $fmt -o "$W/f4.$fmt" < "$W/f4.stream"
        echo "$fmt: ${lines[0]}"
        [ "$status" -eq 0 ]
        [[ "${lines[0]}" == *"kept as dequantized"*"float minimum (w = scale*q + min, as-gptq --float-min)"* ]]
    done
    [ "$(evaljson "$W/f4.gptq")" = "$f" ]
    run as-gptq -m rtn -b 4 -g 32 --sym --float-min < "$W/in.stream"
    [ "$status" -eq 1 ]
    [[ "$output" == *"--float-min: needs --asym"* ]]
    need_py
    run python3 "$READER" fmin "$W/f4.gguf" "$W/base" "$W/f4.fq"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"q4_1": 30'* ]]
}
