#!/usr/bin/env python3
"""Passkey prompt in the RULER style (reference doc section 2b): the standard instruction,
filler sentences up to LEN tokens of the model's tokenizer, "The pass key is N. Remember it. N
is the pass key." at DEPTH percent, and the question. Prints the prompt; the key goes to stderr.
With FILLER_TXT the haystack is consecutive sentences of that text (from its 20000th character)
instead of RULER's repeated "The grass is green..." (a second filler to confirm settings on).
usage: sparse_passkey.py TOKENIZER_JSON LEN DEPTH SEED [FILLER_TXT]"""
import random
import re
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
length, depth, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
key = random.Random(seed).randint(10000, 99999)
head = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
        "memorize it. I will quiz you about the important information there.\n")
fill = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
tail = "\nWhat is the pass key? The pass key is"
n = lambda s: len(tok.encode(s).ids)
per = n(fill * 20) / 20
budget = length - n(head) - n(needle) - n(tail) - 8
if len(sys.argv) > 5:
    text = " ".join(open(sys.argv[5], encoding="utf-8").read()[20000:].split())
    sents = [x + " " for x in re.split(r"(?<=[.!?]) ", text)][1:]  # from a sentence start
    units, used = [], 0
    for x in sents:  # whole sentences while they fit the budget
        c = n(x)
        if used + c > budget:
            break
        units.append(x)
        used += c
else:
    units = [fill] * max(1, int(budget / per))
while n(head + "".join(units) + needle + tail) > length - 4:
    units.pop()
before = round(len(units) * depth / 100)
print(head + "".join(units[:before]) + needle + "".join(units[before:]) + tail, end="")
print(key, file=sys.stderr)
