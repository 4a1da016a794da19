"""Real consumers of every as-pack format but GPTQ / pack-quantized (consumer_transformers.py) and
GGUF (llama.cpp, consumer_llamacpp.bats): transformers 5.24 + compressed-tensors 0.20 for the
compressed-tensors float/int/NVFP4/MXFP4/W4A8 outputs, transformers + gptqmodel for AWQ GEMM,
transformers' FP8 loader for the DeepSeek block layout. One process loads everything (imports cost
seconds) and writes one JSON report that tests/tools/consumer_formats.bats compares with as-eval.

usage: formats.py REPORT.json TEXT CTX TOKDIR SPEC...
  SPEC  ct:NAME:DIR        compressed-tensors: perplexity with the checkpoint's activation scheme
                           (ppl) and weights only (ppl_w); NVFP4/MXFP4 also as written (ppl_bf16,
                           f32_error)
        awq:NAME:DIR       AWQ GEMM: transformers (ppl) and GPTQModel.load (ppl_gptqmodel)
        dense:NAME:DIR     a plain checkpoint (ppl)
        gptq:NAME:DIR      GPTQ v1: transformers' GPTQ path (optimum + gptqmodel) with its torch kernel
                           and the fp16 scales widened to f32 (ppl: our engine's precision), as
                           loaded (ppl_auto: the kernel transformers picks) and GPTQModel.load
                           (ppl_gptqmodel, fp16 model)
  A ct spec may end in ":nobf16" (no extra f32-unpack / bf16 loads of NVFP4 / MXFP4), an awq spec
  in ":noload" (no GPTQModel.load): SmolLM2, where CI time counts.
        ds:NAME:DIR:FQDIR  DeepSeek FP8: transformers' dequantized weights against FQDIR
                           (FQDIR empty: against DeepSeek's block rule applied to DIR's tensors)
Perplexity follows as-eval --score all (as consumer_transformers.py): TEXT tokenized whole by
TOKDIR/tokenizer.json (BOS first where its post-processor adds one), windows of CTX tokens whose
first token is then BOS; every position but the last predicts the next token.
A check that raises records {"error": "..."} under its NAME.
"""
import functools
import json
import math
import os
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # gptqmodel's torch.compile: minutes, same numbers

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast  # noqa: E402

# compressed-tensors 0.20 unpacks FP4 codes to bfloat16 whatever the model's dtype, so an f32
# model's first forward fails (float != BFloat16) and the weights are rounded to bf16. To compare
# at our engine's precision the test unpacks to float32 instead (codes and E4M3/E8M0 scales are
# exact in both; only the dtype of the product changes). F32_FP4 = False restores the library.
import compressed_tensors.compressors.nvfp4.base as _nvfp4_base  # noqa: E402
import compressed_tensors.compressors.nvfp4.helpers as _nvfp4_helpers  # noqa: E402

F32_FP4 = True
_unpack = _nvfp4_helpers.unpack_fp4_from_uint8


def _unpack_f32(a, m, n, dtype=torch.bfloat16):
    return _unpack(a, m, n, dtype=torch.float32 if F32_FP4 else dtype)


_nvfp4_base.unpack_fp4_from_uint8 = _unpack_f32


def read_text(path):
    with open(path, "rb") as f:  # no newline translation: "\r" is a token too
        return f.read().decode("utf-8")


