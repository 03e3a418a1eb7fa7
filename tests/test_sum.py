"""index.sum: counts, weights and weighted value sums over each half-space, against the exact
reference set and float64 sums computed here."""
import numpy as np
import pytest

import hsrgeom
import exact_reference as ref

from conftest import STRUCTURES, structures_for
from test_structures import datasets, quantile_offsets


def expected_sums(points, ids_alive, normals, offsets, values, power, shift):
    """(counts, weights, sums) from the exact reference set; points[i] has id ids_alive[i]."""
    a = np.asarray(normals)
    x = np.asarray(points, dtype=np.float64)
    vals = None if values is None else np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    counts, weights, sums = [], [], []
    for j in range(len(a)):
        loc = ref.report(points, a[j], offsets[j])
        s = x[loc] @ a[j].astype(np.float64)
        w = np.ones(len(loc)) if power == 0 else np.maximum(s - shift[j], 0.0) ** power
        counts.append(len(loc))
        weights.append(w.sum())
        if vals is not None:
            sums.append(w @ vals[ids_alive[loc]] if len(loc) else np.zeros(vals.shape[1]))
    return np.array(counts), np.array(weights), (np.array(sums) if vals is not None else None)


def check_sum(index, points, ids_alive, normals, offsets, values, power, shift=None, attached=False):
    """attached: the index has ``values`` attached; sum with values="attached"."""
    normals = np.asarray(normals).astype(index.dtype)
    sh = offsets if shift is None else shift
    res = index.sum(normals, offsets, "attached" if attached else values, power=power, shift=shift)
    assert isinstance(res, hsrgeom.HalfspaceSums) and len(res) == len(normals)
    c, w, s = expected_sums(points, ids_alive, normals, offsets, values, power, sh)
    np.testing.assert_array_equal(res.counts, c)
    assert res.counts.dtype == np.int64 and res.weights.dtype == np.float64
    # float64 sums in another order; the weights come from float64 scores that may differ from
    # numpy's by ~d ulps of sum |a_i x_i|
    np.testing.assert_allclose(res.weights, w, rtol=1e-9, atol=1e-9 * (1 + np.abs(w).max(initial=0)))
    if values is None:
        assert res.sums is None
    else:
        s = s if np.ndim(values) == 2 else s[:, 0]
        assert res.sums.shape == s.shape and res.sums.dtype == np.float64
        np.testing.assert_allclose(res.sums, s, rtol=1e-9, atol=1e-9 * (1 + np.abs(s).max(initial=0)))
    np.testing.assert_array_equal(index.stats.points_reported, c)
    return res


@pytest.mark.parametrize("power", [0, 1, 2, 3])
def test_sum_matches_reference(make_index, dtype, rng, power):
    d = 3
    for name, pts in datasets(rng, 1500, d, dtype):
        pts = pts.astype(dtype)
        index = make_index(pts)
        normals = rng.standard_normal((5, d))
        offsets = quantile_offsets(pts, normals, [0.0, 0.01, 0.2, 0.6, 1.0])
        offsets[-1] -= 1.0  # below every point (whatever the rounding of the normals)
        values = rng.standard_normal((len(pts), 4)).astype(dtype)
        res = check_sum(index, pts, np.arange(len(pts)), normals, offsets, values, power)
        assert res.counts[-1] == len(pts), name  # the last half-space holds every point
        shift = offsets - 0.5
        check_sum(index, pts, np.arange(len(pts)), normals, offsets, values[:, 0], power, shift)
        check_sum(index, pts, np.arange(len(pts)), normals, offsets, None, power, shift)


@pytest.mark.parametrize("d", [2, 8, 64])
def test_sum_other_dimensions(dtype, rng, d):
    pts = rng.standard_normal((3000, d)).astype(dtype)
    normals = rng.standard_normal((4, d))
    offsets = quantile_offsets(pts, normals, [0.001, 0.05, 0.3, 0.9])
    values = rng.standard_normal((3000, 3))  # float64 values over a float32 index
    extra = {"convex_layers": lambda x: hsrgeom.ConvexLayers(x)} if d == 2 else {}
    for name, make in {**structures_for(d), **extra}.items():
        check_sum(make(pts), pts, np.arange(3000), normals, offsets, values, 2, offsets - 1.0)


