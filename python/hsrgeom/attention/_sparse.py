"""The engine under hsrgeom.attention: half-space reporting / top-k over the keys of one head,
then the weighted sums over the reported entries only.

Everything here goes through the public index API (``build_index``, ``report``, ``topk``,
``insert``, ``sum``, :class:`~hsrgeom.HalfspaceResult` and :func:`~hsrgeom.gather_weighted_sum`);
nothing reaches into the C++ core or a private module of hsrgeom.
"""
from __future__ import annotations

import numpy as np

from .. import HalfspaceResult, build_index, gather_weighted_sum

_U64 = np.finfo(np.float64).eps / 2
# Query rows whose ||q|| max||k|| is within 2^+-_SAFE_LOG2 are queried as given; others are
# scaled by a power of two so that no inner product overflows or underflows (ScaledRows).
_SAFE_LOG2 = 400
# log2 of the smallest subnormal of each key dtype: what a query component scaled down below the
# normal range can lose (the flush term of the slack).
_SUB_LOG2 = {np.dtype(np.float32): -149.0, np.dtype(np.float64): -1074.0}
# How large a scaled query component may become (log2), below each dtype's maximum.
_QMAX_LOG2 = {np.dtype(np.float32): 100, np.dtype(np.float64): 1000}


def log2_norms(X):
    """log2 of the Euclidean norm of each row of ``X`` (-inf for a zero row), computed without
    overflow or underflow, in float64. Rows whose float64 sum of squares is a normal number far
    from the range's ends (every row of ordinary data) take it directly; the others are scaled
    by a power of two first."""
    X = np.asarray(X)
    out = np.full(len(X), -np.inf)
    if X.size == 0:
        return out
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    ok = (sq >= 2.0**-900) & (sq <= 2.0**900)  # no underflow, no overflow, NaN excluded
    out[ok] = 0.5 * np.log2(sq[ok])
    if not ok.all():
        rest = np.flatnonzero(~ok)
        Xr = X[rest]
        amax = np.abs(Xr).max(axis=1).astype(np.float64)
        nz = amax > 0
        if nz.any():
            ex = np.frexp(amax[nz])[1]
            Y = np.ldexp(Xr[nz].astype(np.float64), -ex[:, None])  # max |component| in [0.5, 1)
            out[rest[nz]] = ex + 0.5 * np.log2(np.einsum("ij,ij->i", Y, Y))
    return out


def log2_max_norm(keys):
    """log2 of max_i ||keys[i]|| (-inf when there are no keys or all are zero), in row blocks."""
    best = -np.inf
    for s in range(0, len(keys), 1 << 15):
        c = log2_norms(keys[s : s + (1 << 15)])
        if len(c):
            best = max(best, float(c.max()))
    return best


def max_norm(keys):
    """max_i ||keys[i]|| in float64 (inf if it exceeds the float64 range)."""
    with np.errstate(over="ignore"):
        return float(np.exp2(log2_max_norm(keys)))


def score_slack(d, qk, t, flush=0.0):
    """How far a float64 evaluation of ``scale <q,k> - bias`` can be from the exact value,
    expressed on the threshold ``t = bias / scale`` of ``<q,k>``: reporting ``<q,k> >= t - slack``
    is a superset of the entries that a float64 dense computation can make positive.
    ``qk`` bounds ``||q|| max ||k||``. (gamma_{d+4} bound of a dot product in any summation order,
    plus the rounding of ``bias / scale``, doubled; plus ``flush``, what scaling the query lost.)"""
    gamma = (d + 4) * _U64 / (1 - (d + 4) * _U64)
    return 2 * gamma * (qk + np.abs(t)) + flush + 1e-300