def perplexity(model, ids, ctx, bos):
    nll, n = 0.0, 0
    with torch.no_grad():
        for c in range(len(ids) // ctx):
            window = list(ids[c * ctx:(c + 1) * ctx])
            if bos is not None:  # as-eval: a model that adds BOS gets it at every window start
                window[0] = bos
            logits = model(torch.tensor([window])).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(ids[c * ctx + 1:(c + 1) * ctx])
            nll -= lp[torch.arange(ctx - 1), targets].sum().item()
            n += ctx - 1
    return math.exp(nll / n)


def kinds(model):
    k = {}
    for _, mod in model.named_modules():
        if hasattr(mod, "qweight") or hasattr(mod, "weight_packed") or isinstance(mod, torch.nn.Linear):
            name = type(mod).__name__
            k[name] = k.get(name, 0) + 1
    return k


def load(d, dtype=torch.float32, **kw):
    return AutoModelForCausalLM.from_pretrained(d, dtype=dtype, output_loading_info=True, **kw)


def check_ct(d, ids, ctx, bos, extra=True):
    global F32_FP4
    r = {}
    fmt = json.load(open(os.path.join(d, "config.json")))["quantization_config"]["format"]
    fp4 = fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized")
    model, info = load(d)
    model.eval()
    r["unexpected_keys"] = sorted(info.get("unexpected_keys", []))
    r["missing_keys"] = sorted(info.get("missing_keys", []))
    r["kinds"] = kinds(model)
    r["ppl"] = perplexity(model, ids, ctx, bos)
    for mod in model.modules():  # compressed-tensors' switch for its QDQ of inputs
        mod.quantization_enabled = False
    r["ppl_w"] = perplexity(model, ids, ctx, bos)
    if fp4 and extra:
        F32_FP4 = False
        try:
            model, _ = load(d)
            try:
                perplexity(model.eval(), ids[:ctx], ctx, bos)
                r["f32_error"] = ""
            except RuntimeError as e:
                r["f32_error"] = str(e).splitlines()[0]
            model, _ = load(d, dtype=torch.bfloat16)
            r["ppl_bf16"] = perplexity(model.eval(), ids, ctx, bos)
        finally:
            F32_FP4 = True
    return r


def check_awq(d, ids, ctx, bos, gptqmodel=True):
    r = {}
    model, info = load(d)
    r["kinds"] = kinds(model)
    r["ppl"] = perplexity(model.eval(), ids, ctx, bos)
    if not gptqmodel:
        return r
    try:
        from gptqmodel import GPTQModel
        gm = GPTQModel.load(d, device="cpu").model.eval()
        r["kinds_gptqmodel"] = kinds(gm)
        r["ppl_gptqmodel"] = perplexity(gm, ids, ctx, bos)
        r["gptqmodel_error"] = ""
    except Exception as e:  # recorded: the test of the "dynamic" exclusions reads it
        r["gptqmodel_error"] = (type(e).__name__ + ": " + str(e)).splitlines()[0][:300]
    return r


def check_gptq(d, ids, ctx, bos):
    from transformers import GPTQConfig

    r = {}
    bits = json.load(open(os.path.join(d, "config.json")))["quantization_config"]["bits"]
    # gptqmodel's portable torch kernel with the fp16 scales widened to f32 (exact): the packed
    # codes, zero points and g_idx as the consumer reads them, at our engine's precision
    model, info = load(d, device_map="cpu", quantization_config=GPTQConfig(bits=bits, backend="torch"))
    r["missing_keys"] = sorted(info.get("missing_keys", []))
    r["kinds"] = kinds(model)
    widened = 0
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "qweight") and hasattr(mod, "scales"):
                mod.scales = mod.scales.float()
                if hasattr(mod, "_clear_runtime_weight_cache"):
                    mod._clear_runtime_weight_cache()
                widened += 1
    r["scales_widened"] = widened
    r["ppl"] = perplexity(model.eval(), ids, ctx, bos)
    del model
    # as a user gets it: the CPU kernel transformers picks (fp16/bf16 dequantization)
    model, _ = load(d, device_map="cpu")
    r["kinds_auto"] = kinds(model)
    r["ppl_auto"] = perplexity(model.eval(), ids, ctx, bos)
    del model
    try:
        from gptqmodel import BACKEND, GPTQModel
        gm = GPTQModel.load(d, device="cpu", backend=BACKEND.TORCH, dtype=torch.float16).model.eval()
        r["kinds_gptqmodel"] = kinds(gm)
        r["ppl_gptqmodel"] = perplexity(gm, ids, ctx, bos)
        r["gptqmodel_error"] = ""
    except Exception as e:
        r["gptqmodel_error"] = (type(e).__name__ + ": " + str(e)).splitlines()[0][:300]
    return r


