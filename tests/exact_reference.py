"""An exact reference for half-space reporting and top-k, independent of the C++ core.

numpy's ``X @ a >= b`` rounds; near the boundary it can be wrong. Here float64 products give a
first answer, and every point whose rounded value is within a rigorous error bound of the
threshold is decided with ``fractions.Fraction`` (exact for every finite float).
"""
from fractions import Fraction

import numpy as np


def _exact_dot(a, x):
    return sum((Fraction(float(ai)) * Fraction(float(xi)) for ai, xi in zip(a, x)), Fraction(0))


def report(points, a, b):
    """Sorted int64 ids of points with exact <a, x> >= b (a already in the index dtype)."""
    x = np.asarray(points, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    n, d = x.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        s = x @ a
        tol = 4 * (d + 2) * 2.0**-53 * (np.abs(x) @ np.abs(a) + abs(b)) + 1e-300
        inside = s - b > tol
        unsure = ~(inside | (s - b < -tol))
    for i in np.flatnonzero(unsure):
        inside[i] = _exact_dot(a, x[i]) >= Fraction(float(b))
    return np.flatnonzero(inside).astype(np.int64)


def topk(points, q, k):
    """(ids, exact values) of the k largest exact <q, x>, ties broken by the smaller id."""
    x = np.asarray(points, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    n, d = x.shape
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        s = x @ q
        tol = 4 * (d + 2) * 2.0**-53 * (np.abs(x) @ np.abs(q)) + 1e-300
        # every point that could be in the answer: upper bound >= the k-th lower bound (all of
        # them when a float64 value overflowed)
        low = s - tol
        kth_low = np.sort(low)[::-1][k - 1]
        if np.isfinite(low).all() and np.isfinite(s + tol).all():
            cand = np.flatnonzero(s + tol >= kth_low)
        else:
            cand = np.arange(n)
    exact = {int(i): _exact_dot(q, x[i]) for i in cand}
    best = sorted(cand.tolist(), key=lambda i: (-exact[i], i))[:k]
    return np.array(best, dtype=np.int64)
