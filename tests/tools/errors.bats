#!/usr/bin/env bats
# Bad input across the pipeline: each case must exit non-zero with exactly one line on stderr
# naming the file / tensor / problem, and as-pack / as-import must leave no output directory (nor
# staging directory) behind, and leave an existing output directory intact.
# Damaged checkpoints are made in plain bash (helpers.bash: safetensors header rewrites with jq,
# byte patches with dd at offsets taken from the header).

load helpers
load stream_check

setup_file() {
    import_model
    export CAL=$BATS_FILE_TMPDIR/calib.astr Q=$BATS_FILE_TMPDIR/rtn.astr
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 64 >"$CAL" 2>/dev/null
    as-cat "$M" | as-gptq --method rtn -b 4 -g 32 >"$Q"
}

setup() {
    T=$BATS_TEST_TMPDIR
}

# fails FRAGMENT...: after `run --separate-stderr`: exit status 1 (docs/tools.md), one stderr line
# holding every fragment, and nothing on stdout.
fails() {
    if [ "$status" -ne 1 ]; then
        echo "expected status 1, got $status; stderr: $stderr" >&2
        return 1
    fi
    assert_error "$@"
    if [ -n "$output" ]; then
        echo "the failed command still wrote to stdout: ${output:0:200}" >&2
        return 1
    fi
}

@test "config.json missing num_attention_heads: as-eval names the file and the field" {
    clone_model "$T/C"
    jq 'del(.num_attention_heads)' "$M/config.json" >"$T/C/config.json"
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: file $T/C/config.json: " num_attention_heads missing
}

@test "unsupported model_type: named with the file" {
    clone_model "$T/C"
    jq '.model_type = "gpt2"' "$M/config.json" >"$T/C/config.json"
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: file $T/C/config.json: " '"gpt2"' "not supported"
}

@test "tensor missing from model.safetensors (model.norm.weight dropped): named" {
    clone_model "$T/C"
    st_rewrite "$M/model.safetensors" "$T/C/model.safetensors" 'del(.["model.norm.weight"])'
    # the rewritten file is still a valid safetensors file: only that tensor is gone
    [ "$(as-ls "$T/C" | jq -s length)" -eq $(($(as-ls "$M" | jq -s length) - 1)) ]
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: " model.norm.weight
    [[ "$stderr" == *missing* || "$stderr" == *"not found"* ]]
    run --separate-stderr bash -c "as-calib -m '$T/C' -d '$AUSTEN' -n 2 -l 64 >'$T/o.astr'"
    fails "as-calib: " model.norm.weight
    no_stream "$T/o.astr"
}

@test "tensor with the wrong shape (k_proj stored as [64,32]): names tensor and both shapes" {
    clone_model "$T/C"
    st_rewrite "$M/model.safetensors" "$T/C/model.safetensors" \
        '.["model.layers.1.self_attn.k_proj.weight"].shape = [64, 32]'
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: $T/C/model.safetensors" model.layers.1.self_attn.k_proj.weight "[64, 32]" "[32, 64]"
    # config that disagrees with the tensors: the same check from the other side
    clone_model "$T/D"
    jq '.hidden_size = 32' "$M/config.json" >"$T/D/config.json"
    run --separate-stderr as-eval -m "$T/D" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: $T/D/model.safetensors" model.embed_tokens.weight shape
}

@test "tokenizer.json unreadable (invalid JSON, missing, a directory): names the file" {
    clone_model "$T/C"
    printf '{"model": {"type": "BPE", "vocab": ' >"$T/C/tokenizer.json"
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: $T/C/tokenizer.json"
    rm "$T/C/tokenizer.json"
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: $T/C/tokenizer.json"
    mkdir "$T/C/tokenizer.json" # a directory where the file should be
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 256
    fails "as-eval: $T/C/tokenizer.json"
}

@test "evaluation text empty, missing, or shorter than one window" {
    : >"$T/empty.txt"
    run --separate-stderr as-eval -m "$M" -f "$T/empty.txt" --ctx 256
    fails "as-eval: " "$T/empty.txt" empty
    run --separate-stderr as-eval -m "$M" -f "$T/nope.txt" --ctx 256
    fails "as-eval: " "$T/nope.txt"
    head -c 300 "$WIKI" >"$T/short.txt"
    run --separate-stderr as-eval -m "$M" -f "$T/short.txt" --ctx 256
    fails "as-eval: " "$T/short.txt" "--ctx 256" shorter
}

