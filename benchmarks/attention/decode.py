"""Experiment 2: the cost of one decoding step vs the context length n.

One query row per head over n cached keys, ReLU attention with a bias that leaves ~n^(4/5)
non-zeros (``--bias n45``, the acceptance setting) or the paper's b = sqrt(0.4 ln n)
(``--bias paper``, ~6x fewer). Timed in the same run, per step:

* dense numpy: ``relu(K q * scale - b)`` then ``w @ V / w.sum()`` in float32 (what one writes
  without this package; reads all of K and all of V), the best of 1 and the default number of
  BLAS threads;
* ``relu_attention``: one call, building the index over the keys (what a one-off costs);
* ``DecodeCache.attend``: the index is built once by ``append`` (its time is shown apart; "auto"
  chooses it for ``output_size = n^(4/5)`` keys per query row, the paper's bound), then
  each step runs one fused ``index.sum`` per head (the half-space search over K, adding
  ``max(<q,k> - t, 0) * v`` of each key inside as it is found, no id lists) and divides. Its
  time is split into that index query and the rest (Python plumbing).

Cases: Gaussian keys (the paper's model) for several d, where at d >= 16 nothing can be pruned and
the report is a blocked scan, so the best possible gain is skipping the rows of V (at most ~2x of
memory traffic); low d and clustered keys, where the index prunes whole groups of keys.
"""
from __future__ import annotations

import math
import time

import numpy as np
from _common import best_blas_time, best_time, fit_exponent, log, savefig, table, write_section

from hsrgeom.attention import DecodeCache, relu_attention

CASES = {"gaussian-4": ("gaussian", 4), "gaussian-8": ("gaussian", 8), "gaussian-16": ("gaussian", 16),
         "gaussian-64": ("gaussian", 64), "gaussian-128": ("gaussian", 128), "clustered-16": ("clustered", 16),
         "clustered-128": ("clustered", 128)}


def add_arguments(parser, name):
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--max-n", type=int, default=10**6, help="largest n (default 10^6)")
    parser.add_argument("--bias", choices=("n45", "paper"), default="n45",
                        help="n45: ~n^(4/5) non-zeros (default); paper: b = sqrt(0.4 ln n)")
    parser.add_argument("--seed", type=int, default=0)


def make_keys(dist, n, d, rng):
    """Keys, values and one query: Gaussian (q, k ~ N(0, I)), or 256 tight clusters with the
    query pointing at one of them."""
    v = rng.standard_normal((n, d), dtype=np.float32)
    if dist == "gaussian":
        return rng.standard_normal((n, d), dtype=np.float32), v, rng.standard_normal(d).astype(np.float32)
    centers = rng.standard_normal((256, d)).astype(np.float32) * 3
    k = centers[rng.integers(0, 256, n)] + 0.3 * rng.standard_normal((n, d), dtype=np.float32)
    return k, v, (centers[0] / np.linalg.norm(centers[0]) * math.sqrt(d)).astype(np.float32)


def dense_step(k, v, q, scale, bias):
    w = k @ q
    w *= scale
    w -= bias
    np.maximum(w, 0, out=w)
    return (w @ v) / w.sum()


def measure(dist, d, n, bias_mode, rng):
    k, v, q = make_keys(dist, n, d, rng)
    scale = 1 / math.sqrt(d)
    scores = (k @ q) * scale
    if bias_mode == "paper":
        bias = math.sqrt(0.4 * math.log(n)) * float(np.std(scores))
    else:
        target = max(1, int(round(n**0.8)))
        bias = float(np.partition(scores, n - target)[n - target]) - 1e-6
    q4, k4, v4 = q[None, None, None], k[None, None], v[None, None]
    t_dense, ref, blas = best_blas_time(lambda: dense_step(k, v, q, scale, bias))
    t0 = time.perf_counter()
    out1, st1 = relu_attention(q4, k4, v4, bias=bias, scale=scale, return_stats=True)
    t_once = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache = DecodeCache(output_size=n**0.8).append(k4, v4)  # the paper's bound on non-zeros per row
    t_build = time.perf_counter() - t0
    t_attend, (out, st) = best_time(lambda: cache.attend(q4, mode="relu", bias=bias, scale=scale))
    index = cache._heads[0][0].blocks[0][1]  # the head's index, to time its query alone
    thr = np.array([bias / scale])
    t_report, _ = best_time(lambda: index.sum(q[None], thr, v, power=1))
    err = float(np.abs(out[0, 0, 0] - ref).max() / max(np.abs(ref).max(), 1e-30))
    return dict(blas=blas, case=f"{dist}-{d}", n=n, nnz=int(st["entries"].sum()), dense=t_dense, once=t_once,
                build=t_build, attend=t_attend, report=t_report, tested=st["points_tested"],
                index=st["index"][0].split(") ", 1)[-1], err=err, err1=float(np.abs(out1 - out).max()))


