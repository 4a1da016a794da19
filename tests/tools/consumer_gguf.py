"""Real consumer of GGUF files (tests/tools/consumer_gguf.bats): Hugging Face transformers' own
GGUF loader (`from_pretrained(DIR, gguf_file=NAME)`) against what as-import writes from the same
GGUF (model.safetensors, config.json, tokenizer.json). Runs in .venv-consumer (torch,
transformers, gguf). One process does every check (the imports take seconds) and writes one JSON
report plus id files that the bats test compares with the C tokenizer and as-eval.

usage:
  consumer_gguf.py check REPORT.json WORK CTX CHUNKS PPL_TEXT TEXTS KIND:NAME:GGUF:DIR...
      TEXTS: comma-separated text files. KIND model: every check below; tok: tokens only (DIR
      holds tokenizer.json + tokenizer_config.json). Per NAME, under REPORT[NAME]:
      weights  transformers' state_dict (GGUF dequantized by transformers, q/k un-permuted by
               it) vs DIR/model.safetensors: names 1:1 (lm_head.weight left out when tied),
               every tensor equal bit for bit (f32 bit patterns, so -0.0 != +0.0)
      tokens   ids written to WORK/NAME.{gguf,gguf-s,dir,dir-s}.TEXTBASE, one per line:
               AutoTokenizer(gguf_file) and AutoTokenizer(DIR), without / with special tokens
               (-s: add_special_tokens=True, so the BOS rule of each shows); for a "smollm" vocab
               also NAME.gguf-digits.TEXTBASE: the GGUF tokenizer with SmolLM2's own Digits step
               put back (see below); `diff`: the spans where gguf and dir ids differ, as tokens
      ppl      as-eval's perplexity convention (docs/tools.md, --score half): TEXT tokenized
               whole by AutoTokenizer(DIR) with its BOS rule, CHUNKS windows of CTX tokens (first
               token replaced by BOS when the model adds one), positions CTX/2..CTX-2 scored; the
               model loaded from DIR (our files) and from the GGUF by transformers, and the
               largest |logit difference| between the two on the first window
  consumer_gguf.py weights GGUF DIR
      the weights check alone: prints "N tensors equal bit for bit" (exit 0) or one line per
      problem naming the tensor (exit 1)
  consumer_gguf.py tokens DIR OUTPREFIX TEXT...
      AutoTokenizer(DIR) ids (no special tokens) to OUTPREFIX.TEXTBASE

transformers 5.24's GGUF tokenizer for pre "smollm" is a plain GPT-2 ByteLevel: it lacks the
Digits(individual_digits) step of SmolLM2's tokenizer.json (HuggingFaceTB/SmolLM2-135M) and of
llama.cpp's "smollm" regexes ("\\p{N}" first). It differs from both on a space before a non-ASCII
numeric (" ½" is one piece to it); docs/consumers.md.
"""
import json
import math
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tokenizers import Tokenizer, pre_tokenizers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def split(gguf):
    return os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)


def read_text(path):
    # no newline translation: wikitext has CRLF lines, and "\r" is a token too
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def gguf_meta(gguf):
    from gguf import GGUFReader
    r = GGUFReader(gguf)
    m = {k: f.contents() for k, f in r.fields.items()
         if not k.startswith("tokenizer.ggml.") or k == "tokenizer.ggml.pre"}
    m["tensor_count"] = len(r.tensors)
    return m


def gguf_model(gguf, extra):
    """transformers' GGUF loader. Its qwen3 table maps no attention.key_length, so the config keeps
    Qwen3Config's default head_dim 128 whatever the file says; llama.cpp takes key_length, else
    hidden / heads. Passed here by that rule (recorded in the report as head_dim_passed)."""
    d, n = split(gguf)
    kw = {}
    m = gguf_meta(gguf)
    arch = m["general.architecture"]
    if not m["tensor_count"]:
        # transformers would build the model from its config defaults (billions of weights)
        raise ValueError(f"{gguf}: no tensors (a vocabulary-only GGUF?)")
    if arch == "qwen3":
        kw["head_dim"] = m.get(f"{arch}.attention.key_length") or \
            m[f"{arch}.embedding_length"] // m[f"{arch}.attention.head_count"]
        extra["head_dim_passed"] = kw["head_dim"]
    return AutoModelForCausalLM.from_pretrained(d, gguf_file=n, dtype=torch.float32, **kw).eval()


