#!/usr/bin/env bats
# as-pack -f gguf and as-eval on GGUF files, with the bundled model and round-to-nearest layers:
#  - the GGUF and compressed-tensors (fp16 scales) outputs of one quantization evaluate to the
#    same perplexity and KLD, digit for digit (Q4_0, Q8_0); Q4_1 differs only by fp16(m);
#  - an independent reader (tests/tools/gguf_reader.py, from the spec) checks every key and
#    tensor info and the dequantized weights; llama.cpp's gguf package agrees (numpy,
#    safetensors and gguf come with `make deps`: missing is a failure, not a skip);
#  - q/k rows are llama2.c's (Meta's interleaved) rows, as llama.cpp's converter makes them;
#  - corrupted files are refused with one line naming the file;
#  - as-gptq --float-min layers (w = d*q + m, m free) become Q4_1 blocks that the independent
#    reader dequantizes to the fakequant weights of the same stream, bit for bit; formats with an
#    integer zero point (gptq, compressed-tensors, awq) refuse those layers with a reason and keep
#    them as dequantized weights.

bats_require_minimum_version 1.5.0
# a failure anywhere in a pipeline fails the test, not only its last command
set -o pipefail

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
}

load assert_refused

lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; } # a < b, any number format

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
    [ "${g%% *}" = "${c%% *}" ]
    d=$(awk -v a="$g" -v b="$c" 'BEGIN { split(a, x, " "); split(b, y, " "); d = (x[2] - y[2]) / y[2]; print (d < 0 ? -d : d) }')
    echo "relative PPL difference $d"
    # m rounded to fp16 (2^-11 relative) in every block: measured 2.4e-4 relative in PPL; bound
    # 3e-4 (+25%). A wrong m or d in one block moves it by a whole quantization step.
    lt "$d" 3e-4
    # general.file_type is MOSTLY_Q4_1
    ft=$(as-pack -m "$W/base" -f gguf -o "$W/a4b.gguf" --json < "$W/a4.stream" 2>/dev/null | jq -e .file_type)
    [ "$ft" = 3 ]
}

@test "gguf: the independent reader accepts every key, tensor info and weight" {
    for q in s4 a4 s8; do
        run python3 "$READER" check "$W/$q.gguf" "$W/base" "$W/$q.ct" "$W/$q.fq"
        echo "$q: $output"
        [ "$status" -eq 0 ]
    done
    [[ "$output" == *'"Q8_0": 30'* ]]
}

@test "gguf: q/k rows are llama2.c's interleaved rows (llama.cpp's converter permutation)" {
    run python3 "$READER" llama2c "$W/s8.gguf" "$L2C"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "gguf: llama.cpp's gguf package reads the same keys, tensors and values" {
    for q in s4 a4 s8; do
        run python3 "$READER" pkg "$W/$q.gguf"
        echo "$output"
        [ "$status" -eq 0 ]
    done
}

@test "gguf: corrupted files are refused by the reader and by as-eval, one line each" {
    python3 "$READER" corrupt "$W/s4.gguf" "$W/bad"
    # FILE|reader's message|as-eval's message (after "file PATH: ")
    local cases=(
        "truncated|truncated: tensor blk.2.ffn_down.weight data beyond the end of the file|truncated: tensor blk.2.ffn_down.weight data [292928, 336960) beyond the end of the file (309973 bytes)"
        "badmagic|bad magic|bad magic 0x4c4d4747 (not a GGUF file)"
        "badalign|general.alignment 48 is not a u32 power of two|general.alignment must be a u32 power of two"
        "misplaced|tensor blk.0.attn_norm.weight: offset 131076 not a multiple of 32|tensor blk.0.attn_norm.weight: offset 131076, expected 131072 (data aligned to 32, in info order)"
    )
    for c in "${cases[@]}"; do
        IFS='|' read -r f rmsg emsg <<<"$c"
        run --separate-stderr python3 "$READER" parse "$W/bad/$f.gguf"
        [ "$status" -eq 1 ]
        refused "gguf_reader: $W/bad/$f.gguf: $rmsg"
        run --separate-stderr as-eval -m "$W/bad/$f.gguf" -f "$WIKI" --bytes 2000 --ctx 64
        echo "$f: $stderr"
        [ "$status" -eq 1 ]
        refused "as-eval: file $W/bad/$f.gguf: $emsg"
    done
}

@test "gguf: as-pack options and errors" {
    run --separate-stderr as-pack -m "$W/base" -f gguf -o "$W/x.gguf" --gguf-float f8 < "$W/s4.stream"
    [ "$status" -eq 1 ]
    refused "as-pack: --gguf-float 'f8': expected f32, f16 or bf16"
    run ls -A "$W" # neither x.gguf nor a staging file
    [[ "$output" != *x.gguf* ]]
    # an output directory that does not exist: the five fallback notes, then the one error line
    run --separate-stderr as-pack -m "$W/base" -f gguf -o "$W/nodir/x.gguf" < "$W/s4.stream"
    [ "$status" -eq 1 ]
    [ -z "$output" ]
    [ "${#stderr_lines[@]}" -eq 6 ]
    [ "${stderr_lines[5]}" = "as-pack: output $W/nodir/x.gguf: cannot create lock file $W/nodir/x.gguf.lock: No such file or directory" ]
    for i in 0 1 2 3 4; do
        [ "${stderr_lines[$i]}" = "as-pack: note: tensor model.layers.$i.mlp.down_proj.weight: K = 172 is not a multiple of 32 (ragged last group); written as F32 (dequantized quantizer output)" ]
    done
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
    [ "${g%% *}" = "${c%% *}" ]
    d=$(awk -v a="$g" -v b="$c" 'BEGIN { split(a, x, " "); split(b, y, " "); d = (x[2] - y[2]) / y[2]; print (d < 0 ? -d : d) }')
    echo "relative PPL difference $d"
    # only the fp16 rounding of the Q4_1 blocks' d and m differs: measured 1.3e-5 relative in PPL;
    # bound 1.6e-5 (+25%)
    lt "$d" 1.6e-5
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
        echo "$fmt: $output"
        [ "$status" -eq 0 ]
        [[ "$output" == *"kept as dequantized"*"float minimum (w = scale*q + min, as-gptq --float-min)"* ]]
        # AWQ with nothing packed is written dense (an AWQ config with every linear excluded
        # crashes transformers' loader), and says so
        if [ $fmt = awq ]; then
            [[ "${lines[0]}" == "as-pack: no linear fits the AWQ GEMM layout: wrote $W/f4.awq as a dense checkpoint"* ]]
            [ ! -e "$W/f4.awq/quantize_config.json" ]
            run -0 jq -e 'has("quantization_config") | not' "$W/f4.awq/config.json"
        fi
    done
    [ "$(evaljson "$W/f4.gptq")" = "$f" ]
    run --separate-stderr as-gptq -m rtn -b 4 -g 32 --sym --float-min < "$W/in.stream"
    [ "$status" -eq 1 ]
    refused "as-gptq: --float-min: needs --asym (a symmetric quantizer has no minimum)"
    run python3 "$READER" fmin "$W/f4.gguf" "$W/base" "$W/f4.fq"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *'"q4_1": 30'* ]]
}
