"""hsrgeom against its peers, side by side in one run: numpy/BLAS scan, FAISS exact range search.

    pip install '.[bench]'                      # faiss-cpu, matplotlib, threadpoolctl
    python benchmarks/peers.py                  # n = 10^6, writes docs/peers.md + docs/img/peers.png (~10 min)
    python benchmarks/peers.py --quick          # n = 10^5, fewer d, prints only

Data: uniform points in [0, 1]^d, and for d >= 16 also "low-rank" points (a 4-dimensional
Gaussian embedded in R^d plus 1e-3 noise), the case where geometry can win at high d. Queries:
random unit normals a with offsets b at the quantile that leaves ~0.1 % of the points inside
(~1000 of 10^6), so every query reports about the same number of points.

FAISS: `IndexFlatIP.range_search(x, radius)` keeps the points with <q, y> > radius (strictly) and
takes one radius for the whole batch, so each half-space <a, x> >= b is lifted to
<(a, -b), (x, 1)> > -eps on points with a constant coordinate 1 appended (eps = 1e-9·scale: the
boundary is closed for us). FAISS computes in float32 with its own rounding, so its sets may
differ from the exact ones on points within rounding distance of the boundary: the mismatches are
counted and shown, never hidden. numpy: `X @ A.T >= b` in blocks of 65536 points, float32 BLAS.
hsrgeom answers are exact (they equal an exact-arithmetic scan).

Times are per query, for a batch (m = 200 queries at d <= 16, 50 above), 2 threads for everything
(faiss.omp_set_num_threads, numpy's BLAS, hsrgeom.set_num_threads), best of 3. CGAL's kd-tree
is not re-measured here (it needs a C++ build against Debian's libcgal-dev); the numbers the
project brief records for it on this machine (n = 10^6, ~0.1 % reported: 0.09 ms/query at d = 2,
2.8 ms at d = 8, 38 ms at d = 16, single-threaded) are quoted in docs/peers.md for comparison.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import hsrgeom
from core_acceptance import best_of as best  # benchmarks/ is on the path when run as a script

CGAL_BRIEF = {2: 0.09, 8: 2.8, 16: 38.0}  # ms/query, from the project brief (not measured here)


def make(kind, n, d, rng):
    if kind == "uniform":
        return rng.random((n, d), dtype=np.float32)
    basis = np.linalg.qr(rng.standard_normal((d, 4)))[0].T.astype(np.float32)
    return (rng.standard_normal((n, 4), dtype=np.float32) @ basis
            + 1e-3 * rng.standard_normal((n, d), dtype=np.float32))


def queries(x, m, frac, rng):
    a = rng.standard_normal((m, x.shape[1])).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    sample = x[rng.choice(len(x), min(len(x), 100_000), replace=False)]
    b = np.quantile(sample.astype(np.float64) @ a.T.astype(np.float64), 1 - frac, axis=0)
    return a, b


def numpy_scan(x, a, b, block=65536):
    parts = [[] for _ in range(len(a))]
    for s in range(0, len(x), block):
        hit = (x[s : s + block] @ a.T) >= b.astype(np.float32)
        for j in range(len(a)):
            parts[j].append(np.flatnonzero(hit[:, j]) + s)
    return [np.concatenate(p) for p in parts]


def faiss_run(index, a, b):
    q = np.hstack([a, -b[:, None].astype(np.float32)])
    lims, _, ids = index.range_search(np.ascontiguousarray(q), -1e-9)
    return [np.sort(ids[lims[j] : lims[j + 1]]) for j in range(len(a))]


def mismatches(sets, ref):
    return int(sum(len(np.setxor1d(s, r)) for s, r in zip(sets, ref)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10**6)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="docs/peers.md")
    args = p.parse_args()
    import faiss
    threads = 2
    faiss.omp_set_num_threads(threads)
    hsrgeom.set_num_threads(threads)
    n = 10**5 if args.quick else args.n
    cases = [("uniform", d) for d in (2, 3, 8, 16, 32, 128)] + [("low-rank", 16), ("low-rank", 128)]
    if args.quick:
        cases = [("uniform", 2), ("uniform", 16), ("low-rank", 128)]
    rng = np.random.default_rng(0)
    rows = []
    t_start = time.perf_counter()
    for kind, d in cases:
        x = make(kind, n, d, rng)
        m = 200 if d <= 16 else 50
        a, b = queries(x, m, 1e-3, rng)
        res = {}
        bf = hsrgeom.BruteForce(x)
        t, out = best(lambda: bf.report(a, b))
        ref = out.split()
        res["hsrgeom BruteForce"] = (t, 0, 0.0)
        t_build = time.perf_counter()
        auto = hsrgeom.build_index(x, batch_size=m)
        t_build = time.perf_counter() - t_build
        t, out = best(lambda: auto.report(a, b))
        res[f"hsrgeom auto ({auto.kind})"] = (t, mismatches(out.split(), ref), t_build)
        t_build = time.perf_counter()
        tree = hsrgeom.PartitionTree(x)
        t_build = time.perf_counter() - t_build
        t, out = best(lambda: tree.report(a, b))
        res["hsrgeom PartitionTree"] = (t, mismatches(out.split(), ref), t_build)
        if d >= 8:
            t_build = time.perf_counter()
            pca = hsrgeom.PartitionTree(x, split="pca")
            t_build = time.perf_counter() - t_build
            t, out = best(lambda: pca.report(a, b))
            res["hsrgeom PartitionTree(pca)"] = (t, mismatches(out.split(), ref), t_build)
            del pca
        if d == 2:
            t_build = time.perf_counter()
            cl = hsrgeom.ConvexLayers(x)
            t_build = time.perf_counter() - t_build
            t, out = best(lambda: cl.report(a, b))
            res["hsrgeom ConvexLayers"] = (t, mismatches(out.split(), ref), t_build)
        t, out = best(lambda: numpy_scan(x, a, b))
        res["numpy scan (float32)"] = (t, mismatches(out, ref), 0.0)
        t_build = time.perf_counter()
        fx = faiss.IndexFlatIP(d + 1)
        fx.add(np.hstack([x, np.ones((n, 1), np.float32)]))
        t_build = time.perf_counter() - t_build
        t, out = best(lambda: faiss_run(fx, a, b))
        res["faiss IndexFlatIP.range_search"] = (t, mismatches(out, ref), t_build)
        reported = float(np.mean([len(r) for r in ref]))
        t_auto = next(v[0] for k, v in res.items() if k.startswith("hsrgeom auto"))
        for name, (t, mis, tb) in res.items():
            rows.append((kind, d, name, tb, t / m * 1e3, t / t_auto, mis, reported))
            print(f"{kind:8s} d={d:<4d} {name:34s} build {tb:6.2f} s  {t / m * 1e3:9.4f} ms/query  "
                  f"x{t / t_auto:7.2f} of auto  mismatches {mis}", flush=True)
        if d in CGAL_BRIEF and kind == "uniform":
            print(f"{'':8s} {'':6s} {'CGAL kd-tree (brief, 1 thread)':34s} {'':15s} {CGAL_BRIEF[d]:9.4f} ms/query")
        del x, bf, auto, tree, fx
    elapsed = time.perf_counter() - t_start
    if args.quick:
        return
    write(args.out, rows, n, elapsed, threads)


def write(path, rows, n, elapsed, threads):
    import faiss
    os.makedirs(os.path.join(os.path.dirname(path), "img"), exist_ok=True)
    lines = [
        "# hsrgeom and its peers",
        "",
        f"Command: `python benchmarks/peers.py --n {n}` ({elapsed / 60:.1f} min). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores; numpy {np.__version__}, faiss-cpu {faiss.__version__}, hsrgeom {hsrgeom.__version__}; "
        f"{threads} threads for every library; {time.strftime('%Y-%m-%d')}.",
        "",
        f"n = {n:,} float32 points; each query reports ~0.1 % of them; batches of 200 queries (d <= 16) or 50;"
        " time per query is the batch time / m (best of 3). *vs auto* = time / time of `build_index(kind=\"auto\")`"
        " (> 1: slower than auto). *mismatches* = ids in the symmetric difference with the exact answer, summed"
        " over the batch (FAISS and numpy compute in float32 and can disagree on points within rounding"
        " distance of the boundary). Build = index construction (numpy: none). See the docstring of"
        " `benchmarks/peers.py` for the FAISS lifting and the data.",
        "",
        "| data | d | method | build s | ms / query | vs auto | mismatches | reported / query |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, d, name, tb, ms, ratio, mis, rep in rows:
        lines.append(f"| {kind} | {d} | {name} | {tb:.2f} | {ms:.4g} | {ratio:.2f} | {mis} | {rep:.0f} |")
    lines += ["", "CGAL's kd-tree (`CGAL::Kd_tree` with a half-space query item, single-threaded) as recorded in the"
              " project brief for the same setting on this machine (not re-measured by this script): "
              + ", ".join(f"d = {d}: {v} ms/query" for d, v in CGAL_BRIEF.items()) + ".", ""]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        keys = sorted({(k, d) for k, d, *_ in rows}, key=lambda t: (t[0] != "uniform", t[1]))
        methods = []
        for _, _, name, *_ in rows:
            base = name.split(" (")[0]
            if base not in methods:
                methods.append(base)
        fig, ax = plt.subplots(figsize=(10, 4))
        w = 0.8 / len(methods)
        for i, meth in enumerate(methods):
            vals = []
            for k, d in keys:
                v = [ms for kk, dd, nm, _, ms, *_ in rows if kk == k and dd == d and nm.split(" (")[0] == meth]
                vals.append(v[0] if v else np.nan)
            ax.bar(np.arange(len(keys)) + i * w, vals, w, label=meth)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(keys)) + 0.4 - w / 2)
        ax.set_xticklabels([f"{k}\nd={d}" for k, d in keys], fontsize=8)
        ax.set_ylabel("ms per query (log)")
        ax.set_title(f"n = {n:,}, ~0.1 % reported per query, {threads} threads")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(os.path.dirname(path), "img", "peers.png"), dpi=100)
        lines += ["![peers](img/peers.png)", ""]
    except ImportError:
        pass
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
