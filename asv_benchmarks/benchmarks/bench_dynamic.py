"""Dynamic indexes: inserts, removals and queries interleaved (the logarithmic method).

Every sample starts from the same freshly built index (``number = 1``: setup runs before each
sample, and the timed code changes the index).
"""
import numpy as np

import hsrgeom

from .common import halfspaces, points, skip_unless


class Interleaved:
    """From n points: ``rounds`` times insert a batch of new points, remove half as many of the
    oldest live ids, and report 8 half-spaces of ~100 points each."""

    params = (["brute_force", "partition_tree", "convex_layers", "shallow_cutting3", "auto"], [2, 3], [20_000],
              [16, 1024])
    param_names = ["structure", "d", "n", "batch"]
    number = 1
    repeat = (1, 5, 20.0)
    timeout = 300
    rounds = 8

    def setup(self, structure, d, n, batch):
        skip_unless(structure, d, n)
        x = points(n, d)
        self.index = hsrgeom.build_index(x, kind=structure)
        self.new = np.random.default_rng(5).uniform(-1, 1, (self.rounds, batch, d))
        self.a, self.b = halfspaces(x, 8, 100)

    def time_insert_remove_query(self, structure, d, n, batch):
        index = self.index
        for r in range(self.rounds):
            index.insert(self.new[r])
            index.remove(np.arange(r * batch // 2, (r + 1) * batch // 2))
            index.report(self.a, self.b)


class InsertOnly:
    """Append one point at a time (a decoding cache's pattern), querying every 64 inserts."""

    params = (["brute_force", "partition_tree", "auto"], [3, 64])
    param_names = ["structure", "d"]
    number = 1
    repeat = (1, 5, 20.0)

    def setup(self, structure, d):
        x = points(10**4, d)
        self.index = hsrgeom.build_index(x, kind=structure)
        self.new = np.random.default_rng(6).uniform(-1, 1, (256, 1, d))
        self.a, self.b = halfspaces(x, 1, 100)

    def time_append_query(self, structure, d):
        for i in range(len(self.new)):
            self.index.insert(self.new[i])
            if i % 64 == 63:
                self.index.report(self.a, self.b)
