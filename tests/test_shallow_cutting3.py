"""ShallowCutting3 (d = 3) against BruteForce and the exact reference: ties at the grid
directions' levels, degenerate inputs, both answering paths (conflict list and tree)."""
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hsrgeom
from test_convex_layers3 import against_bruteforce, cases, check_reports_and_topk
from test_structures import check, check_small_integer_set, quantile_offsets


def grid_directions(grid):
    """Every grid direction of a cube map with `grid` squares per face side (the cutting's
    vertices: a query along one of them meets its levels' bounds with no interpolation)."""
    t = -1 + 2 * np.arange(grid + 1) / grid
    out = []
    for axis in range(3):
        for sign in (1.0, -1.0):
            for u in t:
                for v in t:
                    c = np.zeros(3)
                    c[axis], c[(axis + 1) % 3], c[(axis + 2) % 3] = sign, u, v
                    out.append(c)
    return np.array(out)


def level_offsets(pts, normals, depths):
    """Offsets exactly at the values ranked k_j - 1, k_j, k_j + 1 (ties with the bounds the
    cutting keeps), cycling over the depths, and one ulp on either side."""
    proj = np.sort(pts.astype(np.float64) @ normals.T, axis=0)[::-1]
    n = len(pts)
    out = np.empty(len(normals))
    for j in range(len(normals)):
        k = int(depths[j % len(depths)]) + (j // len(depths)) % 3 - 1
        b = proj[min(max(k, 0), n - 1), j]
        out[j] = [b, np.nextafter(b, np.inf), np.nextafter(b, -np.inf)][(j // 7) % 3]
    return out


@pytest.mark.parametrize("grid", [1, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 9, 40, 1000])
def test_cases(dtype, rng, n, grid):
    for name, pts in cases(rng, n):
        pts = pts.astype(dtype)
        index = hsrgeom.ShallowCutting3(pts, grid=grid, max_depth=64)
        normals = np.r_[rng.standard_normal((8, 3)), rng.integers(-2, 3, (4, 3)), grid_directions(grid)[::3]]
        if n:
            offsets = quantile_offsets(pts, normals, rng.random(len(normals)) ** 3)
            offsets[8:12] = np.round(offsets[8:12])  # integer planes through grid points
            if index.levels:
                offsets[12:] = level_offsets(pts, normals[12:], index.depths())
        else:
            offsets = np.zeros(len(normals))
        check_reports_and_topk(index, pts, normals, offsets)


def test_ties_at_the_levels(dtype, rng):
    # integer points: many share each grid direction's k_j-th value; a query along that
    # direction with the offset at that value must report all the tied points
    pts = rng.integers(-6, 7, (3000, 3)).astype(dtype)
    index = hsrgeom.ShallowCutting3(pts, grid=4, max_depth=400, max_candidates=10**6)
    assert index.levels > 5
    normals = grid_directions(4)
    offsets = level_offsets(pts, normals, index.depths())
    check(index, pts, normals, offsets)
    # the cutting answered most of them (the tree alone tests more points)
    assert (index.stats.points_tested < 4 * index.stats.points_reported + 200).mean() > 0.5


def test_lists_answer_shallow_queries(rng):
    for pts in (rng.random((20_000, 3)), rng.standard_normal((20_000, 3)).astype(np.float32)):
        index = hsrgeom.ShallowCutting3(pts, grid=8, max_candidates=10 * len(pts))
        tree_only = hsrgeom.ShallowCutting3(pts, grid=8, max_candidates=0)
        assert index.levels > 10 and tree_only.levels == 0
        assert index.candidates <= 10 * len(pts)
        assert list(index.depths()) == sorted(set(index.depths())) and index.depths()[0] == 8
        normals = rng.standard_normal((200, 3))
        offsets = quantile_offsets(pts, normals, np.geomspace(1e-4, 0.5, 200))
        against_bruteforce(index, pts, normals, offsets, k=20)
        shallow = quantile_offsets(pts, normals, np.full(200, 0.005))  # 100 points each
        index.report(normals, shallow)
        tested = index.stats.points_tested.mean()
        assert tested < 2.5 * index.stats.points_reported.mean()
        tree_only.report(normals, shallow)
        assert tested < tree_only.stats.points_tested.mean()
        many = rng.standard_normal((3000, 3))  # enough work for two threads
        off = quantile_offsets(pts, many, np.full(3000, 0.003))
        assert index.report(many, off, n_threads=1) == index.report(many, off, n_threads=2)



def test_default_candidate_budget():
    """max_candidates defaults to 12 n up to 2*10^6 points and 6 n above (2 n starved the levels
    for a few hundred outputs at ~10^6 points); the value is stored, so a saved index rebuilds
    with the budget it was built with."""
    assert hsrgeom.ShallowCutting3.default_max_candidates(2_000_000) == 24_000_000
    assert hsrgeom.ShallowCutting3.default_max_candidates(2_000_001) == 12_000_006
    x = np.random.default_rng(0).random((30_000, 3))
    index = hsrgeom.ShallowCutting3(x)
    assert index.max_candidates == 12 * len(x) and index._impl.max_depth > 444  # (2 n: 444)
    clone = pickle.loads(pickle.dumps(index))
    assert clone.max_candidates == index.max_candidates and clone.to_bytes() == index.to_bytes()


def test_parameters():
    x = np.random.default_rng(0).random((100, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        hsrgeom.ShallowCutting3(np.zeros((10, 2)))
    for g in (0, 3, 512):
        with pytest.raises(ValueError, match="grid"):
            hsrgeom.ShallowCutting3(x, grid=g)
    with pytest.raises(TypeError, match="grid"):
        hsrgeom.ShallowCutting3(x, grid=2.0)
    with pytest.raises(ValueError, match="max_depth"):
        hsrgeom.ShallowCutting3(x, max_depth=-1)
    with pytest.raises(ValueError, match="max_candidates"):
        hsrgeom.ShallowCutting3(x, max_candidates=-1)
    assert hsrgeom.ShallowCutting3(x, max_depth=7).levels == 0  # below the first depth (8)
    assert [hsrgeom.ShallowCutting3.default_grid(n) for n in (10**4, 10**6, 10**7)] == [1, 16, 32]
    index = hsrgeom.build_index(x, kind="shallow_cutting3")
    assert index.kind == "shallow_cutting3" and isinstance(index, hsrgeom.ShallowCutting3)
    r = repr(hsrgeom.ShallowCutting3(x, grid=2))
    assert "n=100" in r and "grid=2" in r and "levels=" in r and "float32" in r and "memory=" in r


def test_updates_and_persistence(rng, tmp_path):
    pts = rng.integers(-9, 10, (500, 3)).astype(float)
    index = hsrgeom.ShallowCutting3(pts, grid=2, max_depth=100, max_candidates=3000)
    index.insert(rng.standard_normal((400, 3)))
    index.remove(np.arange(0, 900, 3))
    index.save(tmp_path / "sc3.hsr")
    a = rng.standard_normal((5, 3))
    for clone in (hsrgeom.load(tmp_path / "sc3.hsr"), pickle.loads(pickle.dumps(index))):
        assert type(clone) is hsrgeom.ShallowCutting3
        assert (clone.grid, clone.max_depth, clone.max_candidates) == (2, 100, 3000)
        assert clone.report(a, 0.5) == index.report(a, 0.5)
        np.testing.assert_array_equal(clone.topk(a, 6)[1], index.topk(a, 6)[1])


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(0, 50), grid=st.sampled_from([1, 2]))
def test_property(data, n, grid):
    check_small_integer_set(data, n, 3, lambda p: hsrgeom.ShallowCutting3(p, grid=grid, max_depth=20), coord=2)


@pytest.mark.parametrize("scale", [1e150, 1e-150, 5e-324 * 2**40, 1e300])
def test_extreme_magnitudes(rng, scale):
    # the bounds' products overflow or underflow here: certificates must fail safe
    pts = rng.standard_normal((400, 3)) * scale
    pts[:50] = np.round(pts[:50] / scale) * scale  # duplicates among them
    normals = np.r_[rng.standard_normal((6, 3)) * (1e150 if 1 < scale < 1e200 else 1.0), grid_directions(2)[::5]]
    offsets = quantile_offsets(pts, normals, np.r_[[0.01, 0.1, 0.5, 0.9, 0.0, 1.0], np.full(len(normals) - 6, 0.02)])
    index = hsrgeom.ShallowCutting3(pts, grid=2, max_depth=64)
    check(index, pts, normals, offsets)


def test_massive_ties_keep_the_build_linear(rng):
    # each direction's K-th value is shared by thousands of points (0/1 coordinates: 8
    # distinct points) or all of them: a direction with more than 8 K tied points keeps no
    # list (an exact top-K with a tie-break would visit every tied point at every direction)
    for pts in (np.tile([1.0, 2.0, 3.0], (60_000, 1)), rng.integers(0, 2, (60_000, 3)).astype(float)):
        index = hsrgeom.ShallowCutting3(pts, grid=8)
        if len(np.unique(pts, axis=0)) == 1:
            assert index.levels == 0 and index.candidates == 0
        normals = np.r_[rng.standard_normal((20, 3)), grid_directions(8)[::11]]
        offsets = quantile_offsets(pts, normals, rng.random(len(normals)))
        assert index.report(normals, offsets) == hsrgeom.BruteForce(pts).report(normals, offsets)


# ---- tiers: levels deeper than fine_depth on coarser grids ----------------------------------------
def tiered(pts, **kw):
    """grid 8 up to depth 24, grid 4 up to 96, grid 2 up to 384, grid 1 up to max_depth."""
    return hsrgeom.ShallowCutting3(pts, **{"grid": 8, "fine_depth": 24, "max_depth": 1500,
                                           "max_candidates": 60 * len(pts), **kw})


def tier_cases(rng, n):
    yield "uniform", rng.random((n, 3))
    yield "gaussian", rng.standard_normal((n, 3))
    centers = rng.standard_normal((5, 3)) * 10
    yield "clustered", centers[rng.integers(0, 5, n)] + 0.01 * rng.standard_normal((n, 3))
    yield "duplicates", rng.standard_normal((n // 10, 3))[rng.integers(0, n // 10, n)]
    basis = np.linalg.qr(rng.standard_normal((3, 2)))[0]
    yield "coplanar", rng.standard_normal((n, 2)) @ basis.T + 1.0
    yield "integer_ties", rng.integers(-6, 7, (n, 3)).astype(float)


def test_tiers_layout():
    pts = np.random.default_rng(0).random((4000, 3))
    index = tiered(pts)
    depths, grids = index.depths(), index.level_grids()
    assert list(depths) == sorted(set(depths)) and len(grids) == len(depths) == index.levels
    assert sorted(set(grids), reverse=True) == [8, 4, 2, 1] and list(grids) == sorted(grids, reverse=True)
    for g, top in ((8, 24), (4, 96), (2, 384), (1, 1500)):
        assert depths[grids == g].max() <= top < (depths[grids == g // 2].min() if g > 1 else 1501)
    # the point of the tiers: under the same budget one grid stops far shallower
    plain = hsrgeom.ShallowCutting3(pts, grid=8, max_depth=1500, max_candidates=60 * len(pts))
    assert set(plain.level_grids()) == {8} and plain.fine_depth == 1500
    assert depths[-1] == 1355 and plain.depths()[-1] < 300
    np.testing.assert_array_equal(plain.depths(), depths[: plain.levels])
    # the budget counts all tiers; the deepest levels go first
    small = tiered(pts, max_candidates=index.candidates // 2)
    assert 0 < small.candidates <= index.candidates // 2 and small.depths()[-1] < depths[-1]
    np.testing.assert_array_equal(small.depths(), depths[: small.levels])


@pytest.mark.parametrize("n", [3000, 20_000])
def test_tiers_exact(dtype, rng, n):
    for name, pts in tier_cases(rng, n):
        pts = pts.astype(dtype)
        index = tiered(pts)
        # outputs in every tier and beyond the last (tree): 10 .. 3000 points, and the grid
        # directions of each tier's grid at its levels' values (ties and one ulp either side)
        fracs = np.geomspace(10 / n, min(3000 / n, 0.5), 40)
        normals = rng.standard_normal((40, 3))
        offsets = quantile_offsets(pts, normals, fracs)
        for g in (4, 2, 1):
            at = grid_directions(g)[:: max(1, g // 2)]
            depths = index.depths()[index.level_grids() == g]
            if len(depths):
                normals = np.r_[normals, at]
                offsets = np.r_[offsets, level_offsets(pts, at, depths)]
        against_bruteforce(index, pts, normals, offsets)
        check(index, pts, normals[::9], offsets[::9])
        tested, reported = index.stats.points_tested, index.stats.points_reported
        if name in ("uniform", "gaussian"):  # the tiers answer deep queries: lists, not the tree
            deep = (reported > 100) & (reported < 1000)
            assert deep.sum() >= 5 and (tested[deep] < 6 * reported[deep] + 200).all(), name


def test_tiers_against_a_single_grid(rng):
    # same answers as a plain cutting and as the tree alone, on queries of every depth
    pts = rng.standard_normal((30_000, 3)).astype(np.float32)
    normals = rng.standard_normal((300, 3))
    offsets = quantile_offsets(pts, normals, np.geomspace(1e-4, 0.3, 300))
    ref = hsrgeom.ShallowCutting3(pts, grid=8, max_candidates=0).report(normals, offsets)
    deep = tiered(pts, max_depth=5000)
    assert deep.report(normals, offsets) == ref
    assert deep.report(normals, offsets, return_sorted=False).lims.tolist() == ref.lims.tolist()
    many = np.tile(normals, (10, 1))  # enough work for two threads
    assert deep.report(many, np.tile(offsets, 10), n_threads=2) == deep.report(many, np.tile(offsets, 10), n_threads=1)


def test_fine_depth_parameter(tmp_path):
    x = np.random.default_rng(0).random((2000, 3))
    for bad in (-1, 0, 7):
        with pytest.raises(ValueError, match="fine_depth"):
            hsrgeom.ShallowCutting3(x, fine_depth=bad)
    for bad in (2.5, "8", True):
        with pytest.raises(TypeError, match="fine_depth"):
            hsrgeom.ShallowCutting3(x, fine_depth=bad)
    with pytest.raises(ValueError, match="fine_depth"):
        hsrgeom.build_index(x, kind="shallow_cutting3", fine_depth=3)
    assert hsrgeom.ShallowCutting3(x, max_depth=7).fine_depth == 8
    index = hsrgeom.ShallowCutting3(x, grid=4, max_depth=800, fine_depth=50)
    assert "fine_depth=50" in repr(index) and index.fine_depth == 50
    index.save(tmp_path / "t.hsr")
    clone = hsrgeom.load(tmp_path / "t.hsr")
    assert clone.fine_depth == 50 and list(clone.level_grids()) == list(index.level_grids())
    # a file written before fine_depth existed: one grid, as that version built it
    from test_files import crafted
    (tmp_path / "old.hsr").write_bytes(crafted(
        "ShallowCutting3", points=x, params={"grid": 4, "max_depth": 800, "max_candidates": 4000}))
    old = hsrgeom.load(tmp_path / "old.hsr")
    assert old.fine_depth == 800 and set(old.level_grids()) == {4}
    (tmp_path / "bad.hsr").write_bytes(crafted("ShallowCutting3", points=x, params={"grid": 4, "max_depth": 800}))
    with pytest.raises(ValueError, match="params"):  # other missing parameters are still refused
        hsrgeom.load(tmp_path / "bad.hsr")


def test_tiers_dynamic(rng):
    pts = rng.random((3000, 3))
    index = tiered(pts, max_depth=2000)
    bf = hsrgeom.BruteForce(pts)
    for step in range(3):
        new = rng.standard_normal((1500, 3)) * 0.3 + 0.5
        index.insert(new), bf.insert(new)
        gone = rng.choice(index.ids(), 400, replace=False)
        index.remove(gone), bf.remove(gone)
        normals = rng.standard_normal((60, 3))
        offsets = quantile_offsets(bf.points(), normals, np.geomspace(1e-3, 0.3, 60))
        assert index.report(normals, offsets) == bf.report(normals, offsets)
    assert index.fine_depth == 24 and pickle.loads(pickle.dumps(index)).report(normals, offsets) == bf.report(normals, offsets)
