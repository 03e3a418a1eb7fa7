"""Experiment 1: how sparse ReLU attention is under the paper's Gaussian model.

Model: q, k ~ N(0, sigma^2 I_d), scores s = <q, k> / sqrt(d), bias b = sigma_a sqrt(0.4 ln n).
For a fixed q, s ~ N(0, ||q||^2 sigma^2 / d), whose standard deviation is about sigma^2; we take
sigma_a = sigma^2, the smallest value for which the paper's tail argument applies
(P[s > b] <= exp(-b^2 / (2 sigma_a^2)) = n^(-1/5), so E[non-zeros per row] <= n^(4/5)); the
paper's lemma takes sigma_a larger (a log(m / delta) factor for a high-probability bound over
all rows), which only makes rows sparser. The Gaussian tail gives the sharper prediction
n * Q(sqrt(0.4 ln n)) (Q the standard normal tail), also shown.

Non-zeros are counted twice: by a dense scan (numpy) and as the entries `relu_attention`
found through half-space reporting; the two must agree row by row.
"""
from __future__ import annotations

import math
import time

import numpy as np
from _common import fit_exponent, log, savefig, table, write_section

from hsrgeom.attention import relu_attention


def add_arguments(parser, name):
    parser.add_argument("--d", type=int, default=64, help="head dimension (default 64)")
    parser.add_argument("--m", type=int, default=32, help="query rows (default 32)")
    parser.add_argument("--sigma", type=float, default=1.0, help="sigma of q and k (default 1)")
    parser.add_argument("--max-n", type=int, default=10**6, help="largest n (default 10^6)")
    parser.add_argument("--seed", type=int, default=0)


def gaussian_tail(t):
    return 0.5 * math.erfc(t / math.sqrt(2))


def run(args, name, argv):
    rng = np.random.default_rng(args.seed)
    d, m, sigma = args.d, args.m, args.sigma
    max_n = 10**4 if args.quick else args.max_n
    ns = [n for n in (10**3, 3 * 10**3, 10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6, 3 * 10**6, 10**7) if n <= max_n]
    sigma_a = sigma**2
    rows = []
    for n in ns:
        k = (sigma * rng.standard_normal((1, 1, n, d))).astype(np.float32)
        v = rng.standard_normal((1, 1, n, 8)).astype(np.float32)
        q = (sigma * rng.standard_normal((1, 1, m, d))).astype(np.float32)
        bias = sigma_a * math.sqrt(0.4 * math.log(n))
        scale = 1 / math.sqrt(d)
        t0 = time.perf_counter()
        _, st = relu_attention(q, k, v, bias=bias, scale=scale, return_stats=True)
        seconds = time.perf_counter() - t0
        dense = ((q[0, 0].astype(np.float64) @ k[0, 0].T.astype(np.float64)) * scale - bias > 0).sum(axis=1)
        found = st["entries"][0, 0]
        rows.append(dict(n=n, bias=bias, mean=float(dense.mean()), max=int(dense.max()),
                         bound=n**0.8, tail=n * gaussian_tail(math.sqrt(0.4 * math.log(n))),
                         agree=bool((found == dense).all()), extra=int((found - dense).sum()),
                         seconds=seconds, index=st["index"][0]))
        log(f"n={n}: mean {dense.mean():.1f} max {dense.max()} n^0.8 {n**0.8:.0f} agree={rows[-1]['agree']} ({seconds:.2f} s)")
    slope_mean = fit_exponent([r["n"] for r in rows], [r["mean"] for r in rows])
    slope_max = fit_exponent([r["n"] for r in rows], [r["max"] for r in rows])
    header = ["n", "bias b", "non-zeros/row (mean)", "max over rows", "n^(4/5)", "n·Q(√(0.4 ln n))",
              "mean / n^(4/5)", "HSR = dense"]
    body_rows = [[r["n"], r["bias"], r["mean"], r["max"], r["bound"], r["tail"], r["mean"] / r["bound"],
                  "yes" if r["agree"] else f"no ({r['extra']:+d})"] for r in rows]
    text = table(header, body_rows)
    print(text)
    print(f"fitted exponent: mean {slope_mean:.3f}, max {slope_max:.3f} (bound 0.8)")
    if args.quick:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    n_ = np.array(ns, float)
    ax.loglog(n_, [r["mean"] for r in rows], "o-", label="measured, mean over rows")
    ax.loglog(n_, [r["max"] for r in rows], "s--", label="measured, max over rows")
    ax.loglog(n_, n_**0.8, "k:", label="n^(4/5) (paper's bound)")
    ax.loglog(n_, [r["tail"] for r in rows], "g-.", label="n·Q(√(0.4 ln n)) (Gaussian tail)")
    ax.set_xlabel("n (keys)")
    ax.set_ylabel("non-zero entries per row")
    ax.set_title(f"ReLU attention sparsity, Gaussian q, k, d={d}")
    ax.legend(fontsize=8)
    img = savefig(args, fig, "attention_sparsity.png")
    body = f"""
Model: q, k ~ N(0, σ²I) with σ = {sigma}, d = {d}, {m} query rows, scale 1/√d, bias
b = σ_a·√(0.4 ln n) with σ_a = σ² (the score's standard deviation; see the module docstring of
`benchmarks/attention/sparsity.py` for why this is the least favourable choice the
paper's argument allows). Non-zeros are counted by a dense float64 scan; "HSR = dense" says
whether the entries `relu_attention` found by half-space reporting are exactly those.

{text}

Fitted exponent of non-zeros per row vs n: **{slope_mean:.3f}** (mean), **{slope_max:.3f}** (max);
the paper's bound is 0.8. Mean counts are {min(r["mean"] / r["bound"] for r in rows):.2f}–{max(r["mean"] / r["bound"] for r in rows):.2f}
× n^(4/5): the Gaussian tail Q(√(0.4 ln n)) ≤ n^(-1/5) / (√(0.4 ln n)·√(2π)) adds a 1/√(log n)
factor to the bound, and the measurement follows that prediction (column 6), hence a fitted
exponent a little below 0.8. The worst row has about twice the mean: rows with a larger ‖q‖ have
a wider score distribution (the paper's σ_a carries a factor for this). Sparsity does not make
reporting cheap by itself (experiment 2): at these d the keys cannot be pruned, so finding the
n^(4/5) entries still scans all n keys; what it saves is the work on V.

![sparsity]({img})
"""
    path = write_section(args, name, "1. Sparsity of ReLU attention (paper's Gaussian model)", body, argv)
    log(f"wrote {path}")
