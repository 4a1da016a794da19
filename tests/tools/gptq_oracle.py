#!/usr/bin/env python3
"""gptq_oracle: numpy transcription of the reference GPTQ / GPTAQ fasterquant, an independent oracle
for tests/unit/test_gptq.c.

Written from REFERENCE.md ("Integer quantizer (GPTQ convention)", "GPTQ (order of operations of the
reference)") and the published fasterquant structure, in float32 like the reference on GPU, without
looking at the C code: per-column loop with in-block outer-product updates and the lazy batch after
each block, group params fitted from W (not the in-block copy) when a group starts.

Usage: gptq_oracle.py DIR
  DIR/meta.txt : "N K bits group_size sym act_order static_groups percdamp blocksize method alpha"
                 (method 0 = GPTQ, 1 = GPTAQ), then "damp_step max_retries" on a second line
  DIR/W.f32 [N,K], DIR/H.f32 [K,K], DIR/D.f32 [K,K] (GPTAQ dXX^T), little-endian float32
Writes DIR/q.u8 [N,K], scale.f32 [N,G], zero.i32 [N,G], gidx.i32 [K], what.f32 [N,K],
DIR/info.txt "loss damp retries". Exit 3 if the Hessian stays non-positive-definite.
"""
import os
import sys

import numpy as np

f32 = np.float32


def find_params(x, bits, sym):
    """Quantizer.find_params(x, weight=True): per row of x [R, n]."""
    maxq = f32(2**bits - 1)
    xmin = np.minimum(x.min(axis=1), f32(0)).astype(f32)
    xmax = np.maximum(x.max(axis=1), f32(0)).astype(f32)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        neg = xmin < 0
        xmin[neg] = -xmax[neg]
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = f32(-1)
    xmax[both] = f32(1)
    scale = ((xmax - xmin) / maxq).astype(f32)
    if sym:
        zero = np.full_like(scale, (maxq + 1) / 2)
    else:
        zero = np.round(-xmin / scale).astype(f32)
    return scale, zero


def quantize(x, scale, zero, maxq):
    q = np.clip(np.round(x / scale) + zero, f32(0), maxq)
    return (scale * (q - zero)).astype(f32), q.astype(np.uint8)


def cholesky_upper_of_inverse(H):
    L = np.linalg.cholesky(H)  # raises LinAlgError when not positive definite
    Linv = np.linalg.inv(L).astype(f32)
    Hinv = (Linv.T @ Linv).astype(f32)  # torch.cholesky_inverse
    U = np.linalg.cholesky(Hinv).T.astype(f32)  # torch.linalg.cholesky(upper=True)
    if not np.all(np.isfinite(U)):
        raise np.linalg.LinAlgError("non-finite factor")
    return U


