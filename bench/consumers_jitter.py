"""How chaotic is one window of SmolLM2 under activation quantization? (docs/consumers.md)
Loads a compressed-tensors checkpoint with an activation scheme in transformers + compressed-tensors,
prints its perplexity (tests/consumers/formats.py convention, no BOS, windows of CTX) and again with
every quantized linear's input multiplied by (1 + 1e-7 N(0,1)): the size of a float32
summation-order difference between two correct engines.
usage: .venv-consumer/bin/python3 bench/consumers_jitter.py CHECKPOINT TOKDIR TEXT [CTX [SEEDS [JITTER]]]
(JITTER: the relative size, default 1e-7)"""
import sys, os, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "consumers"))
import formats as F
from transformers import PreTrainedTokenizerFast
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(sys.argv[2], "tokenizer.json"))
ids = tok(F.read_text(sys.argv[3])).input_ids
ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 128
seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
jitter = float(sys.argv[6]) if len(sys.argv) > 6 else 1e-7
d = sys.argv[1]
m, _ = F.load(d); m.eval()
state = {"seed": None}
def pre(mod, args):
    if state["seed"] is None:
        return None
    x = args[0]
    g = torch.Generator().manual_seed(state["seed"] * 1000 + mod.jitter_index)
    return (x * (1 + jitter * torch.randn(x.shape, generator=g)),)
for i, mod in enumerate(m.modules()):
    if hasattr(mod, "quantization_scheme") and isinstance(mod, torch.nn.Linear):
        mod.jitter_index = i
        mod.register_forward_pre_hook(pre)
print("base", F.perplexity(m, ids, ctx, None), flush=True)
for s in range(seeds):
    state["seed"] = s
    print("jitter", s, F.perplexity(m, ids, ctx, None), flush=True)
