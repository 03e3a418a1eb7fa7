"""Index classes: validated, documented wrappers around the compiled structures."""
from __future__ import annotations

import numpy as np

import functools
import inspect
import sys
import threading

from . import _core
from . import _format
from . import _validate as V
from ._dynamic import DynamicState, RWLock

__all__ = ["HalfspaceResult", "HalfspaceSums", "QueryStats", "BruteForce", "QuantizedScan", "PartitionTree", "SimplicialPartitionTree",
           "ConvexLayers", "ConvexLayers3", "ShallowCutting3", "build_index", "load"]


def _compiled(name, points):
    """The compiled class ``name`` for the dtype of ``points`` (float32 or float64)."""
    return getattr(_core, name + ("F32" if points.dtype == np.float32 else "F64"))


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


def _weights(scores, rows, power, shift):
    """w = max(score - shift[row], 0)^power (power 0: 1, scores unused), evaluated as the
    compiled sum does."""
    if power == 0:
        return np.ones(len(rows))
    x = np.maximum(scores - shift[rows], 0.0)
    with np.errstate(over="ignore", under="ignore"):  # weights overflow to inf like the compiled sum's
        if power <= _POWER_LOOP:  # x * x * ... * x, left to right
            w = x.copy()
            for _ in range(power - 1):
                w *= x
            return w
        w, b = np.ones_like(x), x.copy()  # binary exponentiation: O(log power) passes
        while True:
            if power & 1:
                w *= b
            power >>= 1
            if not power:
                return w
            b *= b


# Powers up to this are evaluated by repeated multiplication, larger ones by squaring (the
# compiled sum's SumSpec::int_power does the same operations in the same order).
_POWER_LOOP = 16


def _sums_from_report(lims, ids, scores, values, power, shift, n_threads):
    """(counts, weights, sums) of a sum() computed from a report with scores (ids index values)."""
    m = len(lims) - 1
    counts = np.diff(lims)
    rows = np.repeat(np.arange(m), counts)
    w = _weights(scores, rows, power, shift)
    weights = np.bincount(rows, weights=w, minlength=m).astype(np.float64)
    if values is None:
        return counts, weights, np.zeros((m, 0))
    return counts, weights, _core.gather_weighted_sum(values, lims, ids, w, n_threads)


class QueryStats:
    """Per-query cost counters of the last call on an index (``index.stats``: the calling
    thread's last call).

    Attributes (each an int64 array of shape (m,))
    ----------
    nodes_visited : tree nodes whose bounds were evaluated
    points_tested : points evaluated one by one (a node entirely inside is reported as a range
        and its points are not counted here)
    points_reported : ids reported (report/count), 1/0 (empty), k (topk)
    exact_checks : evaluations that fell back to exact arithmetic (near-boundary points)
    """

    __slots__ = ("nodes_visited", "points_tested", "points_reported", "exact_checks")

    def __init__(self, nodes_visited, points_tested, points_reported, exact_checks):
        self.nodes_visited = nodes_visited
        self.points_tested = points_tested
        self.points_reported = points_reported
        self.exact_checks = exact_checks

    @classmethod
    def _from_dict(cls, d):
        return cls(d["nodes_visited"], d["points_tested"], d["points_reported"], d["exact_checks"])

    @classmethod
    def _empty(cls):
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z)

    def mean(self):
        """Mean of every counter over the queries, as a dict."""
        return {k: float(getattr(self, k).mean()) if len(getattr(self, k)) else 0.0 for k in self.__slots__}

    def __len__(self):
        return len(self.nodes_visited)

    def __repr__(self):
        means = ", ".join(f"{k}={v:.1f}" for k, v in self.mean().items())
        return f"QueryStats(queries={len(self)}, mean: {means})"


def _fmt_bytes(b):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024


def _holding(acquire, release):
    """Decorator: the method runs holding the index's lock (RWLock.acquire_read/_write: with
    other reads, or alone), see _Index (threads)."""
    def decorate(method):
        @functools.wraps(method)
        def locked(self, *args, **kwargs):
            rw = self._rw
            acquire(rw)
            try:
                return method(self, *args, **kwargs)
            finally:
                release(rw)
        return locked
    return decorate


_reader = _holding(RWLock.acquire_read, RWLock.release_read)
_writer = _holding(RWLock.acquire_write, RWLock.release_write)


_NO_STATS = QueryStats._empty()
_SYNC = ("_rw", "_tls")  # per-object synchronisation state: never copied to another index


