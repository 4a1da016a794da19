#!/usr/bin/env bats
# as-ls and as-cat: listing, concatenation, filters, inline<->reference conversion (bytes checked
# by an independent Python reader when numpy/safetensors/xxhash are installed), and one test per
# bad input, asserting the exit status, the exact one-line error and that no complete stream was
# written (nothing at all when the first record fails; no end record when a later one does).

bats_require_minimum_version 1.5.0
load stream_check

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
    # every command of a pipeline must succeed, not only the last (an as-ls that lists and then
    # fails must fail the test); no pipeline here stops reading early (no SIGPIPE)
    set -o pipefail
    D=$BATS_TEST_TMPDIR
    ST=$D/model.safetensors
    specs=("model.embed_tokens.weight:F32:10,4:160" "lm_head.weight:BF16:10,4:80")
    for l in 0 1 2 10; do
        specs+=("model.layers.$l.self_attn.q_proj.weight:F32:8,4:128"
            "model.layers.$l.input_layernorm.weight:F16:4:8")
    done
    mk_st "$ST" "${specs[@]}"
}

# The oracles' packages are installed by `make deps`: a missing one is a failure, never a skip.
have_py() {
    python3 -c 'import numpy, safetensors' || {
        echo "python3 numpy/safetensors missing (make deps installs them in .venv)" >&2
        return 1
    }
}
have_xxh() {
    python3 -c 'import xxhash' || {
        echo "python3 xxhash missing (make deps installs it in .venv)" >&2
        return 1
    }
}

# fails_with STATUS PATTERN: after `run --separate-stderr`: exit STATUS and exactly one stderr line
# matching the glob PATTERN as a whole.
fails_with() {
    if [ "$status" -ne "$1" ]; then
        echo "expected status $1, got $status; stderr: $stderr" >&2
        return 1
    fi
    if [ "${#stderr_lines[@]}" -ne 1 ]; then
        echo "expected one stderr line, got ${#stderr_lines[@]}: $stderr" >&2
        return 1
    fi
    # shellcheck disable=SC2053
    if [[ "$stderr" != $2 ]]; then
        echo "stderr: $stderr" >&2
        echo "wanted: $2" >&2
        return 1
    fi
}

# no_stdout: the failed command wrote nothing on stdout (no stream, not even part of one).
no_stdout() {
    if [ -n "$output" ]; then
        echo "the failed command still wrote ${#output} bytes to stdout" >&2
        return 1
    fi
}

@test "as-ls/as-cat --help" {
    run as-ls --help
    [ "$status" -eq 0 ]
    [[ "${lines[0]}" == "usage: as-ls "* ]]
    run as-cat --help
    [ "$status" -eq 0 ]
    [[ "${lines[0]}" == "usage: as-cat "* ]]
    [[ "$output" == *"--inline"* ]]
    # an unknown option: status 2, named on the first line (the usage follows), nothing on stdout
    for t in as-cat as-ls; do
        run --separate-stderr "$t" --bogus "$ST"
        [ "$status" -eq 2 ]
        # (getopt names the program as started: a full path under a wrapper or valgrind)
        [[ "${stderr_lines[0]}" == ?(*/)"$t: unrecognized option '--bogus'" ]]
        [[ "${stderr_lines[1]}" == "usage: $t "* ]]
        no_stdout
    done
}

@test "as-ls lists a safetensors file: names, dtypes, shapes, offsets, natural layer order" {
    run as-ls "$ST"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 10 ]
    run bash -o pipefail -c "as-ls '$ST' | jq -r 'select(.layer >= 0) | .layer' | uniq | tr '\n' ' '"
    [ "$output" = "0 1 2 10 " ]
    run bash -o pipefail -c "as-ls '$ST' | jq -c 'select(.name == \"lm_head.weight\") | [.dtype, .shape, .role, .layer, .payload.kind, .payload.nbytes, .payload.file, .payload.offset]'"
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
    as-ls "$ST" >"$D/want"
    as-cat "$ST" | as-ls >"$D/got"
    diff "$D/want" "$D/got"
    run bash -o pipefail -c "as-cat '$ST' | as-ls --summary | jq -c '[.records, .ref_bytes, .inline_bytes, .roles.weight, .layers]'"
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
    run bash -o pipefail -c "as-ls '$D/sharded' | jq -r '.name + \" \" + (.payload.file | split(\"/\") | last)'"
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
    [ "$(python3 "$ORACLE" read "$D/inline.astr" | jq -r .kind | sort -u)" = inline ]
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
    dd if="$ST" of="$D/want.bin" bs=1 skip="$off" count=128 status=none
    as-cat --name 'layers\.2\.self_attn' "$D/a.astr" >"$D/one.astr"
    # one record: prefix + header padded to 64, then 128 payload bytes
    hlen=$(od -An -tu4 -j8 -N4 "$D/one.astr" | tr -d ' ')
    dd if="$D/one.astr" of="$D/got.bin" bs=1 skip=$((32 + hlen)) count=128 status=none
    cmp "$D/got.bin" "$D/want.bin"
}

