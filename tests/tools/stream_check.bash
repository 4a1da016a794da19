# Stream checks for bad-input tests, independent of our reader (load with `load stream_check`).
#
# last_kind FILE: the kind of the last record of FILE, found by walking the 32-byte record
#   prefixes of docs/stream-format.md (kind u16 at byte 6, header length u32 at 8, padding u32
#   at 12, payload length u64 at 16): 1 (tensor record), 2 (end record), none (empty file) or
#   cut (the last record is incomplete).
# no_stream FILE: FILE (what a failed producer wrote on stdout) is absent, empty, or does not end
#   with an end record, so that no consumer can take it for a complete stream.

last_kind() {
    local f=$1 size pos=0 kind=none hlen pad plen
    size=$(stat -c %s "$f")
    while [ $((pos + 32)) -le "$size" ]; do
        kind=$(od -An -tu2 -j$((pos + 6)) -N2 "$f" | tr -d ' ')
        hlen=$(od -An -tu4 -j$((pos + 8)) -N4 "$f" | tr -d ' ')
        pad=$(od -An -tu4 -j$((pos + 12)) -N4 "$f" | tr -d ' ')
        plen=$(od -An -tu8 -j$((pos + 16)) -N8 "$f" | tr -d ' ')
        pos=$((pos + 32 + hlen + plen + pad))
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
