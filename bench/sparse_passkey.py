#!/usr/bin/env python3
"""Passkey prompt in the RULER style (reference doc section 2b): the standard instruction,
filler sentences up to LEN tokens of the model's tokenizer, "The pass key is N. Remember it. N
is the pass key." at DEPTH percent, and the question. Prints the prompt; the key goes to stderr.
usage: sparse_passkey.py TOKENIZER_JSON LEN DEPTH SEED"""
import random
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
reps = max(1, int(budget / per))
while n(head + fill * reps + needle + tail) > length - 4:
    reps -= 1
before = round(reps * depth / 100)
print(head + fill * before + needle + fill * (reps - before) + tail, end="")
print(key, file=sys.stderr)