@test "a stream made by an independent Python writer is read and verified" {
    have_xxh
    python3 "$ORACLE" write "$ST" "$D/py.astr"
    run as-cat --verify "$D/py.astr"
    [ "$status" -eq 0 ]
    run bash -o pipefail -c "as-ls '$D/py.astr' | jq -c 'select(.layer == 10) | [.name, .attrs.py]'"
    [ "${lines[0]}" = '["model.layers.10.self_attn.q_proj.weight",true]' ]
    as-cat --inline "$ST" | as-cat --name . >"$D/c.astr"
    # same payload bytes as our own writer: compare per-record xxh3
    as-ls "$D/py.astr" | jq -r '.name + " " + .payload.xxh3' | sort >"$D/py.sums"
    as-ls "$D/c.astr" | jq -r '.name + " " + .payload.xxh3' | sort >"$D/c.sums"
    [ -s "$D/py.sums" ]
    diff "$D/py.sums" "$D/c.sums"
}

@test "concatenation: cat a b | tool, and as-cat of several inputs has one end record" {
    as-cat --inline "$ST" >"$D/a.astr"
    as-cat "$ST" >"$D/b.astr"
    run bash -o pipefail -c "cat '$D/a.astr' '$D/b.astr' | as-ls | wc -l"
    [ "$output" -eq 20 ]
    run bash -o pipefail -c "cat '$D/a.astr' '$D/b.astr' | as-cat --verify - '$ST' | as-ls --summary | jq -c '[.records, .inline_bytes, .ref_bytes]'"
    [ "$output" = "[30,784,1568]" ]
    # a single end record: the output's end record counts all 30 (decode the last 64 bytes)
    cat "$D/a.astr" "$D/b.astr" | as-cat - "$ST" >"$D/ab.astr"
    [ "$(last_kind "$D/ab.astr")" = 2 ]
    tail -c 32 "$D/ab.astr" | grep -q '"records":30'
}

@test "filters: --layer N, --layer A-B, --name, --exclude, --role" {
    run bash -o pipefail -c "as-cat --layer 1 '$ST' | as-ls | jq -r .name"
    [ "${#lines[@]}" -eq 2 ]
    [[ "${lines[0]}" == model.layers.1.* ]]
    [[ "${lines[1]}" == model.layers.1.* ]]
    run bash -o pipefail -c "as-cat --layer 1-10 '$ST' | as-ls | jq -r .layer | sort -nu | tr '\n' ' '"
    [ "$output" = "1 2 10 " ]
    run bash -o pipefail -c "as-cat --name 'q_proj' --exclude 'layers\.(0|10)\.' '$ST' | as-ls | jq -r .layer | tr '\n' ' '"
    [ "$output" = "1 2 " ]
    run bash -o pipefail -c "as-cat --role hessian '$ST' | as-ls | wc -l"
    [ "$output" -eq 0 ]
    # bad values: status 1, one line naming the option and value, no stream at all
    for r in 3-1 -1 1- 2-x abc; do
        run --separate-stderr as-cat --layer "$r" "$ST"
        fails_with 1 "as-cat: --layer $r: expected N or A-B with 0 <= A <= B"
        no_stdout
    done
    run --separate-stderr as-cat --name '(' "$ST"
    fails_with 1 "as-cat: --name/--exclude (: bad regular expression at offset 1: missing closing parenthesis"
    no_stdout
}

# --- bad inputs: one line naming stream, record and problem; non-zero exit -------------------

@test "stream cut in the middle of a payload" {
    as-cat --inline "$ST" >"$D/a.astr"
    hlen=$(od -An -tu4 -j8 -N4 "$D/a.astr" | tr -d ' ')
    head -c $((32 + hlen + 50)) "$D/a.astr" >"$D/cut.astr"
    run --separate-stderr as-cat "$D/cut.astr"
    fails_with 1 "as-cat: stream $D/cut.astr: record 1 (lm_head.weight): truncated in payload (got 50 of 80 bytes)"
    no_stdout
    run --separate-stderr bash -o pipefail -c "cat '$D/cut.astr' | as-ls"
    fails_with 1 "as-ls: stream stdin: record 1 (lm_head.weight): truncated in payload (got 50 of 80 bytes)"
    # as-ls lists a header before it skips the payload: that one line, nothing after it
    [ "${#lines[@]}" -eq 1 ]
}