def weights(gguf, d, model=None):
    """(equal, total, problems): transformers' dequantized GGUF vs DIR/model.safetensors."""
    model = model or gguf_model(gguf, {})
    theirs = model.state_dict()
    ours = load_file(os.path.join(d, "model.safetensors"))
    problems = []
    if model.config.tie_word_embeddings:
        # tied: transformers lists the shared tensor twice, the checkpoint once (as HF writes it)
        if "lm_head.weight" in ours:
            problems.append("lm_head.weight: in model.safetensors although the model is tied")
        theirs.pop("lm_head.weight", None)
    for k in sorted(set(theirs) - set(ours)):
        problems.append(f"{k}: in transformers' model, missing from model.safetensors")
    for k in sorted(set(ours) - set(theirs)):
        problems.append(f"{k}: in model.safetensors, not in transformers' model")
    equal = 0
    for k in sorted(set(theirs) & set(ours)):
        a, b = theirs[k], ours[k]
        if a.dtype != torch.float32 or b.dtype != torch.float32:
            problems.append(f"{k}: dtype {a.dtype} (transformers) vs {b.dtype} (ours), not f32")
        elif tuple(a.shape) != tuple(b.shape):
            problems.append(f"{k}: shape {tuple(a.shape)} (transformers) vs {tuple(b.shape)} (ours)")
        else:
            ne = (a.contiguous().view(torch.int32) != b.contiguous().view(torch.int32))
            if ne.any():
                i = int(ne.flatten().nonzero()[0])
                problems.append(f"{k}: {int(ne.sum())} of {a.numel()} values differ, first at flat "
                                f"index {i}: {a.flatten()[i].item()!r} (transformers) vs "
                                f"{b.flatten()[i].item()!r} (ours)")
            else:
                equal += 1
    return equal, len(set(theirs) | set(ours)), problems


def write_ids(path, ids):
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def with_digits(tok):
    """The GGUF tokenizer's pipeline with SmolLM2's own pre-tokenizer: Digits(individual) then the
    ByteLevel it has (a tokenizers.Tokenizer copy; the transformers object is left alone)."""
    t = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    t.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), t.pre_tokenizer])
    return t


def diff_spans(tok, a, b):
    """Where id lists a (ours) and b (the GGUF tokenizer's) differ: their tokens, side by side."""
    import difflib
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [{"ours": tok.convert_ids_to_tokens(a[i1:i2]), "gguf": tok.convert_ids_to_tokens(b[j1:j2])}
            for op, i1, i2, j1, j2 in sm.get_opcodes() if op != "equal"]


def tokens(gguf, d, work, name, texts):
    gd, gn = split(gguf)
    tg = AutoTokenizer.from_pretrained(gd, gguf_file=gn)
    td = AutoTokenizer.from_pretrained(d)
    pre = gguf_meta(gguf).get("tokenizer.ggml.pre")
    fix = with_digits(tg) if pre == "smollm" else None
    r = {"pre": pre, "gguf_class": type(tg).__name__, "dir_class": type(td).__name__,
         "gguf_pre_tokenizer": str(tg.backend_tokenizer.pre_tokenizer),
         "gguf_normalizer": str(tg.backend_tokenizer.normalizer),
         "dir_normalizer": str(td.backend_tokenizer.normalizer),
         "gguf_add_bos": bool(getattr(tg, "add_bos_token", False)),
         "dir_add_bos": bool(getattr(td, "add_bos_token", False)), "texts": {}}
    for t in texts:
        base = os.path.splitext(os.path.basename(t))[0]
        text = read_text(t)
        rt, ids = {}, {}
        for tag, tok, special in (("gguf", tg, False), ("gguf-s", tg, True), ("dir", td, False),
                                  ("dir-s", td, True)):
            ids[tag] = tok(text, add_special_tokens=special).input_ids
        if fix is not None:
            ids["gguf-digits"] = fix.encode(text, add_special_tokens=False).ids
        for tag, v in ids.items():
            write_ids(os.path.join(work, f"{name}.{tag}.{base}"), v)
            rt[tag] = len(v)
        rt["diff"] = diff_spans(td, ids["dir"], ids["gguf"])  # as our tokenizer cuts it
        r["texts"][base] = rt
    return r, td


