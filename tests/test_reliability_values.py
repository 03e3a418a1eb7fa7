"""Issue 18, hostile values: top-k and report where float64 evaluations overflow, the top-k
score every structure reports, builds on degenerate data, sum() with huge powers, and a
hypothesis fuzz of special values (signed zeros, subnormals, values near the dtype's maximum)
against the exact reference, also after insert/remove, save/load and pickle."""
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exact_reference as ref
import hsrgeom

BIG = 1.7e308

# every structure, and the dimensions it takes (None: any)
MAKERS = {
    "brute_force": (lambda x: hsrgeom.BruteForce(x), None),
    "quantized_scan": (lambda x: hsrgeom.QuantizedScan(x), None),
    "tree": (lambda x: hsrgeom.PartitionTree(x, leaf_size=2), None),
    "tree_pca": (lambda x: hsrgeom.PartitionTree(x, leaf_size=2, split="pca"), None),
    "simplicial": (lambda x: hsrgeom.SimplicialPartitionTree(x, r=4, leaf_size=2), None),
    "convex_layers": (lambda x: hsrgeom.ConvexLayers(x), 2),
    "convex_layers_partial": (lambda x: hsrgeom.ConvexLayers(x, max_layers=2), 2),
    "convex_layers3": (lambda x: hsrgeom.ConvexLayers3(x), 3),
    "convex_layers3_partial": (lambda x: hsrgeom.ConvexLayers3(x, max_layers=1), 3),
    "shallow_cutting3": (lambda x: hsrgeom.ShallowCutting3(x, grid=2, max_depth=8), 3),
}
# the same, as source for a subprocess (a crash there fails the test, not the suite)
MAKER_SRC = {
    "brute_force": "hsrgeom.BruteForce(x)",
    "quantized_scan": "hsrgeom.QuantizedScan(x)",
    "tree": "hsrgeom.PartitionTree(x, leaf_size=2)",
    "tree_pca": "hsrgeom.PartitionTree(x, leaf_size=2, split='pca')",
    "simplicial": "hsrgeom.SimplicialPartitionTree(x, r=4, leaf_size=2)",
    "convex_layers": "hsrgeom.ConvexLayers(x)",
    "convex_layers_partial": "hsrgeom.ConvexLayers(x, max_layers=2)",
    "convex_layers3": "hsrgeom.ConvexLayers3(x)",
    "convex_layers3_partial": "hsrgeom.ConvexLayers3(x, max_layers=1)",
    "shallow_cutting3": "hsrgeom.ShallowCutting3(x, grid=2, max_depth=8)",
}


def dims_of(name):
    d = MAKERS[name][1]
    return [d] if d else [2, 3]


def f64_score(q, x):
    """topk's documented score: q_0 x_0 + q_1 x_1 + ... in float64, left to right."""
    s = 0.0
    for qi, xi in zip(np.asarray(q, np.float64).tolist(), np.asarray(x, np.float64).tolist()):
        s += qi * xi
    return s


def check_topk_exact(index, pts, q, k, live=None):
    """ids equal the exact reference's, scores the float64 left-to-right evaluation."""
    scores, ids = index.topk(q, k)
    qd = np.asarray(q).astype(index.dtype)
    live = np.arange(len(pts)) if live is None else live
    for j in range(len(qd)):
        want = live[ref.topk(pts[live], qd[j], k)]
        np.testing.assert_array_equal(ids[j], want, err_msg=f"query {j}")
        np.testing.assert_array_equal(scores[j], [f64_score(qd[j], pts[i]) for i in ids[j]])


def run_isolated(code):
    """Runs code in a fresh interpreter (a segfault there must not take the suite down)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] + sys.path))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


# ---- item 1: overflowed candidates in top-k ---------------------------------------------------
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_topk_overflowing_scores_do_not_crash(name):
    """The reproducer (one point, a score of -3.4e308 that overflows) segfaulted ConvexLayers;
    30 points near +-1.7e308 returned heap addresses as ids. Run in a subprocess: every
    structure must return the exact answer and the float64 score (-inf)."""
    d = dims_of(name)[0]
    code = f"""
