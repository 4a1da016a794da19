#!/usr/bin/env python3
"""Independent numpy implementations of the token pruning / merging strategies of as-prune tokens,
written from ../shared/reference/sparse-pruning.md sections 3-5 and docs/token-pruning.md (the
tie and rounding rules: every ranking prefers the lower index, K = max(1, floor(keep*Nv + 0.5))).
Never imports project code.

  prune_tokens.py gen OUT.safetensors N D H TEXT SEED [PLANT]
        random features/keys/scores, causal softmax attention [H,N,N], prunable mask with TEXT
        text tokens at the end (the question after the image/audio). PLANT: "dup" (tokens 1..4
        copies of token 0 and 6..9 of token 5), "salient" (token 3 gets a huge score / attention).
  prune_tokens.py expect IN.safetensors METHOD KEEP [NAME=VALUE...]  -> JSON {kept, merge}
  prune_tokens.py check IN.safetensors METHOD KEEP OUT.astr [NAME=VALUE...]
        reads the as-prune output stream, compares kept indices exactly and merge matrix /
        features to 1e-6 with the oracle, and checks the invariants (count, order, text kept,
        rows of the merge matrix sum to one, features = merge . input). Exit 1 on any mismatch.
"""
import json
import math
import struct
import sys

import numpy as np

DEFAULTS = {"lambda": 0.5, "mmr_norm": 0, "parallel_k": 1, "zip_ratio": 10 / 64, "n_pivots": 4, "alpha": 1.0,
            "threshold": 0.85, "weighted": 0, "seed": 0}
M64 = (1 << 64) - 1


def die(msg):
    sys.stderr.write("prune_tokens.py: " + msg + "\n")
    sys.exit(1)


def budget(nv, keep):
    if nv == 0:
        return 0
    return min(nv, max(1, int(math.floor(keep * nv + 0.5))))


def order_desc(v, idx=None):
    """indices (from idx, default all) by value descending, ties to the lower index"""
    idx = np.arange(len(v)) if idx is None else np.asarray(idx)
    return sorted(idx.tolist(), key=lambda i: (-v[i], i))


def amax(v, taken=()):
    """argmax over the indices not taken; values within 1e-9 (relative) of the maximum are ties,
    the lower index wins (gains equal in exact arithmetic differ in their last bits)"""
    v = np.array(v, np.float64)
    v[list(taken)] = -np.inf
    m = v.max()
    if not np.isfinite(m):
        return int(np.argmax(v))
    return int(np.nonzero(v >= m - 1e-9 * max(1.0, abs(m)))[0][0])


def unit(x):
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0.0)


def cosm(x):
    u = unit(x)
    return u @ u.T


# ---- strategies on the prunable subset: each returns a list of groups [(members, weights)] ----

def m_random(ctx, k, p):
    nv = ctx["nv"]
    s = p["seed"]
    perm = list(range(nv))
    for i in range(k):
        s = (s + 0x9e3779b97f4a7c15) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
        z ^= z >> 31
        j = i + z % (nv - i)
        perm[i], perm[j] = perm[j], perm[i]
    return [[i] for i in perm[:k]]


def m_idpruner(ctx, k, p):
    x = ctx["x"]
    if ctx["score"] is not None:
        w = ctx["score"]
    elif ctx["recv"] is not None:
        w = ctx["recv"]
    else:
        w = np.linalg.norm(x, axis=1)
    imp = (w - w.min()) / (w.max() - w.min() + 1e-6)
    sim = cosm(x)
    lam = p["lambda"]
    S = [amax(imp)]
    maxsim = np.maximum(np.full(len(w), -2.0), sim[:, S[0]])
    while len(S) < k:
        free = [i for i in range(len(w)) if i not in S]
        red, im = maxsim, imp
        if p["mmr_norm"]:
            # redundancy rescaled to [0, 1] over the remaining candidates, like the importance
            rest = maxsim[free]
            red = (maxsim - rest.min()) / (rest.max() - rest.min() + 1e-6)
        if p["mmr_norm"] == 2:
            # and the importance rescaled over the remaining candidates too
            rest = imp[free]
            im = (imp - rest.min()) / (rest.max() - rest.min() + 1e-6)
        mmr = lam * im - (1 - lam) * red
        picks = order_desc(mmr, free)[:min(p["parallel_k"], k - len(S))]
        for s in picks:
            S.append(s)
            maxsim = np.maximum(maxsim, sim[:, s])
    return [[i] for i in S]


