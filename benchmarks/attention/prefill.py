"""Experiment 3: the cost of prompt prefilling (m = n query rows, causal) vs n.

ReLU attention, one head, float32, a bias leaving a fraction n^(-1/5) of the scores positive
(~n^(4/5) non-zeros per full row). Timed in the same run:

* dense numpy: causal, in blocks of 1024 rows (``Q_blk K^T`` with BLAS, ReLU, mask, ``W V``):
  O(n^2 d) work at GEMM speed;
* ``prefill(q, k, v, mode="relu", causal=True)``: per-block indexes over the keys (the causal
  cut), batched half-space reports, then the gathered entries only.

The paper's prefill bound O(m n^(1-1/floor(d/2)) + m n^(4/5)) counts entries and points tested;
wall time also depends on how those compare with a GEMM's throughput, which is what this shows.
"""
from __future__ import annotations

import math
import time

import numpy as np
from _common import best_blas_time, best_time, fit_exponent, log, savefig, table, write_section
from decode import CASES, make_keys, parse_cases

from hsrgeom.attention import prefill


def add_arguments(parser, name):
    parser.add_argument("--cases", default="gaussian-4,gaussian-16,gaussian-128,clustered-128",
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--max-n", type=int, default=32768, help="largest n (default 32768)")
    parser.add_argument("--seed", type=int, default=0)


def dense_causal(q, k, v, scale, bias, rows=1024):
    n = len(k)
    out = np.zeros((n, v.shape[1]), dtype=np.float32)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        w = q[r0:r1] @ k[:r1].T
        w *= scale
        w -= bias
        np.maximum(w, 0, out=w)
        w[np.arange(r1 - r0)[:, None] + r0 < np.arange(r1)[None, :]] = 0
        den = w.sum(axis=1, keepdims=True)
        np.divide(w @ v[:r1], den, out=out[r0:r1], where=den > 0)
    return out


def run(args, name, argv):
    rng = np.random.default_rng(args.seed)
    cases = parse_cases(args.cases)
    max_n = 4096 if args.quick else args.max_n
    ns = [n for n in (1024, 2048, 4096, 8192, 16384, 32768, 65536) if n <= max_n]
    rows = []
    for case in cases:
        dist, d = CASES[case]
        for n in ns:
            k, v, _ = make_keys(dist, n, d, rng)
            q, _, _ = make_keys(dist, n, d, rng)
            if dist == "clustered":  # queries aimed at clusters, as the keys are
                q = q / np.linalg.norm(q, axis=1, keepdims=True) * math.sqrt(d)
            scale = 1 / math.sqrt(d)
            sample = (q[: min(n, 256)] @ k.T).ravel() * scale
            bias = float(np.quantile(sample, 1 - n**-0.2))
            t_dense, ref, blas = best_blas_time(lambda: dense_causal(q, k, v, scale, bias), repeat=2)
            t0 = time.perf_counter()
            out, st = prefill(q[None, None], k[None, None], v[None, None], mode="relu", bias=bias, scale=scale,
                              return_stats=True)
            t_pre = time.perf_counter() - t0
            err = float(np.abs(out[0, 0] - ref).max() / max(np.abs(ref).max(), 1e-30))
            nnz = int(st["entries"].sum())
            rows.append(dict(blas=blas, case=case, n=n, nnz=nnz, dense=t_dense, prefill=t_pre, tested=st["points_tested"],
                             index=", ".join(sorted({s.split(") ", 1)[-1] for s in st["index"][0].split(", [")})),
                             err=err))
            log(f"{case} n={n}: dense {t_dense:.3f} s, prefill {t_pre:.3f} s, entries {nnz} "
                f"({nnz / n:.0f}/row), tested {st['points_tested']} ({st['points_tested'] / n:.0f}/row), err {err:.1e}")
    header = ["case", "n = m", "entries / row", "points tested / row", "dense numpy (s)", "its BLAS threads", "prefill (s)",
              "dense / prefill", "index"]
    body = [[r["case"], r["n"], r["nnz"] / r["n"], r["tested"] / r["n"], r["dense"], r["blas"], r["prefill"],
             r["dense"] / r["prefill"], r["index"]] for r in rows]
    fits = []
    for case in cases:
        rs = [r for r in rows if r["case"] == case and r["n"] >= 4096]
        n_ = [r["n"] for r in rs]
        fits.append([case, fit_exponent(n_, [r["dense"] for r in rs]), fit_exponent(n_, [r["prefill"] for r in rs]),
                     fit_exponent(n_, [r["tested"] for r in rs]), fit_exponent(n_, [r["nnz"] for r in rs])])
    text = table(header, body)
    fit_text = table(["case", "dense time", "prefill time", "points tested (all rows)", "entries (all rows)"], fits)
    worst = max(r["err"] for r in rows)
    print(text + "\n\nfitted exponents (n >= 4096; dense is 2 in theory):\n" + fit_text)
    print(f"max relative difference prefill vs dense float32 numpy: {worst:.1e}")
    if args.quick:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for case in cases:
        rs = [r for r in rows if r["case"] == case]
        n_ = [r["n"] for r in rs]
        line, = axes[0].loglog(n_, [r["prefill"] for r in rs], "s-", label=f"prefill, {case}")
        axes[0].loglog(n_, [r["dense"] for r in rs], "o:", color=line.get_color(), label=f"dense, {case}")
        axes[1].loglog(n_, [r["tested"] / r["n"] for r in rs], "s-", color=line.get_color(), label=f"tested, {case}")
        axes[1].loglog(n_, [r["nnz"] / r["n"] for r in rs], "x:", color=line.get_color(), label=f"entries, {case}")
    n_ = np.array(ns, float)
    axes[1].loglog(n_, n_ / 2, "k--", lw=0.8, label="n/2 (dense causal)")
    axes[0].set_xlabel("n = m"), axes[0].set_ylabel("seconds")
    axes[1].set_xlabel("n = m"), axes[1].set_ylabel("per query row")
    axes[0].legend(fontsize=6), axes[1].legend(fontsize=6)
    img = savefig(args, fig, "attention_prefill.png")
    body_md = f"""
m = n query rows, causal, one head, float32, ReLU with a bias leaving ~n^(4/5) non-zeros per full
row. Dense numpy is blocked (1024 rows per GEMM), the faster of 1 and the default BLAS threads. All outputs agree with it to {worst:.0e}
(relative).

{text}

Fitted exponents (n ≥ 4096):

{fit_text}

What this shows: the entries kept per row grow like n^(4/5) (fitted exponent of all entries
≈ 1.8 = 1 + 4/5) as the paper says, but prefill's time is set by the points tested and by the
gathers, and it loses to the dense blocked GEMM in every case here (column "dense / prefill").
With m = n queries per head, `auto` picks blocked scans for the per-block indexes (a batch of
thousands of queries amortises a scan better than tree traversals), so the points tested are
the visible keys plus the row's own block (~0.56 n per row at 32K, exponent 1.74 overall): the
causal cut halves the work, nothing prunes it further. Rows that see a whole block get its
weighted sums from one fused `index.sum` (no id lists); only the row's own block is reported
and gathered entry by entry (ids, float64 logits, weights, V rows). Since the fused sums (session
6) prefill at 32K takes ~1.8–4.5 s instead of 9–13 s, still 0.4–0.45x of the dense GEMM: per
kept entry the scan's exact test and scattered V row cost more than the GEMM costs per score.
The paper's bound O(m·n^(1−1/⌊d/2⌋)) for the report part is sublinear per row only for
small d (⌊d/2⌋ = 2 at d = 4: n^(1/2)) and needs a structure with that query bound; ours does not
reach it on batched queries, and at d in the tens or hundreds the bound is no better than a scan.

![prefill]({img})
"""
    path = write_section(args, name, "3. Prefill cost vs n", body_md, argv)
    log(f"wrote {path}")