@test "stream cut in a header" {
    as-cat "$ST" >"$D/s.astr"
    head -c 100 "$D/s.astr" >"$D/cut.astr"
    run --separate-stderr as-ls "$D/cut.astr"
    fails_with 1 "as-ls: stream $D/cut.astr: record 1: truncated in header (got 68 of [0-9]* bytes)"
    no_stdout
    run --separate-stderr as-cat "$D/cut.astr"
    fails_with 1 "as-cat: stream $D/cut.astr: record 1: truncated in header (got 68 of [0-9]* bytes)"
    no_stdout
}

@test "missing end record (producer failed part-way) is detected downstream" {
    # the independent walker of stream_check.bash sees the end record of a whole stream ...
    as-cat "$ST" >"$D/whole.astr"
    [ "$(last_kind "$D/whole.astr")" = 2 ]
    # ... and its absence when the last 64 bytes (the end record) are cut off
    head -c -64 "$D/whole.astr" >"$D/noend.astr"
    [ "$(last_kind "$D/noend.astr")" = 1 ]
    run --separate-stderr as-ls "$D/noend.astr"
    fails_with 1 "as-ls: stream $D/noend.astr: truncated after record 10 (no end record)"
    # the listing holds the 10 records before the fault, then stops
    [ "${#lines[@]}" -eq 10 ]
    run --separate-stderr bash -o pipefail -c "as-cat '$D/noend.astr' >'$D/o.astr'"
    fails_with 1 "as-cat: stream $D/noend.astr: truncated after record 10 (no end record)"
    [ "$(last_kind "$D/o.astr")" != 2 ]
    # as-cat failing on its second input writes no end record
    run --separate-stderr bash -o pipefail -c "as-cat '$ST' '$D/missing' > '$D/partial.astr'"
    fails_with 1 "as-cat: $D/missing: No such file or directory"
    [ "$(last_kind "$D/partial.astr")" = 1 ]
    run --separate-stderr as-ls "$D/partial.astr"
    fails_with 1 "as-ls: stream $D/partial.astr: truncated after record 10 (no end record)"
    run --separate-stderr bash -o pipefail -c "as-cat '$ST' '$D/missing' | as-cat | as-ls >/dev/null"
    [ "$status" -eq 1 ]
    [ "${#stderr_lines[@]}" -eq 3 ]
    [ "${stderr_lines[0]}" = "as-cat: $D/missing: No such file or directory" ]
    [ "${stderr_lines[1]}" = "as-cat: stream stdin: truncated after record 10 (no end record)" ]
    [ "${stderr_lines[2]}" = "as-ls: stream stdin: truncated after record 10 (no end record)" ]
    # a producer killed before its first byte: an empty file or pipe
    : >"$D/empty.astr"
    run --separate-stderr as-ls "$D/empty.astr"
    fails_with 1 "as-ls: stream $D/empty.astr: truncated after record 0 (no end record)"
    no_stdout
    run --separate-stderr as-ls --summary "$D/empty.astr"
    fails_with 1 "as-ls: stream $D/empty.astr: truncated after record 0 (no end record)"
    no_stdout
    run --separate-stderr as-cat "$D/empty.astr"
    fails_with 1 "as-cat: stream $D/empty.astr: truncated after record 0 (no end record)"
    no_stdout
    run --separate-stderr bash -o pipefail -c "true | as-cat"
    fails_with 1 "as-cat: stream stdin: truncated after record 0 (no end record)"
    no_stdout
}

@test "checksum mismatch: one flipped payload byte" {
    as-cat --inline "$ST" >"$D/a.astr"
    hlen=$(od -An -tu4 -j8 -N4 "$D/a.astr" | tr -d ' ')
    pos=$((32 + hlen + 17))
    b=$(od -An -tu1 -j$pos -N1 "$D/a.astr" | tr -d ' ')
    printf "$(printf '\\x%02x' $((b ^ 1)))" | dd of="$D/a.astr" bs=1 seek=$pos conv=notrunc status=none
    run --separate-stderr as-cat "$D/a.astr"
    fails_with 1 "as-cat: stream $D/a.astr: record 1 (lm_head.weight): payload checksum mismatch (xxh3 [0-9a-f]*, header says [0-9a-f]*)"
    no_stdout
    # as-ls does not read payloads, so it lists the stream anyway
    run as-ls "$D/a.astr"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 10 ]
}

@test "by-reference payload whose file is missing" {
    cp "$ST" "$D/copy.safetensors"
    as-cat "$D/copy.safetensors" >"$D/r.astr"
    rm "$D/copy.safetensors"
    as-ls "$D/r.astr" >/dev/null # listing does not follow references
    run --separate-stderr as-cat --inline "$D/r.astr"
    fails_with 1 "as-cat: stream $D/r.astr: record 1 (lm_head.weight): file $(realpath "$D")/copy.safetensors: No such file or directory"
    no_stdout
    run --separate-stderr as-cat --verify "$D/r.astr"
    fails_with 1 "as-cat: stream $D/r.astr: record 1 (lm_head.weight): file $(realpath "$D")/copy.safetensors: No such file or directory"
    no_stdout
}

