"""hsrgeom: exact half-space range reporting in any dimension.

Report every point x with ``<a, x> >= b``, exactly (boundary included, independent of rounding),
with structures that prune where geometry allows and a blocked scan where it does not.

>>> import numpy as np, hsrgeom
>>> pts = np.random.default_rng(0).standard_normal((10000, 3))
>>> tree = hsrgeom.PartitionTree(pts)
>>> res = tree.report(np.eye(3), [2.0, 2.0, 2.0])
>>> res.counts.shape
(3,)

Layers (each module imports only the ones above it in this list):
``_core`` (compiled), ``_validate``, ``_sync`` (per-index lock), ``_results`` (result types and
CSR helpers), ``_dynamic`` (insert/remove), ``_format`` (files), ``_base`` (:class:`Index`),
``_structures`` (the structures, :func:`load`), ``_auto`` (:func:`build_index`);
``hsrgeom.attention`` uses only the names exported here.
"""
from ._core import get_num_threads, get_verbose, set_num_threads, set_verbose
from ._results import HalfspaceResult, HalfspaceSums, QueryStats, gather_weighted_sum, release_memory
from ._base import Index
from ._structures import (
    BruteForce,
    ConvexLayers,
    ConvexLayers3,
    PartitionTree,
    QuantizedScan,
    ShallowCutting3,
    SimplicialPartitionTree,
    load,
)
from ._auto import build_index

__version__ = "0.1.0"
__all__ = [
    "Index",
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
    "gather_weighted_sum",
    "build_index",
    "load",
    "get_num_threads",
    "set_num_threads",
    "get_verbose",
    "set_verbose",
    "release_memory",
]
