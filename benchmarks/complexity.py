"""Measured query complexity of every structure vs n, at a fixed output size; fitted exponents.

    python benchmarks/complexity.py                       # n = 10^3 .. 10^6, writes docs/complexity.md + docs/img/
    python benchmarks/complexity.py --max-n 10000000      # up to 10^7 (a few minutes more, ~2 GB)
    python benchmarks/complexity.py --quick               # a smoke run (n <= 10^5, no files written)

For each distribution (uniform, gaussian, clustered), d in {2, 3, 4, 8, 16} and n on a log grid,
it builds each structure, runs queries whose half-spaces hold ~K = 100 points (random unit
normals, offsets at the (1 - K/n) quantile of the projections), and records the mean points
tested, nodes visited and wall time per query (batched, 2 threads). The exponent is the slope of
a least-squares fit of log(cost) against log(n) over the upper half of the n grid (the lower
half is dominated by constant terms).

Theory for points tested (output size fixed): a kd-tree (PartitionTree, split="widest") visits
O(n^(1 - 1/d) + k) cells for a hyperplane in the worst case; a partition tree with optimal
crossing number (SimplicialPartitionTree aims at it) the same bound; ConvexLayers O(log n + k) per layer reached; BruteForce n.
The paper's bound for half-space reporting with near-linear space is O(n^(1 - 1/floor(d/2)) + k).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import hsrgeom
from hsrgeom._auto import _TABLE_PEEL as PEEL  # the partial peel auto builds above 2*10^6 points

K = 100
STRUCTURES = {
    "BruteForce": (lambda x: hsrgeom.BruteForce(x), None),
    "PartitionTree(widest)": (lambda x: hsrgeom.PartitionTree(x), None),
    "PartitionTree(pca)": (lambda x: hsrgeom.PartitionTree(x, split="pca"), None),
    "SimplicialPartitionTree": (lambda x: hsrgeom.SimplicialPartitionTree(x), None),
    "ConvexLayers": (lambda x: hsrgeom.ConvexLayers(x), 2),
    f"ConvexLayers(max_layers={PEEL})": (lambda x: hsrgeom.ConvexLayers(x, max_layers=PEEL), 2),
    "ConvexLayers3": (lambda x: hsrgeom.ConvexLayers3(x), 3),
    "ShallowCutting3": (lambda x: hsrgeom.ShallowCutting3(x), 3),
    "auto": (lambda x: hsrgeom.build_index(x, batch_size=200, output_size=K), None),
}
DEEP = ("PartitionTree(widest)", "PartitionTree(pca)", "SimplicialPartitionTree")  # halving queries too
SLOW_BUILD = ("ConvexLayers", "ConvexLayers3", "SimplicialPartitionTree")  # skipped above n = 10^6 (builds of minutes)


READING = """Reading the table: at a fixed output size the points tested grow far more slowly than the
worst-case exponents on these distributions: a random hyperplane holding ~100 of n points cuts
off a thin cap (a *shallow* query, the regime of half-space reporting), so the trees' cost is
dominated by the cap's boundary, not by a hyperplane through the middle of the data. The growth
climbs with d (partition trees at d = 16: 0.4-0.8) towards the scan's 1. The convex-layer
structures stay flat (exponent ~0), as O(log n + k)-type structures should. The worst-case
exponents are those of *deep* queries, hyperplanes through the middle of the data: the next
table measures them. auto is built with `output_size=100` (this benchmark's output size), so
its probes report the same share of its samples. Above n = 2*10^6 its d = 2 candidate is
ConvexLayers(max_layers=129) (a full peel takes minutes at 10^7), and d = 3 convex layers are
not among its candidates. ShallowCutting3's theory column is the shallow-cutting bound
(O(log n + k)); its grid is fixed, so that bound is not guaranteed (docs/cuttings.md)."""


def theory(name, d):
    if name == "auto":
        return float("nan")
    if name == "BruteForce":
        return 1.0
    if name.startswith("ConvexLayers") or name == "ShallowCutting3":
        return 0.0
    return 1 - 1 / d


def data(dist, n, d, rng):
    if dist == "uniform":
        return rng.random((n, d))
    if dist == "gaussian":
        return rng.standard_normal((n, d))
    centers = rng.standard_normal((20, d)) * 4
    return centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, d))


def measure(index, x, m, rng, share=None):
    """Per query: points tested, nodes visited, reported, time; half-spaces holding ~K points
    (or the given share of them: 0.5 for hyperplanes through the median). Every structure at
    one (data, d, n) gets the same rng seed, so the same queries: ratios are paired."""
    a = rng.standard_normal((m, x.shape[1]))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    sample = x if len(x) <= 200_000 else x[rng.choice(len(x), 200_000, replace=False)]
    b = np.quantile(sample @ a.T, 1 - (min(K / len(x), 1.0) if share is None else share), axis=0)
    index.count(a, b)  # warm-up
    el, total, k = np.inf, 0.0, 0
    while k < 5 or (total < 0.3 and k < 50):  # best of 5, or of more while calls are short
        t = time.perf_counter()
        index.count(a, b)
        dt = time.perf_counter() - t
        el, total, k = min(el, dt), total + dt, k + 1
    st = index.stats
    return {
        "tested": float(st.points_tested.mean()),
        "nodes": float(st.nodes_visited.mean()),
        "reported": float(st.points_reported.mean()),
        "us": el / m * 1e6,
    }


# auto's choice (from its reason) -> the structure of this benchmark that is the same build
CHOICE = {"brute_force": "BruteForce", "partition_tree(split=widest)": "PartitionTree(widest)",
          "partition_tree(split=pca)": "PartitionTree(pca)", "convex_layers": "ConvexLayers",
          f"convex_layers(max_layers={PEEL})": f"ConvexLayers(max_layers={PEEL})", "convex_layers3": "ConvexLayers3",
          "shallow_cutting3": "ShallowCutting3"}


def fit(ns, ys):
    ns, ys = np.asarray(ns, float), np.asarray(ys, float)
    half = ns >= np.sqrt(ns.min() * ns.max())
    ok = half & (ys > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns[ok]), np.log(ys[ok]), 1)[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-n", type=int, default=10**6)
    p.add_argument("--dims", default="2,3,4,8,16")
    p.add_argument("--dists", default="uniform,gaussian,clustered")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="docs/complexity.md")
    args = p.parse_args()
    if args.quick:
        args.max_n = min(args.max_n, 10**5)
    dims = [int(v) for v in args.dims.split(",")]
    dists = args.dists.split(",")
    ns = [int(v) for v in np.unique(np.round(np.logspace(3, np.log10(args.max_n), 2 * round(np.log10(args.max_n / 1e3)) + 1)))]
    rows, curves, kinds, deep = [], {}, {}, {}
    t0 = time.perf_counter()
    for dist in dists:
        for d in dims:
            for name, (make, only_d) in STRUCTURES.items():
                if only_d is not None and d != only_d:
                    continue
                res = []
                for n in ns:
                    if name in SLOW_BUILD and n > 10**6:
                        continue
                    x = data(dist, n, d, np.random.default_rng(n + d))
                    index = make(x)
                    if name == "auto":  # what it chose, e.g. "partition_tree(split=widest)"
                        kinds[(dist, d, n)] = index.reason.rsplit("-> ", 1)[-1].split(";")[0] if "-> " in index.reason else index.kind
                        if n >= 10**6:
                            print(f"  auto at n={n}: {index.reason}", flush=True)
                    seed = (dists.index(dist), d, n)
                    res.append((n, measure(index, x, args.queries, np.random.default_rng(seed))))
                    if dist == "uniform" and name in DEEP:
                        deep.setdefault((d, name), []).append(
                            (n, measure(index, x, args.queries, np.random.default_rng(seed + (1,)), share=0.5)))
                curves[(dist, d, name)] = res
                nn = [n for n, _ in res]
                e_t = fit(nn, [r["tested"] - 0.0 for _, r in res])
                e_w = fit(nn, [r["us"] for _, r in res])
                last = res[-1][1]
                rows.append((dist, d, name, theory(name, d), e_t, e_w, last, res[-1][0]))
                print(f"{dist:9s} d={d:<3d} {name:22s} theory {theory(name, d):.2f}  tested ~n^{e_t:.2f}  time ~n^{e_w:.2f}  "
                      f"(n={res[-1][0]}: {last['tested']:.0f} tested, {last['us']:.1f} us/query)", flush=True)
                if (d, name) in deep and dist == "uniform":
                    dn = [n for n, _ in deep[(d, name)]]
                    print(f"{'':9s} {'':5s} {name:22s} halving queries: tested ~n^{fit(dn, [r['tested'] for _, r in deep[(d, name)]]):.2f}",
                          flush=True)
    elapsed = time.perf_counter() - t0
    if args.quick:
        return
    os.makedirs(os.path.join(os.path.dirname(args.out), "img"), exist_ok=True)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:  # raw numbers, small
        json.dump({"curves": [[ds, dd, nm, res] for (ds, dd, nm), res in curves.items()],
                   "auto_choice": [[ds, dd, n, kind] for (ds, dd, n), kind in kinds.items()]}, f)
    plots = plot(curves, dims, dists, os.path.dirname(args.out))
    with open(args.out, "w") as f:
        f.write("# Measured query complexity\n\n")
        f.write(f"Command: `python benchmarks/complexity.py --max-n {args.max_n}` ({elapsed / 60:.1f} min on the 2-core machine).\n")
        f.write(f"Queries report ~{K} points each (fixed output size); {args.queries} queries per point; "
                "exponents fitted on the upper half of the n grid (n = 10^3 .. max-n).\n\n")
        f.write("Theory column: worst-case exponent of points tested at fixed output "
                "(kd-tree / partition tree: 1 - 1/d; ConvexLayers: 0, i.e. polylogarithmic; BruteForce: 1). "
                "The paper's bound for near-linear-space half-space reporting is n^(1 - 1/floor(d/2)) + k, "
                "which needs shallow cuttings: see docs/cuttings.md for why they are not built.\n\n")
        f.write("| data | d | structure | theory | points tested ~ n^e | time ~ n^e | largest n | tested there | nodes | us/query |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|\n")
        for dist, d, name, th, e_t, e_w, last, n in rows:
            f.write(f"| {dist} | {d} | {name} | {th:.2f} | {e_t:.2f} | {e_w:.2f} | {n} | {last['tested']:.0f} | {last['nodes']:.0f} | {last['us']:.1f} |\n")
        f.write("\n" + READING + "\n\n")
        f.write("## Deep queries: where the crossing-number bound applies\n\n"
                "Uniform data, hyperplanes through the median (each half-space holds n/2 points; `count`, "
                "which takes whole nodes inside without visiting them, so the points tested are those of "
                "the leaves the hyperplane crosses). Theory: a kd-tree cell or a partition-tree cell is "
                "crossed by O(n^(1 - 1/d)) leaves' worth of points.\n\n")
        f.write("| d | structure | theory | points tested ~ n^e | nodes ~ n^e | largest n | tested there |\n|---|---|---|---|---|---|---|\n")
        for (d, name), res in sorted(deep.items()):
            nn = [n for n, _ in res]
            f.write(f"| {d} | {name} | {theory(name, d):.2f} | {fit(nn, [r['tested'] for _, r in res]):.2f} | "
                    f"{fit(nn, [r['nodes'] for _, r in res]):.2f} | {nn[-1]} | {res[-1][1]['tested']:.0f} |\n")
        f.write("\n")
        f.write("## auto against the best single structure\n\n"
                "Time per query of `build_index(kind=\"auto\", batch_size=200, output_size=100)` divided by the fastest other "
                "structure's at the same n (n >= 10^4; below 4096 points auto is a scan by rule), on the same queries. The "
                "issue asks for <= 1.2 everywhere. *measured*: auto's index timed on its own; *choice*: the time of the "
                "structure auto chose (the same build, measured in its own row) over the fastest: the quality of the "
                "choice without a second timing's noise. Repeated timings of one index vary by up to ~30 % on this "
                "shared 2-core machine (measured: PartitionTree, d = 8, 10^6 points: 103-133 us per query).\n\n")
        f.write("| data | d | measured: worst ratio (n): auto's choice / the fastest there | median | "
                "choice: worst ratio (n) | auto's choice at max n |\n|---|---|---|---|---|---|\n")
        for dist in dists:
            for d in dims:
                auto = dict(curves.get((dist, d, "auto"), []))
                ratios, chosen = [], []
                for n, r in auto.items():
                    times = {nm: dict(res)[n]["us"] for (ds, dd, nm), res in curves.items()
                             if ds == dist and dd == d and nm != "auto" and n in dict(res)}
                    if n >= 10**4 and times:
                        best = min((t, nm) for nm, t in times.items())
                        ratios.append((r["us"] / best[0], n, best[1]))
                        same = CHOICE.get(kinds.get((dist, d, n)))
                        if same in times:
                            chosen.append((times[same] / best[0], n))
                if ratios:
                    worst = max(ratios)
                    wc = f"{max(chosen)[0]:.2f} ({max(chosen)[1]})" if chosen else ""
                    f.write(f"| {dist} | {d} | {worst[0]:.2f} ({worst[1]}): {kinds.get((dist, d, worst[1]), '')} / {worst[2]} | "
                            f"{np.median([q for q, _, _ in ratios]):.2f} | {wc} | {kinds.get((dist, d, max(auto)), '')} |\n")
        f.write("\n")
        for path in plots:
            f.write(f"![{os.path.basename(path)}](img/{os.path.basename(path)})\n\n")


def plot(curves, dims, dists, outdir):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots")
        return []
    paths = []
    for dist in dists:
        fig, axes = plt.subplots(1, len(dims), figsize=(4 * len(dims), 3.6), sharey=True)
        for ax, d in zip(np.atleast_1d(axes), dims):
            for (ds, dd, name), res in curves.items():
                if ds != dist or dd != d:
                    continue
                color = f"C{list(STRUCTURES).index(name)}"  # one colour per structure in every panel
                style = "s--" if name == "auto" else "o-"
                ax.loglog([n for n, _ in res], [r["tested"] for _, r in res], style, label=name, ms=3, color=color)
            ns = np.array([10**3, max(n for (ds, dd, _), res in curves.items() if ds == dist for n, _ in res)])
            ax.loglog(ns, K * (ns / ns[0]) ** (1 - 1 / d), "k:", lw=1, label="n^(1-1/d) (scaled)")
            ax.set_title(f"{dist}, d={d}")
            ax.set_xlabel("n")
            ax.grid(True, which="both", alpha=0.3)
        np.atleast_1d(axes)[0].set_ylabel(f"points tested per query (~{K} reported)")
        handles = {}
        for ax in np.atleast_1d(axes):
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), fontsize=7,
                   bbox_to_anchor=(0.5, 1.08))
        fig.tight_layout()
        path = os.path.join(outdir, "img", f"complexity_{dist}.png")
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
