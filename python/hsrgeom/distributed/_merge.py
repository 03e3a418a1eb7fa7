"""Exact top-k merging: candidates ordered by the exact ``<q, x>`` (descending), ties by the
smaller id -- the local index's rule -- although the float64 scores are rounded.

Candidates are sorted by (-score, id); a float64 score computed left to right differs from the
exact value by at most ``gamma_d * sum |q_i x_i|`` (we use twice that plus an underflow term).
If no two neighbours in that order have overlapping error intervals (and all scores are
finite), the order is the exact order. Otherwise the row is sorted again with exact rational
keys (one Python sort per such row; rare outside crafted ties).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

_U = 2.0**-53


def score_error(q, pts):
    """Rigorous bound on |float64 score - exact score|: (m, K) from q (m, d), pts (m, K, d)."""
    d = q.shape[1]
    mg = 2.0 * (d + 2) * _U / (1.0 - (d + 2) * _U)
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.abs(q.astype(np.float64)[:, None, :] * pts.astype(np.float64)).sum(axis=2)
    return mg * s + d * 2.0**-1000


def _exact(qrow, p):
    return sum((Fraction(a) * Fraction(x) for a, x in zip(qrow.tolist(), p.tolist())), Fraction(0))


def topk_merge(q, scores, gids, pts, k, valid=None):
    """The k best of the candidates per row: (scores (m, kk), ids (m, kk), points (m, kk, d)),
    kk = min(k, valid candidates per row) (rows have at least kk valid candidates)."""
    m, K = gids.shape
    if valid is None:
        valid = np.ones((m, K), dtype=bool)
    kk = min(k, int(valid.sum(axis=1).min())) if m else min(k, K)
    d = q.shape[1]
    if m == 0 or K == 0 or kk == 0:
        return np.zeros((m, 0)), np.zeros((m, 0), np.int64), np.zeros((m, 0, d), pts.dtype)
    key = np.where(valid, -scores, np.inf)
    key = np.where(np.isnan(key), -np.inf, key)  # NaN scores (inf - inf): exact path below
    by_id = np.argsort(gids, axis=1, kind="stable")  # then by key, stable: (key, id) order
    order = np.take_along_axis(by_id, np.argsort(np.take_along_axis(key, by_id, 1), axis=1, kind="stable"), 1)
    s_sorted = np.take_along_axis(scores, order, 1)
    g_sorted = np.take_along_axis(gids, order, 1)
    v_sorted = np.take_along_axis(valid, order, 1)
    p_sorted = np.take_along_axis(pts, order[:, :, None], 1)
    err = score_error(q, p_sorted)
    with np.errstate(invalid="ignore"):
        lo, hi = s_sorted - err, s_sorted + err
        close = (lo[:, :-1] <= hi[:, 1:]) & v_sorted[:, :-1] & v_sorted[:, 1:]
    bad_rows = np.nonzero(close.any(axis=1) | ~np.isfinite(np.where(v_sorted, s_sorted, 0.0)).all(axis=1))[0]
    for j in bad_rows:
        cand = np.nonzero(v_sorted[j])[0]
        keys = [(-_exact(q[j], p_sorted[j, c]), int(g_sorted[j, c])) for c in cand]
        srt = [cand[i] for i in sorted(range(len(cand)), key=keys.__getitem__)]
        idx = np.array(srt + [c for c in range(K) if not v_sorted[j, c]], dtype=np.int64)
        s_sorted[j], g_sorted[j], v_sorted[j] = s_sorted[j, idx], g_sorted[j, idx], v_sorted[j, idx]
        p_sorted[j] = p_sorted[j, idx]
    return s_sorted[:, :kk], g_sorted[:, :kk], p_sorted[:, :kk]
