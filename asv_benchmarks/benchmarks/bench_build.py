"""Builds: time and peak memory per structure, d and n (asv ``time_`` / ``peakmem_``)."""
import hsrgeom

from .common import points, skip_unless


class Build:
    params = (["brute_force", "quantized_scan", "partition_tree", "simplicial", "convex_layers",
               "convex_layers3", "shallow_cutting3", "auto"], [2, 3, 16, 128], [10**5, 10**6])
    param_names = ["structure", "d", "n"]
    timeout = 300

    def setup(self, structure, d, n):
        skip_unless(structure, d, n)
        self.x = points(n, d)

    def time_build(self, structure, d, n):
        hsrgeom.build_index(self.x, kind=structure)

    def peakmem_build(self, structure, d, n):
        hsrgeom.build_index(self.x, kind=structure)


class BuildFloat32:
    """float32 points (the attention dtype) with the structures that take any d."""

    params = (["brute_force", "quantized_scan", "partition_tree"], [128], [10**5])
    param_names = ["structure", "d", "n"]

    def setup(self, structure, d, n):
        self.x = points(n, d, "float32")

    def time_build(self, structure, d, n):
        hsrgeom.build_index(self.x, kind=structure)
