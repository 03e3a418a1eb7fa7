"""Measurements of hsrgeom.distributed for docs/distributed.md (one run, this machine).

python benchmarks/distributed_bench.py visited            # (1) shards visited vs selectivity, kd vs chunks
python benchmarks/distributed_bench.py overhead           # (2) per-batch overhead vs the local index
python benchmarks/distributed_bench.py recovery           # (3) recovery time after a worker loss vs shard size
python benchmarks/distributed_bench.py build              # sharded build time (kd, chunks) vs the local build
python benchmarks/distributed_bench.py acceptance --n 10000000   # the acceptance run (kd, >= 256 shards)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np

import hsrgeom
from hsrgeom.distributed import ShardedIndex
from hsrgeom.distributed._partition import SKIP, assign_cells, classify, kd_cuts


def load():
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def _queries(x, m, selectivity, rng):
    a = rng.standard_normal((m, x.shape[1]))
    a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(x.dtype)
    rows = min(len(x), 200_000, max(20_000, 25_000_000 // m))  # the (rows, m) scores in <= ~200 MB
    sc = x[:rows].astype(np.float64) @ a.T.astype(np.float64)
    return a, np.quantile(sc, 1 - selectivity, axis=0)


def visited(args):
    """Fraction of the shards a query visits: the boxes a build makes (kd cuts on a sample of
    the build's size, or contiguous chunks), classified by the same rounding-safe test."""
    rng = np.random.default_rng(0)
    S, n = 256, args.n
    print(f"(1) shards visited, n={n} uniform in [-1,1]^d, {S} shards, 200 queries; {load()}")
    print(f"{'d':>3} {'partition':>9} " + " ".join(f"{s:>8g}" for s in args.sel))
    for d in (2, 3, 8, 16):
        x = rng.uniform(-1, 1, (n, d)).astype(np.float32)
        sample = x[np.sort(rng.choice(n, max(20_000, 64 * S), replace=False))]
        for part in ("kd", "chunks"):
            cell = assign_cells(x, kd_cuts(sample, S)) if part == "kd" else (np.arange(n) * S) // n
            lo = np.array([x[cell == s].min(axis=0) for s in range(S)], dtype=np.float64)
            hi = np.array([x[cell == s].max(axis=0) for s in range(S)], dtype=np.float64)
            row = []
            for sel in args.sel:
                a, b = _queries(x, 200, sel, rng)
                st = classify(a, b, lo, hi, np.ones(S, bool))
                row.append((st != SKIP).mean())
            print(f"{d:>3} {part:>9} " + " ".join(f"{v:>8.3f}" for v in row))


def _cluster(workers):
    from distributed import Client, LocalCluster

    cl = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50)
    return cl, Client(cl)


def _best(f, reps=3):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def _disk(n, rng):
    """n uniform points in the unit disk: ~100-point caps lie all around its boundary, so a
    batch's queries visit many different shards (on a square they crowd into the corners)."""
    r, t = np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1).astype(np.float32)


def overhead(args):
    """(2) per-batch cost, with the shards of a worker queried by one task per worker thread
    (grouped, the default) and by one task per visited shard (per shard), in the same run."""
    from hsrgeom.distributed import _index

    rng = np.random.default_rng(1)
    n, S = args.n, args.shards
    cl, c = _cluster(2)
    print(f"(2) per-batch cost, n={n} d=2 float32, {S} kd shards (PartitionTree), LocalCluster 2x1 thread; "
          f"local PartitionTree 1 thread; ~100 points per query; best of {args.reps}; {load()}")
    print(f"{'data':>6} {'m':>6} {'local ms':>10} {'grouped ms':>11} {'tasks':>6} {'per-shard ms':>13} {'tasks':>6} "
          f"{'shards/query':>13}")
    for data in args.data:
        x = rng.uniform(-1, 1, (n, 2)).astype(np.float32) if data == "square" else _disk(n, rng)
        local = hsrgeom.PartitionTree(x)
        with tempfile.TemporaryDirectory() as tmp:
            idx = ShardedIndex.build(x, os.path.join(tmp, "i"), client=c, shards=S, partition="kd",
                                     kind="partition_tree")
            idx.report(x[:1], [10.0])
            for m in args.m:
                a, b = _queries(x, m, 100 / n, rng)
                tl, rl = _best(lambda: local.report(a, b, n_threads=1), args.reps)
                row = []
                for grouped in (True, False):
                    _index.ShardedIndex._group_by_worker = grouped
                    ts, rs = _best(lambda: idx.report(a, b), args.reps)
                    assert rs == rl
                    row += [ts, idx.stats.tasks]
                _index.ShardedIndex._group_by_worker = True
                st = idx.stats
                print(f"{data:>6} {m:>6} {tl * 1e3:>10.2f} {row[0] * 1e3:>11.2f} {row[1]:>6} {row[2] * 1e3:>13.2f} "
                      f"{row[3]:>6} {st.shards_visited.mean():>13.2f}")
            idx.close()
    c.close()
    cl.close()


