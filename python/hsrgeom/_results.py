"""Result types of index queries, and the compressed-row (CSR) helpers built on them.

A batch of m queries answers in compressed rows: the entries of query j are
``[lims[j], lims[j + 1])`` of the flat arrays (ids, scores, weights). This module owns that
layout: :class:`HalfspaceResult` (report), :class:`HalfspaceSums` (sum), :class:`QueryStats`
(cost counters), :meth:`HalfspaceResult.from_rows` (lims from the query number of each entry)
and :func:`gather_weighted_sum` (per-row weighted sums of value rows, in the compiled core).
"""
from __future__ import annotations

import numpy as np

from . import _core
from . import _validate as V


def release_memory():
    """Free the output buffers kept for later reports; returns their size in bytes.

    A result's ``ids`` and ``scores`` arrays own the buffers the compiled core filled. When such
    an array of 1 MiB or more is freed, its buffer is kept for the next reports (up to 8
    buffers, 256 MiB in all, per process): fresh memory is zeroed by the kernel page by page on
    first touch, which cost reports of tens of MB 25-55 % of their time. Arrays still in use
    are not affected.

    >>> import numpy as np, hsrgeom
    >>> index = hsrgeom.BruteForce(np.zeros((300_000, 2)))
    >>> res = index.report([[1.0, 0.0]], [0.0])    # 300,000 ids: 2.4 MB
    >>> del res
    >>> hsrgeom.release_memory() > 0, hsrgeom.release_memory()
    (True, 0)
    """
    return _core.release_memory()