def parse_cases(text):
    """The --cases option: names from CASES, comma-separated."""
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    return cases


EXPLAIN_TEXT = """Each step is one fused `index.sum` per head: the index finds the keys with `<q, k> ≥ t` (t =
bias/scale, minus a rounding-size margin) and adds `max(<q,k> − t, 0)^α · v` of each as it finds
it (the float64 `<q, k>` it computed for the exact test), so no id list is built, sorted or
gathered; a tree adds whole subtrees inside the half-space and splits a single query into
subtrees that run on both cores. At d ≥ 16 with Gaussian keys no partition prunes: at small n
the index is the blocked scan of all n keys (points tested = n), which costs about what dense
numpy's pass over K costs. For n ≥ 10⁶ at d ≥ 32, `DecodeCache` (which builds its indexes for one
query per call) gets a `QuantizedScan` from `auto`: it scans 8-bit codes of the keys (1 byte per
coordinate instead of 4) and reads at full precision only the keys its proven error bound cannot
rule out (~73k of 10⁶ at d = 128, 63k of them inside), so a step reads ~1/4 of K plus those rows
of K and V, where dense numpy streams all of K and V. The result is still exact: the codes only
choose which keys are read, the shared exact predicate decides each of them.
Where geometry prunes (d = 4, clustered keys at d = 16) the tree tests a small fraction of the
keys, and `DecodeCache` attaches V to the tree (`index.attach_values`): every node keeps the sum
of its value rows and of `(k − mean) vᵀ`, so for α = 1 a subtree inside the half-space (and above
t) adds `(<q, mean> − t) Σv + qᵀ Σ(k − mean)vᵀ` in O(d·d_v) instead of reading each key and V row,
and the keys tested in leaves read their V rows in tree order. `DecodeCache(output_size=n ** 0.8)`
tells `auto` how many keys a row selects (the paper's bound), and `auto` probes at that share of
the keys; without it `auto` assumes small outputs and at d = 8 picks a partition tree that, at
~6 % inside, tests half of the keys. At d = 8 and 16 with Gaussian keys nothing prunes and the
step is the blocked scan; for one query it computes the scores with dot products compiled for
the fixed d (d ≤ 8) and a branch-free candidate pass, so it now beats dense numpy there too
(numpy makes two passes, K and V, and a temporary of n weights).
The paper's O(n^(4/5)) decode needs a search in O(n^(4/5)) time, which no structure delivers at
high d (docs/complexity.md: the query exponent approaches 1 as d grows); the quantized scan is
still linear in n, with a 4x smaller constant. The one-call `relu_attention` pays the index build
every time: use `DecodeCache` for decoding.
"""

PAPER_TEXT = """The paper's bias leaves ~6x fewer non-zeros than n^(4/5) (section 2). With fewer entries
inside, the index query is a larger share of the cost, and where the partition tree prunes
(d = 4, clustered keys) the step is about 10x faster than dense numpy, twice the gain where
nothing prunes (d = 128, a quantized scan that still reads codes of every key). Section 2 explains
the mechanics.
"""


