"""top_p of softmax_attention / DecodeCache.attend: the kept set, its certificate and errors,
against the dense float64 reference."""
import numpy as np
import pytest

import hsrgeom.attention as A
from hsrgeom.attention import reference as R


def _probs(q, k, scale, causal):
    s = R.scores(q, k, scale)  # (b, h, m, n) float64 logits
    m, n = s.shape[-2:]
    if causal:
        s = np.where(R.causal_mask(m, n), s, -np.inf)
    return s


def _check(q, k, v, p, out, st, scale=None, causal=False):
    """The kept set is the ``entries`` largest logits (ties: smaller position); the output is
    softmax over exactly that set; it holds >= p of the mass; the bound covers the rest."""
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    s = _probs(q, k, scale, causal)
    B, H, m, n = s.shape
    g = H // k.shape[1]
    for b in range(B):
        for h in range(H):
            for i in range(m):
                row = s[b, h, i]
                vis = np.isfinite(row)
                e = int(st["entries"][b, h, i])
                order = np.lexsort((np.arange(n), -row))
                keep = order[:e]
                assert vis[keep].all()
                w = np.exp(row[vis] - row[vis].max())
                mass = np.exp(row[keep] - row[vis].max()).sum() / w.sum()
                assert mass >= p * (1 - 1e-9), (p, mass)
                assert 1 - mass <= st["dropped_mass_bound"][b, h, i] + 1e-9
                assert st["dropped_mass_bound"][b, h, i] <= 1 - p + 1e-9
                ww = np.exp(row[keep] - row[keep].max())
                ref = (ww[:, None] * v[b, h // g, keep].astype(np.float64)).sum(0) / ww.sum()
                tol = 1e-5 if q.dtype == np.float32 else 1e-12
                np.testing.assert_allclose(out[b, h, i], ref, rtol=0, atol=tol * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.3, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("causal", [False, True])
def test_top_p_random(dtype, p, causal):
    rng = np.random.default_rng(int(p * 100) + causal)
    q = (3 * rng.standard_normal((2, 4, 3, 16))).astype(dtype)
    k = rng.standard_normal((2, 2, 200, 16)).astype(dtype)
    v = rng.standard_normal((2, 2, 200, 5)).astype(dtype)
    out, st = A.softmax_attention(q, k, v, top_p=p, causal=causal, return_stats="exact")
    assert out.dtype == dtype
    _check(q, k, v, p, out, st, causal=causal)
    assert (st["kept_mass"] >= p * (1 - 1e-9)).all()
    if p == 1.0:
        dense = R.softmax_attention(q, k, v, causal=causal)
        np.testing.assert_allclose(out, dense, atol=1e-5 if dtype == np.float32 else 1e-12)
        assert (st["dropped_mass_bound"] == 0).all()
    elif p <= 0.9:
        assert (st["entries"] < st["visible"]).any()  # the knob really drops keys


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_adversarial(dtype):
    rng = np.random.default_rng(7)
    d = 8
    # duplicates and exact ties at the cut: 40 copies of one key, 60 of another
    base = rng.standard_normal((2, d))
    k = np.concatenate([np.repeat(base[:1], 40, 0), np.repeat(base[1:], 60, 0)])[None, None].astype(dtype)
    q = rng.standard_normal((1, 2, 1, d)).astype(dtype)
    v = rng.standard_normal((1, 1, 100, 3)).astype(dtype)
    for p in (0.1, 0.5, 0.75, 0.999):
        out, st = A.softmax_attention(q, k, v, top_p=p, return_stats=True)
        _check(q, k, v, p, out, st)
    # every key equal (flat softmax): all are reported, so the shortest prefix is exactly ceil(p n)
    kf = np.ones((1, 1, 50, d), dtype=dtype)
    for p in (0.2, 0.5, 0.98):
        out, st = A.softmax_attention(q, kf, v[:, :, :50], top_p=p, return_stats=True)
        _check(q, kf, v[:, :, :50], p, out, st)
        assert (st["entries"] == np.ceil(p * 50 - 1e-9)).all()
    # one dominant key: it alone holds the mass
    kd = rng.standard_normal((1, 1, 300, d)).astype(dtype)
    kd[0, 0, 17] = 50 * q[0, 0, 0] / np.linalg.norm(q[0, 0, 0])
    out, st = A.softmax_attention(q[:, :1], kd, v[:, :, :1].repeat(300, 2), top_p=0.99, return_stats=True)
    assert st["entries"][0, 0, 0] == 1
    # zero queries: every logit equal
    out, st = A.softmax_attention(np.zeros_like(q), k, v, top_p=0.5, return_stats=True)
    _check(np.zeros_like(q), k, v, 0.5, out, st)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_decode_cache_matches_function(dtype):
    rng = np.random.default_rng(3)
    k = rng.standard_normal((1, 2, 300, 16)).astype(dtype)
    v = rng.standard_normal((1, 2, 300, 4)).astype(dtype)
    cache = A.DecodeCache()
    cache.append(k[:, :, :100], v[:, :, :100])
    cache.append(k[:, :, 100:], v[:, :, 100:])
    q = (2 * rng.standard_normal((1, 4, 1, 16))).astype(dtype)
    out, st = cache.attend(q, mode="softmax", top_p=0.95)
    ref, st2 = A.softmax_attention(q, k, v, top_p=0.95, return_stats=True)
    np.testing.assert_array_equal(st["entries"], st2["entries"])
    np.testing.assert_allclose(out, ref, atol=1e-6 if dtype == np.float32 else 1e-13)
    _check(q, k, v, 0.95, out, st)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_top_p_out_of_range(bad):
    q, k, v = np.ones((1, 1, 1, 4)), np.ones((1, 1, 3, 4)), np.ones((1, 1, 3, 2))
    with pytest.raises(ValueError, match="top_p"):
        A.softmax_attention(q, k, v, top_p=bad)
    cache = A.DecodeCache().append(k, v)
    with pytest.raises(ValueError, match="top_p"):
        cache.attend(q, mode="softmax", top_p=bad)


def test_top_p_type_and_combination():
    q, k, v = np.ones((1, 1, 1, 4)), np.ones((1, 1, 3, 4)), np.ones((1, 1, 3, 2))
    for bad in ("0.5", True, [0.5]):
        with pytest.raises(TypeError, match="top_p"):
            A.softmax_attention(q, k, v, top_p=bad)
    with pytest.raises(ValueError, match="top_p cannot be combined"):
        A.softmax_attention(q, k, v, top_p=0.5, top_r=2)
    with pytest.raises(ValueError, match="top_p cannot be combined"):
        A.softmax_attention(q, k, v, top_p=0.5, threshold=0.0)
    a, b, c = q.copy(), k.copy(), v.copy()
    A.softmax_attention(q, k, v, top_p=0.5)
    assert (a == q).all() and (b == k).all() and (c == v).all()  # inputs untouched
