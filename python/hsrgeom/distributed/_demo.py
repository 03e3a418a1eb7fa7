"""``python -m hsrgeom demo --distributed``: a sharded index over generated data on a
LocalCluster, one batch checked against the local index, with shards visited, time per query
and the per-batch overhead."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

import hsrgeom

from ._index import ShardedIndex


def demo(args) -> int:
    from distributed import Client, LocalCluster

    dtype = np.dtype(args.dtype)
    d = int(args.dims.split(",")[0]) if args.dims else 2
    rng = np.random.default_rng(args.seed)
    n, m, shards = args.n, args.queries, args.shards
    workers = os.cpu_count() or 1
    print(f"hsrgeom {hsrgeom.__version__} distributed demo: n={n} uniform points in [-1,1]^{d}, {dtype.name}, "
          f"{shards} kd shards (PartitionTree each), LocalCluster of {workers} single-threaded worker processes, "
          f"{m} queries reporting ~{args.selectivity:g} of the points each")
    x = rng.uniform(-1, 1, (n, d)).astype(dtype)
    a = rng.standard_normal((m, d))
    a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(dtype)
    b = np.quantile(x[: min(n, 100_000)].astype(np.float64) @ a.T.astype(np.float64), 1 - args.selectivity, axis=0)
    t = time.perf_counter()
    local = hsrgeom.PartitionTree(x)
    t_local_build = time.perf_counter() - t
    t = time.perf_counter()
    ref = local.report(a, b, n_threads=1)
    t_local = time.perf_counter() - t
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client, \
            tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        idx = ShardedIndex.build(x, os.path.join(tmp, "idx"), client=client, partition="kd", shards=shards,
                                 kind="partition_tree")
        t_build = time.perf_counter() - t
        idx.report(a[:1], b[:1])  # warm-up
        t = time.perf_counter()
        res = idx.report(a, b)
        t_batch = time.perf_counter() - t
        st = idx.stats
        ones = []
        for j in range(min(m, 20)):
            t = time.perf_counter()
            idx.report(a[j : j + 1], b[j : j + 1])
            ones.append(time.perf_counter() - t)
        exact = res == ref
        print(f"build: local PartitionTree {t_local_build:.2f} s, sharded {t_build:.2f} s "
              f"(kinds: {sorted({s['kind'] for s in idx.shards})})")
        print(f"batch of {m}: local {t_local / m * 1e3:.4f} ms/query (1 thread), sharded {t_batch / m * 1e3:.4f} "
              f"ms/query; shards visited per query {st.shards_visited.mean():.2f} of {shards} "
              f"({st.shards_visited.mean() / shards:.1%}), {st.tasks} tasks, {st.bytes_moved / 1e6:.2f} MB moved")
        print(f"per-batch overhead (one-query batch, median of {len(ones)}): {np.median(ones) * 1e3:.2f} ms")
        print("the sharded index returned exactly the local index's sets" if exact
              else "MISMATCH against the local index")
        idx.close()
    return 0 if exact else 1
