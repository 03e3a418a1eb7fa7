"""Why hsrgeom has no cutting-based structure for d >= 4: the size of the 0-level, measured.

    python benchmarks/cutting_size.py            # ~1 minute; prints the table used in docs/cuttings.md
    (needs scipy, for qhull: pip install scipy)

A shallow cutting for the <= k-level of the dual arrangement (the structure behind the
O(log n + k) half-space reporting bound) has at least as many cells as the 0-level has
features, i.e. as the convex hull of the points has facets (each hull facet is a query half-space
with an empty interior that the cutting must separate from the others). In the worst case that is
Theta(n^floor(d/2)) (the upper bound theorem; attained by cyclic polytopes, points on the
trigonometric moment curve). This script counts hull facets with qhull for such points and for
Gaussian points, fits the exponent, and extrapolates to n = 10^6.
"""
import time

import numpy as np
from scipy.spatial import ConvexHull


def moment_curve(n, d, rng):
    """Points on the trigonometric moment curve (cos t, sin t, cos 2t, sin 2t, ...): a cyclic
    polytope (neighbourly), the worst case of the upper bound theorem. Odd d: an extra t."""
    t = np.sort(rng.random(n)) * 2 * np.pi
    cols = []
    for j in range(1, d // 2 + 1):
        cols += [np.cos(j * t), np.sin(j * t)]
    if d % 2:
        cols.append(t / 10)
    return np.stack(cols, 1)


def main():
    rng = np.random.default_rng(0)
    ns = {3: (400, 800, 1600, 3200), 4: (200, 400, 800, 1200), 5: (100, 200, 400, 600), 6: (50, 100, 150, 200)}
    print("| d | data | n | hull facets | qhull s | fitted exponent | facets extrapolated to n = 10^6 |")
    print("|---|---|---|---|---|---|---|")
    for d, grid in ns.items():
        for name, gen in (("moment curve", moment_curve), ("gaussian", lambda n, d, r: r.standard_normal((n, d)))):
            facets, secs = [], []
            for n in grid:
                t = time.perf_counter()
                facets.append(len(ConvexHull(gen(n, d, rng)).simplices))
                secs.append(time.perf_counter() - t)
            slope, icpt = np.polyfit(np.log(grid), np.log(facets), 1)
            extra = np.exp(icpt + slope * np.log(1e6))
            for i, n in enumerate(grid):
                last = i == len(grid) - 1
                print(f"| {d} | {name} | {n} | {facets[i]} | {secs[i]:.2f} | "
                      f"{f'{slope:.2f}' if last else ''} | {f'{extra:.1e}' if last else ''} |")


if __name__ == "__main__":
    main()
