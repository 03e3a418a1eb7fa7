"""index.sum: counts, weights and weighted value sums over each half-space, against the exact
reference set and float64 sums computed here."""
import numpy as np
import pytest

import hsrgeom
import exact_reference as ref

from conftest import STRUCTURES, structures_for
from test_structures import datasets, quantile_offsets


def expected_sums(points, ids_alive, normals, offsets, values, power, shift):
    """(counts, weights, sums) from the exact reference set; points[i] has id ids_alive[i]."""
    a = np.asarray(normals)
    x = np.asarray(points, dtype=np.float64)
    vals = None if values is None else np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    counts, weights, sums = [], [], []
    for j in range(len(a)):
        loc = ref.report(points, a[j], offsets[j])
        s = x[loc] @ a[j].astype(np.float64)
        w = np.ones(len(loc)) if power == 0 else np.maximum(s - shift[j], 0.0) ** power
        counts.append(len(loc))
        weights.append(w.sum())
        if vals is not None:
            sums.append(w @ vals[ids_alive[loc]] if len(loc) else np.zeros(vals.shape[1]))
    return np.array(counts), np.array(weights), (np.array(sums) if vals is not None else None)


def check_sum(index, points, ids_alive, normals, offsets, values, power, shift=None):
    normals = np.asarray(normals).astype(index.dtype)
    sh = offsets if shift is None else shift
    res = index.sum(normals, offsets, values, power=power, shift=shift)
    assert isinstance(res, hsrgeom.HalfspaceSums) and len(res) == len(normals)
    c, w, s = expected_sums(points, ids_alive, normals, offsets, values, power, sh)
    np.testing.assert_array_equal(res.counts, c)
    assert res.counts.dtype == np.int64 and res.weights.dtype == np.float64
    # float64 sums in another order; the weights come from float64 scores that may differ from
    # numpy's by ~d ulps of sum |a_i x_i|
    np.testing.assert_allclose(res.weights, w, rtol=1e-9, atol=1e-9 * (1 + np.abs(w).max(initial=0)))
    if values is None:
        assert res.sums is None
    else:
        s = s if np.ndim(values) == 2 else s[:, 0]
        assert res.sums.shape == s.shape and res.sums.dtype == np.float64
        np.testing.assert_allclose(res.sums, s, rtol=1e-9, atol=1e-9 * (1 + np.abs(s).max(initial=0)))
    np.testing.assert_array_equal(index.stats.points_reported, c)
    return res


@pytest.mark.parametrize("power", [0, 1, 2, 3])
def test_sum_matches_reference(make_index, dtype, rng, power):
    d = 3
    for name, pts in datasets(rng, 1500, d, dtype):
        pts = pts.astype(dtype)
        index = make_index(pts)
        normals = rng.standard_normal((5, d))
        offsets = quantile_offsets(pts, normals, [0.0, 0.01, 0.2, 0.6, 1.0])
        offsets[-1] -= 1.0  # below every point (whatever the rounding of the normals)
        values = rng.standard_normal((len(pts), 4)).astype(dtype)
        res = check_sum(index, pts, np.arange(len(pts)), normals, offsets, values, power)
        assert res.counts[-1] == len(pts), name  # the last half-space holds every point
        shift = offsets - 0.5
        check_sum(index, pts, np.arange(len(pts)), normals, offsets, values[:, 0], power, shift)
        check_sum(index, pts, np.arange(len(pts)), normals, offsets, None, power, shift)


@pytest.mark.parametrize("d", [2, 8, 64])
def test_sum_other_dimensions(dtype, rng, d):
    pts = rng.standard_normal((3000, d)).astype(dtype)
    normals = rng.standard_normal((4, d))
    offsets = quantile_offsets(pts, normals, [0.001, 0.05, 0.3, 0.9])
    values = rng.standard_normal((3000, 3))  # float64 values over a float32 index
    extra = {"convex_layers": lambda x: hsrgeom.ConvexLayers(x)} if d == 2 else {}
    for name, make in {**structures_for(d), **extra}.items():
        check_sum(make(pts), pts, np.arange(3000), normals, offsets, values, 2, offsets - 1.0)


