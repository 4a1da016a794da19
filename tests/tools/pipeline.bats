#!/usr/bin/env bats
# The whole pipeline on the bundled stories260K: import -> eval against the independent reference
# values of data/README.md (PPL, and RTN's KLD/PPL, which must match to the digits shown), calib ->
# gptq -> pack (GPTQ, true-sequential and GPTAQ at the README's textbook-GPTQ levels), the GPTQ v1 and
# compressed-tensors checkpoints against the fakequant one (as-eval PPL, and an independent Python
# reader written from REFERENCE.md), and the formats' config keys.

load helpers
# a failure anywhere in a pipeline fails the test, not only its last command
set -o pipefail

setup_file() {
    import_model
    export CAL=$BATS_FILE_TMPDIR/calib.astr G432=$BATS_FILE_TMPDIR/gptq-w4g32.astr
    # smaller than the quality protocol (128 x 256), for speed
    as-calib -m "$M" -d "$AUSTEN" -n 32 -l 256 >"$CAL" 2>/dev/null
    as-gptq -b 4 -g 32 <"$CAL" >"$G432"
    as-pack -m "$M" -f fakequant -o "$BATS_FILE_TMPDIR/FQ432" <"$G432" 2>/dev/null
}

setup() {
    T=$BATS_TEST_TMPDIR
    F=$BATS_FILE_TMPDIR
}

@test "as-import + as-eval: first 20 KB of wikitext, 12,349 tokens, PPL 126.1905 (data/README.md)" {
    run eval_json "$M" - 20000
    [ "$status" -eq 0 ]
    [ "$(jq '.tokens' <<<"$output")" -eq 12349 ]
    [ "$(jq '.windows, .scored' <<<"$output" | tr '\n' ' ')" = "48 6096 " ] # 48 x 127
    [ "$(printf '%.4f' "$(jq '.ppl' <<<"$output")")" = 126.1905 ]
}

# rtn_reference BITS GROUP KLD KLD_FORMAT PPL: 100 KB protocol, exact to the digits shown.
rtn_reference() {
    rtn_fakequant "$1" "$2" "$F/rtn-$1-$2"
    run eval_json "$F/rtn-$1-$2" "$M" 100000
    [ "$status" -eq 0 ]
    echo "$output"
    [ "$(jq '.tokens' <<<"$output")" -eq 63188 ]
    [ "$(printf '%.4f' "$(jq '.base_ppl' <<<"$output")")" = 160.3167 ]
    [ "$(printf "$4" "$(jq '.kld.mean' <<<"$output")")" = "$3" ]
    [ "$(printf '%.2f' "$(jq '.ppl' <<<"$output")")" = "$5" ]
}

@test "RTN W8 per-channel through the stream: KLD 0.00146, PPL 160.66 (reference)" {
    rtn_reference 8 -1 0.00146 '%.5f' 160.66
}

@test "RTN W4 per-channel: KLD 0.4108, PPL 201.61 (reference)" {
    rtn_reference 4 -1 0.4108 '%.4f' 201.61
}

@test "RTN W4 g32 (ragged last group of down_proj): KLD 0.3414, PPL 196.76 (reference)" {
    rtn_reference 4 32 0.3414 '%.4f' 196.76
}

@test "RTN W3 g32: KLD 1.383, PPL 304.01 (reference)" {
    rtn_reference 3 32 1.383 '%.3f' 304.01
}