class ScaledRows:
    """Query rows scaled by powers of two so that their inner products with the keys stay in the
    float64 range, with their thresholds ``bias / scale`` expressed in the same units.

    ``Q = Q_user * 2^-e`` row-wise, where ``e`` is 0 unless ``||q|| max ||k||`` is outside
    2^+-400 (then it brings that bound to about 1). A half-space ``<q, k> >= t`` is the same
    after the scaling (with ``t * 2^-e``), and power-of-two scaling is exact unless a component
    leaves the normal range (``flush`` bounds the change of ``<Q_i, k>`` that causes; it is part
    of the slack). The threshold itself never drives the scaling: it would push the query's
    components out of range, and the dots (softmax weights) must keep their precision.

    The threshold ``t_i = bias_i / scale * 2^-e_i`` may be beyond the float64 range: it is kept
    exactly as ``tm * 2^te`` (``tm`` in (0.5, 2)), and as ``t`` (float64), clipped where it is
    so far beyond every ``|<Q_i, k>|`` (``|t| > C = 4 (qk + flush) + 1e-300``) that the
    half-space holds every key or none: the clipped value (``+-C``) selects the same keys.

    Attributes: ``Q`` (the dtype of the input), ``e`` (int64), ``qk`` (bound of
    ``||Q_i|| max ||k||``), ``flush``; with a bias also ``tm``, ``te`` (int64), ``t``,
    ``clipped`` (bool), ``slack`` (:func:`score_slack` at ``t``: report ``<Q_i, k> >= t - slack``
    for a superset of what a float64 evaluation makes positive).
    """

    def __init__(self, Q, lkmax, scale, bias=None):
        m, d = Q.shape
        lq = log2_norms(Q)
        with np.errstate(invalid="ignore"):
            lqk = lq + lkmax  # log2 of the bound before scaling (-inf: a zero row or zero keys)
        e = np.zeros(m, dtype=np.int64)
        far = np.isfinite(lqk) & (np.abs(lqk) > _SAFE_LOG2)
        e[far] = np.ceil(lqk[far]).astype(np.int64)
        # never scale a query component beyond 2^_QMAX_LOG2 (scaling up when the keys are tiny)
        e[far] = np.maximum(e[far], np.ceil(lq[far]).astype(np.int64) - _QMAX_LOG2[Q.dtype])
        self.e = e
        self.Q = Q if not e.any() else np.ldexp(Q, -e[:, None]).astype(Q.dtype, copy=False)
        with np.errstate(over="ignore", under="ignore"):
            self.qk = np.exp2(lq + lkmax - e)
            # scaled components that left the normal range: each off by at most the smallest
            # subnormal, times max ||k||
            self.flush = np.where(e != 0, np.exp2(np.log2(d) + _SUB_LOG2[Q.dtype] + lkmax), 0.0)
        if bias is None:
            self.slack = score_slack(d, self.qk, 0.0, self.flush)
            return
        mb, eb = np.frexp(np.asarray(bias, dtype=np.float64))
        ms, es = np.frexp(scale)
        self.tm, self.te = mb / ms, (eb - es - e).astype(np.int64)  # one rounding, as bias / scale
        cap = 4 * (self.qk + self.flush) + 1e-300
        with np.errstate(over="ignore", under="ignore"):
            t = np.ldexp(self.tm, self.te)
        self.clipped = np.abs(t) > cap
        self.t = np.where(self.clipped, np.copysign(cap, self.tm), t)
        self.slack = score_slack(d, self.qk, self.t, self.flush + 2.0**-1074)

    def relu_x(self, dots, rows):
        """``max(dots - t, 0)`` of entries of the given ``rows`` (``dots``: float64 ``<Q_row, k>``),
        times ``2^-ew`` with ``ew`` per row chosen so that it is finite whatever ``t`` is (only
        the ratios of x within a row matter: ReLU weights are normalised)."""
        ew = np.maximum(self.te - 900, 0)[rows]
        with np.errstate(under="ignore"):
            x = np.ldexp(dots, -ew) - np.ldexp(self.tm[rows], self.te[rows] - ew)
        return np.maximum(x, 0.0)


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
        self.lkmax = log2_max_norm(keys)  # log2 max ||k|| (kept as a log: it may exceed float64)
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
        self.lkmax = max(self.lkmax, log2_max_norm(keys))
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
                res = HalfspaceResult(lims, ids, dots)
                rows = res.rows()
                w = np.maximum(dots - t[part][rows], 0.0) ** alpha
                entries[part] += res.counts
                den[part] += np.bincount(rows, weights=w, minlength=len(part))
                num[part] += res.weighted_sum(Vc, w)
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
        lims = HalfspaceResult.from_rows(rows, ids, m).lims
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
    return HalfspaceResult.from_rows(rows, ids, m).lims, ids, dots


