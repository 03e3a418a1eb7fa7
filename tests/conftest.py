import numpy as np
import pytest

import hsrgeom

STRUCTURES = {
    "brute_force": lambda x: hsrgeom.BruteForce(x),
    "quantized_scan": lambda x: hsrgeom.QuantizedScan(x),
    "tree_widest": lambda x: hsrgeom.PartitionTree(x, leaf_size=8),
    "tree_widest_leaf1": lambda x: hsrgeom.PartitionTree(x, leaf_size=1),
    "tree_pca": lambda x: hsrgeom.PartitionTree(x, leaf_size=8, split="pca"),
    "simplicial": lambda x: hsrgeom.SimplicialPartitionTree(x, r=8, leaf_size=4),
    "auto": lambda x: hsrgeom.build_index(x, kind="auto"),
    "convex_layers3": lambda x: _only_dim(x, 3, hsrgeom.ConvexLayers3),
    "shallow_cutting3": lambda x: _only_dim(x, 3, lambda p: hsrgeom.ShallowCutting3(p, grid=4, max_depth=64)),
}
# structures defined for one dimension only; tests with other d skip them
STRUCTURE_DIMS = {"convex_layers3": 3, "shallow_cutting3": 3}


def _only_dim(x, d, cls):
    if x.shape[1] != d:
        pytest.skip(f"needs d = {d}")
    return cls(x)


def structures_for(d):
    """STRUCTURES usable for points of dimension d."""
    return {k: v for k, v in STRUCTURES.items() if STRUCTURE_DIMS.get(k, d) == d}


@pytest.fixture(params=sorted(STRUCTURES))
def make_index(request):
    return STRUCTURES[request.param]


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
