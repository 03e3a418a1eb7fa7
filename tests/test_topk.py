"""topk: exact maximum inner product, ties broken by the smaller id."""
import numpy as np
import pytest

import exact_reference as ref


def check_topk(index, points, queries, k):
    q = np.asarray(queries).astype(index.dtype)
    scores, ids = index.topk(queries, k)
    assert scores.shape == ids.shape == (len(q), k)
    assert ids.dtype == np.int64 and scores.dtype == np.float64
    for j in range(len(q)):
        np.testing.assert_array_equal(ids[j], ref.topk(points, q[j], k), err_msg=f"query {j}")
        np.testing.assert_allclose(scores[j], points[ids[j]].astype(np.float64) @ q[j].astype(np.float64), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("d", [1, 2, 3, 8, 32])
def test_topk_random(make_index, dtype, rng, d):
    pts = rng.standard_normal((700, d)).astype(dtype)
    idx = make_index(pts)
    for k in (0, 1, 10, 700):
        check_topk(idx, pts, rng.standard_normal((4, d)), k)


def test_topk_matches_argpartition(make_index, rng):
    pts = rng.standard_normal((5000, 6))
    q = rng.standard_normal((5, 6))
    _, ids = make_index(pts).topk(q, 20)
    s = pts @ q.T
    for j in range(5):
        top = np.argpartition(-s[:, j], 20)[:20]
        np.testing.assert_array_equal(np.sort(ids[j]), np.sort(top))
        assert np.all(np.diff(s[ids[j], j]) <= 0)


def test_topk_ties_smaller_id_first(make_index, dtype, rng):
    base = rng.integers(-3, 4, (40, 3)).astype(dtype)
    pts = base[rng.integers(0, 40, 2000)]  # many exact duplicates and ties
    idx = make_index(pts)
    check_topk(idx, pts, np.array([[1, 0, 0], [1, 1, 1], [0, -2, 1]], dtype=float), 25)


def test_topk_bad_k(make_index, rng):
    idx = make_index(rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="k"):
        idx.topk(np.ones((1, 2)), 11)
    with pytest.raises(ValueError, match="k"):
        idx.topk(np.ones((1, 2)), -1)
    with pytest.raises(TypeError, match="k"):
        idx.topk(np.ones((1, 2)), 2.5)