import numpy as np, hsrgeom, exact_reference as ref
d = {d}
x = np.zeros((1, d)); x[0, 1] = 2.0
q = np.zeros((1, d)); q[0, 1] = -1.7e308
s, i = ({MAKER_SRC[name]}).topk(q, 1)
assert i.tolist() == [[0]] and s.tolist() == [[-np.inf]], (s, i)
rng = np.random.default_rng(1)
x = rng.choice([-1.0, 1.0], (30, d)) * 1.7e308 * (1 - rng.random((30, d)) * 1e-3)
idx = {MAKER_SRC[name]}
q = np.vstack([rng.standard_normal((5, d)), np.eye(d), -np.eye(d), np.full((1, d), 1.7e308)])
for k in (1, 5, 30):
    s, i = idx.topk(q, k)
    for j in range(len(q)):
        assert i[j].tolist() == ref.topk(x, q[j], k).tolist(), (k, j, i[j])
print("ok")
"""
    r = run_isolated(code)
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_topk_scores_agree_across_structures(name, dtype):
    """Item 9: a score that overflows is +-inf (the float64 evaluation) in every structure, as in
    BruteForce (the trees and ConvexLayers3 returned 0.0)."""
    big = float(np.finfo(dtype).max) * 0.9
    for d in dims_of(name):
        rng = np.random.default_rng(d)
        pts = rng.standard_normal((40, d)).astype(dtype)
        pts[:4] = np.sign(rng.standard_normal((4, d))) * big  # their scores overflow in float64
        q = np.vstack([rng.standard_normal((3, d)) * 1e300, np.full((1, d), 1e300), np.full((1, d), -1e300)])
        q = q if dtype == np.float64 else np.clip(q, -big, big)
        index = MAKERS[name][0](pts)
        check_topk_exact(index, pts, q, 6)
        bf_scores, bf_ids = hsrgeom.BruteForce(pts).topk(q, 6)
        scores, ids = index.topk(q, 6)
        np.testing.assert_array_equal(ids, bf_ids)
        np.testing.assert_array_equal(scores, bf_scores)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_report_with_overflowing_products(name):
    """report/count/empty stay exact where <a, x> overflows in float64 (also with offsets near
    the largest double)."""
    for d in dims_of(name):
        rng = np.random.default_rng(3 + d)
        pts = rng.standard_normal((50, d))
        pts[:10] = rng.uniform(-1, 1, (10, d)) * BIG
        index = MAKERS[name][0](pts)
        a = np.vstack([rng.uniform(-1, 1, (4, d)) * BIG, np.eye(d)])
        for b in (-BIG, -1.0, 0.0, 5e-324, BIG):
            res, cnt, emp = index.report(a, b), index.count(a, b), index.empty(a, b)
            for j in range(len(a)):
                want = ref.report(pts, a[j], b)
                np.testing.assert_array_equal(res[j], want)
                assert cnt[j] == len(want) and emp[j] == (len(want) == 0)


# ---- item 12: degenerate builds -----------------------------------------------------------------
DEGENERATE_2D = {
    "identical": lambda n: np.tile([[0.25, -3.0]], (n, 1)),
    "collinear": lambda n: np.c_[np.arange(n, dtype=float), 3.0 * np.arange(n) - 7],
    "two_locations": lambda n: np.tile([[0.0, 0.0], [1.0, 2.0]], (n // 2, 1)),
    "three_locations": lambda n: np.tile([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], (n // 3 + 1, 1))[:n],
}


def check_degenerate(index, pts):
    """report and topk against numpy: the points are dyadic with few bits and the normals small
    integers, so float64 products and sums are exact (the Fraction reference is slow on
    20 000 tied points)."""
    rng = np.random.default_rng(0)
    d = pts.shape[1]
    a = np.vstack([rng.integers(-3, 4, (4, d)), np.eye(d, dtype=int)]).astype(float)
    a = a[np.abs(a).sum(axis=1) > 0]
    s = pts @ a.T
    for b in np.quantile(s, [0.0, 0.5, 1.0], axis=0, method="nearest"):
        res = index.report(a, b)
        for j in range(len(a)):
            np.testing.assert_array_equal(res[j], np.flatnonzero(s[:, j] >= b[j]))
    _, ids = index.topk(a, 5)
    for j in range(len(a)):
        np.testing.assert_array_equal(ids[j], np.lexsort((np.arange(len(pts)), -s[:, j]))[:5])


@pytest.mark.parametrize("case", sorted(DEGENERATE_2D))
def test_convex_layers_degenerate_build_is_fast(case):
    """Layers of one or a few points each made the peel O(n^2) (16 000 identical points: 78 s);
    the peel stops when it stalls and the partial peel's tree answers the rest."""
    pts = DEGENERATE_2D[case](20_000)
    t = time.perf_counter()
    index = hsrgeom.ConvexLayers(pts)
    assert time.perf_counter() - t < 10
    assert index.peeled == index.layer_sizes().sum() < len(pts) and index.layers < 100
    check_degenerate(index, pts)
    small = hsrgeom.ConvexLayers(pts[:3000])  # small sets are peeled completely (exact layers)
    assert small.peeled == 3000


