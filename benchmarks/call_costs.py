"""Query kernels and per-call costs of the installed hsrgeom, one thread, best of 7 (best of 9 x
2000 calls for the one-query calls). For A/B comparisons, run it with two installs in turn
(e.g. a venv of the previous commit and one of this one), alternating, nothing else running:

    python benchmarks/call_costs.py            # prints one line per case (microseconds per call)
"""
import time

import numpy as np

import hsrgeom


def offsets(x, a, k):
    s = x[:200_000].astype(np.float64) @ a.T.astype(np.float64)
    return np.quantile(s, 1 - k / len(x), axis=0)


def best(f, repeat=7, number=1):
    f()
    t_best = 1e9
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            f()
        t_best = min(t_best, (time.perf_counter() - t) / number)
    return t_best


def main():
    hsrgeom.set_num_threads(1)
    rng = np.random.default_rng(0)
    x2 = rng.random((1_000_000, 2))
    a2 = rng.standard_normal((200, 2))
    b2 = offsets(x2, a2, 100)
    cl, pt2 = hsrgeom.ConvexLayers(x2), hsrgeom.PartitionTree(x2)
    x3 = rng.random((1_000_000, 3))
    a3 = rng.standard_normal((200, 3))
    b3 = offsets(x3, a3, 100)
    sc, pt3 = hsrgeom.ShallowCutting3(x3), hsrgeom.PartitionTree(x3)
    x64 = rng.standard_normal((200_000, 64)).astype(np.float32)
    a64 = rng.standard_normal((16, 64)).astype(np.float32)
    b64 = offsets(x64, a64, 100)
    bf, qs = hsrgeom.BruteForce(x64), hsrgeom.QuantizedScan(x64)
    small = hsrgeom.PartitionTree(rng.random((1000, 3)))
    one_a, one_b = rng.standard_normal((1, 3)), np.array([5.0])
    batches = [
        ("ConvexLayers d=2 report unsorted, 200 q", lambda: cl.report(a2, b2, return_sorted=False)),
        ("PartitionTree d=2 report, 200 q", lambda: pt2.report(a2, b2)),
        ("ConvexLayers d=2 topk 10, 200 q", lambda: cl.topk(a2, 10)),
        ("ShallowCutting3 report unsorted, 200 q", lambda: sc.report(a3, b3, return_sorted=False)),
        ("PartitionTree d=3 count, 200 q", lambda: pt3.count(a3, b3)),
        ("PartitionTree d=3 sum power 2, 200 q", lambda: pt3.sum(a3, b3, power=2)),
        ("BruteForce d=64 count, 16 q", lambda: bf.count(a64, b64)),
        ("QuantizedScan d=64 report, 1 q", lambda: qs.report(a64[:1], b64[:1])),
        ("BruteForce d=64 topk 10, 16 q", lambda: bf.topk(a64, 10)),
    ]
    for name, f in batches:
        print(f"{name:42s} {best(f) * 1e6:10.1f} us")
    calls = [
        ("one-query count (n=1000, d=3)", lambda: small.count(one_a, one_b)),
        ("one-query report unsorted (ShallowCutting3)", lambda: sc.report(one_a, one_b, return_sorted=False)),
    ]
    for name, f in calls:
        print(f"{name:42s} {best(f, 9, 2000) * 1e6:10.2f} us")


if __name__ == "__main__":
    main()
