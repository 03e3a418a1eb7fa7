"""ShallowCutting3 (d = 3) against its grid: list sizes, build and query time vs PartitionTree.

    python benchmarks/cutting3.py --n 1000000 --grids 4,8,16,32 --budget 4
    python benchmarks/cutting3.py --n 10000000 --grids 16,32,64 --budget 2

Uniform float32 points in [0, 1]^3 (or --data gaussian); 1000 random unit normals with offsets
at the value ranked --output (so each query reports exactly that many points); every answer is
checked against PartitionTree. Per query: points tested (the conflict list's length, or the
tree's work when the cutting cannot certify), binary-search steps + tree nodes ("nodes"), and the
best of 5 one-thread batch times, sorted and unsorted ids. Results: docs/cuttings.md.
"""
import argparse
import time

import numpy as np

import hsrgeom


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10**6)
    p.add_argument("--grids", default="4,8,16,32")
    p.add_argument("--max-depth", type=int, default=1024)
    p.add_argument("--budget", type=float, default=2.0, help="max_candidates / n")
    p.add_argument("--output", type=int, default=100)
    p.add_argument("--data", default="uniform", choices=["uniform", "gaussian"])
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args()
    n, m, k = args.n, args.queries, args.output
    rng = np.random.default_rng(1)
    x = rng.random((n, 3), dtype=np.float32) if args.data == "uniform" else rng.standard_normal((n, 3)).astype(np.float32)
    a = rng.standard_normal((m, 3)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    xd, b = x.astype(np.float64), np.empty(m)
    for j in range(0, m, 10):
        b[j:j + 10] = np.partition(xd @ a[j:j + 10].astype(np.float64).T, n - k, axis=0)[n - k]
    del xd

    def per_query(idx, sorted_ids):
        best = np.inf
        for _ in range(5):
            t = time.perf_counter()
            idx.report(a, b, return_sorted=sorted_ids, n_threads=1)
            best = min(best, time.perf_counter() - t)
        return best / m * 1e6

    tree = hsrgeom.PartitionTree(x)
    ref = tree.report(a, b)
    print(f"{args.data} n={n:,} d=3 float32, {m} queries reporting {k} points; one thread")
    print(f"PartitionTree: tested {tree.stats.points_tested.mean():.0f}, unsorted {per_query(tree, False):.3f} us, "
          f"sorted {per_query(tree, True):.3f} us")
    print("| grid | triangles | build s | levels | deepest k | candidates / n | memory MiB | tested mean | tested p90 "
          "| nodes | unsorted us | sorted us | exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for g in (int(s) for s in args.grids.split(",")):
        t = time.perf_counter()
        sc = hsrgeom.ShallowCutting3(x, grid=g, max_depth=args.max_depth, max_candidates=int(args.budget * n))
        tb = time.perf_counter() - t
        ok = sc.report(a, b) == ref
        st = sc.stats
        print(f"| {g} | {12 * g * g} | {tb:.2f} | {sc.levels} | {sc.depths()[-1] if sc.levels else 0} "
              f"| {sc.candidates / n:.2f} | {sc.memory_bytes / 2**20:.0f} | {st.points_tested.mean():.0f} "
              f"| {np.percentile(st.points_tested, 90):.0f} | {st.nodes_visited.mean():.1f} "
              f"| {per_query(sc, False):.3f} | {per_query(sc, True):.3f} | {ok} |", flush=True)


if __name__ == "__main__":
    main()
