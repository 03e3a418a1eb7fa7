"""ConvexLayers3 (d = 3) measured: layers, build time, work and time per query vs BruteForce and
PartitionTree, at ~K = 100 points reported per query.

    python benchmarks/layers3.py                    # n = 10^4, 10^5, 10^6; writes docs/layers3.md
    python benchmarks/layers3.py --max-n 100000     # quicker (no file written unless --write)
    python benchmarks/layers3.py --max-layers 64    # another layer cap
    python benchmarks/layers3.py --output-sizes     # uniform, n = 10^5 and 10^6, K = 10 .. 10^4

Per distribution (uniform in the unit cube, standard gaussian) and n: build time of each
structure (ConvexLayers3 peels sequentially; its core tree and the PartitionTree use the default
threads), number of layers and points left in the core, then M queries with random unit normals
and offsets at the (1 - K/n) quantile of the projections: mean points tested and nodes visited
(ConvexLayers3: walk positions, at least one per layer reached), and time per query in a batch
with 1 thread and with the default threads (best of 3).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import hsrgeom

K = 100
M = 400


def timed(f, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def run(max_n, max_layers, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for dist in ("uniform", "gaussian"):
        n = 10_000
        while n <= max_n:
            x = rng.random((n, 3)) if dist == "uniform" else rng.standard_normal((n, 3))
            a = rng.standard_normal((M, 3))
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            b = np.quantile(x @ a.T, 1 - K / n, axis=0)
            builds = {
                "ConvexLayers3": lambda: hsrgeom.ConvexLayers3(x, max_layers=max_layers),
                "PartitionTree": lambda: hsrgeom.PartitionTree(x),
                "BruteForce": lambda: hsrgeom.BruteForce(x),
            }
            expected = None
            for name, build in builds.items():
                t = time.perf_counter()
                index = build()
                t_build = time.perf_counter() - t
                res = index.report(a, b)  # warm-up, and the check
                expected = res if expected is None else expected
                assert res == expected, f"{name} differs from ConvexLayers3"
                st = index.stats.mean()
                t1 = timed(lambda: index.report(a, b, n_threads=1)) / M
                tdef = timed(lambda: index.report(a, b)) / M
                row = dict(dist=dist, n=n, name=name, build=t_build, tested=st["points_tested"],
                           nodes=st["nodes_visited"], reported=st["points_reported"], t1=t1, tdef=tdef,
                           layers=getattr(index, "layers", ""), core=getattr(index, "core_size", ""))
                rows.append(row)
                print(f"{dist:8s} n={n:>8d} {name:14s} build {t_build:7.2f} s  layers {row['layers']!s:>4s} "
                      f"core {row['core']!s:>7s}  tested {st['points_tested']:9.0f}  nodes {st['nodes_visited']:7.1f}  "
                      f"reported {st['points_reported']:6.1f}  {t1 * 1e3:8.4f} ms/q (1 thr)  {tdef * 1e3:8.4f} ms/q "
                      f"({hsrgeom.get_num_threads()} thr)", flush=True)
            n *= 10
    return rows


def output_sizes(max_layers, seed=0):
    """Points tested, nodes and time per query (1 thread) vs the output size K."""
    rng = np.random.default_rng(seed)
    for n in (10**5, 10**6):
        x = rng.random((n, 3))
        t = time.perf_counter()
        cl = hsrgeom.ConvexLayers3(x, max_layers=max_layers)
        print(f"{cl!r}, build {time.perf_counter() - t:.1f} s; PartitionTree memory "
              f"{hsrgeom.PartitionTree(x).memory_bytes / 2**20:.1f} MiB")
        pt = hsrgeom.PartitionTree(x)
        a = rng.standard_normal((200, 3))
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        for k in (10, 100, 1000, 10000):
            b = np.quantile(x @ a.T, 1 - k / n, axis=0)
            cells = []
            for index in (cl, pt):
                index.report(a, b, n_threads=1)
                dt = timed(lambda: index.report(a, b, n_threads=1)) / len(a)
                st = index.stats.mean()
                cells.append(f"{st['points_tested']:.0f} / {st['nodes_visited']:.1f} / {dt * 1e3:.4f}")
            print(f"| 10^{int(np.log10(n))} | {k} | {cells[0]} | {cells[1]} |", flush=True)


def markdown(rows, cmd, max_layers):
    out = [
        "| data | n | structure | build s | layers | core | points tested / q | nodes / q | reported / q | ms/q 1 thread | ms/q default |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['dist']} | {r['n']:,} | {r['name']} | {r['build']:.2f} | {r['layers']} | {r['core']} | "
            f"{r['tested']:.0f} | {r['nodes']:.1f} | {r['reported']:.1f} | {r['t1'] * 1e3:.4f} | {r['tdef'] * 1e3:.4f} |"
        )
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-n", type=int, default=1_000_000)
    ap.add_argument("--max-layers", type=int, default=256)
    ap.add_argument("--write", action="store_true", help="write the table even with --max-n")
    ap.add_argument("--output-sizes", action="store_true", help="only the table vs output size K")
    args = ap.parse_args()
    if args.output_sizes:
        return output_sizes(args.max_layers)
    rows = run(args.max_n, args.max_layers)
    if args.max_n >= 1_000_000 or args.write:
        path = os.path.join(os.path.dirname(__file__), "..", "docs", "layers3-table.md")  # pasted into docs/layers3.md
        cmd = "python " + " ".join(["benchmarks/layers3.py"] + sys.argv[1:])
        with open(path, "w") as f:
            f.write(f"<!-- generated by `{cmd}` ({os.cpu_count()} cores, default threads "
                    f"{hsrgeom.get_num_threads()}) -->\n\n")
            f.write(markdown(rows, cmd, args.max_layers) + "\n")
        print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