def test_sum_after_updates(make_index, dtype, rng):
    d = 3
    pts = rng.integers(-4, 5, (800, d)).astype(dtype)  # ties and duplicates
    index = make_index(pts)
    normals = rng.integers(-2, 3, (4, d)).astype(float)
    offsets = np.array([3.0, 1.0, 0.0, -20.0])
    # append only: every part has consecutive ids (summed natively, with a row offset)
    more = rng.integers(-4, 5, (700, d)).astype(dtype)
    index.insert(more)
    allp = np.vstack([pts, more])
    values = rng.standard_normal((len(allp), 2))
    check_sum(index, allp, np.arange(len(allp)), normals, offsets, values, 1)
    # removals: parts with dead ids sum through their reports
    gone = rng.choice(len(allp), 300, replace=False)
    index.remove(gone)
    live = np.setdiff1d(np.arange(len(allp)), gone)
    res = check_sum(index, allp[live], live, normals, offsets, values, 2, offsets - 2.0)
    assert res.counts[-1] == len(live)


def test_sum_threads_do_not_change_results(rng):
    """A tree splits a few queries into subtrees that run on all threads; the parts are added
    in a fixed order, so the sums are bit-identical for any number of threads."""
    pts = rng.standard_normal((200_000, 4)).astype(np.float32)
    values = rng.standard_normal((200_000, 8)).astype(np.float32)
    normals = rng.standard_normal((2, 4)).astype(np.float32)
    offsets = quantile_offsets(pts, normals, [0.05, 0.3])
    trees = (hsrgeom.PartitionTree(pts), hsrgeom.SimplicialPartitionTree(pts))
    for index, vals in [(t, values) for t in trees] + [(t.attach_values(values), "attached") for t in trees]:
        one = index.sum(normals, offsets, vals, power=1, n_threads=1)
        two = index.sum(normals, offsets, vals, power=1, n_threads=2)
        np.testing.assert_array_equal(one.counts, two.counts)
        np.testing.assert_array_equal(one.weights, two.weights)
        np.testing.assert_array_equal(one.sums, two.sums)
        np.testing.assert_array_equal(one.counts, index.count(normals, offsets))


def test_sum_edge_cases(make_index, dtype, rng):
    pts = rng.standard_normal((50, 3)).astype(dtype)
    index = make_index(pts)
    values = rng.standard_normal((50, 2))
    res = index.sum(np.zeros((0, 3)), np.zeros(0), values, power=1)
    assert res.counts.shape == (0,) and res.sums.shape == (0, 2)
    # no point inside: zeros, not NaN
    res = index.sum(np.ones((1, 3)), [1e6], values, power=1)
    assert res.counts[0] == 0 and res.weights[0] == 0 and not res.sums.any()
    # NaN values propagate (summed as given), like numpy.sum
    values[0, 0] = np.nan
    res = index.sum(np.ones((1, 3)), [-1e6], values)
    assert np.isnan(res.sums[0, 0]) and np.isfinite(res.sums[0, 1])
    assert "HalfspaceSums(queries=1" in repr(res)


def test_sum_on_empty_index(dtype):
    index = hsrgeom.PartitionTree(np.zeros((0, 2), dtype=dtype))
    res = index.sum(np.ones((2, 2)), [0.0, 1.0], np.zeros((0, 3)), power=1)
    np.testing.assert_array_equal(res.counts, [0, 0])
    assert res.sums.shape == (2, 3) and not res.sums.any()


