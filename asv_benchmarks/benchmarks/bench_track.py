"""Machine-independent counters (asv ``track_``): what a query costs in points tested and tree
nodes visited per reported point, from ``index.stats``, and the index's memory per point. They
move only when an algorithm changes, so a step in their plot is a change of behaviour, never
noise."""
import numpy as np

from .common import OUTPUT_SIZES, halfspaces, index, points, skip_unless

# every structure that prunes (a scan tests every point: its counters are n and 0); not "auto", whose
# choice is a timing, so depends on the machine
STRUCTURES = ["quantized_scan", "partition_tree", "simplicial", "convex_layers", "convex_layers3", "shallow_cutting3"]


def _per_reported(stats, counter):
    reported = int(stats.points_reported.sum())
    return float(getattr(stats, counter).sum()) / max(reported, 1)


class Counters:
    params = (STRUCTURES, [2, 3, 16], [10**5], OUTPUT_SIZES)
    param_names = ["structure", "d", "n", "output_size"]
    timeout = 300

    def setup(self, structure, d, n, output_size):
        skip_unless(structure, d, n)
        self.index = index(structure, d, n)
        self.a, self.b = halfspaces(points(n, d), 32, output_size)

    def track_points_tested_per_reported(self, structure, d, n, output_size):
        self.index.count(self.a, self.b)
        return _per_reported(self.index.stats, "points_tested")

    track_points_tested_per_reported.unit = "points tested / point reported"

    def track_nodes_visited_per_reported(self, structure, d, n, output_size):
        self.index.count(self.a, self.b)
        return _per_reported(self.index.stats, "nodes_visited")

    track_nodes_visited_per_reported.unit = "nodes / point reported"


class PerIndex:
    """Counters of the index itself, and of queries at one output size (100 points)."""

    params = (["brute_force"] + STRUCTURES, [2, 3, 16], [10**5])
    param_names = ["structure", "d", "n"]

    def setup(self, structure, d, n):
        skip_unless(structure, d, n)
        self.index = index(structure, d, n)
        self.a, self.b = halfspaces(points(n, d), 32, 100)

    def track_exact_checks_per_query(self, structure, d, n):
        self.index.count(self.a, self.b)
        return float(np.mean(self.index.stats.exact_checks))

    track_exact_checks_per_query.unit = "exact evaluations / query"

    def track_memory_bytes_per_point(self, structure, d, n):
        return self.index.memory_bytes / n

    track_memory_bytes_per_point.unit = "bytes / point"
