"""Appends points one at a time to a PartitionTree (d = 2) and queries after every `--every`
appends: the growing-index workload of issue 19 (a decode cache, a stream of points).

    python benchmarks/dynamic_append.py [--n 1000000] [--appends 100000] [--every 100] [--threads 1]

n uniform points in the unit square are indexed, then `appends` more are inserted one call
each; after every `every` inserts a batch of 16 half-spaces, each reporting ~100 points, is
answered (report, ids sorted). Prints the build time, the time spent in inserts and in
queries, and a checksum of the answers (the same for any hsrgeom version: compare runs of two
installs on the same arguments). Works with the installed hsrgeom of any version since the
logarithmic method was added (it only uses the public API).
"""
import argparse
import hashlib
import os
import time

import numpy as np

import hsrgeom

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=1_000_000)
p.add_argument("--appends", type=int, default=100_000)
p.add_argument("--every", type=int, default=100)
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
hsrgeom.set_num_threads(args.threads)

rng = np.random.default_rng(0)
pts = rng.random((args.n, 2))
new = rng.random((args.appends, 2))
# 16 directions; offsets at the (1 - 100 / n) quantile of the initial points: ~100 points each
theta = rng.uniform(0, 2 * np.pi, 16)
a = np.stack([np.cos(theta), np.sin(theta)], axis=1)
b = np.quantile(pts @ a.T, 1 - 100 / max(args.n, 100), axis=0)

t = time.perf_counter()
tree = hsrgeom.PartitionTree(pts)
t_build = time.perf_counter() - t

t_insert = t_query = 0.0
reported = 0
digest = hashlib.sha256()
for start in range(0, args.appends, args.every):
    t = time.perf_counter()
    for point in new[start : start + args.every]:
        tree.insert(point)
    t1 = time.perf_counter()
    res = tree.report(a, b)
    t_query += time.perf_counter() - t1
    t_insert += t1 - t
    reported += len(res.ids)
    digest.update(res.lims.tobytes())
    digest.update(res.ids.tobytes())

queries = -(-args.appends // args.every)
load = os.getloadavg()[0]
print(f"hsrgeom {hsrgeom.__version__} ({hsrgeom.__file__})")
print(f"n={args.n} appends={args.appends} every={args.every} threads={args.threads} load(1 min)={load:.1f}")
print(f"build {t_build:.2f} s; inserts {t_insert:.2f} s ({t_insert / args.appends * 1e6:.1f} us each); "
      f"{queries} query batches {t_query:.2f} s ({t_query / queries * 1e3:.3f} ms each, "
      f"{reported / queries / 16:.0f} ids per half-space); total {t_insert + t_query:.2f} s")
print(f"answers sha256 {digest.hexdigest()[:16]}; n after = {len(tree)}")
