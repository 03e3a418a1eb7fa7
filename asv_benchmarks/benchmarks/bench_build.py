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


class AutoBuild:
    """``build_index(kind="auto")`` over 10^6 float32 points by declared output size: the whole
    build, probe included (issue 20 bounds it by 2x the chosen structure's build + 0.5 s; the
    chosen structures' own builds are in ``Build``)."""

    params = ([2, 3, 16], [100, 10_000])
    param_names = ["d", "output_size"]
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, d, output_size):
        self.x = points(10**6, d, "float32")

    def time_auto_build(self, d, output_size):
        hsrgeom.build_index(self.x, output_size=output_size, batch_size=200)
