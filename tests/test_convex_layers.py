"""ConvexLayers (d = 2) against the exact reference, incl. degenerate planar inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hsrgeom
from test_structures import check, check_small_integer_set, datasets, quantile_offsets
from test_topk import check_topk


def test_datasets(dtype, rng):
    for name, pts in datasets(rng, 1500, 2, dtype):
        pts = pts.astype(dtype)
        normals = rng.standard_normal((8, 2))
        normals[:3] = rng.integers(-2, 3, (3, 2))  # axis-parallel and zero normals: ties
        offsets = quantile_offsets(pts, normals, [0.0, 1e-3, 0.01, 0.1, 0.5, 0.9, 1.0, 0.3])
        index = hsrgeom.ConvexLayers(pts)
        check(index, pts, normals, offsets)
        for k in (0, 1, 7):
            check_topk(index, pts, normals, k)


def test_collinear_cocircular_and_duplicates(dtype, rng):
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    cases = {
        "line": np.c_[np.arange(300.0), 3 * np.arange(300.0) - 7],
        "circle_with_duplicates": np.tile(np.c_[np.cos(t), np.sin(t)], (5, 1)),
        "square_grid": np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2),
    }
    for name, pts in cases.items():
        pts = pts.astype(dtype)
        normals = np.vstack([rng.standard_normal((6, 2)), [[1, 0], [0, 1], [1, 1], [1, -3]]])
        offsets = quantile_offsets(pts, normals, np.linspace(0, 1, 10))
        index = hsrgeom.ConvexLayers(pts)
        check(index, pts, normals, offsets)
        check_topk(index, pts, normals, 5)


def test_layers_large_uniform(rng):
    pts = rng.random((200_000, 2))
    index = hsrgeom.ConvexLayers(pts)
    assert 1000 < index.layers < 5000
    normals = rng.standard_normal((20, 2))
    offsets = quantile_offsets(pts, normals, np.full(20, 1e-3))
    assert index.report(normals, offsets) == hsrgeom.BruteForce(pts).report(normals, offsets)
    assert index.stats.points_tested.mean() < 3 * index.stats.points_reported.mean() + 100


def peel_reference(pts):
    """Sizes of the onion layers of integer points: a monotone chain in Python integers (exact),
    strictly convex (points inside an edge go to a later layer), one copy of a repeated vertex
    per layer."""
    live = sorted(set(map(tuple, pts.tolist())), key=lambda p: (p[0], p[1]))
    copies = {}
    for p in map(tuple, pts.tolist()):
        copies[p] = copies.get(p, 0) + 1

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    sizes = []
    while live:
        if len(live) == 1:
            hull = live
        else:
            lower, upper = [], []
            for p in live:
                while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
                    lower.pop()
                lower.append(p)
            for p in reversed(live):
                while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
                    upper.pop()
                upper.append(p)
            hull = lower[:-1] + upper[:-1]
        sizes.append(len(hull))
        for p in hull:
            copies[p] -= 1
        live = [p for p in live if copies[p] > 0]
    return sizes


@pytest.mark.parametrize("case", ["uniform", "gaussian", "grid", "lines"])
def test_layers_are_the_onion_layers(case, rng):
    """The batched peeling (a ring of candidates, many layers per batch) yields exactly the
    layers of one-at-a-time peeling, on data where many layers are peeled per batch and on
    degenerate data (collinear points, duplicates) where batches end early."""
    n = 6000
    if case == "uniform":
        pts = rng.integers(-10**6, 10**6, (n, 2))
    elif case == "gaussian":
        pts = np.round(rng.standard_normal((n, 2)) * 1e5)
    elif case == "grid":
        pts = rng.integers(0, 40, (n, 2))  # ~4 copies of each grid point
    else:
        t = rng.integers(-500, 500, n)
        pts = np.c_[t, (t * 3) % 7 + 2 * (t % 3)]  # points on a few lines
    pts = pts.astype(np.float64)
    index = hsrgeom.ConvexLayers(pts)
    ref = peel_reference(pts.astype(np.int64))
    assert index.layers == len(ref) > 10
    assert index.layer_sizes().tolist() == ref


def test_wrong_dimension():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        hsrgeom.ConvexLayers(np.zeros((10, 3)))
    assert hsrgeom.build_index(np.zeros((10, 2)), kind="convex_layers").kind == "convex_layers"


@pytest.mark.parametrize("max_layers", [None, 3])
def test_updates_and_persistence(max_layers, rng, tmp_path):
    pts = rng.integers(-9, 10, (500, 2)).astype(float)
    index = hsrgeom.ConvexLayers(pts, max_layers=max_layers)
    index.insert(rng.standard_normal((400, 2)))
    index.remove(np.arange(0, 900, 3))
    index.save(tmp_path / "cl.hsr")
    clone = hsrgeom.load(tmp_path / "cl.hsr")
    a = rng.standard_normal((5, 2))
    assert clone.report(a, 0.5) == index.report(a, 0.5)
    assert type(clone) is hsrgeom.ConvexLayers and clone.max_layers == max_layers


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(0, 60))
def test_property(data, n):
    check_small_integer_set(data, n, 2, hsrgeom.ConvexLayers, coord=3)
    check_small_integer_set(data, n, 2, lambda x: hsrgeom.ConvexLayers(x, max_layers=2), coord=3)


def test_normals_one_ulp_from_an_edge_normal(rng):
    # The extreme-vertex search rounds angles; near an edge normal it may start at the wrong
    # endpoint. With the threshold at the true extreme's value, only exact comparisons find it.
    misses = 0
    for trial in range(300):
        pts = rng.integers(-1000, 1001, (40, 2)).astype(float)
        index = hsrgeom.ConvexLayers(pts)
        i, j = rng.choice(40, 2, replace=False)
        d = pts[j] - pts[i]  # exact (small integers)
        a = np.array([d[1], -d[0]])
        k = int(rng.integers(2))
        a[k] = np.nextafter(a[k], rng.choice([-np.inf, np.inf]))
        vals = pts @ a
        b = np.max(vals)  # rounded; the exact reference decides
        b = np.nextafter(b, -np.inf) if trial % 2 else b
        expected = ref_report(pts, a, b)
        got = index.report_one(a, b)
        misses += not np.array_equal(got, expected)
    assert misses == 0


def ref_report(pts, a, b):
    import exact_reference

    return exact_reference.report(pts, a, b)


def shallow_cases(rng, n):
    t = rng.random(n) * 2 * np.pi
    return {
        "uniform": rng.random((n, 2)),
        "gaussian": rng.standard_normal((n, 2)),
        "grid_with_duplicates": rng.integers(-30, 31, (n, 2)).astype(float),
        "integer_circle": np.round(1000 * np.c_[np.cos(t), np.sin(t)]),  # near-cocircular, ties
        "few_lines": np.c_[rng.integers(0, 4, n), 0.0 * t] + np.outer(rng.integers(-50, 51, n), [1.0, 2.0]),
    }


@pytest.mark.parametrize("case", ["uniform", "gaussian", "grid_with_duplicates", "integer_circle", "few_lines"])
def test_shallow_table_is_exact(case, dtype, rng):
    # The table answers shallow queries (offsets near the top of the projections, and on data
    # values: ties on the boundary); the walk (table_layers=0) and the exact reference agree.
    pts = shallow_cases(rng, 4000)[case].astype(dtype)
    normals = np.vstack([rng.standard_normal((14, 2)), rng.integers(-3, 4, (6, 2))])
    vals = pts.astype(np.float64) @ normals.astype(dtype).astype(np.float64).T
    top = -np.sort(-vals, axis=0)
    offsets = top[np.minimum(rng.integers(0, 150, len(normals)), len(pts) - 1), np.arange(len(normals))]
    offsets[::3] = np.nextafter(offsets[::3], np.inf)  # just above a data value
    index = hsrgeom.ConvexLayers(pts)
    walk = hsrgeom.ConvexLayers(pts, table_layers=0)
    assert index.table_layers == 128 and walk.table_layers == 0
    expected = check(index, pts, normals, offsets)
    table_nodes = index.stats.nodes_visited.copy()
    assert walk.report(normals, offsets) == index.report(normals, offsets)
    check_topk(index, pts, normals, 9)
    if case in ("uniform", "gaussian"):  # within the table's layers it answers: a level or two
        walked = walk.stats.nodes_visited  # the layers reached, + 1
        covered = (walked > 4) & (walked - 1 <= index._impl.table_layers)
        assert covered.sum() >= 5 and (table_nodes[covered] <= 3).all(), (table_nodes, walked)
    assert sum(len(e) for e in expected) > 0


@pytest.mark.parametrize("case, dtype", [("uniform", np.float32), ("gaussian", np.float64)])
def test_shallow_table_past_64_levels(case, dtype, rng):
    # A table deeper than 64 levels (200,000 points: the budget of 4 candidates per point
    # allows ~85) has more than one group of eight in its coarse guide; queries reaching layers
    # 65 and deeper are answered by the table (a level or two, not the walk's ~70 layers) and
    # exactly, offsets on data values (ties) and one ulp above them.
    pts = (rng.random((200_000, 2)) if case == "uniform" else rng.standard_normal((200_000, 2))).astype(dtype)
    index, walk = hsrgeom.ConvexLayers(pts), hsrgeom.ConvexLayers(pts, table_layers=0)
    assert index._impl.table_layers > 64
    normals = rng.standard_normal((40, 2))
    vals = pts.astype(np.float64) @ normals.astype(dtype).astype(np.float64).T
    offsets = -np.sort(-vals, axis=0)[rng.integers(450, 800, len(normals)), np.arange(len(normals))]  # ~60-90 layers
    offsets[::2] = np.nextafter(offsets[::2], np.inf)
    got = index.report(normals, offsets)
    table_nodes = index.stats.nodes_visited
    assert got == walk.report(normals, offsets) == hsrgeom.BruteForce(pts).report(normals, offsets)
    walked = walk.stats.nodes_visited
    deep = (walked - 1 > 64) & (walked - 1 <= index._impl.table_layers)
    assert deep.sum() >= 3 and (table_nodes[deep] <= 3).all(), (table_nodes, walked)


def test_shallow_table_falls_back_past_its_layers(rng):
    pts = rng.standard_normal((3000, 2))
    normals = rng.standard_normal((30, 2))
    offsets = quantile_offsets(pts, normals, np.linspace(0.0, 0.5, 30))
    for layers in (1, 2, 5):
        index = hsrgeom.ConvexLayers(pts, table_layers=layers)
        check(index, pts, normals, offsets)
    for bad in (-1, 513):
        with pytest.raises(ValueError, match="table_layers"):
            hsrgeom.ConvexLayers(pts, table_layers=bad)


def test_shallow_table_at_its_arc_ends(rng):
    # Normals on the table's arc ends, one ulp either side: the rounded pseudo-angle may pick
    # either arc, and each arc must hold every answer (its ends are widened by a slack). Integer
    # points have edges whose normals are exactly on arc ends (axis-parallel, diagonal).
    for pts in (rng.integers(-200, 201, (3000, 2)).astype(float), rng.random((3000, 2))):
        index = hsrgeom.ConvexLayers(pts)
        m = index._impl.table_directions  # arcs of pseudo-angle 4 / m: quadrant + |y| / (|x| + |y|)
        q, t = np.divmod(4 * np.arange(m) / m, 1)
        normals = np.select([(q == v)[:, None] for v in range(4)],
                            [np.c_[1 - t, t], np.c_[-t, 1 - t], np.c_[t - 1, -t], np.c_[t, t - 1]])
        normals = np.vstack([normals, np.nextafter(normals, np.inf), np.nextafter(normals, -np.inf)])
        vals = pts @ normals.T
        offsets = -np.sort(-vals, axis=0)[rng.integers(0, 40, len(normals)), np.arange(len(normals))]
        assert index.report(normals, offsets) == hsrgeom.BruteForce(pts).report(normals, offsets)
        assert index.stats.nodes_visited.mean() < 1.5  # answered by the table (the walk: ~10 layers)


def test_table_budget(rng, tmp_path):
    # max_candidates caps the table's stored candidates (the levels past it are dropped, and
    # their queries walk); any budget gives the exact sets; it is saved with the index; it must
    # be a non-negative integer.
    pts = rng.random((20_000, 2))
    normals = rng.standard_normal((30, 2))
    offsets = quantile_offsets(pts, normals, np.geomspace(1e-4, 0.05, 30))  # 2-1,000 points
    expected = hsrgeom.BruteForce(pts).report(normals, offsets)
    levels = []
    for budget in (0, 5000, None, 10**6):
        index = hsrgeom.ConvexLayers(pts, max_candidates=budget)
        assert index.report(normals, offsets) == expected
        levels.append(index._impl.table_layers)
    assert levels[0] == 0 and 0 < levels[1] < levels[2] < levels[3], levels
    index.save(tmp_path / "cl.hsr")
    clone = hsrgeom.load(tmp_path / "cl.hsr")
    assert clone.max_candidates == 10**6 and clone._impl.table_layers == levels[3] and "max_candidates=1000000" in repr(clone)
    for bad, err in ((-1, ValueError), (1.5, TypeError), ("10", TypeError)):
        with pytest.raises(err, match="max_candidates"):
            hsrgeom.ConvexLayers(pts, max_candidates=bad)


def test_auto_probes_convex_layers_with_the_budget_at_n(monkeypatch, rng):
    # auto's sample of ConvexLayers gets the table budget of all n points (so that its levels
    # reach the outputs the table at n will hold); the index it builds keeps the default.
    from hsrgeom import _auto

    budgets = []
    per_query = {"BruteForce": 1e-3, "PartitionTree": 1e-5, "ConvexLayers": 1e-7}

    def fake_time(index, a, b, repeat=5, n_threads=1, budget=0.25, warm_up=True):
        if isinstance(index, hsrgeom.ConvexLayers):
            budgets.append((index.n, index.max_candidates))
        index.count(a, b)
        return per_query[type(index).__name__] * (index.n / 1000) ** 0.5

    monkeypatch.setattr(_auto, "_time_queries", fake_time)
    pts = rng.random((60_000, 2))  # more than the probe's sample (50,000)
    index = hsrgeom.build_index(pts, output_size=500)
    assert index.kind == "convex_layers" and index.max_candidates is None
    assert budgets and all(b == 4 * len(pts) and n < len(pts) for n, b in budgets), budgets


def test_shallow_table_persists(rng, tmp_path):
    pts = rng.random((2000, 2))
    index = hsrgeom.ConvexLayers(pts, table_layers=7)
    index.save(tmp_path / "cl.hsr")
    clone = hsrgeom.load(tmp_path / "cl.hsr")
    assert clone.table_layers == 7 and "table_layers=7" in repr(clone)
    a = rng.standard_normal((20, 2))
    assert clone.report(a, 0.9) == index.report(a, 0.9)


@pytest.mark.parametrize("case", ["uniform", "gaussian", "grid_with_duplicates", "integer_circle", "few_lines"])
def test_partial_peel_is_exact(case, dtype, rng):
    # max_layers stops the peel; a PartitionTree over all points answers what the table does
    # not. Shallow and deep offsets, on data values and one ulp above, a zero normal; with the
    # whole table (65 layers), part of it, and none.
    pts = shallow_cases(rng, 3000)[case].astype(dtype)
    normals = np.vstack([rng.standard_normal((14, 2)), rng.integers(-3, 4, (6, 2)), [[0, 0]]])
    vals = pts.astype(np.float64) @ normals.astype(dtype).astype(np.float64).T
    top = -np.sort(-vals, axis=0)
    offsets = top[rng.choice([0, 5, 60, 400, 1500, 2999], len(normals)), np.arange(len(normals))]
    offsets[::3] = np.nextafter(offsets[::3], np.inf)
    offsets[-1] = 0.0  # zero normal: every point
    for max_layers in (0, 1, 5, 65):
        index = hsrgeom.ConvexLayers(pts, max_layers=max_layers)
        assert index.layers <= max_layers and index.peeled == index.layer_sizes().sum()
        assert index.table_layers == 128 and index._impl.table_layers <= max(max_layers - 1, 0)
        check(index, pts, normals, offsets)
        check_topk(index, pts, normals, 9)
        check_topk(index, pts, normals, 500)  # more than the peeled layers hold (max_layers <= 5)
    if case == "uniform":  # the table answered the shallow queries, the tree the others
        assert index.peeled < len(pts)
        index.report(normals, offsets)
        nodes = index.stats.nodes_visited
        assert (nodes <= 3).sum() >= 3 and (nodes > 3).sum() >= 3, nodes


def test_partial_peel_parameters_and_persistence(rng, tmp_path):
    pts = rng.random((3000, 2))
    index = hsrgeom.ConvexLayers(pts, max_layers=10, n_threads=1)
    assert index.layers == 10 and index.peeled < 1000 and "max_layers=10" in repr(index)
    index.save(tmp_path / "cl.hsr")
    clone = hsrgeom.load(tmp_path / "cl.hsr")
    assert clone.max_layers == 10 and clone.peeled == index.peeled
    a = rng.standard_normal((20, 2))
    assert clone.report(a, 0.5) == index.report(a, 0.5)
    full = hsrgeom.ConvexLayers(pts)
    assert full.max_layers is None and full.peeled == len(pts)
    with pytest.raises(ValueError, match="max_layers"):
        hsrgeom.ConvexLayers(pts, max_layers=-1)
    with pytest.raises(TypeError, match="max_layers"):
        hsrgeom.ConvexLayers(pts, max_layers=2.5)
