"""n = 10^8: build time, memory and query time at the top of the brief's range, with every
answer checked against the scan. Writes docs/large_n.md (and prints it).

    python benchmarks/large_n.py                       # n = 10^8, d = 2 and 3 (~10 min, ~8 GB)
    python benchmarks/large_n.py --n 10000000 --out -  # a quicker look, printed only

Points: uniform in [0, 1]^d, float32, generated in chunks. Queries: m = 200 random unit normals,
offsets at the rank of ~`reported` points (quantiles of a 10^6-point sample, so the counts vary
around it). Per structure: build seconds, `memory_bytes`, best-of-3 batch time per query for
`report` (sorted ids) and `count`; the peak resident memory of the process is printed at the end.
Every structure's `report` is compared id for id with `BruteForce`'s (which the test suite checks
against exact arithmetic); any difference is printed and makes the script exit with status 1.
"""
import argparse
import os
import platform
import resource
import sys
import time

import numpy as np

import hsrgeom


def best_of(f, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def uniform(n, d, seed):
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 22):
        x[s : s + (1 << 22)] = rng.random((min(1 << 22, n - s), d), dtype=np.float32)
    return x


def queries(x, m, reported, rng):
    d = x.shape[1]
    a = rng.standard_normal((m, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    a = a.astype(np.float32)
    sample = x[rng.choice(len(x), size=min(len(x), 10**6), replace=False)].astype(np.float64)
    return a, np.quantile(sample @ a.T.astype(np.float64), 1 - reported / len(x), axis=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10**8)
    ap.add_argument("--dims", default="2,3")
    ap.add_argument("--reported", type=int, default=100)
    ap.add_argument("--m", type=int, default=200)
    ap.add_argument("--out", default="docs/large_n.md", help="markdown file, or - to print only")
    args = ap.parse_args(argv)
    t_start = time.time()
    rows, log, bad = [], [], 0
    for d in [int(s) for s in args.dims.split(",")]:
        x = uniform(args.n, d, seed=d)
        a, b = queries(x, args.m, args.reported, np.random.default_rng(100 + d))
        ref = None
        for name, make in [("BruteForce", lambda: hsrgeom.BruteForce(x)),
                           ("PartitionTree", lambda: hsrgeom.PartitionTree(x)),
                           ("auto", lambda: hsrgeom.build_index(x, batch_size=args.m, output_size=args.reported))]:
            t0 = time.perf_counter()
            index = make()
            build = time.perf_counter() - t0
            t_rep, res = best_of(lambda: index.report(a, b))
            t_cnt, _ = best_of(lambda: index.count(a, b))
            if ref is None:
                ref = res
            diff = sum(not np.array_equal(res[j], ref[j]) for j in range(args.m))
            bad += diff
            label = name if name != "auto" else f"auto ({index.kind})"
            rows.append((d, label, build, index.memory_bytes / 2**30, t_rep / args.m * 1e3, t_cnt / args.m * 1e3,
                         float(np.mean(res.counts)), diff))
            line = (f"d={d} {label:28s} build {build:7.1f} s  memory {index.memory_bytes / 2**30:5.2f} GiB  "
                    f"report {t_rep / args.m * 1e3:.4f} ms/query  count {t_cnt / args.m * 1e3:.4f}  "
                    f"mean reported {np.mean(res.counts):.0f}  queries differing from BruteForce: {diff}")
            print(line, flush=True)
            log.append(line)
            del index
        del x
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    minutes = (time.time() - t_start) / 60
    cmd = " ".join(["python benchmarks/large_n.py", *(sys.argv[1:] if argv is None else argv)])
    md = [f"# n = {args.n:,}: build, memory and queries at the top of the range", "",
          f"Command: `{cmd}` — took {minutes:.1f} min, peak resident memory {peak:.1f} GiB. "
          f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; hsrgeom "
          f"{hsrgeom.__version__}; {time.strftime('%Y-%m-%d')}. (benchmarks/large_n.py's docstring has the details.)", "",
          f"Uniform float32 points in [0, 1]^d; m = {args.m} queries per batch, ~{args.reported} reported each; "
          "ms / query = best of 3 batch times / m, 2 threads. *differing* = queries whose ids differ from BruteForce's.", "",
          "| d | structure | build s | memory GiB | report ms / query | count ms / query | mean reported | differing |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {d} | {s} | {bt:.1f} | {mem:.2f} | {r:.4g} | {c:.4g} | {k:.0f} | {df} |" for d, s, bt, mem, r, c, k, df in rows]
    md += ["", "```", *log, "```", ""]
    text = "\n".join(md)
    print(text)
    if args.out != "-":
        with open(args.out, "w") as f:
            f.write(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