@test "as-ls/as-cat on the calibration stream: jq-able, 95 records, roles, shapes, tokens, refs" {
    run bash -o pipefail -c "as-ls '$CAL' | jq -s 'length'"
    [ "$output" -eq 95 ] # 5 layers x 4 groups x (hessian, act-mean-abs, act-absmax) + 35 weights
    run bash -o pipefail -c "as-ls '$CAL' | jq -r '.role' | sort | uniq -c | awk '{print \$2\"=\"\$1}' | tr '\n' ' '"
    [ "$output" = "act-absmax=20 act-mean-abs=20 hessian=20 weight=35 " ]
    # Hessians: [K,K] with K the group's input width; statistics over 32 x 256 tokens
    run bash -o pipefail -c "as-ls '$CAL' | jq -r 'select(.role == \"hessian\") | \"\(.attrs.group) \(.shape) \(.attrs.tokens) \(.attrs.targets | length)\"' | sort -u"
    [ "${lines[0]}" = "attn_o [64,64] 8192 1" ]
    [ "${lines[1]}" = "attn_qkv [64,64] 8192 3" ]
    [ "${lines[2]}" = "mlp_down [172,172] 8192 1" ]
    [ "${lines[3]}" = "mlp_gate_up [64,64] 8192 2" ]
    [ "${#lines[@]}" -eq 4 ]
    # the weights travel by reference into the model, at the offsets of its own header
    want=$(st_offset "$M/model.safetensors" model.layers.3.mlp.down_proj.weight)
    run bash -o pipefail -c "as-ls '$CAL' | jq -r 'select(.name == \"model.layers.3.mlp.down_proj.weight\") | \"\(.payload.kind) \(.payload.offset) \(.payload.file)\"'"
    [ "$output" = "ref $want $(realpath "$M/model.safetensors")" ]
    # as-cat passes the stream through unchanged in content
    diff <(as-ls "$CAL") <(as-cat "$CAL" | as-ls)
    run bash -o pipefail -c "as-ls --summary '$CAL' | jq -c '[.kind, .records, .layers]'"
    [ "$output" = '["stream",95,[0,4]]' ]
}

@test "as-cat --layer on the calibration stream; quantizing that layer alone packs only it" {
    run bash -o pipefail -c "as-cat --layer 2 '$CAL' | as-ls | jq -r '.layer' | sort | uniq -c | awk '{print \$1, \$2}'"
    [ "$output" = "19 2" ]
    run bash -o pipefail -c "as-cat --layer 1-2 '$CAL' | as-ls | jq -s 'length'"
    [ "$output" -eq 38 ]
    run bash -o pipefail -c "as-cat --layer 2 --role hessian '$CAL' | as-ls | jq -r '.name' | tr '\n' ' '"
    [ "$output" = "model.layers.2.attn_qkv.hessian model.layers.2.attn_o.hessian model.layers.2.mlp_gate_up.hessian model.layers.2.mlp_down.hessian " ]
    as-cat --layer 2 "$CAL" | as-gptq -b 4 -g 32 >"$T/l2.astr"
    run bash -o pipefail -c "as-ls '$T/l2.astr' | jq -r 'select(.role == \"qweight\") | .layer' | uniq -c | awk '{print \$1, \$2}'"
    [ "$output" = "7 2" ]
    run bash -o pipefail -c "as-pack -m '$M' -f fakequant -o '$T/P' --json <'$T/l2.astr'"
    [ "$status" -eq 0 ]
    [ "$(jq '.quantized' <<<"$output")" -eq 7 ]
    # layer 2's linears changed, every other tensor is the original's
    run bash -o pipefail -c "diff <(as-cat --inline '$M' | as-cat -x 'layers\\.2\\.' | as-ls | jq -r '.payload.xxh3') \
                      <(as-cat --inline '$T/P' | as-cat -x 'layers\\.2\\.' | as-ls | jq -r '.payload.xxh3')"
    [ "$status" -eq 0 ]
    run bash -o pipefail -c "diff <(as-cat --inline '$M' | as-cat -n 'layers\\.2\\..*proj' | as-ls | jq -r '.payload.xxh3') \
                      <(as-cat --inline '$T/P' | as-cat -n 'layers\\.2\\..*proj' | as-ls | jq -r '.payload.xxh3') | grep -c '^<'"
    [ "$output" -eq 7 ]
}

# kld100 MODEL: mean KLD against $M on the quality protocol's text (first 100 KB of wikitext),
# the text of data/README.md's reference levels.
kld100() { eval_json "$1" "$M" 100000 | jq -e '.kld.mean'; }

# Reference levels (data/README.md, 100 KB protocol): RTN exactly (checked digit for digit
# above), and a textbook GPTQ calibrated on 128 windows of 256 tokens, "the level to reach or
# beat". Calibration here is smaller (32 x 256, 8 x 128 for the sequential modes): the margin
# over the textbook level is that sampling's spread, +10% (+15% at W4 g32, where our own
# 128-window protocol measures 0.228, 6% above the README's 0.215: docs/quality.md). Measured
# with this test's calibration: W4 pc 0.293, W3 g32 0.965, W4 g32 0.230, true-sequential W4 g32
# 0.229, GPTAQ W4 g32 0.218.
# at_level MODEL LEVEL RTN: mean KLD below LEVEL and below RTN's reference KLD.
at_level() {
    k=$(kld100 "$1")
    echo "KLD $k, bound $2 (RTN reference $3)"
    lt "$k" "$2"
    lt "$k" "$3"
}