@pytest.mark.parametrize("case", sorted(DEGENERATE_2D))
def test_convex_layers_degenerate_200k(case):
    pts = DEGENERATE_2D[case](200_000)
    t = time.perf_counter()
    index = hsrgeom.ConvexLayers(pts)
    assert time.perf_counter() - t < 20
    assert index.count(np.array([[1.0, 1.0]]), -1e300)[0] == len(pts)


def test_auto_on_identical_points_is_fast():
    pts = np.tile([[0.5, 0.5]], (20_000, 1))
    t = time.perf_counter()
    index = hsrgeom.build_index(pts, kind="auto")
    assert time.perf_counter() - t < 10
    check_degenerate(index, pts)


@pytest.mark.parametrize("case", ["identical", "collinear", "coplanar"])
@pytest.mark.parametrize("cls", [hsrgeom.ConvexLayers3, hsrgeom.ShallowCutting3])
def test_3d_structures_on_degenerate_data(case, cls):
    n = 20_000
    t_ = np.arange(n, dtype=float)
    pts = {
        "identical": np.tile([[1.0, 2.0, 3.0]], (n, 1)),
        "collinear": np.c_[t_, 2 * t_ + 1, -t_],
        "coplanar": np.c_[t_ % 97, t_ // 97, np.zeros(n)],
    }[case]
    t = time.perf_counter()
    index = cls(pts)
    assert time.perf_counter() - t < 10
    check_degenerate(index, pts)


def test_auto_skips_the_pca_split_at_large_d():
    """The pca split's build is O(d^3) (an eigenproblem): auto took 278 s at d = 4096."""
    pts = np.random.default_rng(0).standard_normal((5000, 128)).astype(np.float32)
    index = hsrgeom.build_index(pts, kind="auto")
    assert "split=pca" not in index.reason and "split=widest" in index.reason


# ---- item 13: sum with a large power -------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_sum_huge_power_is_fast_and_exact(name):
    d = dims_of(name)[0]
    pts = np.zeros((48, d))
    pts[:, 0] = np.tile([0.0, 0.5, 1.0, 1.5, 2.0, 3.0], 8)
    pts[:, 1] = np.arange(48) % 5  # distinct points (the normal ignores this axis)
    index = MAKERS[name][0](pts)
    a = np.eye(d)[:1]
    t = time.perf_counter()
    s = index.sum(a, 0.0, np.arange(48.0), power=2**31 - 1, shift=np.array([0.0]))
    assert time.perf_counter() - t < 5  # was 2^31 multiplications per point: ~1 min here
    # 0.5^p underflows to 0, 1^p = 1, 1.5^p ... overflow to inf
    assert s.counts[0] == 48 and s.weights[0] == np.inf and s.sums[0] == np.inf
    s = index.sum(a, 0.0, power=1000, shift=np.array([0.0]))
    assert s.weights[0] == np.inf
    s = index.sum(a, 0.0, power=1000, shift=np.array([1.5]))  # 0.5^1000 + 1.5^1000 per copy: finite
    np.testing.assert_allclose(s.weights[0], 8 * (0.5**1000 + 1.5**1000), rtol=1e-12)
    for p in (2, 3, 16, 17, 40):  # within float64 rounding of x**p
        s = index.sum(a, 0.0, power=p, shift=np.array([0.25]))
        want = sum((x - 0.25) ** p for x in pts[:, 0].tolist() if x > 0.25)
        np.testing.assert_allclose(s.weights[0], want, rtol=1e-13)


def test_sum_power_beyond_int_range():
    index = hsrgeom.PartitionTree(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="power"):
        index.sum(np.eye(2), 0.0, power=2**31)
    with pytest.raises(ValueError, match="power"):
        index.sum(np.eye(2), 0.0, power=10**30)


# ---- fuzz: special values against the exact reference --------------------------------------------
def special_values(dtype):
    fi = np.finfo(dtype)
    big, tiny, sub = float(fi.max), float(fi.tiny), float(fi.smallest_subnormal)
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, sub, -sub, 3 * sub, tiny, -tiny, big, -big, big / 2, -big / 3,
            float(dtype(big * 0.999)), 1e-30, -1e30]
    return [float(dtype(v)) for v in vals]


