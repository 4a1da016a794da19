#!/usr/bin/env python3
"""Independent oracle for the safetensors tests: the Hugging Face `safetensors` package plus numpy.

  safetensors_oracle.py dump IN.safetensors OUT.txt
      Parse IN with safetensors (deserialize, and safe_open(framework="np") for the dtypes numpy
      has), decode every tensor with formulas written here from the bit layouts, write OUT.txt.
  safetensors_oracle.py write OUT.safetensors OUT.txt
      Write OUT.safetensors with safetensors' own serializer (all dtypes, BF16/F8/F4 as raw
      bytes), OUT.np.safetensors with safetensors.numpy.save_file, and their values to OUT.txt.

OUT.txt: one line per tensor, tab-separated: name, dtype, shape (comma-separated), values
(space-separated; Python repr of float64 for floats, integers for integer types), and a line
"__metadata__<TAB>json" when the file has metadata. Exit status 77 when the modules are missing.
"""
import json
import sys

try:
    import numpy as np
    import safetensors
    import safetensors.numpy as stnp
except ImportError:
    sys.exit(77)

NP_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "U8": "u1", "I16": "<i2",
             "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "?"}


def minifloat(codes, ebits, mbits, bias, fn):
    """Decode codes of a sign/exponent/mantissa format to float64 from the bit layout."""
    c = codes.astype(np.int64)
    s = (c >> (ebits + mbits)) & 1
    e = (c >> mbits) & ((1 << ebits) - 1)
    m = c & ((1 << mbits) - 1)
    v = np.where(e == 0, m / 2.0**mbits * 2.0 ** (1 - bias), (1 + m / 2.0**mbits) * 2.0 ** (e - bias))
    emax = (1 << ebits) - 1
    if fn:  # E4M3FN: only all-ones is NaN, no inf
        v = np.where((e == emax) & (m == (1 << mbits) - 1), np.nan, v)
    else:
        v = np.where(e == emax, np.where(m == 0, np.inf, np.nan), v)
    return np.where(s == 1, -v, v)


def decode(dtype, data, numel):
    b = np.frombuffer(bytes(data), dtype=np.uint8)
    if dtype in NP_DTYPES:
        return np.frombuffer(bytes(data), dtype=NP_DTYPES[dtype])
    if dtype == "BF16":
        return minifloat(np.frombuffer(bytes(data), dtype="<u2"), 8, 7, 127, False)
    if dtype == "F8_E4M3":
        return minifloat(b, 4, 3, 7, True)
    if dtype == "F8_E5M2":
        return minifloat(b, 5, 2, 15, False)
    if dtype == "F8_E8M0":
        return np.where(b == 255, np.nan, 2.0 ** (b.astype(np.float64) - 127))
    if dtype == "F4":
        nib = np.stack([b & 15, b >> 4], axis=1).reshape(-1)[:numel]
        mag = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])[nib & 7]
        return np.where(nib & 8, -mag, mag)
    raise SystemExit(f"oracle: unsupported dtype {dtype}")


def fmt_values(dtype, v):
    if dtype in ("BOOL",):
        return " ".join(str(int(x)) for x in v)
    if dtype[0] in "IU":
        return " ".join(str(int(x)) for x in v)
    return " ".join(repr(float(x)) for x in v)


def line(name, dtype, shape, v):
    return f"{name}\t{dtype}\t{','.join(map(str, shape))}\t{fmt_values(dtype, v)}\n"


def dump(path, out):
    with open(path, "rb") as f:
        raw = f.read()
    lines = []
    with safetensors.safe_open(path, framework="np") as f:
        md = f.metadata()
        if md is not None:
            lines.append("__metadata__\t" + json.dumps(md, sort_keys=True) + "\n")
        for name, info in safetensors.deserialize(raw):
            dtype, shape = info["dtype"], info["shape"]
            numel = int(np.prod(shape)) if shape else 1
            v = decode(dtype, info["data"], numel)
            if dtype in NP_DTYPES:  # the numpy loader must agree with the raw bytes
                t = f.get_tensor(name)
                assert list(t.shape) == list(shape), (name, t.shape, shape)
                assert t.tobytes() == bytes(info["data"]), name
            assert len(v) == numel, (name, len(v), numel)
            lines.append(line(name, dtype, shape, v))
    with open(out, "w") as f:
        f.writelines(lines)


def write(path, out):
    rng = np.random.default_rng(1234)
    lines = []
    # Through safetensors.numpy.save_file: numpy dtypes only.
    np_tensors = {
        "np.f32": rng.standard_normal((3, 5)).astype(np.float32),
        "np.f16": rng.standard_normal(7).astype(np.float16),
        "np.f64": rng.standard_normal((2, 2)),
        "np.i8": rng.integers(-128, 128, 9).astype(np.int8),
        "np.u8": rng.integers(0, 256, 4).astype(np.uint8),
        "np.i32": rng.integers(-(2**31), 2**31, 6).astype(np.int32),
        "np.i64": np.array([-(2**62), 2**53 + 1, 7], dtype=np.int64),
        "np.u16": rng.integers(0, 65536, 3).astype(np.uint16),
        "np.bool": np.array([True, False, True]),
        "np.scalar": np.array(2.5, dtype=np.float32),
        "np.empty": np.zeros((0, 4), dtype=np.float32),
    }
    stnp.save_file(np_tensors, path.replace(".safetensors", ".np.safetensors"), metadata={"format": "np", "k": "v"})
    rev = {np.dtype(v): k for k, v in NP_DTYPES.items()}
    for name, a in np_tensors.items():
        dt = rev[a.dtype]
        lines.append(line(name, dt, a.shape, a.reshape(-1)))
    # Through the serializer with raw bytes: the dtypes numpy lacks.
    bf16 = rng.integers(0, 65536, 64).astype(np.uint16)
    e4m3 = np.arange(256, dtype=np.uint8)
    e5m2 = np.arange(256, dtype=np.uint8)[::-1].copy()
    e8m0 = np.arange(256, dtype=np.uint8)
    f4 = rng.integers(0, 256, 10).astype(np.uint8)  # 20 elements
    raw = {  # name: (safetensors dtype, torch-style dtype name, logical shape, storage)
        "raw.bf16": ("BF16", "bfloat16", [8, 8], bf16),
        "raw.e4m3": ("F8_E4M3", "float8_e4m3fn", [16, 16], e4m3),
        "raw.e5m2": ("F8_E5M2", "float8_e5m2", [256], e5m2),
        "raw.e8m0": ("F8_E8M0", "float8_e8m0fnu", [2, 128], e8m0),
        "raw.f4": ("F4", "float4_e2m1fn_x2", [2, 10], f4),
    }
    specs = {}
    for name, (st, torch_name, shape, buf) in raw.items():
        spec_shape = shape[:-1] + [shape[-1] // 2] if st == "F4" else shape  # F4: storage shape
        if hasattr(safetensors, "TensorSpec"):
            specs[name] = safetensors.TensorSpec(dtype=torch_name, shape=spec_shape, data_ptr=buf.ctypes.data,
                                                 data_len=buf.nbytes)
        else:  # older releases take a dict with the bytes
            specs[name] = {"dtype": torch_name, "shape": spec_shape, "data": buf.tobytes()}
        numel = int(np.prod(shape))
        lines.append(line(name, st, shape, decode(st, buf.tobytes(), numel)))
    safetensors.serialize_file(specs, path, {"format": "pt"})
    with open(out, "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("dump", "write"):
        sys.exit(__doc__)
    {"dump": dump, "write": write}[sys.argv[1]](sys.argv[2], sys.argv[3])