@test "--ctx larger than max_position_embeddings (512)" {
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 20000 --ctx 1024
    fails "as-eval: " "--ctx 1024" 512 max_position_embeddings
    # 512 itself is allowed
    run as-eval -m "$M" -f "$WIKI" --bytes 5000 --ctx 512 --json
    [ "$status" -eq 0 ]
}

@test "as-gptq: a weight without a Hessian (no --method rtn) names the tensor" {
    run --separate-stderr bash -c "as-cat '$M' | as-gptq -b 4 -g 32 >'$T/o.astr'"
    fails "as-gptq: " "model.layers." ".weight" Hessian
    no_stream "$T/o.astr"
    # one group's Hessian removed: exactly its target is named
    run --separate-stderr bash -c "as-cat -x 'layers\\.3\\.attn_o\\.' '$CAL' | as-gptq -b 4 -g 32 >'$T/o.astr'"
    fails "as-gptq: " model.layers.3.self_attn.o_proj.weight Hessian
    no_stream "$T/o.astr"
}

@test "as-gptq on a truncated stream (head -c): truncation error, no end record written" {
    size=$(stat -c %s "$CAL")
    for cut in 100 $((size / 2)) $((size - 1)); do
        run --separate-stderr bash -c "head -c $cut '$CAL' | as-gptq -b 4 -g 32 >'$T/out.astr'"
        fails "as-gptq: stream stdin: " truncated
        # its own output must not look complete either
        no_stream "$T/out.astr"
    done
}

@test "as-pack: an incomplete quantized layer (.zero record dropped) names it, no output dir" {
    run --separate-stderr bash -c "as-cat -x 'layers\\.2\\.self_attn\\.q_proj\\.zero\$' '$Q' | as-pack -m '$M' -f gptq -o '$T/out'"
    fails "as-pack: " model.layers.2.self_attn.q_proj zero
    no_leftovers "$T" out
    # each of the four parts is required
    for part in qweight scale g_idx; do
        run --separate-stderr bash -c "as-cat -x 'layers\\.0\\.mlp\\.up_proj\\.$part\$' '$Q' | as-pack -m '$M' -f fakequant -o '$T/out'"
        fails "as-pack: " model.layers.0.mlp.up_proj "$part"
        no_leftovers "$T" out
    done
}

@test "as-pack: no quantized layers (the plain model piped in), no output dir" {
    run --separate-stderr bash -c "as-cat '$M' | as-pack -m '$M' -f compressed-tensors -o '$T/out'"
    fails "as-pack: no quantized layers"
    no_leftovers "$T" out
    run --separate-stderr bash -c "as-pack -m '$M' -f gptq -o '$T/out' </dev/null"
    fails "as-pack: stream stdin: truncated after record 0 (no end record)"
    no_leftovers "$T" out
}

@test "as-pack into an existing directory that fails midway leaves the old directory intact" {
    as-pack -m "$M" -f fakequant -o "$T/out" <"$Q" 2>/dev/null
    before=$(cd "$T/out" && sha256sum * | sha256sum)
    # a model whose k_proj has another shape than the stream's: the failure comes while writing
    clone_model "$T/C"
    st_rewrite "$M/model.safetensors" "$T/C/model.safetensors" \
        '.["model.layers.3.self_attn.k_proj.weight"].shape = [64, 32]'
    run --separate-stderr as-pack -m "$T/C" -f fakequant -o "$T/out" "$Q"
    fails "as-pack: " model.layers.3.self_attn.k_proj "[64,32]" "[32,64]"
    [ "$(cd "$T/out" && sha256sum * | sha256sum)" = "$before" ]
    [ "$(cd "$T" && ls -Ad out.* .out* 2>/dev/null || true)" = "" ]
    # the stream ends early: also fails before replacing anything
    run --separate-stderr bash -c "head -c 5000 '$Q' | as-pack -m '$M' -f fakequant -o '$T/out'"
    fails "as-pack: stream stdin: " truncated
    [ "$(cd "$T/out" && sha256sum * | sha256sum)" = "$before" ]
    [ "$(cd "$T" && ls -Ad out.* .out* 2>/dev/null || true)" = "" ]
}

