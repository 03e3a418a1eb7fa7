"""Re-measure cells of docs/complexity.md's auto table in isolation: auto's index against a
separate build of the structure auto chose, timed alternately on the same queries.

    python benchmarks/auto_cells.py --cells clustered:8:3162278,uniform:4:3162278

Within the 40-minute complexity run, timings of identical builds drift by up to ~50 %; a cell
where auto's choice is the fastest row's own structure yet its ratio is above 1 is checked here.
Same data and queries as benchmarks/complexity.py for that cell.
"""
import argparse

import numpy as np

import hsrgeom
from complexity import CHOICE, STRUCTURES, data, measure

DISTS = ["uniform", "gaussian", "clustered"]  # complexity.py's default order (its query seeds)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", required=True, help="dist:d:n,... e.g. clustered:8:3162278")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--queries", type=int, default=200)
    args = p.parse_args()
    for cell in args.cells.split(","):
        dist, d, n = cell.split(":")
        d, n = int(d), int(n)
        x = data(dist, n, d, np.random.default_rng(n + d))
        auto = STRUCTURES["auto"][0](x)
        chosen = auto.reason.rsplit("-> ", 1)[-1].split(";")[0] if "-> " in auto.reason else auto.kind
        name = CHOICE[chosen]
        other = STRUCTURES[name][0](x)
        print(f"{dist} d={d} n={n}: auto -> {chosen}; against a separate {name}", flush=True)
        seed = (DISTS.index(dist), d, n)
        for r in range(args.repeat):
            ta = measure(auto, x, args.queries, np.random.default_rng(seed))["us"]
            to = measure(other, x, args.queries, np.random.default_rng(seed))["us"]
            print(f"  auto {ta:.2f} us, {name} {to:.2f} us, ratio {ta / to:.2f}", flush=True)
        del auto, other


if __name__ == "__main__":
    main()
