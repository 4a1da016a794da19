#!/usr/bin/env bats
# Every recipe of pipelines/ run end to end on stories260K with a small calibration (16 windows of
# 128 tokens from Austen), each checked for: the output loads (as-eval on the first 100 KB of
# wikitext, ctx 256: the quality protocol's text), its quality within a stated bound set from an
# independent expectation, its bytes read by an independent reader where one exists, and that the
# recipe is restartable (a second make has nothing to do and rewrites nothing).
#
# Bounds: data/README.md gives, on this text, RTN W4 g32 KLD 0.3414 / PPL 196.76 exactly and the
# level of a textbook GPTQ W4 g32: KLD 0.215. Every W4 g32 recipe with calibration (AWQ, AWQ+GPTQ,
# GPTQ with scale search into GGUF Q4_0/Q4_1) must reach that level (measured 0.13-0.20), and,
# as a regression bound, stay within 3% of what was measured with this calibration (the run is
# deterministic; 3% covers summation-order differences of another BLAS): AWQ 0.1975, Q4_0 0.1779,
# Q4_1 0.1310 (AWQ with 2 ratios instead of 20 gives 0.2101, GPTQ without scale search 0.2). The
# FP8/INT8/NVFP4 schemes have no published reference: their bytes are checked by fp_oracle.py, and
# their KLD bounds are 25% above what was measured (fp8-static 0.0414, fp8-dynamic 0.0398, int8
# 0.00374, nvfp4 0.458), with the order the formats' precision implies: int8 < fp8 < nvfp4.

load helpers

setup_file() {
    import_model
}

setup() {
    T=$BATS_TEST_TMPDIR
}

# recipe NAME OUT VAR=VALUE...: run pipelines/NAME.mk with the small calibration and the
# 100 KB evaluation; the programs from AS_BIN (tests/run), so wrapped programs are seen.
recipe() {
    local name=$1 out=$2
    shift 2
    make --no-print-directory -s -f "pipelines/$name.mk" BIN="$AS_BIN" MODEL="$M" DATA="$AUSTEN" \
        OUT="$out" SAMPLES=16 SEQLEN=128 EVAL_TEXT="$WIKI" EVAL_BYTES=100000 EVAL_CTX=256 "$@"
}

# restartable NAME OUT VAR=VALUE...: after a complete run, make -q says everything is up to date,
# and running it again rewrites no file (modification times and contents unchanged).
restartable() {
    local name=$1 out=$2 before after
    shift 2
    run recipe "$name" "$out" -q "$@"
    [ "$status" -eq 0 ]
    before=$(cd "$out" && find . -type f -printf '%p %T@ %s\n' | sort)
    run recipe "$name" "$out" "$@"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    after=$(cd "$out" && find . -type f -printf '%p %T@ %s\n' | sort)
    [ "$before" = "$after" ]
}

# Each recipe test runs from the repository root (the recipes are addressed as pipelines/...).
cd "$BATS_TEST_DIRNAME/../.."

# quality FILE: sets kld and ppl from an eval.json, after checking that the text was the 100 KB
# one, 63,188 tokens, with base PPL 160.3167 (data/README.md) whatever the recipe. Called as a
# plain command (never in a pipe or process substitution) so that its checks fail the test.
quality() {
    [ "$(jq '.tokens' "$1")" -eq 63188 ]
    [ "$(printf '%.4f' "$(jq '.base_ppl' "$1")")" = 160.3167 ]
    kld=$(jq -e '.kld.mean' "$1")
    ppl=$(jq -e '.ppl' "$1")
}

@test "w4a16-rtn.mk: RTN W4 g32 reproduces data/README.md exactly (KLD 0.3414, PPL 196.76); GPTQ v1 bytes read independently" {
    recipe w4a16-rtn "$T/fq" GROUP=32 FORMAT=fakequant 2>/dev/null
    quality "$T/fq/eval.json"
    echo "RTN W4 g32: KLD $kld PPL $ppl"
    [ "$(printf '%.4f' "$kld")" = 0.3414 ]
    [ "$(printf '%.2f' "$ppl")" = 196.76 ]
    # the recipe's own format: GPTQ v1, read by the independent reader against the fakequant
    recipe w4a16-rtn "$T/gptq" GROUP=32 checkpoint 2>/dev/null
    jq -e '.quantization_config.quant_method == "gptq" and .quantization_config.bits == 4 and
           .quantization_config.group_size == 32' "$T/gptq/checkpoint/config.json"
    python3 "$BATS_TEST_DIRNAME/gptq_pack_oracle.py" gptq "$T/gptq/checkpoint" "$T/fq/checkpoint" "$M"
    restartable w4a16-rtn "$T/fq" GROUP=32 FORMAT=fakequant
}

