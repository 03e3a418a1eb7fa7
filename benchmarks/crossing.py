"""Crossing numbers of SimplicialPartitionTree's partitions, and points tested vs PartitionTree.

    python benchmarks/crossing.py            # n = 10^5, d in {2, 3, 4, 8, 16}; + builds at n = 10^6, d = 3
    python benchmarks/crossing.py --no-big   # skip the n = 10^6 builds

For uniform ([0, 1]^d) and gaussian points and each d, it builds SimplicialPartitionTree (default
r = 16, leaf_size = 32) and PartitionTree (leaf_size = 32), and for Q random unit normals:
  * crossing_stats at two offsets: the median of the projections (a hyperplane through the
    middle of the data: the worst case for crossings) and the (1 - K/n) quantile (K = 100
    points inside, the queries below). Per internal node that the hyperplane really crosses
    (node_crossed), "crossed" = children with points on both sides; theory for an optimal
    partition: O(r^(1-1/d)) of the r children. "undecided" = children the box + ball bounds
    cannot decide, over every node a query recurses into (what a query pays).
  * points tested per query (mean) at K = 100 reported points, for both trees and BruteForce (n).
  * at equal depth: of the root's r cells, how many the median hyperplanes cross, vs the r cells
    of the first log2(r) levels of a kd-tree (as PartitionTree splits) on the same points.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import hsrgeom

K = 100
Q = 100


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def crossing_summary(tree, a, b):
    s = tree.crossing_stats(a, b)
    real = s["node_crossed"] == 1
    crossed = s["crossed"][real]
    return {
        "fanout": float(s["fanout"][real].mean()) if real.any() else 0.0,
        "crossed": float(crossed.mean()) if real.any() else 0.0,
        "crossed_max": int(crossed.max()) if real.any() else 0,
        "undecided": float(s["undecided"].mean()) if len(s["undecided"]) else 0.0,
    }


def kd_cells(x, levels):
    """Cell label of each point after `levels` kd-tree splits (median of the widest axis), as
    PartitionTree(split="widest") splits: 2^levels cells, the kd-tree's equivalent of one
    r = 2^levels node."""
    labels = np.zeros(len(x), dtype=np.int64)
    groups = [np.arange(len(x))]
    for _ in range(levels):
        nxt = []
        for g in groups:
            pts = x[g]
            axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
            order = g[np.argsort(pts[:, axis], kind="stable")]
            nxt += [order[: len(g) // 2], order[len(g) // 2 :]]
        groups = nxt
    for c, g in enumerate(groups):
        labels[g] = c
    return labels


def root_crossings(labels, proj, b):
    """Per query: cells with points strictly on both sides of <a, x> = b."""
    out = []
    for j in range(proj.shape[1]):
        above = np.bincount(labels, weights=proj[:, j] > b[j])
        below = np.bincount(labels, weights=proj[:, j] < b[j])
        out.append(int(((above > 0) & (below > 0)).sum()))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--leaf-size", type=int, default=32)
    ap.add_argument("--no-big", action="store_true", help="skip the n = 10^6, d = 3 build timings")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, r = args.n, args.r
    print(f"hsrgeom {hsrgeom.__version__}: n={n}, SimplicialPartitionTree(r={r}, leaf_size={args.leaf_size}) "
          f"vs PartitionTree(leaf_size={args.leaf_size}); {Q} random unit normals; threads={hsrgeom.get_num_threads()}")
    print("crossed = children with points on both sides, per node the hyperplane crosses (mean / max);")
    print("undecided = children the bounds leave undecided, per node a query recurses into (mean);")
    print(f"tested = points tested per query reporting ~{K} points (BruteForce: n);")
    print(f"root = of the root's {r} cells, how many the median hyperplane crosses; kd = the {r} cells of the")
    print(f"       first log2({r}) levels of a kd-tree (median of the widest axis) on the same points.")
    head = (f"{'data':<9}{'d':>3} {'r^(1-1/d)':>9} | {'median: crossed':>15} {'undec.':>6} | "
            f"{'K=100: crossed':>14} {'undec.':>6} | {'tested SPT':>10} {'tested PT':>9} {'nodes SPT':>9} "
            f"{'nodes PT':>8} | {'build SPT':>9} {'build PT':>8} | {'root SPT':>8} {'root kd':>7}")
    print(head)
    print("-" * len(head))
    for dist in ("uniform", "gaussian"):
        for d in (2, 3, 4, 8, 16):
            x = rng.random((n, d)) if dist == "uniform" else rng.standard_normal((n, d))
            t_spt, spt = timed(lambda: hsrgeom.SimplicialPartitionTree(x, r=r, leaf_size=args.leaf_size))
            t_pt, pt = timed(lambda: hsrgeom.PartitionTree(x, leaf_size=args.leaf_size))
            a = rng.standard_normal((Q, d))
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            proj = x @ a.T
            b_mid = np.quantile(proj, 0.5, axis=0)
            b_k = np.quantile(proj, 1 - K / n, axis=0)
            mid = crossing_summary(spt, a, b_mid)
            s = spt.crossing_stats(a, b_mid)
            root_spt = s["crossed"][s["lims"][:-1][np.diff(s["lims"]) > 0]].mean()
            levels = int(round(np.log2(r)))
            root_kd = root_crossings(kd_cells(x, levels), proj, b_mid).mean()
            low = crossing_summary(spt, a, b_k)
            spt.count(a, b_k)
            pt.count(a, b_k)
            st_s, st_p = spt.stats.mean(), pt.stats.mean()
            print(f"{dist:<9}{d:>3} {r ** (1 - 1 / d):>9.2f} | {mid['crossed']:>8.2f} / {mid['crossed_max']:<4} "
                  f"{mid['undecided']:>6.2f} | {low['crossed']:>7.2f} / {low['crossed_max']:<4} {low['undecided']:>6.2f} | "
                  f"{st_s['points_tested']:>10.0f} {st_p['points_tested']:>9.0f} {st_s['nodes_visited']:>9.0f} "
                  f"{st_p['nodes_visited']:>8.0f} | {t_spt:>8.2f}s {t_pt:>7.2f}s | {root_spt:>8.2f} {root_kd:>7.2f}", flush=True)
    if not args.no_big:
        for nn in (100_000, 1_000_000):
            x = rng.random((nn, 3))
            t_spt, _ = timed(lambda: hsrgeom.SimplicialPartitionTree(x, r=r, leaf_size=args.leaf_size))
            t_pt, _ = timed(lambda: hsrgeom.PartitionTree(x, leaf_size=args.leaf_size))
            print(f"build, uniform d=3, n={nn}: SimplicialPartitionTree {t_spt:.2f} s, PartitionTree {t_pt:.2f} s")


if __name__ == "__main__":
    main()