def test_sum_bad_input(rng):
    pts = rng.standard_normal((40, 3))
    index = hsrgeom.PartitionTree(pts)
    a, b = np.ones((2, 3)), [0.0, 1.0]
    with pytest.raises(ValueError, match="values has 39 rows"):
        index.sum(a, b, np.zeros((39, 2)))
    with pytest.raises(ValueError, match="values must be 1-D"):
        index.sum(a, b, np.zeros((40, 2, 2)))
    with pytest.raises(TypeError, match="values must hold real numbers"):
        index.sum(a, b, np.zeros((40, 2), dtype=complex))
    with pytest.raises(ValueError, match="power must be >= 0"):
        index.sum(a, b, power=-1)
    with pytest.raises(TypeError, match="power must be an integer"):
        index.sum(a, b, power=1.5)
    with pytest.raises(ValueError, match="shift must be a scalar or 1-D of length m=2"):
        index.sum(a, b, shift=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="shift contains NaN"):
        index.sum(a, b, shift=np.nan)
    with pytest.raises(ValueError, match="normals has d=2"):
        index.sum(np.ones((2, 2)), b)
    index.insert(rng.standard_normal((5, 3)))
    with pytest.raises(ValueError, match="values has 44 rows but point ids go up to 44"):
        index.sum(a, b, np.zeros((44, 2)))


# ---- attached values (attach_values, values="attached"; node sums in the trees) -----------------

@pytest.mark.parametrize("power", [0, 1, 2])
def test_attached_values_match_reference(make_index, dtype, rng, power):
    """Trees add whole nodes from their value sums (power 0 and 1); a node inside the half-space
    but not entirely above the shift must still be read point by point (weights clip at 0):
    shift = offsets + 0.5 checks that."""
    d = 3
    for name, pts in datasets(rng, 2000, d, dtype):
        pts = pts.astype(dtype)
        normals = rng.standard_normal((5, d))
        offsets = quantile_offsets(pts, normals, [0.0, 0.01, 0.2, 0.6, 1.0])
        offsets[-1] -= 1.0
        for values in (rng.standard_normal((len(pts), 3)).astype(dtype), rng.standard_normal(len(pts))):
            index = make_index(pts).attach_values(values)
            assert index.has_values
            np.testing.assert_array_equal(index.values(), values)
            for shift in (None, offsets - 0.5, offsets + 0.5):
                check_sum(index, pts, np.arange(len(pts)), normals, offsets, values, power, shift, attached=True)


def test_attached_values_node_sums_other_dimensions(rng):
    for d in (1, 2, 8):
        pts = rng.standard_normal((5000, d)).astype(np.float32)
        pts[:1000] = pts[0]  # a block of duplicates: degenerate nodes
        values = rng.standard_normal((5000, 5)).astype(np.float32)
        normals = rng.standard_normal((4, d))
        offsets = quantile_offsets(pts, normals, [0.01, 0.3, 0.7, 0.95])
        for index in (hsrgeom.PartitionTree(pts), hsrgeom.PartitionTree(pts, split="pca"),
                      hsrgeom.SimplicialPartitionTree(pts)):
            before = index.memory_bytes
            index.attach_values(values)
            assert index.memory_bytes > before + values.nbytes  # the copy, the tree-order rows, the sums
            for power, shift in [(0, None), (1, None), (1, offsets - 0.3), (1, offsets + 0.3)]:
                check_sum(index, pts, np.arange(5000), normals, offsets, values, power, shift, attached=True)


def test_attached_values_with_updates_and_persistence(make_index, rng, tmp_path):
    import pickle

    d = 3
    pts = rng.integers(-4, 5, (2000, d)).astype(np.float64)  # ties and duplicates
    values = rng.standard_normal((2000, 2))
    index = make_index(pts).attach_values(values)
    normals = rng.integers(-2, 3, (4, d)).astype(float)
    offsets = np.array([3.0, 1.0, 0.0, -20.0])
    more = rng.integers(-4, 5, (1500, d)).astype(np.float64)
    more_v = rng.standard_normal((1500, 2))
    for start in range(0, 1500, 100):  # append only: consecutive ids, new blocks get node sums
        index.insert(more[start : start + 100], more_v[start : start + 100])
    allp, allv = np.vstack([pts, more]), np.vstack([values, more_v])
    for power in (0, 1):
        check_sum(index, allp, np.arange(3500), normals, offsets, allv, power, attached=True)
    gone = rng.choice(3500, 700, replace=False)
    index.remove(gone)
    live = np.setdiff1d(np.arange(3500), gone)
    check_sum(index, allp[live], live, normals, offsets, allv, 1, offsets - 1.0, attached=True)
    for copy in (pickle.loads(pickle.dumps(index)), _saved_and_loaded(index, tmp_path)):
        np.testing.assert_array_equal(copy.values(), allv)
        check_sum(copy, allp[live], live, normals, offsets, allv, 1, attached=True)
        extra, extra_v = rng.integers(-4, 5, (300, d)).astype(np.float64), rng.standard_normal((300, 2))
        copy.insert(extra, extra_v)
        ids = np.concatenate([live, np.arange(3500, 3800)])
        check_sum(copy, np.vstack([allp[live], extra]), ids, normals, offsets, np.vstack([allv, extra_v]), 1,
                  attached=True)
    check_sum(index, allp[live], live, normals, offsets, allv, 1, attached=True)  # the original is untouched


