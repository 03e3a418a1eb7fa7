"""The trees' leaf codes (cpp/include/hsrgeom/leaf_codes.hpp, d >= 4): a leaf's points as 8-bit
codes around its center decide most of a boundary leaf; the rest are decided on their rows.
Here the cases where a wrong bound would show: points on the hyperplane, leaves of tiny extent
far from the origin (the rounding of <a, m> dominates), extents at the limits of the codes,
normals of wide dynamic range, d up to 1024 (coarse integer normals), against the exact
reference, for report, count and sum."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exact_reference as ref
import hsrgeom

TREES = {
    "tree": lambda x, ls: hsrgeom.PartitionTree(x, leaf_size=ls),
    "tree_pca": lambda x, ls: hsrgeom.PartitionTree(x, leaf_size=ls, split="pca"),
    "simplicial": lambda x, ls: hsrgeom.SimplicialPartitionTree(x, r=4, leaf_size=ls),
}


def check(index, x, normals, offsets):
    normals = np.asarray(normals, dtype=x.dtype)
    got = index.report(normals, offsets)
    counts = index.count(normals, offsets)
    sums = index.sum(normals, offsets, np.arange(len(x), dtype=np.float64)[:, None])  # sums of ids
    for j, (a, b) in enumerate(zip(normals, offsets)):
        want = ref.report(x, a, b)
        np.testing.assert_array_equal(got[j], want, err_msg=f"query {j}")
        assert counts[j] == len(want)
        assert sums.counts[j] == len(want) and sums.sums[j, 0] == want.sum()


def hyperplane_queries(x, rng, m):
    """Normals with small integer entries and offsets at points' exact values: ties."""
    d = x.shape[1]
    a = rng.integers(-3, 4, size=(m, d)).astype(np.float64)
    a[np.all(a == 0, axis=1), 0] = 1
    pick = rng.integers(0, len(x), size=m)
    b = np.einsum("ij,ij->i", a, x[pick].astype(np.float64))
    return a, b


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("d", [4, 7, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_on_integer_grid(name, d, dtype):
    # integer points: <a, x> is exact in float64, many points lie on each hyperplane
    rng = np.random.default_rng(d)
    x = rng.integers(-4, 5, size=(3000, d)).astype(dtype)
    a, b = hyperplane_queries(x, rng, 40)
    for ls in (4, 128):
        check(TREES[name](x, ls), x, a, b)


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("offset,spread", [(1e8, 1e-7), (1e15, 1.0), (-3e5, 1e-9), (0.0, 1e-250)])
def test_tiny_leaves_far_from_the_origin(name, offset, spread):
    # float64: leaves whose extent is ~1e-16 of their distance from 0; offsets between points
    rng = np.random.default_rng(1)
    d = 6
    x = offset + spread * rng.standard_normal((4000, d))
    a = rng.standard_normal((30, d))
    proj = x @ a.T
    b = np.array([np.sort(proj[:, j])[len(x) // 2 + j] for j in range(30)])  # at a point's rounded value
    check(TREES[name](x, 64), x, a, b)


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("scale", [1e-282, 1e-279, 1e279, 1e282, 1e300])
def test_extents_at_the_codes_limits(name, scale):
    rng = np.random.default_rng(2)
    x = scale * rng.standard_normal((2000, 5))
    a = rng.standard_normal((20, 5))
    with np.errstate(over="ignore", invalid="ignore"):
        b = np.nan_to_num(np.median(x @ a.T, axis=0), posinf=1e308, neginf=-1e308)
    check(TREES[name](x, 32), x, a, b)


@pytest.mark.parametrize("name", TREES)
def test_normals_of_wide_range(name):
    rng = np.random.default_rng(3)
    d = 8
    x = rng.standard_normal((3000, d))
    a = rng.standard_normal((12, d))
    a[0, 1:] = 1e-300  # one coordinate dominates: the others round to 0 in the integer normal
    a[1, :] = 0.0
    a[2, 3] = 1e300
    a[3, ::2] = 1e-200
    a[4:8] *= 10.0 ** rng.integers(-150, 150, size=(4, d))
    with np.errstate(over="ignore", invalid="ignore"):
        b = np.nan_to_num(np.median(x @ a.T, axis=0))
    b[1] = 0.0
    check(TREES[name](x, 64), x, a, b)


@pytest.mark.parametrize("d", [64, 1024])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_d(d, dtype):
    # at d = 1024 the integer normal has |q_k| <= 16: the codes decide far fewer points
    rng = np.random.default_rng(d)
    x = rng.standard_normal((1500, d)).astype(dtype)
    a = rng.standard_normal((10, d)).astype(dtype)
    proj = x.astype(np.float64) @ a.T.astype(np.float64)
    b = np.sort(proj, axis=0)[-50]
    check(hsrgeom.PartitionTree(x, leaf_size=128), x, a, b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    d=st.integers(4, 9),
    n=st.integers(1, 300),
    ls=st.sampled_from([1, 3, 16, 64, 200]),
    exp=st.integers(-30, 30),
    grid=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    name=st.sampled_from(sorted(TREES)),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_fuzz_against_exact(d, n, ls, exp, grid, seed, name, dtype):
    rng = np.random.default_rng(seed)
    if grid:  # duplicates and ties
        x = (rng.integers(-2, 3, size=(n, d)) * 2.0**exp).astype(dtype)
    else:
        x = (rng.standard_normal((n, d)) * 2.0**exp + rng.standard_normal(d) * 2.0 ** (exp + 20)).astype(dtype)
    a, b = hyperplane_queries(x, rng, 8)
    check(TREES[name](x, ls), x, a, b)


@pytest.mark.parametrize("d", [5, 8, 9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_dot_kernel_gives_the_same_answer(monkeypatch, d, dtype):
    # the leaves' dots use QuantizedScan's kernels (HSRGEOM_SCAN_KERNEL, read at build): exact
    # int32 dots, so every kernel must give the same sets and the same exact checks; odd d pads a
    # coordinate pair, leaf_size 37 pads the last 16-point block of each leaf
    rng = np.random.default_rng(d)
    x = rng.integers(-6, 7, size=(2500, d)).astype(dtype) + rng.random((2500, d)).astype(dtype) * 0.5
    a, b = hyperplane_queries(x, rng, 30)
    a = a.astype(dtype)
    want = [ref.report(x, a[j], b[j]) for j in range(len(b))]
    exact = None
    for kernel in ["scalar", "sse2", "avx2", "avx512"]:
        monkeypatch.setenv("HSRGEOM_SCAN_KERNEL", kernel)
        tree = hsrgeom.PartitionTree(x, leaf_size=37)
        got = tree.report(a, b)
        for j in range(len(b)):
            np.testing.assert_array_equal(got[j], want[j], err_msg=f"{kernel}, query {j}")
        if exact is None:
            exact = tree.stats.exact_checks.copy()
        np.testing.assert_array_equal(tree.stats.exact_checks, exact, err_msg=kernel)