@test "GPTQ W4 per-channel: KLD at the textbook level (0.293 + 10%), below RTN's 0.4108" {
    as-gptq -b 4 -g -1 <"$CAL" | as-pack -m "$M" -f fakequant -o "$T/G" 2>/dev/null
    at_level "$T/G" 0.322 0.4108
}

@test "GPTQ W3 g32: KLD at the textbook level (0.951 + 10%), below RTN's 1.383" {
    as-gptq -b 3 -g 32 <"$CAL" | as-pack -m "$M" -f fakequant -o "$T/G" 2>/dev/null
    at_level "$T/G" 1.046 1.383
}

@test "GPTQ W4 g32: KLD at the textbook level (0.215 + 15%), below RTN's 0.3414" {
    at_level "$F/FQ432" 0.247 0.3414
}

@test "true-sequential: as-calib --sequential 'as-gptq -b 4 -g 32' packs, every layer marked, KLD at the GPTQ level" {
    as-calib -m "$M" -d "$AUSTEN" -n 8 -l 128 --sequential "as-gptq -b 4 -g 32" >"$T/seq.astr" 2>/dev/null
    run bash -o pipefail -c "as-ls '$T/seq.astr' | jq -s 'length'"
    [ "$output" -eq 140 ] # 35 linears x (qweight, scale, zero, g_idx)
    # the scheme attrs live on the qweight record (qstream.h): all 35 say true_sequential
    run bash -o pipefail -c "as-ls '$T/seq.astr' | jq -r 'select(.role == \"qweight\") | \"\(.attrs.true_sequential) \(.attrs.method) \(.attrs.bits) \(.attrs.group_size)\"' | sort | uniq -c | awk '{\$1=\$1; print}'"
    [ "$output" = "35 true gptq 4 32" ]
    as-pack -m "$M" -f fakequant -o "$T/S" <"$T/seq.astr" 2>/dev/null
    # docs/quality.md: no systematic difference from full-precision statistics on this model
    # (0.230 vs 0.228): the textbook GPTQ level of W4 g32, as above
    at_level "$T/S" 0.247 0.3414
    # GPTQ v1 records it in quantize_config.json
    as-pack -m "$M" -f gptq -o "$T/SG" <"$T/seq.astr" 2>/dev/null
    [ "$(jq '.true_sequential' "$T/SG/quantize_config.json")" = true ]
    [ "$(jq '.quantization_config.true_sequential' "$T/SG/config.json")" = true ]
}

@test "GPTAQ: --sequential 'as-gptq -m gptaq -b 4 -g 32' --gptaq packs, KLD at or below the GPTQ level" {
    as-calib -m "$M" -d "$AUSTEN" -n 8 -l 128 --sequential "as-gptq -m gptaq -b 4 -g 32" --gptaq \
        >"$T/a.astr" 2>/dev/null
    run bash -o pipefail -c "as-ls '$T/a.astr' | jq -r 'select(.role == \"qweight\") | \"\(.attrs.true_sequential) \(.attrs.method)\"' | sort | uniq -c | awk '{\$1=\$1; print}'"
    [ "$output" = "35 true gptaq" ]
    as-pack -m "$M" -f fakequant -o "$T/A" <"$T/a.astr" 2>/dev/null
    # GPTAQ is at least as good as GPTQ (docs/quality.md: 0.205 vs 0.228 at W4 g32): the
    # textbook GPTQ level 0.215 + 10%
    at_level "$T/A" 0.237 0.3414
    # GPTAQ without the dXXᵀ records is refused rather than silently run as GPTQ
    run --separate-stderr bash -c "as-gptq -m gptaq -b 4 -g 32 <'$CAL' >/dev/null"
    assert_error "gptaq-dxx"
}

