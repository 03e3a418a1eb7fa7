"""Cost per reported id of half-space reports, by output size: count (the traversal alone),
report with unsorted ids, report with sorted ids; one thread, batches of 200 queries.

    python benchmarks/per_id.py                                  # n = 10^6, d = 2, PartitionTree, ConvexLayers
    python benchmarks/per_id.py --n 1e7 --d 3 --kinds PartitionTree,ShallowCutting3 --k 100,1000
    python benchmarks/per_id.py --d 3 --dists uniform,clustered,gaussian --k 100,1000,3000,10000 --auto \\
        --kinds PartitionTree,ShallowCutting3,ShallowCutting3:fine_depth=444:max_depth=12000:max_candidates=6n

Points (float32, seed 0): uniform in [0, 1]^d, clustered (5 Gaussian clusters of width 0.01 around
centres spread by 10) or standard Gaussian; random unit normals, offsets at the k-th largest
projection of each normal (float64), so each query reports ~k points. A kind may carry
parameters, ``Name:key=value:...`` (a value ``<c>n`` is c times the number of points). Per kind
also its build time and memory. Time: best of 5 calls. --scores: also reports with scores
(``return_scores=True``, what hsrgeom.attention asks), unsorted and sorted. --auto: also build_index(kind="auto",
output_size=k, batch_size=m) per output size, timed the same way, and its ratio to the fastest kind.
For an A/B of two builds run it with each one's interpreter, alternating (docs/performance.md).

--peers-data: ``benchmarks/peers/run.py``'s data and queries instead (its uniform, clustered and
Gaussian generators, seed 7 here, and its gap offsets, seed k), the distributions of
docs/peers.md. --hot: also the first query repeated m times, so that its nodes and rows stay in
the caches: the traversal's compute alone, against the batch's cold reads. --faults: minor page
faults per unsorted report call (getrusage; the kernel zeroing fresh output pages, see
buffer.hpp's OutputPool). Per kind and output size also the nodes visited per query.

    python benchmarks/per_id.py --peers-data --d 3 --dists uniform,gaussian --k 1000,10000 \
        --kinds PartitionTree,PartitionTree:leaf_size=32,PartitionTree:leaf_size=256 --hot
    python benchmarks/per_id.py --peers-data --dists clustered --k 1000,3000 \
        --kinds ConvexLayers,ConvexLayers:table_layers=256
"""
import argparse
import os
import resource
import sys
import time

import numpy as np

import hsrgeom


REPEAT = 5


def best(f, repeat=REPEAT):
    t = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def data(dist, n, d, rng):
    if dist == "uniform":
        return rng.random((n, d), dtype=np.float32)
    if dist == "gaussian":
        return rng.standard_normal((n, d)).astype(np.float32)
    centers = rng.standard_normal((5, d)) * 10
    return (centers[rng.integers(0, 5, n)] + 0.01 * rng.standard_normal((n, d))).astype(np.float32)