@test "NaN weight: as-gptq (rtn and gptq) rejects it naming the tensor" {
    clone_model "$T/N"
    # F32 quiet NaN 0x7fc00000, little-endian, at element 10 of layer 2's v_proj
    st_patch "$T/N/model.safetensors" model.layers.2.self_attn.v_proj.weight 40 '\x00\x00\xc0\x7f'
    run --separate-stderr bash -c "as-cat '$T/N' | as-gptq --method rtn -b 4 -g 32 >'$T/o.astr'"
    fails "as-gptq: " model.layers.2.self_attn.v_proj.weight non-finite
    no_stream "$T/o.astr"
    # Hessians from the clean model, weights from the damaged one
    as-cat -r hessian "$CAL" >"$T/h.astr"
    run --separate-stderr bash -c "as-cat '$T/h.astr' '$T/N' | as-gptq -b 4 -g 32 >'$T/o.astr'"
    fails "as-gptq: " model.layers.2.self_attn.v_proj.weight non-finite
    no_stream "$T/o.astr"
    # +Inf too
    st_patch "$T/N/model.safetensors" model.layers.2.self_attn.v_proj.weight 40 '\x00\x00\x80\x7f'
    run --separate-stderr bash -c "as-cat '$T/N' | as-gptq --method rtn -b 4 -g 32 >'$T/o.astr'"
    fails "as-gptq: " model.layers.2.self_attn.v_proj.weight non-finite
    no_stream "$T/o.astr"
}

@test "NaN weight: as-calib fails naming the layer; as-eval does not report a perplexity" {
    clone_model "$T/N"
    st_patch "$T/N/model.safetensors" model.layers.2.self_attn.v_proj.weight 40 '\x00\x00\xc0\x7f'
    run --separate-stderr bash -c "as-calib -m '$T/N' -d '$AUSTEN' -n 2 -l 64 >'$T/o.astr'"
    fails "as-calib: " "layer 2" non-finite
    no_stream "$T/o.astr"
    # a NaN perplexity is an error, never a report
    run --separate-stderr as-eval -m "$T/N" -f "$WIKI" --bytes 3000 --ctx 256 --json
    fails "as-eval: $T/N: non-finite logits in window 0 at position " "(NaN or Inf weights?)"
    # a NaN in q_proj reaches only attention scores: the prefill attention kernel must carry it
    # (not mask it to probability 0) so that it shows in the logits
    clone_model "$T/Q"
    st_patch "$T/Q/model.safetensors" model.layers.0.self_attn.q_proj.weight 40 '\x00\x00\xc0\x7f'
    run --separate-stderr as-eval -m "$T/Q" -f "$WIKI" --bytes 3000 --ctx 256 --json
    fails "as-eval: $T/Q: non-finite logits in window 0 at position " "(NaN or Inf weights?)"
}

@test "as-calib: --seqlen larger than the model's 512 positions" {
    run --separate-stderr bash -c "as-calib -m '$M' -d '$AUSTEN' -n 2 -l 1024 >'$T/o.astr'"
    fails "as-calib: " "--seqlen 1024" 512
    no_stream "$T/o.astr"
}

@test "as-calib: empty text directory, and a directory of empty files" {
    mkdir "$T/none"
    run --separate-stderr bash -c "as-calib -m '$M' -d '$T/none' -n 2 -l 64 >'$T/o.astr'"
    fails "as-calib: " "$T/none" "no text files"
    no_stream "$T/o.astr"
    mkdir "$T/empty"
    : >"$T/empty/a.txt"
    run --separate-stderr bash -c "as-calib -m '$M' -d '$T/empty' -n 2 -l 64 >'$T/o.astr'"
    fails "as-calib: " "$T/empty" "0 tokens"
    no_stream "$T/o.astr"
    run --separate-stderr bash -c "as-calib -m '$M' -d '$T/nope' -n 2 -l 64 >'$T/o.astr'"
    fails "as-calib: " "$T/nope"
    no_stream "$T/o.astr"
}

@test "as-import: a truncated checkpoint leaves no output directory" {
    head -c 100000 "$L2C/stories260K.bin" >"$T/cut.bin"
    run --separate-stderr as-import -t "$L2C/tok512.bin" "$T/cut.bin" "$T/out"
    fails "as-import: " "$T/cut.bin"
    no_leftovers "$T" out
    head -c 1000 "$L2C/tok512.bin" >"$T/cut.tok"
    run --separate-stderr as-import -t "$T/cut.tok" "$L2C/stories260K.bin" "$T/out"
    fails "as-import: " "$T/cut.tok"
    no_leftovers "$T" out
}

@test "as-pack: a layer twice in the stream, and two schemes in one checkpoint, no output dir" {
    run --separate-stderr bash -c "as-cat '$Q' '$Q' | as-pack -m '$M' -f fakequant -o '$T/out'"
    fails "as-pack: " "model.layers.0." twice
    no_leftovers "$T" out
    as-cat -l 1 "$M" | as-gptq --method rtn -b 3 -g 32 >"$T/w3.astr"
    run --separate-stderr bash -c "as-cat -x 'layers\\.1\\.' '$Q' | as-cat - '$T/w3.astr' | as-pack -m '$M' -f gptq -o '$T/out'"
    fails "as-pack: " "model.layers.1." 3-bit 4-bit
    no_leftovers "$T" out
}

