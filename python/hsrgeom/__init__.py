"""hsrgeom: exact half-space range reporting in any dimension.

Report every point x with ``<a, x> >= b``, exactly (boundary included, independent of rounding),
with structures that prune where geometry allows and a blocked scan where it does not.

>>> import numpy as np, hsrgeom
>>> pts = np.random.default_rng(0).standard_normal((10000, 3))
>>> tree = hsrgeom.PartitionTree(pts)
>>> res = tree.report(np.eye(3), [2.0, 2.0, 2.0])
>>> res.counts.shape
(3,)
"""
from ._core import get_num_threads, get_verbose, set_num_threads, set_verbose
from ._index import (
    BruteForce,
    ConvexLayers,
    ConvexLayers3,
    ShallowCutting3,
    HalfspaceResult,
    HalfspaceSums,
    PartitionTree,
    QuantizedScan,
    QueryStats,
    SimplicialPartitionTree,
    build_index,
    load,
)

__version__ = "0.1.0"
__all__ = [
    "BruteForce",
    "QuantizedScan",
    "PartitionTree",
    "SimplicialPartitionTree",
    "ConvexLayers",
    "ConvexLayers3",
    "ShallowCutting3",
    "HalfspaceResult",
    "HalfspaceSums",
    "QueryStats",
    "build_index",
    "load",
    "get_num_threads",
    "set_num_threads",
    "get_verbose",
    "set_verbose",
]
