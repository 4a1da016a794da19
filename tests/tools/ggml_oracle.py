#!/usr/bin/env python3
"""Oracle for the ggml dequantizers (lib/common/ggml_types.c): the gguf package's own GGUF writer
and reader, and its numpy dequantizer (gguf.quants.dequantize), which implements ggml-quants.c's
dequantize_row_* independently of our C code.

  ggml_oracle.py write OUT.gguf SEED [ROWS]
                                         random tensors of every supported type, "t.TYPE" of ROWS
                                         (3) x 512 and "t3.TYPE" of 2 x 2 x 256 (random bytes for
                                         the codes and scale bytes, the f16 scale fields random
                                         finite values, so no element is NaN or inf)
  ggml_oracle.py compare FILE.gguf LIST DUMP
                                         LIST/DUMP from `test_ggml_types dump`: names, types and
                                         element counts must match, every f32 bit for bit
  ggml_oracle.py hash FILE.gguf          "name type numel xxh64" per tensor, numpy's dequantization
                                         (the format of `test_ggml_types hash`)
  ggml_oracle.py bad DIR                 DIR/{iq2_xxs,iq1_s,ragged}.gguf: an unsupported type, a
                                         Q4_K row of 300 elements
"""
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# Byte offsets of the IEEE f16 fields in each block (ggml-common.h); every other byte is codes
# or packed integer scales, where any value is valid.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.TQ1_0: [52],
    T.TQ2_0: [64],
}
TYPES = [T.F32, T.F16, T.BF16, *F16_FIELDS]


def finite_f16(rng, n):
    h = rng.integers(0, 1 << 16, size=n, dtype=np.uint16)
    inf_nan = (h & 0x7C00) == 0x7C00
    h[inf_nan] &= 0xBFFF  # drop the top exponent bit: a finite value
    return h


def random_tensor(rng, t, shape):
    """Raw little-endian bytes (rows of the innermost dimension) for a tensor of type t."""
    blck, size = gguf.GGML_QUANT_SIZES[t]
    rows = int(np.prod(shape[:-1]))
    nblocks = rows * shape[-1] // blck
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    if t == T.F32:
        u = raw.view(np.uint32)
        u[(u & 0x7F800000) == 0x7F800000] &= 0xBFFFFFFF
    elif t == T.BF16:
        u = raw.view(np.uint16)
        u[(u & 0x7F80) == 0x7F80] &= 0xBFFF
    elif t == T.F16:
        raw = finite_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    else:
        for off in F16_FIELDS[t]:
            raw[:, off:off + 2] = finite_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(*shape[:-1], shape[-1] // blck * size)


def write(path, seed, rows):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    for t in TYPES:
        # numpy order (outermost first); ne[0] = 512 is whole blocks of 32 and of 256
        w.add_tensor(f"t.{t.name}", random_tensor(rng, t, (rows, 512)), raw_dtype=t)
        w.add_tensor(f"t3.{t.name}", random_tensor(rng, t, (2, 2, 256)), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def oracle_f32(t):
    """numpy's dequantization of a GGUFReader tensor as a flat little-endian f32 array."""
    qtype = T(t.tensor_type)
    blck, size = gguf.GGML_QUANT_SIZES[qtype]
    ne0 = int(t.shape[0])
    raw = np.asarray(t.data).view(np.uint8).reshape(-1, ne0 // blck * size)
    return np.ascontiguousarray(dequantize(raw, qtype), dtype="<f4").reshape(-1)


def compare(path, listing, dump):
    r = gguf.GGUFReader(path)
    got = np.fromfile(dump, dtype="<f4")
    lines = open(listing).read().split("\n")[:-1]
    if len(lines) != len(r.tensors):
        sys.exit(f"oracle: {len(lines)} tensors listed, the file has {len(r.tensors)}")
    off, bad = 0, 0
    for t, line in zip(r.tensors, lines):
        want = oracle_f32(t)
        head = f"{t.name} {T(t.tensor_type).name} {want.size}"
        if line != head:
            sys.exit(f"oracle: listed '{line}', the file has '{head}'")
        g = got[off:off + want.size]
        off += want.size
        if g.size != want.size:
            sys.exit(f"oracle: dump ends inside {t.name}")
        diff = np.nonzero(g.view(np.uint32) != want.view(np.uint32))[0]
        if diff.size:
            i = diff[0]
            print(f"{t.name}: {diff.size} of {want.size} differ, first at {i}: "
                  f"ours {g[i]!r} ({g.view(np.uint32)[i]:08x}), numpy {want[i]!r} "
                  f"({want.view(np.uint32)[i]:08x})")
            bad += 1
        else:
            print(f"{t.name}: {want.size} elements bit for bit")
    if off != got.size:
        sys.exit(f"oracle: dump has {got.size - off} extra floats")
    sys.exit(1 if bad else 0)


def hash_file(path):
    import xxhash
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        f = oracle_f32(t)
        print(f"{t.name} {T(t.tensor_type).name} {f.size} {xxhash.xxh64(f.tobytes()).hexdigest()}")


def bad(d):
    rng = np.random.default_rng(1)
    for name, t in (("iq2_xxs", T.IQ2_XXS), ("iq1_s", T.IQ1_S)):
        w = gguf.GGUFWriter(f"{d}/{name}.gguf", "llama")
        w.add_tensor("ok.weight", random_tensor(rng, T.Q4_K, (2, 256)), raw_dtype=T.Q4_K)
        blck, size = gguf.GGML_QUANT_SIZES[t]
        w.add_tensor("blk.0.attn_q.weight",
                     rng.integers(0, 256, size=(2, size), dtype=np.uint8), raw_dtype=t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    # A Q4_K row of 300 elements: the writer only checks whole blocks for uint8 data, so give
    # it 2 rows of 144 + 144 bytes as int8 with the element shape spelled out.
    w = gguf.GGUFWriter(f"{d}/ragged.gguf", "llama")
    w.add_tensor("blk.0.ffn_down.weight", np.zeros((2, 288), dtype=np.int8), raw_shape=(2, 300),
                 raw_dtype=T.Q4_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "write" and len(sys.argv) in (4, 5):
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) == 5 else 3)
    elif cmd == "compare" and len(sys.argv) == 5:
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "hash" and len(sys.argv) == 3:
        hash_file(sys.argv[2])
    elif cmd == "bad" and len(sys.argv) == 3:
        bad(sys.argv[2])
    else:
        sys.exit(__doc__)