class _Index:
    """Shared query interface. Subclasses set ``kind`` and build ``self._impl``.

    Threads: an index may be shared by threads. Reads (every query, ``points``, ``ids``,
    ``values``, ``n``/``len``, ``memory_bytes``, ``repr``, ``to_bytes``/``save``/pickling) run
    concurrently, without the GIL in the compiled part; writes (``insert``, ``remove``,
    ``attach_values``, unpickling) run alone, waiting for the reads under way, and a waiting
    write goes before reads that arrive after it (a per-index readers-writer lock,
    writer-preferring). So every answer is the answer of some sequential order of the calls.
    ``stats`` is per thread: each thread sees the counters of its own last query on the index.
    """

    kind = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._init_sync()
        return obj

    def _init_sync(self):
        self._rw = RWLock()
        self._tls = threading.local()  # .stats: QueryStats of this thread's last query

    @property
    def _stats(self):
        return getattr(self._tls, "stats", _NO_STATS)

    @_stats.setter
    def _stats(self, stats):
        self._tls.stats = stats

    def _init_common(self, points):
        self.dtype = points.dtype
        self.reason = getattr(self, "reason", f"{self.kind} requested explicitly")
        self._stats = QueryStats._empty()
        self._dyn = None  # DynamicState once insert/remove was used
        self._vbuf = None  # attached values: rows 0.._id_bound() - 1 (capacity doubles on insert)
        self._vflat = False

    # -- properties --------------------------------------------------------------------------
    @property
    @_reader
    def n(self):
        """Number of (live) points."""
        return self._dyn.n if self._dyn else self._impl.n

    @property
    def d(self):
        """Dimension."""
        return self._impl.d

    @property
    @_reader
    def memory_bytes(self):
        """Bytes held by the index (points copy and attached values included)."""
        extra = 0 if self._vbuf is None else self._vbuf.nbytes
        if self._dyn:
            return extra + sum(index._impl.memory_bytes for index, _ in self._dyn.parts())
        return extra + self._impl.memory_bytes

    @property
    def stats(self):
        """:class:`QueryStats` of the last query call on this index by the calling thread (each
        thread sees its own; empty in a thread that has not queried this index)."""
        return self._stats

    def __len__(self):
        return self.n

    @_reader
    def points(self):
        """A copy of the (live) indexed points, in id order (see :meth:`ids`)."""
        return self._dyn.live_points()[0] if self._dyn else self._impl.points()

    @_reader
    def ids(self):
        """Ids of the live points, ascending (``arange(n)`` until points are removed)."""
        return self._dyn.live_points()[1] if self._dyn else np.arange(self.n, dtype=np.int64)

    # -- attached values ---------------------------------------------------------------------
    #: True for the structures that keep per-node sums of attached values (see attach_values).
    node_sums = False

    @property
    def has_values(self):
        """Whether values are attached (:meth:`attach_values`)."""
        return self._vbuf is not None

    def _values(self):
        return None if self._vbuf is None else self._vbuf[: self._id_bound()]

    @_reader
    def values(self):
        """A copy of the attached values (row i for id i, removed ids included), or None."""
        v = self._values()
        return None if v is None else (v[:, 0].copy() if self._vflat else v.copy())

    @_writer
    def attach_values(self, values, *, n_threads=None):
        """Attach per-point values for ``sum(..., values="attached")``; returns the index.

        ``values``: shape (N,) or (N, dv), row i for id i, N = the number of ids given so far
        (``len(index)`` before any update). The index keeps a copy (float32 and float64 as
        given, other real dtypes as float64), so later changes to the caller's array do not
        matter; :meth:`insert` then takes the new points' values too, and :meth:`save` and
        pickling keep them. Values are attached once.

        Structures with ``node_sums = True`` (PartitionTree, SimplicialPartitionTree) also
        precompute, for every node of at least ``max(64, 8 (d + 1))`` points, the sum of its
        values and of ``(x - mean) v^T``, and store the rows in tree order: a sum with
        ``power`` 0 or 1 then adds a subtree that lies inside the half-space (and, for power 1,
        above ``shift``) in O(d dv) operations instead of reading each of its points and rows,
        and reads the rows of the points it tests in leaves sequentially. Counts stay exact;
        weights and sums agree with ``values=<the array>`` to float64 rounding. Memory: a copy
        of the values (the trees keep a second one, in tree order) plus, in the trees, about
        2 bytes per point and value column for the node sums. (Their one-time precomputation
        reads each point and row once: 0.07 s for 10^6 points, d = d_v = 4.)
        """
        if self._vbuf is not None:
            raise ValueError("values are already attached to this index")
        rows = self._id_bound()
        vals, flat = V.values(values, rows, "values")
        if len(vals) != rows:
            raise ValueError(f"values has {len(vals)} rows but the index has {rows} ids (one row per id)")
        self._vbuf, self._vflat = vals.copy(), flat
        threads = V.threads(n_threads)
        try:
            if self._dyn is None:
                self._prepare_values(self, np.arange(rows, dtype=np.int64), threads)
            else:
                self._hook_values()
                for index, gids in self._dyn.parts():
                    self._prepare_values(index, gids, threads)
        except BaseException:  # interrupted (KeyboardInterrupt): nothing attached
            self._vbuf = None
            if self._dyn is not None:
                self._dyn.on_build = None
            raise
        return self

    def _hook_values(self):
        """New blocks of the dynamic state get node sums of this index's attached values."""
        if self._dyn is not None and self._vbuf is not None:
            self._dyn.on_build = lambda index, gids: self._prepare_values(index, gids, 0)

    def _prepare_values(self, index, gids, threads):
        """Node sums of a static part whose ids are consecutive (rows gids[0] ...)."""
        if index.node_sums and len(gids) and gids[-1] - gids[0] + 1 == len(gids):
            index._impl.set_value_sums(self._values(), int(gids[0]), threads)

    # -- dynamic updates -----------------------------------------------------------------------
    def _dynamic(self):
        if self._dyn is None:
            first = type(self).__new__(type(self))  # a static view sharing the built structure
            first.__dict__.update({k: v for k, v in self.__dict__.items() if k not in _SYNC})
            build = lambda pts: type(self)._from_valid(pts, **self._params())  # noqa: E731
            self._dyn = DynamicState(build, first, np.arange(self._impl.n, dtype=np.int64), self._impl.n)
            self._hook_values()
        return self._dyn

    @_writer
    def insert(self, points, values=None):
        """Add points (an (m, d) array of the index dtype, or one (d,) point); returns their ids.

        Ids continue after the largest id ever given. Uses the logarithmic method: amortised
        O(log n) rebuild work per point; a small tail of recent points is scanned. With
        attached values (:meth:`attach_values`), ``values`` gives the new points' rows (same
        dtype and columns as the attached ones); without, it must be None.
        """
        arr = V.points(np.atleast_2d(np.asarray(points)) if np.ndim(points) == 1 else points)
        if arr.shape[1] != self.d:
            raise ValueError(f"points has d={arr.shape[1]} but the index has d={self.d}")
        if arr.dtype != self.dtype:
            raise TypeError(f"points must have the index dtype {self.dtype}, got {arr.dtype}; convert explicitly")
        if self._id_bound() + len(arr) > V.MAX_N and self.n + len(arr) > V.MAX_N:  # (n costs O(ids))
            raise ValueError(f"points: {len(arr)} more points would exceed the {V.MAX_N} points an index holds")
        if self._vbuf is None:
            if values is not None:
                raise ValueError("values given but none are attached to this index (see attach_values)")
        else:
            if values is None:
                raise ValueError("this index has attached values: insert(points, values) needs the new points' values")
            if np.ndim(points) == 1 and np.ndim(values) == (0 if self._vflat else 1):
                values = np.asarray(values)[None]  # one point, its value or row
            vals, flat = V.values(values, len(arr), "values")
            if len(vals) != len(arr) or flat != self._vflat or vals.shape[1] != self._vbuf.shape[1]:
                raise ValueError(f"values must have shape {(len(arr),) if self._vflat else (len(arr), self._vbuf.shape[1])} "
                                 f"like the attached values, got {np.shape(values)}")
            if vals.dtype != self._vbuf.dtype:
                raise TypeError(f"values must have the attached dtype {self._vbuf.dtype}, got {vals.dtype}; convert explicitly")
            rows = self._id_bound()
            if rows + len(vals) > len(self._vbuf):
                grown = np.empty((max(2 * len(self._vbuf), rows + len(vals), 16), self._vbuf.shape[1]), self._vbuf.dtype)
                grown[:rows] = self._vbuf[:rows]
                self._vbuf = grown
            self._vbuf[rows : rows + len(vals)] = vals
        return self._dynamic().insert(arr)

    @_writer
    def remove(self, ids):
        """Remove points by id. Raises ValueError for an id that is not (or no longer) present."""
        ids = np.atleast_1d(np.asarray(ids))
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.size and ids.dtype.kind == "u" and ids.max() > V.INDEX_MAX:  # would wrap to negative ids
            raise ValueError(f"ids: {int(ids.max())} is not in the index (never inserted or already removed)")
        ids = ids.astype(np.int64).ravel()
        dyn = self._dynamic()
        bad = ids[(ids < 0) | (ids >= dyn.next_id)]
        if bad.size == 0:
            bad = ids[~dyn.alive[ids]]
        if bad.size == 0 and len(np.unique(ids)) != len(ids):
            raise ValueError("ids contains duplicates")
        if bad.size:
            raise ValueError(f"ids: {int(bad[0])} is not in the index (never inserted or already removed)")
        dyn.remove(ids)

    # -- queries -----------------------------------------------------------------------------
    def _halfspaces(self, normals, offsets):
        # NaN/inf: checked by the compiled query (after the cast to the index dtype), except on
        # the dynamic path, which may have no compiled part to ask.
        check = self._dyn is not None
        a = V.queries(normals, self.d, self.dtype, "normals", check_finite=check)
        b = V.offsets(offsets, a.shape[0], "offsets", check_finite=check)
        return a, b

    @_reader
    def report(self, normals, offsets, *, n_threads=None, return_scores=False, return_sorted=True):
        """Report the points in each closed half-space ``{x : <normals[j], x> >= offsets[j]}``.

        Parameters
        ----------
        normals : array_like, shape (m, d)
            Half-space normals; cast to the index dtype (a copy, never in place).
        offsets : array_like, shape (m,) or scalar
            Thresholds b_j, used as float64.
        n_threads : int, optional
            Threads for this call, 1 to 4096 (default: ``hsrgeom.get_num_threads()``). An upper
            bound: a call starts at most as many threads as there are processors, work items and
            threads the process can start (never an error or a crash for lack of them).
        return_scores : bool, default False
            Also return ``<a_j, x>`` (float64) of every reported point in ``result.scores``,
            computed while the point is being read (cheaper than gathering the rows again).
        return_sorted : bool, default True
            Sort each query's ids ascending (as ``scipy.spatial.cKDTree.query_ball_point``'s
            ``return_sorted``). False returns them in the structure's own order (deterministic,
            but not ascending for trees and layers), which skips a sort per query: at ~100 ids
            per query that is about half the cost of a query on a 2-d tree. Scans return ids
            ascending either way.

        Returns
        -------
        HalfspaceResult
            ids of query j in ``ids[lims[j]:lims[j+1]]``, int64 (ascending unless
            ``return_sorted=False``). Exactly the points for which the exact real value of
            ``<a, x>`` is ``>= b`` (boundary included).
        """
        a, b = self._halfspaces(normals, offsets)
        lims, ids, scores, st = self._report(a, b, V.threads(n_threads), bool(return_scores), bool(return_sorted))
        self._stats = QueryStats._from_dict(st)
        return HalfspaceResult(lims, ids, scores)

    def _report(self, a, b, n_threads, scores=False, sort=True):
        if self._dyn:
            return self._dyn.report(a, b, n_threads, scores, sort)
        return self._impl.report(a, b, n_threads, scores, sort)

    @_reader
    def report_one(self, a, b, *, n_threads=None):
        """Ids (int64, ascending) of the points with ``<a, x> >= b`` for one half-space."""
        av = V.vector(a, self.d, self.dtype, "a")
        bv = V.scalar_offset(b, "b")
        lims, ids, _, st = self._report(av, bv, V.threads(n_threads))
        self._stats = QueryStats._from_dict(st)
        return ids

    @_reader
    def count(self, normals, offsets, *, n_threads=None):
        """Number of points in each half-space, int64 array of shape (m,)."""
        a, b = self._halfspaces(normals, offsets)
        if self._dyn:
            lims, _, _, st = self._dyn.report(a, b, V.threads(n_threads), sort=False)
            c = np.diff(lims)
        else:
            c, st = self._impl.count(a, b, V.threads(n_threads))
        self._stats = QueryStats._from_dict(st)
        return c

    @_reader
    def empty(self, normals, offsets, *, n_threads=None):
        """True where the half-space contains no point (stops at the first point found)."""
        a, b = self._halfspaces(normals, offsets)
        if self._dyn:
            lims, _, _, st = self._dyn.report(a, b, V.threads(n_threads), sort=False)
            e = np.diff(lims) == 0
        else:
            e, st = self._impl.empty(a, b, V.threads(n_threads))
        self._stats = QueryStats._from_dict(st)
        return e.astype(bool)

    @_reader
    def sum(self, normals, offsets, values=None, *, power=0, shift=None, n_threads=None):
        """Aggregate over the points of each half-space without listing them.

        For the points x (id i) with exact ``<normals[j], x> >= offsets[j]`` -- the set
        :meth:`report` returns -- computes their number, the sum of their weights
        ``w = max(<normals[j], x> - shift[j], 0) ** power`` and the sum of ``w * values[i]``.
        The inner product in ``w`` is the float64 score of ``report(..., return_scores=True)``.
        Like a weighted kernel sum (scikit-learn's ``KDTree.kernel_density``) with a half-space
        kernel: a tree adds whole nodes inside the half-space without sorting or returning ids,
        and splits a few queries over all threads. (hsrgeom.attention uses it for ReLU^alpha
        attention: power = alpha, values = V.)

        Parameters
        ----------
        normals, offsets
            As in :meth:`report`.
        values : array_like, shape (N,) or (N, dv), or "attached", optional
            Per-point values, row i for id i (N at least the largest id + 1). float32/float64
            are used as they are, other real dtypes as float64. Summed as given: NaN and inf
            propagate like ``numpy.sum``. ``"attached"``: the values given to
            :meth:`attach_values` (structures with ``node_sums`` then add whole subtrees).
        power : int, default 0
            Exponent of the weight (0: every point weighs 1), at most 2**31 - 1; evaluated with
            O(log power) multiplications (repeated multiplication up to 16, squaring beyond).
        shift : array_like, shape (m,) or scalar, optional
            Where the weight starts (default: ``offsets``).
        n_threads : int, optional
            Threads for this call.

        Returns
        -------
        HalfspaceSums
            ``counts`` (int64, m), ``weights`` (float64, m), ``sums`` (float64, (m, dv), or (m,)
            for 1-D values, None without values). Counts are exact; weights and sums are float64
            accumulations (their order depends on the structure and, for scans, on the threads).
        """
        a, b = self._halfspaces(normals, offsets)
        power = V.positive_int(power, "power", minimum=0, maximum=V.MAX_POWER)
        sh = b if shift is None else V.offsets(shift, len(a), "shift")
        attached = isinstance(values, str)
        if attached:
            if values != "attached":
                raise ValueError(f"values must be an array or 'attached', got {values!r}")
            if self._vbuf is None:
                raise ValueError("values='attached' but no values are attached to this index (see attach_values)")
            vals, flat = self._values(), self._vflat
        else:
            vals, flat = (None, False) if values is None else V.values(values, self._id_bound(), "values")
        counts, weights, sums, st = self._sum(a, b, vals, power, sh, V.threads(n_threads), attached)
        self._stats = QueryStats._from_dict(st)
        if vals is None:
            sums = None
        elif flat:
            sums = sums[:, 0]
        return HalfspaceSums(counts, weights, sums)

    def _id_bound(self):
        return self._dyn.next_id if self._dyn else self._impl.n

    def _sum(self, a, b, values, power, shift, n_threads, attached=False):
        if self._dyn:
            return self._dyn.sum(a, b, values, power, shift, n_threads, attached)
        if hasattr(self._impl, "sum"):
            return self._impl.sum(a, b, values, 0, power, shift, n_threads, attached)
        lims, ids, scores, st = self._impl.report(a, b, n_threads, power > 0, False)
        return (*_sums_from_report(lims, ids, scores, values, power, shift, n_threads), st)

    @_reader
    def topk(self, queries, k, *, n_threads=None):
        """Exact maximum inner product search.

        Returns ``(scores, ids)``, each of shape (m, k), best first: the k points with the
        largest exact ``<q, x>``, ties broken by the smaller id. ``scores`` are float64
        evaluations of those inner products, the same in every structure: ``q_0 x_0 + q_1 x_1 +
        ...`` summed left to right, each product rounded (no fused multiply-add), so
        ``+-inf`` (or NaN, inf - inf) where it overflows -- the order stays exact even then.
        ``k`` must be in [0, n].
        """
        q = V.queries(queries, self.d, self.dtype, "queries")
        k = V.positive_int(k, "k", minimum=0, maximum=V.INDEX_MAX)
        if k > self.n:
            raise ValueError(f"k={k} is larger than the number of points n={self.n}")
        run = self._dyn.topk if self._dyn else self._impl.topk
        scores, ids, st = run(q, k, V.threads(n_threads))
        self._stats = QueryStats._from_dict(st)
        return scores, ids

    # -- python protocol ---------------------------------------------------------------------
    @classmethod
    def _from_valid(cls, points, **params):
        """Build from points that already passed validation (no second pass over the data)."""
        obj = cls.__new__(cls)
        obj._build(points, **params)
        return obj

    def _params(self):
        return {}

    @_reader
    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self._params().items())
        return (
            f"{type(self).__name__}(n={self.n}, d={self.d}, dtype={self.dtype.name}{extra}, "
            f"memory={_fmt_bytes(self.memory_bytes)})"
        )

    # -- persistence: hsrgeom's binary format (_format.py has the layout and the reading contract)
    @_reader
    def to_bytes(self):
        """The index in hsrgeom's binary format (what :meth:`save` writes; see :func:`hsrgeom.load`)."""
        return _format.to_bytes(self)

    def save(self, path):
        """Write the index to ``path`` (see :func:`hsrgeom.load`)."""
        _format.save(self, path)

    def __getstate__(self):
        return {"hsrgeom": self.to_bytes()}

    def __setstate__(self, state):
        if "_rw" not in self.__dict__:  # made by object.__new__ (pickle protocols 0 and 1)
            self._init_sync()
        with self._rw.write:
            # checked like a file (hsrgeom.load), and the state must hold this class
            _format.set_state(self, state)


