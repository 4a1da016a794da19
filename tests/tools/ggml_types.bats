#!/usr/bin/env bats
# The ggml dequantizers (lib/common/ggml_types.c) and the GGUF reader's type checks, against the
# gguf package (tests/tools/ggml_oracle.py): its GGUFWriter writes random tensors of every
# supported type, our reader dequantizes them (tests/unit/test_ggml_types dump / hash), and its
# GGUFReader + numpy dequantizer must give the same f32 bit for bit. Also the real SmolLM2-135M
# Q4_1 GGUF (Q4_1, Q8_0, F32 tensors), and files with an unsupported type, a row that is not
# whole blocks, truncated data: one line naming file, tensor and problem, status 1, no output.
bats_require_minimum_version 1.5.0

setup_file() {
    export W="$BATS_FILE_TMPDIR"
    export TG="${BUILD:-build/rel}/tests/test_ggml_types"
    export ORACLE="$BATS_TEST_DIRNAME/ggml_oracle.py"
    [ -x "$TG" ]
    python3 "$ORACLE" write "$W/r.gguf" 20240611
    python3 "$ORACLE" bad "$W"
}

@test "ggml types: random blocks of every type dequantize like gguf's numpy, bit for bit" {
    "$TG" dump "$W/r.gguf" "$W/r.f32" >"$W/r.list"
    run python3 "$ORACLE" compare "$W/r.gguf" "$W/r.list" "$W/r.f32"
    echo "$output"
    [ "$status" -eq 0 ]
    # all 15 types, each as a 2-D and a 3-D tensor
    [ "$(grep -c 'bit for bit$' <<<"$output")" -eq 30 ]
    for t in F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K TQ1_0 TQ2_0; do
        grep -qx "t.$t: 1536 elements bit for bit" <<<"$output"
        grep -qx "t3.$t: 1024 elements bit for bit" <<<"$output"
    done
}

@test "ggml types: a second seed, 64 rows (128 super-blocks, 1024 blocks of 32 per type)" {
    python3 "$ORACLE" write "$W/s.gguf" 7 64
    "$TG" dump "$W/s.gguf" "$W/s.f32" >"$W/s.list"
    run python3 "$ORACLE" compare "$W/s.gguf" "$W/s.list" "$W/s.f32"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(grep -c '^t\.[A-Z0-9_]*: 32768 elements bit for bit$' <<<"$output")" -eq 15 ]
    [ "$(grep -c 'bit for bit$' <<<"$output")" -eq 30 ]
}

@test "ggml types: SmolLM2-135M Q4_1 GGUF dequantizes like gguf's numpy, every tensor bit for bit" {
    local gg
    gg=$("$BATS_TEST_DIRNAME/../../pipelines/smollm2-gguf")
    "$TG" hash "$gg" >"$W/smol.ours"
    python3 "$ORACLE" hash "$gg" >"$W/smol.numpy"
    diff "$W/smol.ours" "$W/smol.numpy"
    # the file's 272 tensors: 210 Q4_1 matrices, the Q8_0 token embedding, 61 F32 norms
    [ "$(wc -l <"$W/smol.ours")" -eq 272 ]
    [ "$(grep -c ' Q4_1 ' "$W/smol.ours")" -eq 210 ]
    [ "$(grep -c ' F32 ' "$W/smol.ours")" -eq 61 ]
    grep -q '^token_embd.weight Q8_0 28311552 ' "$W/smol.ours"
}

@test "ggml types: an unsupported type is named (IQ2_XXS, IQ1_S)" {
    for t in iq2_xxs:16:IQ2_XXS iq1_s:19:IQ1_S; do
        IFS=: read -r f num name <<<"$t"
        run -1 --separate-stderr "$TG" dump "$W/$f.gguf" "$W/$f.f32"
        [ "$stderr" = "test_ggml_types: file $W/$f.gguf: tensor blk.0.attn_q.weight: unsupported ggml type $num ($name)" ]
        [ -z "$output" ]
        [ ! -e "$W/$f.f32" ]
    done
}

@test "ggml types: a row that is not whole blocks is refused" {
    run -1 --separate-stderr "$TG" dump "$W/ragged.gguf" "$W/ragged.f32"
    [ "$stderr" = "test_ggml_types: file $W/ragged.gguf: tensor blk.0.ffn_down.weight: ne[0] = 300 is not a multiple of the Q4_K block size (256)" ]
    [ -z "$output" ]
    [ ! -e "$W/ragged.f32" ]
}

@test "ggml types: truncated tensor data is refused, naming the tensor and its byte range" {
    local size range
    size=$(stat -c %s "$W/r.gguf")
    head -c $((size - 100)) "$W/r.gguf" >"$W/cut.gguf"
    # where gguf's reader puts the last tensor's data: [start, end)
    range=$(python3 -c 'import gguf, sys; t = gguf.GGUFReader(sys.argv[1]).tensors[-1]
print(t.name, t.data_offset, t.data_offset + t.n_bytes)' "$W/r.gguf")
    read -r name start end <<<"$range"
    [ "$name" = t3.TQ2_0 ]
    run -1 --separate-stderr "$TG" dump "$W/cut.gguf" "$W/cut.f32"
    [ "$stderr" = "test_ggml_types: file $W/cut.gguf: truncated: tensor t3.TQ2_0 data [$start, $end) beyond the end of the file ($((size - 100)) bytes)" ]
    [ -z "$output" ]
    [ ! -e "$W/cut.f32" ]
}