def build(args):
    """Sharded build time (numpy input, PartitionTree shards) against one local build: with a
    shard built once, a build costs the local build plus the kd shuffle and Dask round trips."""
    rng = np.random.default_rng(4)
    n, S = args.n, args.shards
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    t_local, _ = _best(lambda: hsrgeom.PartitionTree(x), args.reps)
    cl, c = _cluster(2)
    print(f"build: n={n} d=2 float32, {S} shards (PartitionTree), LocalCluster 2x1 thread, best of {args.reps}; "
          f"local PartitionTree {t_local:.2f} s (1 process); {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("kd", "chunks"):
            runs = iter(range(100))
            t, _ = _best(lambda: ShardedIndex.build(x, os.path.join(tmp, f"{part}{next(runs)}"), client=c, shards=S,
                                                    partition=part, kind="partition_tree").close(), args.reps)
            print(f"  {part:>6}: {t:.2f} s")
    c.close()
    cl.close()


def recovery(args):
    rng = np.random.default_rng(2)
    cl, c = _cluster(2)
    print(f"(3) recovery after a worker loss (all of its shards reloaded from their files), d=2 float32, "
          f"PartitionTree shards; {load()}")
    print(f"{'n':>9} {'shards':>6} {'shard size':>10} {'lost':>5} {'recovery s':>11}")
    for n, S in ((args.n, 20), (args.n, 4)):
        x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        a, b = _queries(x, 50, 1e-3, rng)
        with tempfile.TemporaryDirectory() as tmp:
            idx = ShardedIndex.build(x, os.path.join(tmp, "i"), client=c, shards=S, partition="kd",
                                     kind="partition_tree")
            ref = idx.report(a, b)
            w = idx.shards[0]["workers"][0]
            lost = sum(w in s["workers"] for s in idx.shards)
            t = time.perf_counter()
            try:
                c.run(os._exit, 1, workers=[w])
            except Exception:  # noqa: BLE001
                pass
            r = idx.report(a, b)
            dt = time.perf_counter() - t
            assert r == ref
            print(f"{n:>9} {S:>6} {n // S:>10} {lost:>5} {dt:>11.2f}")
            idx.close()
            c.wait_for_workers(2, timeout=120)
    c.close()
    cl.close()


def acceptance(args):
    rng = np.random.default_rng(3)
    n, S, m = args.n, 256, 200
    tmp = tempfile.mkdtemp(dir=args.tmp)
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    np.save(os.path.join(tmp, "x.npy"), x)
    a, _ = _queries(x[:1000], m, 0.5, rng)
    t = time.perf_counter()
    local = hsrgeom.BruteForce(x)
    b = local.topk(a, 100)[0][:, -1]  # offsets at the 100th best score: ~100 points per query
    ref = local.report(a, b)
    t_scan = time.perf_counter() - t
    t = time.perf_counter()
    tree = hsrgeom.PartitionTree(x)
    tb_tree = time.perf_counter() - t
    t_tree, rt = _best(lambda: tree.report(a, b, n_threads=1))
    assert rt == ref
    tree = None  # free its memory before the cluster starts
    cl, c = _cluster(2)
    t = time.perf_counter()
    idx = ShardedIndex.build(os.path.join(tmp, "x.npy"), os.path.join(tmp, "idx"), client=c, shards=S,
                             partition="kd", kind="partition_tree")
    t_build = time.perf_counter() - t
    idx.report(a[:2], b[:2])
    from distributed import get_task_stream

    with get_task_stream(client=c) as ts:
        t_sh, rs = _best(lambda: idx.report(a, b))
    st = idx.stats
    print(f"acceptance: n={n} d=2 float32 uniform, {S} kd shards (PartitionTree), LocalCluster 2x1 thread, "
          f"{m} queries, {np.diff(ref.lims).mean():.1f} points per query; {load()}")
    print(f"  exact vs local scan: {rs == ref}; shards visited per query {st.shards_visited.mean():.2f} "
          f"({st.shards_visited.mean() / S:.2%}); tasks {st.tasks}")
    print(f"  build: sharded {t_build:.1f} s (from .npy), local PartitionTree {tb_tree:.1f} s")
    print(f"  per query: sharded {t_sh / m * 1e3:.3f} ms, local PartitionTree 1 thread {t_tree / m * 1e3:.4f} ms, "
          f"local scan (all threads) {t_scan / m * 1e3:.3f} ms (incl. its build and a topk for the offsets)")
    durs = [sum(s["stop"] - s["start"] for s in t_["startstops"] if s["action"] == "compute") for t_ in ts.data]
    per_batch = len(durs) / 3  # best of 3 batches were recorded
    print(f"  task stream: {len(durs)} tasks in 3 batches, compute per task median {np.median(durs) * 1e3:.2f} ms, "
          f"max {max(durs) * 1e3:.2f} ms; wall per batch {t_sh * 1e3:.1f} ms")
    simulate(np.array(durs), st.shards_visited.mean(), n // S, m, t_sh, per_batch, rng)
    res = []
    th = threading.Thread(target=lambda: res.append(idx.report(a, b)))
    th.start()
    time.sleep(0.05)
    w = idx.shards[0]["workers"][0]
    try:
        c.run(os._exit, 1, workers=[w])
    except Exception:  # noqa: BLE001
        pass
    th.join()
    print(f"  a worker killed during the batch: identical answer {res[0] == ref}")
    idx.close()
    c.close()
    cl.close()


def simulate(durs, visited, shard_size, m, wall, tasks_per_batch, rng):
    """(4) Scaling simulation: the recorded per-task compute times replayed on P virtual
    workers by list scheduling (each task to the least loaded worker). At N points with the
    same shard size there are N / shard_size shards; a batch of m queries at this output size
    visits ~``visited`` shards per query, so it runs min(m * visited, shards) tasks, each drawn
    from the recorded times (per-shard work depends on the shard size and the output, both
    kept). The client and scheduler cost per task (wall - compute, measured here) is added
    as a serial term: Dask's scheduler handles tasks one at a time."""
    import heapq

    serial = max(0.0, wall - durs.sum() / 3) / max(1.0, tasks_per_batch)
    print(f"  (4) simulation: shard size {shard_size}, {visited:.2f} shards per query, serial cost per task "
          f"{serial * 1e3:.2f} ms (measured: wall minus compute)")
    print(f"  {'N':>8} {'shards':>9} {'P':>5} {'tasks':>6} {'makespan ms':>12} {'imbalance':>10} {'queries/s':>10}")
    for N in (1e9, 1e10, 1e11):
        S = int(N // shard_size)
        k = int(min(S, round(m * visited)))
        for P in (8, 64, 1024):
            t = rng.choice(durs, k)
            loads = [0.0] * P
            heapq.heapify(loads)
            for x in sorted(t, reverse=True):
                heapq.heappush(loads, heapq.heappop(loads) + x)
            mk = max(loads)
            imb = mk / (sum(loads) / P)
            total = mk + serial * k
            print(f"  {N:>8.0e} {S:>9} {P:>5} {k:>6} {total * 1e3:>12.1f} {imb:>10.2f} {m / total:>10.0f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["visited", "overhead", "recovery", "acceptance", "build"])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--tmp", default=None, help="directory for the acceptance run's files")
    p.add_argument("--sel", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 0.1, 0.5])
    p.add_argument("--m", type=int, nargs="+", default=[1, 100, 10_000], help="overhead: queries per batch")
    p.add_argument("--shards", type=int, default=64, help="overhead: number of kd shards")
    p.add_argument("--reps", type=int, default=3, help="overhead: best of this many batches")
    p.add_argument("--data", nargs="+", default=["square", "disk"], choices=["square", "disk"],
                   help="overhead: uniform in [-1,1]^2, or in the unit disk (caps spread over many shards)")
    args = p.parse_args(argv)
    defaults = {"visited": 200_000, "overhead": 1_000_000, "recovery": 2_000_000, "acceptance": 10_000_000,
                "build": 2_000_000}
    args.n = args.n or defaults[args.what]
    {"visited": visited, "overhead": overhead, "recovery": recovery, "acceptance": acceptance,
     "build": build}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
