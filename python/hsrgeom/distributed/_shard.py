"""What runs inside Dask tasks: building shard files, loading them into live shards, and the
per-shard queries. Imported by the workers (through the task functions), never by the core
package.

A live shard is a :class:`ShardState`, the output of a task "read this shard's file -> build
its index" (:func:`open_shard`), possibly followed by update tasks (:func:`apply_update`) that
each return a *new* state (nothing is modified in place, so Dask can recompute any of them
from its lineage after a worker loss). Invariants of a state:

- ``base`` is an hsrgeom index over the shard file's points with local ids ``0..n-1``;
  ``gids[i]`` is the global id of local id i, strictly ascending (local order = global order,
  so ascending local ids map to ascending global ids and the local tie rule is kept);
- ``dpts``/``dgids`` are the points inserted since the file was written (global ids ascending,
  all larger than any id in ``gids``), queried through ``delta`` (a BruteForce over them);
- ``tomb`` (sorted) holds removed global ids, of ``gids`` or ``dgids``.

A shard is built once: a task that builds a shard file (:func:`build_chunk_shard`,
:func:`build_cell_shard`, :func:`rewrite_shard`) leaves the state it built in its worker
process (:data:`_BUILT`, keyed by the index's token, the file and both sha256), and the load
task :func:`open_shard`, submitted to that worker, takes it instead of building it again. The
load task's spec still names only the file and its checksums, so when the shard is lost Dask
recomputes it from the file (read, checked, built) on any worker.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
from dask.sizeof import sizeof

import hsrgeom

TASK_THREADS = 1  # hsrgeom threads per task: a worker runs one task per worker thread

#: Worker-process-local hand-over from a build task to the load task of the same shard:
#: (token, file path, sha256, ids sha256) -> ShardState. An entry is taken by open_shard, or
#: dropped by drop_built(token) once the index has loaded its shards.
_BUILT = {}


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _header(path):
    """The JSON header of an hsrgeom file (magic, u32 version, u64 length, header)."""
    with open(path, "rb") as f:
        fixed = f.read(20)
        (hlen,) = struct.unpack("<Q", fixed[12:20])
        return json.loads(f.read(hlen))


class ShardState:
    """One live shard (module docstring has the invariants)."""

    __slots__ = ("base", "gids", "dpts", "dgids", "dvals", "delta", "tomb", "bvals", "_bpts")

    def __init__(self, base, gids, dpts, dgids, dvals, tomb, bvals):
        self.base, self.gids, self.dpts, self.dgids, self.dvals = base, gids, dpts, dgids, dvals
        self.tomb, self.bvals = tomb, bvals
        self.delta = hsrgeom.BruteForce(dpts) if len(dpts) else None
        self._bpts = None

    def base_points(self):
        """The base points by local id (a copy made on the first topk, then kept)."""
        if self._bpts is None:
            self._bpts = self.base.points()
        return self._bpts

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__ if k not in ("delta", "_bpts")}

    def __setstate__(self, st):
        self.__init__(st["base"], st["gids"], st["dpts"], st["dgids"], st["dvals"], st["tomb"], st["bvals"])

    @property
    def clean(self):
        return self.delta is None and len(self.tomb) == 0

    def nbytes(self):
        n = self.base.memory_bytes + self.gids.nbytes + self.dpts.nbytes + self.dgids.nbytes + self.tomb.nbytes
        if self.delta is not None:
            n += self.delta.memory_bytes
        for v in (self.dvals, self.bvals, self._bpts):
            n += 0 if v is None else v.nbytes
        return int(n)

    def alive(self):
        return len(self.gids) + len(self.dgids) - len(self.tomb)


@sizeof.register(ShardState)
def _sizeof_shard(s):
    return s.nbytes()


@sizeof.register(hsrgeom.Index)
def _sizeof_index(ix):
    return int(ix.memory_bytes)


# ---- building and loading -------------------------------------------------------------------
def _read_rows(src, lo, hi):
    """Rows [lo, hi) of a source: an array (already the rows) or ("npy", path)."""
    if isinstance(src, tuple) and src[0] == "npy":
        return np.ascontiguousarray(np.load(src[1], mmap_mode="r")[lo:hi])
    return np.ascontiguousarray(src)


def _check_finite(pts, first_row):
    if pts.size and not np.isfinite(pts).all():
        r = int(np.argwhere(~np.isfinite(pts))[0][0])
        raise ValueError(f"X contains NaN or inf (first at row {first_row + r})")


def build_index_file(pts, gids, vals, path, kind, params, values_flat, token=None):
    """Build the shard's index, write it (hsrgeom format) and its global ids; return its
    manifest entry (file names relative to the directory, sha256 of both files, count, box,
    the resolved kind and parameters) plus ``"worker"``, the address of the worker that holds
    the built state for :func:`open_shard` (None outside a worker or without ``token``)."""
    if len(pts) == 0 or kind == "empty":
        idx, kind_out = hsrgeom.BruteForce(pts), "brute_force"
    else:
        idx = hsrgeom.build_index(pts, kind=kind, **params)
        kind_out = idx.kind
    if vals is not None:
        idx.attach_values(vals[:, 0] if values_flat else vals)
    idx.save(path)
    ids_path = path[: -len(".hsr")] + ".ids.npy"
    np.save(ids_path, np.ascontiguousarray(gids, dtype=np.int64))
    box = None if len(pts) == 0 else [pts.min(axis=0).astype(np.float64).tolist(),
                                      pts.max(axis=0).astype(np.float64).tolist()]
    meta = {
        "file": os.path.basename(path), "ids_file": os.path.basename(ids_path),
        "sha256": file_sha256(path), "ids_sha256": file_sha256(ids_path),
        "n": int(len(pts)), "box": box, "kind": kind_out, "params": _header(path)["params"],
        "id_range": [int(gids[0]), int(gids[-1])] if len(gids) else None,
    }
    meta["worker"] = _keep_built(token, path, ids_path, meta, idx, gids, vals)
    return meta


def _keep_built(token, path, ids_path, meta, idx, gids, vals):
    """Leave the built state for this shard's load task in this worker; its address."""
    if token is None:
        return None
    try:
        from distributed import get_worker

        addr = get_worker().address
    except (ImportError, ValueError):  # not inside a Dask worker
        return None
    st = _fresh_state(idx, np.ascontiguousarray(gids, dtype=np.int64))
    _BUILT[(token, os.path.abspath(path), os.path.abspath(ids_path), meta["sha256"], meta["ids_sha256"])] = st
    return addr


