"""The private gather kernel used by hsrgeom.attention, against numpy, and its CSR checks."""
import numpy as np
import pytest

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
