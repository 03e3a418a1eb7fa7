"""The base class of every index: validation, locking, ids, attached values, dynamic updates,
the query methods and persistence, over a compiled structure in ``self._impl``.

A structure (``_structures.py``) subclasses :class:`Index`, sets ``kind`` and implements
``_build(points, **params)`` (validated points in, ``self._impl`` built, ``_init_common``
called) and ``_params()``. Everything else is shared here. Subclasses that set ``kind`` are
registered in ``Index._kinds`` (kind -> class), which this layer uses for what it builds
itself (the scan of a dynamic index's tail) and to read a pickled state, without importing
the modules above it.
"""
from __future__ import annotations

import threading

import numpy as np

from . import _format
from . import _validate as V
from ._dynamic import DynamicState
from ._results import HalfspaceResult, HalfspaceSums, QueryStats
from ._sync import RWLock
from ._sync import reader as _reader
from ._sync import writer as _writer


def _fmt_bytes(b):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024


_NO_STATS = QueryStats._empty()
_SYNC = ("_rw", "_tls")  # per-object synchronisation state: never copied to another index


class Index:
    """The base class of every hsrgeom index (``isinstance(x, hsrgeom.Index)``, type hints).

    Shared query interface. Subclasses set ``kind`` and build ``self._impl``.

    Threads: an index may be shared by threads. Reads (every query, ``points``, ``ids``,
    ``values``, ``n``/``len``, ``memory_bytes``, ``repr``, ``to_bytes``/``save``/pickling) run
    concurrently, without the GIL in the compiled part; writes (``insert``, ``remove``,
    ``attach_values``, unpickling) run alone, waiting for the reads under way, and a waiting
    write goes before reads that arrive after it (a per-index readers-writer lock,
    writer-preferring). So every answer is the answer of some sequential order of the calls.
    ``stats`` is per thread: each thread sees the counters of its own last query on the index.
    """

    kind = "?"
    #: kind -> class of every subclass that sets ``kind`` (the first one to claim a kind keeps it)
    _kinds = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Index._kinds.setdefault(cls.kind, cls)

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
        self._dyn = None  # DynamicState (the compiled dynamic index) once insert/remove was used
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
        return extra + (self._dyn.memory_bytes if self._dyn else self._impl.memory_bytes)

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
                if self.node_sums and rows:
                    self._impl.set_value_sums(self._vbuf, 0, threads)
            else:  # every block with consecutive ids (new blocks get theirs at insert)
                self._dyn.set_value_sums(self._vbuf, threads)
        except BaseException:  # interrupted (KeyboardInterrupt): nothing attached
            self._vbuf = None
            raise
        return self

    # -- dynamic updates -----------------------------------------------------------------------
    def _dynamic(self, ids=None, next_id=None):
        """The dynamic state, made on first use: the static structure becomes its first block,
        holding the ids ``ids`` (default ``arange(n)``; ``next_id`` default n)."""
        if self._dyn is None:
            n = self._impl.n
            ids = np.arange(n, dtype=np.int64) if ids is None else ids
            sums = self.node_sums and self._vbuf is not None and len(ids) == n and (n == 0 or ids[-1] == n - 1)
            self._dyn = DynamicState(self, ids, n if next_id is None else next_id, value_sums=sums)
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
        # the value rows go to the compiled insert only where new blocks get node sums from them
        return self._dynamic().insert(arr, self._vbuf if self.node_sums else None)

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
            bad = ids[~dyn.alive(ids)]
        if bad.size:
            raise ValueError(f"ids: {int(bad[0])} is not in the index (never inserted or already removed)")
        # duplicates: ValueError("ids contains duplicates") from the compiled remove (an
        # interruptible pass; np.unique would sort the ids without reacting to Ctrl-C)
        dyn.remove(ids, self._vbuf if self.node_sums else None)

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
        self._stats = QueryStats._from_rows(st)
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
        self._stats = QueryStats._from_rows(st)
        return ids

    @_reader
    def count(self, normals, offsets, *, n_threads=None):
        """Number of points in each half-space, int64 array of shape (m,)."""
        a, b = self._halfspaces(normals, offsets)
        c, st = (self._dyn or self._impl).count(a, b, V.threads(n_threads))
        self._stats = QueryStats._from_rows(st)
        return c

    @_reader
    def empty(self, normals, offsets, *, n_threads=None):
        """True where the half-space contains no point (stops at the first point found)."""
        a, b = self._halfspaces(normals, offsets)
        e, st = (self._dyn or self._impl).empty(a, b, V.threads(n_threads))
        self._stats = QueryStats._from_rows(st)
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
        self._stats = QueryStats._from_rows(st)
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
        return self._impl.sum(a, b, values, 0, power, shift, n_threads, attached)

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
        self._stats = QueryStats._from_rows(st)
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
            other = _format.from_state(state, type(self), tuple(Index._kinds.values()))
            self.__dict__.update({k: v for k, v in other.__dict__.items() if k not in _SYNC})
