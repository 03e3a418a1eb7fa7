"""``peers``: one decoding step of one layer at Gemma 3 270M's shapes (4 query heads sharing 1 kv
head, d = 256, float32), hsrgeom against its peers on the same keys (issue 21 item 5).

Methods:

* ``sdpa``: torch ``scaled_dot_product_attention`` (dense; what transformers runs).
* ``GEMV + top_r``: numpy ``K @ q`` for the 4 heads, ``argpartition`` top-r, softmax over them
  (exact top-r; the bar a selective method must clear).
* ``hsrgeom top_r`` / ``top_p``: :meth:`hsrgeom.attention.DecodeCache.attend` (exact top-r over the
  key codes, one compiled call per kv head; certified top-p).
* ``Quest-style pages (exact)``: pages of 16 consecutive keys with per-coordinate min / max; the
  bound ``sum_i max(q_i min_i, q_i max_i) >= q.k`` of every page, pages read in decreasing bound
  until the next bound is below the r-th best score found (so the top-r is exact, as Quest's
  bound with a cut-off instead of a fixed page budget).
* ``faiss HNSW``: an ``IndexHNSWFlat`` (M = 32, inner product, efSearch = 2 r) over the keys of the
  kv head (built once, not timed), top-r per head, softmax over them (approximate, in
  RetrievalAttention's role).
* ``SimHash sampling``: MagicPIG's estimator in numpy: L = 64 tables of K = 8 random-hyperplane bits
  over the keys (hashed once, not timed); the keys colliding with the query in at least one table
  are sampled, each with its collision probability ``p = 1 - (1 - (1 - theta / pi)^K)^L``, and the
  output is the self-normalised importance-sampling estimate ``sum w v / p / sum w / p``.

Per method: median latency per layer and token (interleaved rounds, the load average beside),
keys used in the softmax and keys touched (full-precision scores computed; for hsrgeom the key
rows its codes could not exclude; for HNSW faiss's distance count), per head, recall of the true top-r (float64),
the softmax mass of the keys used, and the relative output error against float64 dense softmax.
"""
from __future__ import annotations

import numpy as np
from _common import log, table, write_section
from fallback import interleaved
from kernel import _cases, _dense64, _gemv_top_r, add_shared_arguments, sdpa_call


def add_arguments(parser, name):
    add_shared_arguments(parser)
    parser.add_argument("--page", type=int, default=16, help="keys per page of the Quest-style bound (default 16)")


