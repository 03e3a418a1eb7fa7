"""ShardedIndex: one exact half-space index over shards that live in Dask workers.

How a query flows: validate as the local index does (a zero-point local index raises the same
errors); classify every (query, shard) pair from the manifest's boxes, rounding-safe
(:func:`._partition.classify`); group the visited shards by the worker holding them and submit
one task per worker thread, *on the shards' futures* so Dask runs it where they live, each
shard answering the queries that need it; gather the small per-shard answers and merge them
(ids ascending, top-k by the exact order with the local tie rule).
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import uuid

import numpy as np

import hsrgeom

from . import _manifest as M
from . import _shard as T
from ._merge import score_error, topk_merge
from ._partition import INSIDE, PARTIAL, SKIP, assign_cells, box_bounds, classify, kd_cuts, probe_kd_fraction

DEFAULT_SHARD_SIZE = 1_000_000
PIECE_ROWS = 2_000_000  # rows per map task of the kd shuffle
AUTO_KD_FRACTION = 0.5  # partition="auto" takes kd when probes visit fewer than this share of shards


class ShardedStats:
    """Cost of the last query call of a :class:`ShardedIndex`.

    Attributes
    ----------
    queries : int
    shards_visited : ndarray of int64, shape (m,)
        Shards that ran a task for each query.
    shards_inside : ndarray of int64, shape (m,)
        Shards wholly inside the half-space whose count came from the manifest (``count``).
    tasks : int
        Dask tasks submitted.
    bytes_moved : int
        Bytes of query arguments sent to the shards and of answers gathered.
    seconds : float
        Wall time of the call.
    """

    __slots__ = ("queries", "shards_visited", "shards_inside", "tasks", "bytes_moved", "seconds")

    def __init__(self, queries=0, shards_visited=None, shards_inside=None, tasks=0, bytes_moved=0, seconds=0.0):
        z = np.zeros(queries, dtype=np.int64)
        self.queries, self.tasks, self.bytes_moved, self.seconds = queries, tasks, bytes_moved, seconds
        self.shards_visited = z if shards_visited is None else shards_visited
        self.shards_inside = z if shards_inside is None else shards_inside

    def __repr__(self):
        v = float(self.shards_visited.mean()) if self.queries else 0.0
        return (f"ShardedStats(queries={self.queries}, mean shards visited={v:.2f}, tasks={self.tasks}, "
                f"bytes_moved={self.bytes_moved}, seconds={self.seconds:.4f})")


def _nbytes(x):
    if isinstance(x, np.ndarray):
        return x.nbytes
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(v) for v in x)
    return 0


def _connect(client, timeout):
    """(client, owned cluster or None, whether the client is ours to close)."""
    from distributed import Client, LocalCluster

    if client is None:
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster, True
    if isinstance(client, Client):
        if client.status not in ("running", "connecting", "newly-created"):
            raise ValueError(f"client: the Dask client is {client.status}, not running")
        return client, None, False
    if isinstance(client, (str, os.PathLike)):
        s = os.fspath(client)
        kw = {"scheduler_file": s} if s.endswith(".json") or os.path.isfile(s) else {"address": s}
        try:
            c = Client(**kw, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"hsrgeom.distributed: cannot reach the Dask scheduler at {s!r} within "
                                  f"{timeout} s ({type(exc).__name__}: {exc})") from None
        return c, None, True
    raise TypeError(f"client must be None, a distributed.Client, a scheduler address or a scheduler file, "
                    f"got {type(client).__name__}")


def _source(X):
    """(how, source, array) of the build input: ("npy", path, memmap), ("dask", dask array,
    the same) -- a zarr path becomes a dask array over its chunks -- or ("numpy", array, the same)."""
    if isinstance(X, (str, os.PathLike)):
        p = os.path.abspath(os.fspath(X))
        if p.endswith(".npy"):
            try:
                arr = np.load(p, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise ValueError(f"X: cannot read the .npy file {p!r} ({type(exc).__name__}: {exc})") from None
            return "npy", p, arr
        arr = _zarr_source(p)
        return "dask", arr, arr
    if hasattr(X, "dask") and hasattr(X, "to_delayed"):
        return "dask", X, X
    try:
        arr = np.asarray(X)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"X must be array-like, a dask array, a .npy path or a zarr array path, "
                        f"got {type(X).__name__}") from exc
    return "numpy", arr, arr


def _zarr_source(p):
    """A dask array over the zarr array at path ``p`` (one dask chunk per zarr chunk; the
    workers read the chunks, the client only the array's metadata)."""
    if not os.path.exists(p):
        raise ValueError(f"X: {p!r} does not exist; a path must name a .npy file or a zarr array")
    try:
        import dask.array as da
        import zarr
    except ImportError as exc:
        raise ImportError(f"X: reading the zarr array {p!r} needs zarr: pip install 'hsrgeom[distributed]' "
                          f"({exc})") from None
    try:
        z = zarr.open_array(p, mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several types for "not an array here"
        raise ValueError(f"X: {p!r} is not a zarr array ({type(exc).__name__}: {exc}); a path must name a .npy "
                         f"file or a zarr array") from None
    return da.from_zarr(z)


def _check_points_meta(arr):
    if arr.ndim != 2:
        raise ValueError(f"X must be a 2-D array of shape (n, d), got shape {tuple(arr.shape)}")
    dt = np.dtype(arr.dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"X must be float32 or float64, got {dt}; convert explicitly (e.g. X.astype(np.float64)) "
                        f"so that no precision is lost silently")
    if arr.shape[1] < 1:
        raise ValueError(f"X must have at least one column (d >= 1), got shape {tuple(arr.shape)}")
    return int(arr.shape[0]), int(arr.shape[1]), dt


def _locked(method):
    """Run the method under the index's lock: calls from several threads are serialized (each
    still runs its tasks in parallel over the workers), so every answer is that of some
    sequential order of the calls."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return run


def _wait_all(futs):
    """Wait for futures; re-raise the first task error (e.g. a corrupted shard file)."""
    from distributed import wait

    wait(futs)
    for f in futs:
        if f.status == "error":
            f.result()  # raises the task's exception


class ShardedIndex:
    """An exact half-space index whose shards are Dask task outputs living in worker memory.

    Make one with :meth:`build` or :meth:`open`; it answers ``report``, ``count``, ``empty``,
    ``topk`` and ``sum`` exactly as a local index over the same points (global ids = row numbers
    of X, then ids given by :meth:`insert`), and takes ``insert``/``remove``/``flush``.
    See ``docs/distributed.md``.
    """

    def __init__(self, *a, **k):
        raise TypeError("use ShardedIndex.build(X, path, ...) or ShardedIndex.open(path, ...)")

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def _new(cls, path, man, client, timeout):
        self = object.__new__(cls)
        self._client = self._cluster = None
        self._owns = False
        self._futs = []
        self._nthreads = {}
        self._lock = threading.RLock()
        self._client, self._cluster, self._owns = _connect(client, timeout)
        self.path = os.path.abspath(os.fspath(path))
        self._token = uuid.uuid4().hex[:12]
        self._load_manifest(man)
        self._stats = ShardedStats()
        return self

    def _load_manifest(self, man):
        self._man = man
        self.d, self.dtype = man["d"], np.dtype(man["dtype"])
        sh = man["shards"]
        S = len(sh)
        self._lo = np.zeros((S, self.d))
        self._hi = np.zeros((S, self.d))
        self._nonempty = np.zeros(S, dtype=bool)
        for s, e in enumerate(sh):
            if e["box"] is not None and e["n"] > 0:
                self._lo[s], self._hi[s], self._nonempty[s] = e["box"][0], e["box"][1], True
        self._alive = np.array([e["n"] for e in sh], dtype=np.int64)
        self._next_id = man["next_id"]
        self._seq = man["wal_seq"]
        self._dirty = set()
        self._delta_ids = [np.zeros(0, np.int64) for _ in range(S)]
        self._tomb = [np.zeros(0, np.int64) for _ in range(S)]
        self._probe = hsrgeom.BruteForce(np.zeros((0, self.d), self.dtype))

    @classmethod
    def build(cls, X, path, client=None, kind="auto", partition="auto", shard_size=None, values=None, *,
              shards=None, seed=0, timeout=30.0, **params):
        """Build a sharded index over the rows of ``X`` into the new directory ``path``.

        Parameters
        ----------
        X : ndarray, dask array, or path to a .npy file or a zarr array, shape (n, d), float32 or float64
            Global ids are the row numbers. A .npy path is read by the workers (memory-mapped),
            a zarr array's chunks by the workers through ``dask.array.from_zarr`` (the client
            reads only its metadata); either must be on a file system they share, like ``path``.
        path : str or PathLike
            A directory that does not exist or is empty; receives the shard files and the
            manifest (see ``hsrgeom.distributed._manifest``).
        client : None, distributed.Client, scheduler address or scheduler-file path
            None starts a ``LocalCluster`` (one single-threaded worker process per core),
            closed with the index.
        kind : str
            The kind of every shard's index (as :func:`hsrgeom.build_index`); "auto" is resolved
            per shard at build and recorded in the manifest.
        partition : {"auto", "kd", "chunks"}
            "kd": cells of kd cuts computed on a sample, rows shuffled to their cell, one tight
            box per shard; "chunks": contiguous row blocks; "auto": kd when probe queries on the
            sample visit fewer than half the cells, else chunks.
        shard_size : int, optional
            Points per shard (default 10^6); ``shards=`` gives the number of shards instead.
        values : array_like, shape (n,) or (n, dv), optional
            Per-point values stored with the shards, for ``sum(..., values="attached")``.
        seed : int
            Seed of the sample for the cuts and the probe.
        timeout : float
            Seconds to wait for a scheduler given by address or file.
        **params
            Passed to the shards' builds (e.g. ``leaf_size``).
        """
        how, src, arr = _source(X)
        n, d, dt = _check_points_meta(arr)
        if partition not in ("auto", "kd", "chunks"):
            raise ValueError(f"partition must be 'auto', 'kd' or 'chunks', got {partition!r}")
        if shards is not None:
            if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
                raise ValueError(f"shards must be a positive integer, got {shards!r}")
            S = int(shards)
        else:
            size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
            S = max(1, -(-n // int(size)))
        if S > 1 << 20:
            raise ValueError(f"shards: {S} shards is more than {1 << 20}")
        vals, flat = None, False
        if values is not None:
            vals = np.asarray(values)
            flat = vals.ndim == 1
            if vals.ndim == 1:
                vals = vals[:, None]
            if vals.ndim != 2 or len(vals) != n or vals.dtype not in (np.float32, np.float64):
                raise ValueError(f"values must be float32/float64 of shape (n,) or (n, dv) with n={n}, "
                                 f"got {np.shape(values)} {getattr(values, 'dtype', '')}")
            if not np.isfinite(vals).all():
                raise ValueError("values contains NaN or inf")
        path = os.path.abspath(os.fspath(path))
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise ValueError(f"path {path!r} exists and is not an empty directory")
        created = not os.path.exists(path)
        os.makedirs(path, exist_ok=True)
        try:
            return cls._build(how, src, arr, n, d, dt, path, client, kind, partition, S, vals, flat, seed,
                              timeout, params)
        except BaseException:
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for name in os.listdir(path):
                    p = os.path.join(path, name)
                    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)
            raise

    @classmethod
    def _build(cls, how, src, arr, n, d, dt, path, client, kind, partition, S, vals, flat, seed, timeout, params):
        self = object.__new__(cls)
        self._lock = threading.RLock()
        self._futs = []
        self._nthreads = {}
        self._client, self._cluster, self._owns = _connect(client, timeout)
        self._token = uuid.uuid4().hex[:12]
        try:
            return self._build_on_cluster(how, src, arr, n, d, dt, path, kind, partition, S, vals, flat, seed,
                                          params)
        except BaseException:
            self.close()
            raise

    def _build_on_cluster(self, how, src, arr, n, d, dt, path, kind, partition, S, vals, flat, seed, params):
        rng = np.random.default_rng(seed)
        ns = min(n, max(20_000, 64 * S), 1_000_000)
        rows = np.sort(rng.choice(n, ns, replace=False)) if ns < n else np.arange(n)
        # a dask array's sample is computed by the workers (a zarr array is never read in the client)
        sample = np.asarray(self._client.compute(arr[rows]).result() if how == "dask" else arr[rows])
        if sample.size and not np.isfinite(sample).all():
            raise ValueError("X contains NaN or inf (found in the sample)")
        reason = f"partition={partition!r} given"
        nodes = kd_cuts(sample, S) if partition != "chunks" and S > 1 else []
        if partition == "auto":
            if S == 1:
                partition, reason = "chunks", "one shard"
            else:
                frac = probe_kd_fraction(sample, nodes, S, rng)
                partition = "kd" if frac < AUTO_KD_FRACTION else "chunks"
                reason = (f"probe queries (0.1% selectivity, {ns} sample points) would visit {frac:.1%} of the kd "
                          f"cells: {'<' if partition == 'kd' else '>='} {AUTO_KD_FRACTION:.0%}")
        if partition == "chunks":
            nodes = []
        metas = self._build_files(how, src, arr, n, d, dt, path, kind, partition, S, nodes, vals, flat, params)
        hints = {s: e.pop("worker") for s, e in enumerate(metas)}
        man = {"format": M.FORMAT, "version": M.VERSION, "d": d, "dtype": dt.name, "n": n, "next_id": n,
               "partition": partition, "partition_reason": reason, "cuts": nodes, "kind": kind, "params": params,
               "generation": 0, "wal_seq": 0, "values": None if vals is None else
               {"dtype": vals.dtype.name, "dv": int(vals.shape[1]), "flat": bool(flat)}, "shards": metas}
        M.write(path, man)
        self.path = path
        self._load_manifest(man)
        self._stats = ShardedStats()
        self._futs = [None] * S
        self._open_shards(range(S), hints)
        return self

    def _build_files(self, how, src, arr, n, d, dt, path, kind, partition, S, nodes, vals, flat, params):
        c = self._client
        shard_path = [os.path.join(path, f"shard_{s:05d}.g0.hsr") for s in range(S)]

        def rows_of(lo, hi):
            if how == "npy":
                return ("npy", src)
            if how == "dask":
                return c.compute(arr[lo:hi])
            return np.ascontiguousarray(arr[lo:hi])

        def vals_of(lo, hi):
            return None if vals is None else np.ascontiguousarray(vals[lo:hi])

        if partition == "chunks":
            b = (n * np.arange(S + 1, dtype=np.int64)) // S
            futs = [c.submit(T.build_chunk_shard, rows_of(b[s], b[s + 1]), int(b[s]), int(b[s + 1]),
                             vals_of(b[s], b[s + 1]), shard_path[s], kind, params, flat, self._token, pure=False)
                    for s in range(S)]
            return c.gather(futs)
        tmp = os.path.join(path, "_shuffle")
        os.makedirs(tmp)
        P = max(1, -(-n // PIECE_ROWS))
        pb = (n * np.arange(P + 1, dtype=np.int64)) // P
        pieces = [c.submit(T.partition_piece, rows_of(pb[p], pb[p + 1]), int(pb[p]), int(pb[p + 1]),
                           vals_of(pb[p], pb[p + 1]), nodes, S, tmp, p, pure=False) for p in range(P)]
        futs = [c.submit(T.build_cell_shard, pieces, s, tmp, d, dt, vals is not None, shard_path[s], kind, params,
                         flat, self._token, pure=False) for s in range(S)]
        metas = c.gather(futs)
        shutil.rmtree(tmp, ignore_errors=True)
        return metas

    @classmethod
    def open(cls, path, client=None, *, timeout=30.0):
        """Open the index directory ``path``: check the manifest, load every shard into the
        workers (each a task "read the file -> build its index", checked against the manifest's
        sha256), then replay the write-ahead log of updates not yet flushed."""
        man = M.read(path)
        self = cls._new(path, man, client, timeout)
        try:
            self._futs = [None] * len(man["shards"])
            self._open_shards(range(len(man["shards"])))
            for seq, op, rec in M.wal_records(self.path, self._seq):
                if op == "insert":
                    self._apply_insert(rec["points"], rec["ids"], rec.get("values"))
                elif op == "remove":
                    self._apply_remove(rec["ids"], rec["shards"])
                else:
                    raise ValueError(f"hsrgeom.distributed: {self.path}: unknown log record {op!r} (seq {seq})")
                self._seq = seq
        except BaseException:
            self.close()
            raise
        return self

    def _open_shards(self, which, hints=None):
        """Submit the load tasks "read the file -> build" of shards ``which`` and wait. With
        ``hints`` (shard -> address of the worker whose build task left the built state there),
        each goes to that worker and takes the state instead of building again; its spec (the
        lineage Dask replays after a loss) still names only the files and their sha256."""
        man, new = self._man, []
        for s in which:
            e = man["shards"][s]
            key = f"hsrgeom-shard-{self._token}-{s}-g{man['generation']}"
            w = hints.get(s) if hints else None
            where = {"workers": [w], "allow_other_workers": True} if w else {}
            self._futs[s] = self._client.submit(T.open_shard, os.path.join(self.path, e["file"]),
                                                os.path.join(self.path, e["ids_file"]), e["sha256"],
                                                e["ids_sha256"], self._token, key=key, pure=False, **where)
            new.append(self._futs[s])
        try:
            _wait_all(new)
        finally:
            if hints:
                self._unpin([f.key for f in new])
                # built states that a load task did not take (it ran elsewhere): free them
                self._client.run(T.drop_built, self._token, on_error="ignore")

    def _unpin(self, keys):
        """Drop the worker restrictions of loaded shards' tasks on the scheduler: they only
        placed the first run next to the built state. A restriction would outlive its worker,
        and Dask (2026.8) leaves a lost task restricted to dead workers in state "no-worker"
        forever, even with allow_other_workers; a recomputation must be free to go anywhere."""

        def unpin(dask_scheduler, keys):  # nested: pickled by value (the scheduler need not import hsrgeom)
            for k in keys:
                ts = dask_scheduler.tasks.get(k)
                if ts is not None:
                    ts.worker_restrictions = ts.host_restrictions = None
                    ts.loose_restrictions = False
            return True

        self._client.run_on_scheduler(unpin, keys=keys)

    # ---- properties --------------------------------------------------------------------------
    @property
    def client(self):
        """The ``distributed.Client`` the shards live in."""
        return self._client

    @property
    def n(self):
        """Number of live points."""
        return int(self._alive.sum())

    def __len__(self):
        return self.n

    @property
    def partition(self):
        return self._man["partition"]

    @property
    def stats(self):
        """:class:`ShardedStats` of the last query call."""
        return self._stats

    @property
    def shards(self):
        """One dict per shard: file, live points, kind, params, box, pending updates, workers holding it."""
        who = self._client.who_has(self._futs) if self._futs and self._client else {}
        out = []
        for s, e in enumerate(self._man["shards"]):
            f = self._futs[s]
            out.append({"shard": s, "file": e["file"], "n": int(self._alive[s]), "kind": e["kind"],
                        "params": e["params"],
                        "box": (self._lo[s].tolist(), self._hi[s].tolist()) if self._nonempty[s] else None,
                        "pending_updates": s in self._dirty, "key": None if f is None else f.key,
                        "workers": list(who.get(f.key, ())) if f is not None else []})
        return out

    def __repr__(self):
        addr = getattr(getattr(self._client, "scheduler", None), "address", None) if self._client else None
        return (f"ShardedIndex(path={self.path!r}, n={self.n}, d={self.d}, dtype={self.dtype.name}, "
                f"shards={len(self._futs)}, partition={self.partition!r}, pending_updates={len(self._dirty)}, "
                f"scheduler={addr!r})")

    # ---- life cycle --------------------------------------------------------------------------
    @_locked
    def close(self):
        """Release the shards; close the client and LocalCluster this index started."""
        self._futs = []
        if self._owns and self._client is not None:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        self._client = self._cluster = None
        self._owns = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _live(self):
        if self._client is None:
            raise ValueError("this ShardedIndex is closed")

    # ---- queries -----------------------------------------------------------------------------
    def _halfspaces(self, normals, offsets):
        self._live()
        self._probe.count(normals, offsets)  # the local index's checks and messages
        a = np.ascontiguousarray(np.asarray(normals), dtype=self.dtype)
        b = np.ascontiguousarray(np.broadcast_to(np.asarray(offsets, dtype=np.float64), (len(a),)))
        return a, b

    def _run(self, fn, groups, *extra):
        """fn(shard, *args, *extra) for every (shard, args) group, gathered: (results in the
        order of ``groups``, bytes moved, tasks submitted). The shards that one worker holds
        are queried by one task per worker thread (:meth:`_batches`), so a batch costs a few
        scheduler round trips per worker, not one per shard."""
        c = self._client
        batches = self._batches(groups) if self._group_by_worker and len(groups) > 1 else \
            [[i] for i in range(len(groups))]
        futs = []
        for bt in batches:
            if len(bt) == 1:
                s, args = groups[bt[0]]
                futs.append(c.submit(fn, self._futs[s], *args, *extra, pure=False))
            else:
                futs.append(c.submit(T.run_many, fn, [self._futs[groups[i][0]] for i in bt],
                                     [groups[i][1] for i in bt], extra, pure=False))
        out = c.gather(futs) if futs else []
        res = [None] * len(groups)
        for bt, r in zip(batches, out):
            if len(bt) == 1:
                res[bt[0]] = r
            else:
                for i, ri in zip(bt, r):
                    res[i] = ri
        return res, sum(_nbytes(args) for _, args in groups) + sum(_nbytes(r) for r in res), len(futs)

    #: query the shards of one worker in one task per worker thread (False: one task per shard)
    _group_by_worker = True

    def _batches(self, groups):
        """Positions of ``groups`` by task: the shards held by one worker split into at most
        its thread count of tasks (balanced by the bytes of their arguments, a proxy for the
        queries each runs); a shard not in memory anywhere (lost, being recomputed) gets a task
        of its own. Placement is only a hint: a task whose shards moved meanwhile is still
        answered exactly (Dask moves the inputs to it)."""
        keys = [self._futs[s].key for s, _ in groups]
        who = self._client.who_has([self._futs[s] for s, _ in groups])
        holders = [list(who.get(k, ())) for k in keys]
        if any(h and h[0] not in self._nthreads for h in holders):
            self._nthreads = dict(self._client.nthreads())
        by_worker, out = {}, []
        for i, h in enumerate(holders):
            if h:
                by_worker.setdefault(h[0], []).append(i)
            else:
                out.append([i])
        for w, idx in by_worker.items():
            t = max(1, min(int(self._nthreads.get(w, 1)), len(idx)))
            loads, buckets = [0] * t, [[] for _ in range(t)]
            for i in sorted(idx, key=lambda i: -_nbytes(groups[i][1])):
                j = loads.index(min(loads))
                buckets[j].append(i)
                loads[j] += _nbytes(groups[i][1]) + 1
            out.extend(sorted(b) for b in buckets)
        return out

    def _groups(self, mask, a, b):
        return [(s, (qs, a[qs], b[qs])) for s in np.nonzero(mask.any(axis=0))[0]
                for qs in [np.nonzero(mask[:, s])[0]]]

    @_locked
    def report(self, normals, offsets, *, return_scores=False, output="numpy"):
        """Report the points of each closed half-space ``{x : <normals[j], x> >= offsets[j]}``:
        a :class:`hsrgeom.HalfspaceResult` with global ids ascending per query, exactly the local
        index's. ``output="dask"``: the (query, id) pairs as a lazy ``dask.dataframe.DataFrame``
        with int64 columns ``query`` and ``id``, not gathered: one partition per visited shard
        (that shard's pairs for this batch, sorted by (query, id)), computed by a task on the
        shard's worker; divisions unknown. ``.compute().sort_values(["query", "id"])`` gives
        the pairs of the numpy result, row by row."""
        t0 = time.perf_counter()
        a, b = self._halfspaces(normals, offsets)
        if output not in ("numpy", "dask"):
            raise ValueError(f"output must be 'numpy' or 'dask', got {output!r}")
        m = len(a)
        visit = classify(a, b, self._lo, self._hi, self._nonempty) != SKIP
        groups = self._groups(visit, a, b)
        if output == "dask":
            return self._report_dask(groups, visit, m, t0)
        res, moved, ntasks = self._run(_report_task, [(s, args[1:]) for s, args in groups], bool(return_scores))
        rows = [np.repeat(qs, cnt) for (_, (qs, _, _)), (cnt, _, _) in zip(groups, res)]
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        ids = np.concatenate([g for _, g, _ in res]) if res else np.zeros(0, np.int64)
        scores = None
        if return_scores:
            scores = np.concatenate([sc for _, _, sc in res]) if res else np.zeros(0)
        order = np.lexsort((ids, rows))
        out = hsrgeom.HalfspaceResult.from_rows(rows[order], ids[order], m,
                                               None if scores is None else scores[order])
        self._stats = ShardedStats(m, visit.sum(axis=1).astype(np.int64), None, ntasks, moved,
                                   time.perf_counter() - t0)
        return out

    def _report_dask(self, groups, visit, m, t0):
        try:
            import dask.dataframe as dd
            import pandas as pd
        except ImportError as exc:
            raise ImportError(f"output='dask' needs dask[dataframe] (pandas, pyarrow): "
                              f"pip install 'hsrgeom[distributed]' ({exc})") from None
        meta = pd.DataFrame({"query": np.zeros(0, np.int64), "id": np.zeros(0, np.int64)})
        futs = [self._client.submit(T.shard_report_frame, self._futs[s], a, b, qs, pure=False)
                for s, (qs, a, b) in groups]
        self._stats = ShardedStats(m, visit.sum(axis=1).astype(np.int64), None, len(groups), 0,
                                   time.perf_counter() - t0)
        if not futs:
            return dd.from_pandas(meta, npartitions=1)
        return dd.from_delayed(futs, meta=meta, verify_meta=False)

    @_locked
    def count(self, normals, offsets):
        """Number of points in each half-space (int64, m); shards wholly inside answer from
        the manifest without a task."""
        t0 = time.perf_counter()
        a, b = self._halfspaces(normals, offsets)
        st = classify(a, b, self._lo, self._hi, self._nonempty)
        out = ((st == INSIDE) * self._alive[None, :]).sum(axis=1).astype(np.int64)
        part = st == PARTIAL
        groups = self._groups(part, a, b)
        res, moved, ntasks = self._run(T.shard_count, [(s, args[1:]) for s, args in groups])
        for (_, (qs, _, _)), c in zip(groups, res):
            out[qs] += c
        self._stats = ShardedStats(len(a), part.sum(axis=1).astype(np.int64),
                                   (st == INSIDE).sum(axis=1).astype(np.int64), ntasks, moved,
                                   time.perf_counter() - t0)
        return out

    @_locked
    def empty(self, normals, offsets):
        """True where the half-space holds no point (bool, m)."""
        t0 = time.perf_counter()
        a, b = self._halfspaces(normals, offsets)
        st = classify(a, b, self._lo, self._hi, self._nonempty)
        inside = (st == INSIDE) & (self._alive[None, :] > 0)
        found = inside.any(axis=1)
        part = (st == PARTIAL) & ~found[:, None]
        groups = self._groups(part, a, b)
        res, moved, ntasks = self._run(T.shard_empty, [(s, args[1:]) for s, args in groups])
        for (_, (qs, _, _)), e in zip(groups, res):
            found[qs] |= ~np.asarray(e, dtype=bool)
        self._stats = ShardedStats(len(a), part.sum(axis=1).astype(np.int64),
                                   inside.sum(axis=1).astype(np.int64), ntasks, moved,
                                   time.perf_counter() - t0)
        return ~found

    @_locked
    def topk(self, queries, k):
        """Exact maximum inner product search: ``(scores, ids)``, each (m, k), best first, ties
        by the smaller id (the local rule). Shards are asked in the order of their box's upper
        bound; a shard is skipped when that bound is below a rigorous lower bound of the current
        k-th exact score."""
        t0 = time.perf_counter()
        self._live()
        self._probe.topk(queries, 0)  # the local checks of queries
        q = np.ascontiguousarray(np.asarray(queries), dtype=self.dtype)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if k < 0 or k > self.n:
            raise ValueError(f"k={k} is larger than the number of points n={self.n}" if k > 0 else
                             f"k must be >= 0, got {k}")
        m, k = len(q), int(k)
        if k == 0 or m == 0:
            return np.zeros((m, k)), np.zeros((m, k), np.int64)
        up, _ = box_bounds(q, self._lo, self._hi)
        usable = self._nonempty & (self._alive > 0)
        up[:, ~usable] = -np.inf
        order = np.argsort(-up, axis=1, kind="stable")
        al = np.where(usable, self._alive, 0)[order]
        before = np.cumsum(al, axis=1) - al
        first = np.zeros((m, len(self._futs)), dtype=bool)
        np.put_along_axis(first, order, (before < k) & (al > 0), axis=1)
        cand = [[] for _ in range(m)]
        tasks, moved = 0, 0
        best = None
        visited = first.copy()
        for mask in (first, None):
            if mask is None:  # round 2: shards whose bound may still beat the k-th exact score
                lower = best[0][:, -1] - score_error(q, best[2][:, -1:, :])[:, 0]
                lower = np.where(np.isfinite(lower), lower, -np.inf)
                mask = ~visited & usable[None, :] & (up >= lower[:, None])
                visited |= mask
            groups = [(s, (qs, q[qs])) for s in np.nonzero(mask.any(axis=0))[0] for qs in [np.nonzero(mask[:, s])[0]]]
            res, mv, nt = self._run(T.shard_topk, [(s, (args[1],)) for s, args in groups], k)
            tasks, moved = tasks + nt, moved + mv
            if best is not None:
                for j in range(m):
                    cand[j] = [(best[0][j], best[1][j], best[2][j])]
            for (_, (qs, _)), (sc, g, p) in zip(groups, res):
                for r, j in enumerate(qs):
                    cand[j].append((sc[r], g[r], p[r]))
            best = self._merge(q, cand, k)
        self._stats = ShardedStats(m, visited.sum(axis=1).astype(np.int64), None, tasks, moved,
                                   time.perf_counter() - t0)
        return best[0], best[1]

    def _merge(self, q, cand, k):
        width = max(sum(len(c[1]) for c in cj) for cj in cand)
        m, d = len(q), self.d
        S = np.full((m, width), -np.inf)
        G = np.zeros((m, width), np.int64)
        P = np.zeros((m, width, d), self.dtype)
        valid = np.zeros((m, width), bool)
        for j, cj in enumerate(cand):
            o = 0
            for sc, g, p in cj:
                w = len(g)
                S[j, o:o + w], G[j, o:o + w], P[j, o:o + w], valid[j, o:o + w] = sc, g, p, True
                o += w
        return topk_merge(q, S, G, P, k, valid)

    @_locked
    def sum(self, normals, offsets, values=None, *, power=0, shift=None):
        """Aggregates over the points of each half-space (as :meth:`hsrgeom.Index.sum`): a
        :class:`hsrgeom.HalfspaceSums`; counts exact, weights and sums float64 accumulations.
        ``values``: None, ``"attached"`` (the values given at build / insert) or an array
        indexed by global id (then the ids are gathered to the client)."""
        t0 = time.perf_counter()
        a, b = self._halfspaces(normals, offsets)
        self._probe.sum(normals, offsets, power=power, shift=shift)  # checks power and shift
        m = len(a)
        sh = b if shift is None else np.ascontiguousarray(np.broadcast_to(np.asarray(shift, np.float64), (m,)))
        power = int(power)
        if isinstance(values, str) and values != "attached":
            raise ValueError(f"values must be an array or 'attached', got {values!r}")
        if isinstance(values, str) and self._man["values"] is None:
            raise ValueError("values='attached' but no values were given to ShardedIndex.build")
        if values is not None and not isinstance(values, str):
            return self._sum_gathered(a, b, values, power, sh, m, t0)
        attached = values is not None
        visit = classify(a, b, self._lo, self._hi, self._nonempty) != SKIP
        groups = [(s, (qs, a[qs], b[qs], sh[qs])) for s in np.nonzero(visit.any(axis=0))[0]
                  for qs in [np.nonzero(visit[:, s])[0]]]
        res, moved, ntasks = self._run(T.shard_sum, [(s, args[1:]) for s, args in groups], power, attached)
        counts, weights = np.zeros(m, np.int64), np.zeros(m)
        dv = self._man["values"]["dv"] if attached else 0
        sums = np.zeros((m, dv)) if attached else None
        for (_, (qs, *_)), (c, w, su) in zip(groups, res):
            counts[qs] += c
            weights[qs] += w
            if attached:
                sums[qs] += su
        if attached and self._man["values"]["flat"]:
            sums = sums[:, 0]
        self._stats = ShardedStats(m, visit.sum(axis=1).astype(np.int64), None, ntasks, moved,
                                   time.perf_counter() - t0)
        return hsrgeom.HalfspaceSums(counts, weights, sums)

    def _sum_gathered(self, a, b, values, power, sh, m, t0):
        vals = np.asarray(values)
        if vals.dtype.kind not in "fiu" or vals.ndim not in (1, 2):
            raise ValueError(f"values must be a real array of shape (N,) or (N, dv), got {vals.shape} {vals.dtype}")
        if len(vals) < self._next_id:
            raise ValueError(f"values has {len(vals)} rows; it needs one per id, at least {self._next_id}")
        flat = vals.ndim == 1
        v2 = vals[:, None] if flat else vals
        res = self.report(a, b, return_scores=True)
        rows = res.rows()
        w = T._weights(res.scores, rows, power, sh)
        weights = np.bincount(rows, weights=w, minlength=m)
        sums = hsrgeom.gather_weighted_sum(v2, res.lims, res.ids, w)
        self._stats.seconds = time.perf_counter() - t0
        return hsrgeom.HalfspaceSums(res.counts.astype(np.int64), weights, sums[:, 0] if flat else sums)

    # ---- updates -----------------------------------------------------------------------------
    @_locked
    def insert(self, points, values=None):
        """Add points; returns their global ids (after the largest id ever given). Logged to the
        write-ahead log before they reach the shards (a kd cell's shard, or the smallest shard
        for chunks); durable in shard files after :meth:`flush`."""
        self._live()
        arr = np.asarray(points)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"points must be a 2-D array of shape (m, d), got shape {arr.shape}")
        if arr.dtype != self.dtype:
            raise TypeError(f"points must have the index dtype {self.dtype}, got {arr.dtype}; convert explicitly")
        if arr.shape[1] != self.d:
            raise ValueError(f"points has d={arr.shape[1]} but the index has d={self.d}")
        if arr.size and not np.isfinite(arr).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            raise ValueError(f"points contains NaN or inf (first at index {where})")
        vs = self._man["values"]
        vals = None
        if vs is None and values is not None:
            raise ValueError("values given but the index has no values")
        if vs is not None:
            if values is None:
                raise ValueError("this index has values: insert(points, values) needs the new points' values")
            vals = np.asarray(values)
            vals = vals.reshape(len(arr), 1) if vs["flat"] else vals
            if vals.shape != (len(arr), vs["dv"]) or vals.dtype != np.dtype(vs["dtype"]):
                shape = (len(arr),) if vs["flat"] else (len(arr), vs["dv"])
                raise ValueError(f"values must be {vs['dtype']} of shape {shape}")
        arr = np.ascontiguousarray(arr)
        ids = self._next_id + np.arange(len(arr), dtype=np.int64)
        if len(arr) == 0:
            return ids
        M.wal_append(self.path, self._seq + 1, "insert", points=arr, ids=ids, values=vals)
        self._seq += 1
        self._apply_insert(arr, ids, vals)
        return ids

    def _apply_insert(self, arr, ids, vals):
        if self._man["cuts"]:
            cell = assign_cells(arr, self._man["cuts"])
        else:
            cell = np.full(len(arr), int(np.argmin(self._alive)), dtype=np.int64)
        empty = np.zeros(0, np.int64)
        for s in np.unique(cell):
            sel = np.nonzero(cell == s)[0]
            p, g = arr[sel], ids[sel]
            v = None if vals is None else vals[sel]
            self._futs[s] = self._client.submit(T.apply_update, self._futs[s], p, g, v, empty, pure=False)
            pf = p.astype(np.float64)
            if self._nonempty[s]:
                self._lo[s] = np.minimum(self._lo[s], pf.min(axis=0))
                self._hi[s] = np.maximum(self._hi[s], pf.max(axis=0))
            else:
                self._lo[s], self._hi[s], self._nonempty[s] = pf.min(axis=0), pf.max(axis=0), True
            self._alive[s] += len(sel)
            self._delta_ids[s] = np.concatenate([self._delta_ids[s], g])
            self._dirty.add(int(s))
        self._next_id = max(self._next_id, int(ids[-1]) + 1)

    @_locked
    def remove(self, ids):
        """Remove points by global id (ValueError for an id not present); logged, then applied
        as tombstones in the shards holding them."""
        self._live()
        ids = np.atleast_1d(np.asarray(ids))
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64).ravel() if ids.size else np.zeros(0, np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids contains duplicates")
        S = len(self._futs)
        where = np.full(len(ids), -1, dtype=np.int64)
        for s in range(S):
            hit = np.isin(ids, self._delta_ids[s])
            where[hit] = s
        ask = [s for s in range(S) if self._man["shards"][s]["id_range"] is not None]
        rest = np.nonzero(where < 0)[0]
        if len(rest):
            cand = []
            for s in ask:
                lo, hi = self._man["shards"][s]["id_range"]
                sel = rest[(ids[rest] >= lo) & (ids[rest] <= hi)]
                if len(sel):
                    cand.append((s, sel))
            futs = [self._client.submit(T.holds, self._futs[s], ids[sel], pure=False) for s, sel in cand]
            for (s, sel), h in zip(cand, self._client.gather(futs) if futs else []):
                where[sel[h]] = s
        for s in range(S):
            dead = (where == s) & np.isin(ids, self._tomb[s])
            where[dead] = -1
        if (where < 0).any():
            raise ValueError(f"ids: {int(ids[where < 0][0])} is not in the index (never inserted or already removed)")
        if len(ids) == 0:
            return
        M.wal_append(self.path, self._seq + 1, "remove", ids=ids, shards=where)
        self._seq += 1
        self._apply_remove(ids, where)

    def _apply_remove(self, ids, where):
        z = np.zeros((0, self.d), self.dtype)
        e = np.zeros(0, np.int64)
        vs = self._man["values"]
        zv = None if vs is None else np.zeros((0, vs["dv"]), np.dtype(vs["dtype"]))
        for s in np.unique(where):
            rm = np.sort(ids[where == s])
            self._futs[s] = self._client.submit(T.apply_update, self._futs[s], z, e, zv, rm, pure=False)
            self._alive[s] -= len(rm)
            self._tomb[s] = np.union1d(self._tomb[s], rm)
            self._dirty.add(int(s))

    @_locked
    def flush(self):
        """Rewrite the shards with pending updates into new files, swap the manifest atomically,
        then drop the applied log records and the old files; the shards are reloaded from the
        new files."""
        self._live()
        if not self._dirty:
            return
        man = self._man
        gen = man["generation"] + 1
        dirty = sorted(self._dirty)
        futs = []
        for s in dirty:
            e = man["shards"][s]
            kind = e["kind"] if e["n"] > 0 else (man["kind"] if man["kind"] != "auto" else "auto")
            params = e["params"] if e["n"] > 0 else man["params"]
            p = os.path.join(self.path, f"shard_{s:05d}.g{gen}.hsr")
            futs.append(self._client.submit(T.rewrite_shard, self._futs[s], p, kind, params,
                                            bool(man["values"] and man["values"]["flat"]), self._token, pure=False))
        metas = self._client.gather(futs)
        hints = {s: meta.pop("worker") for s, meta in zip(dirty, metas)}
        old = [(man["shards"][s]["file"], man["shards"][s]["ids_file"]) for s in dirty]
        new = dict(man, shards=list(man["shards"]), generation=gen, wal_seq=self._seq, next_id=self._next_id)
        for s, meta in zip(dirty, metas):
            new["shards"][s] = meta
        new["n"] = int(sum(e["n"] for e in new["shards"]))
        M.write(self.path, new)
        M.wal_drop(self.path, self._seq)
        for pair in old:
            for f in pair:
                try:
                    os.remove(os.path.join(self.path, f))
                except OSError:
                    pass
        futs_keep = self._futs
        self._load_manifest(new)
        self._futs = futs_keep
        self._open_shards(dirty, hints)


def _report_task(state, a, b, scores):
    return T.shard_report(state, a, b, scores)