def _saved_and_loaded(index, tmp_path):
    path = tmp_path / "index.hsr"
    index.save(path)
    return hsrgeom.load(path)


def test_attached_values_errors(rng, tmp_path):
    pts = rng.standard_normal((100, 3))
    index = hsrgeom.PartitionTree(pts)
    a, b = np.ones((2, 3)), [0.0, 1.0]
    with pytest.raises(ValueError, match="no values are attached"):
        index.sum(a, b, "attached")
    with pytest.raises(ValueError, match="values must be an array or 'attached'"):
        index.sum(a, b, "attach")
    with pytest.raises(ValueError, match="values given but none are attached"):
        index.insert(pts[:2], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="values has 101 rows but the index has 100 ids"):
        index.attach_values(np.zeros((101, 2)))
    with pytest.raises(ValueError, match="values has 99 rows"):
        index.attach_values(np.zeros((99, 2)))
    with pytest.raises(TypeError, match="values must hold real numbers"):
        index.attach_values(np.zeros((100, 2), dtype=complex))
    values = rng.standard_normal((100, 2))
    index.attach_values(values)
    values[:] = 0  # the index kept a copy
    assert index.values().any()
    with pytest.raises(ValueError, match="already attached"):
        index.attach_values(values)
    with pytest.raises(ValueError, match="needs the new points' values"):
        index.insert(pts[:2])
    with pytest.raises(ValueError, match=r"values must have shape \(2, 2\)"):
        index.insert(pts[:2], np.zeros((2, 3)))
    with pytest.raises(TypeError, match="values must have the attached dtype float64"):
        index.insert(pts[:2], np.zeros((2, 2), dtype=np.float32))
    assert len(index) == 100 and index.values().shape == (100, 2)  # failed inserts changed nothing
    assert index.insert(pts[0], [5.0, 6.0]).tolist() == [100]  # one point (d,), its row (dv,)
    np.testing.assert_array_equal(index.values()[100], [5.0, 6.0])
    flat = hsrgeom.BruteForce(pts).attach_values(np.arange(100.0))
    assert flat.insert(pts[0], 7.0).tolist() == [100] and flat.values()[100] == 7.0
    with pytest.raises(ValueError, match=r"values must have shape \(2,\)"):
        flat.insert(pts[:2], np.zeros((2, 1)))
    path = tmp_path / "v.hsr"
    index.save(path)
    np.testing.assert_array_equal(hsrgeom.load(path).values(), index.values())
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(ValueError, match="checksum mismatch"):
        hsrgeom.load(path)


# ---- the query concept: sum is native for every structure (cpp/include/hsrgeom/query.hpp) ----

CORE_CLASSES = ["BruteForce", "QuantizedScan", "PartitionTree", "SimplicialPartitionTree", "ConvexLayers",
                "ConvexLayers3", "ShallowCutting3"]


def test_sum_is_native_for_every_structure():
    # every compiled structure answers sum itself (no Python fallback over report())
    from hsrgeom import _core

    for name in CORE_CLASSES:
        for suffix in ("F32", "F64"):
            cls = getattr(_core, name + suffix)
            for method in ("report", "count", "empty", "topk", "sum"):
                assert hasattr(cls, method), (name + suffix, method)