class BruteForce(_Index):
    """Exact half-space reporting by a blocked, multi-threaded scan.

    The reference every other structure is tested against, and the right choice in high
    dimension where no partition prunes. Scores are computed with blocked matrix products
    (Eigen) in the index dtype; points whose rounded score is within a rigorous error bound of
    the threshold are decided in exact arithmetic, so the result is exact.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied; the caller's array is never modified.
    """

    kind = "brute_force"

    def __init__(self, points):
        self._build(V.points(points))

    def _build(self, points):
        self._impl = _compiled("BruteForce", points)(points)
        self._init_common(points)


class QuantizedScan(_Index):
    """Exact half-space reporting by a scan over 8-bit codes of the points, then an exact check
    of the candidates.

    For high dimension, where no partition prunes and every point must be looked at: each point
    is also stored as 8-bit codes with a per-point scale and a proven bound on the coding error,
    so the scan reads 1 byte per coordinate (4x less than float32). A point whose bound cannot
    rule it out is a candidate and is decided by the same exact predicate as :class:`BruteForce`
    on its full-precision row, so the result is exactly the brute-force set; only candidates'
    rows are read (``stats.points_tested`` counts them). Like FAISS's 8-bit scalar quantizer
    followed by ``IndexRefineFlat``, except that the refinement is driven by a bound instead of a
    fixed candidate count. Memory: the points plus ``n * (d + 24)`` bytes. ``topk`` scans the
    full-precision points.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied; the caller's array is never modified.
    n_threads : int, optional
        Threads for the build.
    """

    kind = "quantized_scan"

    def __init__(self, points, *, n_threads=None):
        self._build(V.points(points), n_threads=n_threads)

    def _build(self, points, n_threads=None):
        self._impl = _compiled("QuantizedScan", points)(points, V.threads(n_threads))
        self._init_common(points)