def offsets_strategy():
    return st.one_of(
        st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.0, -1.0, BIG, -BIG, 1e300, -1e300, 3.4e38, -3.4e38, 1e-40]),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def fuzz_case(name, dtype):
    vals = special_values(dtype)
    value = st.one_of(st.sampled_from(vals), st.floats(-4, 4, width=32))
    dims = dims_of(name)

    @st.composite
    def case(draw):
        d = draw(st.sampled_from(dims))
        n = draw(st.integers(1, 12))
        pts = np.array(draw(st.lists(st.lists(value, min_size=d, max_size=d), min_size=n, max_size=n)), dtype=dtype)
        m = draw(st.integers(1, 3))
        a = np.array(draw(st.lists(st.lists(value, min_size=d, max_size=d), min_size=m, max_size=m)), dtype=dtype)
        b = np.array(draw(st.lists(offsets_strategy(), min_size=m, max_size=m)))
        extra = np.array(draw(st.lists(st.lists(value, min_size=d, max_size=d), min_size=1, max_size=4)), dtype=dtype)
        k = draw(st.integers(0, n))
        return pts, a, b, extra, k

    return case()


def check_all(index, pts, a, b, k, live):
    """report/count/empty/topk/sum of index (holding pts[live], ids = positions) vs the reference."""
    res, cnt, emp = index.report(a, b), index.count(a, b), index.empty(a, b)
    sm = index.sum(a, b)
    for j in range(len(a)):
        want = live[ref.report(pts[live], a[j], b[j])]
        np.testing.assert_array_equal(res[j], want, err_msg=f"report {j}")
        assert cnt[j] == len(want) and emp[j] == (len(want) == 0) and sm.counts[j] == len(want)
    check_topk_exact(index, pts, a, min(k, len(live)), live)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_fuzz_special_values(name, dtype):
    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzz_case(name, dtype))
    def run(c):
        pts, a, b, extra, k = c
        index = MAKERS[name][0](pts)
        live = np.arange(len(pts))
        check_all(index, pts, a, b, k, live)
        # round trips through pickle and a file
        check_all(pickle.loads(pickle.dumps(index)), pts, a, b, k, live)
        with tempfile.TemporaryDirectory() as tmp:
            index.save(os.path.join(tmp, "i.hsr"))
            check_all(hsrgeom.load(os.path.join(tmp, "i.hsr")), pts, a, b, k, live)
        # insert / remove (the logarithmic method's blocks and tail)
        new = index.insert(extra)
        allp = np.vstack([pts, extra])
        assert new.tolist() == list(range(len(pts), len(allp)))
        # (an index with every point removed: test_arguments.test_topk_zero_after_removing_everything)
        gone = np.array([0, len(allp) - 1] if len(allp) >= 3 else [0])
        index.remove(gone)
        live = np.setdiff1d(np.arange(len(allp)), gone)
        check_all(index, allp, a, b, k, live)
        check_all(pickle.loads(pickle.dumps(index)), allp, a, b, k, live)

    run()
