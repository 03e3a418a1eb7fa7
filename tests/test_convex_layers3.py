"""ConvexLayers3 (d = 3) against BruteForce and the exact reference, incl. degenerate inputs."""
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hsrgeom
from test_structures import check, check_small_integer_set, quantile_offsets
from test_topk import check_topk


def against_bruteforce(index, pts, normals, offsets, k=5):
    bf = hsrgeom.BruteForce(pts)
    assert index.report(normals, offsets) == bf.report(normals, offsets)
    np.testing.assert_array_equal(index.count(normals, offsets), bf.count(normals, offsets))
    np.testing.assert_array_equal(index.empty(normals, offsets), bf.empty(normals, offsets))
    k = min(k, len(pts))
    s1, i1 = index.topk(normals, k)
    s2, i2 = bf.topk(normals, k)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-12, atol=1e-300)  # scores: rounded evaluations


def check_reports_and_topk(index, pts, normals, offsets):
    """Against the exact (fractions) reference up to 40 points, else against BruteForce."""
    n = len(pts)
    if n <= 40:
        check(index, pts, normals, offsets)
        for k in {0, min(n, 1), min(n, 4), n}:
            check_topk(index, pts, normals, k)
    else:
        against_bruteforce(index, pts, normals, offsets, k=7)


def sphere(rng, n):
    x = rng.standard_normal((n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cases(rng, n):
    yield "uniform", rng.random((n, 3))
    yield "gaussian", rng.standard_normal((n, 3))
    yield "ball_surface", sphere(rng, n)  # every point on the hull (up to rounding)
    yield "duplicates", rng.standard_normal((max(n // 10, 1), 3))[rng.integers(0, max(n // 10, 1), n)]
    yield "grid", rng.integers(-3, 4, (n, 3)).astype(float)  # coplanar faces, points on edges
    basis = np.linalg.qr(rng.standard_normal((3, 2)))[0]
    yield "coplanar", rng.standard_normal((n, 2)) @ basis.T + 1.0
    yield "coplanar_axis", np.c_[rng.random((n, 2)), np.full(n, 0.5)]
    yield "collinear", np.outer(rng.standard_normal(n), [1.0, -2.0, 3.0])
    yield "identical", np.tile([1.0, 2.0, 3.0], (n, 1))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 40, 1000])
def test_cases(dtype, rng, n):
    for name, pts in cases(rng, n):
        pts = pts.astype(dtype)
        normals = rng.standard_normal((8, 3))
        normals[:3] = rng.integers(-2, 3, (3, 3))  # axis-parallel and zero normals: ties
        if n:
            offsets = quantile_offsets(pts, normals, [0.0, 1e-3, 0.01, 0.1, 0.5, 0.9, 1.0, 0.3])
            offsets[:3] = np.round(offsets[:3])  # integer planes through grid points
        else:
            offsets = np.zeros(8)
        check_reports_and_topk(hsrgeom.ConvexLayers3(pts), pts, normals, offsets)


def test_points_on_the_query_plane(dtype, rng):
    # integer points and planes: many points exactly on the boundary, which is inside
    pts = rng.integers(-5, 6, (3000, 3)).astype(dtype)
    normals = np.array([[1, 2, -1], [0, 0, 1], [1, 1, 1], [3, -2, 5], [1, 0, 0]], dtype=float)
    offsets = np.array([9.0, 5.0, 12.0, 25.0, 5.0])
    index = hsrgeom.ConvexLayers3(pts)
    assert index.layers > 0
    on = (pts.astype(np.float64) @ normals.T == offsets).sum(axis=0)
    assert on.min() > 0
    check(index, pts, normals, offsets)
    # the plane through a layer's face: every vertex of that face ties
    sph = np.round(sphere(rng, 500) * 1000)
    index = hsrgeom.ConvexLayers3(sph.astype(dtype))
    p, q, r = sph[:3]
    a = np.cross(q - p, r - p)
    check(index, sph.astype(dtype), np.array([a, -a]), np.array([a @ p, -(a @ p)]))


def test_large_uniform_and_gaussian(rng):
    for pts in (rng.random((10_000, 3)), rng.standard_normal((10_000, 3)).astype(np.float32)):
        index = hsrgeom.ConvexLayers3(pts)
        assert index.layers > 10 and index.core_size < len(pts)
        assert sum(index.layer_sizes()) + index.core_size == len(pts)
        normals = rng.standard_normal((40, 3))
        offsets = quantile_offsets(pts, normals, np.geomspace(1e-4, 0.5, 40))
        against_bruteforce(index, pts, normals, offsets, k=20)
        small = offsets.copy()
        small[:] = quantile_offsets(pts, normals, np.full(40, 0.01))
        index.report(normals, small)
        # output-sensitive: few points tested beyond those reported
        assert index.stats.points_tested.mean() < 4 * index.stats.points_reported.mean() + 50
        many = rng.standard_normal((2000, 3))  # enough work for two threads
        off = quantile_offsets(pts, many, np.full(2000, 0.01))
        assert index.report(many, off, n_threads=1) == index.report(many, off, n_threads=2)
        np.testing.assert_array_equal(index.topk(many, 3, n_threads=1)[1], index.topk(many, 3, n_threads=2)[1])


def test_layer_cap_and_core(rng):
    pts = rng.standard_normal((3000, 3))
    normals = rng.standard_normal((20, 3))
    offsets = quantile_offsets(pts, normals, np.linspace(0.001, 1.0, 20))
    for cap in (0, 1, 3):
        index = hsrgeom.ConvexLayers3(pts, max_layers=cap)
        assert index.layers == cap
        against_bruteforce(index, pts, normals, offsets, k=10)  # k > layers: core top-k path


def test_wrong_dimension_and_params():
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        hsrgeom.ConvexLayers3(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="max_layers"):
        hsrgeom.ConvexLayers3(np.zeros((10, 3)), max_layers=-1)
    index = hsrgeom.build_index(np.zeros((10, 3)), kind="convex_layers3")
    assert index.kind == "convex_layers3"
    r = repr(hsrgeom.ConvexLayers3(np.random.default_rng(0).random((100, 3)).astype(np.float32)))
    assert "n=100" in r and "layers=" in r and "float32" in r and "memory=" in r


def test_updates_and_persistence(rng, tmp_path):
    pts = rng.integers(-9, 10, (500, 3)).astype(float)
    index = hsrgeom.ConvexLayers3(pts, max_layers=50)
    index.insert(rng.standard_normal((400, 3)))
    index.remove(np.arange(0, 900, 3))
    index.save(tmp_path / "cl3.hsr")
    a = rng.standard_normal((5, 3))
    for clone in (hsrgeom.load(tmp_path / "cl3.hsr"), pickle.loads(pickle.dumps(index))):
        assert type(clone) is hsrgeom.ConvexLayers3 and clone.max_layers == 50
        assert clone.report(a, 0.5) == index.report(a, 0.5)
        np.testing.assert_array_equal(clone.topk(a, 6)[1], index.topk(a, 6)[1])


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(0, 50))
def test_property(data, n):
    check_small_integer_set(data, n, 3, hsrgeom.ConvexLayers3, coord=2)


@pytest.mark.parametrize("scale", [1e150, 1e-150, 5e-324 * 2**40])
def test_extreme_magnitudes(rng, scale):
    # orient3d's triple products overflow / underflow here: the exact fallback decides
    pts = rng.standard_normal((400, 3)) * scale
    pts[:50] = np.round(pts[:50] / scale) * scale  # coplanar and duplicate points among them
    normals = rng.standard_normal((6, 3)) * (1e150 if scale > 1 else 1.0)
    offsets = quantile_offsets(pts, normals, [0.01, 0.1, 0.5, 0.9, 0.0, 1.0])
    index = hsrgeom.ConvexLayers3(pts)
    assert index.layers > 0
    check(index, pts, normals, offsets)
