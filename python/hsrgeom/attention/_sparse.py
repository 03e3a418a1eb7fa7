"""The engine under hsrgeom.attention: half-space reporting / top-k over the keys of one head,
then the weighted sums over the reported entries only.

Everything here goes through the public index API (``build_index``, ``report``, ``topk``,
``insert``); nothing reaches into the C++ core.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._index import build_index

_U64 = np.finfo(np.float64).eps / 2


def score_slack(d, qnorm, kmax, t):
    """How far a float64 evaluation of ``scale <q,k> - bias`` can be from the exact value,
    expressed on the threshold ``t = bias / scale`` of ``<q,k>``: reporting ``<q,k> >= t - slack``
    is a superset of the entries that a float64 dense computation can make positive.
    (gamma_{d+4} bound of a dot product in any summation order, plus the rounding of
    ``bias / scale``, doubled.)"""
    gamma = (d + 4) * _U64 / (1 - (d + 4) * _U64)
    return 2 * gamma * (qnorm * kmax + np.abs(t)) + 1e-300


def max_norm(keys):
    """max_i ||keys[i]|| in float64 (row blocks, so no float64 copy of all keys is made)."""
    best = 0.0
    for s in range(0, len(keys), 1 << 15):
        c = keys[s : s + (1 << 15)].astype(np.float64)
        best = max(best, float(np.einsum("ij,ij->i", c, c).max()))
    return float(np.sqrt(best))


class HeadKeys:
    """Half-space indexes over the keys of one (batch, kv head), in blocks of positions.

    A block ``[start, start + size)`` has its own index (ids local to it). One block serves
    non-causal attention and decoding (it grows with ``append``); causal prefill uses blocks of
    ``block`` positions so that a query row only searches the blocks before its position and
    scans the one it sits in (the causal cut).
    """

    def __init__(self, keys, kind="auto", block=None, batch_size=None, output_size=None, **params):
        self.kind, self.params, self.batch_size, self.output_size = kind, params, batch_size, output_size
        self._rows, self._share = 0, 0.0  # query rows asked, sum of the share of keys each selected
        n = len(keys)
        block = max(n, 1) if block is None else int(block)
        self.blocks = []  # [start, index]
        for s in range(0, n, block):
            self.blocks.append([s, self._build(keys[s : s + block])])
        self.n = n
        self.kmax = max_norm(keys)
        self.points_tested = 0
        self.nodes_visited = 0

    def _build(self, keys, values=None):
        """An index over ``keys``; with ``values`` (their V rows) attached where the structure
        keeps node sums (``index.node_sums``), so ReLU sums add whole subtrees."""
        kw = {}
        if self.kind == "auto":
            if self.batch_size:
                kw["batch_size"] = self.batch_size
            if self._rows:  # re-choosing: the share of the keys the queries so far selected
                kw["output_size"] = self._share / self._rows * len(keys)
            elif self.output_size is not None:
                kw["output_size"] = self.output_size
        index = build_index(keys, kind=self.kind, **kw, **self.params)
        if values is not None and index.node_sums:
            index.attach_values(values)
        return index

    @property
    def description(self):
        return ", ".join(f"[{s}:{s + idx.n}) {idx.kind}" for s, idx in self.blocks)

    def append(self, keys, rebuild_from=None, values=None, values_from=None):
        """Add keys at the next positions (into the last block's index, logarithmic method).

        ``rebuild_from``: all keys so far (including these); with ``kind="auto"`` the index is
        rebuilt (and re-chosen) each time the number of keys doubles past 4096. ``values`` and
        ``values_from``: the V rows of ``keys`` and of ``rebuild_from``, for indexes that keep
        node sums (see :meth:`_build`); a cache that gives them always gives them.
        """
        if len(keys) == 0:
            return
        self.kmax = max(self.kmax, max_norm(keys))
        old = self.n
        self.n += len(keys)
        if not self.blocks:
            self.blocks.append([0, self._build(keys, values)])
            self._built_at = self.n
            return
        if self.kind == "auto" and rebuild_from is not None and len(self.blocks) == 1 and self.n >= 4096 and self.n >= 2 * getattr(self, "_built_at", old):
            self.blocks[0][1] = self._build(rebuild_from, values_from)
            self._built_at = self.n
            return
        index = self.blocks[-1][1]
        index.insert(keys, values if index.has_values else None)

    def _count(self, idx):
        st = idx.stats
        self._rows += len(st)
        self._share += float(st.points_reported.sum()) / max(self.n, 1)
        self.points_tested += int(st.points_tested.sum())
        self.nodes_visited += int(st.nodes_visited.sum())

    def report(self, Q, t, limit=None, blocks=None):
        """CSR (lims, ids, dots) of the keys with ``<q_i, k> >= t_i`` (exact), ``ids <= limit[i]``;
        ``dots`` = ``<q_i, k>`` in float64, computed by the index while it read the key.
        ``blocks``: only these ``[start, index]`` blocks (default: all)."""
        m = len(Q)
        rows_all, ids_all, dots_all = [], [], []
        for s, idx in self.blocks if blocks is None else blocks:
            e = s + idx.n
            rows = np.arange(m) if limit is None else np.flatnonzero(limit >= s)
            if not len(rows) or idx.n == 0:
                continue
            res = idx.report(Q[rows], t[rows], return_scores=True)
            self._count(idx)
            r = np.repeat(rows, res.counts)
            ids, dots = res.ids + s, res.scores
            if limit is not None and (limit[rows] < e - 1).any():
                keep = ids <= limit[r]
                r, ids, dots = r[keep], ids[keep], dots[keep]
            rows_all.append(r)
            ids_all.append(ids)
            dots_all.append(dots)
        return _csr(m, rows_all, ids_all, dots_all)

    def _visible_blocks(self, m, limit):
        """(start, end, index, rows seeing all of it, rows seeing part of it) of each non-empty
        block; a row i sees positions <= limit[i] (all of them when limit is None)."""
        for s, idx in self.blocks:
            e = s + idx.n
            if idx.n == 0:
                continue
            if limit is None:
                yield s, e, idx, np.arange(m), np.zeros(0, dtype=np.int64)
            else:
                yield s, e, idx, np.flatnonzero(limit >= e - 1), np.flatnonzero((limit >= s) & (limit < e - 1))

    def relu_sums(self, Q, t_in, t, alpha, V, limit=None):
        """Per row i, over the keys k with ``<q_i, k> >= t_in[i]`` (exact) and ``ids <= limit[i]``:
        ``(entries, den, num)`` = their number, ``sum w`` and ``sum w v_k`` with
        ``w = max(<q_i, k> - t[i], 0) ** alpha`` (float64). Rows that see a whole block use the
        index's fused :meth:`sum <hsrgeom.BruteForce.sum>` (no id lists); rows that see part of
        a block (the causal diagonal) report it and gather the rows."""
        m, dv = len(Q), V.shape[1]
        entries, den, num = np.zeros(m, dtype=np.int64), np.zeros(m), np.zeros((m, dv))
        Vc = V if V.flags.c_contiguous else np.ascontiguousarray(V)
        for s, e, idx, full, part in self._visible_blocks(m, limit):
            if len(full):  # attached values are the rows s:e of V (see append)
                res = idx.sum(Q[full], t_in[full], "attached" if idx.has_values else Vc[s:e], power=alpha, shift=t[full])
                self._count(idx)
                entries[full] += res.counts
                den[full] += res.weights
                num[full] += res.sums
            if len(part):
                lims, ids, dots = self.report(Q[part], t_in[part], limit[part], blocks=[(s, idx)])
                rows = np.repeat(np.arange(len(part)), np.diff(lims))
                w = np.maximum(dots - t[part][rows], 0.0) ** alpha
                entries[part] += np.diff(lims)
                den[part] += np.bincount(rows, weights=w, minlength=len(part))
                num[part] += _core.gather_weighted_sum(Vc, lims, ids, w)
        return entries, den, num

    def topk(self, Q, r, K, limit=None):
        """CSR (lims, ids, dots) of the ``r`` keys with the largest ``<q_i, k>`` among
        ``ids <= limit[i]`` (fewer where a row sees fewer keys); dots as in :meth:`report`. Within a block the ranking is exact (ties: smaller
        id); candidates of different blocks are merged by their float64 scores."""
        m = len(Q)
        rows_all, ids_all, sc_all = [], [], []
        for s, e, idx, full, part in self._visible_blocks(m, limit):
            if len(full):
                kk = min(r, idx.n)
                sc, ids = idx.topk(Q[full], kk)
                self._count(idx)
                rows_all.append(np.repeat(full, kk))
                ids_all.append(ids.ravel() + s)
                sc_all.append(sc.ravel())
            if len(part):  # the diagonal block: scan the visible prefix
                S = Q[part].astype(np.float64) @ K[s:e].astype(np.float64).T
                S[np.arange(e - s)[None, :] > (limit[part] - s)[:, None]] = -np.inf
                self.points_tested += int((limit[part] - s + 1).sum())
                kk = min(r, e - s)
                top = np.argsort(-S, axis=1, kind="stable")[:, :kk]
                sc = np.take_along_axis(S, top, axis=1)
                ok = np.isfinite(sc)
                rows_all.append(np.repeat(part, kk)[ok.ravel()])
                ids_all.append((top + s).ravel()[ok.ravel()])
                sc_all.append(sc.ravel()[ok.ravel()])
        if not rows_all:
            return _csr(m, [], [], [])
        rows, ids, sc = np.concatenate(rows_all), np.concatenate(ids_all), np.concatenate(sc_all)
        order = np.lexsort((ids, -sc, rows))
        rows, ids, sc = rows[order], ids[order], sc[order]
        lims = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=m))])
        rank = np.arange(len(rows)) - lims[rows]
        keep = rank < r
        rows, ids, sc = rows[keep], ids[keep], sc[keep]
        order = np.lexsort((ids, rows))
        return _csr(m, [rows[order]], [ids[order]], [sc[order]])


def _csr(m, rows_list, ids_list, dots_list):
    """(lims, ids, dots) in compressed rows from per-block (rows, ids, dots) lists."""
    if not rows_list:
        return np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    rows = np.concatenate(rows_list)
    ids = np.concatenate(ids_list).astype(np.int64, copy=False)
    dots = np.concatenate(dots_list).astype(np.float64, copy=False)
    if len(rows_list) > 1:
        order = np.argsort(rows, kind="stable")  # blocks came in ascending order: ids stay sorted
        rows, ids, dots = rows[order], ids[order], dots[order]
    lims = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=lims[1:])
    return lims, ids, dots


def weighted_rows(lims, ids, dots, V, weight, scale):
    """For each row i: ``num_i = sum_j w_ij v_j`` and ``den_i = sum_j w_ij`` over its CSR entries,
    with ``w = weight(logits, rows, logit_max)`` evaluated in float64, ``logits = scale * dots``
    (``dots``: the float64 ``<q_i, k_j>`` the index computed with the ids; the row maxima are
    known when ``weight`` is called). The V gather runs in the compiled core (float64
    accumulation, all threads, GIL released).

    Returns (num (m, dv), den (m,), logit_max (m,), logit_min (m,)) in float64.
    """
    m = len(lims) - 1
    lims = np.ascontiguousarray(lims, dtype=np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    logits = np.multiply(dots, scale, dtype=np.float64)
    cnt = np.diff(lims)
    nz = np.flatnonzero(cnt)
    starts = lims[:-1][nz]
    rows = np.repeat(np.arange(m), cnt)
    lmax = np.full(m, -np.inf)
    lmin = np.full(m, np.inf)
    den = np.zeros(m)
    if len(ids):
        lmax[nz] = np.maximum.reduceat(logits, starts)
        lmin[nz] = np.minimum.reduceat(logits, starts)
    w = np.ascontiguousarray(weight(logits, rows, lmax), dtype=np.float64)
    if len(ids):
        den[nz] = np.add.reduceat(w, starts)
    num = _core.gather_weighted_sum(np.ascontiguousarray(V), lims, ids, w)
    return num, den, lmax, lmin
