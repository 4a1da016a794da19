# Stream checks for bad-input tests, independent of our reader (load with `load stream_check`).
#
# last_kind FILE: the kind of the last record of FILE, found by walking the 32-byte record
#   prefixes of docs/stream-format.md (kind u16 at byte 6, header length u32 at 8, padding u32
#   at 12, payload length u64 at 16): 1 (tensor record), 2 (end record), none (empty file) or
#   cut (the last record is incomplete).
# no_stream FILE: FILE (what a failed producer wrote on stdout) is absent, empty, or does not end
#   with an end record, so that no consumer can take it for a complete stream.

last_kind() {
    local f=$1 size pos=0 kind=none b
    size=$(stat -c %s "$f")
    while [ $((pos + 32)) -le "$size" ]; do
        # bytes 6..23 of the prefix, little-endian: kind u16, hlen u32, pad u32, plen u64
        read -r -a b <<<"$(od -An -v -tu1 -j$((pos + 6)) -N18 "$f" | tr '\n' ' ')"
        kind=$((b[0] | b[1] << 8))
        pos=$((pos + 32 + (b[2] | b[3] << 8 | b[4] << 16 | b[5] << 24) +
            (b[6] | b[7] << 8 | b[8] << 16 | b[9] << 24) +
            (b[10] | b[11] << 8 | b[12] << 16 | b[13] << 24 | b[14] << 32 | b[15] << 40 |
                b[16] << 48 | b[17] << 56)))
    done
    if [ "$pos" -ne "$size" ]; then
        kind=cut
    fi
    echo "$kind"
}

no_stream() {
    if [ ! -e "$1" ]; then
        return 0
    fi
    if [ "$(last_kind "$1")" = 2 ]; then
        echo "$1: a complete stream (it ends with an end record) after a failure" >&2
        return 1
    fi
}