@test "as-calib --sequential: a quantizer that exits with an error is named in as-calib's message" {
    run --separate-stderr bash -c "as-calib -m '$M' -d '$AUSTEN' -n 2 -l 64 --sequential 'as-gptq -b 9' >'$T/o.astr'"
    echo "$stderr"
    [ "$status" -eq 1 ]
    # the quantizer's own line, then as-calib's: which must say the quantizer failed, not only
    # that a pipe broke
    [ "${#stderr_lines[@]}" -eq 2 ]
    [ "${stderr_lines[0]}" = "as-gptq: --bits 9: expected 2..8" ]
    [ "${stderr_lines[1]}" = "as-calib: --sequential: quantizer 'as-gptq -b 9' failed (exit status 1)" ]
    no_stream "$T/o.astr"
}

@test "as-calib --sequential with a GPTAQ quantizer but without --gptaq fails instead of hanging" {
    run --separate-stderr timeout 5 bash -c "as-calib -m '$M' -d '$AUSTEN' -n 2 -l 64 --sequential 'as-gptq -m gptaq -b 4 -g 32' >'$T/o.astr'"
    echo "status $status: $stderr"
    [ "$status" -ne 124 ] # 124: killed by timeout, i.e. as-calib and as-gptq wait on each other
    [ "$status" -eq 1 ]
    [ "${#stderr_lines[@]}" -eq 2 ]
    [[ "${stderr_lines[0]}" == "as-gptq: tensor model.layers.0."*": no gptaq-dxx record for it in the stream"* ]]
    [ "${stderr_lines[1]}" = "as-calib: --sequential: quantizer 'as-gptq -m gptaq -b 4 -g 32' failed (exit status 1)" ]
    no_stream "$T/o.astr"
}

@test "a weight stored as integers (I32) or bare FP8 codes is refused, naming file, tensor and dtype" {
    clone_model "$T/C"
    st_rewrite "$M/model.safetensors" "$T/C/model.safetensors" '.["model.norm.weight"].dtype = "I32"'
    run --separate-stderr as-eval -m "$T/C" -f "$WIKI" --bytes 2000 --ctx 64
    fails "as-eval: file $T/C/model.safetensors: tensor model.norm.weight: " "dtype I32 is not a floating-point weight"
    st_rewrite "$M/model.safetensors" "$T/C/model.safetensors" \
        '.["model.layers.0.self_attn.q_proj.weight"].dtype = "F8_E4M3" | .["model.layers.0.self_attn.q_proj.weight"].shape = [64, 256]'
    run --separate-stderr as-gen -m "$T/C" -p "Once" -n 2
    fails "as-gen: " model.layers.0.self_attn.q_proj.weight
}

@test "config.json: rope_theta <= 0, negative rms_norm_eps, absurd layer count name the field" {
    clone_model "$T/C"
    for edit in '.rope_theta = 0' '.rope_theta = -5' '.rms_norm_eps = -1e-5' '.num_hidden_layers = 1000000000'; do
        jq "$edit" "$M/config.json" >"$T/C/config.json"
        field=$(sed -E 's/^\.([a-z_]+).*/\1/' <<<"$edit")
        run --separate-stderr as-gen -m "$T/C" -p "Once upon a time" -n 4
        fails "as-gen: file $T/C/config.json: field \"$field\""
    done
    # rms_norm_eps = 0 is a valid (if unusual) value
    jq '.rms_norm_eps = 0' "$M/config.json" >"$T/C/config.json"
    as-gen -m "$T/C" -p "Once upon a time" -n 4 >/dev/null
}

@test "a mistyped number in an option is named as typed, not read as 0" {
    run --separate-stderr as-gptq -b abc < "$Q"
    fails "as-gptq: argument 'abc': expected an integer"
    run --separate-stderr as-calib -m "$M" -d "$AUSTEN" -n 4x -l 64
    fails "as-calib: argument '4x': expected an integer"
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes -5
    fails "as-eval: argument '-5': expected a non-negative integer"
    run --separate-stderr as-lepto -m "$M" -s int8-dynamic --smooth 0.5.1 < "$CAL"
    fails "as-lepto: argument '0.5.1': expected a finite number"
    run --separate-stderr as-awq -m "$M" -g 12e < "$CAL"
    fails "as-awq: argument '12e': expected an integer"
}
