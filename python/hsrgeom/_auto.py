"""``build_index``: builds the structure asked for, or ("auto") times candidate structures on
a sample of the points and builds the one predicted fastest for the caller's workload.

Every tuning constant of the choice is in the block below, with what it trades off; the
measurements behind them are in docs/performance.md.
"""
from __future__ import annotations

import inspect
import sys

import numpy as np

from . import _core
from . import _validate as V
from ._structures import (
    STRUCTURES,
    BruteForce,
    ConvexLayers,
    ConvexLayers3,
    PartitionTree,
    QuantizedScan,
    ShallowCutting3,
)

# ---- tuning of "auto" (every constant of the choice) ---------------------------------------------
# Which candidates: the scan always, QuantizedScan (the scan over 8-bit codes) for d >=
# _QUANTIZED_PROBE_MIN_D; partition trees (split widest, and pca for
# 4 <= d <= _PCA_MAX_D); for d = 2 convex layers (a partial peel above _LAYERS_MAX_N); for d = 3
# ShallowCutting3 (outputs <= _DEEP_CUTTING_MAX_OUTPUT) and convex layers (n <= _LAYERS_MAX_N).
# How they are timed: a sample of _PROBE_N points and a quarter of it, probe queries reporting
# the caller's share of the points (at least _PROBE_MIN_OUTPUT). How one is chosen: within
# _PROBE_MARGIN (or _MEASURED_MARGIN when timed on all n) of the fastest, the cheapest to build
# (_BUILD_CLASS); then QuantizedScan instead of the scan for small batches over large points.
_SMALL_N = 4096  # below this a scan is as fast as any traversal
_PROBE_N = 50_000  # sample size of the probe
_PROBE_MIN_OUTPUT = 16  # points reported by a probe query at least
_DEFAULT_OUTPUT = (1e-3, 100, 1000)  # no output_size: 0.1 % of n, clipped to [100, 1000] points
# Convex layers build superlinearly (measured: 3 s / 15 s at n = 10^6, 81 s / 370 s at 10^7 for
# d = 2 / 3), so "auto" peels them completely only up to this n; above it, d = 2 peels the
# layers its shallow table uses (12 s at 10^7) and d = 3 is not a candidate.
_LAYERS_MAX_N = 2_000_000
# ConvexLayers and ShallowCutting3 keep 32-bit ids in their lists: no more points than this
_BLOCK_MAX_N = 2**32
# ShallowCutting3 is a d = 3 candidate for outputs up to this many points without tiers: with the
# former default budget (2 n) its levels reached depth 444 at every n measured from 3*10^4 to 10^7
# (284 at 5000, 867 from 3*10^6; with today's 12 n, 867 from 3*10^4), and
# deeper queries go to its embedded tree (at 10^7 points and 1000 outputs 2.2x slower than a
# PartitionTree); a built cutting whose levels stop below the caller's output is replaced
_CUTTING_MAX_OUTPUT = 444
# (Those levels were starved at ~10^6 points by the class's former default budget of 2 n
# candidates; its default is now 12 n, 6 n above 2*10^6: ShallowCutting3.default_max_candidates.)
# Above _CUTTING_MAX_OUTPUT and up to _DEEP_CUTTING_MAX_OUTPUT, the cutting built at n has tiers: levels to
# _DEEP_FINE_DEPTH on the default grid (tier 0), deeper ones on coarser grids, in a budget of
# _DEEP_BUDGET n stored candidates (below; 31 bytes each for float32 points, 43 for float64, with
# their id order) and levels to _DEEP_DEPTH_FACTOR x the output (the budget stops them first at 10^6; with 4x, 23 of
# 200 uniform 1,000-point queries found no certified level and went to the tree, 10x slower per
# point: 1.8x the time of the whole batch at gaussian). A query reporting k points reads the
# list of a level ~1.3-2 k deep, ~2-3 k candidates on the coarser grid of tier 1 and ~1.3-2 k on
# the default grid: where the class's default budget is _DEEP_FINE_BUDGET n (up to 2*10^6
# points) the fine tier reaches 1800 in it
# (~330 MiB at 10^6: uniform 1,000-point queries 2.63 -> 1.54 ns per id, clustered 5.66 -> 2.34,
# gaussian 1.41 -> 1.17, session 25), above it 444 in 6 n (1.2 GB at 10^7 already).
_DEEP_CUTTING_MAX_OUTPUT = 3000
# Convex layers are candidates for outputs up to these many points (d = 2, d = 3). Above, every
# case measured took a tree, by a margin that grows with the output: a layer structure tests
# each reported point (ConvexLayers3 ~2.7 per reported, walking hull edges), a tree reports whole
# nodes. ConvexLayers' own probe at 10^6 points: 4x (3,000 outputs) and 8x (10,000) the tree's
# predicted time; docs/peers.md / peers_1e7.md at 10,000 outputs: 2.1-2.2x the tree at 10^6 and
# 10^7. ConvexLayers3: 18-33x at 10,000 (its probe; docs/layers3.md 3.5x at 10^5 and 10^6);
# at 3,000 no case measured took it either. Probing them there cost auto 0.6-0.75 s (one build on
# an 80,000-point sample) for trees that build in 0.15-0.25 s.
_LAYERS_MAX_OUTPUT = 5000
_LAYERS3_MAX_OUTPUT = 3000
_DEEP_FINE_DEPTH, _DEEP_FINE_BUDGET = 1800, 12  # that depth needs that budget per point (else: 444)
# For outputs up to _DEEP_FINE2_OUTPUT the fine tier goes to _DEEP_FINE2_DEPTH: a k-point query reads
# a level ~1.3-2 k deep, which at 1800 was on the coarser tier (or, past the budget, missing: the
# tree) for k ~ 1000-2000. At 10^6 points (benchmarks/per_id.py --peers-data, ns per id unsorted,
# fine 1800 -> 3600): clustered 500 / 1000 / 1500 / 2000 outputs 2.59 / 3.01 / 4.33 / 5.12 ->
# 2.19 / 2.09 / 3.20 / 4.19, uniform 2.22 / 2.38 / 2.30 / 2.75 -> 2.16 / 2.26 / 2.02 / 2.26,
# gaussian even or better, 8 % less memory; at 2500 and 3000 outputs the budget then drops the
# coarser tier's levels those queries need (3000 uniform 3.45 -> 7.77): 1800 there.
_DEEP_FINE2_DEPTH, _DEEP_FINE2_OUTPUT = 3600, 2000
# Both in a budget of _DEEP_BUDGET n instead of the class's 12 n, which kept too few levels on the
# coarser tiers for the queries the fine one does not certify (session 37, 10^6 peers' points, the
# two cuttings queried alternately in one process, one thread, ns per id unsorted, best of 12, 12 n
# -> 16 n): fine tier 3600, uniform 1,000 / 2,000 outputs 2.29 / 2.14 -> 2.05 / 1.77, clustered
# 2.00 / 3.36 -> 1.87 / 2.44, gaussian 1.47 / 1.42 -> 1.48 / 1.34, 251-268 -> 305-326 MiB; fine tier
# 1800, uniform 2,500 / 3,000 3.63 / 3.91 -> 3.15 / 2.78, clustered 5.94 / 5.26 -> 4.92 / 4.24,
# gaussian alike (sorted 4-9 % slower), 287-296 -> 344-386 MiB; at 2*10^6 points 562 -> 612 MiB.
_DEEP_BUDGET = 16
_DEEP_DEPTH_FACTOR = 12
# Layers a partial d = 2 peel takes: what the default 128-level table uses, + 1 (13.9 s at 10^7; 65
# layers took 12.5 s, and 1,000-point queries then cost 2.77 ns per id in the tree, 0.74 in the table)
_TABLE_PEEL = 129
# For outputs above _DEEP_TABLE_OUTPUT points ConvexLayers gets a table of _DEEP_TABLE_LAYERS
# levels (and a partial peel of that + 1 above _LAYERS_MAX_N): clustered 1,000-point queries walked
# 28 layers on average (179 at most) past the default 128 levels. At 10^6 points (one thread, ns
# per id unsorted, 128 -> 256 levels): clustered 1,000 outputs 3.49 -> 1.56, 3,000 8.23 -> 3.15;
# uniform 3,000 7.29 -> 1.29; 100-500 outputs unchanged within noise; build 8.3 -> 9.7 s
# (clustered), 3.4 -> 5.7 s (uniform), memory ~1.9x (65 -> 120 MiB clustered).
_DEEP_TABLE_OUTPUT = 500
_DEEP_TABLE_LAYERS = 256
_FULL_PROBE_RATIO = 4  # above _FULL_PROBE_ABOVE x the sample size, a tree predicted within this factor of the scan is timed at n
_PROBE_MARGIN = 0.85  # a tree must be this much faster (time ratio) than the scan to be chosen
_MEASURED_MARGIN = 0.9  # ... or this much, when both were timed at scale (a close call)
_KEEP_AT_N_BYTES = 1 << 30  # a scan timed on all n points is kept for the choice if the points take <= this
_QUANTIZED_MAX_BATCH = 4  # QuantizedScan instead of the scan for batches up to this size ...
_QUANTIZED_MIN_BYTES = 64 << 20  # ... over at least this many bytes of points ...
_QUANTIZED_MIN_D = 32  # ... in at least this many dimensions
# QuantizedScan is probed from this d on: below it the float32 scan's few coordinates per point
# leave the codes' bound and exact checks no room (and trees win there anyway)
_QUANTIZED_PROBE_MIN_D = 8
# The pca split is a candidate for 4 <= d <= this only: its build forms the d x d covariance and
# its eigenvectors and rotates the points, O(n d^2 + d^3) (probing it took 278 s at d = 4096,
# n = 5000); the widest split stays a candidate at every d.
_PCA_MAX_D = 64
_PROBE_QUERIES = 16  # probe queries per batch when batch_size is not given ...
_PROBE_MAX_QUERIES = 64  # ... and at most this many
_TILE = 8  # a candidate faster than _TILE_BELOW x a call's fixed cost is timed on its probe
_TILE_BELOW = 3  # queries repeated _TILE times per call (its work is otherwise lost in noise)
_GROWTH_MIN = 0.2  # extrapolation exponents are clipped to [_GROWTH_MIN, 1] (no structure is superlinear)
_FULL_PROBE_ABOVE = 16  # close calls are timed at scale (n or n / 4 points) only for n > this x the sample size
_MAX_TESTED = 0.5  # a structure is usable only if its probe queries tested less than this share of the points
# When both probes report the same number of points (the caller's share of the sample is below
# _PROBE_MIN_OUTPUT), a query of these output-sensitive structures costs ~log n more at n: a
# growth above _PLAUSIBLE_GROWTH is timing noise, and their three timings (sample, quarter
# sample, a call's fixed cost) are taken once more, the best of each kept. At 10^7 points and 100
# outputs (d = 2), a fit of n^0.96 predicted the convex layers at 0.47 us against the tree's
# 0.54, within the margin: auto took the tree, 1.9x slower at n (3 quiet runs: n^0.20, layers).
_OUTPUT_SENSITIVE = (ConvexLayers, ConvexLayers3, ShallowCutting3)
_PLAUSIBLE_GROWTH = 0.5
# In d <= this, a query's cost depends on how many points it reports more than on n (a cap of k
# points is crossed by about as many leaves, hull layers or cutting cells at any n), so each
# candidate is also timed with queries reporting the caller's number of points, on the sample or
# (when that is more than _ABSOLUTE_MAX_SHARE of it) on a larger sample of which it is that share
# (at most n points), and predicted no faster than that (except ShallowCutting3, whose levels
# scale with n):
# probes at the caller's share report ~50 points at n = 10^6, where convex layers beat a tree
# that is 1.5x faster at 1000 points.
_ABSOLUTE_MAX_D = 3
_ABSOLUTE_MAX_SHARE = 0.125
_ABSOLUTE_MAX_N = 800_000  # the largest such sample (outputs up to 100,000 points)
# Threads a call uses (as the C++ side decides, parallel.hpp kParallelWork): work units above this
_PARALLEL_WORK = 4e6
_WORK_PER_ID = 32  # report.hpp kWorkPerId
# Build cost classes of the candidates (within a class builds are < 2x apart): the scan, then
# trees and ShallowCutting3 (1, the default), then convex layers (2: probed last, and only as far
# as they could still be chosen)
_BUILD_CLASS = {BruteForce: 0, QuantizedScan: 0, ConvexLayers: 2, ConvexLayers3: 2}
# The scans: every point is read by every query (time exactly linear in n, split over threads by
# points; they test all points by design, so the _MAX_TESTED rule does not apply to them)
_SCANS = (BruteForce, QuantizedScan)


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


