#!/usr/bin/env python3
"""Independent reference for the C tokenizer (tests/tools/tokenizer.bats).

  spm-json TOK.bin OUT.json [--pairs]   llama2.c tokenizer.bin -> HF tokenizer.json (Llama-2 layout)
  spm-encode TOK.bin TEXT NBYTES        llama2.c encode() of the first NBYTES bytes (ids, no BOS)
  bl-train STYLE CORPUS NBYTES OUT.json train a byte-level BPE (vocab 1000) with HF `tokenizers`;
                                        STYLE: gpt2, gpt2-prefix, llama3, qwen2
  hf-encode JSON TEXT                   HF `tokenizers` encode (no post-processor specials)
  hf-decode JSON IDS OUT                HF decode (skip_special_tokens) of the ids in IDS to OUT
  utf8-prefix FILE NBYTES OUT           first NBYTES of FILE, cut back to a UTF-8 character boundary
  edge-text OUT                         Unicode edge cases (accents, emoji, CJK, numbers, ...)

spm-encode follows llama2.c's run.c literally (dummy prefix " ", UTF-8 grouping, byte fallback
id = byte + 3, repeatedly merge the leftmost adjacent pair whose concatenation has the highest
score); it never looks at merges, so it checks the merge derivation and the C rank rule together.
"""
import json
import struct
import sys

META = "\u2581"


def read_llama2c(path):
    data = open(path, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, toks, scores = 4, [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        toks.append(data[off:off + n])
        scores.append(score)
        off += n
    return toks, scores


def spm_json(tok_path, out_path, pairs=False):
    """The importer's derivation: ' ' -> '▁', ids 0..2 are <unk>,<s>,</s>; for every token t
    (by score descending) every split t = a + b with a, b in the vocab becomes merge "a b"."""
    toks, scores = read_llama2c(tok_path)
    names = {0: "<unk>", 1: "<s>", 2: "</s>"}
    pieces = [names.get(i, t.decode("utf-8").replace(" ", META)) for i, t in enumerate(toks)]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = []
    order = sorted(range(len(pieces)), key=lambda i: -scores[i])  # stable: id order on ties
    for i in order:
        if i < 3 or pieces[i].startswith("<0x"):
            continue
        t = pieces[i]
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in vocab and b in vocab:
                merges.append([a, b] if pairs else a + " " + b)
    added = [{"id": i, "content": names[i], "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in range(3)]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": META},
            {"type": "Replace", "pattern": {"String": " "}, "content": META}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)


def llama2c_encode(toks, scores, text):
    """run.c encode(text, bos=0, eos=0), with the O(n) leftmost-maximum scan kept per merge
    (pair scores cached in a list; list.index finds the leftmost maximum)."""
    lookup = {t: i for i, t in enumerate(toks)}
    ids = []
    if text:
        ids.append(lookup[b" "])
    buf = b""
    for i in range(len(text)):
        c = text[i]
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        nxt = text[i + 1] if i + 1 < len(text) else 0
        if (nxt & 0xC0) == 0x80 and len(buf) < 4:
            continue
        if buf in lookup:
            ids.append(lookup[buf])
        else:
            ids.extend(b + 3 for b in buf)
        buf = b""
    NONE = float("-inf")

    def pair(i):
        j = lookup.get(toks[ids[i]] + toks[ids[i + 1]])
        return (scores[j], j) if j is not None else (NONE, -1)

    ps = [pair(i) for i in range(len(ids) - 1)]
    best_scores = [p[0] for p in ps]
    while best_scores:
        best = max(best_scores)
        if best == NONE:
            break
        i = best_scores.index(best)  # leftmost, as run.c's strict '>' scan
        ids[i] = ps[i][1]
        del ids[i + 1], ps[i], best_scores[i]
        if i < len(ps):
            ps[i] = pair(i)
            best_scores[i] = ps[i][0]
        if i > 0:
            ps[i - 1] = pair(i - 1)
            best_scores[i - 1] = ps[i - 1][0]
    return ids


LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
              r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bl_train(style, corpus, nbytes, out_path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    text = open(corpus, "rb").read()[:nbytes].decode("utf-8", "ignore")
    tok = Tokenizer(models.BPE())
    if style in ("gpt2", "gpt2-prefix"):
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=style == "gpt2-prefix",
                                                     use_regex=True)
        specials = ["<|endoftext|>"]
    else:
        pat = LLAMA3_PAT if style == "llama3" else QWEN2_PAT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        if style == "qwen2":
            tok.normalizer = normalizers.NFC()
        specials = ["<|begin_of_text|>", "<|end_of_text|>"] if style == "llama3" else \
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    tok.save(out_path)
    if style == "llama3":  # Llama-3 sets ignore_merges; the trainer does not, so patch it in
        doc = json.load(open(out_path, encoding="utf-8"))
        doc["model"]["ignore_merges"] = True
        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)


def hf_encode(json_path, text_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(json_path)
    text = open(text_path, "rb").read().decode("utf-8")
    return tok.encode(text, add_special_tokens=False).ids


EDGE_TEXT = (
    "Café naïve résumé façade — “quotes” ‘single’ … «guillemets»\n\n"
    "Emoji: 😀👍🏽 👨‍👩‍👧 🇫🇷 ✨\n"
    "CJK: 日本語のテキスト、中文字符，한국어 텍스트\n"
    "Numbers: 12345 3.14159 1,000,000 42nd 2024-01-01 007 1234567890123\n"
    "Contractions: I'm you're he'll she'd we've it's DON'T I'M They'Re can't\n"
    "  multiple   spaces\t\ttabs \t mixed\r\nwindows line\r\n\n\n"
    "trailing spaces   \n"
    "Greek Αλφα Ωμέγα, Cyrillic кириллица, Hebrew עברית, Arabic العربية, Thai ภาษาไทย\n"
    "Symbols: @#$%^&*()_+-=[]{}|;':\",./<>?`~ ©®™ ° ± × ÷ µ ¶ § \u00a0nbsp\u2009thin\u200bzw\n"
    "special<|endoftext|>in text <|begin_of_text|> and <|end_of_text|>end\n"
    "    indented code:\n        return x**2  # comment\n"
    "end without newline   "
)


def main(argv):
    cmd = argv[1]
    if cmd == "spm-json":
        spm_json(argv[2], argv[3], pairs="--pairs" in argv)
    elif cmd == "spm-encode":
        toks, scores = read_llama2c(argv[2])
        text = open(argv[3], "rb").read()[:int(argv[4])]
        print("\n".join(map(str, llama2c_encode(toks, scores, text))))
    elif cmd == "bl-train":
        bl_train(argv[2], argv[3], int(argv[4]), argv[5])
    elif cmd == "hf-encode":
        print("\n".join(map(str, hf_encode(argv[2], argv[3]))))
    elif cmd == "hf-decode":
        from tokenizers import Tokenizer

        ids = [int(x) for x in open(argv[3]).read().split()]
        text = Tokenizer.from_file(argv[2]).decode(ids, skip_special_tokens=True)
        open(argv[4], "wb").write(text.encode("utf-8"))
    elif cmd == "utf8-prefix":
        data = open(argv[2], "rb").read()[:int(argv[3])]
        open(argv[4], "wb").write(data.decode("utf-8", "ignore").encode("utf-8"))
    elif cmd == "edge-text":
        open(argv[2], "wb").write(EDGE_TEXT.encode("utf-8"))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(sys.argv)
