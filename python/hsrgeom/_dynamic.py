"""Dynamic updates for every structure: the logarithmic method (Bentley & Saxe, 1980), in C++.

An index that has seen ``insert`` or ``remove`` keeps its points in a compiled
``_core.DynamicF32/F64`` (``cpp/include/hsrgeom/dynamic.hpp``): static blocks of the index's kind
and parameters, built in C++, plus a small unindexed tail of at most ``TAIL`` points scanned
exactly. Block sizes follow a binary counter: a full tail becomes a block; two blocks of the
same size class are rebuilt as one. Each point is rebuilt O(log(n / TAIL)) times over its life,
so an insert costs amortised O(log n) times the per-point build cost. Removed points are
tombstones (a bitset over the ids, checked while results are collected) and are dropped at the
next rebuild of their block; a block more than half removed is rebuilt at once. Every insert,
remove and query is one compiled call (GIL released, interruptible).

Ids are stable: the points an index was built with have ids 0..n-1, inserted points get the
next ids in order, and a removed id is never reused.

This module holds no index class: :class:`DynamicState` is given the static index whose
structure becomes the first block (shared, not copied) and validation stays in ``_base``.
"""
from __future__ import annotations

import numpy as np

from . import _core

TAIL = _core.DynamicF64.tail  # unindexed points, scanned exactly

# The compiled constructor arguments of each kind after the points (as _structures passes them;
# the build's thread count is the call's).
_BUILD_ARGS = {
    "brute_force": lambda p: (),
    "quantized_scan": lambda p: (),
    "partition_tree": lambda p: (p["leaf_size"], {"widest": 0, "pca": 1}[p["split"]]),
    "simplicial": lambda p: (p["r"], p["leaf_size"], p["seed"]),
    "convex_layers": lambda p: (p["table_layers"], -1 if p["max_layers"] is None else p["max_layers"],
                                -1 if p["max_candidates"] is None else p["max_candidates"]),
    "convex_layers3": lambda p: (p["max_layers"],),
    "shallow_cutting3": lambda p: (p["grid"], p["max_depth"], p["fine_depth"], p["max_candidates"]),
}


class DynamicState:
    """The compiled dynamic index of one :class:`~hsrgeom.Index`.

    ``first``: the static index whose structure holds the points with global ids ``ids``
    (ascending, all < ``next_id``); it becomes the first block without a copy of its structure
    (the dynamic index keeps a copy of the points, for merges and exact top-k ranking). The
    query methods take validated, C-contiguous arguments and return what the static
    structures' compiled methods return (results and a (4, m) stats array).
    """

    def __init__(self, first, ids, next_id, value_sums=False):
        cls = _core.DynamicF32 if first.dtype == np.float32 else _core.DynamicF64
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._c = cls(first.kind, _BUILD_ARGS[first.kind](first._params()), first._impl, ids, int(next_id),
                      int(first.d), bool(value_sums))

    # -- state -------------------------------------------------------------------------------
    @property
    def n(self):
        """Number of live points."""
        return self._c.n

    @property
    def next_id(self):
        """Ids given so far (the next inserted point gets this id)."""
        return self._c.next_id

    @property
    def memory_bytes(self):
        """Bytes held by the parts, their point copies and id maps, and the tombstones."""
        return self._c.memory_bytes

    @property
    def part_sizes(self):
        """Points per block, largest first, then in the tail (tombstones included)."""
        return list(self._c.part_sizes)

    def alive(self, ids):
        """bool array: whether each id (int64, in [0, next_id)) is live."""
        return self._c.alive(np.ascontiguousarray(ids, dtype=np.int64)).astype(bool)

    def live_points(self):
        """(points, ids) of the live points, ids ascending."""
        return self._c.live_points()

    # -- updates -----------------------------------------------------------------------------
    def insert(self, points, values=None, n_threads=0):
        """Adds validated points; returns their ids. ``values``: the index's attached value
        rows (at least next_id + len(points) rows), for the node sums of new blocks."""
        first = self._c.insert(np.ascontiguousarray(points), values, n_threads)
        return np.arange(first, first + len(points), dtype=np.int64)

    def remove(self, ids, values=None, n_threads=0):
        """Removes validated ids (live, unique)."""
        self._c.remove(np.ascontiguousarray(ids, dtype=np.int64), values, n_threads)

    def set_value_sums(self, values, n_threads=0):
        """Node sums of the attached values in every block with consecutive ids."""
        self._c.set_value_sums(values, n_threads)

    # -- queries (one compiled call each) -------------------------------------------------------
    def report(self, a, b, n_threads, scores=False, sort=True):
        return self._c.report(a, b, n_threads, scores, sort)

    def count(self, a, b, n_threads):
        return self._c.count(a, b, n_threads)

    def empty(self, a, b, n_threads):
        return self._c.empty(a, b, n_threads)

    def sum(self, a, b, values, power, shift, n_threads, node_sums=False):
        return self._c.sum(a, b, values, power, shift, n_threads, node_sums)

    def topk(self, q, k, n_threads):
        return self._c.topk(q, k, n_threads)
