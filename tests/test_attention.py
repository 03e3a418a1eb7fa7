"""hsrgeom.attention against the dense float64 reference (hsrgeom.attention.reference)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import hsrgeom.attention as A
from hsrgeom.attention import reference as R

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def qkv(rng, b=2, h=4, hkv=2, m=5, n=300, d=8, dv=3, dtype=np.float64, clustered=False):
    q = rng.standard_normal((b, h, m, d))
    k = rng.standard_normal((b, hkv, n, d))
    if clustered:  # keys around a few centres: where trees prune
        k = rng.standard_normal((b, hkv, 4, d))[:, :, rng.integers(0, 4, n)] * 3 + 0.1 * k
    v = rng.standard_normal((b, hkv, n, dv))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def assert_close(out, ref, dtype):
    """max |out - ref| <= tol * max |ref| per row (rows of zeros must be exactly zero)."""
    assert out.dtype == dtype and out.shape == ref.shape
    scale = np.abs(ref).max(axis=-1, keepdims=True)
    err = np.abs(out.astype(np.float64) - ref)
    assert (err <= TOL[dtype] * scale).all(), float((err / np.where(scale > 0, scale, 1)).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (6, 1)])
@pytest.mark.parametrize("index", ["auto", "brute_force", "partition_tree"])
def test_relu_matches_dense(dtype, causal, heads, index):
    rng = np.random.default_rng(hash((causal, heads, index)) % 2**32)
    q, k, v = qkv(rng, h=heads[0], hkv=heads[1], dtype=dtype, clustered=index == "partition_tree")
    for alpha, bias in [(1, 0.5), (2, -0.2), (3, 1.0)]:
        out, st = A.relu_attention(q, k, v, bias=bias, alpha=alpha, causal=causal, index=index, return_stats=True)
        ref = R.relu_attention(q, k, v, bias=bias, alpha=alpha, causal=causal)
        assert_close(out, ref, dtype)
        s = R.scores(q, k)
        if causal:
            s = np.where(R.causal_mask(q.shape[2], k.shape[2]), s, -np.inf)
        assert (st["entries"] >= (s > bias).sum(-1)).all()  # every positive entry was found
        assert (st["entries"] <= (s > bias - 1e-9).sum(-1)).all()  # and nothing far below


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_per_row_bias_and_empty_rows(dtype):
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, dtype=dtype)
    bias = rng.uniform(0, 1, size=(2, 4, 5))
    bias[0, 1, :] = 1e6  # rows with no positive entry return zeros
    out = A.relu_attention(q, k, v, bias=bias)
    assert_close(out, R.relu_attention(q, k, v, bias=bias), dtype)
    assert not out[0, 1].any()


def test_relu_boundary_ties_and_duplicates():
    # keys on the threshold (weight exactly 0) and duplicated keys, integer-valued: exact scores
    q = np.array([[[[1.0, 2.0]]]])
    k = np.array([[[[1.0, 1.0], [3.0, 0.0], [0.0, 1.5], [2.0, 2.0], [2.0, 2.0], [-1.0, 0.0]]]])
    v = np.arange(12, dtype=np.float64).reshape(1, 1, 6, 2)
    out, st = A.relu_attention(q, k, v, bias=3.0, scale=1.0, return_stats=True)
    ref = R.relu_attention(q, k, v, bias=3.0, scale=1.0)
    np.testing.assert_allclose(out, ref, rtol=1e-15)
    w = np.array([0, 0, 0, 3, 3, 0.0])
    np.testing.assert_allclose(out[0, 0, 0], w @ v[0, 0] / w.sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["relu", "softmax"])
def test_prefill_causal_cut(dtype, mode):
    """Blocks smaller than n: rows search earlier blocks and cut their own."""
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, b=1, h=2, hkv=1, m=300, n=300, d=3, dtype=dtype)
    if mode == "relu":
        out, st = A.prefill(q, k, v, mode="relu", bias=0.3, block=64, return_stats=True)
        ref = R.relu_attention(q, k, v, bias=0.3, causal=True)
    else:
        out, st = A.prefill(q, k, v, mode="softmax", top_r=7, block=64, return_stats=True)
        ref = R.topr_softmax_attention(q, k, v, top_r=7, causal=True)
    assert_close(out, ref, dtype)
    assert len(st["index"]) == 1 and st["index"][0].count("[") == 5  # 300 keys in blocks of 64
    np.testing.assert_array_equal(st["visible"][0, 0], np.arange(1, 301))


def test_causal_rows_that_see_nothing():
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, m=8, n=5)  # m > n: the first 3 rows see no key
    for out, ref in [
        (A.relu_attention(q, k, v, bias=-10.0, causal=True), R.relu_attention(q, k, v, bias=-10.0, causal=True)),
        (A.softmax_attention(q, k, v, causal=True), R.softmax_attention(q, k, v, causal=True)),
    ]:
        assert not out[:, :, :3].any()
        assert_close(out, ref, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_full_equals_dense(dtype, causal):
    rng = np.random.default_rng(4)
    q, k, v = qkv(rng, dtype=dtype)
    ref = R.softmax_attention(q, k, v, causal=causal)
    assert_close(A.softmax_attention(q, k, v, causal=causal), ref, dtype)
    out, st = A.softmax_attention(q, k, v, top_r=k.shape[2], causal=causal, return_stats="exact")
    assert_close(out, ref, dtype)
    assert (st["dropped_mass_bound"] == 0).all() and (st["rel_error"] <= 10 * TOL[dtype]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index", ["brute_force", "partition_tree"])
def test_softmax_top_r_and_bounds(dtype, index):
    rng = np.random.default_rng(5)
    q, k, v = qkv(rng, d=4, n=500, dtype=dtype)
    q *= 3  # peaked rows, as in trained models
    for r in (1, 4, 32):
        out, st = A.softmax_attention(q, k, v, top_r=r, index=index, return_stats="exact")
        assert_close(out, R.topr_softmax_attention(q, k, v, top_r=r), dtype)
        assert (st["entries"] == r).all()
        ref = R.softmax_attention(q, k, v).astype(np.float64)
        err = np.linalg.norm(out.astype(np.float64) - ref, axis=-1)
        np.testing.assert_allclose(st["abs_error"], err, rtol=1e-6, atol=1e-6)
        # the bounds hold against the exact dropped mass and error
        p = np.exp(R.scores(q, k) - R.scores(q, k).max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        kept = np.sort(p, axis=-1)[..., ::-1][..., :r].sum(-1)
        assert (st["dropped_mass_bound"] >= 1 - kept - 1e-12).all()
        assert (st["error_bound"] >= err - 1e-6).all()
    # more entries, less error
    e = [A.softmax_attention(q, k, v, top_r=r, return_stats="exact")[1]["rel_error"].mean() for r in (1, 8, 64)]
    assert e[0] > e[1] > e[2]


def test_softmax_threshold():
    rng = np.random.default_rng(6)
    q, k, v = qkv(rng, d=4, n=400)
    thr = 0.8
    out, st = A.softmax_attention(q, k, v, threshold=thr, return_stats="exact")
    s = R.scores(q, k)
    keep = s >= thr
    np.testing.assert_array_equal(st["entries"], keep.sum(-1))
    w = np.where(keep, np.exp(s - s.max(-1, keepdims=True)), 0)
    ref = np.einsum("bhmn,bhne->bhme", w, np.repeat(v, 2, axis=1))
    den = w.sum(-1, keepdims=True)
    ref = np.divide(ref, den, out=np.zeros_like(ref), where=den > 0)
    assert_close(out, ref, np.float64)
    assert (st["error_bound"] >= st["abs_error"] - 1e-12).all()
    # threshold and top_r: the top_r among the entries over the threshold
    out2, st2 = A.softmax_attention(q, k, v, threshold=thr, top_r=3, return_stats=True)
    assert (st2["entries"] == np.minimum(3, keep.sum(-1))).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_cache_matches_dense(dtype):
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, m=1, n=600, d=4, dtype=dtype)
    cache = A.DecodeCache()
    cache.append(k[:, :, :500], v[:, :, :500])
    for t in range(500, 600):  # one token at a time
        cache.append(k[:, :, t : t + 1], v[:, :, t : t + 1])
        if t % 33 == 0 or t == 599:
            n = t + 1
            out, st = cache.attend(q, mode="relu", bias=0.4)
            assert_close(out, R.relu_attention(q, k[:, :, :n], v[:, :, :n], bias=0.4), dtype)
            out, st = cache.attend(q, mode="softmax", top_r=5)
            assert_close(out, R.topr_softmax_attention(q, k[:, :, :n], v[:, :, :n], top_r=5), dtype)
    assert len(cache) == 600 and cache.shape == (2, 2, 600, 4, 3)
    np.testing.assert_array_equal(cache.keys(), k)
    # a chunk of queries (m > 1) is causal within the cache
    qm = rng.standard_normal((2, 4, 3, 4)).astype(dtype)
    out = cache.attend(qm, mode="relu", bias=0.2, return_stats=False)
    assert_close(out, R.relu_attention(qm, k, v, bias=0.2, causal=True), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_cache_tree_adds_subtrees_from_attached_values(dtype):
    """A tree index gets the values attached (node sums); steps with alpha 1 and 2, appends one
    token at a time (new blocks get node sums too) and a chunk (re-chosen for auto)."""
    rng = np.random.default_rng(11)
    q, k, v = qkv(rng, m=1, n=6000, d=3, dtype=dtype)
    for kind in ("partition_tree", "auto"):
        cache = A.DecodeCache(kind=kind).append(k[:, :, :3000], v[:, :, :3000])
        index = cache._heads[0][0].blocks[0][1]
        assert index.has_values == index.node_sums and (kind == "auto" or index.has_values)
        for n in (3000, 3001, 3300, 6000):
            cache.append(k[:, :, len(cache) : n], v[:, :, len(cache) : n])
            for alpha in (1, 2):
                out = cache.attend(q, mode="relu", bias=0.3, alpha=alpha, return_stats=False)
                assert_close(out, R.relu_attention(q, k[:, :, :n], v[:, :, :n], bias=0.3, alpha=alpha), dtype)


def test_decode_cache_rechooses_index_as_it_grows():
    rng = np.random.default_rng(8)
    k = rng.standard_normal((1, 1, 9000, 2))
    v = rng.standard_normal((1, 1, 9000, 2))
    cache = A.DecodeCache()
    cache.append(k[:, :, :10], v[:, :, :10])
    for s in range(10, 9000, 500):
        cache.append(k[:, :, s : s + 500], v[:, :, s : s + 500])
    assert "brute_force" not in repr(cache)  # d = 2: a tree or convex layers once the cache is large
    q = rng.standard_normal((1, 1, 1, 2))
    out = cache.attend(q, mode="relu", bias=1.5, return_stats=False)
    assert_close(out, R.relu_attention(q, k, v, bias=1.5), np.float64)


def test_decode_cache_tells_auto_how_many_keys_a_row_selects():
    rng = np.random.default_rng(9)
    k = rng.standard_normal((1, 1, 10_000, 4))
    v = rng.standard_normal((1, 1, 10_000, 2))
    cache = A.DecodeCache(output_size=123).append(k[:, :, :5000], v[:, :, :5000])
    reason = lambda: cache._heads[0][0].blocks[0][1].reason  # noqa: E731
    assert "reporting 123 points (given output_size)" in reason()
    q = rng.standard_normal((1, 1, 3, 4))
    _, st = cache.attend(q, mode="relu", bias=1.0)
    share = st["entries"].sum() / (3 * 5000)  # non-zeros per row, as a share of the keys
    cache.append(k[:, :, 5000:], v[:, :, 5000:])  # doubled: re-chosen for the share selected
    assert f"reporting {share * 10_000:.0f} points (given output_size)" in reason()


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 2), hkv=st.integers(1, 2), g=st.integers(1, 3), m=st.integers(0, 4),
    n=st.integers(0, 40), d=st.integers(1, 5), dv=st.integers(1, 3), causal=st.booleans(),
    seed=st.integers(0, 2**31), integer=st.booleans(),
)
def test_property_relu_and_softmax(b, hkv, g, m, n, d, dv, causal, seed, integer):
    rng = np.random.default_rng(seed)
    shape_q, shape_k = (b, hkv * g, m, d), (b, hkv, n, d)
    if integer:  # small integers: many exact ties on the boundary and duplicates
        q, k = rng.integers(-2, 3, shape_q).astype(float), rng.integers(-2, 3, shape_k).astype(float)
    else:
        q, k = rng.standard_normal(shape_q), rng.standard_normal(shape_k)
    v = rng.standard_normal((b, hkv, n, dv))
    bias = float(rng.integers(-2, 3))
    out = A.relu_attention(q, k, v, bias=bias, scale=1.0, causal=causal)
    assert_close(out, R.relu_attention(q, k, v, bias=bias, scale=1.0, causal=causal), np.float64)
    r = int(rng.integers(1, n + 2))
    out = A.softmax_attention(q, k, v, top_r=r, causal=causal)
    if not integer:  # with ties the top-r set is defined by position, as in the reference
        assert_close(out, R.topr_softmax_attention(q, k, v, top_r=r, causal=causal), np.float64)


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    q, k, v = qkv(rng, dtype=np.float32)
    out = A.relu_attention(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), bias=0.5)
    assert isinstance(out, np.ndarray)
    assert_close(out, R.relu_attention(q, k, v, bias=0.5), np.float32)


def test_inputs_not_modified_and_noncontiguous():
    rng = np.random.default_rng(10)
    q, k, v = qkv(rng, d=6)
    copies = [x.copy() for x in (q, k, v)]
    kt = np.asfortranarray(k)
    out = A.relu_attention(q[..., ::1], kt, v, bias=0.1)
    assert_close(out, R.relu_attention(q, k, v, bias=0.1), np.float64)
    for x, c in zip((q, k, v), copies):
        np.testing.assert_array_equal(x, c)


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda q, k, v: (q[0], k, v), ValueError, "q must be 4-D"),
        (lambda q, k, v: (q, k[:, :, :, :3], v), ValueError, "head dim"),
        (lambda q, k, v: (q, k, v[:, :, :10]), ValueError, "agree"),
        (lambda q, k, v: (q[:, :3], k, v), ValueError, "must divide"),
        (lambda q, k, v: (q, k[:1], v[:1]), ValueError, "batch"),
        (lambda q, k, v: (q.astype(np.float32), k, v), TypeError, "one dtype"),
        (lambda q, k, v: (q.astype(np.int64), k, v), TypeError, "float32 or float64"),
        (lambda q, k, v: (np.where(q > 1, np.nan, q), k, v), ValueError, "NaN"),
        (lambda q, k, v: (q, np.where(k > 1, np.inf, k), v), ValueError, "NaN or inf"),
    ],
)
def test_bad_inputs(change, exc, match):
    rng = np.random.default_rng(11)
    q, k, v = change(*qkv(rng))
    with pytest.raises(exc, match=match):
        A.relu_attention(q, k, v, bias=0.0)
    with pytest.raises(exc, match=match):
        A.softmax_attention(q, k, v, top_r=2)


def test_bad_parameters():
    rng = np.random.default_rng(12)
    q, k, v = qkv(rng)
    for alpha, exc in [(0, ValueError), (1.5, TypeError), (True, TypeError), (-1, ValueError)]:
        with pytest.raises(exc, match="alpha must be a positive integer"):
            A.relu_attention(q, k, v, bias=0.0, alpha=alpha)
    with pytest.raises(ValueError, match="scale"):
        A.relu_attention(q, k, v, bias=0.0, scale=-1.0)
    with pytest.raises(ValueError, match="bias"):
        A.relu_attention(q, k, v, bias=np.zeros(7))
    with pytest.raises(ValueError, match="bias"):
        A.relu_attention(q, k, v, bias=np.nan)
    with pytest.raises(ValueError, match="top_r"):
        A.softmax_attention(q, k, v, top_r=0)
    with pytest.raises(ValueError, match="return_stats"):
        A.softmax_attention(q, k, v, return_stats="yes")
    with pytest.raises(ValueError, match="mode"):
        A.prefill(q, k, v, mode="linear")
    with pytest.raises(ValueError, match="kind"):
        A.relu_attention(q, k, v, bias=0.0, index="octree")
    cache = A.DecodeCache()
    with pytest.raises(ValueError, match="empty"):
        cache.attend(q, bias=0.0)
    cache.append(k, v)
    with pytest.raises(ValueError, match="do not match"):
        cache.append(k[:, :, :, :2], v)
    with pytest.raises(TypeError, match="dtype"):
        cache.append(k.astype(np.float32), v.astype(np.float32))
    with pytest.raises(ValueError, match="must divide"):
        cache.attend(q[:, :3], bias=0.0)
    with pytest.raises(TypeError, match="bias"):
        cache.attend(q, mode="relu")


def test_empty_inputs():
    rng = np.random.default_rng(13)
    q, k, v = qkv(rng, m=0)
    assert A.relu_attention(q, k, v, bias=0.0).shape == (2, 4, 0, 3)
    q, k, v = qkv(rng, n=0)
    out = A.softmax_attention(q, k, v, top_r=3)
    assert out.shape == (2, 4, 5, 3) and not out.any()


def test_relu_reports_entries_rounding_can_make_positive():
    """Exact <q,k> = -1 < bias = -0.5, but a float64 dot product of (1, 1, 1) and
    (1e16, -1, -1e16) evaluates to 0 in left-to-right order (or -1 in another): a dense
    computation may give this key weight 0.5. Reporting keeps a rounding-size slack below the
    threshold so that such keys are weighed by the same float64 formula, never silently dropped."""
    q = np.ones((1, 1, 1, 3))
    k = np.array([[[[1e16, -1.0, -1e16], [0.0, 0.0, -100.0]]]])
    v = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, st = A.relu_attention(q, k, v, bias=-0.5, scale=1.0, return_stats=True)
    assert st["entries"][0, 0, 0] == 1  # the first key, not the clearly negative second one
    assert np.array_equal(out[0, 0, 0], v[0, 0, 0]) or not out.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_cache_builds_its_index_only_when_a_step_needs_it(dtype):
    """With codes (d >= 16), softmax decoding steps select from the codes, so appends do not
    insert keys into the index; a ReLU step (or prompt rows) inserts every key so far first.
    Every answer matches the dense reference, and a copy made in between answers the same."""
    import copy
    rng = np.random.default_rng(21)
    q, k, v = qkv(rng, b=1, h=4, hkv=1, m=1, n=700, d=32, dv=8, dtype=dtype)
    k[:, :, 650:] *= 4.0  # later keys with larger norms: the scale bound must follow them
    cache = A.DecodeCache().append(k[:, :, :500], v[:, :, :500])
    for n in (501, 520):
        cache.append(k[:, :, len(cache) : n], v[:, :, len(cache) : n])
        out, st = cache.attend(q, mode="softmax", top_r=7)
        assert_close(out, R.topr_softmax_attention(q, k[:, :, :n], v[:, :, :n], top_r=7), dtype)
        assert st["index"] == ["no index + codes"] and "not built yet" in repr(cache)
    out = cache.attend(q, mode="softmax", threshold=0.5, return_stats=False)
    ref = A.softmax_attention(q, k[:, :, :520], v[:, :, :520], threshold=0.5, return_stats=False)  # the index path
    assert_close(out, ref.astype(np.float64), dtype)
    early = copy.deepcopy(cache)
    qm = rng.standard_normal((1, 4, 3, 32)).astype(dtype)  # prompt rows: the index path
    for c in (cache, early):
        out, st = c.attend(qm, mode="relu", bias=0.5)
        assert_close(out, R.relu_attention(qm, k[:, :, :520], v[:, :, :520], bias=0.5, causal=True), dtype)
        assert "not built yet" not in repr(c) and "codes" not in st["index"][0]
    cache.append(k[:, :, 520:], v[:, :, 520:])
    out = cache.attend(q, mode="softmax", top_r=9, return_stats=False)
    assert_close(out, R.topr_softmax_attention(q, k, v, top_r=9), dtype)
    out = cache.attend(q, mode="softmax", top_p=0.9, return_stats=False)
    assert_close(out, A.softmax_attention(q, k, v, top_p=0.9, return_stats=False).astype(np.float64), dtype)
    out = cache.attend(q, mode="relu", bias=0.5, return_stats=False)  # the index catches up
    assert_close(out, R.relu_attention(q, k, v, bias=0.5), dtype)
    assert cache._heads[0][0].n == 700