def kind_spec(spec, n):
    """("Name", params) of ``Name:key=value:...``."""
    name, *kv = spec.split(":")
    params = {}
    for item in kv:
        key, value = item.split("=")
        if value.endswith("n") and value[:-1].replace(".", "", 1).isdigit():
            params[key] = int(float(value[:-1]) * n)
        else:
            try:
                params[key] = int(value)
            except ValueError:
                params[key] = value  # e.g. split=pca
    return name, params


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peers_module():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
    import run  # benchmarks/peers/run.py: its data and its gap queries

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--d", type=int, default=2)
    p.add_argument("--dists", default="uniform", help="uniform, clustered, gaussian")
    p.add_argument("--kinds", default="PartitionTree,ConvexLayers")
    p.add_argument("--k", default="100,1000,10000,100000", help="ids per query")
    p.add_argument("--m", type=int, default=200, help="queries per call")
    p.add_argument("--auto", action="store_true", help="also auto per output size, against the fastest kind")
    p.add_argument("--scores", action="store_true",
                   help="also reports with scores (return_scores=True), unsorted and sorted, as attention asks")
    p.add_argument("--peers-data", action="store_true", help="benchmarks/peers/run.py's points and gap queries")
    p.add_argument("--hot", action="store_true", help="also the first query repeated m times (cached)")
    p.add_argument("--faults", action="store_true", help="minor page faults per report call")
    args = p.parse_args()
    n, d, m = int(args.n), args.d, args.m
    ks = [int(float(v)) for v in args.k.split(",")]
    for dist in args.dists.split(","):
        if args.peers_data:
            peers = peers_module()
            x = peers.make(dist, n, d, np.random.default_rng(7))
            normals = {}
            offsets = {}
            for k in ks:
                normals[k], offsets[k] = peers.gap_queries(x, m, k, np.random.default_rng(k))[:2]
        else:
            rng = np.random.default_rng(0)
            x = data(dist, n, d, rng)
            a = rng.standard_normal((m, d))
            a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
            # projections 8 queries at a time (all m at once: 16 GB at n = 10^7)
            xt, offsets = x.T.astype(np.float64), {k: np.empty(m) for k in ks}
            for i in range(0, m, 8):
                proj = a[i:i + 8].astype(np.float64) @ xt
                for k in ks:
                    offsets[k][i:i + 8] = -np.partition(-proj, k - 1, axis=1)[:, k - 1]
            del xt  # (proj is unbound when --m 0)
            normals = {k: a for k in ks}
        fastest = {}  # k -> (unsorted, sorted) seconds of the fastest kind
        builds = [(spec, lambda spec=spec: getattr(hsrgeom, kind_spec(spec, n)[0])(x, **kind_spec(spec, n)[1]), ks)
                  for spec in args.kinds.split(",")]
        if args.auto:
            builds += [(f"auto(output_size={k})", lambda k=k: hsrgeom.build_index(x, output_size=k, batch_size=m), [k])
                       for k in ks]
        for spec, make, sizes in builds:
            kind = spec.split(":")[0]
            t0 = time.perf_counter()
            idx = make()
            tb = time.perf_counter() - t0
            print(f"{dist} {spec}: build {tb:.2f} s, {idx.memory_bytes / 2**20:.0f} MiB"
                  + (f", chose {idx!r}\n  why: {idx.reason}" if spec.startswith("auto") else ""), flush=True)
            for k in sizes:
                a, b = normals[k], offsets[k]
                total = int(idx.count(a, b, n_threads=1).sum())
                tc = best(lambda: idx.count(a, b, n_threads=1))
                f0 = minor_faults()
                tu = best(lambda: idx.report(a, b, n_threads=1, return_sorted=False))
                faults = (minor_faults() - f0) / REPEAT
                ts = best(lambda: idx.report(a, b, n_threads=1))
                tested = idx.stats.points_tested.sum() / total
                nodes = idx.stats.nodes_visited.mean()
                if spec.startswith("auto"):
                    fu, fs = fastest[k]
                    kind = f"auto/fastest {tu / fu:.2f} / {ts / fs:.2f}"
                else:
                    fastest[k] = tuple(min(v) for v in zip(fastest.get(k, (tu, ts)), (tu, ts)))
                print(f"{dist:9s} {kind:16s} d={d} n={n:.0e} k={k:6d}  ns per id: count {tc / total * 1e9:6.2f} "
                      f"unsorted {tu / total * 1e9:6.2f} sorted {ts / total * 1e9:6.2f}   us per query: "
                      f"{tc / m * 1e6:8.1f} {tu / m * 1e6:8.1f} {ts / m * 1e6:8.1f}  tested/reported {tested:.2f}"
                      f"  nodes/query {nodes:.0f}" + (f"  faults/call {faults:.0f}" if args.faults else ""),
                      flush=True)
                if args.hot and m > 0:
                    ah, bh = np.repeat(a[:1], m, axis=0), np.repeat(b[:1], m)
                    th = best(lambda: idx.report(ah, bh, n_threads=1, return_sorted=False))
                    hot_total = int(idx.stats.points_reported.sum())
                    hot_tested = idx.stats.points_tested.sum() / max(hot_total, 1)
                    print(f"{'':9s} {'':16s} {'':>{len(f'd={d} n={n:.0e} k={k:6d}')}}  hot (query 0 x {m}): "
                          f"unsorted {th / max(hot_total, 1) * 1e9:6.2f} ns per id, tested/reported {hot_tested:.2f}",
                          flush=True)
                if args.scores:
                    su = best(lambda: idx.report(a, b, n_threads=1, return_scores=True, return_sorted=False))
                    ss = best(lambda: idx.report(a, b, n_threads=1, return_scores=True))
                    print(f"{'':9s} {'':16s} {'':>{len(f'd={d} n={n:.0e} k={k:6d}')}}  with scores: unsorted "
                          f"{su / total * 1e9:6.2f} sorted {ss / total * 1e9:6.2f}", flush=True)
            del idx


if __name__ == "__main__":
    main()
