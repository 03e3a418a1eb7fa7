"""Appends 10**5 points one by one to a PartitionTree over 10**6 points (d=2) and times it.

    python benchmarks/dynamic_append.py [--n 1000000] [--appends 100000]
"""
import argparse
import time

import numpy as np

import hsrgeom

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=1_000_000)
p.add_argument("--appends", type=int, default=100_000)
args = p.parse_args()
rng = np.random.default_rng(0)
tree = hsrgeom.PartitionTree(rng.random((args.n, 2)))
new = rng.random((args.appends, 2))
t = time.perf_counter()
for point in new:
    tree.insert(point)
total = time.perf_counter() - t
t = time.perf_counter()
res = tree.report(np.array([[1.0, 0.0]]), [0.9999])
print(f"{args.appends} single-point inserts into n={args.n}: {total:.2f} s ({total / args.appends * 1e6:.1f} us each); "
      f"blocks {[b.size for b in tree._dyn.blocks]}; a query afterwards {1e3 * (time.perf_counter() - t):.2f} ms")