@test "as-pack -f compressed-tensors (F32 scales): PPL exactly the fakequant checkpoint's" {
    run bash -o pipefail -c "as-pack -m '$M' -f compressed-tensors -o '$T/CT' --json <'$G432' 2>/dev/null"
    [ "$status" -eq 0 ]
    # down_proj (172 inputs, ragged g32) is the only layer kept dequantized; verified read-back
    [ "$(jq -c '[.quantized, .packed, .fallback, .verified]' <<<"$output")" = '[35,30,5,true]' ]
    ct=$(eval_json "$T/CT" - 20000 | jq -e '.ppl')
    fq=$(eval_json "$F/FQ432" - 20000 | jq -e '.ppl')
    echo "ct $ct fakequant $fq"
    [ "$ct" = "$fq" ]
}

@test "compressed-tensors config.json quantization_config per REFERENCE.md" {
    as-pack -m "$M" -f compressed-tensors -o "$T/CT" <"$G432" 2>/dev/null
    q=$(jq -c '.quantization_config' "$T/CT/config.json")
    [ "$(jq -r '.quant_method, .format, .quantization_status' <<<"$q" | tr '\n' ' ')" = "compressed-tensors pack-quantized compressed " ]
    [ "$(jq -c '[.kv_cache_scheme, .sparsity_config, .global_compression_ratio]' <<<"$q")" = '[null,{},null]' ]
    [ "$(jq -c '.config_groups | keys' <<<"$q")" = '["group_0"]' ]
    g=$(jq -c '.config_groups.group_0' <<<"$q")
    [ "$(jq -c '[.targets, .input_activations, .output_activations, .format]' <<<"$g")" = '[["Linear"],null,null,"pack-quantized"]' ]
    [ "$(jq -c '.weights | [.num_bits, .type, .symmetric, .group_size, .strategy, .dynamic, .actorder]' <<<"$g")" = '[4,"int",true,32,"group",false,null]' ]
    [ "$(jq -r '.ignore[0]' <<<"$q")" = lm_head ]
    [ "$(jq -r '.ignore[1:] | join(" ")' <<<"$q")" = "$(printf 'model.layers.%d.mlp.down_proj ' 0 1 2 3 4 | sed 's/ $//')" ]
    # the other keys of the original config are kept
    [ "$(jq -c 'del(.quantization_config)' "$T/CT/config.json")" = "$(jq -c . "$M/config.json")" ]
    # tensors: weight_packed I32 [N, K/8], weight_scale F32 [N, K/32], weight_shape I32 [2]
    run bash -o pipefail -c "as-ls '$T/CT' | jq -r 'select(.name | startswith(\"model.layers.0.self_attn.k_proj\")) | \"\(.name | split(\".\") | last) \(.dtype) \(.shape)\"'"
    [ "$output" = "$(printf 'weight_packed I32 [32,8]\nweight_scale F32 [32,2]\nweight_shape I32 [2]')" ]
    [ -f "$T/CT/tokenizer.json" ]
}

@test "as-pack -f gptq (fp16 scales): PPL within 4e-5 of fakequant; --no-verify; read-back on by default" {
    run bash -o pipefail -c "as-pack -m '$M' -f gptq -o '$T/GQ' --json <'$G432' 2>/dev/null"
    [ "$status" -eq 0 ]
    # 172-wide in/out features do not fill 32-bit words: the mlp layers fall back (REFERENCE.md)
    [ "$(jq -c '[.quantized, .packed, .fallback, .verified]' <<<"$output")" = '[35,20,15,true]' ]
    gq=$(eval_json "$T/GQ" - 20000 | jq -e '.ppl')
    fq=$(eval_json "$F/FQ432" - 20000 | jq -e '.ppl')
    echo "gptq $gq fakequant $fq"
    d=$(awk -v a="$gq" -v b="$fq" 'BEGIN { d = (a - b) / b; print (d < 0 ? -d : d) }')
    echo "relative PPL difference $d"
    # fp16 scales (2^-11 relative rounding): measured 2.9e-5 relative in PPL; bound 4e-5 (+35%)
    lt "$d" 4e-5
    run bash -o pipefail -c "as-pack -m '$M' -f gptq -o '$T/GQ2' --no-verify --json <'$G432' 2>/dev/null"
    [ "$(jq '.verified' <<<"$output")" = false ]
    cmp "$T/GQ/model.safetensors" "$T/GQ2/model.safetensors"
}

