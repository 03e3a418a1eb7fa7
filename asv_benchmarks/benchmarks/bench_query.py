"""Queries by structure, d, n and output size (points per half-space: 100 / 1,000 / 10,000).

report (ids sorted per query, and in the structure's order), count, empty, sum (a ReLU-weighted
sum of values, given and attached), top-k, and one-query calls (the decoding-step shape).
Grids are kept small: asv builds the index once per parameter combination and benchmark.
"""
import numpy as np

from .common import OUTPUT_SIZES, halfspaces, index, points, skip_unless

STRUCTURES = ["brute_force", "quantized_scan", "partition_tree", "convex_layers", "convex_layers3", "shallow_cutting3",
              "auto"]
BATCH = 32  # half-spaces per batch call


class Report:
    """Low d, where the structures prune: every structure of d = 2 and d = 3 at n = 10^5 (auto
    built for the output size asked), ids sorted and in the structure's order."""

    params = (STRUCTURES, [2, 3], [10**5], OUTPUT_SIZES)
    param_names = ["structure", "d", "n", "output_size"]
    timeout = 300

    def setup(self, structure, d, n, output_size):
        skip_unless(structure, d, n)
        self.index = index(structure, d, n, output_size=output_size, batch_size=BATCH)
        self.a, self.b = halfspaces(points(n, d), BATCH, output_size)

    def time_report_sorted(self, structure, d, n, output_size):
        self.index.report(self.a, self.b)

    def time_report_unsorted(self, structure, d, n, output_size):
        self.index.report(self.a, self.b, return_sorted=False)

    def time_count(self, structure, d, n, output_size):
        self.index.count(self.a, self.b)

    def time_sum_relu(self, structure, d, n, output_size):
        # one half-space, weights <a, x> - b, a weighted sum of d-dimensional values
        self.index.sum(self.a[:1], self.b[:1], self.index.points(), power=1)


class ReportLarge:
    """n = 10^6 in d = 3 (the fast builders only): how the output-sensitive structures scale."""

    params = (["brute_force", "partition_tree", "shallow_cutting3"], [3], [10**6], OUTPUT_SIZES)
    param_names = ["structure", "d", "n", "output_size"]
    timeout = 300

    def setup(self, structure, d, n, output_size):
        self.index = index(structure, d, n)
        self.a, self.b = halfspaces(points(n, d), BATCH, output_size)

    def time_report_unsorted(self, structure, d, n, output_size):
        self.index.report(self.a, self.b, return_sorted=False)

    def time_report_sorted(self, structure, d, n, output_size):
        # minus time_report_unsorted: the cost of ascending ids at 10^6 points
        self.index.report(self.a, self.b)

    def time_report_one(self, structure, d, n, output_size):
        self.index.report_one(self.a[0], self.b[0])


class ReportLargePlane(ReportLarge):
    """n = 10^6 in d = 2: ConvexLayers' shallow table (128 levels: one level lookup up to ~1,000
    ids per query, the layer walk past it) against the tree. The offsets are data values (ties)."""

    params = (["partition_tree", "convex_layers"], [2], [10**6], OUTPUT_SIZES)


class ReportHighD:
    """High d (float32, the attention keys' dtype): the scans against a tree that cannot prune."""

    params = (["brute_force", "quantized_scan", "partition_tree", "auto"], [16, 128], [10**5], OUTPUT_SIZES)
    param_names = ["structure", "d", "n", "output_size"]

    def setup(self, structure, d, n, output_size):
        self.index = index(structure, d, n, np.float32, output_size=output_size, batch_size=BATCH)
        self.a, self.b = halfspaces(points(n, d, np.float32), BATCH, output_size)

    def time_report_one(self, structure, d, n, output_size):
        self.index.report_one(self.a[0], self.b[0])

    def time_report_sorted(self, structure, d, n, output_size):
        self.index.report(self.a, self.b)


class Empty:
    """Emptiness stops at the first point found: a query holding points and one holding none
    (the offset above every point: the structure must prove it)."""

    params = (STRUCTURES, [2, 3], [10**5], ["nonempty", "empty"])
    param_names = ["structure", "d", "n", "case"]

    def setup(self, structure, d, n, case):
        skip_unless(structure, d, n)
        self.index = index(structure, d, n)
        self.a, self.b = halfspaces(points(n, d), BATCH, 100)
        if case == "empty":
            self.b = self.b + 10.0 * np.sqrt(d)

    def time_empty(self, structure, d, n, case):
        self.index.empty(self.a, self.b)


class SumAttached:
    """Sums over attached values: trees add whole subtrees from their per-node sums."""

    params = (["brute_force", "partition_tree", "shallow_cutting3"], [3], [10**5], OUTPUT_SIZES)
    param_names = ["structure", "d", "n", "output_size"]

    def setup(self, structure, d, n, output_size):
        x = points(n, d)
        self.index = index(structure, d, n)
        if not self.index.has_values:
            self.index.attach_values(np.random.default_rng(3).standard_normal((n, 8)))
        self.a, self.b = halfspaces(x, 1, output_size)

    def time_sum_attached(self, structure, d, n, output_size):
        self.index.sum(self.a, self.b, "attached", power=1)


class TopK:
    params = (STRUCTURES, [2, 3, 64], [10**5], [1, 100])
    param_names = ["structure", "d", "n", "k"]

    def setup(self, structure, d, n, k):
        skip_unless(structure, d, n)
        self.index = index(structure, d, n)
        self.q = np.random.default_rng(2).standard_normal((16, d))

    def time_topk(self, structure, d, n, k):
        self.index.topk(self.q, k)


class TopKTies:
    """Half the points are one point, the best for the query: the exact tie-break (smaller id
    first) sees ~n/2 tied candidates (a collector that re-prunes at every push is quadratic)."""

    params = (["brute_force", "partition_tree", "shallow_cutting3"], [10**4, 10**5])
    param_names = ["structure", "n"]

    def setup(self, structure, n):
        import hsrgeom

        x = points(n, 3).copy()
        x[::2] = 2.0
        self.index = hsrgeom.build_index(x, kind=structure)
        self.q = np.ones((4, 3))

    def time_topk_ties(self, structure, n):
        self.index.topk(self.q, 10)
