"""Every structure returns exactly the exact-reference set, on random and adversarial data."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import hsrgeom
import exact_reference as ref

from conftest import STRUCTURES, structures_for


def check(index, points, normals, offsets):
    a = np.asarray(normals).astype(index.dtype)  # the index casts normals to its dtype
    expected = [ref.report(points, a[j], offsets[j]) for j in range(len(a))]
    res = index.report(normals, offsets)
    assert isinstance(res, hsrgeom.HalfspaceResult)
    assert res.lims.dtype == np.int64 and res.ids.dtype == np.int64
    assert len(res) == len(a)
    for j, e in enumerate(expected):
        np.testing.assert_array_equal(res[j], e, err_msg=f"query {j}")
    np.testing.assert_array_equal(index.count(normals, offsets), [len(e) for e in expected])
    np.testing.assert_array_equal(index.empty(normals, offsets), [len(e) == 0 for e in expected])
    for j in range(min(len(a), 3)):
        np.testing.assert_array_equal(index.report_one(normals[j], offsets[j]), expected[j])
    unsorted = index.report(normals, offsets, return_sorted=False)
    np.testing.assert_array_equal(unsorted.lims, res.lims)
    for j, e in enumerate(expected):
        np.testing.assert_array_equal(np.sort(unsorted[j]), e, err_msg=f"query {j}, return_sorted=False")
    return expected


def check_small_integer_set(data, n, d, make, coord=3):
    """Hypothesis body: small-integer points (ties, duplicates, degenerate sets) and queries, one
    structure ``make(points)`` against the exact reference, reports and top-k."""
    from test_topk import check_topk

    pts = data.draw(hnp.arrays(np.float64, (n, d), elements=st.integers(-coord, coord).map(float)))
    a = data.draw(hnp.arrays(np.float64, (3, d), elements=st.integers(-2, 2).map(float)))
    b = data.draw(hnp.arrays(np.float64, (3,), elements=st.integers(-6, 6).map(float)))
    index = make(pts)
    check(index, pts, a, b)
    check_topk(index, pts, a, min(n, 4))


def quantile_offsets(points, normals, fracs):
    proj = points.astype(np.float64) @ np.asarray(normals, dtype=np.float64).T
    return np.array([np.quantile(proj[:, j], 1 - f) for j, f in enumerate(fracs)])


def datasets(rng, n, d, dtype):
    yield "gaussian", rng.standard_normal((n, d))
    yield "uniform", rng.random((n, d))
    centers = rng.standard_normal((5, d)) * 10
    yield "clustered", centers[rng.integers(0, 5, n)] + 0.01 * rng.standard_normal((n, d))
    yield "duplicates", rng.standard_normal((max(n // 20, 1), d))[rng.integers(0, max(n // 20, 1), n)]
    yield "identical", np.tile(rng.standard_normal(d), (n, 1))
    k = min(2, d)
    basis = np.linalg.qr(rng.standard_normal((d, k)))[0]
    yield "low_rank", rng.standard_normal((n, k)) @ basis.T
    yield "integer_grid", rng.integers(-3, 4, (n, d)).astype(float)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 16, 64])
def test_random_and_degenerate_data(make_index, dtype, rng, d):
    n = 600
    for name, pts in datasets(rng, n, d, dtype):
        pts = pts.astype(dtype)
        m = 8
        normals = rng.standard_normal((m, d))
        fracs = [0.0, 1e-3, 0.01, 0.1, 0.5, 0.9, 1.0, 0.3]
        offsets = quantile_offsets(pts, normals, fracs)
        offsets[0] += 1.0  # nothing
        offsets[6] -= 1.0  # everything
        check(make_index(pts), pts, normals, offsets)


def test_integer_normals_give_exact_ties(make_index, dtype, rng):
    # <a, x> == b exactly for many points: the boundary is inside.
    pts = rng.integers(-5, 6, (2000, 3)).astype(dtype)
    normals = np.array([[1, 2, -1], [0, 0, 1], [1, 1, 1], [3, -2, 5]], dtype=float)
    offsets = np.array([0.0, 5.0, 2.0, -1.0])
    expected = check(make_index(pts), pts, normals, offsets)
    on_boundary = (pts.astype(np.float64) @ normals.T == offsets).sum()
    assert on_boundary > 100  # the test really has ties
    assert all(len(e) for e in expected)


def test_offsets_next_to_exact_value(make_index, dtype, rng):
    # b = float64 rounding of the exact <a, x_i>, and its neighbours: rounded dot products are
    # wrong here about half the time.
    d = 7
    pts = rng.standard_normal((300, d)).astype(dtype)
    normals = rng.standard_normal((30, d)).astype(dtype)
    offsets = []
    for j in range(30):
        i = rng.integers(300)
        v = float(ref._exact_dot(normals[j], pts[i]))
        offsets.append(np.nextafter(v, [-np.inf, 0, np.inf][j % 3]) if j % 3 != 1 else v)
    check(make_index(pts), pts, normals, np.array(offsets))


def test_float32_sums_that_round_the_wrong_way(make_index):
    # x = (1, 2^-24, 2^-24...) and a = 1: float32 accumulation loses the small terms
    d = 9
    pts = np.zeros((100, d), dtype=np.float32)
    pts[:, 0] = 1.0
    pts[:50, 1:] = 2.0**-24
    normals = np.ones((2, d))
    offsets = np.array([1.0 + 2.0**-22, 1.0 + 2.0**-23 * 4])
    expected = check(make_index(pts), pts, normals, offsets)
    assert len(expected[0]) == 50


@pytest.mark.parametrize("scale", [1e150, 1e-150, 5e-324 * 2**40])
def test_extreme_magnitudes(make_index, rng, scale):
    pts = (rng.standard_normal((400, 4)) * scale).astype(np.float64)
    normals = rng.standard_normal((6, 4)) * (1e150 if scale > 1 else 1.0)
    offsets = quantile_offsets(pts, normals, [0.01, 0.1, 0.5, 0.9, 0.0, 1.0])
    check(make_index(pts), pts, normals, offsets)


@pytest.mark.parametrize("d", [1, 3, 8, 9, 48])
def test_float32_scores_that_overflow(make_index, rng, d):
    """float32 points and normals whose float32 products overflow (inf, and inf - inf = NaN in a
    sum) while the exact values are finite: the scan's candidate pass must hand those points to
    the exact test. m = 1, 2 and 5 queries (scans compute few queries without a matrix product)."""
    pts = (rng.standard_normal((3000, d)) * 1e30).astype(np.float32)
    pts[::7] = rng.standard_normal((len(pts[::7]), d)).astype(np.float32)  # and ordinary ones
    for m in (1, 2, 5):
        normals = rng.standard_normal((m, d)) * 1e15
        offsets = quantile_offsets(pts, normals, np.linspace(0.01, 0.6, m))
        offsets[0] = 0.0
        check(make_index(pts), pts, normals, offsets)


def test_float64_scores_that_overflow(make_index, rng):
    """The same in float64 (products ~1e350): every structure's float64 score overflows; the
    exact accumulator holds the products, so the exact test decides. Top-k ids too (its scores
    are float64 evaluations: +-inf or NaN here, in an order-dependent way)."""
    d = 3
    pts = rng.standard_normal((2000, d)) * 1e200
    pts[::5] = rng.standard_normal((len(pts[::5]), d))
    normals = rng.standard_normal((3, d)) * 1e150
    index = make_index(pts)
    check(index, pts, normals, np.array([0.0, 1e307, -1e307]))
    _, ids = index.topk(normals, 5)
    for j in range(3):
        np.testing.assert_array_equal(ids[j], ref.topk(pts, normals[j], 5))


@pytest.mark.parametrize("n", [0, 1, 2, 33])
def test_tiny_sizes(make_index, dtype, rng, n):
    pts = rng.standard_normal((n, 3)).astype(dtype)
    normals = rng.standard_normal((4, 3))
    check(make_index(pts), pts, normals, np.array([-1.0, 0.0, 0.5, 10.0]))


def test_empty_query_batch(make_index, dtype, rng):
    idx = make_index(rng.standard_normal((50, 3)).astype(dtype))
    res = idx.report(np.zeros((0, 3)), np.zeros(0))
    assert len(res) == 0 and res.lims.tolist() == [0] and len(res.ids) == 0
    assert idx.count(np.zeros((0, 3)), np.zeros(0)).shape == (0,)


@pytest.mark.parametrize("d", [128, 512, 1024])
def test_high_dimension(make_index, rng, d):
    from test_topk import check_topk

    pts = rng.standard_normal((300, d))
    normals = rng.standard_normal((4, d))
    index = make_index(pts)
    check(index, pts, normals, quantile_offsets(pts, normals, [0.01, 0.1, 0.5, 1.0]))
    check_topk(index, pts, normals, 7)


def test_large_n_low_d(rng):
    pts = rng.random((100_000, 2))
    normals = rng.standard_normal((20, 2))
    # ~10 ids (comparison sort), 50-600 (radix sort, 3 byte passes), >= 782 (bitmap pass)
    fracs = np.concatenate([[1e-4, 5e-4, 1e-3, 3e-3, 6e-3], np.linspace(0.01, 0.5, 15)])
    offsets = quantile_offsets(pts, normals, fracs)
    for make in structures_for(2).values():
        check(make(pts), pts, normals, offsets)


def test_threads_do_not_change_results(rng):
    pts = rng.standard_normal((20_000, 4)).astype(np.float32)
    normals = rng.standard_normal((64, 4))
    offsets = quantile_offsets(pts, normals, np.full(64, 0.05))
    for make in structures_for(4).values():
        idx = make(pts)
        assert idx.report(normals, offsets, n_threads=1) == idx.report(normals, offsets, n_threads=2)


def test_points_are_not_modified_and_are_copied(make_index, rng):
    pts = rng.standard_normal((500, 3))
    before = pts.copy()
    idx = make_index(pts)
    np.testing.assert_array_equal(pts, before)
    np.testing.assert_array_equal(idx.points(), before)
    pts[:] = 0  # the index holds its own copy
    np.testing.assert_array_equal(idx.points(), before)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    d=st.integers(1, 6),
    n=st.integers(0, 80),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_property_matches_exact_reference(data, d, n, dtype):
    elements = st.one_of(
        st.integers(-4, 4).map(float),
        st.floats(-1e3, 1e3, allow_nan=False, width=32),
    )
    pts = data.draw(hnp.arrays(dtype, (n, d), elements=elements))
    a = data.draw(hnp.arrays(np.float64, (3, d), elements=st.integers(-3, 3).map(float)))
    b = data.draw(hnp.arrays(np.float64, (3,), elements=st.integers(-10, 10).map(float)))
    for name in ("brute_force", "tree_widest_leaf1", "tree_pca", "simplicial"):
        check(STRUCTURES[name](pts), pts, a, b)


def test_offsets_at_rounded_projections_of_grid_points(make_index, rng):
    # b = fl(<a, x_i>) for random a and integer points: many points within rounding of the
    # boundary, on both sides. Node bounds need their rounding margin here (PartitionTree with
    # split="widest" once classified nodes with a zero margin and reported points just outside).
    pts = rng.integers(-3, 4, (7000, 3)).astype(float)
    normals = rng.standard_normal((200, 3))
    proj = pts @ normals.T
    offsets = proj[rng.integers(len(pts), size=200), np.arange(200)]
    bf = hsrgeom.BruteForce(pts)
    assert make_index(pts).report(normals, offsets) == bf.report(normals, offsets)


def check_scores(index, points, normals, offsets):
    """report(return_scores=True): the same ids as without, and <a, x> of each in float64."""
    res = index.report(normals, offsets, return_scores=True)
    assert res == index.report(normals, offsets)
    assert res.scores.dtype == np.float64 and res.scores.shape == res.ids.shape
    a = np.asarray(normals).astype(index.dtype).astype(np.float64)
    x = np.asarray(points).astype(index.dtype).astype(np.float64)
    unsorted = index.report(normals, offsets, return_scores=True, return_sorted=False)
    for r in (res, unsorted):  # scores follow their ids in either order
        for j in range(len(r)):
            ids, sc = r[j], r.scores[r.lims[j] : r.lims[j + 1]]
            tol = 4 * (x.shape[1] + 2) * 2.0**-53 * (np.abs(x[ids]) @ np.abs(a[j]))
            np.testing.assert_array_less(np.abs(sc - x[ids] @ a[j]), tol + 1e-300, err_msg=f"query {j}")
    return res


@pytest.mark.parametrize("d", [2, 3])
def test_outputs_past_the_caches(rng, d):
    """Reports of more than 4 MiB of ids per thread are written with non-temporal stores
    (buffer.hpp stream_ids: whole nodes, the sort's output, the threads' arenas gathered); the
    second call of a size streams (the first sets the size hint). Same sets as the scan's."""
    pts = rng.random((200_000, d)).astype(np.float32)
    normals = rng.standard_normal((40, d))
    offsets = quantile_offsets(pts, normals, np.linspace(0.2, 0.7, 40))  # ~3.6 * 10^6 ids, 29 MB
    want = hsrgeom.BruteForce(pts).report(normals, offsets)
    for make in structures_for(d).values():
        idx = make(pts)
        for threads in (1, 2):
            for _ in range(2):
                assert idx.report(normals, offsets, n_threads=threads) == want
                got = idx.report(normals, offsets, n_threads=threads, return_sorted=False)
                assert np.array_equal(got.lims, want.lims)
                assert all(np.array_equal(np.sort(got[j]), want[j]) for j in range(len(normals)))