def _unit_scaled(points, transpose=False):
    """(points / s in float64, s) with s > 0 a power of two and every |points / s| < 2 (exact:
    a division by a power of two); transposed (d x n, contiguous) when asked."""
    top = float(np.max(np.abs(points))) if points.size else 0.0
    s = float(np.ldexp(1.0, int(np.frexp(top)[1]) - 1)) if top > 0 else 1.0  # 2^(e-1) <= top < 2^e
    src = points.T if transpose else points
    out = np.empty(src.shape)  # one float64 array, converted and divided in place
    np.divide(src, s, out=out, dtype=np.float64)
    return out, s


def _probe_offsets(points, a, k):
    """Offsets at which each half-space of normals ``a`` holds about ``k`` of ``points``: midway
    between the k-th and (k+1)-th largest projections, so that no point lies on the boundary
    (an offset equal to a point's projection makes every query decide a tie exactly, which
    real queries rarely do; it cost ShallowCutting3 13 % per probe query, 3x before
    filter.hpp decided only the unsure candidates exactly)."""
    xt, scale = _unit_scaled(points, transpose=True)  # projections of points near the float64 limit overflow
    n, a64 = len(points), a.astype(np.float64)
    # a few queries at a time, through one buffer: all of them at once wrote an m x n array
    # (100 MB for 200,000 points), and its first touch cost more than the products
    rows = 4
    buf, mid = np.empty((rows, n)), np.empty(len(a))
    for i in range(0, len(a), rows):
        proj = buf[:min(rows, len(a) - i)]
        np.matmul(a64[i:i + rows], xt, out=proj)
        for j, p in enumerate(proj):
            top = _top(p, k + 1)  # the k-th and (k+1)-th largest are its two smallest
            mid[i + j] = 0.5 * (top[1] + top[0])
    # finite: a probe offset only needs to be near the k-th projection
    big = np.finfo(np.float64).max
    with np.errstate(over="ignore"):
        return np.clip(mid * scale, -big, big)


