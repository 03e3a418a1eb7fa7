"""The gather kernel used by hsrgeom.attention, against numpy, and its CSR checks; and its public
wrappers (hsrgeom.gather_weighted_sum, HalfspaceResult.weighted_sum and the CSR helpers); and
hsrgeom.release_memory, which frees the result buffers kept for later reports."""
import numpy as np
import pytest

import hsrgeom
from hsrgeom import _core


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_gather_matches_numpy(dtype, threads):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5000, 7)).astype(dtype)
    rows = [rng.choice(5000, size=s, replace=False) for s in (0, 3, 4000, 1)]
    lims = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    ids = np.concatenate(rows).astype(np.int64)
    w = rng.random(len(ids))
    out = _core.gather_weighted_sum(X, lims, ids, w, threads)
    ref = np.stack([w[lims[i]:lims[i + 1]] @ X[r].astype(np.float64) for i, r in enumerate(rows)])
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    assert out.shape == (4, 7) and not out[0].any()


@pytest.mark.parametrize("lims,ids,match", [
    ([0, 2], [0, 5], "out of range"),
    ([0, 2], [0, -1], "out of range"),
    ([1, 2], [0, 1], "start at 0"),
    ([0, 1], [0, 1], "end at len"),
    ([0, 2, 1, 2], [0, 1], "non-decreasing"),
])
def test_gather_rejects_bad_csr(lims, ids, match):
    X = np.zeros((5, 3))
    with pytest.raises(ValueError, match=match):
        _core.gather_weighted_sum(X, np.array(lims, np.int64), np.array(ids, np.int64), np.ones(len(ids)))


# ---- the public API over it: hsrgeom.gather_weighted_sum and HalfspaceResult's CSR helpers -----
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_public_gather_weighted_sum(dtype):
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((300, 4)) * 10).astype(dtype)
    lims, ids = [0, 2, 2, 5], [4, 0, 7, 7, 299]
    w = [0.5, 2.0, 1.0, -1.0, 3.0]
    out = hsrgeom.gather_weighted_sum(X, lims, ids, w, n_threads=1)
    ref = np.stack([np.asarray(w[a:b]) @ X[ids[a:b]].astype(np.float64) for a, b in zip(lims, lims[1:])])
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert out.dtype == np.float64 and out.shape == (3, 4)
    with pytest.raises(ValueError, match="out of range"):
        hsrgeom.gather_weighted_sum(X, [0, 1], [300], [1.0])
    with pytest.raises(ValueError, match="n_threads"):
        hsrgeom.gather_weighted_sum(X, lims, ids, w, n_threads=0)


def test_result_rows_from_rows_and_weighted_sum():
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((500, 3))
    index = hsrgeom.PartitionTree(pts)
    normals = rng.standard_normal((6, 3))
    res = index.report(normals, np.linspace(-1, 1.5, 6), return_scores=True)
    rows = res.rows()
    assert rows.dtype == np.int64 and len(rows) == len(res.ids)
    assert all((rows[res.lims[j]:res.lims[j + 1]] == j).all() for j in range(len(res)))
    again = hsrgeom.HalfspaceResult.from_rows(rows, res.ids, len(res), res.scores)
    assert again == res and again.scores is res.scores
    empty = hsrgeom.HalfspaceResult.from_rows(np.zeros(0, np.int64), np.zeros(0, np.int64), 3)
    assert empty.lims.tolist() == [0, 0, 0, 0] and len(empty.rows()) == 0
    values = rng.standard_normal((500, 2))
    w = np.maximum(res.scores, 0.0)
    ref = np.stack([w[res.lims[j]:res.lims[j + 1]] @ values[res[j]] for j in range(len(res))])
    np.testing.assert_allclose(res.weighted_sum(values, w), ref, rtol=1e-12, atol=1e-12)
    # the same as sum(power=1, shift=0) over the report
    np.testing.assert_allclose(index.sum(normals, np.linspace(-1, 1.5, 6), values, power=1, shift=0.0).sums,
                               ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("threads", [1, 2])
def test_release_memory_frees_the_kept_output_buffers(threads):
    # a freed result array of >= 1 MiB is kept for later reports (buffer.hpp OutputPool) until
    # release_memory(); a kept buffer is reused, so a second report of that size gives the same
    # ids, and arrays still in use are never released
    index = hsrgeom.BruteForce(np.zeros((300_000, 2)))  # every point on the boundary of x >= 0
    hsrgeom.release_memory()
    res = index.report([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], n_threads=threads)  # 2 x 2.4 MB of ids
    del res
    assert hsrgeom.release_memory() >= 4_800_000 and hsrgeom.release_memory() == 0
    kept = index.report([[1.0, 0.0]], [0.0], n_threads=threads)
    again = index.report([[1.0, 0.0]], [0.0], n_threads=threads)
    hsrgeom.release_memory()  # (a call's scratch, if any: not the arrays in use)
    assert np.array_equal(kept.ids, np.arange(300_000)) and np.array_equal(again.ids, kept.ids)
    del again
    assert hsrgeom.release_memory() >= 2_400_000
