"""Real-consumer check (tests/tools/consumer.bats): Hugging Face transformers on CPU loads the
checkpoints our tools write and computes with them. One process does every check (torch,
compressed-tensors and gptqmodel take seconds each to import) and writes one JSON report that
the bats tests compare with our engine (as-eval, as-gen, the C tokenizer).

usage: consumer_transformers.py REPORT.json TEXT CTX PROMPT STEPS SPEC...
  SPEC  dense:DIR          as-import output: tokenizer ids, perplexity, greedy text
        ct:DIR             compressed-tensors checkpoint: perplexity, greedy text
        gptq:DIR:FQDIR     GPTQ v1 checkpoint: perplexity three ways, and its dequantized weights
                           against the fake-quant checkpoint FQDIR (same quantizer run, f32 weights)
Perplexity follows as-eval --score all: TEXT tokenized whole with BOS, windows of CTX tokens whose
first token is replaced by BOS, every position but the last predicts the next token.
A check that raises records {"error": "..."} under its key; the bats test prints it and fails.
"""
import json
import math
import os
import shutil
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# gptqmodel wraps its CPU kernels in torch.compile; inductor's C++ builds cost minutes on 2 cores
# and change nothing in what is computed
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

torch.manual_seed(0)


def fast_tokenizer(model_dir):
    """tokenizer.json taken verbatim (normalizer, model, post-processor) by transformers."""
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def read_text(path):
    # bytes -> str without newline translation: wikitext has CRLF lines, and "\r" is a token too
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def perplexity(model, ids, ctx, bos):
    """as-eval --score all (tools/as-eval/as-eval.c): ppl over every window's positions 0..ctx-2."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for c in range(len(ids) // ctx):
            window = list(ids[c * ctx:(c + 1) * ctx])
            window[0] = bos
            logits = model(torch.tensor([window])).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(ids[c * ctx + 1:(c + 1) * ctx])
            nll -= lp[torch.arange(ctx - 1), targets].sum().item()
            n += ctx - 1
    return {"ppl": math.exp(nll / n), "scored": n, "windows": len(ids) // ctx, "tokens": len(ids)}


def greedy(model, tok, prompt, steps):
    """llama2.c / as-gen convention (data/README.md): BOS, then `steps` positions are run, so the
    sequence holds BOS + steps tokens (HF max_length counts BOS: steps + 1); generation stops
    early on BOS or EOS as as-gen does; the text ends with the newline as-gen prints."""
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_length=steps + 1, eos_token_id=[tok.bos_token_id, tok.eos_token_id],
                             pad_token_id=tok.eos_token_id)
    return tok.decode(out[0], skip_special_tokens=True) + "\n", out.shape[1]


def load(model_dir, **kw):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw).eval()


def linear_kinds(model):
    kinds = {}
    for _, mod in model.named_modules():
        if hasattr(mod, "qweight") or hasattr(mod, "weight_packed") or isinstance(mod, torch.nn.Linear):
            k = type(mod).__module__ + "." + type(mod).__name__
            kinds[k] = kinds.get(k, 0) + 1
    return kinds


def check_dense(d, text, ctx, prompt, steps, work):
    r = {}
    fast = fast_tokenizer(d)
    ids = fast(text).input_ids
    ids_path = os.path.join(work, "fast.ids")  # without BOS, like test_tokenizer encode
    with open(ids_path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids[1:]))
    r["fast_ids"] = ids_path
    r["fast_bos_first"] = ids[0] == fast.bos_token_id
    auto = AutoTokenizer.from_pretrained(d)
    r["auto_class"] = type(auto).__name__
    # transformers 5's LlamaTokenizer rebuilds its pipeline (Metaspace, no dummy prefix when the
    # text starts with a space) instead of taking tokenizer.json's; recorded, compared without it
    r["auto_equal_raw"] = auto(text).input_ids == ids
    stripped = text.lstrip()
    r["auto_equal_lstripped"] = auto(stripped).input_ids == fast(stripped).input_ids
    model = load(d)
    r["kinds"] = linear_kinds(model)
    r.update(perplexity(model, ids, ctx, fast.bos_token_id))
    r["greedy"], r["greedy_len"] = greedy(model, auto, prompt, steps)
    return r


def check_ct(d, text, ctx, prompt, steps, dense_dir):
    r = {}
    fast = fast_tokenizer(dense_dir)
    model = load(d)
    r["kinds"] = linear_kinds(model)
    r.update(perplexity(model, fast(text).input_ids, ctx, fast.bos_token_id))
    r["greedy"], r["greedy_len"] = greedy(model, fast, prompt, steps)
    return r


def gptq_optimum_copy(d, work):
    """optimum (what transformers calls for GPTQ) ignores gptqmodel's per-module "dynamic"
    exclusions and only knows modules_in_block_to_quantize (module suffixes, the same in every
    block). If the config lacks it, write a copy whose config lists the packed suffixes, read
    from the tensors; refuse when blocks differ (not expressible for optimum)."""
    from safetensors import safe_open
    cfg = json.load(open(os.path.join(d, "config.json")))
    qc = cfg["quantization_config"]
    if "modules_in_block_to_quantize" in qc:
        return d, False
    per_layer = {}
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        for k in f.keys():
            if k.endswith(".qweight") and ".layers." in k:
                layer, rest = k.split(".layers.", 1)[1].split(".", 1)
                per_layer.setdefault(layer, set()).add(rest[:-len(".qweight")])
    sets = {frozenset(s) for s in per_layer.values()}
    if len(sets) != 1:
        raise RuntimeError(f"{d}: packed modules differ between blocks; optimum cannot load it")
    qc["modules_in_block_to_quantize"] = [sorted(next(iter(sets)))]
    out = os.path.join(work, os.path.basename(d.rstrip("/")) + "-optimum")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name in os.listdir(d):
        if name != "config.json":
            os.symlink(os.path.abspath(os.path.join(d, name)), os.path.join(out, name))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return out, True


def check_gptq(d, fq, text, ctx, dense_dir, work):
    from safetensors.torch import load_file
    from transformers import GPTQConfig

    r = {}
    fast = fast_tokenizer(dense_dir)
    ids = fast(text).input_ids
    bos = fast.bos_token_id
    src, r["config_patched"] = gptq_optimum_copy(d, work)
    r["modules_in_block_to_quantize"] = json.load(open(os.path.join(src, "config.json")))[
        "quantization_config"]["modules_in_block_to_quantize"]

    # 1. as a user gets it: transformers + optimum + gptqmodel's automatic CPU kernel
    model = load(src, device_map="cpu")
    r["kinds_auto"] = linear_kinds(model)
    r["ppl_auto"] = perplexity(model, ids, ctx, bos)["ppl"]
    del model

    # 2. gptqmodel's portable torch kernel: dequantized weights vs the quantizer's f32 output,
    # then the same kernel with the fp16 scales widened to f32 (exact) so that the perplexity is
    # computed at our engine's precision
    model = load(src, device_map="cpu", quantization_config=GPTQConfig(bits=qc_bits(d), backend="torch"))
    r["kinds_torch"] = linear_kinds(model)
    ref = load_file(os.path.join(fq, "model.safetensors"))
    # fp16 scale (rounded once from our f32 scale) times the code, rounded to fp16 again: at most
    # 2^-10 relative from the f32 fake-quant weight, plus fp16's subnormal spacing 2^-24
    packed, kept, max_rel, bound, max_kept = 0, 0, 0.0, 0.0, 0.0
    with torch.no_grad():
        for name, mod in model.named_modules():
            w = ref.get(name + ".weight")
            if w is None:
                continue
            if hasattr(mod, "qweight"):
                deq = mod.dequantize_weight().float().t()  # gptqmodel returns [in, out]
                diff = (deq - w).abs()
                max_rel = max(max_rel, (diff / w.abs().clamp(min=2.0**-24)).max().item())
                bound = max(bound, (diff / (w.abs() * 2.0**-10 + 2.0**-24)).max().item())
                packed += 1
            elif isinstance(mod, torch.nn.Linear):
                max_kept = max(max_kept, (mod.weight - w).abs().max().item())
                kept += 1
        r["weights"] = {"packed": packed, "kept": kept, "max_rel_packed": max_rel,
                        "bound_ratio_packed": bound, "max_abs_kept": max_kept}
        widened = 0
        for mod in model.modules():
            if hasattr(mod, "qweight") and hasattr(mod, "scales"):
                mod.scales = mod.scales.float()
                if hasattr(mod, "_clear_runtime_weight_cache"):
                    mod._clear_runtime_weight_cache()
                widened += 1
        r["scales_widened"] = widened
    r["ppl_f32"] = perplexity(model, ids, ctx, bos)["ppl"]
    del model

    # 3. gptqmodel's own loader on the checkpoint as written: it honours "dynamic"; fp16 only
    try:
        from gptqmodel import BACKEND, GPTQModel

        gm = GPTQModel.load(d, device="cpu", backend=BACKEND.TORCH, dtype=torch.float16)
        r["kinds_gptqmodel"] = linear_kinds(gm.model)
        r["ppl_gptqmodel"] = perplexity(gm.model, ids, ctx, bos)["ppl"]
    except Exception as e:  # recorded separately: transformers' path above is the main check
        r["gptqmodel_error"] = f"{type(e).__name__}: {e}"
    return r


def qc_bits(d):
    return json.load(open(os.path.join(d, "config.json")))["quantization_config"]["bits"]


def versions():
    from importlib import metadata
    v = {}
    for p in ("torch", "transformers", "tokenizers", "compressed-tensors", "optimum", "gptqmodel"):
        try:
            v[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            v[p] = None
    return v


def main(argv):
    if len(argv) < 7:
        sys.exit(__doc__)
    report, text_path, ctx, prompt, steps = argv[1], argv[2], int(argv[3]), argv[4], int(argv[5])
    text = read_text(text_path)
    work = os.path.dirname(os.path.abspath(report))
    start = time.time()
    res = {"versions": versions()}
    dense_dir = None
    for spec in argv[6:]:
        kind, _, rest = spec.partition(":")
        key = kind + ":" + os.path.basename(rest.split(":")[0].rstrip("/"))
        t0 = time.time()
        try:
            if kind == "dense":
                dense_dir = rest
                res[key] = check_dense(rest, text, ctx, prompt, steps, work)
            elif kind == "ct":
                res[key] = check_ct(rest, text, ctx, prompt, steps, dense_dir or rest)
            elif kind == "gptq":
                d, fq = rest.split(":")
                res[key] = check_gptq(d, fq, text, ctx, dense_dir or d, work)
            else:
                raise ValueError(f"unknown spec kind '{kind}'")
        except Exception as e:
            traceback.print_exc()
            res[key] = {"error": f"{spec}: {type(e).__name__}: {e}"}
        res[key]["seconds"] = round(time.time() - t0, 1)
    res["seconds"] = round(time.time() - start, 1)
    with open(report, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv)
