"""relu_attention, softmax_attention and prefill: attention computed on the entries that
half-space reporting (or exact top-k) finds, head by head."""
from __future__ import annotations

import numpy as np

from .. import HalfspaceResult
from . import _inputs as I
from ._fused import CodedKeys, softmax_top_p, softmax_top_r
from ._sparse import HeadKeys, ScaledRows, finish_rows, log2_max_norm, max_norm, score_slack, weighted_rows

_STAT_DOC = """
    Statistics (``return_stats=True``) are a dict of arrays of shape (batch, heads, m) unless
    noted: ``entries`` (entries each row kept), ``visible`` (keys the row may see),
    ``points_tested`` and ``nodes_visited`` (ints: the indexes' cost counters summed over the
    call) and ``index`` (a list: what each (batch, kv head) index is)."""


def _causal_block(n, m):
    """Causal cut: a row searches only the blocks before its own; scans of its own block cost
    O(block) per row, so blocks are small relative to n but keep each index large."""
    if m <= 1 or n <= 4096:
        return None
    return max(2048, -(-n // 8))


def _limits(m, n, causal):
    return (n - m + np.arange(m)) if causal else None


# The index's fused sum evaluates x ** alpha by repeated multiplication: it serves small alpha
# only, and only rows whose weights cannot overflow (see _head_relu).
_FUSED_ALPHA = 32
# A fused row whose weight sum is below this may have lost weights to underflow: redone.
_TINY_WEIGHT = 2.0**-900


def _power(alpha):
    """alpha as the float exponent of np.power (O(1) per weight whatever alpha is)."""
    return float(alpha) if alpha.bit_length() <= 1000 else np.inf


def _head_relu(Qg, K, V, hk, limit, scale, bias_rows, alpha):
    # ReLU^a(scale <q,k> - bias) = scale^a max(<q,k> - t, 0)^a with t = bias / scale: the factor
    # scale^a cancels in num / den, and so does any positive factor of a row's weights. Rows are
    # scaled by powers of two (ScaledRows: no inner product overflows; t kept exactly), then
    # * rows whose weights stay in range (small alpha, bounded x) use the index's fused sum;
    # * the others, and fused rows whose sums over- or underflowed, report their entries and
    #   weigh them (x / x_max) ** alpha <= 1, with x_max the row's largest x: nothing overflows,
    #   the largest weight is 1, and the cost does not depend on alpha.
    m, dv = len(Qg), V.shape[1]
    sr = ScaledRows(Qg, hk.lkmax, scale, bias_rows)
    t_in = sr.t - sr.slack
    entries, den = np.zeros(m, dtype=np.int64), np.zeros(m)
    num, vexp = np.zeros((m, dv)), np.zeros((m, dv), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe = _power(alpha) * np.maximum(np.log2(sr.qk + np.abs(sr.t)), 0.0) + np.log2(len(K) + 1.0) <= 1000.0
    safe &= ~sr.clipped  # the fused sum weighs max(dot - t, 0): t must be the real one
    fused = np.flatnonzero(safe) if alpha <= _FUSED_ALPHA else np.zeros(0, dtype=np.int64)
    redo = np.ones(m, dtype=bool)
    if len(fused):
        lim = None if limit is None else limit[fused]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            e, w, s = hk.relu_sums(sr.Q[fused], t_in[fused], sr.t[fused], alpha, V, lim)
        ok = np.isfinite(s).all(axis=1) & np.isfinite(w) & ((w >= _TINY_WEIGHT) | (e == 0))
        good = fused[ok]
        entries[good], den[good], num[good] = e[ok], w[ok], s[ok]
        redo[good] = False
    rows = np.flatnonzero(redo)
    if len(rows):
        lims, ids, dots = hk.report(sr.Q[rows], t_in[rows], None if limit is None else limit[rows])
        power = _power(alpha)

        def weight(dots, r, dmax):
            x = sr.relu_x(dots, rows[r])
            top = sr.relu_x(dmax[r], rows[r])  # the row's largest x (its weight is 1)
            with np.errstate(under="ignore", invalid="ignore", divide="ignore"):
                return np.where(top > 0, np.power(x / np.where(top > 0, top, 1.0), power), 0.0)

        n_, d_, v_, _, _ = weighted_rows(lims, ids, dots, V, weight)
        entries[rows], den[rows], num[rows], vexp[rows] = np.diff(lims), d_, n_, v_
    return finish_rows(num, den, vexp, np.float64), {"entries": entries}


def _trim_top(lims, ids, dots, r):
    """Keep the r entries of each CSR row with the largest dots (ties: smaller id)."""
    m = len(lims) - 1
    rows = HalfspaceResult(lims, ids).rows()
    order = np.lexsort((ids, -dots, rows))
    rank = np.arange(len(rows)) - lims[rows]
    keep = order[rank < r]
    keep.sort()
    res = HalfspaceResult.from_rows(rows[keep], ids[keep], m, dots[keep])
    return res.lims, res.ids, res.scores


def _top_p(p):
    """``top_p``: a real number in (0, 1] (the share of the softmax mass to keep)."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"top_p must be a real number in (0, 1], got {type(p).__name__}")
    p = float(p)
    if not 0.0 < p <= 1.0:  # also rejects NaN
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    return p


def _select_top_p(sr, hk, K, limit, scale, p, visible):
    """Top-p selection by two queries per row: the row's largest logit s* (exact top-1), then
    one half-space report of every key with logit >= s* - g, where g = log(p v / (1 - p)) for v
    visible keys; then the smallest score-ordered prefix of the reported keys whose mass is
    certified to be at least p of the row's total (see :func:`softmax_attention`).

    Returns CSR ``(lims, ids, dots)`` of the kept keys and the certified dropped-mass bound
    per row (float64; 0 where every visible key is kept)."""
    m = len(sr.Q)
    l1, _, d1 = hk.topk(sr.Q, 1, K, limit)
    has = np.diff(l1) > 0
    smax = np.zeros(m)
    smax[has] = d1
    d = K.shape[1]
    slack = score_slack(d, sr.qk, smax, sr.flush)
    with np.errstate(divide="ignore", over="ignore"):
        gap = np.log(p * visible / (1.0 - p)) if p < 1.0 else np.full(m, np.inf)
    gap = np.maximum(gap, 0.0)
    # in units of <Q_i, k>: a logit difference g is g / scale * 2^-e; reporting at t minus the
    # slack of a float64 evaluation, every dropped key's float64 dot is below t (= smax - g)
    width = np.ldexp(gap / scale, -sr.e)
    t = np.where(has & np.isfinite(width), smax - width - slack, -np.inf)
    full = has & ~np.isfinite(t)  # p == 1 (or a gap beyond the float64 range): every key
    t = np.where(np.isfinite(t), t, 0.0)
    lims, ids, dots = hk.report(sr.Q, t, limit)
    rows = HalfspaceResult(lims, ids).rows()
    if full.any():  # rows keeping every visible key: their report is replaced by all of them
        keep = ~full[rows]
        fl, fi, fd = hk.topk(sr.Q[full], int(visible[full].max()), K, None if limit is None else limit[full])
        frows = np.flatnonzero(full)[HalfspaceResult(fl, fi).rows()]
        rows, ids, dots = (np.concatenate([rows[keep], frows]), np.concatenate([ids[keep], fi]),
                           np.concatenate([dots[keep], fd]))
    # per row: score descending, ties to the smaller id
    order = np.lexsort((ids, -dots, rows))
    rows, ids, dots = rows[order], ids[order], dots[order]
    lims = HalfspaceResult.from_rows(rows, ids, m).lims
    kept = np.diff(lims)
    nz = np.flatnonzero(kept)
    top = np.full(m, -np.inf)
    top[nz] = dots[lims[:-1][nz]]  # the first entry of a row is its largest
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        w = np.exp(np.ldexp(scale * (dots - top[rows]), sr.e[rows]))
        zk = np.bincount(rows, weights=w, minlength=m)
        # every key left out of the report has a float64 dot below t + slack
        rel = np.ldexp(scale * (t + slack - top), sr.e)
        u = np.where(full | (kept == 0), 0.0, (visible - kept) * np.exp(np.minimum(rel, 700.0)))
    csum = np.concatenate([[0.0], np.cumsum(w)])
    prior = csum[:-1] - csum[lims[:-1]][rows]  # mass of the row's entries before this one
    need = p * (zk + u)
    keep = (prior < need[rows]) | full[rows]
    rows, ids, dots, w = rows[keep], ids[keep], dots[keep], w[keep]
    zp = np.bincount(rows, weights=w, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(zk + u > 0, (np.maximum(zk - zp, 0.0) + u) / (zk + u), 0.0)
    bound = np.where(full | (np.bincount(rows, minlength=m) == visible), 0.0, bound)
    order = np.lexsort((ids, rows))  # ids ascending within a row (the CSR convention)
    res = HalfspaceResult.from_rows(rows[order], ids[order], m, dots[order])
    return res.lims, res.ids, res.scores, bound


def _head_softmax(Qg, K, V, hk, limit, scale, top_r, thr_rows, vmax, top_p=None):
    # Rows scaled by powers of two (ScaledRows) so that no inner product overflows (a threshold
    # beyond every inner product is clipped: same keys); the weights are exp of logits relative to the row's largest kept logit,
    # scale * (dot - dot_max) * 2^e (which may only go to -inf: weight 0).
    n, d = K.shape
    sr = ScaledRows(Qg, hk.lkmax, scale, thr_rows)
    visible = np.full(len(Qg), n) if limit is None else np.clip(limit + 1, 0, n)
    if top_p is not None:
        lims, ids, dots, bound = _select_top_p(sr, hk, K, limit, scale, top_p, visible)
    elif thr_rows is not None:
        lims, ids, dots = hk.report(sr.Q, sr.t, limit)
        if top_r is not None:
            lims, ids, dots = _trim_top(lims, ids, dots, top_r)
    else:
        lims, ids, dots = hk.topk(sr.Q, top_r, K, limit)

    def weight(dots, rows, dmax):
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(np.ldexp(scale * (dots - dmax[rows]), sr.e[rows]))

    num, den, vexp, dmax, dmin = weighted_rows(lims, ids, dots, V, weight)
    out = finish_rows(num, den, vexp, np.float64)
    kept = np.diff(lims)
    if top_p is not None:
        err = np.where(bound > 0, 2.0 * bound * vmax, 0.0)
        return out, {"entries": kept, "dropped_mass_bound": bound, "error_bound": err, "_kept": (lims, ids)}
    # Every dropped entry has a dot <= cut: the threshold, or the smallest kept dot (top-r),
    # plus the slack of a float64 evaluation; relative to the largest kept logit:
    cut = dmin if (top_r is not None or thr_rows is None) else sr.t
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        rel = np.ldexp(scale * (cut + score_slack(d, sr.qk, cut, sr.flush) - dmax), sr.e)
        dropped = (visible - kept) * np.exp(np.minimum(rel, 700.0))
        bound = np.where(kept > 0, dropped / (den + dropped), np.where(visible > 0, 1.0, 0.0))
        bound = np.where(visible == kept, 0.0, bound)
        err = np.where(bound > 0, 2.0 * bound * vmax, 0.0)
    return out, {
        "entries": kept,
        "dropped_mass_bound": bound,
        "error_bound": err,
        "_kept": (lims, ids),
    }


def _exact_softmax_stats(Qg, K, V, limit, scale, out, kept):
    """Relative output error and kept probability mass against dense softmax (float64; rows
    scaled as in :func:`_head_softmax`, so that huge inputs do not overflow). ``kept``: the
    CSR (lims, ids) of the entries each row kept."""
    m, n = len(Qg), len(K)
    ref = np.zeros((m, V.shape[1]))
    mass = np.zeros(m)
    klims, kids = kept
    krows = np.repeat(np.arange(m), np.diff(klims))
    sr = ScaledRows(Qg, log2_max_norm(K), scale)
    Kd, Vd = K.astype(np.float64), V.astype(np.float64)
    ev = 0  # V near the float64 maximum: compare in units of 2^ev (W @ V would overflow)
    if Vd.size and np.abs(Vd).max() > 2.0**500:
        ev = int(np.frexp(np.abs(Vd).max())[1])
        Vd, out = np.ldexp(Vd, -ev), np.ldexp(out, -ev)
    step = max(1, (1 << 24) // max(n, 1))
    for r0 in range(0, m, step):
        S = sr.Q[r0 : r0 + step].astype(np.float64) @ Kd.T
        if limit is not None:
            S[np.arange(n)[None, :] > limit[r0 : r0 + step, None]] = -np.inf
        mx = S.max(axis=1, keepdims=True, initial=-np.inf)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            W = np.exp(np.ldexp(scale * (S - np.where(np.isfinite(mx), mx, 0.0)), sr.e[r0 : r0 + step, None]))
            den = W.sum(axis=1, keepdims=True)
            ref[r0 : r0 + step] = np.divide(W @ Vd, den, out=np.zeros((len(W), Vd.shape[1])), where=den > 0)
            sel = (krows >= r0) & (krows < r0 + step)
            got = np.bincount(krows[sel] - r0, weights=W[krows[sel] - r0, kids[sel]], minlength=len(W))
            mass[r0 : r0 + step] = np.divide(got, den[:, 0], out=np.zeros(len(W)), where=den[:, 0] > 0)
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.linalg.norm(out - ref, axis=1)
        nrm = np.linalg.norm(ref, axis=1)
        rel = np.divide(err, nrm, out=np.where(err > 0, np.inf, 0.0), where=nrm > 0)
        err = np.ldexp(err, ev)
    return {"rel_error": rel, "abs_error": err, "kept_mass": mass}


def _attention(mode, q, k, v, *, scale, causal, index, block, **kw):
    """Validates q, k, v and runs :func:`_run` with an index built per (batch, kv head)."""
    q, k, v = I.qkv(q, k, v)
    causal = I.flag(causal, "causal")
    B, Hkv, n = k.shape[:3]
    m = q.shape[2]
    if block is None and causal:
        block = _causal_block(n, m)
    g = q.shape[1] // Hkv

    def head(b, kh):
        K = np.ascontiguousarray(k[b, kh])
        return K, v[b, kh], HeadKeys(K, kind=index, block=block, batch_size=g * m)

    return _run(mode, q, head, (B, Hkv, n, v.shape[3]), scale=scale, causal=causal, **kw)


def _run(mode, q, head, kv_shape, *, scale, causal, bias=None, alpha=1, top_r=None, threshold=None,
         top_p=None, return_stats=False):
    """Attention of validated q over kv heads given by ``head(b, kh) -> (K, V, HeadKeys)``."""
    B, H, m, d = q.shape
    _, Hkv, n, dv = kv_shape
    g = H // Hkv
    scale = I.scale(scale, d)
    if mode == "relu":
        if bias is None:
            raise TypeError("ReLU attention needs bias (a float or an array broadcasting to (batch, heads, m))")
        bias = I.per_row(bias, (B, H, m), "bias")
        alpha = I.alpha(alpha)
    else:
        if top_r is not None:
            top_r = I.count(top_r, "top_r")
        if threshold is not None:
            threshold = I.per_row(threshold, (B, H, m), "threshold")
        if top_p is not None:
            top_p = _top_p(top_p)
            if top_r is not None or threshold is not None:
                raise ValueError("top_p cannot be combined with top_r or threshold (it chooses its own cut-off)")
        elif top_r is None and threshold is None:
            top_r = max(n, 1)
    exact = return_stats == "exact"
    limit = _limits(m, n, causal)
    glimit = None if limit is None else np.tile(limit, g)
    out = np.zeros((B, H, m, dv), dtype=q.dtype)
    stats = {}
    described, tested, visited = [], 0, 0
    for b in range(B):
        for kh in range(Hkv):
            if n == 0 or m == 0:
                continue
            K, Vh, hk = head(b, kh)
            heads = slice(kh * g, (kh + 1) * g)
            Qg = np.ascontiguousarray(q[b, heads].reshape(g * m, d))
            before = (hk.points_tested, hk.nodes_visited)
            if mode == "relu":
                o, st = _head_relu(Qg, K, Vh, hk, glimit, scale, bias[b, heads].reshape(-1), alpha)
            else:
                vmax = getattr(hk, "vmax", None)  # kept by the codes of a DecodeCache
                vmax = max_norm(Vh) if vmax is None else vmax
                thr = None if threshold is None else threshold[b, heads].reshape(-1)
                fused = None
                if isinstance(hk, CodedKeys) and threshold is None:  # one compiled call
                    if top_p is None:
                        fused = softmax_top_r(Qg, K, Vh, hk.codes, top_r, scale)
                    elif top_p < 1.0:
                        fused = softmax_top_p(Qg, K, Vh, hk.codes, top_p, scale)
                if fused is not None:
                    o, st = fused
                    hk.points_tested += st.pop("points_tested")
                else:
                    o, st = _head_softmax(Qg, K, Vh, hk, glimit, scale, top_r, thr, vmax, top_p)
                kept = st.pop("_kept")
                if exact:
                    st.update(_exact_softmax_stats(Qg, K, Vh, glimit, scale, o, kept))
            out[b, heads] = o.reshape(g, m, dv)
            described.append(hk.description)
            tested += hk.points_tested - before[0]
            visited += hk.nodes_visited - before[1]
            if return_stats:
                for key, val in st.items():
                    arr = stats.setdefault(key, np.zeros((B, H, m), dtype=np.asarray(val).dtype))
                    arr[b, heads] = val.reshape(g, m)
    if not return_stats:
        return out
    vis = np.full(m, n) if limit is None else np.clip(limit + 1, 0, n)
    stats["visible"] = np.broadcast_to(vis, (B, H, m)).copy()
    stats.setdefault("entries", np.zeros((B, H, m), dtype=np.int64))
    stats.update(points_tested=tested, nodes_visited=visited, index=described)
    return out, stats


def relu_attention(q, k, v, *, bias, alpha=1, scale=None, causal=False, index="auto", return_stats=False):
    """ReLU^alpha attention ``D^-1 ReLU^alpha(scale q k^T - bias) v`` through half-space reporting.

    The non-zero entries of row i are the keys with ``<q_i, k> > bias / scale``: a half-space
    query on the keys of its kv head. They are reported exactly (plus a rounding-size margin,
    so that nothing a dense float64 evaluation makes positive is missed), then only those
    entries are weighted and summed, in float64. Rows whose inner products or thresholds would
    leave the float64 range are scaled by a power of two first (the half-space is unchanged),
    so any finite input works. The result equals the dense computation
    (:func:`hsrgeom.attention.reference.relu_attention`) to rounding: there is no
    approximation. A row with no positive entry (D = 0) returns zeros.

    Parameters
    ----------
    q : array_like, (batch, heads, m, d), float32 or float64 (torch CPU tensors accepted)
    k : array_like, (batch, kv_heads, n, d); ``kv_heads`` divides ``heads`` (GQA / MQA)
    v : array_like, (batch, kv_heads, n, d_v)
    bias : float or array broadcasting to (batch, heads, m)
    alpha : positive int
        Any size: D^-1 cancels a positive factor of a row's weights, so they are taken relative
        to the row's largest (no overflow or underflow) and cost O(1) each whatever alpha is.
    scale : float > 0, default ``1 / sqrt(d)``
    causal : bool
        Bottom-right aligned, as FlashAttention: row i sees keys ``j <= n - m + i``. Long
        causal inputs search per-block indexes (the causal cut, see :func:`prefill`).
    index : str
        ``kind`` for :func:`hsrgeom.build_index` over each head's keys ("auto" picks a tree
        where geometry prunes and a blocked scan where it cannot).
    return_stats : bool
        Also return a dict of statistics (below).

    Returns
    -------
    numpy.ndarray (batch, heads, m, d_v), the dtype of q; and the stats dict if asked.
    """ + _STAT_DOC
    return_stats = I.return_stats(return_stats, exact=False)
    return _attention("relu", q, k, v, bias=bias, alpha=alpha, scale=scale, causal=causal,
                      index=index, block=None, return_stats=return_stats)


def softmax_attention(q, k, v, *, top_r=None, threshold=None, top_p=None, scale=None, causal=False,
                      return_stats=False, index="auto"):
    """Softmax attention restricted to the largest ("massively activated") entries of each row.

    Row i keeps the ``top_r`` keys with the largest ``<q_i, k>`` (exact maximum inner product
    search, ties to the smaller position) and/or the keys whose logit ``scale <q_i, k>`` is
    ``>= threshold`` (half-space reporting); with both, the top_r among those over the
    threshold; with neither, every key (dense softmax). Softmax is then taken over the kept
    entries only. ``top_r >= n`` gives dense softmax to rounding. A row that keeps nothing
    returns zeros. Weights are taken relative to the row's largest kept logit, and rows whose
    inner products would leave the float64 range are scaled by a power of two first, so any
    finite input works (huge logits give the one-hot limit, not NaN).

    The error is bounded by what was scanned: every dropped entry has a logit at most ``cut``
    (the threshold, or the smallest kept logit), so the dropped probability mass is at most
    ``delta = U / (Z + U)`` with ``U = (visible - kept) exp(cut)`` and Z the kept mass, and the
    output error ``||o_r - o|| <= 2 delta max_j ||v_j||`` (o = (1 - delta') o_r + delta' o_drop).

    ``top_p`` (in (0, 1], not combined with the other two) keeps, per row, the smallest set of
    keys, taken in decreasing logit order, whose share of the row's softmax mass is *certified*
    to be at least p, found by two queries: the largest logit ``s*`` (exact top-1), then one
    half-space report of the keys with logit ``>= s* - g``, ``g = log(p v / (1 - p))`` for v
    visible keys (``p = 1``: every key, dense softmax).

    *Certificate.* Weights are taken relative to s*: ``w_j = exp(s_j - s*) <= 1``. Let R be the
    reported keys, ``Z_R = sum_R w_j`` (computed), and ``U = (v - |R|) exp(-g')`` where ``-g'``
    is the largest logit a key left out of R can have relative to s* (``g`` less the float64
    rounding slack of a logit). Every key outside R has ``w_j <= exp(-g')``, so the total mass
    ``Z`` lies in ``[Z_R, Z_R + U]``. For a prefix P of R (largest logits first) with mass
    ``Z_P``, the mass dropped, ``Z - Z_P``, is at most ``Z_R - Z_P + U``, and since
    ``x / (Z_P + x)`` increases in x, its share of Z is at most
    ``delta = (Z_R - Z_P + U) / (Z_R + U)``; the share kept is at least ``Z_P / (Z_R + U)``.
    The kept set is the shortest prefix with ``Z_P >= p (Z_R + U)``, i.e. ``delta <= 1 - p``.
    It exists: P = R has ``Z_R >= 1`` (s*'s own key is in R, w = 1) and
    ``U <= v exp(-g) = (1 - p) / p``, so ``Z_R / (Z_R + U) >= 1 / (1 + (1 - p) / p) = p``
    (up to the rounding of the float64 sums, which ``dropped_mass_bound`` reports as computed).
    ``dropped_mass_bound`` is this delta and ``error_bound`` ``2 delta max_j ||v_j||``.

    Parameters as in :func:`relu_attention`; ``return_stats`` is False, True, or "exact".
    """ + _STAT_DOC + """
    Softmax adds ``dropped_mass_bound`` and ``error_bound`` (the bounds above), and with
    ``return_stats="exact"`` the dense comparison: ``rel_error`` (``||o_r - o|| / ||o||``),
    ``abs_error`` and ``kept_mass`` (the share of the softmax mass the kept keys really hold),
    at O(m n) cost."""
    return_stats = I.return_stats(return_stats, exact=True)
    return _attention("softmax", q, k, v, top_r=top_r, threshold=threshold, top_p=top_p, scale=scale,
                      causal=causal, index=index, block=None, return_stats=return_stats)


def prefill(q, k, v, *, causal=True, mode="relu", block=None, index="auto", return_stats=False, **kwargs):
    """Prompt prefilling: all m = n query rows at once, batched per kv head, with a causal cut.

    The keys of each kv head are split into blocks of ``block`` positions (default about n/8,
    at least 2048), each with its own index: row i queries, as one batch per block, only the
    blocks before its position and the block it sits in (whose reported keys after i are
    dropped), so the causal mask costs at most one block per row instead of the whole
    sequence. ``mode`` is "relu" (kwargs of :func:`relu_attention`: ``bias``, ``alpha``,
    ``scale``) or "softmax" (kwargs of :func:`softmax_attention`).
    """
    if mode not in ("relu", "softmax"):
        raise ValueError(f"mode must be 'relu' or 'softmax', got {mode!r}")
    if block is not None:
        block = I.count(block, "block")
    return_stats = I.return_stats(return_stats, exact=mode == "softmax")
    return _attention(mode, q, k, v, causal=causal, index=index, block=block,
                      return_stats=return_stats, scale=kwargs.pop("scale", None), **kwargs)