def drop_built(token):
    """Drop this index's build states not taken by a load task (run on every worker)."""
    for k in [k for k in _BUILT if k[0] == token]:
        _BUILT.pop(k, None)
    return len(_BUILT)


def build_chunk_shard(src, lo, hi, vals, path, kind, params, values_flat, token=None):
    """A "chunks" shard: rows [lo, hi) of the source, global ids lo..hi-1."""
    pts = _read_rows(src, lo, hi)
    _check_finite(pts, lo)
    return build_index_file(pts, np.arange(lo, hi, dtype=np.int64), vals, path, kind, params, values_flat, token)


def partition_piece(src, lo, hi, vals, nodes, cells, tmpdir, piece):
    """kd shuffle, map side: rows [lo, hi) to their cells, one file per non-empty cell
    (points, global ids, values); returns the row count per cell."""
    from ._partition import assign_cells

    pts = _read_rows(src, lo, hi)
    _check_finite(pts, lo)
    c = assign_cells(pts, nodes)
    counts = np.bincount(c, minlength=cells)
    order = np.argsort(c, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    for k in np.nonzero(counts)[0]:
        sel = order[starts[k] : starts[k + 1]]
        np.save(os.path.join(tmpdir, f"p{piece:06d}_c{k:06d}.npy"), pts[sel])
        np.save(os.path.join(tmpdir, f"p{piece:06d}_c{k:06d}.ids.npy"), (lo + sel).astype(np.int64))
        if vals is not None:
            np.save(os.path.join(tmpdir, f"p{piece:06d}_c{k:06d}.vals.npy"), vals[sel])
    return counts


def build_cell_shard(piece_counts, cell, tmpdir, d, dtype, has_vals, path, kind, params, values_flat, token=None):
    """kd shuffle, reduce side: the cell's rows from every piece, in piece order (so global ids
    ascend), built into the shard file."""
    parts, ids, vals = [], [], []
    for p, counts in enumerate(piece_counts):
        if counts[cell]:
            stem = os.path.join(tmpdir, f"p{p:06d}_c{cell:06d}")
            parts.append(np.load(stem + ".npy"))
            ids.append(np.load(stem + ".ids.npy"))
            if has_vals:
                vals.append(np.load(stem + ".vals.npy"))
    pts = np.concatenate(parts) if parts else np.zeros((0, d), dtype=dtype)
    gids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    v = (np.concatenate(vals) if vals else None) if has_vals else None
    return build_index_file(pts, gids, v, path, kind, params, values_flat, token)


def open_shard(path, ids_path, sha, ids_sha, token=None):
    """A shard's live state: the one a build task of index ``token`` left in this worker for
    these files, else read the files (checked against the manifest's sha256, then by
    hsrgeom's own reader) and build it."""
    built = _BUILT.pop((token, os.path.abspath(path), os.path.abspath(ids_path), sha, ids_sha), None)
    if built is not None:
        return built
    for p, want in ((path, sha), (ids_path, ids_sha)):
        try:
            got = file_sha256(p)
        except OSError as exc:
            raise ValueError(f"hsrgeom.distributed: cannot read shard file {p}: {exc}") from None
        if got != want:
            raise ValueError(f"hsrgeom.distributed: shard file {p} is corrupted: sha256 {got[:16]}... does not "
                             f"match the manifest's {want[:16]}...")
    base = hsrgeom.load(path)
    gids = np.load(ids_path)
    if gids.dtype != np.int64 or gids.shape != (base.n,) or (len(gids) > 1 and not (np.diff(gids) > 0).all()):
        raise ValueError(f"hsrgeom.distributed: shard ids file {ids_path} does not match its index file")
    return _fresh_state(base, gids)


def _fresh_state(base, gids):
    """The state of a shard just built or loaded: no inserts, no tombstones."""
    bvals = base.values() if base.has_values else None
    if bvals is not None and bvals.ndim == 1:
        bvals = bvals[:, None]
    d, dt = base.d, base.dtype
    dv = 0 if bvals is None else bvals.shape[1]
    return ShardState(base, gids, np.zeros((0, d), dt), np.zeros(0, np.int64),
                      None if bvals is None else np.zeros((0, dv), bvals.dtype), np.zeros(0, np.int64), bvals)


def apply_update(state, pts, gids, vals, removed):
    """A new state: ``state`` plus inserted points (global ids ``gids``) and removed ids."""
    dpts, dgids, dvals = state.dpts, state.dgids, state.dvals
    if len(pts):
        dpts, dgids = np.concatenate([dpts, pts]), np.concatenate([dgids, gids])
        if dvals is not None:
            dvals = np.concatenate([dvals, vals])
    tomb = np.union1d(state.tomb, removed) if len(removed) else state.tomb
    return ShardState(state.base, state.gids, dpts, dgids, dvals, tomb, state.bvals)


def holds(state, ids):
    """Which of ``ids`` are alive in this shard (bool array)."""
    pos = np.searchsorted(state.gids, ids)
    inb = (pos < len(state.gids)) & (state.gids[np.minimum(pos, len(state.gids) - 1)] == ids) if len(state.gids) \
        else np.zeros(len(ids), bool)
    ind = np.isin(ids, state.dgids)
    return (inb | ind) & ~np.isin(ids, state.tomb)


# ---- queries --------------------------------------------------------------------------------
def _report_rows(state, a, b, scores):
    """(rows, global ids, scores or None) of the alive points in each half-space, rows
    ascending and ids ascending within a row."""
    res = state.base.report(a, b, n_threads=TASK_THREADS, return_scores=scores)
    rows, g, sc = res.rows(), state.gids[res.ids], res.scores
    if state.delta is not None:
        r2 = state.delta.report(a, b, n_threads=TASK_THREADS, return_scores=scores)
        rows = np.concatenate([rows, r2.rows()])
        g = np.concatenate([g, state.dgids[r2.ids]])
        if scores:
            sc = np.concatenate([sc, r2.scores])
        order = np.lexsort((g, rows))
        rows, g = rows[order], g[order]
        sc = sc[order] if scores else None
    if len(state.tomb):
        keep = ~np.isin(g, state.tomb)
        rows, g = rows[keep], g[keep]
        sc = sc[keep] if scores else None
    return rows, g, sc


def shard_report(state, a, b, scores):
    rows, g, sc = _report_rows(state, a, b, scores)
    return np.bincount(rows, minlength=len(a)).astype(np.int64), g, sc


def shard_report_frame(state, a, b, qnum):
    """The (query, id) pairs of this shard as a pandas DataFrame with int64 columns "query"
    and "id", sorted by (query, id) (one partition of ``report(..., output="dask")``)."""
    import pandas as pd

    rows, g, _ = _report_rows(state, a, b, False)
    return pd.DataFrame({"query": np.asarray(qnum, dtype=np.int64)[rows], "id": g})


def run_many(fn, states, argss, extra):
    """One task for several shards of one worker: ``[fn(state, *args, *extra), ...]``."""
    return [fn(st, *args, *extra) for st, args in zip(states, argss)]


def shard_count(state, a, b):
    if state.clean:
        return state.base.count(a, b, n_threads=TASK_THREADS)
    return shard_report(state, a, b, False)[0]


def shard_empty(state, a, b):
    if state.clean:
        return state.base.empty(a, b, n_threads=TASK_THREADS)
    return shard_report(state, a, b, False)[0] == 0


def shard_topk(state, q, k):
    """Per query the (up to) k best alive points of the shard: (scores (m, kk), global ids
    (m, kk), points (m, kk, d)), best first by the exact order (ties: smaller id)."""
    nb = len(state.gids)
    kb = min(nb, k + len(state.tomb))
    if kb:
        s1, i1 = state.base.topk(q, kb, n_threads=TASK_THREADS)
    else:
        s1, i1 = np.zeros((len(q), 0)), np.zeros((len(q), 0), np.int64)
    pts_b = state.base_points()  # local id i is row i (the file's ids are 0..n-1)
    g1, p1 = state.gids[i1], pts_b[i1]
    if state.delta is not None:
        kd = min(len(state.dgids), k + len(state.tomb))
        s2, i2 = state.delta.topk(q, kd, n_threads=TASK_THREADS)
        g2, p2 = state.dgids[i2], state.dpts[i2]
        s1, g1, p1 = np.concatenate([s1, s2], 1), np.concatenate([g1, g2], 1), np.concatenate([p1, p2], 1)
    if len(state.tomb):
        bad = np.isin(g1, state.tomb)
        s1 = np.where(bad, -np.inf, s1)
    from ._merge import topk_merge

    return topk_merge(q, s1, g1, p1, k, valid=None if not len(state.tomb) else ~bad)


def _weights(scores, rows, power, shift):
    x = np.maximum(scores - shift[rows], 0.0)
    with np.errstate(over="ignore", under="ignore"):
        return np.ones_like(x) if power == 0 else x**power


def shard_sum(state, a, b, shift, power, attached):
    """Per query (counts, weights, sums or None) over the shard's alive points in the
    half-space; sums from the shard's own value rows (values attached at build)."""
    m = len(a)
    if state.clean and not attached and power == 0:
        c = state.base.count(a, b, n_threads=TASK_THREADS)
        return c, c.astype(np.float64), None
    rows, g, sc = _report_rows(state, a, b, True)
    w = _weights(sc, rows, power, shift)
    counts = np.bincount(rows, minlength=m).astype(np.int64)
    weights = np.bincount(rows, weights=w, minlength=m)
    sums = None
    if attached:
        pos = np.searchsorted(state.gids, g)
        inb = pos < len(state.gids)
        inb[inb] = state.gids[pos[inb]] == g[inb]
        vals = np.empty((len(g), state.bvals.shape[1]), dtype=np.float64)
        vals[inb] = state.bvals[pos[inb]]
        if (~inb).any():
            vals[~inb] = state.dvals[np.searchsorted(state.dgids, g[~inb])]
        sums = np.zeros((m, vals.shape[1]))
        np.add.at(sums, rows, w[:, None] * vals)
    return counts, weights, sums


def shard_rows(state):
    """(rows, global ids) of the shard and its size in bytes: for stats."""
    return state.alive(), state.nbytes()


def rewrite_shard(state, path, kind, params, values_flat, token=None):
    """flush: the shard's alive points (base and delta, ids ascending) into a new file."""
    pts = np.concatenate([state.base.points(), state.dpts])
    g = np.concatenate([state.gids, state.dgids])
    vals = None
    if state.bvals is not None:
        vals = np.concatenate([state.bvals, state.dvals])
    keep = ~np.isin(g, state.tomb)
    pts, g = pts[keep], g[keep]
    if vals is not None:
        vals = vals[keep]
    return build_index_file(np.ascontiguousarray(pts), g, vals, path, kind, params, values_flat, token)
