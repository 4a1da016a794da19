#!/usr/bin/env bash
# Regenerate the seed corpora under tests/fuzz/corpus/<target>/ from real files: the bundled
# llama2.c model imported with the built as-import (config.json, tokenizer.json, the head of its
# model.safetensors), streams written by the built as-cat, and small hand-made variants.
# Seeds stay small (the fuzzer mutates them; big seeds only slow it down).
#   tests/fuzz/make_corpus.sh            (BIN: directory of the as-* tools, default bin/)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
AS_DATA=${AS_DATA:-$(cd .. && pwd)/shared/data}
C=tests/fuzz/corpus
M=$AS_DATA/models/stories260K
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p $C/fuzz_safetensors $C/fuzz_stream $C/fuzz_config $C/fuzz_tokenizer $C/fuzz_llama2c

"$BIN/as-import" -t "$M/tok512.bin" "$M/stories260K.bin" "$T/model" >/dev/null

le64() { local v=$1 i; for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
le16() { local v=$1 i; for i in 0 1; do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
le32() { local v=$1 i; for i in 0 1 2 3; do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
# mk_st FILE NAME:DTYPE:SHAPE:NBYTES... -- a valid safetensors file with deterministic data
mk_st() {
    local out=$1 hdr='{"__metadata__":{"format":"pt"}' off=0 name dt shape nb
    shift
    for spec in "$@"; do
        IFS=: read -r name dt shape nb <<<"$spec"
        hdr+=",\"$name\":{\"dtype\":\"$dt\",\"shape\":[$shape],\"data_offsets\":[$off,$((off + nb))]}"
        off=$((off + nb))
    done
    hdr+='}'
    while ((${#hdr} % 8)); do hdr+=' '; done
    { le64 ${#hdr}; printf '%s' "$hdr"; head -c "$off" /dev/zero | tr '\0' '\075'; } >"$out"
}

# --- safetensors: the real header with the start of its data, and small complete files
ST=$T/model/model.safetensors
hlen=$(od -An -tu8 -N8 "$ST" | tr -d ' ')
head -c $((8 + hlen + 64)) "$ST" >$C/fuzz_safetensors/real-head
mk_st $C/fuzz_safetensors/small "model.embed_tokens.weight:F32:4,2:32" "lm_head.weight:BF16:4,2:16" \
    "model.norm.weight:F16:2:4"
mk_st $C/fuzz_safetensors/dtypes "a:F8_E4M3:4:4" "b:F8_E5M2:4:4" "c:F4:4:2" "d:F8_E8M0:2:2" \
    "e:I64:1:8" "f:BOOL:3:3" "g:F64:1:8" "h:U16:2:4"
mk_st $C/fuzz_safetensors/scalar-empty "s:F32::4" "z:F32:0,3:0"
{ le64 2; printf '{}'; } >$C/fuzz_safetensors/empty

# --- streams: inline and by-reference records of a small checkpoint, two segments
mk_st "$T/s.safetensors" "model.embed_tokens.weight:F32:4,2:32" "lm_head.weight:BF16:4,2:16" \
    "model.layers.0.self_attn.q_proj.weight:F32:2,2:16" "model.layers.0.input_layernorm.weight:F16:2:4"
"$BIN/as-cat" --inline "$T/s.safetensors" >$C/fuzz_stream/inline
"$BIN/as-cat" "$T/s.safetensors" >$C/fuzz_stream/ref
cat $C/fuzz_stream/inline $C/fuzz_stream/inline >$C/fuzz_stream/two-segments
"$BIN/as-cat" --inline --layer 0 "$T/s.safetensors" >$C/fuzz_stream/layer0

# --- config.json: the imported one and the RoPE / architecture variants
CFG=$T/model/config.json
cp "$CFG" $C/fuzz_config/imported
jq -c '.rope_scaling = {"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":256}' "$CFG" >$C/fuzz_config/llama3
jq -c '.rope_scaling = {"type":"yarn","factor":4,"original_max_position_embeddings":64,"beta_fast":32,"beta_slow":1}' "$CFG" >$C/fuzz_config/yarn
jq -c '.model_type = "qwen3" | .head_dim = 16 | .eos_token_id = [2, 3] | .quantization_config = {"quant_method":"gptq","bits":4}' "$CFG" >$C/fuzz_config/qwen3
jq -c '.model_type = "qwen2" | .rope_parameters = {"rope_theta": 1000000, "rope_type": "linear", "factor": 2}' "$CFG" >$C/fuzz_config/qwen2

# --- tokenizer.json: the imported (SentencePiece BPE) one, and a tiny byte-level one; a NUL
# byte separates the JSON from the text the harness encodes
TOK=$T/model/tokenizer.json
{ cat "$TOK"; printf '\0Once upon a time there was a cat.'; } >$C/fuzz_tokenizer/imported
cat >$C/fuzz_tokenizer/bytelevel <<'JSON'
{"model":{"type":"BPE","vocab":{"h":0,"e":1,"l":2,"o":3,"Ġ":4,"w":5,"he":6,"ll":7,"hell":8,"hello":9,"Ġw":10,"<0x0A>":11},"merges":["h e","l l","he ll","hell o",["Ġ","w"]],"ignore_merges":false},
 "added_tokens":[{"id":12,"content":"<|endoftext|>","special":true}],
 "normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
 "decoder":{"type":"ByteLevel"}}
JSON
printf '\0hello world<|endoftext|>hello' >>$C/fuzz_tokenizer/bytelevel
cat >$C/fuzz_tokenizer/split-seq <<'JSON'
{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"▁":3,"<unk>":4},"merges":["a b"],"unk_token":"<unk>","byte_fallback":false,"fuse_unk":true},
 "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
 "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\d+"},"behavior":"Isolated"},{"type":"Metaspace","replacement":"▁","prepend_scheme":"first"}]},
 "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}}
JSON
printf '\0ab ab 12 c' >>$C/fuzz_tokenizer/split-seq

# --- llama2.c: byte 0 even = tokenizer.bin (bytes 1-2: vocab size), odd = checkpoint
{ printf '\x00'; le16 512; cat "$M/tok512.bin"; } >$C/fuzz_llama2c/tok512
{ printf '\x00'; le16 300; head -c 2000 "$M/tok512.bin"; } >$C/fuzz_llama2c/tok-truncated
# a complete tiny checkpoint: dim 2, hidden 2, 1 layer, 1 head, 1 kv head, vocab 3 (shared), seq 2
# floats: V*D + L*D + L*D*D + 2*L*kv*D + L*D*D + L*D + 3*L*H*D + D + seq*hs = 6+2+4+8+4+2+12+2+4 = 44
{ printf '\x01'; for v in 2 2 1 1 1 3 2; do le32 $v; done; head -c 176 /dev/zero; } >$C/fuzz_llama2c/tiny-ckpt
{ printf '\x01'; head -c 28 "$M/stories260K.bin"; head -c 256 /dev/zero; } >$C/fuzz_llama2c/real-header

# --- GGUF: a tiny file written byte by byte (one KV, one F32 tensor) and the head of the
# bundled model packed to GGUF Q8_0 by as-pack
mkdir -p $C/fuzz_gguf
gstr() { le64 ${#1}; printf '%s' "$1"; }
{ printf 'GGUF'; le32 3; le64 2; le64 2
  gstr general.alignment; le32 4; le32 32
  gstr general.architecture; le32 8; gstr llama
  gstr a; le32 1; le64 4; le32 0; le64 0
  gstr b; le32 2; le64 32; le64 1; le32 8; le64 32
} >"$T/g"
pad=$(( (32 - $(stat -c %s "$T/g") % 32) % 32 ))
{ cat "$T/g"; head -c $pad /dev/zero; head -c 16 /dev/zero | tr '\0' '\077'; head -c 16 /dev/zero;
  head -c 34 /dev/zero | tr '\0' '\001'; } >$C/fuzz_gguf/tiny
{ head -c 4 $C/fuzz_gguf/tiny; le32 2; tail -c +9 $C/fuzz_gguf/tiny; } >$C/fuzz_gguf/tiny-v2
head -c 150 $C/fuzz_gguf/tiny >$C/fuzz_gguf/truncated
if "$BIN/as-pack" -m "$T/model" -f gguf -o "$T/gguf" "$C/fuzz_stream/inline" >/dev/null 2>&1 ||
   "$BIN/as-pack" -m "$T/model" -f gguf -o "$T/gguf" </dev/null >/dev/null 2>&1; then
    g=$(ls "$T/gguf"/*.gguf "$T/gguf" 2>/dev/null | grep -m1 gguf$)
    [ -f "$g" ] && head -c 6000 "$g" >$C/fuzz_gguf/packed-head
fi

for d in $C/*/; do echo "$(basename "$d"): $(ls "$d" | wc -l) seeds, $(cat "$d"/* | wc -c) bytes"; done
