#!/usr/bin/env python3
"""Independent GGUF v3 reader: conformance oracle for as-pack -f gguf (tests/tools/gguf.bats).

Written from the GGUF specification (docs/gguf.md, REFERENCE.md "GGUF") and ggml's block
layouts, not from the C code. Commands:

  parse FILE                      parse and validate; print a JSON summary; exit 1 with a one-line
                                  message on a malformed file
  check FILE HF_DIR CT_DIR FQ_DIR check every key against HF_DIR's config.json / tokenizer.json
                                  and every tensor info; dequantize every tensor and compare:
                                  block tensors with the compressed-tensors checkpoint CT_DIR
                                  (fp16 scales) exactly (Q4_1: d*q + fp16(-d*z), see docs), float
                                  tensors with the fakequant checkpoint FQ_DIR (quantized linears)
                                  or HF_DIR (everything else); q/k rows after undoing llama.cpp's
                                  permutation
  llama2c FILE CKPT.bin           attn_q/attn_k rows of FILE (round-to-nearest Q8_0, or float)
                                  are the rows of the llama2.c checkpoint (Meta's interleaved RoPE
                                  layout), to within half a quantization step
  fmin FILE HF_DIR FQ_DIR         float-minimum layers (as-gptq --float-min): every decoder linear
                                  of FILE, dequantized here (Q4_1: d*q + m), equals the fakequant
                                  checkpoint FQ_DIR of the same stream bit for bit (q/k rows
                                  unpermuted), and some Q4_1 blocks have an m that no integer zero
                                  (m = -d*z) could express
  corrupt FILE OUTDIR             write corrupted variants: truncated.gguf, badmagic.gguf,
                                  badalign.gguf (general.alignment 48), misplaced.gguf (a tensor
                                  offset off the alignment grid)
  pkg FILE                        cross-check with the `gguf` package (llama.cpp's gguf-py):
                                  same keys, tensor infos and dequantized values; exit 77 if absent
Exit status 77 when numpy / safetensors are missing.
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    from safetensors import safe_open
except ImportError:
    sys.exit(77)

# value types (GGUF spec)
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml tensor types: name, elements per block, bytes per block
GGML = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        8: ("Q8_0", 32, 34), 30: ("BF16", 1, 2)}


class Bad(Exception):
    pass


class Gguf:
    def __init__(self, path):
        self.path = path
        self.buf = open(path, "rb").read()
        self.pos = 0
        self.parse()

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.buf):
            raise Bad(f"truncated: {what} at offset {self.pos} needs {n} bytes")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def num(self, fmt, what):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.num("<Q", what)
        return self.take(n, what).decode("utf-8")

    def value(self, t, what):
        if t == STRING:
            return self.string(what)
        if t == ARRAY:
            et = self.num("<I", what)
            n = self.num("<Q", what)
            if et == ARRAY or et not in SCALAR and et != STRING:
                raise Bad(f"{what}: bad array element type {et}")
            if et == STRING:
                return [self.string(what) for _ in range(n)]
            size = struct.calcsize(SCALAR[et])
            raw = self.take(n * size, what)
            return list(struct.unpack("<%d%s" % (n, SCALAR[et][1]), raw))
        if t not in SCALAR:
            raise Bad(f"{what}: unknown value type {t}")
        v = self.num(SCALAR[t], what)
        if t == BOOL:
            if v > 1:
                raise Bad(f"{what}: bool {v}")
            v = bool(v)
        return v

    def parse(self):
        if self.take(4, "magic") != b"GGUF":
            raise Bad("bad magic")
        self.version = self.num("<I", "version")
        if self.version != 3:
            raise Bad(f"version {self.version}, expected 3")
        n_t = self.num("<Q", "tensor count")
        n_kv = self.num("<Q", "kv count")
        self.kv, self.types = {}, {}
        for i in range(n_kv):
            k = self.string(f"key {i}")
            t = self.num("<I", k)
            if k in self.kv:
                raise Bad(f"duplicate key {k}")
            self.types[k] = t
            if t == ARRAY:
                save = self.pos
                self.types[k] = (ARRAY, self.num("<I", k))
                self.pos = save
            self.kv[k] = self.value(t, k)
        self.align = self.kv.get("general.alignment", 32)
        if "general.alignment" in self.kv and (self.types["general.alignment"] != U32 or
                                               self.align <= 0 or self.align & (self.align - 1)):
            raise Bad(f"general.alignment {self.align} is not a u32 power of two")
        self.tensors = []
        for i in range(n_t):
            name = self.string(f"tensor {i}")
            nd = self.num("<I", name)
            if not 1 <= nd <= 4:
                raise Bad(f"tensor {name}: n_dims {nd}")
            ne = [self.num("<Q", name) for _ in range(nd)]
            t = self.num("<I", name)
            off = self.num("<Q", name)
            if t not in GGML:
                raise Bad(f"tensor {name}: type {t}")
            if off % self.align:
                raise Bad(f"tensor {name}: offset {off} not a multiple of {self.align}")
            tname, bs, bb = GGML[t]
            if ne[0] % bs:
                raise Bad(f"tensor {name}: ne0 {ne[0]} not a multiple of {bs}")
            nbytes = int(np.prod(ne)) // bs * bb
            self.tensors.append(dict(name=name, ne=ne, type=tname, offset=off, nbytes=nbytes))
        self.data = (self.pos + self.align - 1) // self.align * self.align
        end = 0
        for t in sorted(self.tensors, key=lambda t: t["offset"]):
            if t["offset"] < end:
                raise Bad(f"tensor {t['name']}: overlaps the previous tensor")
            end = t["offset"] + t["nbytes"]
            if self.data + end > len(self.buf):
                raise Bad(f"truncated: tensor {t['name']} data beyond the end of the file")
        if self.buf[self.pos:self.data].strip(b"\0"):
            raise Bad("padding before the data section is not zero")

    def tensor(self, name):
        for t in self.tensors:
            if t["name"] == name:
                return t
        raise Bad(f"tensor {name} missing")

    def raw(self, t):
        s = self.data + t["offset"]
        return self.buf[s:s + t["nbytes"]]

    def dequant(self, t):
        """f32 array of shape ne[::-1] (rows outermost)."""
        raw, shape = self.raw(t), t["ne"][::-1]
        ty = t["type"]
        if ty == "F32":
            return np.frombuffer(raw, "<f4").reshape(shape)
        if ty == "F16":
            return np.frombuffer(raw, "<f2").astype(np.float32).reshape(shape)
        if ty == "BF16":
            return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
        d, m, q = self.blocks(t)
        if ty == "Q8_0":
            w = q.astype(np.float32) * d[:, None]
        elif ty == "Q4_0":
            w = (q.astype(np.int32) - 8).astype(np.float32) * d[:, None]
        else:
            w = q.astype(np.float32) * d[:, None] + m[:, None]
        return w.astype(np.float32).reshape(shape)

    def blocks(self, t):
        """(d f32 [B], m f32 [B] or None, q [B, 32]) of a block tensor, element order."""
        raw = self.raw(t)
        ty = t["type"]
        if ty == "Q8_0":
            a = np.frombuffer(raw, np.dtype([("d", "<f2"), ("q", "i1", 32)]))
            return a["d"].astype(np.float32), None, a["q"]
        if ty == "Q4_0":
            a = np.frombuffer(raw, np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
            m = None
        else:
            a = np.frombuffer(raw, np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)]))
            m = a["m"].astype(np.float32)
        # low nibbles: elements 0..15, high nibbles: 16..31
        q = np.concatenate([a["qs"] & 15, a["qs"] >> 4], axis=1)
        return a["d"].astype(np.float32), m, q


def qk_unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py permute(): GGUF rows back to HF rotate-half rows."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qk_permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class St:
    """All safetensors files of a checkpoint directory, by tensor name."""

    def __init__(self, d):
        self.files = {}
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                h = safe_open(os.path.join(d, f), framework="numpy")
                for k in h.keys():
                    self.files[k] = h

    def has(self, k):
        return k in self.files

    def get(self, k):
        return self.files[k].get_tensor(k)


def unpack_cols(packed, bits, count):
    per = 32 // bits
    out = np.zeros((packed.shape[0], packed.shape[1] * per), dtype=np.int64)
    for j in range(per):
        out[:, j::per] = (packed >> np.uint32(bits * j)) & np.uint32((1 << bits) - 1)
    return out[:, :count]


def ct_codes(ct, cfg, prefix):
    """(q [N,K] 0..maxq, scale f32 [N,G], zero [N,G]) from compressed-tensors pack-quantized."""
    w = cfg["quantization_config"]["config_groups"]["group_0"]["weights"]
    bits = w["num_bits"]
    N, K = [int(v) for v in ct.get(prefix + ".weight_shape")]
    q = unpack_cols(ct.get(prefix + ".weight_packed").view(np.uint32), bits, K)
    scale = ct.get(prefix + ".weight_scale")
    if scale.dtype != np.float16:
        raise Bad(f"{prefix}: compressed-tensors scales must be fp16 for an exact comparison")
    scale = scale.astype(np.float32)
    if w["symmetric"]:
        zero = np.full(scale.shape, 1 << (bits - 1), dtype=np.int64)
    else:
        zp = ct.get(prefix + ".weight_zero_point").view(np.uint32)
        zero = unpack_cols(np.ascontiguousarray(zp.T), bits, N).T
    return q, scale, zero


LIN = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
       ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
       ("mlp.down_proj", "ffn_down")]


def fail(msg):
    raise Bad(msg)


def check_tokenizer(g, hf):
    tj = json.load(open(os.path.join(hf, "tokenizer.json")))
    model = tj["model"]
    pieces = {v: k for k, v in model["vocab"].items()}
    for a in tj.get("added_tokens", []):
        pieces[a["id"]] = a["content"]
    special = {a["id"] for a in tj.get("added_tokens", []) if a.get("special")}
    toks = g.kv["tokenizer.ggml.tokens"]
    if g.kv["tokenizer.ggml.model"] != "llama":
        fail("tokenizer.ggml.model is not llama for a SentencePiece-style vocabulary")
    for i, t in enumerate(toks):
        if t != pieces.get(i, f"[PAD{i}]"):
            fail(f"tokenizer.ggml.tokens[{i}] = {t!r}, tokenizer.json has {pieces.get(i)!r}")
    unk = model["vocab"].get(model.get("unk_token"), -1)
    types = g.kv["tokenizer.ggml.token_type"]
    for i, t in enumerate(toks):
        want = (2 if i == unk else 3 if i in special else
                6 if len(t) == 6 and t.startswith("<0x") and t.endswith(">") else 1)
        if types[i] != want:
            fail(f"tokenizer.ggml.token_type[{i}] ({t!r}) = {types[i]}, expected {want}")
    cfg = json.load(open(os.path.join(hf, "config.json")))
    for key, want in (("bos_token_id", cfg["bos_token_id"]), ("eos_token_id", cfg["eos_token_id"]),
                      ("unknown_token_id", unk)):
        if g.kv.get("tokenizer.ggml." + key) != want:
            fail(f"tokenizer.ggml.{key} = {g.kv.get('tokenizer.ggml.' + key)}, expected {want}")
    if g.kv.get("tokenizer.ggml.add_bos_token") is not True:
        fail("tokenizer.ggml.add_bos_token is not true")
    # llama.cpp merges the pair whose concatenation scores highest: derive the merge list from
    # the scores (all splits of each normal token into two vocabulary tokens, by score) and it
    # must be tokenizer.json's merge list, in order.
    scores = g.kv["tokenizer.ggml.scores"]
    index = {t: i for i, t in enumerate(toks)}
    cand = []
    for i, t in enumerate(toks):
        if types[i] != 1:
            continue
        for k in range(1, len(t)):
            if t[:k] in index and t[k:] in index:
                cand.append((-scores[i], i, k))
    cand.sort()
    derived = [toks[i][:k] + " " + toks[i][k:] for _, i, k in cand]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    if derived != merges:
        bad = next(j for j in range(min(len(derived), len(merges))) if derived[j] != merges[j]) \
            if derived[:len(merges)] != merges[:len(derived)] else min(len(derived), len(merges))
        fail(f"merges derived from tokenizer.ggml.scores differ from tokenizer.json at {bad}")


def check(path, hf, ctdir, fqdir):
    g = Gguf(path)
    cfg = json.load(open(os.path.join(hf, "config.json")))
    ctcfg = json.load(open(os.path.join(ctdir, "config.json")))
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim", H // nh)
    want = {
        "general.architecture": "llama", "general.quantization_version": 2,
        "llama.context_length": cfg["max_position_embeddings"], "llama.embedding_length": H,
        "llama.block_count": L, "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.attention.head_count": nh, "llama.attention.head_count_kv": nkv,
        "llama.rope.dimension_count": hd, "llama.vocab_size": cfg["vocab_size"],
    }
    for k, v in want.items():
        if g.kv.get(k) != v:
            fail(f"key {k} = {g.kv.get(k)!r}, expected {v!r}")
        if k != "general.architecture" and g.types[k] != U32:
            fail(f"key {k} has type {g.types[k]}, expected u32")
    for k, v in (("llama.rope.freq_base", cfg.get("rope_theta", 10000.0)),
                 ("llama.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])):
        if g.types.get(k) != F32 or g.kv[k] != struct.unpack("<f", struct.pack("<f", v))[0]:
            fail(f"key {k} = {g.kv.get(k)!r}, expected f32 {v}")
    if g.align != 32:
        fail(f"alignment {g.align}, expected 32")
    check_tokenizer(g, hf)

    # tensor infos: exactly the llama.cpp names, [in, out] shapes
    inter, V = cfg["intermediate_size"], cfg["vocab_size"]
    shapes = {"token_embd.weight": [H, V], "output_norm.weight": [H]}
    if not cfg.get("tie_word_embeddings"):
        shapes["output.weight"] = [H, V]
    lin_shape = {"attn_q": [H, nh * hd], "attn_k": [H, nkv * hd], "attn_v": [H, nkv * hd],
                 "attn_output": [nh * hd, H], "ffn_gate": [H, inter], "ffn_up": [H, inter],
                 "ffn_down": [inter, H]}
    for l in range(L):
        shapes[f"blk.{l}.attn_norm.weight"] = [H]
        shapes[f"blk.{l}.ffn_norm.weight"] = [H]
        for _, n in LIN:
            shapes[f"blk.{l}.{n}.weight"] = lin_shape[n]
    names = [t["name"] for t in g.tensors]
    if sorted(names) != sorted(shapes) or len(set(names)) != len(names):
        fail(f"tensor names {sorted(set(names) ^ set(shapes))} differ from llama.cpp's")
    off = 0
    for t in g.tensors:  # llama.cpp's gguf.cpp: data in info order, each padded to the alignment
        if t["ne"] != shapes[t["name"]]:
            fail(f"tensor {t['name']}: ne {t['ne']}, expected {shapes[t['name']]}")
        if t["offset"] != off:
            fail(f"tensor {t['name']}: offset {t['offset']}, expected {off}")
        off += (t["nbytes"] + g.align - 1) // g.align * g.align
        if len(t["ne"]) == 1 and t["type"] != "F32":
            fail(f"tensor {t['name']}: norms must be F32")

    hfst, ct, fq = St(hf), St(ctdir), St(fqdir)
    counts = {}
    same = lambda a, b: a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    for t in g.tensors:
        name = t["name"]
        counts[t["type"]] = counts.get(t["type"], 0) + 1
        w = g.dequant(t)
        if name.startswith("blk.") and name.split(".")[2] in lin_shape:
            l, short = int(name.split(".")[1]), name.split(".")[2]
            prefix = f"model.layers.{l}." + next(h for h, n in LIN if n == short)
            if short in ("attn_q", "attn_k"):
                w = qk_unpermute(w, nh if short == "attn_q" else nkv)
            if t["type"] in ("Q4_0", "Q4_1", "Q8_0"):
                q, s, z = ct_codes(ct, ctcfg, prefix)
                G = s.shape[1]
                gi = np.arange(q.shape[1]) // (q.shape[1] // G)
                d = s[:, gi]
                if t["type"] == "Q4_1":  # m = fp16(-d * zero): the one extra rounding
                    m = (-s * z.astype(np.float32)).astype(np.float16).astype(np.float32)
                    exp = q.astype(np.float32) * d + m[:, gi]
                    gptq = d * (q - z[:, gi]).astype(np.float32)
                    bound = np.abs(d * z[:, gi].astype(np.float32)) * 2.0**-11 + 1e-12
                    if np.any(np.abs(w - gptq) > bound):
                        fail(f"tensor {name}: Q4_1 differs from the GPTQ dequant beyond fp16(m)")
                else:
                    exp = d * (q - z[:, gi]).astype(np.float32)
                if not same(w, exp.astype(np.float32)):
                    fail(f"tensor {name}: dequantized {t['type']} differs from the "
                         f"compressed-tensors checkpoint (max |diff| {np.abs(w - exp).max():g})")
            else:
                ref = fq.get(prefix + ".weight").astype(np.float32)
                if t["type"] == "F16":
                    ref = ref.astype(np.float16).astype(np.float32)
                if not same(w, ref):
                    fail(f"tensor {name}: {t['type']} differs from the fakequant weights")
        else:
            hfname = {"token_embd.weight": "model.embed_tokens.weight",
                      "output_norm.weight": "model.norm.weight",
                      "output.weight": "lm_head.weight"}.get(name)
            if not hfname:
                l, part = name.split(".")[1], name.split(".")[2]
                hfname = f"model.layers.{l}." + {"attn_norm": "input_layernorm",
                                                 "ffn_norm": "post_attention_layernorm"}[part] + ".weight"
            ref = hfst.get(hfname).astype(np.float32)
            if t["type"] == "F16":
                ref = ref.astype(np.float16).astype(np.float32)
            if not same(w, ref):
                fail(f"tensor {name}: differs from {hfname} of the checkpoint")
    print(json.dumps({"keys": len(g.kv), "tensors": len(g.tensors), "types": counts}))


def fmin(path, hf, fqdir):
    g = Gguf(path)
    cfg = json.load(open(os.path.join(hf, "config.json")))
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    fq = St(fqdir)
    same = lambda a, b: a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    n_q41 = n_blocks = off_grid = 0
    for t in g.tensors:
        parts = t["name"].split(".")
        if parts[0] != "blk" or parts[2] not in dict((n, h) for h, n in LIN):
            continue
        prefix = f"model.layers.{parts[1]}." + next(h for h, n in LIN if n == parts[2])
        w = g.dequant(t)
        if parts[2] in ("attn_q", "attn_k"):
            w = qk_unpermute(w, nh if parts[2] == "attn_q" else nkv)
        ref = fq.get(prefix + ".weight").astype(np.float32)
        if not same(w, ref):
            fail(f"tensor {t['name']}: {t['type']} differs from the fakequant weights "
                 f"(max |diff| {np.abs(w - ref).max():g})")
        if t["type"] == "Q4_1":
            n_q41 += 1
            d, m, _ = g.blocks(t)
            r = m[d != 0] / d[d != 0]
            n_blocks += len(d)
            off_grid += int(np.sum(np.abs(r - np.round(r)) > 0.01))
    if not n_q41:
        fail("no Q4_1 tensor")
    if not off_grid:
        fail("every Q4_1 minimum is a multiple of d: no float minimum")
    print(json.dumps({"q4_1": n_q41, "blocks": n_blocks, "off_grid": off_grid}))


def llama2c(path, ckpt):
    g = Gguf(path)
    raw = open(ckpt, "rb").read()
    dim, hidden, L, nh, nkv, vocab, seq = struct.unpack_from("<7i", raw, 0)
    a = np.frombuffer(raw, "<f4", offset=28)
    hd, kvd, V = dim // nh, nkv * (dim // nh), abs(vocab)
    o = V * dim + L * dim  # token embedding, rms_att
    wq = a[o:o + L * dim * dim].reshape(L, dim, dim)
    o += L * dim * dim
    wk = a[o:o + L * kvd * dim].reshape(L, kvd, dim)
    for l in range(L):
        for name, ref in (("attn_q", wq[l]), ("attn_k", wk[l])):
            t = g.tensor(f"blk.{l}.{name}.weight")
            w = g.dequant(t)
            if t["type"] == "Q8_0":
                # round to nearest with the f32 scale, stored with the fp16 one: within half a
                # step plus 128 times the scale's rounding (at most 2^-11 relative)
                d = np.abs(g.blocks(t)[0]).reshape(w.shape[0], -1)
                tol = np.repeat(d, 32, axis=1) * (0.5 + 130 * 2.0**-11)
            else:
                tol = np.abs(ref) * (2.0**-11 if t["type"] == "F16" else 0)
            if np.any(np.abs(w - ref) > tol):
                fail(f"tensor blk.{l}.{name}: rows are not llama2.c's interleaved rows")
            # and the HF (rotate-half) order is clearly different
            if np.abs(qk_unpermute(ref, 1) - ref).max() > 0 and \
                    np.all(np.abs(qk_unpermute(w, nh if name == "attn_q" else nkv) - ref) <= tol):
                fail(f"tensor blk.{l}.{name}: permutation is a no-op on this model")
    print("ok")


def corrupt(path, out):
    buf = bytearray(open(path, "rb").read())
    g = Gguf(path)
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, "truncated.gguf"), "wb").write(buf[:len(buf) * 2 // 3])
    b = bytearray(buf)
    b[0:4] = b"GGML"
    open(os.path.join(out, "badmagic.gguf"), "wb").write(b)
    key = b"general.alignment"
    i = buf.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", buf, i)[0] == U32
    b = bytearray(buf)
    struct.pack_into("<I", b, i + 4, 48)
    open(os.path.join(out, "badalign.gguf"), "wb").write(b)
    # the second tensor's offset field: name, n_dims, dims, type, then the u64 offset
    t = g.tensors[1]
    nm = t["name"].encode()
    j = buf.index(struct.pack("<Q", len(nm)) + nm + struct.pack("<I", len(t["ne"])))
    j += 8 + len(nm) + 4 + 8 * len(t["ne"]) + 4
    assert struct.unpack_from("<Q", buf, j)[0] == t["offset"]
    b = bytearray(buf)
    struct.pack_into("<Q", b, j, t["offset"] + 4)
    open(os.path.join(out, "misplaced.gguf"), "wb").write(b)


def pkg(path):
    try:
        import gguf
    except ImportError:
        sys.exit(77)
    g = Gguf(path)
    r = gguf.GGUFReader(path)
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    if keys != list(g.kv):
        fail(f"gguf package sees keys {set(keys) ^ set(g.kv)} differently")
    for k in keys:
        v = r.fields[k].contents()
        mine = g.kv[k]
        if isinstance(mine, float) or (isinstance(mine, list) and mine and isinstance(mine[0], float)):
            ok = np.allclose(np.asarray(v, dtype=np.float64), np.asarray(mine, dtype=np.float64), rtol=0, atol=0)
        else:
            ok = v == mine
        if not ok:
            fail(f"gguf package reads key {k} as {str(v)[:60]}")
    if len(r.tensors) != len(g.tensors):
        fail("gguf package sees a different tensor count")
    for rt, t in zip(r.tensors, g.tensors):
        if rt.name != t["name"] or rt.tensor_type.name != t["type"] or list(rt.shape) != t["ne"]:
            fail(f"gguf package reads tensor {rt.name} {rt.tensor_type.name} {list(rt.shape)}")
        w = gguf.quants.dequantize(rt.data, rt.tensor_type).astype(np.float32).reshape(t["ne"][::-1])
        if not np.array_equal(w, g.dequant(t)):
            fail(f"tensor {t['name']}: gguf package dequantizes it differently")
    from importlib.metadata import version
    print(f"gguf {version('gguf')}: {len(keys)} keys, {len(r.tensors)} tensors agree")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "parse":
            g = Gguf(args[0])
            print(json.dumps({"version": g.version, "keys": len(g.kv), "tensors": len(g.tensors),
                              "alignment": g.align}))
        elif cmd == "check":
            check(*args)
        elif cmd == "fmin":
            fmin(*args)
        elif cmd == "llama2c":
            llama2c(*args)
        elif cmd == "corrupt":
            corrupt(*args)
        elif cmd == "pkg":
            pkg(*args)
        else:
            sys.exit(f"unknown command {cmd}")
    except Bad as e:
        print(f"gguf_reader: {args[0]}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
