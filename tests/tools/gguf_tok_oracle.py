#!/usr/bin/env python3
"""Independent reference for GGUF vocabularies (tests/tools/gguf_tokenizer.bats).

  texts OUTDIR AUSTEN WIKI              varied.txt (digits, code, Unicode, CRLF, spaces, tabs,
                                        chat tokens), austen.txt and wiki.txt (first 20 KB each)
  retag SRC.gguf OUTDIR SPEC...         SRC's vocabulary (tokens, types, merges, special ids) in
                                        vocabulary-only GGUFs OUTDIR/SPEC.gguf; SPEC = PRE, or
                                        PRE,ADD_BOS (0/1: tokenizer.ggml.add_bos_token), or
                                        PRE,ADD_BOS,MODEL (tokenizer.ggml.model; ADD_BOS - for none)
  train CORPUS NBYTES PRE OUT.gguf      a byte-level BPE (vocab 2000) trained by HF `tokenizers` on
                                        the first NBYTES of CORPUS, as a GGUF with that pre name
  bad-merge SRC.gguf IDX TEXT OUT.gguf  SRC with merge IDX replaced by TEXT
  ref-json GGUF OUT.json [--hf]         a tokenizer.json built here from the GGUF with the
                                        `tokenizers` API: by default llama.cpp's regex list for the
                                        pre name (llama-vocab.cpp) as Split steps + ByteLevel
                                        without regex; --hf: the pipeline of the model family's
                                        own tokenizer.json (SmolLM2 / StarCoder, Llama 3, Qwen2,
                                        GPT-2)
  hf-encode JSON PREFIX [--special] TEXT...
                                        `tokenizers` ids of each TEXT (one per line) to
                                        PREFIX.<TEXT's name without .txt> (--special: with the
                                        post-processor's BOS/EOS)
  add-bos PRE                           llama.cpp's default BOS rule for a byte-level PRE (0/1)
  get-key GGUF KEY                      a metadata value as the `gguf` package reads it

Nothing here reads the C code's output: the regexes are llama.cpp's spellings (which differ from
the ones gguf_vocab.c writes: (?:'[sS]|...) for (?i:...), GPT-2's without the final |\\s+, the
\\p{N} split for Digits), merges are split at the first space after the first byte as llama.cpp
does, and ignore_merges / BOS follow llama.cpp's table for the name.
"""
import sys

import gguf
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

GPT2_LC = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
CASES = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3_LC = CASES + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_LC = CASES + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# llama-vocab.cpp: pre name -> (regex list, ignore_merges, add_bos)
LLAMACPP = {}
for n in ("gpt-2", "phi-2", "mpt", "olmo"):
    LLAMACPP[n] = ([GPT2_LC], False, False)
for n in ("starcoder", "refact", "command-r", "smollm", "codeshell"):
    LLAMACPP[n] = ([r"\p{N}", GPT2_LC], False, False)
for n in ("llama-bpe", "llama3", "llama-v3"):
    LLAMACPP[n] = ([LLAMA3_LC], True, True)
for n in ("dbrx", "smaug-bpe"):
    LLAMACPP[n] = ([LLAMA3_LC], False, False)
for n in ("qwen2", "deepseek-r1-qwen", "stablelm2"):
    LLAMACPP[n] = ([QWEN2_LC], False, False)
LLAMACPP["default"] = ([r"[\p{P}\$\+<=>\^~\|]+", GPT2_LC, r"\p{N}+", r"[0-9][0-9][0-9]"], False, False)


def hf_family_pre(pre):
    """The model family's own tokenizer.json pipeline (normalizer, pre_tokenizer)."""
    if pre in ("smollm", "starcoder"):  # SmolLM2 / StarCoder tokenizer.json
        return None, pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    if pre in ("llama-bpe", "llama3", "llama-v3"):  # Meta-Llama-3 tokenizer.json
        return None, pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                                       r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                                 behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    if pre == "qwen2":  # Qwen2 tokenizer.json
        return normalizers.NFC(), pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
                                       r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                                 behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if pre in ("gpt-2", "gpt2"):
        return None, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raise SystemExit(f"--hf: no family pipeline for {pre}")


def field(r, key):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def read_vocab(path):
    r = gguf.GGUFReader(path)
    return {k: field(r, k) for k in r.fields if k.startswith("tokenizer.") or k.startswith("general.")
            or k.endswith(".context_length")}