def nll_windows(model, ids, ctx, chunks, bos):
    """as-eval --score half: -log p of positions ctx/2+1 .. ctx-1 given the prefix, per window."""
    nll, n, first_logits = 0.0, 0, None
    with torch.no_grad():
        for c in range(chunks):
            window = list(ids[c * ctx:(c + 1) * ctx])
            if bos is not None:
                window[0] = bos
            logits = model(torch.tensor([window])).logits[0]
            if first_logits is None:
                first_logits = logits.clone()
            lp = torch.log_softmax(logits.double(), dim=-1)
            first = ctx // 2
            targets = torch.tensor(ids[c * ctx + first + 1:(c + 1) * ctx])
            nll -= lp[torch.arange(first, ctx - 1), targets].sum().item()
            n += ctx - 1 - first
    return nll, n, first_logits


def ppl(gguf, d, td, text_path, ctx, chunks, gmodel):
    add_bos = bool(getattr(td, "add_bos_token", False))
    ids = td(read_text(text_path), add_special_tokens=add_bos).input_ids
    if len(ids) < ctx * chunks:
        raise ValueError(f"{text_path}: {len(ids)} tokens, fewer than {chunks} windows of {ctx}")
    bos = td.bos_token_id if add_bos else None
    dmodel = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    nd, n, ld = nll_windows(dmodel, ids, ctx, chunks, bos)
    ng, _, lg = nll_windows(gmodel, ids, ctx, chunks, bos)
    return {"tokens": len(ids), "add_bos": add_bos, "scored": n, "ppl": math.exp(nd / n),
            "ppl_gguf": math.exp(ng / n), "max_abs_logit_diff": (ld - lg).abs().max().item()}


def check(argv):
    report, work, ctx, chunks, ppl_text, texts = argv[:6]
    out = {"versions": {"torch": torch.__version__,
                        "transformers": __import__("transformers").__version__,
                        "gguf": __import__("importlib.metadata").metadata.version("gguf")}}
    for spec in argv[6:]:
        kind, name, gguf, d = spec.split(":", 3)
        r = out[name] = {}
        t0 = time.time()
        sec = r["seconds"] = {}

        def lap(what):
            nonlocal t0
            sec[what] = round(time.time() - t0, 1)
            t0 = time.time()
        try:
            if kind == "model":
                gmodel = gguf_model(gguf, r)
                lap("load_gguf")
                eq, tot, probs = weights(gguf, d, gmodel)
                r["weights"] = {"equal": eq, "total": tot, "problems": probs}
                lap("weights")
            r["tokens"], td = tokens(gguf, d, work, name, texts.split(","))
            lap("tokens")
            if kind == "model":
                r["ppl"] = ppl(gguf, d, td, ppl_text, int(ctx), int(chunks), gmodel)
                lap("ppl")
        except Exception as e:  # recorded: the bats test prints it and fails
            r["error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        print(name, json.dumps(r)[:3000], flush=True)
    with open(report, "w") as f:
        json.dump(out, f, indent=1)


def main(argv):
    if len(argv) >= 8 and argv[0] == "check":
        check(argv[1:])
    elif len(argv) == 3 and argv[0] == "weights":
        eq, tot, probs = weights(argv[1], argv[2])
        for p in probs:
            print(f"{argv[2]}/model.safetensors: {p}")
        if probs:
            return 1
        print(f"{eq} tensors equal bit for bit")
    elif len(argv) >= 4 and argv[0] == "tokens":
        td = AutoTokenizer.from_pretrained(argv[1])
        for t in argv[3:]:
            base = os.path.splitext(os.path.basename(t))[0]
            write_ids(f"{argv[2]}.{base}", td(read_text(t), add_special_tokens=False).input_ids)
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