def m_fastv(ctx, k, p):
    a = ctx["score"] if ctx["score"] is not None else ctx["qrow"]
    return [[i] for i in order_desc(a)[:k]]


def m_divprune(ctx, k, p):
    D = 1 - cosm(ctx["x"])
    n = len(D)
    off = D + np.diag(np.full(n, np.inf))
    first = amax(off.min(axis=1))
    S = [first]
    while len(S) < k:
        mind = D[:, S].min(axis=1)
        S.append(amax(mind, S))
    return [[i] for i in S]


def m_visionzip(ctx, k, p):
    a = ctx["score"] if ctx["score"] is not None else ctx["recv"]
    n = ctx["nv"]
    n_ctx = int(math.floor(k * p["zip_ratio"] + 0.5))
    n_dom = k - n_ctx
    dom = order_desc(a)[:n_dom]
    rest = [i for i in range(n) if i not in dom]
    groups = [[i] for i in dom]
    if n_ctx:
        step = max(1, len(rest) // n_ctx)
        tg = [rest[t * step] for t in range(n_ctx)]
        kc = cosm(ctx["keys"])
        members = {t: [t] for t in tg}
        for i in rest:
            if i in members:
                continue
            best = tg[int(np.argmax(kc[i, tg]))]
            members[best].append(i)
        groups += [members[t] for t in tg]
    return groups


def m_dart(ctx, k, p):
    n = ctx["nv"]
    pv = min(p["n_pivots"], k)
    l1 = np.abs(ctx["keys"]).sum(axis=1)
    piv = order_desc(l1)[:pv]
    nt = len(ctx["tkeys"])
    pt = min(p["n_pivots"], nt)
    tpiv = order_desc(np.abs(ctx["tkeys"]).sum(axis=1))[:pt] if pt else []
    ux, ut = unit(ctx["x"]), unit(ctx["tx"]) if nt else None
    S = list(piv)
    pivots = [ux[i] for i in piv] + [ut[i] for i in tpiv]
    per = -(-(k - len(S)) // len(pivots)) if pivots else 0
    for q in pivots:
        if len(S) >= k:
            break
        free = [i for i in range(n) if i not in S]
        cs = ux @ q
        take = sorted(free, key=lambda i: (cs[i], i))[:min(per, k - len(S))]
        S += take
    return [[i] for i in S]


def m_scope(ctx, k, p):
    a = ctx["score"] if ctx["score"] is not None else ctx["recv"]
    C = cosm(ctx["x"])
    n = len(C)
    sal = np.ones(n) if a is None else np.maximum(a, 0) ** p["alpha"]
    cur = np.zeros(n)
    S = []
    for _ in range(k):
        gain = sal * np.maximum(0, C - cur[:, None]).sum(axis=0)   # sum over j of C[j, i] - cur[j]
        s = amax(gain, S)
        S.append(s)
        cur = np.maximum(cur, C[:, s])
    return [[i] for i in S]


def m_vispruner(ctx, k, p):
    a = ctx["score"] if ctx["score"] is not None else ctx["recv"]
    n = ctx["nv"]
    n_imp = int(math.floor(0.5 * k + 0.5))
    n_div = k - n_imp
    imp = order_desc(a)[:n_imp]
    rest = [i for i in range(n) if i not in imp]
    C = cosm(ctx["x"])
    while len(rest) > n_div:
        R = len(rest)
        A, B = rest[0::2], rest[1::2]
        r = min(8, max(1, R // 2), R - n_div)
        mx = np.array([C[i, B].max() if B else -np.inf for i in A])
        drop = set(A[j] for j in sorted(range(len(A)), key=lambda j: (-mx[j], A[j]))[:r])
        rest = [i for i in rest if i not in drop]
    return [[i] for i in imp + rest]


def m_samp(ctx, k, p):
    x, n = ctx["x"], ctx["nv"]
    S = cosm(x)
    groups = [[0]]
    for i in range(n - 1):
        G = groups[-1]
        if S[G, i + 1].mean() >= p["threshold"]:
            G.append(i + 1)
        else:
            groups.append([i + 1])
    ones = np.ones(n)
    m = ctx["amax"] if ctx["amax"] is not None else ctx["score"] if ctx["score"] is not None else ones
    a = ctx["adiag"] if ctx["adiag"] is not None else ctx["score"] if ctx["score"] is not None else ones
    wts, H, r = [], [], []
    for G in groups:
        mg = m[G]
        if mg.sum() <= 0:
            mg = np.ones(len(G))
        wts.append(mg)
        H.append((mg[:, None] * x[G]).sum(axis=0) / mg.sum())
        r.append(a[G].mean())
    H, r = np.array(H), np.array(r)
    L = r[:, None] * cosm(H) * r[None, :]
    ng = len(groups)
    T = min(k, ng)
    # fast greedy MAP (Chen et al. 2018)
    d2 = np.diag(L).copy()
    Cv = np.zeros((0, ng))
    chosen = []
    while len(chosen) < T:
        j = amax(d2, chosen)
        if d2[j] <= 1e-10:
            break
        e = (L[j] - Cv[:, j] @ Cv) / math.sqrt(d2[j])
        Cv = np.vstack([Cv, e])
        d2 = d2 - e ** 2
        chosen.append(j)
    while len(chosen) < T:   # rank spent: by relevance
        chosen.append(amax(r, chosen))
    return [(groups[g], wts[g]) for g in sorted(chosen)]


def runs(n, join):
    groups, cur = [], [0]
    for i in range(n - 1):
        if join[i]:
            cur.append(i + 1)
        else:
            groups.append(cur)
            cur = [i + 1]
    groups.append(cur)
    return groups


def m_atome(ctx, k, p):
    x, n = ctx["x"], ctx["nv"]
    u = unit(x)
    npairs = n // 2
    cs = np.array([u[2 * i] @ u[2 * i + 1] for i in range(npairs)])
    join = np.zeros(n, bool)
    for i in order_desc(cs)[:min(n - k, npairs)]:
        join[2 * i] = True
    return runs(n, join)


def m_fastadasp(ctx, k, p):
    x, n = ctx["x"], ctx["nv"]
    u = unit(x)
    cs = (u[:-1] * u[1:]).sum(axis=1)
    join = np.zeros(n, bool)
    for i in order_desc(cs)[:n - k]:
        join[i] = True
    groups = runs(n, join)
    if p["weighted"] and ctx["score"] is not None:
        return [(G, ctx["score"][G]) for G in groups]
    return groups


METHODS = {"random": m_random, "idpruner": m_idpruner, "idpruner-paper": m_idpruner,
           "fastv": m_fastv, "divprune": m_divprune,
           "visionzip": m_visionzip, "dart": m_dart, "scope": m_scope, "vispruner": m_vispruner,
           "samp": m_samp, "atome": m_atome, "fastadasp": m_fastadasp}


def load_st(path):
    from safetensors.numpy import load_file
    return load_file(path)


def expect(t, method, keep, p):
    x = t["features"].astype(np.float64)
    n = len(x)
    pr = (t["prunable"] != 0) if "prunable" in t else np.ones(n, bool)
    vi, ti = np.nonzero(pr)[0], np.nonzero(~pr)[0]
    keys = t["keys"].astype(np.float64) if "keys" in t else x
    ctx = {"nv": len(vi), "x": x[vi], "keys": keys[vi], "tkeys": keys[ti], "tx": x[ti],
           "score": t["scores"].astype(np.float64)[vi] if "scores" in t else None,
           "recv": None, "qrow": None, "amax": None, "adiag": None}
    if "attention" in t:
        A = t["attention"].astype(np.float64)
        q = int(p.get("query", -1))
        if q < 0:
            q = int(ti[-1]) if len(ti) else n - 1
        hm = A.mean(axis=0)
        ctx["recv"] = hm.mean(axis=0)[vi]
        ctx["qrow"] = hm[q][vi]
        ctx["amax"] = A.max(axis=0).mean(axis=0)[vi]
        ctx["adiag"] = np.diag(hm)[vi]
    k = budget(len(vi), keep)
    groups = METHODS[method](ctx, k, p) if len(vi) else []
    rows = [([int(i)], np.ones(1)) for i in ti]
    for g in groups:
        mem, w = (g, np.ones(len(g))) if not isinstance(g, tuple) else g
        rows.append(([int(vi[i]) for i in mem], np.asarray(w, np.float64)))
    rows.sort(key=lambda r: min(r[0]))
    W = np.zeros((len(rows), n))
    for r, (mem, w) in enumerate(rows):
        W[r, mem] = w / w.sum() if w.sum() > 0 else 1.0 / len(mem)
    return [min(r[0]) for r in rows], W, W @ x, k


def read_stream(path):
    data = open(path, "rb").read()
    pos, out = 0, {}
    types = {"F32": np.float32, "I32": np.int32}
    while pos < len(data):
        magic, version, kind, hlen, pad, plen, _ = struct.unpack_from("<4sHHIIQQ", data, pos)
        if magic != b"ASTR":
            die("%s: bad magic at %d" % (path, pos))
        h = json.loads(data[pos + 32:pos + 32 + hlen])
        body = pos + 32 + hlen
        if kind == 1:
            out[h["name"]] = np.frombuffer(data[body:body + plen], types[h["dtype"]]).reshape(h["shape"])
        pos = body + plen + pad
    return out


def parse_params(args):
    p = dict(DEFAULTS)
    for a in args:
        k, v = a.split("=", 1)
        p[k] = float(v) if k in ("lambda", "zip_ratio", "alpha", "threshold") else int(v)
    return p


def gen(out, n, d, h, text, seed, plant=None):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    keys = rng.standard_normal((n, d)).astype(np.float32)
    s = rng.standard_normal((h, n, n))
    s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
    A = np.exp(s - s.max(axis=2, keepdims=True))
    A = (A / A.sum(axis=2, keepdims=True)).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    pr = np.ones(n, np.uint8)
    if text:
        pr[n - text:] = 0
    if plant == "dup":
        x[1:5] = x[0]
        x[6:10] = x[5]
    if plant == "salient":
        scores[3] = 100.0
        A[:, :, 3] += 10.0
    save_file({"features": x, "keys": keys, "attention": A, "scores": scores, "prunable": pr}, out)


def check(t, method, keep, out, p):
    kept, W, Y, k = expect(t, method, keep, p)
    got = read_stream(out)
    gk = got["kept"].tolist()
    if gk != kept:
        die("%s keep %g: kept %s, oracle %s" % (method, keep, gk, kept))
    if sorted(set(gk)) != gk:
        die("kept indices not strictly increasing")
    pr = t["prunable"] != 0 if "prunable" in t else np.ones(len(t["features"]), bool)
    text = np.nonzero(~pr)[0].tolist()
    if not set(text) <= set(gk):
        die("a text token was dropped")
    nv = int(pr.sum())
    want = k
    if method == "atome":   # pairs only: at most half the tokens merge away
        want = max(k, nv - nv // 2)
    if method == "samp":    # T is clamped to the number of adjacent groups
        want = min(k, len(kept) - len(text))
    if len(gk) != len(text) + want:
        die("%d rows, expected %d text + %d" % (len(gk), len(text), want))
    gw = got["merge"].astype(np.float64)
    if np.abs(gw.sum(axis=1) - 1).max() > 1e-6:
        die("merge rows do not sum to one")
    if np.abs(gw - W).max() > 1e-6:
        die("merge matrix differs from the oracle by %g" % np.abs(gw - W).max())
    if np.abs(got["features"] - Y).max() > 1e-5:
        die("features differ from the oracle by %g" % np.abs(got["features"] - Y).max())
    print("ok %s keep %g: %d of %d rows" % (method, keep, len(gk), len(t["features"])))


def main():
    a = sys.argv[1:]
    if not a:
        die(__doc__)
    if a[0] == "gen":
        gen(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), int(a[6]), a[7] if len(a) > 7 else None)
    elif a[0] == "expect":
        kept, W, _, _ = expect(load_st(a[1]), a[2], float(a[3]), parse_params(a[4:]))
        print(json.dumps({"kept": kept, "merge": W.tolist()}))
    elif a[0] == "check":
        check(load_st(a[1]), a[2], float(a[3]), a[4], parse_params(a[5:]))
    else:
        die("unknown command " + a[0])


if __name__ == "__main__":
    main()