def gather_sums(V, lims, ids, w):
    """``(num, vexp)``: per CSR row i, ``num_i * 2^vexp_i = sum_j w_ij V[ids_ij]`` (float64, the
    V gather in the compiled core). ``vexp`` is 0 except where the plain sum overflowed (values
    near the float64 maximum): those entries are re-summed with their column of V scaled by a
    power of two, so ``num / den * 2^vexp`` (a weighted mean, within the range of V) stays finite."""
    V = np.ascontiguousarray(V)
    lims = np.ascontiguousarray(lims, dtype=np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    num = gather_weighted_sum(V, lims, ids, w)
    vexp = np.zeros(num.shape, dtype=np.int64)
    bad = ~np.isfinite(num)
    if bad.any():
        rows, cols = np.flatnonzero(bad.any(axis=1)), np.flatnonzero(bad.any(axis=0))
        ex = np.frexp(np.abs(V[:, cols]).max(axis=0).astype(np.float64))[1]
        Vs = np.ascontiguousarray(np.ldexp(V[:, cols].astype(np.float64), -ex))
        cnt = np.diff(lims)[rows]
        sub = np.concatenate([[0], np.cumsum(cnt)])
        take = np.concatenate([np.arange(lims[r], lims[r + 1]) for r in rows])
        redo = gather_weighted_sum(Vs, sub, ids[take], w[take])
        fix = bad[np.ix_(rows, cols)]
        blk = num[np.ix_(rows, cols)]
        eblk = vexp[np.ix_(rows, cols)]
        blk[fix] = redo[fix]
        eblk[fix] = np.broadcast_to(ex, fix.shape)[fix]
        num[np.ix_(rows, cols)] = blk
        vexp[np.ix_(rows, cols)] = eblk
    return num, vexp


def finish_rows(num, den, vexp, dtype):
    """``num / den * 2^vexp`` row-wise (rows with ``den == 0``: zeros), cast to ``dtype``."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.divide(num, den[:, None], out=np.zeros_like(num), where=den[:, None] > 0)
        if vexp.any():
            out = np.ldexp(out, vexp)
    return out.astype(dtype, copy=False)


def weighted_rows(lims, ids, dots, V, weight):
    """For each row i: ``num_i = sum_j w_ij v_j`` and ``den_i = sum_j w_ij`` over its CSR entries,
    with ``w = weight(dots, rows, dot_max)`` evaluated in float64 (``dots``: the float64
    ``<q_i, k_j>`` the index computed with the ids; the row maxima are known when ``weight`` is
    called). The V gather runs in the compiled core (float64 accumulation, all threads, GIL
    released), see :func:`gather_sums`.

    Returns (num (m, dv), den (m,), vexp (m, dv), dot_max (m,), dot_min (m,)); float64.
    """
    m = len(lims) - 1
    lims = np.ascontiguousarray(lims, dtype=np.int64)
    dots = np.asarray(dots, dtype=np.float64)
    cnt = np.diff(lims)
    nz = np.flatnonzero(cnt)
    starts = lims[:-1][nz]
    rows = np.repeat(np.arange(m), cnt)
    dmax = np.full(m, -np.inf)
    dmin = np.full(m, np.inf)
    den = np.zeros(m)
    if len(ids):
        dmax[nz] = np.maximum.reduceat(dots, starts)
        dmin[nz] = np.minimum.reduceat(dots, starts)
    w = np.ascontiguousarray(weight(dots, rows, dmax), dtype=np.float64)
    if len(ids):
        den[nz] = np.add.reduceat(w, starts)
    num, vexp = gather_sums(V, lims, ids, w)
    return num, den, vexp, dmax, dmin
