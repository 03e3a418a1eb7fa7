"""auto's whole build (probe included) against the builds of the structures it chooses from, on
uniform float32 points (issue 20's goal: auto <= 2x its choice's build + 0.5 s).

    python benchmarks/auto_cost.py --n 1e6 --d 16 --output-size 1000
    python benchmarks/auto_cost.py --n 1e6 --d 3 --kinds brute_force,shallow_cutting3,auto
    python benchmarks/auto_cost.py --cells uniform:2:10000,gaussian:8:1000,uniform:16:100

--cells dist:d:k,...: per cell (uniform, gaussian or clustered float32 points), the best of two
``build_index(x, output_size=k, batch_size=200)`` in one process (the first also pays this
machine's first touch of fresh memory), then the chosen structure built alone with the same
parameters, and whether auto is within 2x that + 0.5 s.
"""
import argparse
import time

import numpy as np

import hsrgeom


def data(dist, n, d):
    rng = np.random.default_rng(0)
    if dist == "uniform":
        return rng.random((n, d), dtype=np.float32)
    if dist == "gaussian":
        return rng.standard_normal((n, d)).astype(np.float32)
    centres = rng.random((50, d))
    return (centres[rng.integers(0, 50, n)] + 0.02 * rng.standard_normal((n, d))).astype(np.float32)


def cells(spec, n):
    for cell in spec.split(","):
        dist, d, k = cell.split(":")
        x = data(dist, n, int(d))
        times = []
        for _ in range(2):
            t = time.perf_counter()
            idx = hsrgeom.build_index(x, output_size=int(k), batch_size=200)
            times.append(time.perf_counter() - t)
        prm = idx._params() if hasattr(idx, "_params") else {}
        t = time.perf_counter()
        type(idx)(x, **prm)
        alone = time.perf_counter() - t
        bound = 2 * alone + 0.5
        print(f"{dist} d={d} k={k}: auto {min(times):.2f} s, chose {idx.kind} {prm} build {alone:.2f} s, "
              f"2x + 0.5 s = {bound:.2f} s {'met' if min(times) <= bound else 'NOT met'}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--output-size", type=int, default=None, help="auto's output_size (default: none given)")
    p.add_argument("--kinds", default="brute_force,partition_tree,auto")
    p.add_argument("--cells", default=None, metavar="DIST:D:K,...", help="auto's build against its choice's, per cell")
    args = p.parse_args()
    if args.cells:
        return cells(args.cells, int(args.n))
    x = np.random.default_rng(0).random((int(args.n), args.d), dtype=np.float32)
    for kind in args.kinds.split(","):
        extra = {"output_size": args.output_size} if kind == "auto" else {}
        t = time.perf_counter()
        idx = hsrgeom.build_index(x, kind=kind, **extra)
        print(f"{kind:18s} {time.perf_counter() - t:6.2f} s -> {type(idx).__name__}")
        if kind == "auto":
            print(f"    {idx.reason}")


if __name__ == "__main__":
    main()