_SPLITS = {"widest": 0, "pca": 1}


class PartitionTree(_Index):
    """Hierarchical space partition for exact half-space reporting in any dimension.

    A binary tree over contiguous ranges of reordered points. Each node keeps conservative
    bounds (an axis-aligned box and a ball); a query skips nodes that lie outside the
    half-space, reports nodes that lie inside as a range, and tests points one by one only in
    leaves that cross the boundary.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied (reordered internally); the caller's array is never modified.
    leaf_size : int, default 32
        Maximum number of points in a leaf (1 to 2**31 - 1).
    split : {"widest", "pca"}, default "widest"
        "widest": median split along the widest box axis (a kd-tree); "pca": median split
        along the principal direction of the node's points (for correlated or low-rank data).
    n_threads : int, optional
        Threads used for the build.
    """

    kind = "partition_tree"
    node_sums = True

    def __init__(self, points, leaf_size=32, split="widest", *, n_threads=None):
        self._build(V.points(points), leaf_size=leaf_size, split=split, n_threads=n_threads)

    def _build(self, points, leaf_size=32, split="widest", n_threads=None):
        leaf_size = V.positive_int(leaf_size, "leaf_size")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        cls = _compiled("PartitionTree", points)
        self._impl = cls(points, leaf_size, _SPLITS[split], V.threads(n_threads))
        self.leaf_size = leaf_size
        self.split = split
        self._init_common(points)

    @property
    def node_count(self):
        return self._impl.node_count

    def _params(self):
        return {"leaf_size": self.leaf_size, "split": self.split}


class SimplicialPartitionTree(_Index):
    """An r-way partition tree whose partitions are built for a low crossing number.

    Theory (Matousek 1992, Chan 2012): every node splits its points into about r cells of equal
    size such that any hyperplane crosses only O(r^(1-1/d)) of them; the partition is found by
    multiplicative weights ("iterative reweighting") over a test set of hyperplanes, and a
    half-space report then costs O(n^(1-1/d) + k) in the worst case, for any query.

    This implementation is a heuristic version of that construction: per node it builds a test
    set of a few hundred hyperplanes (random directions at random point offsets, and
    hyperplanes through d random points), and carves the children one at a time as cells of
    the arrangement of test hyperplanes drawn with probability proportional to their weights;
    each hyperplane that crosses a new child has its weight doubled, so later children avoid
    it. No crossing-number bound is proven for it -- measure it with :meth:`crossing_stats`
    (see docs/simplicial.md). Queries use the same conservative box + ball bounds and the same
    exact predicate as :class:`PartitionTree`, so the result is exact; the partition affects
    only the cost. Build is deterministic for a given ``seed`` and any number of threads.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
        Copied (reordered internally); the caller's array is never modified.
    r : int, default 16
        Fan-out: children per node (2 <= r <= 256).
    leaf_size : int, default 32
        Maximum number of points in a leaf.
    seed : int, default 0
        Seed of the randomised partition (0 <= seed < 2**64).
    n_threads : int, optional
        Threads used for the build.
    """

    kind = "simplicial"
    node_sums = True

    def __init__(self, points, r=16, leaf_size=32, seed=0, *, n_threads=None):
        self._build(V.points(points), r=r, leaf_size=leaf_size, seed=seed, n_threads=n_threads)

    def _build(self, points, r=16, leaf_size=32, seed=0, n_threads=None):
        r = V.positive_int(r, "r", minimum=2, maximum=256)
        leaf_size = V.positive_int(leaf_size, "leaf_size")
        seed = V.positive_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        cls = _compiled("SimplicialPartitionTree", points)
        self._impl = cls(points, r, leaf_size, seed, V.threads(n_threads))
        self.r, self.leaf_size, self.seed = r, leaf_size, seed
        self._init_common(points)

    @property
    def node_count(self):
        """Number of tree nodes."""
        return self._impl.node_count

    @property
    def depth(self):
        """Depth of the tree (0: the root is a leaf)."""
        return self._impl.depth

    def _params(self):
        return {"r": self.r, "leaf_size": self.leaf_size, "seed": self.seed}

    @_reader
    def crossing_stats(self, normals, offsets, *, n_threads=None):
        """Measure how the partition's cells meet the hyperplanes ``<normals[j], x> = offsets[j]``.

        For every query and every internal node whose bounds do not decide it (the nodes a
        report recurses into), one record. Returns a dict of arrays: ``lims`` (int64, m + 1;
        the records of query j are ``lims[j]:lims[j+1]``), and per record ``depth`` (0 at the
        root), ``fanout`` (number of children), ``crossed`` (children with points strictly on
        both sides of the hyperplane, decided exactly: the crossing number of the node's
        partition), ``undecided`` (children the box + ball bounds cannot decide: what the query
        pays) and ``node_crossed`` (1 if the node itself has points on both sides).

        Measures the static tree; an index changed by insert/remove raises RuntimeError.
        """
        if self._dyn:
            raise RuntimeError("crossing_stats measures the static tree; it is not available after insert/remove")
        a, b = self._halfspaces(normals, offsets)
        return self._impl.crossing_stats(a, b, V.threads(n_threads))


