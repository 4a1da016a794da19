#!/usr/bin/env bats
# Hostile streams (docs/security.md): a by-reference payload may only point into allowed files.
# Streams are written byte by byte here (prefix, header checksum with xxhsum), so the file path a
# record names is exactly the hostile one: /etc/passwd, "../../", a symlink out of the roots, a
# file outside every root, a region of a safetensors file that is not a tensor. Tensor names with
# '/' and '..' must never become file paths (as-cat --ref, as-pack).

le() { # le VALUE BYTES: little-endian bytes
    local v=$1 n=$2 i
    for ((i = 0; i < n; i++)); do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done
}

# rec KIND JSON: one record without payload (prefix, checksum, space-padded header)
rec() {
    local kind=$1 json=$2 t=$BATS_TEST_TMPDIR/.rec
    local hlen=$(((32 + ${#json} + 63) / 64 * 64 - 32))
    { printf 'ASTR'; le 1 2; le "$kind" 2; le "$hlen" 4; le 0 4; le 0 8; } >"$t.p"
    printf '%-*s' "$hlen" "$json" >"$t.h"
    local sum i
    sum=$(cat "$t.p" "$t.h" | xxhsum -H3 - | grep -oE '\b[0-9a-f]{16}\b' | head -1)
    cat "$t.p"
    for ((i = 7; i >= 0; i--)); do printf "\\x${sum:2*i:2}"; done
    cat "$t.h"
}

# ref_stream OUT FILE [OFFSET NBYTES]: one by-reference record "evil" and the end record
ref_stream() {
    local out=$1 file=$2 off=${3:-0} nb=${4:-16}
    {
        rec 1 "{\"name\":\"evil\",\"dtype\":\"U8\",\"shape\":[$nb],\"role\":\"weight\",\"layer\":-1,\"attrs\":{},\"payload\":{\"kind\":\"ref\",\"nbytes\":$nb,\"file\":\"$file\",\"offset\":$off,\"xxh3\":\"0123456789abcdef\"}}"
        rec 2 '{"end":true,"records":1}'
    } >"$out"
}

mk_st() { # mk_st FILE NAME:DTYPE:SHAPE:NBYTES...
    local out=$1 hdr='{' off=0 sep='' name dt shape nb
    shift
    for spec in "$@"; do
        IFS=: read -r name dt shape nb <<<"$spec"
        hdr+="$sep\"$name\":{\"dtype\":\"$dt\",\"shape\":[$shape],\"data_offsets\":[$off,$((off + nb))]}"
        off=$((off + nb))
        sep=,
    done
    hdr+='}'
    while ((${#hdr} % 8)); do hdr+=' '; done
    { le ${#hdr} 8; printf '%s' "$hdr"; head -c "$off" /dev/urandom; } >"$out"
}

# refused PATTERN: after `run --separate-stderr as-cat ...`: exit status 1, exactly one line on
# stderr matching the glob PATTERN as a whole, and nothing on stdout (no stream, not even part).
refused() {
    if [ "$status" -ne 1 ]; then
        echo "expected status 1, got $status; stderr: $stderr" >&2
        return 1
    fi
    if [ "${#stderr_lines[@]}" -ne 1 ]; then
        echo "expected one stderr line, got ${#stderr_lines[@]}: $stderr" >&2
        return 1
    fi
    # shellcheck disable=SC2053
    if [[ "$stderr" != $1 ]]; then
        echo "stderr: $stderr" >&2
        echo "wanted: $1" >&2
        return 1
    fi
    if [ -n "$output" ]; then
        echo "a refused stream still wrote ${#output} bytes to stdout" >&2
        return 1
    fi
}

setup() {
    bats_require_minimum_version 1.5.0
    # the streams are written with xxhsum: `make deps` installs it, so its absence is a failure
    if ! command -v xxhsum >/dev/null; then
        echo "xxhsum (Debian package xxhash, installed by make deps) missing" >&2
        return 1
    fi
    D=$BATS_TEST_TMPDIR
    unset AS_REF_ROOT AS_REF_STRICT
}

@test "a reference to /etc/passwd is refused; allowing /etc explicitly lets the check pass" {
    ref_stream "$D/s.astr" /etc/passwd
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to /etc/passwd is outside the allowed roots (*set AS_REF_ROOT or --ref-root to allow more)"
    run --separate-stderr as-cat --verify "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to /etc/passwd is outside the allowed roots (*)"
    # the policy is what refused it: with /etc allowed, the next check (the checksum) fires
    AS_REF_ROOT=/nonexistent:/etc run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): file /etc/passwd: payload checksum mismatch*"
}

@test "../../ out of an allowed directory is resolved before the check" {
    ref_stream "$D/s.astr" "$D/../../../../../../../../etc/passwd"
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to $D/../../../../../../../../etc/passwd (resolves to /etc/passwd) is outside the allowed roots (*)"
    ref_stream "$D/s.astr" "/tmp/../etc/shadow"
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to /tmp/../etc/shadow (resolves to /etc/shadow) is outside the allowed roots (*)"
}

@test "symlinks escaping an allowed root are refused (file and directory links)" {
    mkdir "$D/root"
    ln -s /etc/passwd "$D/root/link"
    ln -s /etc "$D/root/etc"
    for f in "$D/root/link" "$D/root/etc/passwd"; do
        ref_stream "$D/s.astr" "$f"
        AS_REF_ROOT=$D/root run --separate-stderr as-cat --inline "$D/s.astr"
        refused "as-cat: stream $D/s.astr: record 1 (evil): reference to $f (resolves to /etc/passwd) is outside the allowed roots (*)"
    done
}

@test "files outside every root: refused, allowed by AS_REF_ROOT; safetensors tensors only" {
    O=$(mktemp -d -p /var/tmp as-hostile.XXXXXX)
    mk_st "$O/m.safetensors" "a:F32:4:16" "b:U8:16:16"
    head -c 64 /dev/urandom >"$O/secret"
    ref_stream "$D/s.astr" "$O/secret"
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to $O/secret is outside the allowed roots (*)"
    AS_REF_ROOT=$O run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): file $O/secret: payload checksum mismatch*"
    # a checkpoint's tensors may be referred to from anywhere (what `as-cat MODEL | tool` sends)
    as-cat "$O/m.safetensors" >"$D/m.astr"
    run --separate-stderr as-cat --inline --verify "$D/m.astr"
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    # ... unless AS_REF_STRICT asks for the roots only
    AS_REF_STRICT=1 run --separate-stderr as-cat --inline "$D/m.astr"
    refused "as-cat: stream $D/m.astr: record 1 (a): reference to $O/m.safetensors is outside the allowed roots (*)"
    # ... and never its header, nor half a tensor
    ref_stream "$D/s.astr" "$O/m.safetensors" 0 16
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to $O/m.safetensors is outside the allowed roots (*)"
    hlen=$(od -An -tu8 -N8 "$O/m.safetensors" | tr -d ' ')
    ref_stream "$D/s.astr" "$O/m.safetensors" $((8 + hlen + 8)) 16
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to $O/m.safetensors is outside the allowed roots (*)"
    rm -rf "$O"
}

@test "shared scratch directories: a file of another user is refused" {
    [ "$(id -u)" -eq 0 ] || skip "needs root to give a file to another user"
    head -c 16 /dev/zero >"$D/other"
    chown 65534 "$D/other"
    ref_stream "$D/s.astr" "$D/other"
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): reference to $D/other: the file is in the shared directory * and belongs to uid 65534, not to this user"
    # naming the directory explicitly trusts it
    AS_REF_ROOT=$D run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): file $D/other: payload checksum mismatch*"
}

@test "a relative reference path and a missing file get one-line errors" {
    ref_stream "$D/s.astr" "etc/passwd"
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1: record evil: reference file must be an absolute path*"
    ref_stream "$D/s.astr" "$D/nope"
    run --separate-stderr as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): file $D/nope: No such file or directory"
}

@test "tensor names with / and .. never become file paths (as-cat --ref, as-pack)" {
    mkdir -p "$D/work/arena"
    mk_st "$D/work/n.safetensors" "../../evil.weight:F32:4:16" "a/b/../../../evil2:U8:8:8" \
        "/etc/evil3:U8:8:8" "model.layers.0.mlp.down_proj.qweight:I32:2:8"
    touch "$D/marker"
    as-cat --inline "$D/work/n.safetensors" >"$D/work/in.astr"
    as-cat --ref "$D/work/arena" "$D/work/in.astr" >"$D/work/ref.astr"
    as-cat --inline "$D/work/ref.astr" | cmp - "$D/work/in.astr"
    # the only new files: the two streams and one arena named by pid, not by tensor
    [ "$(ls "$D/work/arena")" = "$(ls "$D/work/arena" | grep -E '^as-arena\.[0-9]+\.[0-9]+$')" ]
    [ "$(ls "$D/work/arena" | wc -l)" -eq 1 ]
    [ -z "$(find "$D" / -maxdepth 1 -newer "$D/marker" -name '*evil*' 2>/dev/null)" ]
    [ ! -e /etc/evil3 ]
    # as-pack writes the model's tensor names only: the hostile ones are not in the model (nor
    # quantized layers: it refuses the stream before writing anything)
    as-import -t "$AS_DATA/models/stories260K/tok512.bin" "$AS_DATA/models/stories260K/stories260K.bin" "$D/model" >/dev/null
    mkdir "$D/work/out"
    run --separate-stderr as-pack -m "$D/model" -f fakequant -o "$D/work/out/x" "$D/work/in.astr"
    [ "$status" -eq 1 ]
    [ "${#stderr_lines[@]}" -eq 1 ]
    [ "$stderr" = "as-pack: no quantized layers in the input stream (expected qweight/scale/zero/g_idx records from as-gptq)" ]
    [ -z "$(find "$D" -newer "$D/marker" -name '*evil*')" ]
    # no output, and no staging directory or lock of it either
    [ -z "$(ls -A "$D/work/out")" ]
}

@test "a reference to a FIFO or a device is refused at once, never blocks" {
    mkfifo "$D/fifo"
    ref_stream "$D/s.astr" "$D/fifo"
    run --separate-stderr timeout 10 as-cat --inline "$D/s.astr"
    refused "as-cat: stream $D/s.astr: record 1 (evil): file $D/fifo: not a regular file*"
    ref_stream "$D/dev.astr" /dev/zero
    AS_REF_ROOT=/dev run --separate-stderr timeout 10 as-cat --inline "$D/dev.astr"
    refused "as-cat: stream $D/dev.astr: record 1 (evil): file /dev/zero: not a regular file*"
}