class Pages:
    """Quest-style exact top-r: per-page min/max bounds, pages read in decreasing bound."""

    def __init__(self, k, page):
        n, d = k.shape
        self.k, self.page = k, page
        P = -(-n // page)
        pad = np.full((P * page - n, d), np.nan, dtype=k.dtype)
        kp = np.concatenate([k, pad]).reshape(P, page, d)
        self.lo, self.hi = np.nanmin(kp, axis=1), np.nanmax(kp, axis=1)

    def top_r(self, q, r):
        """(ids per head, keys touched per head)."""
        # max of q.k over the page's box: hi where q_i > 0, lo where q_i < 0; widened by the
        # float32 rounding of the scores it is compared with
        qp, qm = np.maximum(q, 0), np.minimum(q, 0)
        ub = self.hi @ qp.T + self.lo @ qm.T
        ub += 1e-5 * (np.abs(self.hi) @ np.abs(qp).T + np.abs(self.lo) @ np.abs(qm).T)
        n = len(self.k)
        kept, touched = [], []
        for h in range(len(q)):
            order = np.argsort(-ub[:, h])
            ids, sc = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            i = 0
            step = max(1, -(-r // self.page))  # pages per batch
            while i < len(order):
                if len(sc) >= r and ub[order[i], h] < np.partition(sc, len(sc) - r)[len(sc) - r]:
                    break
                pg = order[i : i + step]
                i += step
                new = (pg[:, None] * self.page + np.arange(self.page)).ravel()
                new = new[new < n]
                ids = np.concatenate([ids, new])
                sc = np.concatenate([sc, self.k[new] @ q[h]])
                step *= 2
            top = np.argpartition(-sc, min(r, len(sc)) - 1)[:r]
            kept.append(ids[top])
            touched.append(len(ids))
        return kept, float(np.mean(touched))


class SimHash:
    """MagicPIG-style LSH sampling (K bits x L tables of random hyperplanes)."""

    def __init__(self, k, K=8, L=64, seed=0):
        rng = np.random.default_rng(seed)
        self.K, self.L = K, L
        self.planes = rng.standard_normal((k.shape[1], K * L)).astype(np.float32)
        self.codes = self._hash(k)
        self.knorm = np.linalg.norm(k.astype(np.float64), axis=1)
        self.k = k

    def _hash(self, x):
        bits = (x @ self.planes > 0).reshape(len(x), self.L, self.K)
        return (bits * (1 << np.arange(self.K))).sum(axis=2).astype(np.int32)  # (n, L)

    def sample(self, q):
        """(ids per head, probability per id, keys touched per head)."""
        qc = self._hash(q)
        out = []
        for h in range(len(q)):
            ids = np.flatnonzero((self.codes == qc[h]).any(axis=1))
            cos = (self.k[ids] @ q[h]).astype(np.float64) / (self.knorm[ids] * np.linalg.norm(q[h]) + 1e-300)
            theta = np.arccos(np.clip(cos, -1, 1))
            p = 1 - (1 - (1 - theta / np.pi) ** self.K) ** self.L
            out.append((ids, np.maximum(p, 1e-12)))
        return out


def _softmax_over(q, k, v, scale, kept, prob=None):
    out = np.empty((len(q), v.shape[1]))
    for h, ids in enumerate(kept):
        s = (k[ids] @ q[h]).astype(np.float64) * scale
        w = np.exp(s - s.max()) if len(ids) else s
        if prob is not None:
            w = w / prob[h]
        out[h] = (w @ v[ids]) / w.sum() if len(ids) else 0.0
    return out


def run(args, name, argv):
    import faiss
    import torch

    from hsrgeom.attention import DecodeCache
    torch.set_num_threads(args.torch_threads)
    faiss.omp_set_num_threads(1)
    if args.quick:
        args.n, args.repeat = [4096], 3
    r = args.top_r
    rows = []
    for label, q, k, v, scale in _cases(args):
        n = len(k)
        p64, ref = _dense64(q, k, v, scale)
        s64 = q.astype(np.float64) @ k.astype(np.float64).T
        true_top = [set(np.lexsort((np.arange(n), -s64[h]))[:r]) for h in range(len(q))]
        cache = DecodeCache().append(k[None, None], v[None, None])
        pages = Pages(k, args.page)
        hnsw = faiss.IndexHNSWFlat(k.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.add(k)
        hnsw.hnsw.efSearch = 2 * r
        lsh = SimHash(k)
        qn = q[None, :, None]
        sdpa = sdpa_call(q, k, v, scale)

        def hnsw_attend():
            _, ids = hnsw.search(q, r)
            return _softmax_over(q, k, v, scale, [i[i >= 0] for i in ids])

        def lsh_attend():
            got = lsh.sample(q)
            return _softmax_over(q, k, v, scale, [g[0] for g in got], [g[1] for g in got])

        fns = {
            "sdpa": sdpa,
            f"GEMV + top_r={r}": lambda: _gemv_top_r(q, k, v, scale, r)[0],
            f"hsrgeom top_r={r}": lambda: cache.attend(qn, mode="softmax", top_r=r, scale=scale,
                                                       return_stats=False)[0, :, 0],
            f"hsrgeom top_p={args.top_p}": lambda: cache.attend(qn, mode="softmax", top_p=args.top_p, scale=scale,
                                                                return_stats=False)[0, :, 0],
            f"Quest-style pages, exact top_r={r}": lambda: _softmax_over(q, k, v, scale, pages.top_r(q, r)[0]),
            f"faiss HNSW top_r={r}": hnsw_attend,
            "SimHash sampling (K=8, L=64)": lsh_attend,
        }
        # keys used per head, keys touched per head
        used = {"sdpa": ([np.arange(n)] * len(q), n)}
        used[f"GEMV + top_r={r}"] = (_gemv_top_r(q, k, v, scale, r)[1], n)
        _, st = cache.attend(qn, mode="softmax", top_r=r, scale=scale, return_stats="exact")
        used[f"hsrgeom top_r={r}"] = (_kept_sets(q, s64, r), st["points_tested"] / len(q))
        _, st = cache.attend(qn, mode="softmax", top_p=args.top_p, scale=scale, return_stats="exact")
        used[f"hsrgeom top_p={args.top_p}"] = (_kept_sets(q, s64, st["entries"][0, :, 0]), st["points_tested"] / len(q))
        used[f"Quest-style pages, exact top_r={r}"] = pages.top_r(q, r)
        hnsw_stats = faiss.cvar.hnsw_stats
        hnsw_stats.reset()
        _, ids = hnsw.search(q, r)
        used[f"faiss HNSW top_r={r}"] = ([i[i >= 0] for i in ids], hnsw_stats.ndis / len(q))
        got = lsh.sample(q)
        used["SimHash sampling (K=8, L=64)"] = ([g[0] for g in got], float(np.mean([len(g[0]) for g in got])))
        med, load = interleaved(fns, args.repeat, max(1, int(3e4 // n)))
        for key, fn in fns.items():
            out = np.asarray(fn(), dtype=np.float64)
            err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            sets, touched = used[key]
            recall = float(np.mean([len(true_top[h] & set(np.asarray(sets[h]).tolist())) / r for h in range(len(q))]))
            mass = float(np.mean([p64[h, np.unique(np.asarray(sets[h], dtype=np.int64))].sum() for h in range(len(q))]))
            size = float(np.mean([len(np.unique(np.asarray(sets[h]))) for h in range(len(q))]))
            rows.append([label, n, key, med[key] * 1e3, med["sdpa"] / med[key], size, touched, recall, mass, err,
                         load])
        log(f"n={n}: " + ", ".join(f"{k} {t * 1e3:.3f} ms" for k, t in med.items()) + f" (load {load:.1f})")
    body = table(["keys", "n", "method", "ms / layer / token", "speed vs sdpa", "keys used (per head)",
                  "keys touched (per head)",
                  f"recall of the true top-{r}", "softmax mass used", "relative output error", "load avg"], rows)
    print(body)
    if not args.quick:
        key = f"peers-real-{args.real}" if args.real else "peers"
        title = (f"Peers on captured Q/K/V of Gemma 3 270M's full-attention layers, {args.real} tokens"
                 if args.real else "Peers: one layer, one token, Gemma 3 270M shapes (synthetic keys)")
        write_section(args, name, title, body, argv, key=key)


def _kept_sets(q, s64, r):
    """The keys of largest float64 score per head (hsrgeom's kept sets are exact)."""
    rs = np.broadcast_to(np.asarray(r), (len(q),))
    return [np.lexsort((np.arange(s64.shape[1]), -s64[h]))[: int(rs[h])] for h in range(len(q))]