class ConvexLayers(_Index):
    """Onion layers for output-sensitive half-plane reporting (d = 2 only).

    Layer 0 is the convex hull of the points, layer 1 the hull of the rest, and so on. A query
    finds each layer's vertex extreme in the normal's direction by a search over the edges'
    angles, reports the contiguous arc of that layer inside the half-plane, and stops at the
    first layer whose extreme vertex is outside (every deeper point lies in that layer's hull).
    Query cost O((layers reached) log n + k). Hulls use exact orientation predicates, so the
    layers are exactly nested and the result is exact.

    Shallow table (the equivalent of fractional cascading the layers, for the first
    ``table_layers`` layers): the normal directions are cut into up to 1024 arcs; for each arc
    and each level j the table keeps the few vertices of layer j that are extreme for the
    arc's directions, and the points of the layers above j that a half-plane missing layer j
    can hold (measured: ~1.06 k candidates for k = 100 reported). A query whose half-plane
    misses one of those layers (decided exactly) finds the first such level with two
    vectorised comparisons of eight levels each, and tests that level's candidates, stored
    contiguously; deeper queries take the layer-by-layer walk. Building it finds, for each
    vertex of the covered layers and each deeper covered layer, the edges the vertex sees
    (+2.7 s at 10^7 uniform points); memory 24 (float32) or 32 (float64) bytes per candidate,
    at most 4 candidates per point (levels past that are dropped).

    The build peels the layers in batches: the live points outside a polygon slightly inside
    the current hull are collected once (a kd-tree skips the boxes inside it), and layer after
    layer is peeled from them with a monotone chain while the layer still encloses that polygon
    (checked exactly). Peeling every point is superlinear (uniform points have about n^(2/3)
    layers): measured 3 s at n = 10^6 and 81 s at 10^7 (uniform, float32). With
    ``max_layers``, peeling stops after that many layers (``max_layers=65`` is all the shallow
    table uses), and a :class:`PartitionTree` over all the points answers every query the table
    does not (measured at 10^7 uniform points: build 12 s instead of 81 s, the same 0.15 us per
    table query; a deep query costs what the tree's costs).

    Parameters
    ----------
    points : array_like, shape (n, 2), float32 or float64
    table_layers : int, default 64
        Layers the shallow table covers, at most 64 (0: no table, every query walks the
        layers). Fewer when the table would hold more than 4 candidates per point, or when
        fewer than ``table_layers + 1`` layers are peeled.
    max_layers : int, optional
        Most layers peeled (default: all). When the peel stops early, the tree answers what
        the table does not (the layer-by-layer walk is not used). The peel also stops early
        when it stalls: on degenerate data (identical or collinear points, a few locations)
        every layer holds one or a few points and costs a pass over the rest, O(n^2) in all;
        the peel stops once its work exceeds ~256 per peeled point plus 32 per point (sets of
        up to 4096 points are always peeled completely). ``peeled`` and ``layers`` say where it
        stopped.
    n_threads : int, optional
        Threads used to build that tree (peeling is sequential).
    """

    kind = "convex_layers"

    def __init__(self, points, table_layers=64, max_layers=None, *, n_threads=None):
        self._build(V.points(points), table_layers=table_layers, max_layers=max_layers, n_threads=n_threads)

    def _build(self, points, table_layers=64, max_layers=None, n_threads=None):
        if points.shape[1] != 2:
            raise ValueError(f"ConvexLayers needs points of shape (n, 2), got d={points.shape[1]}")
        table_layers = V.positive_int(table_layers, "table_layers", minimum=0, maximum=64)
        if max_layers is not None:
            max_layers = V.positive_int(max_layers, "max_layers", minimum=0, maximum=V.INDEX_MAX)
        cls = _compiled("ConvexLayers", points)
        self._impl = cls(points, table_layers, -1 if max_layers is None else max_layers, V.threads(n_threads))
        self.table_layers = table_layers
        self.max_layers = max_layers
        self._init_common(points)

    @property
    def layers(self):
        """Number of peeled convex layers."""
        return self._impl.layers

    @property
    def peeled(self):
        """Points on the peeled layers (n unless ``max_layers`` or a stall stopped the peel)."""
        return self._impl.peeled

    def layer_sizes(self):
        """Number of vertices of each layer, outermost first (int64 array)."""
        return self._impl.layer_sizes()

    def _params(self):
        return {"table_layers": self.table_layers, "max_layers": self.max_layers}


class ConvexLayers3(_Index):
    """Onion layers of 3-D convex hulls for output-sensitive half-space reporting (d = 3 only).

    Layer 0 is the convex hull of the points, layer 1 the hull of the rest, and so on; each
    layer keeps its hull vertices and hull edges. A query, from the outside in, finds the
    layer's vertex extreme in the normal's direction by hill-climbing along hull edges (exact
    comparisons, so ties and rounding cannot stop the walk early: on a convex polytope a vertex
    without a better neighbour is a global maximum), stops at the first layer whose extreme
    vertex is outside (every deeper point lies in that layer's hull), and otherwise reports the
    layer's vertices inside by a search over hull edges from it (they form a connected
    subgraph). Hulls use exact orientation predicates, so the layers are exactly nested and the
    result is exact.

    Cost per query: O(sum over the layers reached of (walk length + k_layer)) + the core (below).
    Measured walks are short (a handful of steps per layer, starting from the previous layer's
    answer); in the worst case one walk can visit every vertex of its layer, so the proven bound
    is only O((layers reached) * h + k) with h the largest layer size. The optimal O(log n + k)
    structures for d = 3 (Afshani & Chan's shallow cuttings, 2009) are not implemented;
    :class:`ShallowCutting3` is a shallow cutting on a fixed grid of directions (no worst-case
    bound, faster on the data measured).

    Build: one Quickhull per layer over the points not known to be deep (O(n) per layer, about
    n^(1/2) layers for uniform points), so peeling stops after ``max_layers`` layers or when it
    reaches a deep "guard" polytope (inner points at the 90 % quantile in 64 sampled
    directions); the remaining points (and any flat remainder: coplanar, collinear, fewer than 4
    points) form a core kept in a PartitionTree, searched only when every layer's extreme vertex
    is inside the half-space. Measured: n = 10^6 (uniform, gaussian) in 14-19 s on one core
    (docs/layers3.md).

    Stats: ``nodes_visited`` counts walk positions (at least one per layer reached),
    ``points_tested`` membership tests (plus the core's).

    Parameters
    ----------
    points : array_like, shape (n, 3), float32 or float64
    max_layers : int, default 256
        Most layers peeled; the rest goes to the core.
    n_threads : int, optional
        Threads used to build the core tree (peeling is sequential).
    """

    kind = "convex_layers3"

    def __init__(self, points, max_layers=256, *, n_threads=None):
        self._build(V.points(points), max_layers=max_layers, n_threads=n_threads)

    def _build(self, points, max_layers=256, n_threads=None):
        if points.shape[1] != 3:
            raise ValueError(f"ConvexLayers3 needs points of shape (n, 3), got d={points.shape[1]}")
        max_layers = V.positive_int(max_layers, "max_layers", minimum=0, maximum=V.INDEX_MAX)
        cls = _compiled("ConvexLayers3", points)
        self._impl = cls(points, max_layers, V.threads(n_threads))
        self.max_layers = max_layers
        self._init_common(points)

    @property
    def layers(self):
        """Number of peeled convex layers (0 when the points are flat or too few)."""
        return self._impl.layers

    @property
    def core_size(self):
        """Points left in the core (not on a peeled layer)."""
        return self._impl.core_size

    def layer_sizes(self):
        """Number of vertices of each layer, outermost first (int64 array)."""
        return self._impl.layer_sizes()

    def _params(self):
        return {"max_layers": self.max_layers}

    @_reader
    def __repr__(self):
        return (
            f"ConvexLayers3(n={self.n}, layers={self._impl.layers}, core={self._impl.core_size}, "
            f"dtype={self.dtype.name}, max_layers={self.max_layers}, memory={_fmt_bytes(self.memory_bytes)})"
        )