def check_dense(d, ids, ctx, bos):
    model, _ = load(d)
    return {"kinds": kinds(model), "ppl": perplexity(model.eval(), ids, ctx, bos)}


def ds_reference(d, bs):
    """DeepSeek-V3's definition of the layout (its fp8_cast_bf16.py weight_dequant): weight
    block (i, j) of bs[0] x bs[1] E4M3 values times weight_scale_inv[i, j]; the last block of a
    row or column is cut short (a ragged grid). Used when there is no fake-quant checkpoint
    (SmolLM2: 540 MB of f32 saved)."""
    t = load_file(os.path.join(d, "model.safetensors"))
    ref = {}
    for name, w in t.items():
        s = t.get(name + "_scale_inv")
        if s is None:
            continue
        n, k = w.shape
        full = s.repeat_interleave(bs[0], 0).repeat_interleave(bs[1], 1)[:n, :k]
        ref[name] = w.float() * full
    return ref


def check_ds(d, fq, ids, ctx, bos):
    """transformers dequantizes DeepSeek FP8 on CPU (no FP8 kernel): its weights against the
    fake-quant checkpoint of the same records, split by whether the block grid is whole."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # its loading report names each conversion failure
    try:
        model, _ = load(d)
    finally:
        hf_logging.set_verbosity(level)
    sd = model.state_dict()
    bs = json.load(open(os.path.join(d, "config.json")))["quantization_config"]["weight_block_size"]
    ref = load_file(os.path.join(fq, "model.safetensors")) if fq else ds_reference(d, bs)
    exact, wrong, ragged = [], [], []
    for name, w in ref.items():
        if not name.endswith("proj.weight"):
            continue
        diff = (sd[name].float() - w.float()).abs().max().item()
        n, k = w.shape
        if n % bs[0] and n > bs[0] or k % bs[1] and k > bs[1]:
            ragged.append(name)
        (exact if diff == 0 else wrong).append(name)
    r = {"exact": sorted(exact), "wrong": sorted(wrong), "ragged": sorted(ragged)}
    r["ppl"] = perplexity(model.eval(), ids, ctx, bos)
    return r


def main():
    out, text, ctx, tokdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tokdir, "tokenizer.json"))
    body = read_text(text)
    ids = tok(body).input_ids  # tokenizer.json's post-processor adds BOS where the model does
    plain = tok(body, add_special_tokens=False).input_ids
    bos = ids[0] if len(ids) == len(plain) + 1 and ids[1:] == plain else None
    if bos is None and ids != plain:
        raise SystemExit("formats.py: the post-processor adds more than a BOS")
    report = {"tokens": len(ids), "bos": bos}
    for spec in sys.argv[5:]:
        kind, name, d, *rest = spec.split(":")
        t0 = time.time()
        try:
            if kind == "ct":
                report[name] = check_ct(d, ids, ctx, bos, extra=rest != ["nobf16"])
            elif kind == "gptq":
                report[name] = check_gptq(d, ids, ctx, bos)
            elif kind == "awq":
                report[name] = check_awq(d, ids, ctx, bos, gptqmodel=rest != ["noload"])
            elif kind == "dense":
                report[name] = check_dense(d, ids, ctx, bos)
            elif kind == "ds":
                report[name] = check_ds(d, rest[0] if rest else "", ids, ctx, bos)
            else:
                report[name] = {"error": f"unknown spec kind {kind}"}
        except Exception as e:
            traceback.print_exc()
            report[name] = {"error": (type(e).__name__ + ": " + str(e)).splitlines()[0][:300]}
        report[name]["seconds"] = round(time.time() - t0, 1)
        print(name, json.dumps(report[name])[:300], flush=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
