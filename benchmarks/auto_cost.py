"""auto's whole build (probe included) against the builds of the structures it chooses from, on
uniform float32 points (issue 20's goal: auto <= 2x its choice's build + 0.5 s).

    python benchmarks/auto_cost.py --n 1e6 --d 16 --output-size 1000
    python benchmarks/auto_cost.py --n 1e6 --d 3 --kinds brute_force,shallow_cutting3,auto
"""
import argparse
import time

import numpy as np

import hsrgeom


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--output-size", type=int, default=None, help="auto's output_size (default: none given)")
    p.add_argument("--kinds", default="brute_force,partition_tree,auto")
    args = p.parse_args()
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