@test "GPTQ quantize_config.json and config.json quantization_config per REFERENCE.md" {
    as-pack -m "$M" -f gptq -o "$T/GQ" <"$G432" 2>/dev/null
    for q in "$(jq -c . "$T/GQ/quantize_config.json")" "$(jq -c .quantization_config "$T/GQ/config.json")"; do
        for k in bits group_size damp_percent desc_act static_groups sym true_sequential quant_method checkpoint_format; do
            echo "key $k"
            jq -e --arg k "$k" 'has($k)' <<<"$q"
        done
        [ "$(jq -c '[.bits, .group_size, .desc_act, .static_groups, .sym, .true_sequential, .quant_method, .checkpoint_format]' <<<"$q")" = '[4,32,false,false,true,false,"gptq","gptq"]' ]
        jq -e '(.damp_percent - 0.01 | fabs) < 1e-6' <<<"$q"
    done
    [ "$(jq -c . "$T/GQ/quantize_config.json")" = "$(jq -c .quantization_config "$T/GQ/config.json")" ]
    # tensors: qweight I32 [K*4/32, N], qzeros I32 [G, N*4/32], scales F16 [G, N], g_idx I32 [K]
    run bash -o pipefail -c "as-ls '$T/GQ' | jq -r 'select(.name | startswith(\"model.layers.0.self_attn.k_proj\")) | \"\(.name | split(\".\") | last) \(.dtype) \(.shape)\"'"
    [ "$output" = "$(printf 'g_idx I32 [64]\nqweight I32 [8,32]\nqzeros I32 [2,4]\nscales F16 [2,32]')" ]
}

# The Python oracle needs numpy and safetensors (.venv, `make deps`): missing is a failure.

@test "independent oracle: GPTQ v1 checkpoint = fakequant with fp16 scales (W4 g32 GPTQ, W3 g32, W8 pc)" {
    as-pack -m "$M" -f gptq -o "$T/GQ" <"$G432" 2>/dev/null
    run python3 "$ORACLE" gptq "$T/GQ" "$F/FQ432" "$M"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = '{"packed": 20, "fallback": 15, "copied": 12}' ]
    for cfg in "3 32" "8 -1"; do
        set -- $cfg
        as-cat "$M" | as-gptq --method rtn -b "$1" -g "$2" >"$T/r.astr"
        as-pack -m "$M" -f fakequant -o "$T/RF" <"$T/r.astr" 2>/dev/null
        as-pack -m "$M" -f gptq -o "$T/RG" <"$T/r.astr" 2>/dev/null
        run python3 "$ORACLE" gptq "$T/RG" "$T/RF" "$M"
        echo "W$1 g$2: $output"
        [ "$status" -eq 0 ]
        [ "$(jq '.packed' <<<"$output")" -ge 20 ]
    done
}

@test "independent oracle: compressed-tensors checkpoint = fakequant exactly" {
    as-pack -m "$M" -f compressed-tensors -o "$T/CT" <"$G432" 2>/dev/null
    run python3 "$ORACLE" ct "$T/CT" "$F/FQ432" "$M"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = '{"packed": 30, "fallback": 5, "copied": 12}' ]
}

@test "the oracle can fail: a damaged qzeros word or qweight code is detected" {
    as-pack -m "$M" -f gptq -o "$T/GQ" <"$G432" 2>/dev/null
    cp -r "$T/GQ" "$T/Z"
    st_patch "$T/Z/model.safetensors" model.layers.1.self_attn.o_proj.qzeros 0 '\x66'
    run python3 "$ORACLE" gptq "$T/Z" "$F/FQ432" "$M"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"model.layers.1.self_attn.o_proj"* ]]
    cp -r "$T/GQ" "$T/Q"
    b=$(od -An -tx1 -N1 -j "$(st_offset "$T/Q/model.safetensors" model.layers.4.self_attn.v_proj.qweight)" "$T/Q/model.safetensors" | tr -d ' ')
    st_patch "$T/Q/model.safetensors" model.layers.4.self_attn.v_proj.qweight 0 "\\x$(printf '%02x' $((0x$b ^ 0x01)))"
    run python3 "$ORACLE" gptq "$T/Q" "$F/FQ432" "$M"
    echo "$output"
    [ "$status" -eq 1 ]
    [[ "$output" == *"model.layers.4.self_attn.v_proj"* ]]
}
