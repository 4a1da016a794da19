#!/usr/bin/env bash
# SmolLM2-135M-Instruct in its real consumers (docs/consumers.md): runs the CI test
# tests/tools/consumer_smollm2.bats with its temporary directory kept, then prints the table of
# consumer vs as-eval perplexities it compared (one window of 128 tokens; llama.cpp 2 x 512) and
# keeps it in bench/results/consumers-smollm2.txt. Needs `make deps` (.venv-consumer, llama.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build/rel} BINDIR=${BINDIR:-bin}
export AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data} AS_REQUIRE_CONSUMER=1
export PATH="$(cd "$BINDIR" && pwd):$(pwd)/.venv/bin:$PATH"
T=$(mktemp -d "${TMPDIR:-/tmp}/consumers-smollm2.XXXXXX")
trap 'rm -rf "$T"' EXIT
start=$(date +%s)
bats --tap --no-tempdir-cleanup --tempdir "$T/bats" tests/tools/consumer_smollm2.bats | tee "$T/tap"
secs=$(($(date +%s) - start))
W=$(dirname "$(find "$T/bats" -name report.json | head -1)")
rel() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; printf "%.1e", d / b }'; }
row() { # FORMAT MODE CONSUMER_VALUE EVAL_FILE
    local b
    b=$(jq -r .ppl "$W/$4")
    printf '| %s | %s | %.7f | %.7f | %s |\n' "$1" "$2" "$3" "$b" "$(rel "$3" "$b")"
}
r() { jq -r ".[\"$1\"]$2" "$W/report.json"; }
{
    echo "# SmolLM2-135M-Instruct in its consumers ($(date -u +%F), tests/tools/consumer_smollm2.bats, ${secs} s)"
    echo "| format | consumer, mode | consumer PPL | as-eval PPL | relative |"
    echo "|---|---|---|---|---|"
    row dense "transformers f32" "$(r smol .ppl)" smol.eval
    for s in fp8-static fp8-dynamic int8-dynamic w4a8 nvfp4 mxfp4; do
        row $s "compressed-tensors, weights only" "$(r $s .ppl_w)" $s.evalw
        row $s "compressed-tensors, with activations" "$(r $s .ppl)" $s.eval
    done
    row "W4 g32 pack-quantized" "compressed-tensors" "$(r ct .ppl)" ct.eval
    row "GPTQ v1 W4 g32" "transformers torch kernel, f32 scales" "$(r gptq .ppl)" gptq.eval
    row "GPTQ v1 W4 g32" "transformers as loaded ($(r gptq '.kinds_auto | keys[0]'))" "$(r gptq .ppl_auto)" gptq.eval
    row "GPTQ v1 W4 g32" "GPTQModel.load fp16" "$(r gptq .ppl_gptqmodel)" gptq.eval
    row "AWQ GEMM W4 g32" "transformers ($(r awq '.kinds | keys[0]'), fp16)" "$(r awq .ppl)" awq.eval
    echo "| DeepSeek FP8 block | transformers | refused: $(grep -m1 -o 'Weight shape .* not divisible by scale grid [(][0-9, ]*[)]' "$W/consumer.log") | | |"
    echo
    echo "llama.cpp (GGUF Q4_0 from the same RTN stream, wiki 2 x 512): see the test log above"
} | tee bench/results/consumers-smollm2.txt
