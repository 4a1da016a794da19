#!/usr/bin/env bats
# as-ls and as-cat: listing, concatenation, filters, inline<->reference conversion (bytes checked
# by an independent Python reader when numpy/safetensors/xxhash are installed), and one test per
# bad input, asserting the one-line error and the exit status.

ORACLE="$BATS_TEST_DIRNAME/stream_oracle.py"

# mk_st FILE NAME:DTYPE:SHAPE:NBYTES... -- a safetensors file written byte by byte (no Python).
mk_st() {
    local out=$1 hdr='{' off=0 sep='' name dt shape nb
    shift
    for spec in "$@"; do
        IFS=: read -r name dt shape nb <<<"$spec"
        hdr+="$sep\"$name\":{\"dtype\":\"$dt\",\"shape\":[$shape],\"data_offsets\":[$off,$((off + nb))]}"
        off=$((off + nb))
        sep=,
    done
    hdr+='}'
    while (( ${#hdr} % 8 )); do hdr+=' '; done
    local len=${#hdr} le='' i
    for i in 0 1 2 3 4 5 6 7; do le+=$(printf '\\x%02x' $(((len >> (8 * i)) & 255))); done
    { printf "$le"; printf '%s' "$hdr"; head -c "$off" /dev/urandom; } >"$out"
}

setup() {
    D=$BATS_TEST_TMPDIR
    ST=$D/model.safetensors
    specs=("model.embed_tokens.weight:F32:10,4:160" "lm_head.weight:BF16:10,4:80")
    for l in 0 1 2 10; do
        specs+=("model.layers.$l.self_attn.q_proj.weight:F32:8,4:128"
            "model.layers.$l.input_layernorm.weight:F16:4:8")
    done
    mk_st "$ST" "${specs[@]}"
}

have_py() { python3 -c 'import numpy, safetensors' 2>/dev/null || skip "numpy/safetensors missing"; }
have_xxh() { python3 -c 'import xxhash' 2>/dev/null || skip "python xxhash missing"; }

@test "as-ls/as-cat --help" {
    run as-ls --help
    [ "$status" -eq 0 ] && [[ "$output" == *"usage: as-ls"* ]]
    run as-cat --help
    [ "$status" -eq 0 ] && [[ "$output" == *"usage: as-cat"* ]] && [[ "$output" == *"--inline"* ]]
    run as-cat --bogus
    [ "$status" -eq 2 ]
}

@test "as-ls lists a safetensors file: names, dtypes, shapes, offsets, natural layer order" {
    run as-ls "$ST"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 10 ]
    run bash -c "as-ls '$ST' | jq -r 'select(.layer >= 0) | .layer' | uniq | tr '\n' ' '"
    [ "$output" = "0 1 2 10 " ]
    run bash -c "as-ls '$ST' | jq -c 'select(.name == \"lm_head.weight\") | [.dtype, .shape, .role, .layer, .payload.kind, .payload.nbytes, .payload.file, .payload.offset]'"
    # lm_head is the second tensor: offset = 8 + header + 160
    hlen=$(od -An -tu8 -N8 "$ST" | tr -d ' ')
    [ "$output" = "[\"BF16\",[10,4],\"weight\",-1,\"ref\",80,\"$(realpath "$ST")\",$((8 + hlen + 160))]" ]
}

@test "as-ls on a checkpoint agrees with the safetensors package (independent oracle)" {
    have_py
    python3 "$ORACLE" st "$ST" | jq -c '[.name, .dtype, .shape]' | sort >"$D/want"
    as-ls "$ST" | jq -c '[.name, .dtype, .shape]' | sort >"$D/got"
    diff "$D/want" "$D/got"
}

@test "as-cat CKPT | as-ls equals as-ls CKPT; summary counts" {
    diff <(as-ls "$ST") <(as-cat "$ST" | as-ls)
    run bash -c "as-cat '$ST' | as-ls --summary | jq -c '[.records, .ref_bytes, .inline_bytes, .roles.weight, .layers]'"
    [ "$output" = "[10,784,0,10,[0,10]]" ]
}

@test "sharded checkpoint directory opens as one namespace" {
    mkdir "$D/sharded"
    mk_st "$D/sharded/model-00001-of-00002.safetensors" "model.layers.0.a:F32:2:8" "model.layers.0.b:F32:3:12"
    mk_st "$D/sharded/model-00002-of-00002.safetensors" "model.layers.1.a:F32:2:8"
    cat >"$D/sharded/model.safetensors.index.json" <<'EOF'
{"metadata":{"total_size":28},"weight_map":{"model.layers.0.a":"model-00001-of-00002.safetensors",
"model.layers.0.b":"model-00001-of-00002.safetensors","model.layers.1.a":"model-00002-of-00002.safetensors"}}
EOF
    run bash -c "as-ls '$D/sharded' | jq -r '.name + \" \" + (.payload.file | split(\"/\") | last)'"
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "model.layers.0.a model-00001-of-00002.safetensors" ]
    [ "${lines[2]}" = "model.layers.1.a model-00002-of-00002.safetensors" ]
    as-cat --inline "$D/sharded" | as-cat --verify >/dev/null
}

@test "--inline preserves every byte (Python reader), --ref back and --inline again is identical" {
    have_py
    have_xxh
    python3 "$ORACLE" st "$ST" | jq -c '[.name, .sha256]' | sort >"$D/want"
    as-cat --inline "$ST" >"$D/inline.astr"
    python3 "$ORACLE" read "$D/inline.astr" | jq -c '[.name, .sha256]' | sort >"$D/got"
    diff "$D/want" "$D/got"
    python3 "$ORACLE" read "$D/inline.astr" | jq -r .kind | sort -u | grep -qx inline
    mkdir "$D/arena"
    as-cat --ref "$D/arena" "$D/inline.astr" >"$D/ref.astr"
    [ "$(as-ls "$D/ref.astr" | jq -r .payload.kind | sort -u)" = "ref" ]
    [ "$(ls "$D/arena" | wc -l)" -eq 1 ]
    python3 "$ORACLE" read "$D/ref.astr" | jq -c '[.name, .sha256]' | sort >"$D/got2"
    diff "$D/want" "$D/got2"
    as-cat --inline "$D/ref.astr" | cmp - "$D/inline.astr"
}

@test "round trip without Python: inline -> ref -> inline is byte-identical, --verify passes" {
    as-cat --inline "$ST" >"$D/a.astr"
    as-cat --ref "$D" "$D/a.astr" | as-cat --verify | as-cat --inline >"$D/b.astr"
    cmp "$D/a.astr" "$D/b.astr"
    # payload bytes of the inline stream equal the file's bytes at the listed offsets
    off=$(as-ls "$ST" | jq -r 'select(.name == "model.layers.2.self_attn.q_proj.weight") | .payload.offset')
    tail -c +$((off + 1)) "$ST" | head -c 128 >"$D/want.bin"
    as-cat --name 'layers\.2\.self_attn' "$D/a.astr" >"$D/one.astr"
    # one record: prefix + header padded to 64, then 128 payload bytes
    hlen=$(od -An -tu4 -j8 -N4 "$D/one.astr" | tr -d ' ')
    tail -c +$((32 + hlen + 1)) "$D/one.astr" | head -c 128 | cmp - "$D/want.bin"
}

@test "a stream made by an independent Python writer is read and verified" {
    have_xxh
    python3 "$ORACLE" write "$ST" "$D/py.astr"
    run as-cat --verify "$D/py.astr"
    [ "$status" -eq 0 ]
    run bash -c "as-ls '$D/py.astr' | jq -c 'select(.layer == 10) | [.name, .attrs.py]'"
    [ "${lines[0]}" = '["model.layers.10.self_attn.q_proj.weight",true]' ]
    as-cat --inline "$ST" | as-cat --name . >"$D/c.astr"
    # same payload bytes as our own writer: compare per-record xxh3
    diff <(as-ls "$D/py.astr" | jq -r '.name + " " + .payload.xxh3' | sort) \
        <(as-ls "$D/c.astr" | jq -r '.name + " " + .payload.xxh3' | sort)
}

@test "concatenation: cat a b | tool, and as-cat of several inputs has one end record" {
    as-cat --inline "$ST" >"$D/a.astr"
    as-cat "$ST" >"$D/b.astr"
    run bash -c "cat '$D/a.astr' '$D/b.astr' | as-ls | wc -l"
    [ "$output" -eq 20 ]
    run bash -c "cat '$D/a.astr' '$D/b.astr' | as-cat --verify - '$ST' | as-ls --summary | jq -c '[.records, .inline_bytes, .ref_bytes]'"
    [ "$output" = "[30,784,1568]" ]
    # a single end record: the output's end record counts all 30 (decode the last 64 bytes)
    cat "$D/a.astr" "$D/b.astr" | as-cat - "$ST" | tail -c 32 | grep -q '"records":30'
}

@test "filters: --layer N, --layer A-B, --name, --exclude, --role" {
    run bash -c "as-cat --layer 1 '$ST' | as-ls | jq -r .name"
    [ "${#lines[@]}" -eq 2 ] && [[ "${lines[0]}" == model.layers.1.* ]]
    run bash -c "as-cat --layer 1-10 '$ST' | as-ls | jq -r .layer | sort -nu | tr '\n' ' '"
    [ "$output" = "1 2 10 " ]
    run bash -c "as-cat --name 'q_proj' --exclude 'layers\.(0|10)\.' '$ST' | as-ls | jq -r .layer | tr '\n' ' '"
    [ "$output" = "1 2 " ]
    run bash -c "as-cat --role hessian '$ST' | as-ls | wc -l"
    [ "$output" -eq 0 ]
    run as-cat --layer 3-1 "$ST"
    [ "$status" -ne 0 ] && [[ "$output" == *"--layer 3-1: expected N or A-B"* ]]
    run as-cat --name '(' "$ST"
    [ "$status" -ne 0 ] && [[ "$output" == *"bad regular expression"* ]]
}

# --- bad inputs: one line naming stream, record and problem; non-zero exit -------------------

@test "stream cut in the middle of a payload" {
    as-cat --inline "$ST" >"$D/a.astr"
    hlen=$(od -An -tu4 -j8 -N4 "$D/a.astr" | tr -d ' ')
    head -c $((32 + hlen + 50)) "$D/a.astr" >"$D/cut.astr"
    run as-cat "$D/cut.astr"
    [ "$status" -eq 1 ]
    [ "$output" = "as-cat: stream $D/cut.astr: record 1 (lm_head.weight): truncated in payload (got 50 of 80 bytes)" ]
    run bash -c "cat '$D/cut.astr' | as-ls >/dev/null"
    [ "$status" -eq 1 ]
    [ "$output" = "as-ls: stream stdin: record 1 (lm_head.weight): truncated in payload (got 50 of 80 bytes)" ]
}

@test "stream cut in a header" {
    as-cat "$ST" | head -c 100 >"$D/cut.astr"
    run as-ls "$D/cut.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == "as-ls: stream $D/cut.astr: record 1: truncated in header (got 68 of "*" bytes)" ]]
}

@test "missing end record (producer failed part-way) is detected downstream" {
    as-cat "$ST" | head -c -64 >"$D/noend.astr"
    run as-ls "$D/noend.astr"
    [ "$status" -eq 1 ]
    [ "${lines[-1]}" = "as-ls: stream $D/noend.astr: truncated after record 10 (no end record)" ]
    # as-cat failing on its second input writes no end record
    run bash -c "as-cat '$ST' '$D/missing' > '$D/partial.astr'"
    [ "$status" -eq 1 ]
    [[ "$output" == *"$D/missing: "* ]]
    run as-ls "$D/partial.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"truncated after record 10 (no end record)" ]]
    run bash -c "as-cat '$ST' '$D/missing' | as-cat | as-ls"
    [ "$status" -ne 0 ] && [[ "$output" == *"stream stdin: truncated after record 10 (no end record)"* ]]
    # a producer killed before its first byte: an empty file or pipe
    : >"$D/empty.astr"
    run as-ls "$D/empty.astr"
    [ "$status" -eq 1 ] && [ "$output" = "as-ls: stream $D/empty.astr: truncated after record 0 (no end record)" ]
    run bash -c "true | as-cat"
    [ "$status" -eq 1 ] && [ "$output" = "as-cat: stream stdin: truncated after record 0 (no end record)" ]
}

@test "checksum mismatch: one flipped payload byte" {
    as-cat --inline "$ST" >"$D/a.astr"
    hlen=$(od -An -tu4 -j8 -N4 "$D/a.astr" | tr -d ' ')
    pos=$((32 + hlen + 17))
    b=$(od -An -tu1 -j$pos -N1 "$D/a.astr" | tr -d ' ')
    printf "$(printf '\\x%02x' $((b ^ 1)))" | dd of="$D/a.astr" bs=1 seek=$pos conv=notrunc status=none
    run as-cat "$D/a.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == "as-cat: stream $D/a.astr: record 1 (lm_head.weight): payload checksum mismatch (xxh3 "*", header says "*")" ]]
    # as-ls does not read payloads, so it lists the stream anyway
    run as-ls "$D/a.astr"
    [ "$status" -eq 0 ]
}

@test "by-reference payload whose file is missing" {
    cp "$ST" "$D/copy.safetensors"
    as-cat "$D/copy.safetensors" >"$D/r.astr"
    rm "$D/copy.safetensors"
    as-ls "$D/r.astr" >/dev/null # listing does not follow references
    run as-cat --inline "$D/r.astr"
    [ "$status" -eq 1 ]
    [ "$output" = "as-cat: stream $D/r.astr: record 1 (lm_head.weight): file $(realpath "$D")/copy.safetensors: No such file or directory" ]
    run as-cat --verify "$D/r.astr"
    [ "$status" -eq 1 ]
}

@test "by-reference payload whose file is shorter (truncated) or replaced" {
    cp "$ST" "$D/copy.safetensors"
    as-cat "$D/copy.safetensors" >"$D/r.astr"
    size=$(stat -c %s "$D/copy.safetensors")
    truncate -s 300 "$D/copy.safetensors"
    run as-cat --verify "$D/r.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == *"record 1 (lm_head.weight): file $(realpath "$D")/copy.safetensors: size is 300 bytes, the reference was made when it had $size (file replaced or truncated)" ]]
    cp "$ST" "$D/copy.safetensors"
    touch -d '2001-01-01' "$D/copy.safetensors"
    run as-cat --inline "$D/r.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"copy.safetensors: modified since the reference was made"* ]]
}

@test "arena reference: file shorter than the reference, and a flipped byte" {
    mkdir "$D/arena"
    as-cat --inline "$ST" | as-cat --ref "$D/arena" >"$D/r.astr"
    arena=$(ls "$D"/arena/*)
    cp "$arena" "$D/arena.bak"
    truncate -s 100 "$arena"
    run as-cat --verify "$D/r.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == *"record 2 (model.embed_tokens.weight): file $arena: shorter than the reference (100 bytes, payload ends at byte 288)"* ]]
    cp "$D/arena.bak" "$arena"
    printf 'X' | dd of="$arena" bs=1 seek=130 conv=notrunc status=none
    run as-cat --inline "$D/r.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"record 2 (model.embed_tokens.weight): file $arena: payload checksum mismatch at offset 128"* ]]
}

@test "bad magic: a safetensors file piped in, and garbage" {
    run bash -c "cat '$ST' | as-ls"
    [ "$status" -eq 1 ]
    [ "$output" = "as-ls: stream stdin: record 1: bad magic at byte 0 (not a tensor stream)" ]
    as-cat "$ST" >"$D/s.astr"
    echo garbage >>"$D/s.astr"
    run as-cat "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"stream $D/s.astr: record 11: bad magic at byte "* ]]
}

@test "header JSON invalid (valid prefix and checksum)" {
    have_xxh
    python3 - "$D/bad.astr" <<'EOF'
import struct, sys, xxhash
hj = b'{"name":"x","dtype":"F32",'
pre = struct.pack("<4sHHIIQ", b"ASTR", 1, 1, len(hj), 0, 0)
open(sys.argv[1], "wb").write(pre + struct.pack("<Q", xxhash.xxh3_64_intdigest(pre + hj)) + hj)
EOF
    run as-ls "$D/bad.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == "as-ls: stream $D/bad.astr: record 1: header JSON invalid: "* ]]
}

@test "a damaged header (no checksum match) and a non-stream, non-safetensors file" {
    as-cat "$ST" >"$D/s.astr"
    printf 'Q' | dd of="$D/s.astr" bs=1 seek=45 conv=notrunc status=none
    run as-ls "$D/s.astr"
    [ "$status" -eq 1 ] && [ "$output" = "as-ls: stream $D/s.astr: record 1: header checksum mismatch (corrupt stream)" ]
    echo hello >"$D/x.txt"
    run as-ls "$D/x.txt"
    [ "$status" -eq 1 ] && [[ "$output" == "as-ls: $D/x.txt: "* ]]
}