@pytest.mark.parametrize("kind", ["partition_tree", "convex_layers"])
def test_return_sorted_false_skips_the_sort(kind, rng):
    # the option must change something where a structure's own order is not ascending
    pts = rng.standard_normal((5000, 2))
    normals = rng.standard_normal((20, 2))
    offsets = quantile_offsets(pts, normals, np.full(20, 0.05))
    index = hsrgeom.build_index(pts, kind=kind)
    unsorted = index.report(normals, offsets, return_sorted=False)
    assert any((np.diff(unsorted[j]) < 0).any() for j in range(20))
    assert index.report(normals, offsets) == hsrgeom.HalfspaceResult(
        unsorted.lims, np.concatenate([np.sort(unsorted[j]) for j in range(20)]))


@pytest.mark.parametrize("d", [2, 3, 8])
def test_report_scores(make_index, dtype, rng, d):
    pts = (rng.standard_normal((3000, d)) * 10).astype(dtype)
    normals = rng.standard_normal((12, d))
    offsets = quantile_offsets(pts, normals, np.linspace(0.0, 0.3, 12))
    offsets[0] += 1.0  # above every point
    index = make_index(pts)
    res = check_scores(index, pts, normals, offsets)
    assert res.counts[0] == 0 and res.counts[-1] > 500  # empty and radix-sorted (>= 32) rows
    # after updates (logarithmic method: scores merged with the ids of several parts)
    more = (rng.standard_normal((500, d)) * 10).astype(dtype)
    new = index.insert(more)
    index.remove(np.concatenate([np.arange(0, 3000, 7), new[::5]]))
    res = check_scores(index, np.vstack([pts, more]), normals, offsets)
    assert not np.isin(res.ids, new[::5]).any() and res.counts[-1] > 500