@test "by-reference payload whose file is shorter (truncated) or replaced" {
    cp "$ST" "$D/copy.safetensors"
    as-cat "$D/copy.safetensors" >"$D/r.astr"
    size=$(stat -c %s "$D/copy.safetensors")
    truncate -s 300 "$D/copy.safetensors"
    run --separate-stderr as-cat --verify "$D/r.astr"
    fails_with 1 "as-cat: stream $D/r.astr: record 1 (lm_head.weight): file $(realpath "$D")/copy.safetensors: size is 300 bytes, the reference was made when it had $size (file replaced or truncated)"
    no_stdout
    cp "$ST" "$D/copy.safetensors"
    touch -d '2001-01-01' "$D/copy.safetensors"
    run --separate-stderr as-cat --inline "$D/r.astr"
    fails_with 1 "as-cat: stream $D/r.astr: record 1 (lm_head.weight): file $(realpath "$D")/copy.safetensors: modified since the reference was made*"
    no_stdout
}

@test "arena reference: file shorter than the reference, and a flipped byte" {
    mkdir "$D/arena"
    as-cat --inline "$ST" | as-cat --ref "$D/arena" >"$D/r.astr"
    arena=$(ls "$D"/arena/*)
    cp "$arena" "$D/arena.bak"
    truncate -s 100 "$arena"
    run --separate-stderr bash -o pipefail -c "as-cat --verify '$D/r.astr' >'$D/v.astr'"
    fails_with 1 "as-cat: stream $D/r.astr: record 2 (model.embed_tokens.weight): file $arena: shorter than the reference (100 bytes, payload ends at byte 288)"
    [ "$(last_kind "$D/v.astr")" != 2 ]
    cp "$D/arena.bak" "$arena"
    printf 'X' | dd of="$arena" bs=1 seek=130 conv=notrunc status=none
    run --separate-stderr bash -o pipefail -c "as-cat --inline '$D/r.astr' >'$D/i.astr'"
    fails_with 1 "as-cat: stream $D/r.astr: record 2 (model.embed_tokens.weight): file $arena: payload checksum mismatch at offset 128*"
    [ "$(last_kind "$D/i.astr")" != 2 ]
}

@test "bad magic: a safetensors file piped in, and garbage" {
    run --separate-stderr bash -o pipefail -c "cat '$ST' | as-ls"
    fails_with 1 "as-ls: stream stdin: record 1: bad magic at byte 0 (not a tensor stream)"
    no_stdout
    as-cat "$ST" >"$D/s.astr"
    size=$(stat -c %s "$D/s.astr")
    echo garbage >>"$D/s.astr"
    run --separate-stderr bash -o pipefail -c "as-cat '$D/s.astr' >'$D/o.astr'"
    fails_with 1 "as-cat: stream $D/s.astr: record 11: bad magic at byte $size (not a tensor stream)"
    [ "$(last_kind "$D/o.astr")" != 2 ]
}

@test "header JSON invalid (valid prefix and checksum)" {
    have_xxh
    python3 - "$D/bad.astr" <<'EOF'
import struct, sys, xxhash
hj = b'{"name":"x","dtype":"F32",'
pre = struct.pack("<4sHHIIQ", b"ASTR", 1, 1, len(hj), 0, 0)
open(sys.argv[1], "wb").write(pre + struct.pack("<Q", xxhash.xxh3_64_intdigest(pre + hj)) + hj)
EOF
    run --separate-stderr as-ls "$D/bad.astr"
    fails_with 1 "as-ls: stream $D/bad.astr: record 1: header JSON invalid: *"
    no_stdout
    run --separate-stderr as-cat "$D/bad.astr"
    fails_with 1 "as-cat: stream $D/bad.astr: record 1: header JSON invalid: *"
    no_stdout
}

@test "a damaged header (no checksum match) and a non-stream, non-safetensors file" {
    as-cat "$ST" >"$D/s.astr"
    printf 'Q' | dd of="$D/s.astr" bs=1 seek=45 conv=notrunc status=none
    run --separate-stderr as-ls "$D/s.astr"
    fails_with 1 "as-ls: stream $D/s.astr: record 1: header checksum mismatch (corrupt stream)"
    no_stdout
    run --separate-stderr as-cat "$D/s.astr"
    fails_with 1 "as-cat: stream $D/s.astr: record 1: header checksum mismatch (corrupt stream)"
    no_stdout
    echo hello >"$D/x.txt"
    run --separate-stderr as-ls "$D/x.txt"
    fails_with 1 "as-ls: $D/x.txt: ?*"
    no_stdout
    run --separate-stderr as-cat "$D/x.txt"
    fails_with 1 "as-cat: $D/x.txt: ?*"
    no_stdout
}
