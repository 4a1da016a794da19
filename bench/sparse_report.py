#!/usr/bin/env python3
"""Tables of bench/sparse.sh's results (markdown): SmolLM2 PPL/KLD vs dense per context, and
passkey retrieval per length and method (exact matches over depths, mean prefill time = TTFT,
mean density). usage: sparse_report.py RESULTS_DIR"""
import collections
import glob
import os
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
ppl = os.path.join(d, "sparse-ppl.tsv")
if os.path.exists(ppl):
    rows = [l.rstrip("\n").split("\t") for l in open(ppl) if l.strip()]
    dense = {r[0]: float(r[4]) for r in rows if r[1] == "dense"}
    print("| ctx | method | PPL | KLD vs dense | window forward s | speedup | density |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        sp = dense.get(r[0], 0) / float(r[4]) if float(r[4]) > 0 else 0
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {sp:.2f} | {r[5]} |")
    print()
for pk in [os.path.join(d, "sparse-passkey.tsv")] + sorted(
        glob.glob(os.path.join(d, "sparse-passkey-*.tsv"))):
    if not os.path.exists(pk):
        continue
    name = os.path.basename(pk)[len("sparse-passkey"):-len(".tsv")].lstrip("-")
    print(f"filler: {name or 'RULER (The grass is green...)'}")
    print()
    acc = collections.OrderedDict()
    dense_ok = {}
    lines = [l.rstrip("\n").split("\t") for l in open(pk) if l.strip()]
    for ln, depth, m, key, got, ok, pre, dens in lines:
        if m == "dense":
            dense_ok[(ln, depth)] = ok == "1"
    # grouped by length, in the order the methods first appear
    for ln, depth, m, key, got, ok, pre, dens in sorted(lines, key=lambda r: int(r[0])):
        a = acc.setdefault((ln, m), [0, 0, [], [], [], 0, 0, 0, 0])
        if (ln, depth) in dense_ok and dense_ok[(ln, depth)]:
            a[5] += 1
            a[6] += ok == "1"
        if (ln, depth) in dense_ok:  # same outcome as dense (found where it found, missed where it missed)
            a[7] += 1
            a[8] += (ok == "1") == dense_ok[(ln, depth)]
        a[0] += int(ok)
        a[1] += 1
        a[2].append(float(pre or 0))
        a[3].append(float(dens or 1))
        a[4].append(depth + ("+" if ok == "1" else "-"))
    print("| length | method | retrieved | where dense did | same as dense | depths (+ found) | "
          "mean TTFT s | min TTFT s | mean density |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (ln, m), a in acc.items():
        print(f"| {ln} | {m} | {a[0]}/{a[1]} | {a[6]}/{a[5]} | {a[8]}/{a[7]} | {' '.join(a[4])} | "
              f"{sum(a[2]) / len(a[2]):.1f} | {min(a[2]):.1f} | {sum(a[3]) / len(a[3]):.3f} |")
    print()
tt = os.path.join(d, "sparse-ttft.tsv")
if os.path.exists(tt):
    # bench/sparse_ttft.sh: runs interleaved dense, config, ..., dense, config, ... and appends;
    # each config run is compared with the dense run just before it (same length) in the file
    rows = [l.rstrip("\n").split("\t") for l in open(tt) if l.strip()]
    print()
    print("| length | config | rep | dense prefill s | config prefill s | speedup (wall) | "
          "dense CPU s | config CPU s | speedup (CPU) | density | key |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    last_dense = {}
    for r in rows:
        if r[1] == "dense":
            last_dense[r[0]] = r
            continue
        if r[0] not in last_dense:
            continue
        dn = last_dense[r[0]]
        print(f"| {r[0]} | {r[1]} | {r[2]} | {dn[3]} | {r[3]} | "
              f"{float(dn[3]) / float(r[3]):.2f} | {dn[4]} | {r[4]} | "
              f"{float(dn[4]) / float(r[4]):.2f} | {r[5]} | {'+' if r[6] == '1' else '-'} |")
