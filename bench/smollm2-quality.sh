#!/usr/bin/env bash
# The SmolLM2-135M quality protocol (issue 15, docs/quality.md): the imported model (f32,
# dequantized from the shipped Q4_1 GGUF) is the base; calibration SAMPLES x 512 tokens from the
# Austen novels (seed 0); evaluation on the first 100,000 bytes of wiki.test.raw at ctx 512, no BOS
# (the model's rule), second half of each window scored; KLD / PPL / top-1 against the base.
# Quantizers write fakequant checkpoints (their exact W_hat) except the GGUF rows, which evaluate
# the .gguf files as llama.cpp would load them. Writes bench/results/smollm2-quality.md; the
# llama.cpp anchor (its own Q4_0 with an importance matrix on the same data) is
# bench/smollm2-llamacpp-anchor.sh.
#   ROWS     space-separated row names to run (default: all; see the case below)
#   SAMPLES  calibration windows (default 128); KEEP windows kept whole for AWQ/LeptoQuant (32)
#   BYTES    evaluation bytes (default 100000)    WORK  keep intermediate files here
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BINDIR:-bin}; BIN=$(cd "$BIN" && pwd)
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
SAMPLES=${SAMPLES:-128}
KEEP=${KEEP:-32}
BYTES=${BYTES:-100000}
W=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/as-bench-smollm2.XXXXXX")}
[ -z "${WORK:-}" ] && trap 'rm -rf "$W"' EXIT
mkdir -p "$W"
export AS_PROGRESS=0
GGUF=$(pipelines/smollm2-gguf)
TEXT=$W/wiki.txt
head -c "$BYTES" "$AS_DATA/text/wikitext-2-raw/wiki.test.raw" > "$TEXT"
[ -f "$W/model/config.json" ] || "$BIN/as-import" "$GGUF" "$W/model"
CAL=(-m "$W/model" -d "$AS_DATA/text/austen" -n "$SAMPLES" -l 512 --seed 0)
t0=$(date +%s)
# one calibration for every row: Hessians (GPTQ), kept windows (AWQ, LeptoQuant), absmax (FP8)
if [ ! -s "$W/calib.stream" ]; then
    "$BIN/as-calib" "${CAL[@]}" --keep-seqs "$KEEP" > "$W/calib.stream.tmp"
    mv "$W/calib.stream.tmp" "$W/calib.stream"
fi
echo "calibration: $(($(date +%s) - t0)) s" >&2

