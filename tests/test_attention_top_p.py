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


def _check(q, k, v, p, out, st, scale=None, causal=False, tol=None):
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
                tol = tol or (1e-5 if q.dtype == np.float32 else 1e-12)
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


# --- the fused top-p step (DecodeCache over key codes): one pass over the reported keys for all
# query rows of a kv head (float64 scores), the prefix cut by weight buckets (only the bucket of the
# cut sorted), one pass over the kept values. Each case runs the fused call (checked) and compares
# it with the reference (_check) and with the general path (DecodeCache(codes=False)).


def _fused(q, k, v, p, scale=None, monkeypatch=None, tol=None):
    """DecodeCache.attend(top_p=p) over codes, checked against the reference and the general path
    (outputs to `tol` relative, default 1e-5 / 1e-12); returns (out, stats)."""
    from hsrgeom.attention import _api
    calls = []
    orig = _api.softmax_top_p
    monkeypatch.setattr(_api, "softmax_top_p", lambda *a: calls.append(orig(*a)) or calls[-1])
    cache = A.DecodeCache().append(k, v)
    out, st = cache.attend(q, mode="softmax", top_p=p, scale=scale, return_stats="exact")
    assert calls and all(c is not None for c in calls), "the fused step did not run"
    _check(q, k, v, p, out, st, scale=scale, tol=tol)
    plain = A.DecodeCache(codes=False).append(k, v)
    out2, st2 = plain.attend(q, mode="softmax", top_p=p, scale=scale, return_stats=True)
    np.testing.assert_array_equal(st["entries"], st2["entries"])
    np.testing.assert_allclose(st["dropped_mass_bound"], st2["dropped_mass_bound"], rtol=1e-9, atol=1e-300)
    tol = tol or (1e-5 if q.dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(out, out2, rtol=0, atol=tol * max(1.0, np.abs(out2).max()))
    return out, st


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads,d,dv", [(4, 256, 256), (6, 40, 5), (1, 17, 3), (9, 32, 20)])
def test_top_p_fused_row_groups_and_tails(dtype, heads, d, dv, monkeypatch):
    """Query rows come in groups of 4 (a partial group of 1-3 rows included) and the key and
    value rows in 16-coordinate tiles plus a tail: every shape gives the reference's prefix."""
    rng = np.random.default_rng(heads * 100 + d)
    n = 1500
    q = (2 * rng.standard_normal((1, heads, 1, d))).astype(dtype)
    k = rng.standard_normal((1, 1, n, d))
    hot = rng.choice(n, 5, replace=False)
    k[0, 0, hot] += 0.8 * q[0, :, 0].mean(0)  # a few keys aligned with the queries
    k = k.astype(dtype)
    v = rng.standard_normal((1, 1, n, dv)).astype(dtype)
    for p in (0.5, 0.99, 0.999):
        _, st = _fused(q, k, v, p, monkeypatch=monkeypatch)
        assert (st["entries"] > 1).all()


def _near_ties(dtype, n_close=120, n_far=200, d=32, seed=0):
    """q, k (1, 1, n, d), v: n_close keys whose float64 logits differ by ~1e-10 relative (a
    coordinate nudged by float32 ulps where q is tiny: float32 scores cannot order them),
    exact duplicates among them (ties: the smaller position first), in shuffled positions, and
    n_far keys well below."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(d)
    q[0] = 1e-3  # the nudged coordinate barely moves the logit
    base = 3.0 * q / np.linalg.norm(q)
    base[0] = 0.5
    close = np.repeat(base[None], n_close, 0).astype(np.float32)
    steps = rng.integers(-40, 40, n_close)
    for i, s in enumerate(steps):  # s float32 ulps (6e-8) of close[:, 0]: logits move by ~6e-11 each
        x = np.float32(close[i, 0])
        for _ in range(abs(int(s))):
            x = np.nextafter(x, np.float32(np.sign(s) * np.inf))
        close[i, 0] = x
    close[1::7] = close[0::7][: len(close[1::7])]  # exact duplicates
    far = rng.standard_normal((n_far, d)) * 0.3
    k = np.concatenate([close.astype(np.float64), far])
    perm = rng.permutation(len(k))
    k = k[perm]
    v = rng.standard_normal((1, 1, len(k), 3))
    return q[None, None, None].astype(dtype), k[None, None].astype(dtype), v.astype(dtype), perm < n_close


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_fused_cut_among_near_ties(dtype, monkeypatch):
    """The cut falls inside a group of keys whose float64 logits differ by ~1e-10 relative (float32
    scores tie or misorder them) or are equal (duplicates: the smaller position first): the kept
    set is still exactly the `entries` largest float64 logits."""
    q, k, v, close = _near_ties(dtype)
    s64 = R.scores(q, k)[0, 0, 0]
    s32 = (k[0, 0].astype(np.float32) @ q[0, 0, 0].astype(np.float32)) * np.float32(q.shape[-1] ** -0.5)
    inside = differ = 0
    order = np.lexsort((np.arange(len(s64)), -s64))
    order32 = np.lexsort((np.arange(len(s32)), -s32))  # what a float32 ranking would keep
    for p in np.linspace(0.05, 0.95, 13):
        _, st = _fused(q, k, v, float(p), monkeypatch=monkeypatch)
        e = int(st["entries"][0, 0, 0])
        if 0 < e < close.sum():
            inside += 1
            kept, dropped = order[:e], order[e:close.sum()]
            # float32 scores do not separate the kept near-ties from the dropped ones
            assert s32[kept].min() <= s32[dropped].max()
            differ += set(order32[:e]) != set(kept)
    assert inside >= 9  # the cut really fell among the near-ties
    assert differ >= 5  # and there a float32 ranking keeps other keys than the exact one


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_fused_large_magnitude_keys(dtype, monkeypatch):
    """Keys of norm ~1e5 whose logits differ in the 8th significant digit (cancellation; float32
    cannot resolve them), with a small scale so that the softmax spreads over them."""
    rng = np.random.default_rng(4)
    d, n = 64, 800
    q = rng.standard_normal(d)
    k = 1e5 * q / np.linalg.norm(q) + 0.05 * rng.standard_normal((n, d))
    q, k = q[None, None, None].astype(dtype), k[None, None].astype(dtype)
    v = rng.standard_normal((1, 1, n, 4)).astype(dtype)
    s = R.scores(q, k, 1.0)[0, 0, 0]
    scale = 3.0 / np.ptp(s)  # logits spread over ~3
    # a float64 logit is itself only good to ~ d u |q| |k| scale ~ 1e-9 here (any summation order)
    tol = None if dtype == np.float32 else 1e-8
    for p in (0.3, 0.9, 0.999):
        _, st = _fused(q, k, v, p, scale=scale, monkeypatch=monkeypatch, tol=tol)
        assert 1 < st["entries"][0, 0, 0] < n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_fused_flat_rows_keep_every_key(dtype, monkeypatch):
    """Flat rows: all keys equal (one bucket; the prefix is ceil(p n), every key at p = 0.999 with
    n < 1000: bound 0) and a near-zero query over random keys."""
    rng = np.random.default_rng(8)
    n, d = 500, 32
    v = rng.standard_normal((1, 1, n, 4)).astype(dtype)
    q = rng.standard_normal((1, 4, 1, d)).astype(dtype)
    ones = np.ones((1, 1, n, d), dtype=dtype)
    for p in (0.5, 0.999):
        _, st = _fused(q, ones, v, p, monkeypatch=monkeypatch)
        assert (st["entries"] == np.ceil(p * n - 1e-9)).all()
    assert (st["dropped_mass_bound"] == 0).all() and (st["entries"] == n).all()
    k = rng.standard_normal((1, 1, n, d)).astype(dtype)
    _, st = _fused((1e-3 * q).astype(dtype), k, v, 0.999, monkeypatch=monkeypatch)
    assert (st["entries"] >= 0.99 * n).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_fused_single_key(dtype, monkeypatch):
    """n = 1: the one key is kept, the bound is 0, the output is its value row."""
    rng = np.random.default_rng(9)
    k = rng.standard_normal((1, 1, 1, 16)).astype(dtype)
    v = rng.standard_normal((1, 1, 1, 3)).astype(dtype)
    q = rng.standard_normal((1, 2, 1, 16)).astype(dtype)
    for p in (0.1, 0.5, 0.99):
        out, st = _fused(q, k, v, p, monkeypatch=monkeypatch)
        assert (st["entries"] == 1).all() and (st["dropped_mass_bound"] == 0).all()
        np.testing.assert_allclose(out[0, :, 0], np.repeat(v[0, 0], 2, 0), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_fused_top_key_first(dtype, monkeypatch):
    """The largest logit comes first and hundreds of keys lie just below it: the one scan that
    finds s* and the report's candidates together must keep keys it meets after its running
    maximum has risen (a margin below that maximum); without it they drop out of R, and the kept
    set holds less than p of the mass."""
    rng = np.random.default_rng(10)
    d, n = 32, 3000
    q = rng.standard_normal(d)
    u = q / np.linalg.norm(q)
    k = rng.standard_normal((n, d)) * 0.5
    k -= np.outer(k @ u, u)  # orthogonal to q, then a component along q sets each logit
    k += np.outer(np.concatenate([rng.uniform(0.0, 2.0, 600), rng.uniform(-4.0, -0.5, n - 600)]), u)
    k[0] = 2.05 * u  # the largest, first
    q, k = q[None, None, None].astype(dtype), k[None, None].astype(dtype)
    v = rng.standard_normal((1, 1, n, 4)).astype(dtype)
    for p in (0.5, 0.9, 0.99):
        _, st = _fused(q, k, v, p, monkeypatch=monkeypatch)
        assert st["entries"][0, 0, 0] > 50


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_p_fused_same_answer_for_any_thread_count(dtype, monkeypatch):
    """The one scan splits over key chunks when threads are given (each chunk with its own running
    maximum): the kept set, the bound and the output do not depend on the thread count."""
    import hsrgeom
    rng = np.random.default_rng(11)
    n, d = 20000, 64  # enough work for the scan to split
    q = rng.standard_normal((1, 4, 1, d)).astype(dtype)
    k = rng.standard_normal((1, 1, n, d))
    k[0, 0, rng.choice(n, 20, replace=False)] += 0.6 * q[0, :, 0].mean(0)
    k = k.astype(dtype)
    v = rng.standard_normal((1, 1, n, 8)).astype(dtype)
    got = []
    old = hsrgeom.get_num_threads()
    try:
        for threads in (1, 2):
            hsrgeom.set_num_threads(threads)
            got.append(_fused(q, k, v, 0.99, monkeypatch=monkeypatch))
    finally:
        hsrgeom.set_num_threads(old)
    (o1, s1), (o2, s2) = got
    np.testing.assert_array_equal(s1["entries"], s2["entries"])
    np.testing.assert_array_equal(s1["dropped_mass_bound"], s2["dropped_mass_bound"])
    np.testing.assert_array_equal(o1, o2)
