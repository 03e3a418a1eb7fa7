"""Cost per reported id of half-space reports, by output size: count (the traversal alone),
report with unsorted ids, report with sorted ids; one thread, batches of 200 queries.

    python benchmarks/per_id.py                                  # n = 10^6, d = 2, PartitionTree, ConvexLayers
    python benchmarks/per_id.py --n 1e7 --d 3 --kinds PartitionTree,ShallowCutting3 --k 100,1000

Points uniform in [0, 1]^d (float32, seed 0), random unit normals, offsets at the k-th largest
projection of each normal (float64), so each query reports ~k points. Time: best of 5 calls.
For an A/B of two builds run it with each one's interpreter, alternating (docs/performance.md).
"""
import argparse
import time

import numpy as np

import hsrgeom


def best(f, repeat=5):
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--d", type=int, default=2)
    p.add_argument("--kinds", default="PartitionTree,ConvexLayers")
    p.add_argument("--k", default="100,1000,10000,100000", help="ids per query")
    p.add_argument("--m", type=int, default=200, help="queries per call")
    args = p.parse_args()
    n, d, m = int(args.n), args.d, args.m
    rng = np.random.default_rng(0)
    x = rng.random((n, d), dtype=np.float32)
    a = rng.standard_normal((m, d))
    a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    proj = a.astype(np.float64) @ x.T.astype(np.float64)
    for kind in args.kinds.split(","):
        idx = getattr(hsrgeom, kind)(x)
        for k in (int(float(v)) for v in args.k.split(",")):
            b = -np.partition(-proj, k - 1, axis=1)[:, k - 1]
            total = int(idx.count(a, b, n_threads=1).sum())
            tc = best(lambda: idx.count(a, b, n_threads=1))
            tu = best(lambda: idx.report(a, b, n_threads=1, return_sorted=False))
            ts = best(lambda: idx.report(a, b, n_threads=1))
            print(f"{kind:16s} d={d} n={n:.0e} k={k:6d}  ns per id: count {tc / total * 1e9:6.2f} "
                  f"unsorted {tu / total * 1e9:6.2f} sorted {ts / total * 1e9:6.2f}   us per query: "
                  f"{tc / m * 1e6:8.1f} {tu / m * 1e6:8.1f} {ts / m * 1e6:8.1f}", flush=True)


if __name__ == "__main__":
    main()
