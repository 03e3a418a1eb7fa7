"""Command line: ``python -m hsrgeom demo`` builds indexes on generated data, checks them against
brute force and prints build time, query time and speed-up per structure."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import hsrgeom


def _timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def demo(args) -> int:
    if args.threads:
        hsrgeom.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(args.seed)
    dims = [int(v) for v in args.dims.split(",")]
    print(f"hsrgeom {hsrgeom.__version__} demo: n={args.n} uniform points in [-1,1]^d, {dtype.name}, "
          f"{args.queries} queries reporting ~{args.selectivity:g} of the points each, "
          f"threads={hsrgeom.get_num_threads()}")
    header = f"{'d':>4}  {'structure':<26} {'build s':>8} {'ms/query':>9} {'speed-up':>9} {'tested/query':>13} {'reported':>9}  exact"
    print(header)
    print("-" * len(header))
    all_exact = True
    for d in dims:
        x = rng.uniform(-1, 1, (args.n, d)).astype(dtype)
        a = rng.standard_normal((args.queries, d))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        a = a.astype(dtype)
        b = np.quantile(x[: min(args.n, 100_000)].astype(np.float64) @ a.T.astype(np.float64), 1 - args.selectivity, axis=0)
        builders = [
            ("BruteForce", lambda: hsrgeom.BruteForce(x)),
            ("PartitionTree(widest)", lambda: hsrgeom.PartitionTree(x)),
            ("PartitionTree(pca)", lambda: hsrgeom.PartitionTree(x, split="pca")),
        ]
        if d >= 32:
            builders.append(("QuantizedScan", lambda: hsrgeom.QuantizedScan(x)))
        if d <= 8:
            builders.append(("SimplicialPartitionTree", lambda: hsrgeom.SimplicialPartitionTree(x)))
        if d == 2:
            builders.append(("ConvexLayers", lambda: hsrgeom.ConvexLayers(x)))
        if d == 3:
            builders.append(("ConvexLayers3", lambda: hsrgeom.ConvexLayers3(x)))
        builders += [
            ("build_index(auto)", lambda: hsrgeom.build_index(x, kind="auto", batch_size=args.queries)),
        ]
        reference = t_ref = None
        for name, build in builders:
            tb, idx = _timed(build)
            tq, res = _timed(lambda: idx.report(a, b))
            if reference is None:
                reference, t_ref = res, tq
            exact = res == reference
            all_exact &= exact
            if name.startswith("build_index"):
                name = f"auto -> {idx.kind}"
            print(f"{d:>4}  {name:<26} {tb:>8.3f} {tq / args.queries * 1e3:>9.4f} {t_ref / tq:>8.1f}x "
                  f"{idx.stats.points_tested.mean():>13.0f} {res.counts.mean():>9.1f}  {'yes' if exact else 'NO'}")
            if name.startswith("auto"):
                print(f"      auto: {idx.reason}")
    print("all structures returned exactly the brute-force sets" if all_exact else "MISMATCH against brute force")
    return 0 if all_exact else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hsrgeom", description=__doc__)
    p.add_argument("--version", action="version", version=f"hsrgeom {hsrgeom.__version__}")
    sub = p.add_subparsers(dest="command")
    d = sub.add_parser("demo", help="build indexes on generated data, check and time them")
    d.add_argument("--n", type=int, default=200_000, help="points per dimension (default 200000)")
    d.add_argument("--dims", default="2,3,8,32,128", help="comma-separated dimensions")
    d.add_argument("--queries", type=int, default=200)
    d.add_argument("--selectivity", type=float, default=1e-3, help="fraction reported per query")
    d.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--distributed", action="store_true", help="a sharded index on a Dask LocalCluster (hsrgeom[distributed])")
    d.add_argument("--shards", type=int, default=16, help="shards of --distributed (default 16)")
    args = p.parse_args(argv)
    if args.command == "demo" and args.distributed:  # needs the distributed extra (dask)
        from hsrgeom.distributed._demo import demo as distributed_demo

        return distributed_demo(args)
    if args.command == "demo":
        return demo(args)
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
