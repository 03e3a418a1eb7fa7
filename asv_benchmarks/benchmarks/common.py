"""Shared data and index helpers of the asv suites (public API of hsrgeom only).

Data are seeded, so every commit benchmarks the same points and queries. asv runs every
parameter combination of every benchmark in a fresh process, whose ``setup`` builds its index:
the cost of a whole ``asv run --quick`` is mostly these builds, which is why the parameter grids
are small and n = 10^6 is kept to few classes. (Loading a saved index costs about as much as
building it, so ``setup_cache`` would not help.)
"""
import numpy as np

import hsrgeom

#: structures for one dimension only (the others take any d)
ONLY_DIM = {"convex_layers": 2, "convex_layers3": 3, "shallow_cutting3": 3}
#: the points per query of the output-size parameter
OUTPUT_SIZES = [100, 1_000, 10_000]

_points = {}


def supported(structure, d, n, big=("brute_force", "partition_tree", "shallow_cutting3")):
    """Whether a (structure, d, n) combination is benchmarked: the structure exists in d, and
    above 10^5 points only the structures whose build takes a few seconds here (the whole
    suite runs in minutes with ``asv run --quick``)."""
    if ONLY_DIM.get(structure, d) != d:
        return False
    if structure == "quantized_scan" and d < 16:  # a scan of 8-bit codes is for high d
        return False
    if structure == "simplicial" and (n > 10**5 or d > 8):
        return False
    if n * d > 2 * 10**7:  # memory: at most 160 MB of float64 points
        return False
    return n <= 10**5 or structure in big


def skip_unless(structure, d, n):
    """Raise NotImplementedError (asv's "skipped") for an unsupported combination."""
    if not supported(structure, d, n):
        raise NotImplementedError


def points(n, d, dtype=np.float64):
    """n uniform points in [-1, 1]^d, seeded by (n, d); read-only (memoised: a setup asks for
    them twice, for the index and for the queries; copy before changing them)."""
    key = (n, d, np.dtype(dtype).name)
    if key not in _points:
        _points.clear()
        x = np.random.default_rng(d * 7 + n).uniform(-1, 1, (n, d)).astype(dtype)
        x.flags.writeable = False
        _points[key] = x
    return _points[key]


def index(structure, d, n, dtype=np.float64, output_size=None, batch_size=None):
    """The index ``build_index(points(n, d, dtype), kind=structure)``. For ``"auto"``, the output
    size and batch size the benchmark asks are passed on (auto's timed choice depends on them:
    ``build_index(kind="auto", output_size=..., batch_size=...)``); the structures ignore them."""
    if structure != "auto":
        return hsrgeom.build_index(points(n, d, dtype), kind=structure)
    return hsrgeom.build_index(points(n, d, dtype), kind=structure, output_size=output_size,
                               batch_size=batch_size)


def halfspaces(x, m, output_size, seed=1):
    """m random unit normals and offsets such that each half-space holds ``output_size`` of x
    (the output_size-th largest <a, x>; ties in the data may add a few)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, x.shape[1]))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    proj = x.astype(np.float64) @ a.T
    k = min(output_size, len(x))
    b = -np.partition(-proj, k - 1, axis=0)[k - 1]
    return a, b