@test "w4a16-awq.mk: AWQ W4 g32 (zero point) reaches the GPTQ level KLD < 0.215; AWQ GEMM checkpoint; restartable" {
    recipe w4a16-awq "$T/awq" GROUP=32 2>/dev/null
    jq -e '.quantization_config.quant_method == "awq" and .quantization_config.zero_point == true and
           .quantization_config.group_size == 32' "$T/awq/checkpoint/config.json"
    st_header "$T/awq/checkpoint/model.safetensors" | jq -e '.["model.layers.0.self_attn.q_proj.qweight"].shape == [64, 8]'
    quality "$T/awq/eval.json"
    echo "AWQ W4 g32: KLD $kld PPL $ppl"
    lt "$kld" 0.215
    lt "$kld" 0.2035
    # every layer reported, one line per searched group
    [ "$(jq -s 'length' "$T/awq/awq-report.jsonl")" -gt 0 ]
    [ "$(jq -s '[.[].layer] | unique' "$T/awq/awq-report.jsonl" | jq -c .)" = "[0,1,2,3,4]" ]
    restartable w4a16-awq "$T/awq" GROUP=32
}

@test "w4a16-awq.mk GPTQ=1: AWQ scales + GPTQ rounding into compressed-tensors, KLD < 0.215, better than AWQ rounding alone" {
    recipe w4a16-awq "$T/ag" GROUP=32 GPTQ=1 FORMAT=compressed-tensors 2>/dev/null
    jq -e '.quantization_config.format == "pack-quantized"' "$T/ag/checkpoint/config.json"
    recipe w4a16-awq "$T/awq" GROUP=32 FORMAT=fakequant 2>/dev/null
    quality "$T/awq/eval.json"
    kawq=$kld
    quality "$T/ag/eval.json"
    echo "AWQ+GPTQ: KLD $kld PPL $ppl; AWQ rounding: KLD $kawq"
    lt "$kld" 0.215
    lt "$kld" 0.1773 # measured 0.1721 + 3%
    lt "$kld" "$kawq"
    restartable w4a16-awq "$T/ag" GROUP=32 GPTQ=1 FORMAT=compressed-tensors
}

@test "gguf-q4.mk: Q4_0 and Q4_1 (GPTQ + scale search) reach KLD < 0.215; read by the gguf package; Q4_1 < Q4_0" {
    recipe gguf-q4 "$T/q40" 2>/dev/null
    recipe gguf-q4 "$T/q41" TYPE=q4_1 2>/dev/null
    quality "$T/q40/eval.json"
    k0=$kld p0=$ppl
    quality "$T/q41/eval.json"
    k1=$kld p1=$ppl
    echo "Q4_0: KLD $k0 PPL $p0; Q4_1: KLD $k1 PPL $p1"
    lt "$k0" 0.215
    lt "$k1" 0.215
    lt "$k0" 0.1833
    lt "$k1" 0.1350
    lt "$k1" "$k0"
    # llama.cpp's own reader (gguf-py) and the independent spec reader accept the files
    python3 "$BATS_TEST_DIRNAME/gguf_reader.py" pkg "$T/q40/model.gguf"
    run python3 "$BATS_TEST_DIRNAME/gguf_reader.py" parse "$T/q41/model.gguf"
    [ "$status" -eq 0 ]
    jq -e '.' <<<"$output" >/dev/null
    restartable gguf-q4 "$T/q40"
}

