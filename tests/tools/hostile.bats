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

setup() {
    command -v xxhsum >/dev/null || skip "xxhsum (Debian package xxhash) missing"
    D=$BATS_TEST_TMPDIR
    unset AS_REF_ROOT AS_REF_STRICT
}

@test "a reference to /etc/passwd is refused; allowing /etc explicitly lets the check pass" {
    ref_stream "$D/s.astr" /etc/passwd
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == "as-cat: stream $D/s.astr: record 1 (evil): reference to /etc/passwd is outside the allowed roots ("*"set AS_REF_ROOT or --ref-root to allow more)" ]]
    [ "${#lines[@]}" -eq 1 ]
    run as-cat --verify "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"reference to /etc/passwd is outside the allowed roots"* ]]
    # the policy is what refused it: with /etc allowed, the next check (the checksum) fires
    AS_REF_ROOT=/nonexistent:/etc run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"file /etc/passwd: payload checksum mismatch"* ]]
}

@test "../../ out of an allowed directory is resolved before the check" {
    ref_stream "$D/s.astr" "$D/../../../../../../../../etc/passwd"
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == *"record 1 (evil): reference to $D/../../../../../../../../etc/passwd (resolves to /etc/passwd) is outside the allowed roots"* ]]
    ref_stream "$D/s.astr" "/tmp/../etc/shadow"
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"(resolves to /etc/shadow) is outside the allowed roots"* ]]
}

@test "symlinks escaping an allowed root are refused (file and directory links)" {
    mkdir "$D/root"
    ln -s /etc/passwd "$D/root/link"
    ln -s /etc "$D/root/etc"
    for f in "$D/root/link" "$D/root/etc/passwd"; do
        ref_stream "$D/s.astr" "$f"
        AS_REF_ROOT=$D/root run as-cat --inline "$D/s.astr"
        [ "$status" -eq 1 ]
        [[ "$output" == *"reference to $f (resolves to /etc/passwd) is outside the allowed roots"* ]]
    done
}

@test "files outside every root: refused, allowed by AS_REF_ROOT; safetensors tensors only" {
    O=$(mktemp -d -p /var/tmp as-hostile.XXXXXX 2>/dev/null) || skip "/var/tmp not writable"
    mk_st "$O/m.safetensors" "a:F32:4:16" "b:U8:16:16"
    head -c 64 /dev/urandom >"$O/secret"
    ref_stream "$D/s.astr" "$O/secret"
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"reference to $O/secret is outside the allowed roots"* ]]
    AS_REF_ROOT=$O run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"file $O/secret: payload checksum mismatch"* ]]
    # a checkpoint's tensors may be referred to from anywhere (what `as-cat MODEL | tool` sends)
    as-cat "$O/m.safetensors" >"$D/m.astr"
    run as-cat --inline --verify "$D/m.astr"
    [ "$status" -eq 0 ]
    AS_REF_STRICT=1 run as-cat --inline "$D/m.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"record 1 (a): reference to $O/m.safetensors is outside the allowed roots"* ]]
    # ... but not its header, nor half a tensor
    ref_stream "$D/s.astr" "$O/m.safetensors" 0 16
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"reference to $O/m.safetensors is outside the allowed roots"* ]]
    hlen=$(od -An -tu8 -N8 "$O/m.safetensors" | tr -d ' ')
    ref_stream "$D/s.astr" "$O/m.safetensors" $((8 + hlen + 8)) 16
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"is outside the allowed roots"* ]]
    rm -rf "$O"
}

@test "shared scratch directories: a file of another user is refused" {
    [ "$(id -u)" -eq 0 ] || skip "needs root to give a file to another user"
    head -c 16 /dev/zero >"$D/other"
    chown 65534 "$D/other"
    ref_stream "$D/s.astr" "$D/other"
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ]
    [[ "$output" == *"reference to $D/other: the file is in the shared directory "*" and belongs to uid 65534, not to this user" ]]
    # naming the directory explicitly trusts it
    AS_REF_ROOT=$D run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"payload checksum mismatch"* ]]
}

@test "a relative reference path and a missing file get one-line errors" {
    ref_stream "$D/s.astr" "etc/passwd"
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"reference file must be an absolute path"* ]]
    ref_stream "$D/s.astr" "$D/nope"
    run as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] && [[ "$output" == *"record 1 (evil): file $D/nope: No such file or directory" ]]
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
    # as-pack writes the model's tensor names only: the hostile ones are not in the model
    as-import -t "$AS_DATA/models/stories260K/tok512.bin" "$AS_DATA/models/stories260K/stories260K.bin" "$D/model" >/dev/null
    run as-pack -m "$D/model" -f fakequant -o "$D/work/out/x" "$D/work/in.astr"
    [ "$status" -ne 0 ]
    [ "${#lines[@]}" -eq 1 ]
    [ -z "$(find "$D" -newer "$D/marker" -name '*evil*')" ]
    [ ! -e "$D/work/out/x" ]
}

@test "a reference to a FIFO or a device is refused at once, never blocks" {
    mkfifo "$D/fifo"
    ref_stream "$D/s.astr" "$D/fifo"
    run timeout 10 as-cat --inline "$D/s.astr"
    [ "$status" -eq 1 ] || { echo "status $status: $output"; false; }
    [[ "$output" == *"file $D/fifo: not a regular file"* ]]
    AS_REF_ROOT=/dev run timeout 10 as-cat --inline <(ref_stream /dev/stdout /dev/zero)
    [ "$status" -eq 1 ] && [[ "$output" == *"/dev/zero"* ]]
}
