#!/usr/bin/env bats
# as-lepto end to end on the bundled stories260K model: every scheme through as-pack into its
# checkpoint format, the encoded bytes checked by tests/tools/fp_oracle.py (numpy, written from the
# format rules), each checkpoint read back by as-eval with its activation quantization simulated,
# LeptoQuant never worse than absmax on its own objective, diagnostics and the SVG histogram, and
# one-line errors for bad input.

load helpers
# a failure anywhere in a pipeline fails the test, not only its last command
set -o pipefail

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

T() { echo "$BATS_FILE_TMPDIR/$1"; }
ORACLE_FP=$BATS_TEST_DIRNAME/fp_oracle.py

load assert_refused

# pack FORMAT RECORDS OUT [args]: as-pack (verified read-back) into OUT.
pack() { as-pack -m "$M" -f "$1" -o "$3" "${@:4}" "$2" 2>/dev/null; }

@test "fp8-static: float-quantized per-tensor bytes and input scales match the oracle; as-eval simulates FP8 inputs" {
    pack ct-fp "$(T fp8-static.astr)" "$(T ck-fp8s)"
    jq -e '.quantization_config.format == "float-quantized" and
           .quantization_config.config_groups.group_0.input_activations.strategy == "tensor" and
           .quantization_config.config_groups.group_0.input_activations.dynamic == false' \
        "$(T ck-fp8s)/config.json"
    python3 "$ORACLE_FP" float-quantized "$M" "$(T ck-fp8s)" "$CALIB"
    run eval_json "$(T ck-fp8s)" "$M" 8000
    [ "$status" -eq 0 ]
    echo "fp8-static W8A8: $(jq -c '[.kld.mean, .same_top]' <<<"$output")"
    jq -e '.act_quant == ["fp8-static"]' <<<"$output"
    # docs/quality.md level (100 KB protocol): W8A8 fp8-static 0.0412, top-1 85.0%; upper bound
    # +20% (measured here on 8 KB with 16 x 64 calibration: 0.0394); lower bound above the weights
    # alone (0.0248 documented, 0.0234 here): the activations' FP8 error must show
    jq -e '.kld.mean > 0.03 and .kld.mean < 0.05' <<<"$output"
    jq -e '.same_top > 0.80' <<<"$output"
    # the same weights without the activation simulation: a different (smaller) KLD
    k_w=$(as-eval -m "$(T ck-fp8s)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --act-quant none --json | jq -e '.kld.mean')
    k_wa=$(jq -e '.kld.mean' <<<"$output")
    echo "fp8-static weights only: $k_w"
    lt "$k_w" "$k_wa"
}

@test "fp8-dynamic, fp8-block, DeepSeek fp8: bytes match the oracle and as-eval loads them" {
    pack ct-fp "$(T fp8-dynamic.astr)" "$(T ck-fp8d)"
    pack ct-fp "$(T fp8-block.astr)" "$(T ck-fp8b)"
    pack fp8 "$(T fp8-block.astr)" "$(T ck-ds)"
    jq -e '.quantization_config | .quant_method == "fp8" and .weight_block_size == [128,128] and
           .activation_scheme == "dynamic" and .fmt == "e4m3"' "$(T ck-ds)/config.json"
    st_header "$(T ck-ds)/model.safetensors" | jq -e '.["model.layers.0.mlp.down_proj.weight_scale_inv"].shape == [1, 2]'
    python3 "$ORACLE_FP" float-quantized "$M" "$(T ck-fp8d)"
    python3 "$ORACLE_FP" float-quantized "$M" "$(T ck-fp8b)"
    python3 "$ORACLE_FP" fp8 "$M" "$(T ck-ds)"
    a=$(eval_json "$(T ck-fp8d)" "$M" 8000)
    echo "fp8-dynamic: $(jq -c '[.kld.mean, .same_top]' <<<"$a")"
    jq -e '.act_quant == ["fp8-dynamic"]' <<<"$a"
    # documented 0.0398 (measured here 0.0371); bounds as for fp8-static above
    jq -e '.kld.mean > 0.03 and .kld.mean < 0.048' <<<"$a"
    b=$(eval_json "$(T ck-ds)" "$M" 8000)
    c=$(eval_json "$(T ck-fp8b)" "$M" 8000)
    echo "fp8-block: $(jq -c '[.kld.mean, .same_top]' <<<"$b")"
    jq -e '.act_quant == ["fp8-group128"]' <<<"$b"
    # documented 0.0384 (measured here 0.0369)
    jq -e '.kld.mean > 0.03 and .kld.mean < 0.046' <<<"$b"
    # the two block checkpoints hold the same weights and activation scheme: same numbers
    [ "$(jq -e .ppl <<<"$b")" = "$(jq -e .ppl <<<"$c")" ]
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
    run cmp -s "$(T ck-i8s)/model.safetensors" "$(T ck-i8)/model.safetensors"
    [ "$status" -eq 1 ]
    python3 "$ORACLE_FP" int-quantized "$M" "$(T ck-i8)"
    python3 "$ORACLE_FP" nvfp4-pack-quantized "$M" "$(T ck-nv)"
    python3 "$ORACLE_FP" mxfp4-pack-quantized "$M" "$(T ck-mx)"
    python3 "$ORACLE_FP" w4a8 "$M" "$(T ck-w4a8)" "$CALIB"
    # act_quant and the KLD range on 8000 bytes of wikitext. Upper bounds: the docs/quality.md
    # levels (100 KB protocol, 128 x 256 calibration: int8 0.0037, + SmoothQuant 0.0036, nvfp4
    # packed 0.461, w4a8 all linears 0.358) + 20%, the spread between this shorter text and
    # calibration and the protocol's (measured here: 0.0035, 0.0036, 0.440, 0.347, i.e. within 5%
    # of those levels). mxfp4 packed (down_proj falls back) has no documented level: measured
    # 0.581, + 20%. Lower bounds (~0.7x measured): a KLD that low means the activation
    # quantization was not simulated (the weights alone cost less: int8 ~0.001, fp4 ~0.2-0.3).
    for spec in 'ck-i8 ["int8-dynamic"] 0.0025 0.0045' 'ck-i8s ["int8-dynamic"] 0.0025 0.0045' \
                'ck-nv ["nvfp4","none"] 0.31 0.55' 'ck-mx ["mxfp4","none"] 0.41 0.70' \
                'ck-w4a8 ["fp8-static","none"] 0.25 0.43'; do
        read -r d aq lo hi <<<"$spec"
        out=$(eval_json "$(T $d)" "$M" 8000)
        echo "$d: $(jq -c '[.act_quant, .ppl, .kld.mean, .same_top]' <<<"$out")"
        jq -e --argjson aq "$aq" '.act_quant == $aq' <<<"$out"
        jq -e --argjson lo "$lo" --argjson hi "$hi" '.kld.mean > $lo and .kld.mean < $hi' <<<"$out"
    done
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
    python3 "$ORACLE_FP" kv-cache "$M" "$(T ck-kv)" "$(T kv.astr)"
    python3 "$ORACLE_FP" float-quantized "$M" "$(T ck-kv)" "$(T kv.astr)"
    with=$(eval_json "$(T ck-kv)" "$M" 8000)
    jq -e '.kv_cache == "fp8-static"' <<<"$with"
    jq -e '.act_quant == ["fp8-static"]' <<<"$with"
    without=$(as-eval -m "$(T ck-kv)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --json --kv-cache none)
    jq -e '.kv_cache == null' <<<"$without"
    k1=$(jq -e .kld.mean <<<"$with")
    k0=$(jq -e .kld.mean <<<"$without")
    echo "fp8 kv cache: with $k1 without $k0"
    lt "$k0" "$k1"   # the FP8 cache costs something...
    # ...but stays close: documented 0.128 with the FP8 cache (measured here 0.118), + 20%
    lt "$k1" 0.154
    # the KV cache alone (weights and activations of the same checkpoint read, inputs unquantized)
    kvonly=$(as-eval -m "$(T ck-kv)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --json --act-quant none | jq -e .kld.mean)
    wonly=$(as-eval -m "$(T ck-kv)" -b "$M" -f "$WIKI" --bytes 8000 --ctx 256 --json --act-quant none --kv-cache none | jq -e .kld.mean)
    lt "$wonly" "$kvonly"
}

@test "FP8 KV cache errors: missing statistics, incomplete layers, bad scales, bad options" {
    run --separate-stderr as-lepto -m "$M" -s fp8-static --kv-cache fp8 "$CALIB"
    refused "as-lepto: layer 0: no model.layers.0.self_attn.kv_absmax record in the stream (--kv-cache fp8 needs the keys' and values' absmax: as-calib --kv-stats)"
    run --separate-stderr as-lepto -m "$M" -s fp8-static --kv-cache fp16 "$CALIB"
    refused "as-lepto: --kv-cache 'fp16': expected fp8"
    run --separate-stderr as-calib -m "$M" -d "$AUSTEN" -n 2 -l 32 --kv-stats --sequential cat
    refused "as-calib: --kv-stats measures the full-precision model's KV cache; it does not combine with --sequential"
    [ -s "$(T kv.astr)" ] || as-calib -m "$M" -d "$AUSTEN" -n 6 -l 64 --keep-seqs 6 --kv-stats >"$(T kv.astr)" 2>/dev/null
    # scales for layers 0-1 only: as-pack names the first missing one, writes nothing
    as-lepto -m "$M" -s fp8-static --kv-cache fp8 --layers 0-1 "$(T kv.astr)" >"$(T kv01.astr)"
    run --separate-stderr as-pack -m "$M" -f ct-fp -o "$(T ck-kv01)" "$(T kv01.astr)"
    refused "as-pack: tensor model.layers.2.self_attn.k_scale: missing from the input stream (FP8 KV-cache scales must cover all 5 layers: as-lepto --kv-cache fp8)"
    no_leftovers "$BATS_FILE_TMPDIR" ck-kv01
    # a NaN / negative v_scale in a checkpoint: as-eval names file and tensor
    [ -d "$(T ck-kv)" ] || { as-lepto -m "$M" -s fp8-static --kv-cache fp8 "$(T kv.astr)" >"$(T kv8.astr)"; pack ct-fp "$(T kv8.astr)" "$(T ck-kv)"; }
    for spec in '\x00\x00\xc0\x7f nan' '\x00\x00\x80\xbf -1' '\x00\x00\x00\x00 0'; do
        read -r bytes shown <<<"$spec"
        rm -rf "$(T ck-kvbad)"
        cp -r "$(T ck-kv)" "$(T ck-kvbad)"
        f="$(T ck-kvbad)/model.safetensors"
        off=$(st_offset "$f" model.layers.3.self_attn.v_scale)
        printf "$bytes" | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null
        run --separate-stderr as-eval -m "$(T ck-kvbad)" -f "$WIKI" --bytes 5000 --ctx 128
        refused "as-eval: file $f: tensor model.layers.3.self_attn.v_scale: scale $shown is not a positive finite number"
    done
    # --kv-cache none evaluates it anyway (the scales are not read)
    run as-eval -m "$(T ck-kvbad)" -f "$WIKI" --bytes 5000 --ctx 128 --kv-cache none
    [ "$status" -eq 0 ]
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 5000 --ctx 128 --kv-cache fp8
    refused "as-eval: --kv-cache 'fp8': expected auto or none"
}

@test "the oracle detects a flipped code byte" {
    pack ct-fp "$(T fp8-dynamic.astr)" "$(T ck-flip)"
    f="$(T ck-flip)/model.safetensors"
    off=$(st_offset "$f" model.layers.1.self_attn.k_proj.weight)
    printf '\x33' | dd of="$f" bs=1 seek=$((off + 5)) conv=notrunc 2>/dev/null
    run python3 "$ORACLE_FP" float-quantized "$M" "$(T ck-flip)"
    [ "$status" -eq 1 ]
    [[ "$output" == *"k_proj: FP8 code"* ]]
}

@test "LeptoQuant: 13 candidates per group, never worse than absmax on its block-output loss" {
    r=$(T lepto.jsonl)
    [ "$(wc -l <"$r")" -eq 20 ] # 5 layers x 4 groups
    jq -se 'all(.[]; .loss <= .loss_absmax)' "$r"
    jq -se 'all(.[]; .reduction >= 0)' "$r"
    jq -se 'all(.[]; (.candidates | length) == 13)' "$r"
    jq -se 'all(.[]; .percentile >= 0.9994 and .percentile <= 1.0)' "$r"
    jq -se 'all(.[]; (.candidates | map(.loss) | min) >= .loss)' "$r"
    # every reported loss, candidate scale and choice recomputed in float64 from the model and the
    # kept layer inputs (attention / MLP forward written in the oracle), not read from the tool
    python3 "$ORACLE_FP" lepto-loss "$M" "$CALIB" "$r"
    pack ct-fp "$(T lepto.astr)" "$(T ck-lepto)"
    out=$(eval_json "$(T ck-lepto)" "$M" 8000)
    echo "lepto fp8-static: $(jq -c '[.kld.mean, .same_top]' <<<"$out")"
    jq -e '.act_quant == ["fp8-static"]' <<<"$out"
    # documented 0.0416 for LeptoQuant fp8-static (measured here 0.0394); bounds as for absmax
    jq -e '.kld.mean > 0.03 and .kld.mean < 0.05' <<<"$out"
}

@test "fakequant-fp: dense W_hat plus input scales evaluates like the packed checkpoint" {
    pack fakequant-fp "$(T fp8-static.astr)" "$(T ck-fq)"
    [ -d "$(T ck-fp8s)" ] || pack ct-fp "$(T fp8-static.astr)" "$(T ck-fp8s)"
    jq -e '.quantization_config.quant_method == "as-fakequant"' "$(T ck-fq)/config.json"
    a=$(eval_json "$(T ck-fq)" "$M" 8000 | jq -e .ppl)
    b=$(eval_json "$(T ck-fp8s)" "$M" 8000 | jq -e .ppl)
    [ "$a" = "$b" ]
}

@test "--analyze: per-tensor statistics, outlier flags, SVG histogram" {
    run as-lepto -m "$M" --analyze --json --svg "$(T hist.svg)" --tensor model.layers.2.mlp.down_proj.weight "$CALIB"
    [ "$status" -eq 0 ]
    [ "$(grep -c '"kind":"weight"' <<<"$output")" -eq 35 ]
    [ "$(grep -c '"kind":"input"' <<<"$output")" -eq 20 ]
    line=$(grep '"tensor":"model.layers.0.attn_qkv"' <<<"$output")
    jq -e '.kurtosis > 0' <<<"$line"
    jq -e '.fp8_zero >= 0' <<<"$line"
    jq -e '.fp8_saturated == 0' <<<"$line"
    jq -e '.absmax > .absmean' <<<"$line"
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
    # static scales without statistics (a valid stream of weights only)
    as-cat "$M" >"$(T weights.astr)"
    run --separate-stderr as-lepto -m "$M" -s fp8-static "$(T weights.astr)"
    refused "as-lepto: layer 0: no model.layers.0.attn_qkv.act_absmax record in the stream (fp8-static needs calibration statistics: as-calib)"
    # no stream at all
    run --separate-stderr as-lepto -m "$M" -s fp8-static /dev/null
    refused "as-lepto: stream /dev/null: truncated after record 0 (no end record)"
    # lepto without whole sequences
    as-calib -m "$M" -d "$AUSTEN" -n 4 -l 32 >"$(T nokeep.astr)" 2>/dev/null
    run --separate-stderr as-lepto -m "$M" -s fp8-static --method lepto "$(T nokeep.astr)"
    refused "as-lepto: layer 0: no model.layers.0.input record in the stream (--method lepto needs whole sequences: as-calib --keep-seqs S)"
    run --separate-stderr as-lepto -m "$M" -s fp9
    refused "as-lepto: --scheme 'fp9': expected fp8-static, fp8-dynamic, fp8-block, int8-dynamic, nvfp4, mxfp4 or w4a8-fp8"
    run --separate-stderr as-lepto -m "$M" -s nvfp4 --method lepto "$CALIB"
    refused "as-lepto: --method lepto searches static FP8 input scales: use it with fp8-static or w4a8-fp8"
    # truncated record stream
    head -c 3000 "$(T fp8-dynamic.astr)" >"$(T trunc.astr)"
    run --separate-stderr as-pack -m "$M" -f ct-fp -o "$(T ck-trunc)" "$(T trunc.astr)"
    refused "as-pack: stream $(T trunc.astr): record 1 (model.layers.0.self_attn.q_proj.weight_codes): truncated in payload (got 2616 of 4096 bytes)"
    no_leftovers "$BATS_FILE_TMPDIR" ck-trunc
    # format that cannot hold the scheme
    run --separate-stderr as-pack -m "$M" -f int-quantized -o "$(T ck-bad)" "$(T fp8-dynamic.astr)"
    refused "as-pack: format int-quantized cannot hold weights fp8-channel with activations fp8-dynamic"
    no_leftovers "$BATS_FILE_TMPDIR" ck-bad
    # a negative input_scale in a checkpoint: as-eval names file and tensor
    [ -d "$(T ck-fp8s)" ] || pack ct-fp "$(T fp8-static.astr)" "$(T ck-fp8s)"
    cp -r "$(T ck-fp8s)" "$(T ck-neg)"
    f="$(T ck-neg)/model.safetensors"
    off=$(st_offset "$f" model.layers.3.mlp.up_proj.input_scale)
    printf '\x00\x00\x80\xbf' | dd of="$f" bs=1 seek="$off" conv=notrunc 2>/dev/null
    run --separate-stderr as-eval -m "$(T ck-neg)" -f "$WIKI" --bytes 5000 --ctx 128
    refused "as-eval: file $f: tensor model.layers.3.mlp.up_proj.input_scale: input scale -1 is not positive finite"
    run --separate-stderr as-eval -m "$M" -f "$WIKI" --bytes 5000 --ctx 128 --act-quant fp8-static
    refused "as-eval: --act-quant 'fp8-static': expected auto, none, fp8-dynamic, fp8-tensor-dynamic, fp8-group128, int8-dynamic or mxfp4 (static schemes take their scales from the checkpoint: auto)"
}

@test "a damaged statistic (negative or NaN act_absmax in a well-formed stream) is refused, named" {
    as-cat --inline "$CALIB" >"$(T inl.astr)"
    for spec in "-2.5 element 3 is -2.5, a magnitude must be finite and >= 0" "nan non-finite value at 3"; do
        read -r v why <<<"$spec"
        python3 "$BATS_TEST_DIRNAME/stream_oracle.py" set "$(T inl.astr)" "$(T bad.astr)" \
            model.layers.1.attn_qkv.act_absmax 3 $v
        run --separate-stderr as-lepto -m "$M" -s fp8-static "$(T bad.astr)"
        refused "as-lepto: stream $(T bad.astr): tensor model.layers.1.attn_qkv.act_absmax: $why"
    done
    # the untouched copy is accepted (the editing itself is sound)
    python3 "$BATS_TEST_DIRNAME/stream_oracle.py" set "$(T inl.astr)" "$(T ok.astr)" \
        model.layers.1.attn_qkv.act_absmax 3 1.5
    as-lepto -m "$M" -s fp8-static "$(T ok.astr)" >/dev/null
}
