#!/usr/bin/env bats
# as-lepto end to end on the bundled stories260K model: every scheme through as-pack into its
# checkpoint format, the encoded bytes checked by tests/tools/fp_oracle.py (numpy, written from the
# format rules), each checkpoint read back by as-eval with its activation quantization simulated,
# LeptoQuant never worse than absmax on its own objective, diagnostics and the SVG histogram, and
# one-line errors for bad input.

load helpers

setup_file() {
    import_model
    export CALIB=$BATS_FILE_TMPDIR/calib.astr
    as-calib -m "$M" -d "$AUSTEN" -n 16 -l 64 --keep-seqs 4 --keep-inputs 256 >"$CALIB" 2>/dev/null
    local s
    for s in fp8-static fp8-dynamic fp8-block int8-dynamic nvfp4 mxfp4; do
        as-lepto -m "$M" -s $s "$CALIB" >"$BATS_FILE_TMPDIR/$s.astr"
    done
    as-lepto -m "$M" -s w4a8-fp8 --group 32 "$CALIB" >"$BATS_FILE_TMPDIR/w4a8.astr"
    as-lepto -m "$M" -s fp8-static --method lepto --report "$BATS_FILE_TMPDIR/lepto.jsonl" "$CALIB" \
        >"$BATS_FILE_TMPDIR/lepto.astr"
}

have_np() { python3 -c 'import numpy' 2>/dev/null || skip "numpy missing"; }
T() { echo "$BATS_FILE_TMPDIR/$1"; }

# pack FORMAT RECORDS OUT [args]: as-pack (verified read-back) into OUT.
pack() { as-pack -m "$M" -f "$1" -o "$3" "${@:4}" "$2" 2>/dev/null; }

