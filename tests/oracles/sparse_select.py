#!/usr/bin/env python3
"""sparse_select: the block masks of the run-time selectors, in numpy float64, written from the
reference doc (../shared/reference/sparse-pruning.md sections 1.2-1.5), as an oracle for
lib/common/sparse_attn_select.c.

  sparse_select.py DIR L HD B METHOD P0 P1 P2 P3 P4
DIR holds q.f32, k.f32, v.f32 ([L, HD] little-endian float32, one head). Prints the block mask,
one line of 0/1 per query block (key blocks 0..nb-1)."""
import sys

import numpy as np


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def order(s):
    """indices by score, largest first, ties to the smaller index"""
    return sorted(range(len(s)), key=lambda i: (-s[i], i))


def vs(q, k, B, nv, ns, last):
    L, d = q.shape
    nb = -(-L // B)
    last = min(last, L)
    rows = np.arange(L - last, L)
    s = q[rows] @ k.T / np.sqrt(d)
    s[np.arange(L)[None, :] > rows[:, None]] = -np.inf
    a = softmax(s)
    vert = a.sum(0)
    slash = np.zeros(L)
    for r, i in enumerate(rows):
        slash[: i + 1] += a[r, i::-1]  # offset i - j
    vert[:30] = np.inf
    slash[:100] = np.inf
    nv, ns = min(max(nv, 30), L), min(max(ns, 50), L)
    keep = np.zeros((nb, nb), bool)
    cols = {j // B for j in order(vert)[:nv]}
    for qb in range(nb):
        for kb in cols:
            keep[qb, kb] = kb <= qb
    for off in order(slash)[:ns]:
        for qb in range(nb):
            lo, hi = qb * B - off, (qb + 1) * B - 1 - off
            if hi < 0:
                continue
            for kb in range(max(lo, 0) // B, min(hi // B, qb) + 1):
                keep[qb, kb] = True
    return keep


def antidiag(q, k, S):
    L, d = q.shape
    n = -(-L // S)
    qp, kp = np.zeros((n * S, d)), np.zeros((n * S, d))
    qp[:L], kp[:L] = q, k
    qs = np.concatenate([qp[S - 1 - t::S] for t in range(S)], 1)
    ks = np.concatenate([kp[t::S] for t in range(S)], 1)
    return qs @ ks.T / (np.sqrt(d) * S), n


def xattn(q, k, B, S, thr, win=0):
    L = q.shape[0]
    nb, R = -(-L // B), B // S
    s, n = antidiag(q, k, S)
    s[np.arange(n)[None, :] > np.arange(n)[:, None]] = -np.inf
    p = softmax(s)
    M = np.zeros((nb, nb))
    for i in range(n):
        np.add.at(M[i // R], np.arange(n) // R, p[i])
    keep = np.zeros((nb, nb), bool)
    for qb in range(nb):
        keep[qb, 0] = keep[qb, qb] = True
        kept = M[qb, 0] + (M[qb, qb] if qb else 0)
        for kb in range(max(qb - win, 1), qb):  # the local window (0 as published)
            keep[qb, kb] = True
            kept += M[qb, kb]
        total = M[qb, : qb + 1].sum()
        for kb in order(M[qb, : qb + 1]):
            if keep[qb, kb]:
                continue
            if kept < thr * total:
                keep[qb, kb] = True
                kept += M[qb, kb]
    return keep


def stem(q, k, v, B, S, alpha, init_blocks, window):
    L = q.shape[0]
    nb, R = -(-L // B), B // S
    k0 = nb if nb < 56 else int(np.floor(0.2 * nb + 30)) if nb < 160 else nb // 10 + 30
    keep = np.tril(np.ones((nb, nb), bool))
    if k0 >= nb:
        return keep
    s, n = antidiag(q, k, S)
    norms = np.sqrt((v * v).sum(1))
    z = np.array([np.log(norms[j * S:(j + 1) * S].max() + 1e-6) for j in range(n)])
    z = (z - z.mean()) / z.std(ddof=1)
    bonus = 0.2 * np.maximum(z, 0)
    logit = np.full((nb, nb), -np.inf)
    for qb in range(nb):
        for kb in range(qb + 1):
            logit[qb, kb] = (s[qb * R:(qb + 1) * R, kb * R:(kb + 1) * R] + bonus[kb * R:(kb + 1) * R]).mean()
    topn = int(np.ceil(k0 * max(1.0, alpha)))
    lin = np.linspace(k0, alpha * k0, nb - k0)
    keep[:] = False
    for qb in range(nb):
        budget = k0 if qb < k0 else int(np.clip(np.floor(lin[qb - k0]), 1, k0))
        for rank, kb in enumerate(order(logit[qb, : qb + 1])):
            if rank < min(topn, budget):
                keep[qb, kb] = True
        for kb in range(qb + 1):
            if kb < init_blocks or kb >= qb - (window - 1):
                keep[qb, kb] = True
    return keep


def main(a):
    L, d, B, method = int(a[2]), int(a[3]), int(a[4]), a[5]
    p = [float(x) for x in a[6:11]]
    q, k, v = (np.fromfile(f"{a[1]}/{n}.f32", "<f4").astype(np.float64).reshape(L, d) for n in "qkv")
    if method == "vertical_and_slash":
        keep = vs(q, k, B, int(p[0]), int(p[1]), int(p[2]))
    elif method == "xattention":
        keep = xattn(q, k, B, int(p[0]), p[1], int(p[2]))
    elif method == "stem":
        keep = stem(q, k, v, B, int(p[0]), p[1], int(p[3]), int(p[4]))
    else:
        sys.exit(f"unknown method {method}")
    for row in keep:
        print("".join("1" if x else "0" for x in row))


if __name__ == "__main__":
    main(sys.argv)
