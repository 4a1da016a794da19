#!/usr/bin/env bash
# Tokenizer throughput (bench/bench_tokenizer.c) on the whole WikiText-2 test file (1.29 MB):
# the llama2.c tok512 vocabulary as a SentencePiece-style tokenizer.json, and byte-level BPEs
# (vocab 1000) trained with HF `tokenizers` in GPT-2 / Llama-3 / Qwen2 layouts when that Python
# package is present. Reference: HF tokenizers' own encode time of the same text (Python call).
# Env: BUILD (default build/rel), AS_DATA. Writes bench/results/tokenizer.txt.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/rel}
DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
BENCH=$BUILD/bench/bench_tokenizer
ORACLE=tests/tools/tokenizer_oracle.py
TEXT=$DATA/text/wikitext-2-raw/wiki.test.raw
[ -x "$BENCH" ] || { echo "tokenizer.sh: $BENCH not built" >&2; exit 1; }
command -v python3 >/dev/null || { echo "tokenizer.sh: python3 needed to build the tokenizer.json files" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
python3 "$ORACLE" spm-json "$DATA/models/stories260K/tok512.bin" "$W/spm.json"
styles=()
if python3 -c 'import tokenizers' 2>/dev/null; then
    for s in gpt2 llama3 qwen2; do
        python3 "$ORACLE" bl-train "$s" "$DATA/text/austen/emma.txt" 300000 "$W/$s.json"
        styles+=("$s")
    done
fi
hf_time() { # HF tokenizers encode of the same text, seconds (best of 3)
    python3 - "$1" "$TEXT" <<'PY'
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); text = open(sys.argv[2], "rb").read().decode("utf-8")
best = min((lambda t0: (tok.encode(text, add_special_tokens=False), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3))
print(f"{len(text.encode()) / 1e6 / best:.2f}")
PY
}
mkdir -p bench/results
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "# text: wiki.test.raw, encoded as one sequence with BOS; best of 5; single thread"
    printf '%-14s %8s %8s %9s %7s %10s %10s %10s\n' tokenizer load_ms MB tokens B/tok enc_MB/s dec_MB/s hf_enc_MB/s
    for s in spm "${styles[@]}"; do
        hf=-
        if [ ${#styles[@]} -gt 0 ]; then hf=$(hf_time "$W/$s.json"); fi
        printf '%s %10s\n' "$("$BENCH" "$W/$s.json" "$TEXT" 5 "$s")" "$hf"
    done
} | tee bench/results/tokenizer.txt