out=bench/results/smollm2-quality.md
mkdir -p bench/results
evaluate() { # checkpoint [as-eval options] -> table cells "PPL | KLD | top-1"
    local m=$1
    shift
    # the base's logits are computed once and read from $W/base.logits by every row (2.4 GB)
    "$BIN/as-eval" -m "$m" -b "$W/model" --base-logits "$W/base.logits" -f "$TEXT" --ctx 512 "$@" --json |
        jq -r '"\(.ppl * 1000 | round / 1000) | \(.kld.mean * 100000 | round / 100000) | \(.same_top * 10000 | round / 100)%"'
}
gptq_row() { # bits group label as-gptq options...
    local b=$1 g=$2 label=$3
    shift 3
    "$BIN/as-gptq" -b "$b" -g "$g" "$@" < "$W/calib.stream" > "$W/q.stream"
    rm -rf "$W/ck" && "$BIN/as-pack" -m "$W/model" -f fakequant -o "$W/ck" < "$W/q.stream" 2>/dev/null
    echo "| W$b g$g | $label | $(evaluate "$W/ck") |"
}
awq_row() { # bits group label [gptq]
    local b=$1 g=$2 label=$3 extra=()
    if [ "${4:-}" = gptq ]; then
        "$BIN/as-awq" -m "$W/model" -b "$b" -g "$g" -e scaled < "$W/calib.stream" > "$W/a.stream" 2>/dev/null
        # as-gptq passes the scaled norms of a.stream through to q.stream (same bytes)
        "$BIN/as-gptq" -b "$b" -g "$g" --asym --act-order < "$W/a.stream" > "$W/q.stream"
    else
        "$BIN/as-awq" -m "$W/model" -b "$b" -g "$g" -e quantized < "$W/calib.stream" > "$W/q.stream" 2>/dev/null
    fi
    rm -rf "$W/ck" && "$BIN/as-pack" -m "$W/model" -f fakequant -o "$W/ck" "$W/q.stream" "${extra[@]}" 2>/dev/null
    echo "| W$b g$g | $label | $(evaluate "$W/ck") |"
}
gptaq_row() { # bits group label
    "$BIN/as-calib" "${CAL[@]}" --gptaq --sequential "$BIN/as-gptq -m gptaq -b $1 -g $2 --sym --act-order" > "$W/q.stream"
    rm -rf "$W/ck" && "$BIN/as-pack" -m "$W/model" -f fakequant -o "$W/ck" < "$W/q.stream" 2>/dev/null
    echo "| W$1 g$2 | $3 | $(evaluate "$W/ck") |"
}
gguf_row() { # label as-gptq options...
    local label=$1
    shift
    "$BIN/as-gptq" -b 4 -g 32 --sym "$@" < "$W/calib.stream" > "$W/q.stream"
    rm -f "$W/q.gguf" && "$BIN/as-pack" -m "$W/model" -f gguf -o "$W/q.gguf" < "$W/q.stream" 2>/dev/null
    echo "| GGUF Q4_0 | $label ($(stat -c %s "$W/q.gguf") bytes) | $(evaluate "$W/q.gguf") |"
}
lepto_row() { # label format as-eval-options -- as-lepto options...
    local label=$1 fmt=$2 eopts=$3
    shift 4
    "$BIN/as-lepto" -m "$W/model" "$@" "$W/calib.stream" > "$W/q.stream" 2>/dev/null
    rm -rf "$W/ck" && "$BIN/as-pack" -m "$W/model" -f "$fmt" -o "$W/ck" "$W/q.stream" 2>/dev/null
    # shellcheck disable=SC2086
    echo "| $label | $fmt | $(evaluate "$W/ck" $eopts) |"
}
ALL="rtn-sym gptq gptq-act gptq-act-ss rtn-asym gptq-act-asym awq gguf-rtn gguf-gptq gguf-gptq-act gguf-gptq-act-d05 awq+gptq gptaq fp8-static fp8-dynamic int8 nvfp4 mxfp4 w4a8 w3-rtn w3-gptq w3-gptq-ss w2-rtn w2-gptq w2-gptq-ss"
{
    echo "# SmolLM2-135M-Instruct quality ($(date -u +%Y-%m-%d), $SAMPLES x 512 Austen calibration tokens)"
    echo
    # the base against itself: its PPL, and $W/base.logits for every row
    [ -s "$W/base.json" ] || "$BIN/as-eval" -m "$W/model" -b "$W/model" --base-logits "$W/base.logits" \
        -f "$TEXT" --ctx 512 --json > "$W/base.json"
    echo "Base: the imported model (f32). $(jq -r '"PPL \(.ppl * 1000 | round / 1000) over \(.scored) scored tokens (\(.tokens) tokens)"' "$W/base.json"),"
    echo "first $BYTES bytes of wiki.test.raw, ctx 512, second half of each window scored."
    echo
    echo "| config | method | PPL | mean KLD | top-1 |"
    echo "|---|---|---|---|---|"
    mkdir -p "$W/rows"
    for r in ${ROWS:-$ALL}; do
        # a measured row is kept in $W/rows/NAME: a rerun with the same WORK resumes
        if [ -s "$W/rows/$r" ]; then
            cat "$W/rows/$r"
            continue
        fi
        case $r in
        rtn-sym) gptq_row 4 128 "RTN sym" -m rtn --sym ;;
        rtn-asym) gptq_row 4 128 "RTN asym" -m rtn --asym ;;
        gptq) gptq_row 4 128 "GPTQ sym" --sym ;;
        gptq-act) gptq_row 4 128 "GPTQ sym act-order" --sym --act-order ;;
        gptq-act-ss) gptq_row 4 128 "GPTQ sym act-order + scale search" --sym --act-order --scale-search ;;
        gptq-act-asym) gptq_row 4 128 "GPTQ asym act-order" --asym --act-order ;;
        gptaq) gptaq_row 4 128 "GPTAQ sym act-order (true-sequential)" ;;
        awq) awq_row 4 128 "AWQ (asym)" ;;
        awq+gptq) awq_row 4 128 "AWQ scales + GPTQ asym act-order" gptq ;;
        w3-rtn) gptq_row 3 128 "RTN sym" -m rtn --sym ;;
        w3-gptq) gptq_row 3 128 "GPTQ sym act-order" --sym --act-order ;;
        w2-rtn) gptq_row 2 64 "RTN sym" -m rtn --sym ;;
        w2-gptq) gptq_row 2 64 "GPTQ sym act-order" --sym --act-order ;;
        w3-gptq-ss) gptq_row 3 128 "GPTQ sym act-order + scale search" --sym --act-order --scale-search ;;
        w2-gptq-ss) gptq_row 2 64 "GPTQ sym act-order + scale search" --sym --act-order --scale-search ;;
        gguf-rtn) gguf_row "RTN" -m rtn ;;
        gguf-gptq) gguf_row "GPTQ + signed scale search" --scale-search --signed-scale ;;
        gguf-gptq-act) gguf_row "GPTQ act-order static groups + signed scale search" --scale-search --signed-scale --act-order --static-groups ;;
        gguf-gptq-act-d05) gguf_row "GPTQ act-order static groups + signed scale search, damp 0.05" --scale-search --signed-scale --act-order --static-groups --damp 0.05 ;;
        fp8-static) lepto_row "FP8 static W8A8" float-quantized "" -- -s fp8-static ;;
        fp8-dynamic) lepto_row "FP8 dynamic W8A8" float-quantized "" -- -s fp8-dynamic ;;
        int8) lepto_row "INT8 W8A8 dynamic" int-quantized "" -- -s int8-dynamic ;;
        nvfp4) lepto_row "NVFP4 W4A4" fakequant-fp "" -- -s nvfp4 ;;
        mxfp4) lepto_row "MXFP4 W4A4" fakequant-fp "" -- -s mxfp4 ;;
        w4a8) lepto_row "W4A8 (FP8 act) g32" fakequant-fp "" -- -s w4a8-fp8 --group 32 ;;
        *) echo "unknown row $r" >&2; exit 2 ;;
        esac > "$W/rows/$r.tmp"
        mv "$W/rows/$r.tmp" "$W/rows/$r"
        cat "$W/rows/$r"
    done
} | tee "$out.tmp"
mv "$out.tmp" "$out"
echo "table written to $out"