def _top(p, r, step=16):
    """The r largest values of p (>= 2 of them), the two smallest first: a partition of the values
    above a threshold from every step-th value (the values at or above it are >= r with
    overwhelming odds: else all of p), for r <= len(p) / 4 (at 200,000 points and r ~ 20, 0.1 s
    of auto's close call went to partitioning all of p)."""
    n = len(p)
    top = p
    if 4 * r <= n and n >= 64 * step:
        sub = p[::step].copy()
        q = min(len(sub) - 1, 2 * r // step + 16)  # ~2 r + 256 values expected at or above
        sub.partition(len(sub) - 1 - q)
        top = p[p >= sub[len(sub) - 1 - q]]
        if len(top) < r:
            top = p
    m = len(top)  # (p itself is partitioned in place: a scratch row)
    top.partition([m - r, m - r + 1])
    return top[m - r:]


def _time_queries(index, a, b, repeat=5, n_threads=1, budget=0.25, warm_up=True):
    """Best time of ``index.count(a, b)`` per query (one thread by default), after a warm-up call
    (none for ``warm_up=False``: an index just built on all n points, whose calls take tens of
    ms); fewer than ``repeat`` calls once they took ``budget`` seconds in all (a slow candidate's
    time is not noise-bound, and probing it ``repeat`` times made "auto" cost seconds)."""
    import time

    if warm_up:
        index.count(a, b, n_threads=n_threads)  # first touch of memory
    best, total = float("inf"), 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        index.count(a, b, n_threads=n_threads)
        dt = time.perf_counter() - t
        best, total = min(best, dt), total + dt
        if total > budget:
            break
    return best / len(a)


def _speedup(cls, n, d, m, k=0):
    """Threads a call of m queries over n points reporting k each will use (roughly as the C++
    side decides, parallel.hpp kParallelWork, report.hpp kWorkPerId): a scan splits the points,
    the other structures the queries."""
    from ._core import get_num_threads

    t = get_num_threads()
    if cls in _SCANS:
        return t if n * m * d >= _PARALLEL_WORK else 1
    return min(t, m) if m * (64 * d + 4 * d * np.sqrt(n) + _WORK_PER_ID * k) >= _PARALLEL_WORK else 1


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
    m = int(min(max(batch_size or _PROBE_QUERIES, 1), _PROBE_MAX_QUERIES))
    a = _probe_normals(sample, m, rng)
    if output_size is None:
        frac, lo, hi = _DEFAULT_OUTPUT
        k_user, said = float(np.clip(frac * n, lo, hi)), "default"
    else:
        k_user, said = float(output_size), "given"
    k_s = int(np.clip(round(k_user / n * s), _PROBE_MIN_OUTPUT, s // 2))
    k_q = int(np.clip(round(k_user / n * s / 4), min(k_s, _PROBE_MIN_OUTPUT), len(small) // 2))
    b, b_small = _probe_offsets(sample, a, k_s), _probe_offsets(small, a, k_q)
    k_abs = int(round(k_user))
    absolute = d <= _ABSOLUTE_MAX_D and k_s < k_abs <= _ABSOLUTE_MAX_SHARE * min(n, _ABSOLUTE_MAX_N)
    # the sample on which queries report k_abs points: the probe's, or a larger one where k_abs
    # is _ABSOLUTE_MAX_SHARE of the points (at n = 10^7, convex layers predicted from 50-point
    # probes at 0.2 us took 77 us at 10,000 outputs, 2.4x a PartitionTree)
    s_abs = max(s, int(np.ceil(k_abs / _ABSOLUTE_MAX_SHARE))) if absolute else s
    abs_pts = sample if s_abs == s else pts[np.sort(rng.choice(n, size=s_abs, replace=False))]
    b_abs = _probe_offsets(abs_pts, a, k_abs) if absolute else None
    candidates = [("brute_force", BruteForce, {})]
    if d >= _QUANTIZED_PROBE_MIN_D and not params:
        candidates.append(("quantized_scan", QuantizedScan, {}))
    splits = [params["split"]] if "split" in params else (["widest"] if d <= 3 or d > _PCA_MAX_D else ["widest", "pca"])
    for split in splits:
        candidates.append((f"partition_tree(split={split})", PartitionTree, {**params, "split": split}))
    if d == 2 and not params and k_user <= _LAYERS_MAX_OUTPUT and n <= _BLOCK_MAX_N:
        prm = _layers_params(n, k_user)
        shown_prm = ", ".join(f"{k}={v}" for k, v in prm.items())
        candidates.append((f"convex_layers({shown_prm})" if prm else "convex_layers", ConvexLayers, prm))
    if d == 3 and not params and k_user <= _DEEP_CUTTING_MAX_OUTPUT and n <= _BLOCK_MAX_N:
        # probed with the grid n points would get (the sample's default grid is coarser: its
        # lists would be longer than at n), capped so that a triangle keeps ~60 sample points
        grid = min(ShallowCutting3.default_grid(n), ShallowCutting3.default_grid(5 * s))
        # with the candidate budget per point the cutting gets at n, so that the sample's levels
        # reach the probe's outputs (with 2 s, grid 8 stopped at depth ~90 < 150, the probe
        # timed its tree, and auto took a tree 3-5x slower at 3000 gaussian outputs)
        per_point = ShallowCutting3.default_max_candidates(n) // n
        candidates.append(("shallow_cutting3", ShallowCutting3, {"grid": grid, "max_candidates": per_point * s}))
    if d == 3 and not params and n <= _LAYERS_MAX_N and k_user <= _LAYERS3_MAX_OUTPUT:
        candidates.append(("convex_layers3", ConvexLayers3, {}))
    # SimplicialPartitionTree is not a candidate: on every case measured (docs/simplicial.md) it
    # tests 1.5-5x the points PartitionTree tests and builds ~10x slower.
    # the cost of a call that finds nothing (validation, result arrays), the same for all n
    empty = BruteForce._from_valid(sample[:1])  # (one point: a call's fixed cost)
    overhead = _time_queries(empty, a, b)
    tile = _TILE
    a8, b8, b8_small = np.tile(a, (tile, 1)), np.tile(b, tile), np.tile(b_small, tile)
    overhead8 = None
    predicted, tested, shown, skipped = {}, {}, {}, {}
    sample_work = {}  # a probed candidate's time per query on the sample, above a call's fixed cost
    timed_at_scale = None  # the close call's tree, timed on a quarter of the points

    def probe(name, cls, prm, bound=np.inf):
        """Sets predicted[name], tested[name] and shown[name]; or, as soon as one of its probes
        puts a lower bound of its prediction at or above ``bound`` (it could not be chosen),
        stops there (one build instead of up to three) and sets skipped[name] to that bound."""
        nonlocal overhead8
        threads = _speedup(cls, n, d, batch_size or m, k_user)
        if cls is ConvexLayers:  # the table's budget at n: its levels on the sample then hold
            # outputs as deep as the table at n will (with the sample's own 4 candidates per
            # point, 1,000-point probes walked the layers past ~32 levels, and auto took a tree
            # 1.3-1.8x slower than the 128-level table at 10^6 points)
            prm = {**prm, "max_candidates": max(4096, 4 * n)}
        t_abs = 0.0
        if absolute and cls is not ShallowCutting3:  # the same output from fewer points: no faster at n
            # (not the cutting: its levels are set by n, so the same output is a deeper query on
            # the sample than at n); timed first, as it bounds the prediction from below
            idx = cls._from_valid(abs_pts, **prm)
            def abs_time():
                return overhead + (_time_queries(idx, a, b_abs) - overhead) / threads

            t_abs = abs_time()
            if t_abs >= bound:  # timed once more before it ends the probe (see below)
                t_abs = min(t_abs, abs_time())
            if t_abs >= bound:
                skipped[name] = t_abs
                return
            if s_abs != s:
                del idx
                idx = cls._from_valid(sample, **prm)
        else:
            idx = cls._from_valid(sample, **prm)
        t, ovh = _time_queries(idx, a, b), overhead
        tested[name] = idx.stats.points_tested.mean() / s
        # A structure whose queries cost less than a call's fixed cost per query is timed on the
        # probe queries repeated 8 times per call: otherwise its work (time - overhead) is a small
        # difference of noisy times, and so is the growth between sample and quarter sample
        # (ConvexLayers at 10^6 uniform points: 0.04 us of work beside 0.08 us of overhead; one
        # noisy probe extrapolated it as n^0.6 and auto took a tree 5x slower)
        tiled = t < _TILE_BELOW * overhead
        if tiled:
            if overhead8 is None:
                overhead8 = _time_queries(empty, a8, b8)
            t, ovh = _time_queries(idx, a8, b8), overhead8
        # growth >= _GROWTH_MIN (scans: 1) and n >= s: the prediction is at least this
        def lower(t):
            return overhead + max(t - ovh, 1e-9) * (n / s) ** (1.0 if cls in _SCANS else _GROWTH_MIN) / threads

        low = lower(t)
        if low >= bound:  # one timing must not end the probe: a slow spell of the machine did (session
            # 40: ConvexLayers' first probe 1.7x its usual time, auto took a tree 1.9x slower)
            t = min(t, _time_queries(idx, a8, b8) if tiled else _time_queries(idx, a, b))
            low = lower(t)
        if max(low, t_abs) >= bound:
            skipped[name] = max(low, t_abs)
            return
        idx_small = cls._from_valid(small, **prm)
        a_t, b_t, b_t_small = (a8, b8, b8_small) if tiled else (a, b, b_small)
        t_small = _time_queries(idx_small, a_t, b_t_small)

        def fit():
            # a scan's work is exactly linear in n; on a small sample its fixed costs make it look
            # sublinear, which would favour it wrongly when extrapolated
            work, work_small = max(t - ovh, 1e-9), max(t_small - ovh, 1e-9)
            if cls in _SCANS:
                return work, 1.0
            return work, float(np.clip(np.log(work / work_small) / np.log(4), _GROWTH_MIN, 1.0))

        work, growth = fit()
        retimed = cls in _OUTPUT_SENSITIVE and k_q == k_s and growth > _PLAUSIBLE_GROWTH
        if retimed:
            ovh = min(ovh, _time_queries(empty, a_t, b_t))
            t, t_small = min(t, _time_queries(idx, a_t, b_t)), min(t_small, _time_queries(idx_small, a_t, b_t_small))
            work, growth = fit()
        predicted[name] = max(overhead + work * (n / s) ** growth / threads, t_abs)
        sample_work[name] = work
        shown[name] = f"{name} {predicted[name] * 1e3:.3g} ms (~n^{growth:.2f}{', timed twice' if retimed else ''})"

    # Candidates that build far slower (convex layers: _BUILD_CLASS 2) are probed last: one is
    # chosen only if it is faster than every cheaper one by the margin, so a first probe that
    # bounds its prediction above that ends its probe (d = 2, 10,000 outputs at 10^6 points:
    # three table builds were 3.8 s of auto's 4.4 s, for a tree that builds in 0.2 s)
    for name, cls, prm in candidates:
        if _BUILD_CLASS.get(cls, 1) < 2:
            probe(name, cls, prm)
    margin, at_n, close = _PROBE_MARGIN, {}, ""  # at_n: indexes built on all the points
    b_at_n = []

    def offsets_at_n():
        """Offsets of the probe normals for queries on all n points reporting ~k_user of them
        (from a 4 s-point subsample; computed once, for the close calls below)."""
        if not b_at_n:
            big = pts[np.sort(rng.choice(n, size=min(n, 4 * s), replace=False))]
            b_at_n.append(_probe_offsets(big, a, int(np.clip(round(k_user / n * len(big)), 2, len(big) // 2))))
        return b_at_n[0]

    # Far above the sample size a close call is measured, not extrapolated: at d = 16 a tree's
    # cost grows ~linearly up to 10^6 points and then bends (uniform: 1.8x the scan at 10^6, 0.66x
    # at 10^7), and a scan streaming n points from memory runs slower per point than one over a
    # cached sample (docs/performance.md). The tree is timed on a quarter of the points
    # (extrapolated to n), the scans on all n points, on the same queries.
    trees = [k for k, c, _ in candidates if c is PartitionTree]
    scans = [(k, c) for k, c, _ in candidates if c in _SCANS]
    if n > _FULL_PROBE_ABOVE * s and trees:
        tree = min(trees, key=predicted.get)
        fastest = min(predicted[k] for k, _ in scans)
        if 1 / _FULL_PROBE_RATIO < predicted[tree] / fastest < _FULL_PROBE_RATIO:
            b_n = offsets_at_n()
            # the fastest scan predicted is timed at n, and QuantizedScan when predicted within
            # the margin of it; the others are scaled by its measured / predicted (QuantizedScan
            # predicted at half the scan's time at d = 16: building and timing the scan at n cost
            # 0.4 s for nothing). BruteForce reads 4-8x the bytes of QuantizedScan's codes: over n
            # points it slows down by memory at least as much, so it is timed only when predicted
            # fastest (timing it too at 10,000 outputs, d = 16, cost 0.2 s of auto's 1.0 s)
            timed = sorted((k for k, c in scans if predicted[k] == fastest
                            or (c is QuantizedScan and predicted[k] * _PROBE_MARGIN <= fastest)), key=predicted.get)
            guess, kept = predicted[timed[0]], np.inf
            for k in timed:
                index = dict(scans)[k]._from_valid(pts)
                predicted[k] = _time_queries(index, a, b_n, repeat=2, n_threads=None, warm_up=False)
                # the fastest is kept in case it is chosen, unless the points are large: then
                # one copy of them at a time (each scan's is freed before the next build)
                if pts.nbytes <= _KEEP_AT_N_BYTES and predicted[k] < kept:
                    at_n, kept = {k: index}, predicted[k]
                del index
            for k, _ in scans:
                if k not in timed:
                    predicted[k] *= predicted[timed[0]] / guess
            # The tree is built on a random quarter of the points and timed there (one thread; then
            # divided by the threads the caller's batches would use: a tree splits the queries), its
            # time extrapolated to n by its growth between the sample and the quarter: 4x instead of
            # n / s x, where the sample's extrapolation was off by up to 1.5x at 10^6. Building it
            # on all n was auto's largest cost at d = 16 (0.35 s of 1.1-1.2 s at 10^6, for a scan
            # that builds in 0.2 s); its extrapolations from the quarter came within 11 % of its
            # time at n at 10^6 (d = 8, 16), 15 % at 10^7, 23 % at 3*10^6 (docs/performance.md).
            cls, prm = next((c, p) for nm, c, p in candidates if nm == tree)
            quarter = np.flatnonzero(rng.integers(0, 4, size=n, dtype=np.uint8) == 0)  # ~n / 4 points
            index = cls._from_valid(pts[quarter], **prm)
            q = index.n
            threads = _speedup(cls, n, d, batch_size or m, k_user)
            t_q = _time_queries(index, a, b_n, repeat=3, warm_up=False)
            work_q = max(t_q - overhead, 1e-9)
            growth = float(np.clip(np.log(work_q / sample_work[tree]) / np.log(q / s), _GROWTH_MIN, 1.0)) if q > s else 1.0
            measured = overhead + work_q * (n / q) ** growth / threads
            margin = _MEASURED_MARGIN
            # the other trees' extrapolations err as this one's did (same sample, same growth
            # model): scaled by its measured / predicted, they stay comparable with the times at n
            factor = measured / predicted[tree]
            for k in trees:
                predicted[k] *= factor
            tested[tree] = index.stats.points_tested.mean() / q
            timed_at_scale = tree
            del index
            shown_n = ", ".join(f"{k} {predicted[k] * 1e3:.3g}" + ("" if k in timed else " (scaled)") for k, _ in scans)
            close = (f"; close call at n={n}: {tree} built on {q} points (~n^{growth:.2f} from the sample) and the scans on all "
                     f"({tree} {predicted[tree] * 1e3:.3g}, {shown_n} ms per query)")

    def usable_names():  # probed in full; a timing spike must not pick a tree that prunes nothing: it must also skip
        # half the points (unless timed on a quarter of the points: gaussian d = 8, 10,000 outputs,
        # the tree tests 65 % of 5*10^4 points, 57 % of 2.5*10^5, 47 % of 10^6, where it is 1.3x faster than the scans)
        return [k for k, c, _ in candidates
                if k in predicted and (tested[k] < _MAX_TESTED or c in _SCANS or k == timed_at_scale)]

    # the costly builds last; such a candidate is chosen only if faster than all the others by the
    # margin (not the cutting: it may be replaced below)
    cheaper = [k for k in usable_names() if k != "shallow_cutting3"]
    for name, cls, prm in candidates:
        if _BUILD_CLASS.get(cls, 1) >= 2:
            probe(name, cls, prm, bound=margin * min(predicted[k] for k in cheaper))
    listed = [shown.get(k) or f"{k} >= {skipped[k] * 1e3:.3g} ms (stopped after one probe)" for k, _, _ in candidates]
    reason = (
        f"probe on {s} sampled points (and a quarter of them), batches of {m} queries reporting {k_s} "
        f"({k_q}) points" + (f", and {k_abs} points on {'the' if s_abs == s else f'a {s_abs}-point'} sample"
                             if absolute else "")
        + f"; predicted per query at n={n} reporting {k_user:.0f} points ({said} output_size): "
        f"{', '.join(listed)}" + close
    )
    usable = usable_names()
    build = {nm: _BUILD_CLASS.get(c, 1) for nm, c, _ in candidates}

    def pick(names):
        # candidates are listed by build cost: take the cheapest to build that is within the
        # margin of the fastest (the scan unless a structure is clearly faster); among those whose
        # builds cost about the same (trees and ShallowCutting3: < 2x apart, convex layers 10-30x),
        # the fastest (with "cheapest first" alone, auto lost up to 1.9x to the cutting at d = 3,
        # n ~ 3*10^4)
        best = min(predicted[k] for k in names)
        within = [k for k in names if predicted[k] <= best / margin]
        return min((k for k in within if build[k] == build[within[0]]), key=predicted.get)

    name = pick(usable)
    cutting = None
    # Far above the sample, the cutting against a tree is a close call too, measured at n: both
    # predictions fall short there in opposite ways (the tree's floor from k_user-point queries on
    # the sample, the cutting's extrapolation from the caller's share), at 10^7 uniform points
    # and 1,000 outputs the tree 1.8 us predicted against 7.9 us, the cutting 0.2-1.9 us from run
    # to run against 3.8 us, and auto took the tree 2.1x slower. Both are built on all n points
    # (the one chosen is kept), each timed on queries reporting k_user points.
    tree_names = [k for k, c, _ in candidates if c is PartitionTree and k in usable]
    if ("shallow_cutting3" in usable and tree_names and name in ("shallow_cutting3", *tree_names)
            and n > _FULL_PROBE_ABOVE * s and pts.nbytes <= _KEEP_AT_N_BYTES):
        tree = name if name != "shallow_cutting3" else min(tree_names, key=predicted.get)
        if 1 / _FULL_PROBE_RATIO < predicted[tree] / predicted["shallow_cutting3"] < _FULL_PROBE_RATIO:
            deep = _deep_cutting_params(n, k_user)
            cutting = ShallowCutting3._from_valid(pts, **deep)
            if cutting._impl.max_depth >= k_user:
                b_n = offsets_at_n()
                if tree not in at_n:
                    cls, prm = next((c, p) for nm, c, p in candidates if nm == tree)
                    at_n[tree] = cls._from_valid(pts, **prm)
                t_cut = _time_queries(cutting, a, b_n, repeat=3, warm_up=False)
                t_tree = _time_queries(at_n[tree], a, b_n, repeat=3, warm_up=False)
                name = "shallow_cutting3" if t_cut < t_tree else tree
                reason += (f"; close call at n={n}: shallow_cutting3 {t_cut * 1e3:.3g} ms, {tree} "
                           f"{t_tree * 1e3:.3g} ms per query (both built on all points, one thread)")
            if name != "shallow_cutting3":
                cutting = None  # freed before the chosen index is returned
    reason += f" -> {name}"
    if name == "shallow_cutting3":  # built here, with the grid for n (not the probe's), tiers when deep
        deep = _deep_cutting_params(n, k_user)
        if cutting is None:
            cutting = ShallowCutting3._from_valid(pts, **deep)
        shown_deep = "".join(f"{k}={v}, " for k, v in deep.items() if k != "max_candidates")
        reason += (f" ({shown_deep}max_candidates={cutting.max_candidates // n} n: {cutting.levels} levels on grids "
                   f"{sorted({int(g) for g in cutting.level_grids()}, reverse=True)}, "
                   f"{cutting.memory_bytes / 2**20:.0f} MiB)")
        if cutting._impl.max_depth >= k_user:
            at_n[name] = cutting
        else:  # its tree would answer these queries: the next choice instead
            name = pick([k for k in usable if k != name])
            reason += (f", whose levels reach depth {cutting._impl.max_depth} < {k_user:.0f} points at n={n}: "
                       f"{name} instead")
        del cutting
    cls, prm = next((c, p) for nm, c, p in candidates if nm == name)  # (without the probe's budget)
    built = at_n.get(name)
    # The probe's sample sits in cache, where a scan is not bound by memory; over points far
    # larger than cache, few queries per call (decoding) read every point once per call, and
    # QuantizedScan reads 1 byte per coordinate instead of 4-8. Measured at n = 10^6, d = 128,
    # float32: 1.7x (1 query), 2.1x (2), 1.4x (4), 1.0x (8) faster than BruteForce.
    if (cls is BruteForce and not params and batch_size is not None and batch_size <= _QUANTIZED_MAX_BATCH
            and d >= _QUANTIZED_MIN_D and pts.nbytes >= _QUANTIZED_MIN_BYTES):
        cls, prm, built = QuantizedScan, {}, None
        reason += (f"; then quantized_scan instead: batches of {batch_size} <= {_QUANTIZED_MAX_BATCH} queries "
                   f"over {pts.nbytes / 2**20:.0f} MiB of points (>= {_QUANTIZED_MIN_BYTES >> 20} MiB) are "
                   "memory-bound, and its 8-bit codes read 4-8x fewer bytes")
    return cls, prm, reason, built


def _layers_params(n, k_user):
    """The ConvexLayers parameters auto builds at n for outputs of k_user points: a table of
    _DEEP_TABLE_LAYERS levels above _DEEP_TABLE_OUTPUT points (else the class's default), and
    above _LAYERS_MAX_N a partial peel of the table's layers + 1."""
    deep = k_user > _DEEP_TABLE_OUTPUT
    prm = {"table_layers": _DEEP_TABLE_LAYERS} if deep else {}
    if n > _LAYERS_MAX_N:
        prm["max_layers"] = _DEEP_TABLE_LAYERS + 1 if deep else _TABLE_PEEL
    return prm


def _deep_cutting_params(n, k_user):
    """The ShallowCutting3 parameters auto builds at n for outputs of k_user points: the class's
    defaults, and above _CUTTING_MAX_OUTPUT tiers: levels to _DEEP_FINE2_DEPTH (outputs up to
    _DEEP_FINE2_OUTPUT) or _DEEP_FINE_DEPTH on the default grid in a budget of _DEEP_BUDGET n where
    the default budget is _DEEP_FINE_BUDGET n, else to _CUTTING_MAX_OUTPUT in the default budget."""
    if k_user <= _CUTTING_MAX_OUTPUT:
        return {}
    max_depth = int(max(1024, _DEEP_DEPTH_FACTOR * k_user))
    if ShallowCutting3.default_max_candidates(n) < _DEEP_FINE_BUDGET * n:
        return {"fine_depth": _CUTTING_MAX_OUTPUT, "max_depth": max_depth}
    fine = _DEEP_FINE2_DEPTH if k_user <= _DEEP_FINE2_OUTPUT else _DEEP_FINE_DEPTH
    return {"fine_depth": fine, "max_depth": max_depth, "max_candidates": _DEEP_BUDGET * n}


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
        "auto": for n < 4096 a scan; otherwise each candidate structure (the scan, for d >= 8
        :class:`QuantizedScan` (the scan over 8-bit codes), partition trees, and, when no params
        are given, convex layers for d = 2 when queries report <= 5000 points (above 500 with
        ``table_layers=256``; above n = 2 000 000 peeling only the table's layers + 1,
        ``max_layers=129`` or ``257``: a full peel takes minutes at 10^7) -- and for d = 3 a shallow
        cutting when queries report <= 3000 points (above 444 with tiers: ``fine_depth=3600`` up to
        2000 points, ``1800`` above, or above n = 2 000 000 ``fine_depth=444``; a cutting
        built whose levels stop below the output is replaced by the next choice), and convex layers up
        to n = 2 000 000 when queries report <= 3000 points) is built on a sample of
        the points (up to 50 000) and on a quarter of it, and timed on probe queries (random and
        data-derived directions; repeated 8x per call for structures faster than a call's fixed
        cost) reporting the share ``output_size / n`` of each (for d <= 3 also ``output_size`` points,
        on a sample where they are at most 1/8 of the points); the growth
        between the two extrapolates each candidate's time to n points. Convex layers (whose
        builds cost 10-30x a tree's) are probed last, and their probe stops after its first
        timing when that bounds their prediction above what could still be chosen. Above 16x the
        sample size (n > 800 000), when the best partition tree is predicted within 4x of the
        scan, that tree is built on a random quarter of the points, timed there and its time
        extrapolated to n (by its growth from the sample), and the fastest scan predicted (and
        :class:`QuantizedScan` when predicted within 1.18x of it) is built on all n points and
        timed, on the same queries (extrapolation from a sample misjudges both at d ~ 16); the
        fastest of those scans is kept if chosen, unless the points take more than 1 GiB.
        Likewise in d = 3 when a partition tree and the shallow
        cutting are predicted within 4x of each other and one of them is the choice: both are
        built on all n points (up to 1 GiB of points), timed on queries reporting
        ``output_size`` points, and the faster is kept. A tree is chosen only if it is
        clearly faster than the scans, so "auto" is never much slower than ``BruteForce``; among
        candidates within 1.18x (1 / 0.85) of the fastest, the cheapest to build is taken (convex layers
        build ~10-30x slower than a partition tree), or the fastest of those that build about as
        cheaply (the two scans; partition trees and ShallowCutting3). When that is
        ``BruteForce``, ``batch_size <= 4``, d >= 32 and the points take >= 64 MiB, a :class:`QuantizedScan` is built instead (the
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
    kinds = {c.kind: c for c in STRUCTURES}
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
