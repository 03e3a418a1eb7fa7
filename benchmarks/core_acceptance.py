"""Measures the core issue's acceptance numbers; writes nothing, prints a markdown table.

    python benchmarks/core_acceptance.py            # full sizes (n = 10**6)
    python benchmarks/core_acceptance.py --n 100000 # quicker look

Cases:
  1. uniform [0,1]^2, ~100 reported/query: PartitionTree.report vs BruteForce.report, per query.
  2. d = 128 Gaussian: build_index(kind="auto").report vs BruteForce.report, per query.
  3. PartitionTree build on uniform points in d = 3.
"""
import argparse
import time

import numpy as np

import hsrgeom


def best_of(f, repeat=3):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def queries_for(points, m, reported, rng):
    """Random unit normals with offsets chosen so each reports ~`reported` points."""
    d = points.shape[1]
    a = rng.standard_normal((m, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    a = a.astype(points.dtype)
    sample = points[rng.choice(len(points), size=min(len(points), 200_000), replace=False)]
    frac = reported / len(points)
    proj = sample.astype(np.float64) @ a.T.astype(np.float64)
    return a, np.quantile(proj, 1 - frac, axis=0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--m", type=int, default=1000)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        hsrgeom.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, m, dt = args.n, args.m, np.dtype(args.dtype)
    print(f"hsrgeom {hsrgeom.__version__}, n={n}, m={m}, dtype={dt}, threads={hsrgeom.get_num_threads()}\n")
    print("| case | structure | build s | ms/query | ratio vs BruteForce | mean reported | points tested/query |")
    print("|---|---|---|---|---|---|---|")

    def row(case, name, tb, tq, ref_tq, idx, res):
        print(f"| {case} | {name} | {tb:.3f} | {tq * 1e3 / m:.4f} | {ref_tq / tq:.1f}x | "
              f"{res.counts.mean():.0f} | {idx.stats.points_tested.mean():.0f} |")

    # 1. d = 2
    x = rng.random((n, 2)).astype(dt)
    a, b = queries_for(x, m, 100, rng)
    tb_bf, bf = best_of(lambda: hsrgeom.BruteForce(x), 1)
    tq_bf, r_bf = best_of(lambda: bf.report(a, b))
    row("d=2 uniform", "BruteForce", tb_bf, tq_bf, tq_bf, bf, r_bf)
    tb_pt, pt = best_of(lambda: hsrgeom.PartitionTree(x), 1)
    tq_pt, r_pt = best_of(lambda: pt.report(a, b))
    assert r_pt == r_bf
    row("d=2 uniform", "PartitionTree", tb_pt, tq_pt, tq_bf, pt, r_pt)

    # 2. d = 128
    x = rng.standard_normal((n, 128)).astype(dt)
    a, b = queries_for(x, min(m, 200), 100, rng)
    m2 = len(a)
    tb_bf, bf = best_of(lambda: hsrgeom.BruteForce(x), 1)
    tq_bf, r_bf = best_of(lambda: bf.report(a, b))
    tb_au, au = best_of(lambda: hsrgeom.build_index(x, kind="auto"), 1)
    tq_au, r_au = best_of(lambda: au.report(a, b))
    assert r_au == r_bf
    for name, tb, tq, idx, r in (("BruteForce", tb_bf, tq_bf, bf, r_bf), (f"auto ({au.kind})", tb_au, tq_au, au, r_au)):
        print(f"| d=128 gaussian | {name} | {tb:.3f} | {tq * 1e3 / m2:.4f} | {tq_bf / tq:.2f}x | "
              f"{r.counts.mean():.0f} | {idx.stats.points_tested.mean():.0f} |")
    print(f"\nauto reason (d=128): {au.reason}")
    del x, bf, au

    # 3. build in d = 3
    x = rng.random((n, 3)).astype(dt)
    tb, pt = best_of(lambda: hsrgeom.PartitionTree(x), 3)
    print(f"\nPartitionTree build, n={n}, d=3: {tb:.3f} s (best of 3)")


if __name__ == "__main__":
    main()
