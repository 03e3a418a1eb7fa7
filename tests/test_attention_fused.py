"""The fused decoding step (issue 21 item 2): 8-bit key codes per kv head (attend.hpp, bound as
hsrgeom.attention._attend) select exactly what the float64 scores / the exact index select, and
DecodeCache.attend over them (one compiled call per kv head for top_r) gives the outputs,
counts and certificates of the general path (codes=False) and of the dense reference."""
import numpy as np
import pytest

import hsrgeom
import hsrgeom.attention as A
from hsrgeom.attention import _attend
from hsrgeom.attention import reference as R

import exact_reference as X

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _codes(K, V=None):
    V = K[:, :1] if V is None else V
    h = (_attend.HeadCodesF32 if K.dtype == np.float32 else _attend.HeadCodesF64)(K.shape[1], V.shape[1])
    h.append(K[: len(K) // 3], V[: len(K) // 3])  # two appends: the codes grow
    h.append(K[len(K) // 3 :], V[len(K) // 3 :])
    return h


def _key_sets(rng, dtype):
    """(name, K, Q): random, duplicated keys, integer keys (exact scores: many exact ties),
    all-equal keys, a zero query, keys of very different norms, keys that cannot be coded."""
    d = 32
    out = []
    K = rng.standard_normal((700, d))
    out.append(("random", K, rng.standard_normal((4, d))))
    Kd = K.copy()
    Kd[rng.integers(0, 700, 300)] = K[rng.integers(0, 700, 300)]
    out.append(("duplicates", Kd, rng.standard_normal((4, d))))
    out.append(("integers", rng.integers(-1, 2, (500, d)).astype(float), rng.integers(-2, 3, (3, d)).astype(float)))
    out.append(("all equal", np.ones((300, d)), np.vstack([np.ones(d), -np.ones(d), np.zeros(d)])))
    Ks = K * np.exp2(rng.integers(-30, 30, (700, 1)))
    out.append(("norms 2^+-30", Ks, rng.standard_normal((2, d))))
    Ku = K[:200].copy()
    Ku[::7] *= 1e-300 if dtype == np.float64 else 1e-40  # below the codable range (or subnormal)
    Ku[3] = 0.0
    out.append(("uncodable", Ku, rng.standard_normal((2, d))))
    Km = rng.standard_normal((600, d))
    Km[:, 5] *= 100.0  # a "massive activation" channel
    Km[400:, 7] *= 1000.0  # keys appended later beyond the channel scales of the first ones
    out.append(("massive channels", Km, rng.standard_normal((4, d))))
    return [(name, np.ascontiguousarray(k, dtype=dtype), np.ascontiguousarray(q, dtype=dtype)) for name, k, q in out]


@pytest.mark.parametrize("dtype", DTYPES)
def test_codes_top_r_is_the_exact_top_r(dtype):
    rng = np.random.default_rng(1)
    for name, K, Q in _key_sets(rng, dtype):
        h = _codes(K)
        for r in (1, 5, 64, len(K) - 1, len(K), len(K) + 3):
            lims, ids, scores, tested = h.select(Q, K, r=r)
            assert (np.diff(lims) == min(r, len(K))).all(), name
            for j in range(len(Q)):
                got = ids[lims[j] : lims[j + 1]]
                assert (np.diff(got) > 0).all()  # ascending ids
                want = X.topk(K, Q[j], r) if r < len(K) else np.arange(len(K))
                np.testing.assert_array_equal(np.sort(got), np.sort(want), err_msg=f"{name} r={r} row {j}")
                # the float64 score of any summation order: |fl - <k, q>| <= gamma_d sum |k_i q_i|,
                # so two orders (the kernel's and numpy's) differ by at most twice that
                k64, q64 = K[got].astype(np.float64), Q[j].astype(np.float64)
                d = K.shape[1]
                gamma = d * np.finfo(np.float64).eps / 2 / (1 - d * np.finfo(np.float64).eps / 2)
                err = np.abs(scores[lims[j] : lims[j + 1]] - k64 @ q64)
                assert (err <= 2 * gamma * (np.abs(k64) @ np.abs(q64))).all(), f"{name} r={r} row {j}"
            assert tested >= min(r, len(K)) * len(Q)


@pytest.mark.parametrize("dtype", DTYPES)
def test_codes_threshold_is_the_exact_report(dtype):
    rng = np.random.default_rng(2)
    for name, K, Q in _key_sets(rng, dtype):
        h = _codes(K)
        S = Q.astype(np.float64) @ K.astype(np.float64).T
        for pick in (0.5, 0.9, 0.99):
            # thresholds at existing scores: boundary ties (exact for the integer keys)
            t = np.array([np.quantile(S[j], pick, method="nearest") for j in range(len(Q))])
            lims, ids, scores, _ = h.select(Q, K, t=t)
            for j in range(len(Q)):
                got = ids[lims[j] : lims[j + 1]]
                exact = X.report(K, Q[j].astype(np.float64), t[j])
                if name == "integers" or name == "all equal":  # exact scores: the same set
                    np.testing.assert_array_equal(got, exact, err_msg=name)
                else:  # the float64 scores >= t: the exact set up to keys within rounding of t
                    sym = np.setxor1d(got, exact)
                    assert np.all(np.abs(S[j, sym] - t[j]) <= 1e-12 * (np.abs(S[j]).max() + 1)), name
                assert (scores[lims[j] : lims[j + 1]] >= t[j]).all()


def test_codes_reject_bad_arguments():
    K = np.ones((10, 16), dtype=np.float32)
    h = _codes(K)
    with pytest.raises(ValueError, match="r must be >= 1"):
        h.select(K[:2], K, r=0)
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="scale must be finite and > 0"):
            h.softmax_top_r(K[:2], K, K[:, :1], 3, bad)
    with pytest.raises(ValueError, match=r"keys must have shape \(10, 16\)"):
        h.select(K[:2], K[:5], r=1)  # not the coded keys
    with pytest.raises(ValueError, match=r"q must have shape \(n, 16\)"):
        h.select(np.ones((2, 8), dtype=np.float32), K, r=1)
    bad = K[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        h.select(bad, K, r=1)
    with pytest.raises(ValueError, match="NaN"):
        h.append(bad, bad[:, :1])
    with pytest.raises(ValueError, match=r"values must have shape \(2, 1\)"):
        h.append(K[:2], K[:2])
    with pytest.raises(TypeError):
        h.append(np.ones((2, 16), dtype=np.float32))
    assert h.n == 10 and h.d == 16


def _decode(rng, dtype, b=2, h=4, hkv=2, n=900, d=32, dv=8, peaked=True):
    q = rng.standard_normal((b, h, 1, d))
    k = rng.standard_normal((b, hkv, n, d))
    if peaked:  # a few keys aligned with the queries, as real full-attention layers
        for kh in range(hkv):
            hot = rng.choice(n, 6, replace=False)
            k[:, kh, hot] += 2.0 * q[:, kh * (h // hkv) : (kh + 1) * (h // hkv), 0].mean(axis=1, keepdims=True)
    v = rng.standard_normal((b, hkv, n, dv))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def _both(k, v, step=None):
    """A DecodeCache with codes and one without, filled alike (one token at a time from step)."""
    caches = [A.DecodeCache(), A.DecodeCache(codes=False)]
    for c in caches:
        c.append(k[:, :, :step], v[:, :, :step])
        for t in range(step or k.shape[2], k.shape[2]):
            c.append(k[:, :, t : t + 1], v[:, :, t : t + 1])
    return caches


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(4, 2), (4, 1), (3, 3)])
def test_decode_top_r_fused_equals_general_path_and_reference(dtype, heads):
    rng = np.random.default_rng(hash(heads) % 2**32)
    q, k, v = _decode(rng, dtype, h=heads[0], hkv=heads[1])
    fused, plain = _both(k, v, step=850)
    assert fused._codes is not None and plain._codes is None
    for r in (1, 16, 64, 900, 2000):
        out, st = fused.attend(q, mode="softmax", top_r=r, return_stats="exact")
        out2, st2 = plain.attend(q, mode="softmax", top_r=r, return_stats="exact")
        ref = R.topr_softmax_attention(q, k, v, top_r=r)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, ref, rtol=0, atol=TOL[dtype] * np.abs(ref).max())
        np.testing.assert_allclose(out, out2, rtol=0, atol=TOL[dtype] * np.abs(ref).max())
        np.testing.assert_array_equal(st["entries"], st2["entries"])
        np.testing.assert_allclose(st["kept_mass"], st2["kept_mass"], rtol=1e-9)  # the same keys
        # the certificate holds and is the general path's (to the rounding of its inputs)
        assert (1 - st["kept_mass"] <= st["dropped_mass_bound"] * (1 + 1e-9) + 1e-12).all()
        np.testing.assert_allclose(st["dropped_mass_bound"], st2["dropped_mass_bound"], rtol=1e-6, atol=1e-300)
        assert (st["abs_error"] <= st["error_bound"] + TOL[dtype] * np.abs(ref).max()).all()
        assert "codes" in st["index"][0] and st["points_tested"] > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_top_p_and_threshold_over_codes_keep_their_guarantees(dtype):
    rng = np.random.default_rng(5)
    q, k, v = _decode(rng, dtype)
    fused, plain = _both(k, v)
    for p in (0.5, 0.9, 0.99, 1.0):
        out, st = fused.attend(q, mode="softmax", top_p=p, return_stats="exact")
        out2, st2 = plain.attend(q, mode="softmax", top_p=p, return_stats="exact")
        np.testing.assert_array_equal(st["entries"], st2["entries"])
        assert (st["kept_mass"] >= p * (1 - 1e-12)).all()
        assert (1 - st["kept_mass"] <= st["dropped_mass_bound"] + 1e-12).all()
        assert (st["dropped_mass_bound"] <= 1 - p + 1e-12).all()
        np.testing.assert_allclose(out, out2, rtol=0, atol=TOL[dtype] * np.abs(out2).max())
    thr = np.quantile(R.scores(q, k), 0.97, axis=-1)  # logits, per row: (b, h, 1)
    out, st = fused.attend(q, mode="softmax", threshold=thr, top_r=20, return_stats="exact")
    out2, st2 = plain.attend(q, mode="softmax", threshold=thr, top_r=20, return_stats="exact")
    np.testing.assert_array_equal(st["entries"], st2["entries"])
    np.testing.assert_allclose(out, out2, rtol=0, atol=TOL[dtype] * np.abs(out2).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_fused_with_ties_and_duplicates(dtype):
    """Integer keys (exact scores, many ties at the r-th place: the smaller position wins) and
    duplicated rows: the kept set is the reference's, whatever the number of threads."""
    rng = np.random.default_rng(6)
    k = rng.integers(-1, 2, (1, 1, 600, 16)).astype(dtype)
    k[0, 0, 300:] = k[0, 0, :300]
    v = rng.standard_normal((1, 1, 600, 4)).astype(dtype)
    q = rng.integers(-1, 2, (1, 4, 1, 16)).astype(dtype)
    fused, _ = _both(k, v)
    ref = R.topr_softmax_attention(q, k, v, top_r=37)
    for threads in (1, 2):
        old = hsrgeom.get_num_threads()
        hsrgeom.set_num_threads(threads)
        try:
            out, st = fused.attend(q, mode="softmax", top_r=37)
        finally:
            hsrgeom.set_num_threads(old)
        np.testing.assert_allclose(out, ref, rtol=0, atol=TOL[dtype] * np.abs(ref).max())
        assert (st["entries"] == 37).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_fused_falls_back_where_it_must(dtype):
    """Inner products beyond the plain float64 range (huge or tiny rows) take the general path
    (rescaled rows); values near the float64 maximum too. Same answers as without codes."""
    rng = np.random.default_rng(7)
    q, k, v = _decode(rng, np.float64, b=1, n=300)
    big = 1e150 if dtype == np.float64 else 1e18
    for qs, vs in ((big, 1.0), (1.0 / big, 1.0), (1.0, 1e307 if dtype == np.float64 else 1e37)):
        qq, vv = (q * qs).astype(dtype), (v * vs).astype(dtype)
        kk = (k * (big if qs == big and dtype == np.float64 else 1.0)).astype(dtype)
        fused, plain = _both(kk, vv)
        out, st = fused.attend(qq, mode="softmax", top_r=10)
        out2, st2 = plain.attend(qq, mode="softmax", top_r=10)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(st["entries"], st2["entries"])
        np.testing.assert_allclose(out, out2, rtol=TOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_relu_with_codes_stays_exact(dtype):
    """ReLU steps do not use the codes: the exact index, equal to dense ReLU attention."""
    rng = np.random.default_rng(8)
    q, k, v = _decode(rng, dtype, n=500)
    fused, _ = _both(k, v, step=480)
    for bias in (0.0, 0.5, 2.0):
        out, st = fused.attend(q, mode="relu", bias=bias)
        ref = R.relu_attention(q, k, v, bias=bias)
        np.testing.assert_allclose(out, ref, rtol=0, atol=TOL[dtype] * max(np.abs(ref).max(), 1e-300))
        assert "codes" not in st["index"][0]


def test_decode_cache_codes_flag_and_small_heads():
    rng = np.random.default_rng(9)
    k = rng.standard_normal((1, 1, 50, 8))
    assert A.DecodeCache().append(k, k)._codes is None  # d < 16: the index selects
    assert A.DecodeCache(codes=False).append(np.zeros((1, 1, 5, 32)), np.zeros((1, 1, 5, 2)))._codes is None
    c = A.DecodeCache().append(np.zeros((1, 2, 5, 32)), np.zeros((1, 2, 5, 2)))
    assert c._codes[0][1].n == 5
    c.append(np.zeros((1, 2, 0, 32)), np.zeros((1, 2, 0, 2)))  # empty append
    assert c._codes[0][1].n == 5 and len(c) == 5


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_cache_with_codes_pickles_and_copies(dtype):
    """The compiled codes are rebuilt from the keys (transformers may deepcopy a cache)."""
    import copy
    import pickle
    rng = np.random.default_rng(10)
    q, k, v = _decode(rng, dtype, n=400)
    cache = A.DecodeCache().append(k, v)
    want = cache.attend(q, mode="softmax", top_r=9, return_stats=False)
    for other in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert other._codes[1][1].n == 400
        np.testing.assert_array_equal(other.attend(q, mode="softmax", top_r=9, return_stats=False), want)
        other.append(k[:, :, :1], v[:, :, :1])  # grows on its own
        assert other._codes[0][0].n == 401 and cache._codes[0][0].n == 400


def test_codes_channel_scales_keep_massive_channels_from_blurring_the_rest():
    """float32 keys are coded per channel (powers of two): with one channel 100x the others the
    codes still exclude almost every key (the full rows read stay near r per row)."""
    rng = np.random.default_rng(11)
    K = rng.standard_normal((4000, 64)).astype(np.float32)
    K[:, 3] *= 100.0
    Q = rng.standard_normal((4, 64)).astype(np.float32)
    lims, ids, _, tested = _codes(K).select(Q, K, r=16)
    S = Q.astype(np.float64) @ K.astype(np.float64).T
    for j in range(4):
        np.testing.assert_array_equal(ids[lims[j] : lims[j + 1]], np.sort(np.argsort(-S[j], kind="stable")[:16]))
    assert tested <= 4 * 4 * 16, tested  # per-row scales alone read 1077 rows here (92 now)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_top_p_fused_keeps_its_certificate(dtype, monkeypatch):
    """top_p in one compiled call per kv head: the kept set is the `entries` largest logits
    (ties to the smaller position), the true share is >= p, and 1 - share <= bound <= 1 - p; on
    all-equal keys the prefix is exactly ceil(p n). The fused call really ran."""
    from hsrgeom.attention import _api
    calls = []
    orig = _api.softmax_top_p
    monkeypatch.setattr(_api, "softmax_top_p", lambda *a: calls.append(1) or orig(*a))
    rng = np.random.default_rng(12)
    q, k, v = _decode(rng, dtype, b=1, h=4, hkv=1, n=700)
    k[0, 0, 350:] = k[0, 0, :350]  # duplicates: ties at every cut
    cases = [(q, k), (q, np.ones_like(k))]
    for qq, kk in cases:
        cache = A.DecodeCache().append(kk, v)
        S = R.scores(qq, kk)[0, :, 0]  # (heads, n) float64 logits
        for p in (0.3, 0.9, 0.999):
            out, st = cache.attend(qq, mode="softmax", top_p=p, return_stats="exact")
            e = st["entries"][0, :, 0]
            assert (st["kept_mass"] >= p * (1 - 1e-12)).all()
            assert (1 - st["kept_mass"] <= st["dropped_mass_bound"] + 1e-12).all()
            assert (st["dropped_mass_bound"] <= 1 - p + 1e-12).all()
            for h in range(4):
                top = np.lexsort((np.arange(700), -S[h]))[: e[h]]
                ref = R.topr_softmax_attention(qq[:, h : h + 1], kk, v, top_r=int(e[h]))
                np.testing.assert_allclose(out[0, h], ref[0, 0], rtol=0, atol=TOL[dtype] * np.abs(ref).max())
                if kk is not k:
                    assert e[h] == int(np.ceil(p * 700 - 1e-9))
                assert st["kept_mass"][0, h, 0] == pytest.approx(np.exp(S[h, top] - S[h].max()).sum()
                                                                  / np.exp(S[h] - S[h].max()).sum(), rel=1e-9)
    assert len(calls) == 6


# --- One float64 order on every build (attend.hpp: dots, exp_neg, gather4) ----------------------
# The fused step's float64 arithmetic, written again in Python with exact fused multiply-adds
# (integer arithmetic, one rounding): the scores, weights and outputs must equal it to the bit,
# so an AVX-512, an AVX2 and a scalar build pass only if they return the same bits.

def _fma(a, b, c):
    (na, da), (nb, db), (nc, dc) = a.as_integer_ratio(), b.as_integer_ratio(), c.as_integer_ratio()
    return (na * nb * dc + nc * da * db) / (da * db * dc)  # int / int: correctly rounded


def _dot(a, x):
    """fl(<a, x>) in attend.hpp's order: 16 fused partial sums, a fixed tree, the tail fused."""
    a, x = [float(v) for v in a], [float(v) for v in x]
    d16 = len(a) - len(a) % 16
    p = [0.0] * 16
    for k in range(d16):
        p[k % 16] = _fma(a[k], x[k], p[k % 16])
    q = [p[i] + p[i + 8] for i in range(8)]
    r = [q[i] + q[i + 4] for i in range(4)]
    s = (r[0] + r[2]) + (r[1] + r[3])
    for k in range(d16, len(a)):
        s = _fma(a[k], x[k], s)
    return s


_EXP_C = [1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
          1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0]


def _exp_neg(x):
    """attend.hpp's exp(-x): k = round(-x log2 e), r = -x - k ln 2 (two parts), the degree-13
    Taylor polynomial by fma, times 2^k rounded once."""
    y = 0.0 - (x if x < 1000.0 else 1000.0)
    k = round(y * 1.4426950408889634)  # ties to even, as the hardware
    r = _fma(float(-k), 1.90821492927058770002e-10, _fma(float(-k), 6.93147180369123816490e-01, y))
    p = _EXP_C[13]
    for c in reversed(_EXP_C[:13]):
        p = _fma(p, r, c)
    n, d = p.as_integer_ratio()
    return n * 2**k / d if k >= 0 else n / (d << -k)


def _bits(x):
    return np.asarray(x, dtype=np.float64).view(np.int64)


def _order_sets(dtype, seed=20):
    """(name, K, Q, V): d = 40 and d_v = 20 (tails after the 16- and 8-wide blocks), Gaussian keys,
    integer keys (exact ties at every cut), keys of norms 2^+-20."""
    rng = np.random.default_rng(seed)
    n, d, dv = 300, 40, 20
    K = rng.standard_normal((n, d))
    Ki = rng.integers(-2, 3, (n, d)).astype(float)
    Ki[150:] = Ki[:150]
    Ks = K * np.exp2(rng.integers(-20, 20, (n, 1)))
    V = rng.standard_normal((n, dv))
    out = []
    for name, k, m in (("gaussian", K, 4), ("integers", Ki, 3), ("norms 2^+-20", Ks, 4)):
        q = rng.integers(-2, 3, (m, d)).astype(float) if name == "integers" else rng.standard_normal((m, d))
        out.append((name, *(np.ascontiguousarray(a, dtype=dtype) for a in (k, q, V))))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_scores_in_the_fixed_order(dtype):
    """select (top-r and threshold): the scores are attend.hpp's order to the bit, and the kept
    ids are exactly the top-r (ties to the smaller id) / the keys >= t by those scores."""
    for name, K, Q, _ in _order_sets(dtype):
        h = _codes(K)
        S = np.array([[_dot(q, x) for x in K] for q in Q])
        for r in (1, 7, 64):
            lims, ids, scores, _ = h.select(Q, K, r=r)
            for j in range(len(Q)):
                want = np.sort(np.lexsort((np.arange(len(K)), -S[j]))[:r])
                np.testing.assert_array_equal(ids[lims[j] : lims[j + 1]], want, err_msg=f"{name} r={r}")
                np.testing.assert_array_equal(_bits(scores[lims[j] : lims[j + 1]]), _bits(S[j, want]))
        t = np.array([np.sort(S[j])[-40] for j in range(len(Q))])  # at a score: ties at the cut
        lims, ids, scores, _ = h.select(Q, K, t=t)
        for j in range(len(Q)):
            want = np.flatnonzero(S[j] >= t[j])
            np.testing.assert_array_equal(ids[lims[j] : lims[j + 1]], want, err_msg=name)
            np.testing.assert_array_equal(_bits(scores[lims[j] : lims[j + 1]]), _bits(S[j, want]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_top_r_output_in_the_fixed_order(dtype):
    """softmax_top_r: weights exp_neg(scale (s_max - s)), summed and gathered key by key (ids
    ascending), to the bit; the scale spreads the logits so that weights underflow to subnormals
    and 0 (r = n keeps them all)."""
    subnormal = 0
    for name, K, Q, V in _order_sets(dtype):
        h = _codes(K, V)
        S = np.array([[_dot(q, x) for x in K] for q in Q])
        spread = float((S.max(axis=1) - S.min(axis=1)).min())
        for r, scale in ((16, 0.2), (len(K), 900.0 / spread)):
            out, entries, _, lims, ids, _ = h.softmax_top_r(Q, K, V, r, scale)
            for j in range(len(Q)):
                kept = ids[lims[j] : lims[j + 1]]
                np.testing.assert_array_equal(kept, np.sort(np.lexsort((np.arange(len(K)), -S[j]))[:r]))
                s = S[j, kept]
                w = [_exp_neg(scale * (s.max() - v)) for v in s]
                den, o = 0.0, np.zeros(V.shape[1])
                for e, i in enumerate(kept):
                    den += w[e]
                    o = o + w[e] * V[i].astype(np.float64)
                np.testing.assert_array_equal(_bits(out[j]), _bits(o / den), err_msg=f"{name} r={r} row {j}")
                if r == len(K):  # the weights underflow to 0 (and into the subnormals)
                    assert min(w) == 0.0, name
                    subnormal += sum(0 < v < 2.0**-1022 for v in w)
    assert subnormal > 0


def test_exp_neg_emulation_is_within_2_ulp():
    """The Python copy of exp_neg (which the builds must equal) against libm: 2 ulp for normal
    results, 1 subnormal ulp below 2^-1022, 0 from exp(-745.2) on."""
    import math
    for x in np.concatenate([np.linspace(0, 1, 101), np.linspace(1, 760, 2001), [1e-300, 745.13, 999.9, 1e300]]):
        w, ref = _exp_neg(float(x)), math.exp(-x)
        if ref >= 2.0**-1022:
            assert abs(w - ref) <= 2 * math.ulp(ref), x
        else:
            assert abs(w - ref) <= 5e-324, x
    assert _exp_neg(745.2) == 0.0 and _exp_neg(float("inf")) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_exp_neg_into_the_subnormals(dtype):
    """The weights themselves: logits 0 and -x on one coordinate (exact scores) and one-hot
    values, so output k is w_k / sum w: attend.hpp's exp_neg to the bit (vector lanes and the
    scalar tail), positive subnormals up to x = 740, 0 beyond 745.2."""
    x = np.concatenate([[0.0, 1e-3, 1.0, 20.0, 708.0, 708.4], np.linspace(709.0, 745.0, 37),
                        [745.1, 745.2, 800.0, 999.0, 1000.0, 1100.0, 3000.0]])
    if dtype == np.float32:
        x = x.astype(np.float32).astype(np.float64)
    d, n = 17, len(x)
    K = np.zeros((n, d), dtype=dtype)
    K[:, 16] = -x
    Q = np.zeros((1, d), dtype=dtype)
    Q[0, 16] = 1.0
    V = np.eye(n, dtype=dtype)
    out = _codes(K, V).softmax_top_r(Q, K, V, n, 1.0)[0][0]
    w = [_exp_neg(float(v)) for v in x]
    den = 0.0
    for v in w:
        den += v
    np.testing.assert_array_equal(_bits(out), _bits(np.array(w) / den))
    assert (out[x > 745.2] == 0).all() and (out[(x > 709) & (x < 740)] > 0).all()
    assert (out[(x > 709) & (x < 740)] < 2.0**-1022).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_top_p_output_in_the_fixed_order(dtype):
    """softmax_top_p: the kept keys are a prefix of the fixed-order scores (descending, ties to
    the smaller id) holding >= p of the mass, and the output is sum_e w_e v_e / sum_e w_e with
    w_e = exp_neg((s_max - s_e) scale), one fma per key and coordinate (ids ascending over the
    union of the group's kept keys), to the bit."""
    for name, K, Q, V in _order_sets(dtype):
        h = _codes(K, V)
        S = np.array([[_dot(q, x) for x in K] for q in Q])
        for p, scale in ((0.5, 0.3), (0.9, 1.0), (0.99, 0.15)):
            out, entries, _, lims, ids, _ = h.softmax_top_p(Q, K, V, p, scale)
            union = np.unique(ids)
            acc = np.zeros((len(Q), V.shape[1]))
            for j in range(len(Q)):
                kept = ids[lims[j] : lims[j + 1]]
                order = np.lexsort((np.arange(len(K)), -S[j]))
                np.testing.assert_array_equal(kept, np.sort(order[: len(kept)]), err_msg=f"{name} p={p}")
                wall = np.array([_exp_neg((S[j].max() - v) * scale) for v in S[j]])
                assert wall[kept].sum() >= p * wall.sum() * (1 - 1e-12)
                zp, keep = 0.0, set(kept)
                for i in kept:
                    zp += wall[i]
                a = [0.0] * V.shape[1]
                for i in union:
                    wi = float(wall[i]) if i in keep else 0.0
                    a = [_fma(wi, float(V[i, c]), a[c]) for c in range(V.shape[1])]
                acc[j] = np.array(a) / zp
            np.testing.assert_array_equal(_bits(out), _bits(acc), err_msg=f"{name} p={p}")
