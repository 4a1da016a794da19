# Stream checks for bad-input tests, independent of our reader (load with `load stream_check`).
#
# last_kind FILE: the kind of the last record of FILE, found by walking the 32-byte record
#   prefixes of docs/stream-format.md (kind u16 at byte 6, header length u32 at 8, padding u32
#   at 12, payload length u64 at 16) in a few lines of Python, not through our reader:
#   1 (tensor record), 2 (end record), none (empty file) or cut (the last record is incomplete).
# no_stream FILE: FILE (what a failed producer wrote on stdout) is absent, empty, or does not end
#   with an end record, so that no consumer can take it for a complete stream.

last_kind() {
    python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
pos, kind = 0, "none"
while pos + 32 <= len(data):
    k, hlen, pad, plen = struct.unpack_from("<HIIQ", data, pos + 6)
    kind, pos = str(k), pos + 32 + hlen + plen + pad
print(kind if pos == len(data) else "cut")
PY
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
