"""Spatial partitioning and the rounding-safe box tests of a sharded index (numpy only).

A shard's box is the tight bounding box ``[lo, hi]`` of its points, in the index dtype. For a
half-space ``<a, x> >= b`` (``a`` cast to the index dtype, ``b`` float64, as the local index
reads them) the exact extremes of ``<a, x>`` over the box are at corners:
``max = sum_i max(a_i lo_i, a_i hi_i)``, ``min = sum_i min(a_i lo_i, a_i hi_i)``.

Contract of :func:`classify`: a shard is *skipped* only if the exact ``max < b`` (so no point of
the box, not even one exactly on the boundary at a corner, can be in the half-space), and is
*inside* only if the exact ``min >= b`` (every point of the box is in the half-space). Both
are decided by a float64 evaluation with a rigorous error margin (products and a sum of d
terms: error at most ``gamma_{d+1} * sum |a_i x_i|``, doubled, plus an underflow term); the
few pairs within the margin, and any overflow, are decided in exact rational arithmetic
(``fractions.Fraction`` holds every finite float exactly).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

SKIP, PARTIAL, INSIDE = 0, 1, 2
_U = 2.0**-53
_TINY = 2.0**-1000  # covers the absolute error of subnormal products (d terms of <= 2^-1074)
_BLOCK = 1 << 22  # (queries x shards x d) float64 terms evaluated at once


def _margin(d):
    return 2.0 * (d + 2) * _U / (1.0 - (d + 2) * _U)


def _corner_terms(a, lo, hi):
    """(m, s, d) float64 arrays of min and max of a_i * {lo_i, hi_i}."""
    p = a[:, None, :] * lo[None, :, :]
    q = a[:, None, :] * hi[None, :, :]
    return np.minimum(p, q), np.maximum(p, q)


def _exact_extreme(a, lo, hi, which):
    """Exact max (which=1) or min (which=0) of <a, x> over the box, as a Fraction."""
    tot = Fraction(0)
    for ai, xl, xh in zip(a.tolist(), lo.tolist(), hi.tolist()):
        p, q = Fraction(ai) * Fraction(xl), Fraction(ai) * Fraction(xh)
        tot += max(p, q) if which else min(p, q)
    return tot


def box_bounds(a, lo, hi):
    """Rigorous float64 bounds over boxes: (max_upper, min_lower), each (m, s): the exact max
    of <a, x> over box s is <= max_upper[j, s], the exact min >= min_lower[j, s]. Overflow gives
    +inf / -inf (the bound still holds)."""
    a = np.asarray(a, dtype=np.float64)
    d = a.shape[1]
    mg = _margin(d)
    with np.errstate(over="ignore", invalid="ignore"):
        tmin, tmax = _corner_terms(a, lo, hi)
        smax, smin = tmax.sum(axis=2), tmin.sum(axis=2)
        amax, amin = np.abs(tmax).sum(axis=2), np.abs(tmin).sum(axis=2)
        up = smax + mg * amax + d * _TINY
        low = smin - mg * amin - d * _TINY
    up[~np.isfinite(up)] = np.inf
    low[~np.isfinite(low)] = -np.inf
    return up, low


def classify(a, b, lo, hi, nonempty):
    """Status (m, s) int8 of every (query, shard): SKIP, PARTIAL or INSIDE (module docstring).

    ``a``: (m, d) in the index dtype; ``b``: (m,) float64; ``lo``, ``hi``: (s, d) float64 (values
    of the index dtype); ``nonempty``: (s,) bool (empty shards are always skipped)."""
    m, s = len(a), len(lo)
    out = np.zeros((m, s), dtype=np.int8)
    if m == 0 or s == 0:
        return out
    d = a.shape[1]
    step = max(1, _BLOCK // max(1, s * d))
    for j0 in range(0, m, step):
        aj, bj = a[j0 : j0 + step], b[j0 : j0 + step]
        af = aj.astype(np.float64)
        mg = _margin(d)
        with np.errstate(over="ignore", invalid="ignore"):
            tmin, tmax = _corner_terms(af, lo, hi)
            smax, smin = tmax.sum(axis=2), tmin.sum(axis=2)
            emax = mg * np.abs(tmax).sum(axis=2) + d * _TINY
            emin = mg * np.abs(tmin).sum(axis=2) + d * _TINY
            bb = bj[:, None]
            skip = smax + emax < bb
            inside = smin - emin >= bb
            sure_meet = smax - emax >= bb  # max >= b exactly: not skipped
            sure_out = smin + emin < bb  # min < b exactly: not inside
        st = np.full(skip.shape, PARTIAL, dtype=np.int8)
        st[skip] = SKIP
        st[inside] = INSIDE
        # undecided (within the margin, or non-finite): exact arithmetic
        und_skip = ~skip & ~sure_meet
        und_in = ~inside & ~sure_out & ~skip
        for jj, ss in zip(*np.nonzero(und_skip | und_in)):
            av, bq = af[jj], Fraction(float(bj[jj]))
            if und_skip[jj, ss] and _exact_extreme(av, lo[ss], hi[ss], 1) < bq:
                st[jj, ss] = SKIP
                continue
            if und_in[jj, ss]:
                st[jj, ss] = INSIDE if _exact_extreme(av, lo[ss], hi[ss], 0) >= bq else PARTIAL
        st[:, ~nonempty] = SKIP
        out[j0 : j0 + step] = st
    return out


# ---- kd cuts ------------------------------------------------------------------------------------
def kd_cuts(sample, cells):
    """kd cuts of ``sample`` into ``cells`` cells: a list of nodes ``[dim, value, left, right]``
    (a child >= 0 is a node, < 0 the cell ``-child - 1``); node 0 is the root, [] for one cell.
    A point goes left iff ``x[dim] < value``; a node of t cells splits at the quantile
    ``floor(t / 2) / t`` of its sample along the widest side, so cells hold about equal shares.
    ``value`` is a sample coordinate (a value of the data dtype, exact in float64 and JSON)."""
    nodes = []
    counter = [0]

    def rec(rows, t):
        if t == 1:
            c = counter[0]
            counter[0] += 1
            return -c - 1
        me = len(nodes)
        nodes.append(None)
        if len(rows):
            ext = rows.max(axis=0).astype(np.float64) - rows.min(axis=0).astype(np.float64)
            dim = int(np.argmax(ext))
            col = np.sort(rows[:, dim])
            value = float(col[min(len(col) - 1, (len(col) * (t // 2)) // t)])
            left_rows, right_rows = rows[rows[:, dim] < value], rows[rows[:, dim] >= value]
        else:
            dim, value, left_rows, right_rows = 0, 0.0, rows, rows
        left = rec(left_rows, t // 2)
        right = rec(right_rows, t - t // 2)
        nodes[me] = [dim, value, left, right]
        return me

    rec(np.asarray(sample), int(cells))
    return nodes


def assign_cells(x, nodes):
    """Cell number (int64) of every row of ``x`` under the cuts ``nodes``."""
    n = len(x)
    if not nodes:
        return np.zeros(n, dtype=np.int64)
    dims = np.array([nd[0] for nd in nodes], dtype=np.int64)
    vals = np.array([nd[1] for nd in nodes], dtype=np.float64)
    kids = np.array([[nd[2], nd[3]] for nd in nodes], dtype=np.int64)
    cur = np.zeros(n, dtype=np.int64)
    live = np.arange(n)
    while live.size:
        node = cur[live]
        go_right = x[live, dims[node]].astype(np.float64) >= vals[node]
        cur[live] = kids[node, go_right.astype(np.int64)]
        live = live[cur[live] >= 0]
    return -cur - 1


def probe_kd_fraction(sample, nodes, cells, rng, queries=64, selectivity=1e-3):
    """Mean fraction of the kd cells (boxes of the sample's cells) that probe queries (random
    directions, offsets reporting ``selectivity`` of the sample) cannot skip."""
    sample = np.asarray(sample)
    if len(sample) == 0 or cells <= 1:
        return 1.0
    c = assign_cells(sample, nodes)
    d = sample.shape[1]
    lo = np.zeros((cells, d))
    hi = np.zeros((cells, d))
    ne = np.zeros(cells, dtype=bool)
    for k in range(cells):
        r = sample[c == k]
        if len(r):
            lo[k], hi[k], ne[k] = r.min(axis=0), r.max(axis=0), True
    a = rng.standard_normal((queries, d))
    b = np.quantile(sample.astype(np.float64) @ a.T, 1 - selectivity, axis=0)
    up, _ = box_bounds(a, lo, hi)
    return float(((up >= b[:, None]) & ne[None, :]).mean() * cells / max(1, ne.sum()))