def test_sum_after_updates(make_index, dtype, rng):
    d = 3
    pts = rng.integers(-4, 5, (800, d)).astype(dtype)  # ties and duplicates
    index = make_index(pts)
    normals = rng.integers(-2, 3, (4, d)).astype(float)
    offsets = np.array([3.0, 1.0, 0.0, -20.0])
    # append only: every part has consecutive ids (summed natively, with a row offset)
    more = rng.integers(-4, 5, (700, d)).astype(dtype)
    index.insert(more)
    allp = np.vstack([pts, more])
    values = rng.standard_normal((len(allp), 2))
    check_sum(index, allp, np.arange(len(allp)), normals, offsets, values, 1)
    # removals: parts with dead ids sum through their reports
    gone = rng.choice(len(allp), 300, replace=False)
    index.remove(gone)
    live = np.setdiff1d(np.arange(len(allp)), gone)
    res = check_sum(index, allp[live], live, normals, offsets, values, 2, offsets - 2.0)
    assert res.counts[-1] == len(live)


def test_sum_threads_do_not_change_results(rng):
    """A tree splits a few queries into subtrees that run on all threads; the parts are added
    in a fixed order, so the sums are bit-identical for any number of threads."""
    pts = rng.standard_normal((200_000, 4)).astype(np.float32)
    values = rng.standard_normal((200_000, 8)).astype(np.float32)
    normals = rng.standard_normal((2, 4)).astype(np.float32)
    offsets = quantile_offsets(pts, normals, [0.05, 0.3])
    for index in (hsrgeom.PartitionTree(pts), hsrgeom.SimplicialPartitionTree(pts)):
        one = index.sum(normals, offsets, values, power=1, n_threads=1)
        two = index.sum(normals, offsets, values, power=1, n_threads=2)
        np.testing.assert_array_equal(one.counts, two.counts)
        np.testing.assert_array_equal(one.weights, two.weights)
        np.testing.assert_array_equal(one.sums, two.sums)
        np.testing.assert_array_equal(one.counts, index.count(normals, offsets))


def test_sum_edge_cases(make_index, dtype, rng):
    pts = rng.standard_normal((50, 3)).astype(dtype)
    index = make_index(pts)
    values = rng.standard_normal((50, 2))
    res = index.sum(np.zeros((0, 3)), np.zeros(0), values, power=1)
    assert res.counts.shape == (0,) and res.sums.shape == (0, 2)
    # no point inside: zeros, not NaN
    res = index.sum(np.ones((1, 3)), [1e6], values, power=1)
    assert res.counts[0] == 0 and res.weights[0] == 0 and not res.sums.any()
    # NaN values propagate (summed as given), like numpy.sum
    values[0, 0] = np.nan
    res = index.sum(np.ones((1, 3)), [-1e6], values)
    assert np.isnan(res.sums[0, 0]) and np.isfinite(res.sums[0, 1])
    assert "HalfspaceSums(queries=1" in repr(res)


def test_sum_on_empty_index(dtype):
    index = hsrgeom.PartitionTree(np.zeros((0, 2), dtype=dtype))
    res = index.sum(np.ones((2, 2)), [0.0, 1.0], np.zeros((0, 3)), power=1)
    np.testing.assert_array_equal(res.counts, [0, 0])
    assert res.sums.shape == (2, 3) and not res.sums.any()


def test_sum_bad_input(rng):
    pts = rng.standard_normal((40, 3))
    index = hsrgeom.PartitionTree(pts)
    a, b = np.ones((2, 3)), [0.0, 1.0]
    with pytest.raises(ValueError, match="values has 39 rows"):
        index.sum(a, b, np.zeros((39, 2)))
    with pytest.raises(ValueError, match="values must be 1-D"):
        index.sum(a, b, np.zeros((40, 2, 2)))
    with pytest.raises(TypeError, match="values must hold real numbers"):
        index.sum(a, b, np.zeros((40, 2), dtype=complex))
    with pytest.raises(ValueError, match="power must be >= 0"):
        index.sum(a, b, power=-1)
    with pytest.raises(TypeError, match="power must be an integer"):
        index.sum(a, b, power=1.5)
    with pytest.raises(ValueError, match="shift must be a scalar or 1-D of length m=2"):
        index.sum(a, b, shift=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="shift contains NaN"):
        index.sum(a, b, shift=np.nan)
    with pytest.raises(ValueError, match="normals has d=2"):
        index.sum(np.ones((2, 2)), b)
    index.insert(rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="values has 44 rows but point ids go up to 44"):
        index.sum(a, b, np.zeros((44, 2)))