def run(args, name, argv):
    rng = np.random.default_rng(args.seed)
    cases = parse_cases(args.cases)
    max_n = 10**4 if args.quick else args.max_n
    ns = [n for n in (10**3, 10**4, 10**5, 10**6, 10**7) if n <= max_n]
    rows = []
    for case in cases:
        dist, d = CASES[case]
        for n in ns:
            r = measure(dist, d, n, args.bias, rng)
            rows.append(r)
            log(f"{case} n={n}: dense {r['dense']*1e3:.2f} ms, attend {r['attend']*1e3:.2f} ms "
                f"(report {r['report']*1e3:.2f}), once {r['once']*1e3:.0f} ms, build {r['build']:.2f} s, "
                f"nnz {r['nnz']}, tested {r['tested']}, {r['index']}, rel err {r['err']:.1e}")
    header = ["case", "n", "non-zeros", "dense numpy (ms)", "its BLAS threads", "relu_attention, one call (ms)", "DecodeCache build (s)",
              "attend (ms)", "of which index.sum (ms)", "dense / attend", "points tested", "index"]
    body = [[r["case"], r["n"], r["nnz"], r["dense"] * 1e3, r["blas"], r["once"] * 1e3, r["build"], r["attend"] * 1e3,
             r["report"] * 1e3, r["dense"] / r["attend"], r["tested"], r["index"]] for r in rows]
    fits = []
    for case in cases:
        rs = [r for r in rows if r["case"] == case and r["n"] >= 10**4]
        n_ = [r["n"] for r in rs]
        fits.append([case, fit_exponent(n_, [r["dense"] for r in rs]), fit_exponent(n_, [r["attend"] for r in rs]),
                     fit_exponent(n_, [max(r["tested"], 1) for r in rs]), fit_exponent(n_, [r["nnz"] for r in rs])])
    fit_text = table(["case", "dense time", "attend time", "points tested", "non-zeros"], fits)
    text = table(header, body)
    print(text + "\n\nfitted exponents (n >= 10^4):\n" + fit_text)
    worst = max(r["err"] for r in rows)
    print(f"max relative difference attend vs dense float32 numpy: {worst:.1e}")
    if args.quick:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases), 3.4), sharey=True, squeeze=False)
    for ax, case in zip(axes[0], cases):
        rs = [r for r in rows if r["case"] == case]
        n_ = [r["n"] for r in rs]
        ax.loglog(n_, [r["dense"] * 1e3 for r in rs], "o-", label="dense numpy")
        ax.loglog(n_, [r["once"] * 1e3 for r in rs], "^:", label="relu_attention (builds index)")
        ax.loglog(n_, [r["attend"] * 1e3 for r in rs], "s-", label="DecodeCache.attend")
        ax.loglog(n_, [r["report"] * 1e3 for r in rs], "x--", label="… of which index.sum")
        ax.set_title(case, fontsize=9)
        ax.set_xlabel("n")
    axes[0][0].set_ylabel("ms per decoding step")
    axes[0][-1].legend(fontsize=7)
    paper = args.bias == "paper"
    img = savefig(args, fig, "attention_decode_paper.png" if paper else "attention_decode.png")
    big = [r for r in rows if r["n"] == max(ns)]
    breakdown = "\n".join(f"- {r['case']}: index.sum {r['report']*1e3:.2f} ms ({r['tested']:,} points tested, "
                          f"{r['index']}), the rest {(r['attend'] - r['report'])*1e3:.2f} ms, dense {r['dense']*1e3:.1f} ms"
                          for r in big)
    speed = "\n".join(f"- {r['case']}: dense {r['dense']*1e3:.1f} ms, attend {r['attend']*1e3:.2f} ms "
                      f"(index.sum {r['report']*1e3:.2f} ms) → **{r['dense']/r['attend']:.1f}×**" for r in big)
    bias_text = ("b set so that ~n^(4/5) entries are non-zero (the acceptance setting)" if args.bias == "n45"
                 else "b = σ_score·√(0.4 ln n) (the paper's choice)")
    explain = PAPER_TEXT if paper else EXPLAIN_TEXT
    body_md = f"""
One query row, one head, float32; {bias_text}. Dense numpy is timed with 1 BLAS thread and
with the default, and the faster is shown (column 5). Times are the best of at least 3 calls (more for short calls, up to 0.25 s of calls; the cache is built once,
its build time is shown apart); "one call" includes building the index. All outputs agree with
dense float32 numpy to {worst:.0e} (relative).

{text}

Fitted exponents of cost vs n (n ≥ 10⁴):

{fit_text}

At n = {max(ns):,}:
{speed}

Where the time goes (n = {max(ns):,}, the step split into the index query and the rest):
{breakdown}

{explain}

![decode]({img})
"""
    title = "2b. Decode cost vs n with the paper's bias" if paper else "2. Decode cost vs n"
    path = write_section(args, name, title, body_md, argv, key="decode-paper" if paper else None)
    log(f"wrote {path}")
