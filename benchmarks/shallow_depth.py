"""ShallowCutting3's depth against its memory: ns per reported id at a few output sizes for a
few (max_depth, max_candidates) settings, with the PartitionTree as the reference (d = 3).

    python benchmarks/shallow_depth.py                       # n = 10^6, uniform and gaussian
    python benchmarks/shallow_depth.py --n 1e7 --settings 1024:2,4096:10 --reported 1000

Each setting is "max_depth:c" with max_candidates = c n. Queries: 200 random unit normals
(float32) with offsets leaving ~k points inside; one thread; the best of 3 calls. Columns: the
depth the levels reach (the candidate budget may stop them before max_depth), memory, build
time, and per output size ns per reported id unsorted / sorted with the counters that explain
them (nodes visited: ~5 when the cutting answers, hundreds when its tree does; points tested per
reported point). Results: docs/performance.md, "d = 3 at 1,000 outputs".
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import hsrgeom
from hsrgeom import _auto


def timed(idx, a, b, sorted_ids):
    idx.report(a, b, n_threads=1, return_sorted=sorted_ids)  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        idx.report(a, b, n_threads=1, return_sorted=sorted_ids)
        best = min(best, time.perf_counter() - t)
    return best / len(a)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e6)
    ap.add_argument("--dists", default="uniform,gaussian")
    ap.add_argument("--settings", default="1024:2,4096:10,6144:14", help="max_depth:c,... (max_candidates = c n)")
    ap.add_argument("--reported", default="1000,3000")
    args = ap.parse_args(argv)
    n = int(args.n)
    ks = [int(k) for k in args.reported.split(",")]
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",")]
    rng = np.random.default_rng(0)
    print(f"`python benchmarks/shallow_depth.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
          f" (n = {n}, load {os.getloadavg()[0]:.2f})\n")
    head = "| data | structure | levels reach | memory | build |" + "".join(
        f" k = {k}: unsorted / sorted ns/id (nodes, tested/reported) |" for k in ks)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for dist in args.dists.split(","):
        x = (rng.random((n, 3)) if dist == "uniform" else rng.standard_normal((n, 3))).astype(np.float32)
        a = rng.standard_normal((200, 3))
        a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
        bs = {k: _auto._probe_offsets(x, a, k).astype(np.float32) for k in ks}
        builds = [("PartitionTree", lambda: hsrgeom.PartitionTree(x))] + [
            (f"ShallowCutting3({d}, {c} n)",
             lambda d=d, c=c: hsrgeom.ShallowCutting3(x, max_depth=d, max_candidates=c * n))
            for d, c in settings]
        for name, build in builds:
            t = time.perf_counter()
            idx = build()
            tb = time.perf_counter() - t
            depth = str(idx._impl.max_depth) if hasattr(idx._impl, "max_depth") else "-"
            cells = []
            for k in ks:
                tu = timed(idx, a, bs[k], False)
                st = idx.stats
                rep = st.points_reported.mean()
                ts = timed(idx, a, bs[k], True)
                cells.append(f" {tu / rep * 1e9:.1f} / {ts / rep * 1e9:.1f} ({st.nodes_visited.mean():.0f}, "
                             f"{st.points_tested.mean() / rep:.2f}) |")
            print(f"| {dist} | {name} | {depth} | {idx.memory_bytes / 2**20:.0f} MiB | {tb:.2f} s |" + "".join(cells),
                  flush=True)
            del idx


if __name__ == "__main__":
    main()