class ShallowCutting3(_Index):
    """A shallow cutting of the dual arrangement over a grid of directions (d = 3 only), with a
    PartitionTree for the queries it cannot answer.

    Dual view: point x is the linear function a -> <a, x>, and a query reports the functions at
    or above b at its normal a. Normals are mapped to the faces of a cube (a / max_i |a_i|);
    each face is cut into ``grid`` x ``grid`` squares of two triangles. At each grid direction
    c and for growing depths k_0 < k_1 < ... (8, 10, 12, ... up to ``max_depth``, ~1.25x apart)
    the structure keeps the k_j-th largest <c, x>; over a triangle these values, interpolated
    linearly, form a surface lying above every point outside the triangle's *conflict list* at
    level j (the points among the top k_j of one of its three corners). A query finds its
    triangle, the shallowest level whose surface is below b at its normal (a certificate with
    rigorous rounding margins), and tests only that list: every point inside is in it. Queries
    that no level certifies (deeper than ``max_depth``, zero normals) are answered by the tree.
    The result is exact on any input (every reported point passes the shared exact predicate).

    Cost per query: locating the triangle and a binary search over the levels (O(log levels)),
    then the list: ~k plus the points near the query's plane that a corner direction ranks
    higher (measured in docs/cuttings.md). The grid is fixed, not placed as in the optimal
    constructions (Afshani & Chan 2009, Chan & Tsakalidis 2016), so no O(k) bound on a list
    holds in the worst case; the certificate only fails over to the tree, it never loses points.
    ``topk`` is the tree's.

    Build: the tree, the top ``max_depth`` points of each grid direction (6 (grid + 1)^2 of
    them; a threshold query on the tree, ties in any order; a direction whose k-th value more
    than 8 k points share keeps no list), and the lists (their total capped at
    ``max_candidates``; the deepest levels go first when over it).

    Parameters
    ----------
    points : array_like, shape (n, 3), float32 or float64
    grid : int, optional
        Squares per cube-face side, a power of two up to 256. Default: from n (finer for more
        points: 16 at 10^6, 32 at 10^7).
    max_depth : int, default 1024
        The deepest level's k (queries reporting up to about this many points use the cutting).
    max_candidates : int, optional
        Cap on the stored list entries of all triangles together; default 2 n.
    n_threads : int, optional
        Threads used by the build.
    """

    kind = "shallow_cutting3"

    def __init__(self, points, grid=None, max_depth=1024, max_candidates=None, *, n_threads=None):
        self._build(V.points(points), grid=grid, max_depth=max_depth, max_candidates=max_candidates,
                    n_threads=n_threads)

    @staticmethod
    def default_grid(n):
        """The grid used for n points when none is given: the finest with at least 300 points
        per triangle (12 grid^2 triangles)."""
        g = 1
        while g < 256 and 12 * (2 * g) ** 2 * 300 <= n:
            g *= 2
        return g

    def _build(self, points, grid=None, max_depth=1024, max_candidates=None, n_threads=None):
        if points.shape[1] != 3:
            raise ValueError(f"ShallowCutting3 needs points of shape (n, 3), got d={points.shape[1]}")
        n = len(points)
        grid = self.default_grid(n) if grid is None else V.positive_int(grid, "grid", maximum=256)
        if grid & (grid - 1):
            raise ValueError(f"grid must be a power of two in [1, 256], got {grid}")
        max_depth = V.positive_int(max_depth, "max_depth", minimum=0, maximum=V.INDEX_MAX)
        max_candidates = 2 * n if max_candidates is None else V.positive_int(
            max_candidates, "max_candidates", minimum=0, maximum=V.INDEX_MAX)
        cls = _compiled("ShallowCutting3", points)
        self._impl = cls(points, grid, max_depth, max_candidates, V.threads(n_threads))
        self.max_depth, self.max_candidates = max_depth, max_candidates
        self._init_common(points)

    @property
    def grid(self):
        """Squares per cube-face side."""
        return self._impl.grid

    @property
    def levels(self):
        """Number of levels kept (0: every query goes to the tree)."""
        return self._impl.levels

    @property
    def candidates(self):
        """Stored conflict-list entries, all triangles and levels."""
        return self._impl.candidates

    def depths(self):
        """k_j of each kept level (int64 array)."""
        return self._impl.depths()

    def _params(self):
        return {"grid": self.grid, "max_depth": self.max_depth, "max_candidates": self.max_candidates}

    @_reader
    def __repr__(self):
        return (
            f"ShallowCutting3(n={self.n}, grid={self.grid}, levels={self.levels}, "
            f"depth<={self._impl.max_depth}, candidates={self.candidates}, dtype={self.dtype.name}, "
            f"memory={_fmt_bytes(self.memory_bytes)})"
        )


_STRUCTURES = (BruteForce, QuantizedScan, PartitionTree, SimplicialPartitionTree, ConvexLayers, ConvexLayers3, ShallowCutting3)


# ---- auto selection ----------------------------------------------------------------------------
_SMALL_N = 4096  # below this a scan is as fast as any traversal
_PROBE_N = 50_000  # sample size of the probe
_PROBE_MIN_OUTPUT = 16  # points reported by a probe query at least
_DEFAULT_OUTPUT = (1e-3, 100, 1000)  # no output_size: 0.1 % of n, clipped to [100, 1000] points
# Convex layers build superlinearly (measured: 3 s / 15 s at n = 10^6, 81 s / 370 s at 10^7 for
# d = 2 / 3), so "auto" peels them completely only up to this n; above it, d = 2 peels the
# layers its shallow table uses (12 s at 10^7) and d = 3 is not a candidate.
_LAYERS_MAX_N = 2_000_000
# ShallowCutting3 is a d = 3 candidate for outputs up to this many points (its default levels
# reach ~400-900 points, the tree answers deeper queries)
_CUTTING_MAX_OUTPUT = 256
_TABLE_PEEL = 65
_FULL_PROBE_RATIO = 4  # above 16 x the sample size, a tree predicted within this factor of the scan is timed at n
_PROBE_MARGIN = 0.85  # a tree must be this much faster (time ratio) than the scan to be chosen
_MEASURED_MARGIN = 0.9  # ... or this much, when both were timed on all n points
_QUANTIZED_MAX_BATCH = 4  # QuantizedScan instead of the scan for batches up to this size ...
_QUANTIZED_MIN_BYTES = 64 << 20  # ... over at least this many bytes of points
# The pca split is a candidate for 4 <= d <= this only: its build forms the d x d covariance and
# its eigenvectors and rotates the points, O(n d^2 + d^3) (probing it took 278 s at d = 4096,
# n = 5000); the widest split stays a candidate at every d.
_PCA_MAX_D = 64


# Build cost classes of the candidates (within a class builds are < 2x apart): the scan, then
# trees and ShallowCutting3 (1, the default), then convex layers
_BUILD_CLASS = {BruteForce: 0, ConvexLayers: 2, ConvexLayers3: 2}


def _probe_normals(sample, m, rng):
    """Probe directions: half random, half taken from the data (centred sample points)."""
    n, d = sample.shape
    a = rng.standard_normal((m, d))
    half = m // 2
    # in float64 and scaled to |x| < 2: points near the float32 or float64 limit would
    # overflow the mean, the differences or the norms (and give NaN normals); a direction
    # does not depend on the scale
    x = _unit_scaled(sample)[0]
    centered = x[rng.choice(n, size=half)] - x.mean(axis=0)
    a[:half] = centered + 1e-12 * a[:half]
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return a.astype(sample.dtype)