def gather_weighted_sum(values, lims, ids, weights, *, n_threads=None):
    """Per CSR row j, ``sum_e weights[e] * values[ids[e]]`` over its entries
    ``e in [lims[j], lims[j + 1])``: float64, shape (m, dv) with m = ``len(lims) - 1``.

    ``values``: shape (N, dv), float32 or float64 (other real dtypes are used as float64);
    ``lims`` non-decreasing from 0 to ``len(ids)``; ``ids`` in [0, N); ``weights`` one per
    entry. Accumulates in float64 in the compiled core (GIL released, split over threads);
    NaN and inf propagate like ``numpy.sum``. Raises ValueError for inconsistent arrays.
    """
    values = np.asarray(values)
    if values.dtype not in V.SUPPORTED_DTYPES:
        values = values.astype(np.float64)
    values = np.ascontiguousarray(values)
    lims = np.ascontiguousarray(lims, dtype=np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    return _core.gather_weighted_sum(values, lims, ids, weights, V.threads(n_threads))


class HalfspaceResult:
    """Result of a batch of half-space reports, in compressed rows like ``faiss.RangeSearchResult``.

    The ids reported for query ``j`` are ``ids[lims[j]:lims[j+1]]``, sorted ascending.

    Attributes
    ----------
    lims : ndarray of int64, shape (m + 1,)
    ids : ndarray of int64, shape (lims[-1],)
    scores : ndarray of float64, shape (lims[-1],), or None
        With ``report(..., return_scores=True)``: ``<a_j, x>`` of each reported point, evaluated
        in float64 from the stored coordinates (like FAISS's ``distances``); otherwise None.
        Ids decide membership exactly; a score is a rounded value (relative error ~d * 2^-53 of
        ``sum |a_i x_i|``), so a reported point may show a score a rounding below the offset.
    """

    __slots__ = ("lims", "ids", "scores")

    def __init__(self, lims, ids, scores=None):
        self.lims = lims
        self.ids = ids
        self.scores = scores

    def __len__(self):
        return len(self.lims) - 1

    def __getitem__(self, j):
        """Ids of query ``j`` (a view into ``ids``)."""
        m = len(self)
        if not -m <= j < m:
            raise IndexError(f"query index {j} out of range for {m} queries")
        j %= m
        return self.ids[self.lims[j] : self.lims[j + 1]]

    def __iter__(self):
        return (self[j] for j in range(len(self)))

    @property
    def counts(self):
        """Number of ids reported per query, shape (m,)."""
        return np.diff(self.lims)

    def split(self):
        """The ids as a list of m arrays (views into ``ids``)."""
        return [self.ids[self.lims[j] : self.lims[j + 1]] for j in range(len(self))]

    def __eq__(self, other):
        if not isinstance(other, HalfspaceResult):
            return NotImplemented
        return np.array_equal(self.lims, other.lims) and np.array_equal(self.ids, other.ids)

    __hash__ = None

    def __repr__(self):
        sc = ", scores" if self.scores is not None else ""
        return f"HalfspaceResult(queries={len(self)}, total_ids={len(self.ids)}{sc})"

    # -- compressed rows ---------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows, ids, m, scores=None):
        """The result whose entry e (``ids[e]``, ``scores[e]``) belongs to query ``rows[e]``.

        ``rows`` must be non-decreasing, in [0, m) (each query's entries contiguous, in the
        order given); ``lims`` is computed from it."""
        lims = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=lims[1:])
        return cls(lims, ids, scores)

    def rows(self):
        """The query number of every entry, int64, shape (len(ids),) (inverse of :meth:`from_rows`)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.lims))

    def weighted_sum(self, values, weights, *, n_threads=None):
        """Per query j, ``sum_e weights[e] * values[ids[e]]`` over its entries: float64, shape
        (m, dv). See :func:`hsrgeom.gather_weighted_sum`."""
        return gather_weighted_sum(values, self.lims, self.ids, weights, n_threads=n_threads)


class HalfspaceSums:
    """Result of :meth:`sum <BruteForce.sum>`: aggregates over the points of each half-space.

    Attributes
    ----------
    counts : ndarray of int64, shape (m,)
        Points in half-space j (exactly ``report(...).counts``).
    weights : ndarray of float64, shape (m,)
        Sum of the weights ``w`` of those points.
    sums : ndarray of float64, shape (m, dv) or (m,), or None
        Sum of ``w * values[id]`` (None when no values were given; (m,) for 1-D values).
    """

    __slots__ = ("counts", "weights", "sums")

    def __init__(self, counts, weights, sums=None):
        self.counts = counts
        self.weights = weights
        self.sums = sums

    def __len__(self):
        return len(self.counts)

    def __repr__(self):
        dv = "" if self.sums is None else f", sums shape={self.sums.shape}"
        return f"HalfspaceSums(queries={len(self)}, total_count={int(self.counts.sum())}{dv})"


class QueryStats:
    """Per-query cost counters of the last call on an index (``index.stats``: the calling
    thread's last call).

    Attributes
    ----------
    nodes_visited : ndarray of int64, shape (m,)
        Tree nodes whose bounds were evaluated.
    points_tested : ndarray of int64, shape (m,)
        Points evaluated one by one (a node entirely inside is reported as a range and its
        points are not counted here).
    points_reported : ndarray of int64, shape (m,)
        Ids reported (report/count), 1/0 (empty), k (topk).
    exact_checks : ndarray of int64, shape (m,)
        Evaluations that fell back to exact arithmetic (near-boundary points).
    """

    _FIELDS = ("nodes_visited", "points_tested", "points_reported", "exact_checks")
    __slots__ = ("_rows",)

    def __init__(self, nodes_visited, points_tested, points_reported, exact_checks):
        self._rows = (nodes_visited, points_tested, points_reported, exact_checks)

    @classmethod
    def _from_rows(cls, rows):
        """From the compiled query's (4, m) int64 array (rows in ``_FIELDS`` order): kept as it
        is, each attribute a view of its row, made when read."""
        s = cls.__new__(cls)
        s._rows = rows
        return s

    nodes_visited = property(lambda self: self._rows[0])
    points_tested = property(lambda self: self._rows[1])
    points_reported = property(lambda self: self._rows[2])
    exact_checks = property(lambda self: self._rows[3])

    @classmethod
    def _empty(cls):
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z)

    def mean(self):
        """Mean of every counter over the queries, as a dict."""
        return {k: float(getattr(self, k).mean()) if len(getattr(self, k)) else 0.0 for k in self._FIELDS}

    def __len__(self):
        return len(self.nodes_visited)

    def __repr__(self):
        means = ", ".join(f"{k}={v:.1f}" for k, v in self.mean().items())
        return f"QueryStats(queries={len(self)}, mean: {means})"