@test "fp8-static: float-quantized per-tensor bytes and input scales match the oracle; as-eval simulates FP8 inputs" {
    pack ct-fp "$(T fp8-static.astr)" "$(T ck-fp8s)"
    jq -e '.quantization_config.format == "float-quantized" and
           .quantization_config.config_groups.group_0.input_activations.strategy == "tensor" and
           .quantization_config.config_groups.group_0.input_activations.dynamic == false' \
        "$(T ck-fp8s)/config.json"
    if python3 -c 'import numpy' 2>/dev/null; then
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" float-quantized "$M" "$(T ck-fp8s)" "$CALIB"
    fi
    run eval_json "$(T ck-fp8s)" "$M" 8000
    [ "$status" -eq 0 ]
    jq -e '.act_quant == ["fp8-static"] and .kld.mean > 0 and .kld.mean < 0.2 and .same_top > 0.7' <<<"$output"
    # the same weights without the activation simulation: a different (smaller) KLD
    k_w=$(as-eval -m "$(T ck-fp8s)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --act-quant none --json | jq '.kld.mean')
    k_wa=$(jq '.kld.mean' <<<"$output")
    lt "$k_w" "$k_wa"
}

@test "fp8-dynamic, fp8-block, DeepSeek fp8: bytes match the oracle and as-eval loads them" {
    pack ct-fp "$(T fp8-dynamic.astr)" "$(T ck-fp8d)"
    pack ct-fp "$(T fp8-block.astr)" "$(T ck-fp8b)"
    pack fp8 "$(T fp8-block.astr)" "$(T ck-ds)"
    jq -e '.quantization_config | .quant_method == "fp8" and .weight_block_size == [128,128] and
           .activation_scheme == "dynamic" and .fmt == "e4m3"' "$(T ck-ds)/config.json"
    st_header "$(T ck-ds)/model.safetensors" | jq -e '.["model.layers.0.mlp.down_proj.weight_scale_inv"].shape == [1, 2]'
    if python3 -c 'import numpy' 2>/dev/null; then
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" float-quantized "$M" "$(T ck-fp8d)"
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" float-quantized "$M" "$(T ck-fp8b)"
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" fp8 "$M" "$(T ck-ds)"
    fi
    a=$(eval_json "$(T ck-fp8d)" "$M" 8000)
    jq -e '.act_quant == ["fp8-dynamic"] and .kld.mean < 0.2' <<<"$a"
    b=$(eval_json "$(T ck-ds)" "$M" 8000)
    c=$(eval_json "$(T ck-fp8b)" "$M" 8000)
    jq -e '.act_quant == ["fp8-group128"]' <<<"$b"
    # the two block checkpoints hold the same weights and activation scheme: same numbers
    [ "$(jq .ppl <<<"$b")" = "$(jq .ppl <<<"$c")" ]
}

@test "int8-dynamic (± SmoothQuant), nvfp4, mxfp4, w4a8: bytes match the oracle, fallbacks listed in ignore" {
    as-lepto -m "$M" -s int8-dynamic --smooth 0.5 "$CALIB" >"$(T int8s.astr)"
    pack ct-fp "$(T int8-dynamic.astr)" "$(T ck-i8)"
    pack ct-fp "$(T int8s.astr)" "$(T ck-i8s)"
    pack ct-fp "$(T nvfp4.astr)" "$(T ck-nv)"
    pack ct-fp "$(T mxfp4.astr)" "$(T ck-mx)"
    pack w4a8 "$(T w4a8.astr)" "$(T ck-w4a8)"
    # hidden 172 is not a multiple of the FP4 blocks: down_proj kept dequantized and ignored
    jq -e '.quantization_config.ignore | index("model.layers.0.mlp.down_proj") != null' "$(T ck-nv)/config.json"
    jq -e '.quantization_config.config_groups.group_0.weights.strategy == "tensor_group"' "$(T ck-nv)/config.json"
    # SmoothQuant rescaled the norms
    ! cmp -s "$(T ck-i8s)/model.safetensors" "$(T ck-i8)/model.safetensors"
    if python3 -c 'import numpy' 2>/dev/null; then
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" int-quantized "$M" "$(T ck-i8)"
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" nvfp4-pack-quantized "$M" "$(T ck-nv)"
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" mxfp4-pack-quantized "$M" "$(T ck-mx)"
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" w4a8 "$M" "$(T ck-w4a8)" "$CALIB"
    fi
    for d in ck-i8 ck-i8s ck-nv ck-mx ck-w4a8; do
        out=$(eval_json "$(T $d)" "$M" 8000)
        jq -e '.ppl > 1 and .ppl < 1000 and .kld.mean > 0' <<<"$out"
    done
    jq -e '.act_quant == ["int8-dynamic"] and .kld.mean < 0.05' <<<"$(eval_json "$(T ck-i8)" "$M" 8000)"
    jq -e '.act_quant == ["nvfp4", "none"]' <<<"$(eval_json "$(T ck-nv)" "$M" 8000)"
}

@test "fp8-static + FP8 KV cache: k/v scales match keys and values recomputed by the oracle; as-eval simulates the FP8 cache" {
    # every window kept whole, so the oracle sees all calibration tokens
    as-calib -m "$M" -d "$AUSTEN" -n 6 -l 64 --keep-seqs 6 --kv-stats >"$(T kv.astr)" 2>/dev/null
    as-lepto -m "$M" -s fp8-static --kv-cache fp8 "$(T kv.astr)" >"$(T kv8.astr)"
    pack ct-fp "$(T kv8.astr)" "$(T ck-kv)"
    jq -e '.quantization_config.kv_cache_scheme == {"num_bits": 8, "type": "float", "strategy": "tensor",
           "dynamic": false, "symmetric": true}' "$(T ck-kv)/config.json"
    st_header "$(T ck-kv)/model.safetensors" |
        jq -e '[to_entries[] | select(.key | test("self_attn\\.[kv]_scale$"))] | length == 10 and
               all(.[]; .value.dtype == "F32" and .value.shape == [1])'
    if python3 -c 'import numpy' 2>/dev/null; then
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" kv-cache "$M" "$(T ck-kv)" "$(T kv.astr)"
        python3 "$BATS_TEST_DIRNAME/fp_oracle.py" float-quantized "$M" "$(T ck-kv)" "$(T kv.astr)"
    fi
    with=$(eval_json "$(T ck-kv)" "$M" 8000)
    jq -e '.kv_cache == "fp8-static" and .act_quant == ["fp8-static"]' <<<"$with"
    without=$(as-eval -m "$(T ck-kv)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --json --kv-cache none)
    jq -e '.kv_cache == null' <<<"$without"
    k1=$(jq .kld.mean <<<"$with") k0=$(jq .kld.mean <<<"$without")
    lt "$k0" "$k1"   # the FP8 cache costs something...
    lt "$k1" 0.3     # ...but stays close
    # the KV cache alone (weights and activations of the same checkpoint read, inputs unquantized)
    kvonly=$(as-eval -m "$(T ck-kv)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --json --act-quant none | jq .kld.mean)
    wonly=$(as-eval -m "$(T ck-kv)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --json --act-quant none --kv-cache none | jq .kld.mean)
    lt "$wonly" "$kvonly"
}

@test "FP8 KV cache errors: missing statistics, incomplete layers, bad scales, bad options" {
    run --separate-stderr as-lepto -m "$M" -s fp8-static --kv-cache fp8 "$CALIB"
    [ "$status" -ne 0 ] && [ "$(wc -l <<<"$stderr")" -eq 1 ]
    [[ "$stderr" == *"model.layers.0.self_attn.kv_absmax"*"--kv-stats"* ]]
    run --separate-stderr as-lepto -m "$M" -s fp8-static --kv-cache fp16 "$CALIB"
    [ "$status" -ne 0 ] && [[ "$stderr" == *"--kv-cache 'fp16'"* ]]
    run --separate-stderr as-calib -m "$M" -d "$AUSTEN" -n 2 -l 32 --kv-stats --sequential cat
    [ "$status" -ne 0 ] && [[ "$stderr" == *"--kv-stats"*"--sequential"* ]]
    [ -s "$(T kv.astr)" ] || as-calib -m "$M" -d "$AUSTEN" -n 6 -l 64 --keep-seqs 6 --kv-stats >"$(T kv.astr)" 2>/dev/null
    # scales for layers 0-1 only: as-pack names the first missing one, writes nothing
    as-lepto -m "$M" -s fp8-static --kv-cache fp8 --layers 0-1 "$(T kv.astr)" >"$(T kv01.astr)"
    run --separate-stderr as-pack -m "$M" -f ct-fp -o "$(T ck-kv01)" "$(T kv01.astr)"
    [ "$status" -ne 0 ] && [ "$(wc -l <<<"$stderr")" -eq 1 ] && [ ! -e "$(T ck-kv01)" ]
    [[ "$stderr" == *"model.layers.2.self_attn.k_scale: missing"* ]]
    # a NaN / negative v_scale in a checkpoint: as-eval names file and tensor
    [ -d "$(T ck-kv)" ] || { as-lepto -m "$M" -s fp8-static --kv-cache fp8 "$(T kv.astr)" >"$(T kv8.astr)"; pack ct-fp "$(T kv8.astr)" "$(T ck-kv)"; }
    for bytes in '\x00\x00\xc0\x7f' '\x00\x00\x80\xbf' '\x00\x00\x00\x00'; do
        rm -rf "$(T ck-kvbad)"
        cp -r "$(T ck-kv)" "$(T ck-kvbad)"
        f="$(T ck-kvbad)/model.safetensors"
        off=$(st_offset "$f" model.layers.3.self_attn.v_scale)
        printf "$bytes" | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null
        run --separate-stderr as-eval -m "$(T ck-kvbad)" -f "$WIKI" --bytes 5000 --ctx 128
        [ "$status" -ne 0 ] && [ "$(wc -l <<<"$stderr")" -eq 1 ]
        [[ "$stderr" == *"model.safetensors: tensor model.layers.3.self_attn.v_scale: scale"*"not a positive finite number"* ]]
    done
    # --kv-cache none evaluates it anyway (the scales are not read)
    run as-eval -m "$(T ck-kvbad)" -f "$WIKI" --bytes 5000 --ctx 128 --kv-cache none
    [ "$status" -eq 0 ]
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 5000 --ctx 128 --kv-cache fp8
    [ "$status" -ne 0 ] && [[ "$stderr" == *"--kv-cache 'fp8'"* ]]
}

@test "the oracle detects a flipped code byte" {
    have_np
    pack ct-fp "$(T fp8-dynamic.astr)" "$(T ck-flip)"
    f="$(T ck-flip)/model.safetensors"
    off=$(st_offset "$f" model.layers.1.self_attn.k_proj.weight)
    printf '\x33' | dd of="$f" bs=1 seek=$((off + 5)) conv=notrunc 2>/dev/null
    run python3 "$BATS_TEST_DIRNAME/fp_oracle.py" float-quantized "$M" "$(T ck-flip)"
    [ "$status" -eq 1 ]
    [[ "$output" == *"k_proj: FP8 code"* ]]
}

@test "LeptoQuant: 13 candidates per group, never worse than absmax on its block-output loss" {
    r=$(T lepto.jsonl)
    [ "$(wc -l <"$r")" -eq 20 ] # 5 layers x 4 groups
    jq -se 'all(.[]; .loss <= .loss_absmax and .reduction >= 0 and (.candidates | length) == 13
             and .percentile >= 0.9994 and .percentile <= 1.0
             and (.candidates | map(.loss) | min) >= .loss)' "$r"
    jq -se 'map(.candidates[0].p) | unique == [0.9994]' "$r"
    pack ct-fp "$(T lepto.astr)" "$(T ck-lepto)"
    out=$(eval_json "$(T ck-lepto)" "$M" 8000)
    jq -e '.act_quant == ["fp8-static"] and .kld.mean < 0.2' <<<"$out"
}

@test "fakequant-fp: dense W_hat plus input scales evaluates like the packed checkpoint" {
    pack fakequant-fp "$(T fp8-static.astr)" "$(T ck-fq)"
    [ -d "$(T ck-fp8s)" ] || pack ct-fp "$(T fp8-static.astr)" "$(T ck-fp8s)"
    jq -e '.quantization_config.quant_method == "as-fakequant"' "$(T ck-fq)/config.json"
    a=$(eval_json "$(T ck-fq)" "$M" 8000 | jq .ppl)
    b=$(eval_json "$(T ck-fp8s)" "$M" 8000 | jq .ppl)
    [ "$a" = "$b" ]
}

@test "--analyze: per-tensor statistics, outlier flags, SVG histogram" {
    run as-lepto -m "$M" --analyze --json --svg "$(T hist.svg)" --tensor model.layers.2.mlp.down_proj.weight "$CALIB"
    [ "$status" -eq 0 ]
    [ "$(grep -c '"kind":"weight"' <<<"$output")" -eq 35 ]
    [ "$(grep -c '"kind":"input"' <<<"$output")" -eq 20 ]
    grep '"tensor":"model.layers.0.attn_qkv"' <<<"$output" | jq -e '.kurtosis > 0 and .fp8_zero >= 0 and .fp8_saturated == 0 and .absmax > .absmean'
    grep -q '<svg' "$(T hist.svg)"
    [ "$(grep -c '<polyline' "$(T hist.svg)")" -eq 2 ]
    run as-lepto -m "$M" --analyze "$CALIB"
    [ "$status" -eq 0 ]
    [[ "$output" == *"flagged with kurtosis"* ]]
    run as-lepto -m "$M" --analyze --svg "$(T a.svg)" --tensor model.layers.0.attn_o.act_sample "$CALIB"
    [ "$status" -eq 0 ]
    grep -q '<svg' "$(T a.svg)"
}

@test "errors: one line naming what is wrong" {
    # static scales without statistics
    run --separate-stderr as-lepto -m "$M" -s fp8-static /dev/null
    [ "$status" -ne 0 ]
    [[ "$stderr" == *"act_absmax"* ]] && [ "$(wc -l <<<"$stderr")" -eq 1 ]
    # lepto without whole sequences
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 32 >"$(T nokeep.astr)" 2>/dev/null
    run --separate-stderr as-lepto -m "$M" -s fp8-static --method lepto "$(T nokeep.astr)"
    [ "$status" -ne 0 ]
    [[ "$stderr" == *"model.layers.0.input"*"--keep-seqs"* ]]
    run --separate-stderr as-lepto -m "$M" -s fp9
    [ "$status" -ne 0 ] && [[ "$stderr" == *"--scheme 'fp9'"* ]]
    run --separate-stderr as-lepto -m "$M" -s nvfp4 --method lepto "$CALIB"
    [ "$status" -ne 0 ] && [[ "$stderr" == *"lepto"* ]]
    # truncated record stream
    head -c 3000 "$(T fp8-dynamic.astr)" >"$(T trunc.astr)"
    run --separate-stderr as-pack -m "$M" -f ct-fp -o "$(T ck-trunc)" "$(T trunc.astr)"
    [ "$status" -ne 0 ] && [ ! -e "$(T ck-trunc)" ] && [ "$(wc -l <<<"$stderr")" -eq 1 ]
    # format that cannot hold the scheme
    run --separate-stderr as-pack -m "$M" -f int-quantized -o "$(T ck-bad)" "$(T fp8-dynamic.astr)"
    [ "$status" -ne 0 ] && [[ "$stderr" == *"int-quantized cannot hold weights fp8-channel"* ]]
    [ ! -e "$(T ck-bad)" ]
    # a negative input_scale in a checkpoint: as-eval names file and tensor
    [ -d "$(T ck-fp8s)" ] || pack ct-fp "$(T fp8-static.astr)" "$(T ck-fp8s)"
    cp -r "$(T ck-fp8s)" "$(T ck-neg)"
    f="$(T ck-neg)/model.safetensors"
    off=$(st_offset "$f" model.layers.3.mlp.up_proj.input_scale)
    printf '\x00\x00\x80\xbf' | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null
    run --separate-stderr as-eval -m "$(T ck-neg)" -f "$WIKI" --bytes 5000 --ctx 128
    [ "$status" -ne 0 ]
    [[ "$stderr" == *"model.layers.3.mlp.up_proj.input_scale"*"not positive"* ]]
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 5000 --ctx 128 --act-quant fp8-static
    [ "$status" -ne 0 ] && [[ "$stderr" == *"--act-quant 'fp8-static'"* ]]
}

@test "a damaged statistic (negative or NaN act_absmax in a well-formed stream) is refused, named" {
    python3 -c 'import xxhash' 2>/dev/null || skip "python xxhash missing"
    as-cat --inline "$CALIB" >"$(T inl.astr)"
    for v in -2.5 nan; do
        python3 "$BATS_TEST_DIRNAME/stream_oracle.py" set "$(T inl.astr)" "$(T bad.astr)" \
            model.layers.1.attn_qkv.act_absmax 3 $v
        run --separate-stderr as-lepto -m "$M" -s fp8-static "$(T bad.astr)"
        [ "$status" -ne 0 ] && [ "$(wc -l <<<"$stderr")" -eq 1 ]
        [[ "$stderr" == *"tensor model.layers.1.attn_qkv.act_absmax: element 3 is -2.5, a magnitude must be finite and >= 0" ||
           "$stderr" == *"tensor model.layers.1.attn_qkv.act_absmax: non-finite value at 3" ]]
    done
    # the untouched copy is accepted (the editing itself is sound)
    python3 "$BATS_TEST_DIRNAME/stream_oracle.py" set "$(T inl.astr)" "$(T ok.astr)" \
        model.layers.1.attn_qkv.act_absmax 3 1.5
    as-lepto -m "$M" -s fp8-static "$(T ok.astr)" >/dev/null
}