# every traversal path of the structures whose sum is new: ConvexLayers' table, its layers, its
# partial peel's tree; ConvexLayers3's layers and core; ShallowCutting3's cutting and its tree
SUM_PATHS = {
    2: {
        "convex_layers": lambda x: hsrgeom.ConvexLayers(x),
        "convex_layers_no_table": lambda x: hsrgeom.ConvexLayers(x, table_layers=0),
        "convex_layers_partial": lambda x: hsrgeom.ConvexLayers(x, table_layers=2, max_layers=3),
        "brute_force": lambda x: hsrgeom.BruteForce(x),
        "tree": lambda x: hsrgeom.PartitionTree(x, leaf_size=4),
    },
    3: {
        "convex_layers3": lambda x: hsrgeom.ConvexLayers3(x),
        "convex_layers3_core": lambda x: hsrgeom.ConvexLayers3(x, max_layers=2),
        "shallow_cutting3": lambda x: hsrgeom.ShallowCutting3(x, grid=4, max_depth=64),
        "shallow_cutting3_tree": lambda x: hsrgeom.ShallowCutting3(x, grid=2, max_depth=8),
        "quantized_scan": lambda x: hsrgeom.QuantizedScan(x),
        "simplicial": lambda x: hsrgeom.SimplicialPartitionTree(x, r=8, leaf_size=4),
    },
}


def tie_data(rng, n, d):
    """Integer points (many duplicates, exact ties with integer normals) and random ones."""
    yield "grid", rng.integers(-4, 5, (n, d)).astype(float), rng.integers(-2, 3, (6, d)).astype(float)
    yield "duplicates", rng.standard_normal((n // 25, d))[rng.integers(0, n // 25, n)], rng.standard_normal((6, d))
    yield "gaussian", rng.standard_normal((n, d)), rng.standard_normal((6, d))


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("power", [0, 1, 2, 5])
def test_sum_every_path_ties_duplicates(dtype, rng, d, power):
    n = 1200
    for data, pts, normals in tie_data(rng, n, d):
        pts = pts.astype(dtype)
        normals = normals.astype(dtype)
        # exact ties: offsets equal to the score of some point (integer data: many points on it)
        sc = pts.astype(np.float64) @ normals.astype(np.float64).T
        offsets = np.array([np.quantile(sc[:, j], q, method="nearest") for j, q in
                            enumerate([1.0, 0.99, 0.9, 0.5, 0.0, 0.97])])
        offsets[0] += 1.0  # nothing
        values = rng.standard_normal((n, 3)).astype(dtype)
        shift = offsets - rng.random(len(offsets))
        for name, make in SUM_PATHS[d].items():
            index = make(pts)
            res = check_sum(index, pts, np.arange(n), normals, offsets, values, power, shift)
            np.testing.assert_array_equal(res.counts, index.count(normals, offsets), err_msg=f"{name} {data}")
            check_sum(index, pts, np.arange(n), normals, offsets, values[:, 1], power)
            check_sum(index, pts, np.arange(n), normals, offsets, None, power, shift)


def test_sum_per_query_structures_thread_independent(rng):
    # the per-query drivers sum each query on one thread: bit-identical for any thread count
    pts2 = rng.standard_normal((20_000, 2))
    pts3 = rng.standard_normal((20_000, 3))
    for index, pts in [(hsrgeom.ConvexLayers(pts2), pts2), (hsrgeom.ConvexLayers3(pts3), pts3),
                       (hsrgeom.ShallowCutting3(pts3, grid=4, max_depth=64), pts3)]:
        d = pts.shape[1]
        normals = rng.standard_normal((300, d))
        offsets = quantile_offsets(pts, normals, list(rng.random(300) * 0.1))
        values = rng.standard_normal((len(pts), 2))
        one = index.sum(normals, offsets, values, power=1, n_threads=1)
        two = index.sum(normals, offsets, values, power=1, n_threads=2)
        np.testing.assert_array_equal(one.counts, two.counts)
        np.testing.assert_array_equal(one.weights, two.weights)
        np.testing.assert_array_equal(one.sums, two.sums)
