"""asv benchmarks: build, report, top-k, memory and cost counters per structure."""
import numpy as np

import hsrgeom

STRUCTURES = ["brute_force", "quantized_scan", "partition_tree", "simplicial", "convex_layers", "convex_layers3",
              "shallow_cutting3", "auto"]
DIMS = [2, 3, 8, 32, 128]
SIZES = [10**4, 10**5, 10**6]
SELECTIVITY = [1e-4, 1e-2]


def _too_big(structure, d, n):
    # structures for one dimension only; keep a full run in minutes: large n only where it says something
    if structure == "convex_layers" and d != 2 or structure in ("convex_layers3", "shallow_cutting3") and d != 3:
        return True
    if structure == "simplicial" and (n > 10**5 or d > 8) or structure == "quantized_scan" and d < 32:
        return True
    return n == 10**6 and d > 8 and structure == "partition_tree"


def _data(d, n):
    return np.random.default_rng(d * 7 + n).uniform(-1, 1, (n, d))


def _queries(x, m, frac):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, x.shape[1]))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    proj = x[:100_000] @ a.T
    return a, np.quantile(proj, 1 - frac, axis=0)


def _build(structure, x):
    return hsrgeom.build_index(x, kind=structure)


class Build:
    params = (STRUCTURES, DIMS, SIZES)
    param_names = ["structure", "d", "n"]
    timeout = 300

    def setup(self, structure, d, n):
        if _too_big(structure, d, n):
            raise NotImplementedError
        self.x = _data(d, n)

    def time_build(self, structure, d, n):
        _build(structure, self.x)

    def peakmem_build(self, structure, d, n):
        _build(structure, self.x)


class Query:
    params = (STRUCTURES, DIMS, SIZES, SELECTIVITY)
    param_names = ["structure", "d", "n", "selectivity"]
    timeout = 300

    def setup(self, structure, d, n, selectivity):
        if _too_big(structure, d, n):
            raise NotImplementedError
        x = _data(d, n)
        self.index = _build(structure, x)
        self.a, self.b = _queries(x, 64, selectivity)
        self.values = np.random.default_rng(3).standard_normal((n, d))
        self.index.attach_values(self.values)  # for time_sum_one_attached (queries ignore it)

    def time_report_batch(self, structure, d, n, selectivity):
        self.index.report(self.a, self.b)

    def time_report_one(self, structure, d, n, selectivity):
        self.index.report_one(self.a[0], self.b[0])

    def time_count_batch(self, structure, d, n, selectivity):
        self.index.count(self.a, self.b)

    def time_sum_one(self, structure, d, n, selectivity):
        # one query, weights max(<a,x> - b, 0) and a weighted sum of d values (a decoding step)
        self.index.sum(self.a[:1], self.b[:1], self.values, power=1)

    def time_sum_one_attached(self, structure, d, n, selectivity):
        # the same over attached values: trees add whole subtrees from their node sums
        self.index.sum(self.a[:1], self.b[:1], "attached", power=1)

    def track_points_tested(self, structure, d, n, selectivity):
        self.index.count(self.a, self.b)
        return float(self.index.stats.points_tested.mean())

    track_points_tested.unit = "points/query"

    def track_nodes_visited(self, structure, d, n, selectivity):
        self.index.count(self.a, self.b)
        return float(self.index.stats.nodes_visited.mean())

    track_nodes_visited.unit = "nodes/query"


class TopK:
    params = (STRUCTURES, [2, 8, 128], [10**5], [10])
    param_names = ["structure", "d", "n", "k"]

    def setup(self, structure, d, n, k):
        if _too_big(structure, d, n):
            raise NotImplementedError
        x = _data(d, n)
        self.index = _build(structure, x)
        self.q = np.random.default_rng(2).standard_normal((16, d))

    def time_topk(self, structure, d, n, k):
        self.index.topk(self.q, k)


class TopKTies:
    """Half the points are one point, the best for the query: the exact tie-break (smaller id
    first) sees ~n/2 tied candidates (the collector once re-pruned at every push: quadratic)."""

    params = (["brute_force", "partition_tree", "shallow_cutting3"], [10**4, 10**5])
    param_names = ["structure", "n"]

    def setup(self, structure, n):
        x = _data(3, n)
        x[::2] = 2.0
        self.index = _build(structure, x)
        self.q = np.ones((4, 3))

    def time_topk_ties(self, structure, n):
        self.index.topk(self.q, 10)