# fp_recipe NAME ORACLE_FORMAT BOUND ACT_QUANT [CALIB]: the recipe's checkpoint bytes against
# fp_oracle.py (with the recipe's own calibration stream for static input scales), as-eval reads
# it with its activation scheme, KLD below BOUND, restartable. Keeps the KLD in $T/NAME.kld.
fp_recipe() {
    local name=$1 fmt=$2 bound=$3 act=$4 calib=${5:-}
    recipe "$name" "$T/$name" 2>/dev/null
    python3 "$BATS_TEST_DIRNAME/fp_oracle.py" "$fmt" "$M" "$T/$name/checkpoint" ${calib:+"$T/$name/calib.stream"}
    [ "$(jq -c '.act_quant' "$T/$name/eval.json")" = "$act" ]
    quality "$T/$name/eval.json"
    echo "$name: KLD $kld PPL $ppl (bound $bound)"
    lt 0 "$kld"
    lt "$kld" "$bound"
    restartable "$name" "$T/$name"
    echo "$kld" >"$T/$name.kld"
}

@test "fp8-static.mk, fp8-dynamic.mk, w8a8-int8.mk, nvfp4.mk (fp-scheme.mk): bytes match fp_oracle.py, KLD bounds, int8 < fp8 < nvfp4" {
    fp_recipe fp8-static float-quantized 0.052 '["fp8-static"]' calib
    fp_recipe fp8-dynamic float-quantized 0.050 '["fp8-dynamic"]'
    fp_recipe w8a8-int8 int-quantized 0.0047 '["int8-dynamic"]'
    fp_recipe nvfp4 nvfp4-pack-quantized 0.57 '["nvfp4","none"]'
    lt "$(cat "$T/w8a8-int8.kld")" "$(cat "$T/fp8-dynamic.kld")"
    lt "$(cat "$T/fp8-static.kld")" "$(cat "$T/nvfp4.kld")"
    # data-free schemes never calibrate: their calib.stream is the empty placeholder
    [ ! -s "$T/fp8-dynamic/calib.stream" ]
    [ -s "$T/fp8-static/calib.stream" ]
}

@test "pipelines/demo-tiny.sh (make demo-tiny): greedy text of the test vector, quality table, GPTQ beats RTN, rerun resumes" {
    # SAMPLES (read by the recipe from the environment) keeps it fast: 16 windows, not 128
    run env BIN="$AS_BIN" OUT="$T/demo" SAMPLES=16 pipelines/demo-tiny.sh
    [ "$status" -eq 0 ]
    # as-gen's 64 greedy tokens are the start of data/README.md's independent test vector
    want=$(head -c 120 "$L2C/greedy-once-upon-a-time.txt")
    [[ "$output" == *"$want"* ]]
    rtn=$(grep '^rtn ' <<<"$output")
    gptq=$(grep '^gptq ' <<<"$output")
    ct=$(grep '^gptq-ct ' <<<"$output")
    echo "$rtn / $gptq / $ct"
    # RTN W4 g32 row: the reference values (PPL 196.76 within the fp16 scales of GPTQ v1: +-0.05)
    read -r _ rppl _ rkld _ <<<"$rtn"
    read -r _ gppl _ gkld _ <<<"$gptq"
    read -r _ cppl _ ckld _ <<<"$ct"
    lt 196.71 "$rppl"
    lt "$rppl" 196.81
    # GPTQ within 10% of the README's textbook level 0.215 (measured 0.2297 with 16 windows,
    # 0.2279 with the demo's 128), well below RTN; the two formats hold the same quantizer output
    # (fp16 vs f32 scales): KLDs within 0.001
    lt "$gkld" 0.2365
    lt "$ckld" 0.2365
    lt "$gkld" "$rkld"
    lt "$(awk -v a="$gkld" -v b="$ckld" 'BEGIN { d = a - b; print d < 0 ? -d : d }')" 0.001
    # as-gptq ran with the documented default damping (docs/tools.md: --damp 0.01), every layer
    [ "$(jq -s '[.[].percdamp] | unique' "$T/demo/gptq/gptq-report.jsonl" | jq -c .)" = "[0.01]" ]
    [ "$(jq -s 'length' "$T/demo/gptq/gptq-report.jsonl")" -eq 35 ]
    base=$(grep '^fp32' <<<"$output" | awk '{print $3}')
    [ "$base" = 160.3167 ]
    # a second run recomputes nothing: the checkpoints keep their modification times
    before=$(find "$T/demo" -type f -printf '%p %T@\n' | sort)
    run env BIN="$AS_BIN" OUT="$T/demo" SAMPLES=16 pipelines/demo-tiny.sh
    [ "$status" -eq 0 ]
    after=$(find "$T/demo" -type f -printf '%p %T@\n' | sort)
    [ "$before" = "$after" ]
}
