#!/usr/bin/env python3
"""Independent tensor-stream implementation in Python, written from docs/stream-format.md only.

Used by tests/tools/stream.bats as an oracle (never imports project code):
  stream_oracle.py read STREAM      -> one JSON line per record: name, dtype, shape, role, layer,
                                       kind, sha256 of the payload bytes (references are read from
                                       their files); checks the layout and every checksum it can.
  stream_oracle.py st FILE          -> the same lines (kind "st") for a safetensors file, read with
                                       the `safetensors` package (numpy).
  stream_oracle.py write ST OUT     -> writes the safetensors file's tensors as an inline stream
                                       (role "weight", layer from the name, attrs {"py": true}).
  stream_oracle.py set IN OUT NAME I VALUE
                                    -> copies the inline stream IN to OUT with element I of the F32
                                       tensor NAME set to VALUE (e.g. -1, nan), checksums redone:
                                       a well-formed stream carrying a damaged value.
Exit status 3 means a needed module (xxhash, numpy, safetensors) is missing: the test skips.
"""
import hashlib
import json
import re
import struct
import sys

try:
    import xxhash
except ImportError:
    xxhash = None

DTYPE_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16,
              "I8": 8, "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8, "F8_E4M3": 8,
              "F8_E5M2": 8, "F8_E8M0": 8, "F4": 4}


def die(msg):
    sys.stderr.write("stream_oracle: " + msg + "\n")
    sys.exit(1)


def need(mod, name):
    if mod is None:
        sys.stderr.write("stream_oracle: python module %s missing\n" % name)
        sys.exit(3)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def read_stream(path):
    data = open(path, "rb").read() if path != "-" else sys.stdin.buffer.read()
    pos, seg, last_end = 0, 0, False
    while pos < len(data):
        if len(data) - pos < 32:
            die("truncated prefix")
        magic, version, kind, hlen, pad, plen, hsum = struct.unpack_from("<4sHHIIQQ", data, pos)
        if magic != b"ASTR" or version != 1:
            die("bad magic/version at %d" % pos)
        header = data[pos + 32:pos + 32 + hlen]
        if len(header) != hlen:
            die("truncated header")
        if xxhash is not None and xxhash.xxh3_64_intdigest(data[pos:pos + 24] + header) != hsum:
            die("header checksum")
        h = json.loads(header.decode("utf-8"))
        body = pos + 32 + hlen
        if kind == 2:
            if h["records"] != seg:
                die("end record count %d != %d" % (h["records"], seg))
            seg, last_end = 0, True
            pos = body + plen + pad
            continue
        if kind != 1:
            die("unknown kind")
        p = h["payload"]
        nbytes = numel(h["shape"]) * DTYPE_BITS[h["dtype"]] // 8
        if p["nbytes"] != nbytes:
            die("nbytes")
        if p["kind"] == "inline":
            if body % 64 != 0:
                die("inline payload not 64-byte aligned")
            payload = data[body:body + plen]
            if len(payload) != plen or plen != nbytes:
                die("truncated payload")
            if any(data[body + plen:body + plen + pad]):
                die("nonzero padding")
        else:
            if plen != 0:
                die("ref with inline bytes")
            with open(p["file"], "rb") as f:
                f.seek(p["offset"])
                payload = f.read(p["nbytes"])
            if len(payload) != p["nbytes"]:
                die("file shorter than reference")
        if "xxh3" in p and xxhash is not None:
            if xxhash.xxh3_64_hexdigest(payload) != p["xxh3"]:
                die("payload checksum")
        seg += 1
        last_end = False
        print(json.dumps({"name": h["name"], "dtype": h["dtype"], "shape": h["shape"],
                          "role": h["role"], "layer": h["layer"], "kind": p["kind"],
                          "sha256": hashlib.sha256(payload).hexdigest()}))
        pos = body + plen + pad
    if not last_end:
        die("no end record")


def read_st(path):
    try:
        from safetensors import safe_open
        import numpy  # noqa: F401
    except ImportError:
        need(None, "safetensors/numpy")
    # Byte-exact view: safetensors' own header parse + raw bytes by offsets (no dtype conversion,
    # which numpy lacks for BF16).
    raw = open(path, "rb").read()
    n = struct.unpack_from("<Q", raw, 0)[0]
    meta = json.loads(raw[8:8 + n])
    with safe_open(path, "np") as f:
        names = sorted(f.keys())
    for name in names:
        e = meta[name]
        b, end = e["data_offsets"]
        payload = raw[8 + n + b:8 + n + end]
        print(json.dumps({"name": name, "dtype": e["dtype"], "shape": e["shape"],
                          "sha256": hashlib.sha256(payload).hexdigest()}))


def layer_of(name):
    m = re.search(r"(?:^|\.)layers\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else -1


def write_stream(st_path, out_path):
    need(xxhash, "xxhash")
    raw = open(st_path, "rb").read()
    n = struct.unpack_from("<Q", raw, 0)[0]
    meta = json.loads(raw[8:8 + n])
    out = bytearray()
    count = 0

    def record(kind, header, payload=b""):
        hj = json.dumps(header, separators=(",", ":")).encode()
        hj += b" " * ((-(32 + len(hj))) % 64)
        pad = (-len(payload)) % 64
        pre = struct.pack("<4sHHIIQ", b"ASTR", 1, kind, len(hj), pad, len(payload))
        out.extend(pre + struct.pack("<Q", xxhash.xxh3_64_intdigest(pre + hj)) + hj)
        out.extend(payload + b"\0" * pad)

    for name, e in meta.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        payload = raw[8 + n + b:8 + n + end]
        record(1, {"name": name, "dtype": e["dtype"], "shape": e["shape"], "role": "weight",
                   "layer": layer_of(name), "attrs": {"py": True},
                   "payload": {"kind": "inline", "nbytes": len(payload),
                               "xxh3": xxhash.xxh3_64_hexdigest(payload)}}, payload)
        count += 1
    record(2, {"end": True, "records": count})
    open(out_path, "wb").write(out)


def set_element(in_path, out_path, name, index, value):
    need(xxhash, "xxhash")
    data = open(in_path, "rb").read()
    out = bytearray()
    pos, hit = 0, False
    while pos < len(data):
        magic, version, kind, hlen, pad, plen, hsum = struct.unpack_from("<4sHHIIQQ", data, pos)
        header = data[pos + 32:pos + 32 + hlen]
        payload = bytearray(data[pos + 32 + hlen:pos + 32 + hlen + plen])
        h = json.loads(header.decode("utf-8"))
        if kind == 1 and h["name"] == name:
            if h["dtype"] != "F32" or h["payload"]["kind"] != "inline":
                die("set: %s is not an inline F32 tensor" % name)
            struct.pack_into("<f", payload, 4 * index, float(value))
            h["payload"]["xxh3"] = xxhash.xxh3_64_hexdigest(bytes(payload))
            hj = json.dumps(h, separators=(",", ":")).encode()
            header = hj + b" " * ((-(32 + len(hj))) % 64)
            hit = True
        pre = struct.pack("<4sHHIIQ", magic, version, kind, len(header), pad, plen)
        out.extend(pre + struct.pack("<Q", xxhash.xxh3_64_intdigest(pre + header)) + header)
        out.extend(payload + b"\0" * pad)
        pos += 32 + hlen + plen + pad
    if not hit:
        die("set: no tensor %s" % name)
    open(out_path, "wb").write(out)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "read":
        read_stream(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "st":
        read_st(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "write":
        write_stream(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 7 and sys.argv[1] == "set":
        set_element(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        die("usage: stream_oracle.py read STREAM | st FILE | write ST OUT")