def fasterquant(W, H, D, bits, gs, sym, actorder, static_groups, percdamp, blocksize, gptaq,
                alpha, damp_step, max_retries):
    N, K = W.shape
    W = W.astype(f32).copy()
    H = H.astype(f32).copy()
    maxq = f32(2**bits - 1)
    G = 1 if gs <= 0 else (K + gs - 1) // gs
    scale = np.zeros((N, G), f32)
    zero = np.zeros((N, G), f32)
    codes = np.zeros((N, K), np.uint8)

    cur_s, cur_z = find_params(W, bits, sym)  # quantizer.ready() is False: fit on W first
    if gs <= 0:
        scale[:, 0], zero[:, 0] = cur_s, cur_z
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if gptaq:
        D = D.astype(f32).copy()
        D[:, dead] = 0
    groups = []
    if static_groups and gs > 0:
        for i in range(0, K, gs):
            groups.append(find_params(W[:, i:i + gs], bits, sym))
            scale[:, i // gs], zero[:, i // gs] = groups[-1]
    perm = np.arange(K)
    if actorder:
        perm = np.argsort(-np.diag(H), kind="stable")
        W = W[:, perm]
        H = H[perm][:, perm]
        if gptaq:
            D = D[perm][:, perm]

    mean = np.mean(np.diag(H), dtype=np.float64)
    for retry in range(max_retries + 1):
        pd = f32(percdamp) + f32(retry) * f32(damp_step)
        damp = f32(pd * f32(mean))
        Hd = H.copy()
        Hd[np.arange(K), np.arange(K)] += damp
        try:
            U = cholesky_upper_of_inverse(Hd)
            break
        except np.linalg.LinAlgError:
            U = None
    if U is None:
        sys.exit(3)
    P = None
    if gptaq:
        P = (f32(alpha) * (np.triu(D @ U.T, 1) @ U)).astype(f32)

    Q = np.zeros_like(W)
    loss = 0.0
    for i1 in range(0, K, blocksize):
        i2 = min(i1 + blocksize, K)
        W1 = W[:, i1:i2].copy()
        Err1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            w = W1[:, i].copy()
            d = U1[i, i]
            if gs > 0:
                if not static_groups:
                    if col % gs == 0:
                        cur_s, cur_z = find_params(W[:, col:col + gs], bits, sym)
                        scale[:, col // gs], zero[:, col // gs] = cur_s, cur_z
                else:
                    cur_s, cur_z = groups[perm[col] // gs]
            q, c = quantize(w, cur_s, cur_z, maxq)
            Q[:, col] = q
            codes[:, col] = c
            loss += float(np.sum(((w - q) ** 2 / d**2).astype(f32), dtype=np.float64)) / 2
            err = ((w - q) / d).astype(f32)
            upd = np.outer(err, U1[i, i:]).astype(f32)
            if gptaq:
                upd = upd - np.outer(w, P[i1 + i, i1 + i:i2]).astype(f32)
            W1[:, i:] -= upd
            Err1[:, i] = err
        if i2 < K:
            tail = Err1 @ U[i1:i2, i2:]
            if gptaq:
                tail = tail - W1 @ P[i1:i2, i2:]
            W[:, i2:] -= tail.astype(f32)

    gsz = gs if gs > 0 else K
    if static_groups and actorder:
        g_idx_p = perm // gsz
    else:
        g_idx_p = np.arange(K) // gsz
    if gs <= 0:
        g_idx_p = np.zeros(K, np.int64)
    invperm = np.argsort(perm)
    return (codes[:, invperm], Q[:, invperm], scale, zero, g_idx_p[invperm].astype(np.int32),
            loss, float(damp), retry)


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "meta.txt")) as f:
        lines = f.read().split("\n")
    a = lines[0].split()
    N, K, bits, gs, sym, act, stat = (int(v) for v in a[:7])
    percdamp, blocksize, method, alpha = float(a[7]), int(a[8]), int(a[9]), float(a[10])
    b = lines[1].split()
    step, retries = float(b[0]), int(b[1])
    W = np.fromfile(os.path.join(d, "W.f32"), dtype="<f4").reshape(N, K)
    H = np.fromfile(os.path.join(d, "H.f32"), dtype="<f4").reshape(K, K)
    D = None
    if method == 1:
        D = np.fromfile(os.path.join(d, "D.f32"), dtype="<f4").reshape(K, K)
    codes, Q, scale, zero, gidx, loss, damp, retry = fasterquant(
        W, H, D, bits, gs, sym, act, stat, percdamp, blocksize, method == 1, alpha, step, retries)
    codes.astype(np.uint8).tofile(os.path.join(d, "q.u8"))
    scale.astype("<f4").tofile(os.path.join(d, "scale.f32"))
    zero.astype("<i4").tofile(os.path.join(d, "zero.i32"))
    gidx.astype("<i4").tofile(os.path.join(d, "gidx.i32"))
    Q.astype("<f4").tofile(os.path.join(d, "what.f32"))
    with open(os.path.join(d, "info.txt"), "w") as f:
        f.write("%.17g %.9g %d\n" % (loss, damp, retry))


if __name__ == "__main__":
    main()