def write_vocab(kv, pre, out, add_bos=None, merges=None, model="gpt2"):
    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(kv.get("llama.context_length") or 2048)
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(kv["tokenizer.ggml.tokens"])
    w.add_token_types(kv["tokenizer.ggml.token_type"])
    w.add_token_merges(merges if merges is not None else kv["tokenizer.ggml.merges"])
    for key, fn in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                    ("unknown_token_id", w.add_unk_token_id), ("padding_token_id", w.add_pad_token_id)):
        if kv.get("tokenizer.ggml." + key) is not None:
            fn(kv["tokenizer.ggml." + key])
    if add_bos is not None:
        w.add_add_bos_token(bool(int(add_bos)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ref_json(path, out, hf_family=False):
    kv = read_vocab(path)
    assert kv["tokenizer.ggml.model"] == "gpt2"
    pre = kv.get("tokenizer.ggml.pre", "default")
    toks, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    vocab = {}
    for i, t in enumerate(toks):
        vocab.setdefault(t, i)
    merges = []
    for m in kv["tokenizer.ggml.merges"]:
        p = m.find(" ", 1)  # llama.cpp: word.find(' ', 1)
        merges.append((m[:p], m[p + 1:]))
    regexes, ignore_merges, add_bos = LLAMACPP[pre]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    if hf_family:
        norm, pt = hf_family_pre(pre)
        if norm is not None:
            tok.normalizer = norm
        tok.pre_tokenizer = pt
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken
    tok.add_special_tokens([AddedToken(toks[i], special=True, normalized=False)
                            for i, ty in enumerate(types) if ty == 3])
    ab = kv.get("tokenizer.ggml.add_bos_token")
    if ab is None:
        ab = add_bos
    if ab:
        bos = toks[kv["tokenizer.ggml.bos_token_id"]]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, kv["tokenizer.ggml.bos_token_id"])])
    tok.save(out)


def utf8_prefix(path, n):
    b = open(path, "rb").read(n)
    return b.decode("utf-8", errors="ignore").encode("utf-8")


VARIED = (
    "Digits: 12345 3.14 2026 1,000,000 0x1F 007 -42 1e-5 \u00bd \u00b2 \u0663\u0664\u0665 "
    "\uff11\uff12\uff13 99.9%\n"
    "def f(x):\n\treturn x**2 + 1  # comment\n    if (a && b) { printf(\"%d\\n\", i++); }\n"
    "Caf\u00e9 d\u00e9j\u00e0 vu, na\u00efve fa\u00e7ade; \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac; "
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439; \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8; "
    "\u4e2d\u6587\u5b57\u7b26; \ud55c\uad6d\uc5b4; \U0001f917\U0001f680 "
    "\U0001f469\u200d\U0001f469\u200d\U0001f467 \ufb01\n"
    "line one\r\nline two\r\n\r\nlast\r\n"
    "   leading spaces and multiple    spaces\t\ttabs\tinside  trailing   \n"
    "I'm, you're, He'LL, they've, it's, DON'T, we'd\n"
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>\n"
    " \n\n\n  \t \u00a0nbsp\u3000ideographic space\n"
)


def main():
    a = sys.argv[1:]
    if not a:
        raise SystemExit(__doc__)
    cmd = a[0]
    if cmd == "texts":
        out, austen, wiki = a[1:4]
        open(f"{out}/varied.txt", "wb").write(VARIED.encode("utf-8"))
        open(f"{out}/austen.txt", "wb").write(utf8_prefix(austen, 20000))
        open(f"{out}/wiki.txt", "wb").write(utf8_prefix(wiki, 20000))
    elif cmd == "retag":
        kv = read_vocab(a[1])
        for spec in a[3:]:
            f = spec.split(",")
            add_bos = f[1] if len(f) > 1 and f[1] != "-" else None
            write_vocab(kv, f[0], f"{a[2]}/{spec.replace(',', '_')}.gguf", add_bos,
                        model=f[2] if len(f) > 2 else "gpt2")
    elif cmd == "train":
        corpus, nbytes, pre, out = a[1], int(a[2]), a[3], a[4]
        from tokenizers import trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator([utf8_prefix(corpus, nbytes).decode("utf-8")], trainer)
        j = __import__("json").loads(tok.to_str())
        vocab = j["model"]["vocab"]
        toks = [None] * len(vocab)
        for t, i in vocab.items():
            toks[i] = t
        merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
        # Whole words no merge reaches (as Llama 3's vocabulary has): only ignore_merges maps a
        # pre-token straight to them. The 200 most frequent words of 6+ letters not in the vocab.
        import collections
        import re
        words = collections.Counter(re.findall(r" [A-Za-z]{6,}", utf8_prefix(corpus, nbytes).decode()))
        extra = [w.replace(" ", "\u0120") for w, _ in words.most_common()
                 if w.replace(" ", "\u0120") not in vocab][:200]
        toks += extra
        kv = {"tokenizer.ggml.tokens": toks,
              "tokenizer.ggml.token_type": [3 if t == "<|endoftext|>" else 1 for t in toks],
              "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": 0,
              "tokenizer.ggml.eos_token_id": 0}
        write_vocab(kv, pre, out)
    elif cmd == "bad-merge":
        kv = read_vocab(a[1])
        merges = list(kv["tokenizer.ggml.merges"])
        merges[int(a[2])] = a[3]
        write_vocab(kv, kv["tokenizer.ggml.pre"], a[4], merges=merges)
    elif cmd == "ref-json":
        ref_json(a[1], a[2], "--hf" in a[3:])
    elif cmd == "hf-encode":
        tok = Tokenizer.from_file(a[1])
        special = "--special" in a[3:]
        for path in (x for x in a[3:] if x != "--special"):
            text = open(path, "rb").read().decode("utf-8")
            ids = tok.encode(text, add_special_tokens=special).ids
            name = path.rsplit("/", 1)[-1].removesuffix(".txt")
            with open(f"{a[2]}.{name}", "w") as f:
                f.write("".join(f"{i}\n" for i in ids))
    elif cmd == "get-key":
        sys.stdout.write(str(read_vocab(a[1])[a[2]]))
    elif cmd == "add-bos":
        print(int(LLAMACPP[a[1]][2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