def _unit_scaled(points):
    """(points / s in float64, s) with s > 0 a power of two and every |points / s| < 2 (exact:
    a division by a power of two)."""
    top = float(np.max(np.abs(points))) if points.size else 0.0
    s = float(np.ldexp(1.0, int(np.frexp(top)[1]) - 1)) if top > 0 else 1.0  # 2^(e-1) <= top < 2^e
    return points.astype(np.float64) / s, s


def _probe_offsets(points, a, k):
    """Offsets at which each half-space of normals ``a`` holds about ``k`` of ``points``: midway
    between the k-th and (k+1)-th largest projections, so that no point lies on the boundary
    (an offset equal to a point's projection makes every query decide a tie exactly, which
    real queries rarely do; it cost ShallowCutting3 13 % per probe query, 3x before
    filter.hpp's for_each_unsure)."""
    x, scale = _unit_scaled(points)  # projections of points near the float64 limit overflow
    proj = x @ a.T.astype(np.float64)
    top = -np.partition(-proj, [k - 1, k], axis=0)
    # finite: a probe offset only needs to be near the k-th projection
    big = np.finfo(np.float64).max
    with np.errstate(over="ignore"):
        return np.clip(0.5 * (top[k - 1] + top[k]) * scale, -big, big)


def _time_queries(index, a, b, repeat=5, n_threads=1):
    """Best time of ``index.count(a, b)`` per query (one thread by default), after a warm-up call."""
    import time

    index.count(a, b, n_threads=n_threads)  # warm-up: first touch of memory
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        index.count(a, b, n_threads=n_threads)
        best = min(best, time.perf_counter() - t)
    return best / len(a)


def _speedup(cls, n, d, m):
    """Threads a call of m queries over n points will use (roughly as the C++ side decides,
    common.hpp kParallelWork): a scan splits the points, the other structures the queries."""
    from ._core import get_num_threads

    t = get_num_threads()
    if cls is BruteForce:
        return t if n * m * d >= 4e6 else 1
    return min(t, m) if m * (64 * d + 4 * d * np.sqrt(n)) >= 4e6 else 1


def _choose(pts, batch_size, output_size, params):
    """Times candidate structures on samples; returns (class, params, reason).

    The probe queries report the caller's share of the points, f = output_size / n: each
    candidate is timed (one thread) on a sample of s points with half-spaces holding f s of them
    and on a quarter of the sample holding f s / 4 (both at least 16 points: below that the
    workload is one of fixed small outputs, and both probes report 16). The growth between the
    two, exponent g, extrapolates to n: o + (t(s) - o) (n/s)^g / threads, with o the cost of a
    call that finds nothing and the threads the call would use at n (a scan's g is exactly 1).
    """
    n, d = pts.shape
    rng = np.random.default_rng(0)
    sample = pts[np.sort(rng.choice(n, size=_PROBE_N, replace=False))] if n > _PROBE_N else pts
    small = sample[::4]
    s = len(sample)
    m = int(min(max(batch_size or 16, 1), 64))
    a = _probe_normals(sample, m, rng)
    if output_size is None:
        frac, lo, hi = _DEFAULT_OUTPUT
        k_user, said = float(np.clip(frac * n, lo, hi)), "default"
    else:
        k_user, said = float(output_size), "given"
    k_s = int(np.clip(round(k_user / n * s), _PROBE_MIN_OUTPUT, s // 2))
    k_q = int(np.clip(round(k_user / n * s / 4), min(k_s, _PROBE_MIN_OUTPUT), len(small) // 2))
    b, b_small = _probe_offsets(sample, a, k_s), _probe_offsets(small, a, k_q)
    candidates = [("brute_force", BruteForce, {})]
    splits = [params["split"]] if "split" in params else (["widest"] if d <= 3 or d > _PCA_MAX_D else ["widest", "pca"])
    for split in splits:
        candidates.append((f"partition_tree(split={split})", PartitionTree, {**params, "split": split}))
    if d == 2 and not params:  # above _LAYERS_MAX_N only the table's layers are peeled
        prm = {} if n <= _LAYERS_MAX_N else {"max_layers": _TABLE_PEEL}
        candidates.append((f"convex_layers(max_layers={_TABLE_PEEL})" if prm else "convex_layers", ConvexLayers, prm))
    if d == 3 and not params and k_user <= _CUTTING_MAX_OUTPUT:
        # probed with the grid n points would get (the sample's default grid is coarser: its
        # lists would be longer than at n), capped so that a triangle keeps ~60 sample points
        grid = min(ShallowCutting3.default_grid(n), ShallowCutting3.default_grid(5 * s))
        candidates.append(("shallow_cutting3", ShallowCutting3, {"grid": grid}))
    if d == 3 and not params and n <= _LAYERS_MAX_N:
        candidates.append(("convex_layers3", ConvexLayers3, {}))
    # SimplicialPartitionTree is not a candidate: on every case measured (docs/simplicial.md) it
    # tests 1.5-5x the points PartitionTree tests and builds ~10x slower.
    # the cost of a call that finds nothing (validation, result arrays), the same for all n
    overhead = _time_queries(BruteForce._from_valid(sample[:1]), a, b)
    # A structure whose queries cost less than a call's fixed cost per query is timed on the
    # probe queries repeated 8 times per call: otherwise its work (time - overhead) is a small
    # difference of noisy times, and so is the growth between sample and quarter sample
    # (ConvexLayers at 10^6 uniform points: 0.04 us of work beside 0.08 us of overhead; one
    # noisy probe extrapolated it as n^0.6 and auto took a tree 5x slower)
    tile = 8
    a8, b8, b8_small = np.tile(a, (tile, 1)), np.tile(b, tile), np.tile(b_small, tile)
    overhead8 = None
    predicted, tested, shown = {}, {}, []
    for name, cls, prm in candidates:
        idx, idx_small = cls._from_valid(sample, **prm), cls._from_valid(small, **prm)
        t, ovh = _time_queries(idx, a, b), overhead
        tested[name] = idx.stats.points_tested.mean() / s
        if t < 3 * overhead:
            if overhead8 is None:
                overhead8 = _time_queries(BruteForce._from_valid(sample[:1]), a8, b8)
            t, ovh = _time_queries(idx, a8, b8), overhead8
            t_small = _time_queries(idx_small, a8, b8_small)
        else:
            t_small = _time_queries(idx_small, a, b_small)
        work, work_small = max(t - ovh, 1e-9), max(t_small - ovh, 1e-9)
        # a scan's work is exactly linear in n; on a small sample its fixed costs make it look
        # sublinear, which would favour it wrongly when extrapolated
        growth = 1.0 if cls is BruteForce else float(np.clip(np.log(work / work_small) / np.log(4), 0.2, 1.0))
        predicted[name] = overhead + work * (n / s) ** growth / _speedup(cls, n, d, batch_size or m)
        shown.append(f"{name} {predicted[name] * 1e3:.3g} ms (~n^{growth:.2f})")
    reason = (
        f"probe on {s} sampled points (and a quarter of them), batches of {m} queries reporting {k_s} "
        f"({k_q}) points; predicted per query at n={n} reporting {k_user:.0f} points ({said} output_size): "
        f"{', '.join(shown)}"
    )
    built, built_name, margin = None, None, _PROBE_MARGIN
    # Far above the sample size a close call is measured, not extrapolated: at d = 16 a tree's
    # cost grows ~linearly up to 10^6 points and then bends (uniform: 1.8x the scan at 10^6, 0.66x
    # at 10^7), and a scan streaming n points from memory runs slower per point than one over a
    # cached sample (docs/performance.md). The tree is built on all n points (kept if chosen) and
    # timed against the scan on the same queries.
    trees = [k for k, c, _ in candidates if c is PartitionTree]
    if n > 16 * s and trees:
        tree = min(trees, key=predicted.get)
        ratio = predicted[tree] / predicted["brute_force"]
        if 1 / _FULL_PROBE_RATIO < ratio < _FULL_PROBE_RATIO:
            big = pts[np.sort(rng.choice(n, size=4 * s, replace=False))]
            b_n = _probe_offsets(big, a, int(np.clip(round(k_user / n * len(big)), 2, len(big) // 2)))
            # one copy of the points at a time: the scan's is freed before the tree is built
            predicted["brute_force"] = _time_queries(BruteForce._from_valid(pts), a, b_n, repeat=2, n_threads=None)
            cls, prm = next((c, p) for nm, c, p in candidates if nm == tree)
            built, built_name, margin = cls._from_valid(pts, **prm), tree, _MEASURED_MARGIN
            predicted[tree] = _time_queries(built, a, b_n, repeat=2, n_threads=None)
            tested[tree] = built.stats.points_tested.mean() / n
            reason += (f"; close call at n={n}: {tree} built on all points and timed against the scan "
                       f"({predicted[tree] * 1e3:.3g} vs {predicted['brute_force'] * 1e3:.3g} ms per query)")
    # a timing spike must not pick a tree that prunes nothing: it must also skip half the points
    usable = [k for k, _, _ in candidates if tested[k] < 0.5 or k == "brute_force"]
    best = min(predicted[k] for k in usable)
    # candidates are listed by build cost: take the cheapest to build that is within the margin
    # of the fastest (the scan unless a structure is clearly faster); among those whose builds
    # cost about the same (trees and ShallowCutting3: < 2x apart, convex layers 10-30x), the
    # fastest (with "cheapest first" alone, auto lost up to 1.9x to the cutting at d = 3, n ~ 3*10^4)
    within = [k for k in usable if predicted[k] <= best / margin]
    build = {nm: _BUILD_CLASS.get(c, 1) for nm, c, _ in candidates}
    name = min((k for k in within if build[k] == build[within[0]]), key=predicted.get)
    cls, prm = next((c, p) for nm, c, p in candidates if nm == name)
    reason += f" -> {name}"
    if cls is ShallowCutting3:
        prm = {}  # the grid for n points, not the probe's
    if name != built_name:
        built = None
    # The probe's sample sits in cache, where a scan is not bound by memory; over points far
    # larger than cache, few queries per call (decoding) read every point once per call, and
    # QuantizedScan reads 1 byte per coordinate instead of 4-8. Measured at n = 10^6, d = 128,
    # float32: 1.7x (1 query), 2.1x (2), 1.4x (4), 1.0x (8) faster than BruteForce.
    if (cls is BruteForce and not params and batch_size is not None and batch_size <= _QUANTIZED_MAX_BATCH
            and d >= 32 and pts.nbytes >= _QUANTIZED_MIN_BYTES):
        cls, prm = QuantizedScan, {}
        reason += (f"; then quantized_scan instead: batches of {batch_size} <= {_QUANTIZED_MAX_BATCH} queries "
                   f"over {pts.nbytes / 2**20:.0f} MiB of points (>= {_QUANTIZED_MIN_BYTES >> 20} MiB) are "
                   "memory-bound, and its 8-bit codes read 4-8x fewer bytes")
    return cls, prm, reason, built


def _check_params(cls, params, pts):
    """Raises what ``cls(pts, **params)`` would for unknown or invalid parameters, before any
    build: names must be keyword parameters of its constructor; values pass its checks on an
    empty set of points of the same dtype and d (a build of nothing)."""
    allowed = [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "points")]
    unknown = [name for name in params if name not in allowed]
    if unknown:
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {unknown[0]!r} "
                        f"(its parameters: {', '.join(allowed) or 'none'})")
    cls._from_valid(pts[:0], **params)


def build_index(points, kind="auto", *, batch_size=None, output_size=None, **params):
    """Build a half-space reporting index.

    Parameters
    ----------
    points : array_like, shape (n, d), float32 or float64
    kind : {"auto", "brute_force", "quantized_scan", "partition_tree", "simplicial", "convex_layers", "convex_layers3", "shallow_cutting3"}
        "simplicial" builds a :class:`SimplicialPartitionTree` (never chosen by "auto": measured
        slower than a partition tree everywhere), "convex_layers3" a :class:`ConvexLayers3` and
        "shallow_cutting3" a :class:`ShallowCutting3`.
        "auto": for n < 4096 a scan; otherwise each candidate structure (the scan, partition
        trees, and, when no params are given, convex layers for d = 2 -- above n = 2 000 000
        with ``max_layers=65``: a full peel takes minutes at 10^7 -- and for d = 3 a shallow
        cutting when queries report <= 256 points, and convex layers up to
        n = 2 000 000) is built on a sample of
        the points (up to 50 000) and on a quarter of it, and timed on probe queries (random and
        data-derived directions; repeated 8x per call for structures faster than a call's fixed
        cost) reporting the share ``output_size / n`` of each; the growth
        between the two extrapolates each candidate's time to n points. Above 16x the sample size
        (n > 800 000), when the best partition tree is predicted within 4x of the scan, that tree
        is built on all n points and timed against the scan on the same queries (extrapolation
        from a sample misjudges both at d ~ 16), and kept if chosen. A tree is chosen only if it is
        clearly faster than the scan, so "auto" is never much slower than ``BruteForce``; among
        candidates within 1.18x (1 / 0.85) of the fastest, the cheapest to build is taken (convex layers
        build ~10-30x slower than a partition tree), or the fastest of those that build about as
        cheaply (partition trees and ShallowCutting3). When that is the scan, ``batch_size <= 4``,
        d >= 32 and the points take >= 64 MiB, a :class:`QuantizedScan` is built instead (the
        probe's cached sample cannot show that such scans are memory-bound). The choice and its
        measured reason are in ``index.kind`` and ``index.reason``.
    batch_size : int, optional
        Typical number of queries per call, when known (a scan gains more from large batches).
    output_size : float, optional
        Typical number of points one query reports, when known (trees gain most when it is
        small). Default: 0.1 % of n, at least 100 and at most 1000.
    **params
        Passed to the chosen structure (e.g. ``leaf_size``, ``split`` for a partition tree);
        with "auto", the parameters of :class:`PartitionTree`. They are checked whatever is
        built (also when "auto" takes the scan): an unknown name is a TypeError, an invalid
        value a ValueError, as from the constructor.
    """
    pts = V.points(points)
    n, d = pts.shape
    kinds = {c.kind: c for c in _STRUCTURES}
    if kind != "auto" and kind not in kinds:
        raise ValueError(f"kind must be 'auto' or one of {sorted(kinds)}, got {kind!r}")
    if batch_size is not None:
        batch_size = V.positive_int(batch_size, "batch_size", maximum=V.INDEX_MAX)
    if output_size is not None:
        output_size = V.nonnegative_float(output_size, "output_size")
    _check_params(kinds.get(kind, PartitionTree), params, pts)
    if kind != "auto":
        return kinds[kind]._from_valid(pts, **params)
    if n < _SMALL_N:
        cls, prm, reason, idx = BruteForce, {}, f"n={n} < {_SMALL_N}: a scan is as fast as any traversal", None
    else:
        cls, prm, reason, idx = _choose(pts, batch_size, output_size, params)
    if _core.get_verbose():  # see hsrgeom.set_verbose
        print(f"hsrgeom auto: {reason}", file=sys.stderr, flush=True)
    if idx is None:
        idx = cls._from_valid(pts, **prm)
    idx.reason = reason
    return idx


def _from_bytes(data):
    """The index held by ``data`` (see :func:`hsrgeom.load`)."""
    return _format.from_bytes(data)


load = _format.load
