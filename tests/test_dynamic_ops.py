"""The compiled dynamic index (dynamic.hpp through _dynamic.py): random interleavings of
insert/remove with every query kind against the exact reference, for every structure, float32
and float64, on data with boundary ties and duplicates; save/load round trips; files written
by the Python implementation of the logarithmic method (tests/data) still load."""
import os
import pathlib
import pickle

import numpy as np
import pytest

import hsrgeom
from hsrgeom import _core

import exact_reference as ref

DATA = pathlib.Path(__file__).parent / "data"

# every kind, with parameters small enough that a few hundred points make a real structure
KINDS = {
    "brute_force": (3, lambda x: hsrgeom.BruteForce(x)),
    "quantized_scan": (3, lambda x: hsrgeom.QuantizedScan(x)),
    "tree_widest": (3, lambda x: hsrgeom.PartitionTree(x, leaf_size=4)),
    "tree_pca": (2, lambda x: hsrgeom.PartitionTree(x, leaf_size=8, split="pca")),
    "simplicial": (3, lambda x: hsrgeom.SimplicialPartitionTree(x, r=8, leaf_size=4, seed=3)),
    "convex_layers": (2, lambda x: hsrgeom.ConvexLayers(x, table_layers=2)),
    "convex_layers3": (3, lambda x: hsrgeom.ConvexLayers3(x)),
    "shallow_cutting3": (3, lambda x: hsrgeom.ShallowCutting3(x, grid=4, max_depth=16)),
}


def _points(rng, m, d, dtype):
    """Small integers (many duplicates, many points exactly on integer half-spaces' boundaries)
    mixed with a few Gaussian points."""
    x = rng.integers(-3, 4, (m, d)).astype(np.float64)
    g = rng.random(m) < 0.2
    x[g] = rng.standard_normal((int(g.sum()), d))
    return x.astype(dtype)


def _queries(rng, pts, d, dtype):
    """Integer normals with integer offsets (ties on the boundary) and Gaussian normals with
    offsets at quantiles of the live points."""
    a = np.vstack([rng.integers(-2, 3, (3, d)), rng.standard_normal((3, d))]).astype(dtype)
    a[0] = 0
    a[0, 0] = 1
    b = np.concatenate([rng.integers(-3, 4, 3), np.zeros(3)]).astype(np.float64)
    if len(pts):
        s = pts.astype(np.float64) @ a[3:].astype(np.float64).T
        b[3:] = [np.quantile(s[:, j], q) for j, q in zip(range(3), (0.95, 0.5, 0.0))]
    b[-1] = 1e9  # an empty half-space
    return a, b


def _check(index, allpts, alive, rng, d, dtype):
    live = np.flatnonzero(alive)
    lp = allpts[live]
    a, b = _queries(rng, lp, d, dtype)
    expect = [live[ref.report(lp, a[j], b[j])] for j in range(len(a))]
    res = index.report(a, b, return_scores=True)
    for j in range(len(a)):
        np.testing.assert_array_equal(res[j], expect[j])
        exact_scores = allpts[expect[j]].astype(np.float64) @ a[j].astype(np.float64)
        np.testing.assert_allclose(res.scores[res.lims[j]:res.lims[j + 1]], exact_scores, rtol=1e-14, atol=1e-14)
    unsorted = index.report(a, b, return_sorted=False)
    for j in range(len(a)):
        got = unsorted.ids[unsorted.lims[j]:unsorted.lims[j + 1]]
        np.testing.assert_array_equal(np.sort(got), expect[j])
    counts = np.array([len(e) for e in expect])
    np.testing.assert_array_equal(index.count(a, b), counts)
    np.testing.assert_array_equal(index.empty(a, b), counts == 0)
    # top-k: ids exact (ties to the smaller id), scores those of a static structure over the live points
    if len(live):
        k = int(rng.integers(1, min(len(live), 40) + 1))
        scores, ids = index.topk(a, k)
        static_scores, _ = hsrgeom.BruteForce(lp).topk(a, k)
        for j in range(len(a)):
            np.testing.assert_array_equal(ids[j], live[ref.topk(lp, a[j], k)])
        np.testing.assert_array_equal(scores, static_scores)
    # sums: counts exact; weights and sums those of the reported points
    values = rng.standard_normal((len(allpts), 2))
    for power in (0, 1, 3):
        s = index.sum(a, b, values, power=power, shift=b - 0.5)
        np.testing.assert_array_equal(s.counts, counts)
        for j in range(len(a)):
            w = np.maximum(allpts[expect[j]].astype(np.float64) @ a[j].astype(np.float64) - (b[j] - 0.5), 0) ** power
            np.testing.assert_allclose(s.weights[j], w.sum(), rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(s.sums[j], w @ values[expect[j]], rtol=1e-10, atol=1e-9)
    assert index.n == len(live) == len(index)
    np.testing.assert_array_equal(index.ids(), live)
    np.testing.assert_array_equal(index.points(), lp)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_random_interleavings(kind, dtype):
    d, make = KINDS[kind]
    rng = np.random.default_rng(sorted(KINDS).index(kind) + (7 if dtype == np.float32 else 0))
    allpts = _points(rng, 300, d, dtype)
    index = make(allpts)
    alive = np.ones(len(allpts), dtype=bool)
    assert isinstance(index._dyn, type(None))
    for step in range(9):
        op = ("insert_one", "insert_many", "remove", "remove_most", "insert_many")[step % 5]
        if op == "insert_one":
            for _ in range(int(rng.integers(1, 40))):
                p = _points(rng, 1, d, dtype)
                assert index.insert(p[0])[0] == len(allpts)
                allpts = np.vstack([allpts, p])
                alive = np.append(alive, True)
        elif op == "insert_many":  # more than a tail: blocks, merges of blocks
            new = _points(rng, int(rng.integers(100, 700)), d, dtype)
            ids = index.insert(new)
            np.testing.assert_array_equal(ids, np.arange(len(allpts), len(allpts) + len(new)))
            allpts = np.vstack([allpts, new])
            alive = np.concatenate([alive, np.ones(len(new), dtype=bool)])
        else:
            live = np.flatnonzero(alive)
            share = 0.7 if op == "remove_most" else 0.1  # most: rebuilds of blocks more than half removed
            gone = rng.choice(live, size=int(share * len(live)), replace=False)
            index.remove(gone)
            alive[gone] = False
        _check(index, allpts, alive, rng, d, dtype)
    assert isinstance(index._dyn._c, (_core.DynamicF32, _core.DynamicF64))
    # every point removed, then one inserted
    index.remove(np.flatnonzero(alive))
    alive[:] = False
    assert index.n == 0 and index.count(np.ones((1, d), dtype=dtype), [0.0])[0] == 0
    p = _points(rng, 1, d, dtype)
    index.insert(p)
    allpts = np.vstack([allpts, p])
    _check(index, allpts, np.append(alive, True), rng, d, dtype)


def test_block_policy():
    """Binary-counter block sizes, the tail, tombstones and rebuilds, as _dynamic.py states them."""
    tail = hsrgeom._dynamic.TAIL
    index = hsrgeom.PartitionTree(np.zeros((0, 2)))
    for i in range(5 * tail + 3):
        index.insert(np.array([float(i), 0.0]))
    # 5 full tails: 4 + 1 (binary 101), 3 points in the tail
    assert index._dyn.part_sizes == [4 * tail, tail, 3]
    index.remove(np.arange(0, 4 * tail, 2))  # half of the big block: kept with tombstones
    assert index._dyn.part_sizes == [4 * tail, tail, 3]
    assert index._dyn._c.part_removed == [2 * tail, 0, 0]
    index.remove([1])  # more than half: rebuilt from its live points (2 tail - 1: level 1, merged with none)
    assert sorted(index._dyn.part_sizes[:-1]) == [tail, 2 * tail - 1]
    assert index.n == 5 * tail + 3 - 2 * tail - 1
    res = index.report(np.array([[1.0, 0.0]]), [0.0])
    np.testing.assert_array_equal(res.ids, index.ids())


def test_attached_values_and_node_sums(dtype, rng):
    """Blocks with consecutive ids get node sums of the attached values at insert; sums with
    values="attached" agree with the values passed as an array."""
    pts = rng.standard_normal((3000, 3)).astype(dtype)
    vals = rng.standard_normal((3000, 2))
    index = hsrgeom.PartitionTree(pts, leaf_size=8).attach_values(vals)
    new = rng.standard_normal((2000, 3)).astype(dtype)
    nv = rng.standard_normal((2000, 2))
    index.insert(new[:1500], nv[:1500])
    for p, v in zip(new[1500:], nv[1500:]):
        index.insert(p, v)
    index.remove(np.arange(0, 5000, 11))
    allv = np.vstack([vals, nv])
    a = rng.standard_normal((8, 3)).astype(dtype)
    b = rng.random(8)
    for power in (0, 1, 2):
        x = index.sum(a, b, "attached", power=power)
        y = index.sum(a, b, allv, power=power)
        np.testing.assert_array_equal(x.counts, y.counts)
        np.testing.assert_allclose(x.weights, y.weights, rtol=1e-9)
        np.testing.assert_allclose(x.sums, y.sums, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(index.count(a, b), x.counts)


@pytest.mark.parametrize("kind", ["tree_widest", "convex_layers", "brute_force"])
def test_save_load_round_trip_bit_for_bit(kind, dtype, tmp_path):
    """A loaded dynamic index (one block) answers like the saved one (blocks, tail, tombstones):
    the same ids, counts and top-k scores bit for bit, and the same file."""
    d, make = KINDS[kind]
    rng = np.random.default_rng(5)
    pts = _points(rng, 500, d, dtype)
    index = make(pts)
    index.insert(_points(rng, 700, d, dtype))
    index.remove(np.arange(3, 1200, 4))
    a, b = _queries(rng, index.points(), d, dtype)
    path = tmp_path / "dyn.hsr"
    index.save(path)
    for c in (hsrgeom.load(path), pickle.loads(pickle.dumps(index))):
        r0, r1 = index.report(a, b, return_scores=True), c.report(a, b, return_scores=True)
        np.testing.assert_array_equal(r0.lims, r1.lims)
        np.testing.assert_array_equal(r0.ids, r1.ids)
        # report scores: float64 <a, x> as each structure evaluates it (a point of the tail is
        # scored by the scan before a save, by the kind's structure after a load)
        np.testing.assert_allclose(r0.scores, r1.scores, rtol=1e-14, atol=1e-14)
        s0, i0 = index.topk(a, 17)
        s1, i1 = c.topk(a, 17)
        assert s0.tobytes() == s1.tobytes()
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_array_equal(index.count(a, b), c.count(a, b))
        np.testing.assert_array_equal(index.empty(a, b), c.empty(a, b))
        np.testing.assert_array_equal(index.sum(a, b).counts, c.sum(a, b).counts)
        np.testing.assert_array_equal(c.ids(), index.ids())
        assert c.to_bytes() == index.to_bytes()
        assert c.insert(np.zeros((1, d), dtype=dtype))[0] == 1200


def test_file_written_by_the_python_logarithmic_method_loads():
    """tests/data/main_v2_dynamic_tree.hsr was written by main b4e9808 (the logarithmic method
    in Python) from a PartitionTree with attached values, inserts and removes;
    main_v2_dynamic_tree.npz holds that code's answers (see _make_fixture below)."""
    index = hsrgeom.load(DATA / "main_v2_dynamic_tree.hsr")
    exp = np.load(DATA / "main_v2_dynamic_tree.npz")
    np.testing.assert_array_equal(index.ids(), exp["ids"])
    r = index.report(exp["a"], exp["b"])
    np.testing.assert_array_equal(r.lims, exp["lims"])
    np.testing.assert_array_equal(r.ids, exp["rids"])
    s, i = index.topk(exp["a"], 7)
    np.testing.assert_array_equal(i, exp["tk_ids"])
    assert s.tobytes() == exp["tk_scores"].tobytes()
    x = index.sum(exp["a"], exp["b"], "attached", power=1)
    np.testing.assert_array_equal(x.counts, exp["counts"])
    np.testing.assert_allclose(x.sums, exp["sums"], rtol=1e-12, atol=1e-12)
    assert index.insert(np.zeros((1, 3)), np.zeros((1, 2)))[0] == int(exp["next_id"])


def _make_fixture(out=DATA):  # run with the old code: python -c "import test_dynamic_ops as t; t._make_fixture()"
    rng = np.random.default_rng(2026)
    index = hsrgeom.PartitionTree(rng.standard_normal((80, 3)), leaf_size=4)
    index.attach_values(rng.standard_normal((80, 2)))
    index.insert(rng.standard_normal((280, 3)), rng.standard_normal((280, 2)))
    index.remove(np.arange(0, 360, 4))
    index.save(os.path.join(out, "main_v2_dynamic_tree.hsr"))
    a = rng.standard_normal((5, 3))
    b = rng.random(5)
    r = index.report(a, b)
    s, i = index.topk(a, 7)
    x = index.sum(a, b, "attached", power=1)
    np.savez_compressed(os.path.join(out, "main_v2_dynamic_tree.npz"), ids=index.ids(), a=a, b=b, lims=r.lims,
                        rids=r.ids, tk_ids=i, tk_scores=s, counts=x.counts, sums=x.sums, next_id=360)


def test_decode_cache_grows_through_the_compiled_dynamic_index(dtype):
    """DecodeCache appends keys with Index.insert: one token at a time, each head's tree is a
    compiled dynamic index (blocks with node sums of the values), and attention over it is that
    of the reference over every key so far."""
    import hsrgeom.attention as A
    from hsrgeom.attention import reference as R

    rng = np.random.default_rng(4)
    k = rng.standard_normal((1, 2, 900, 3)).astype(dtype)
    v = rng.standard_normal((1, 2, 900, 2)).astype(dtype)
    q = rng.standard_normal((1, 2, 1, 3)).astype(dtype)
    cache = A.DecodeCache(kind="partition_tree").append(k[:, :, :300], v[:, :, :300])
    for t in range(300, 900):
        cache.append(k[:, :, t : t + 1], v[:, :, t : t + 1])
        if t % 150 == 0 or t == 899:
            for alpha in (1, 2):
                out = cache.attend(q, mode="relu", bias=0.3, alpha=alpha, return_stats=False)
                ref_out = R.relu_attention(q, k[:, :, : t + 1], v[:, :, : t + 1], bias=0.3, alpha=alpha)
                tol = 1e-4 if dtype == np.float32 else 1e-10
                np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    for row in cache._heads:
        for head in row:
            index = head.blocks[-1][1]
            assert isinstance(index._dyn._c, (_core.DynamicF32, _core.DynamicF64))
            assert sum(index._dyn.part_sizes) == index.n == 900


def test_concurrent_first_queries_build_the_tail_scan_once(rng):
    """The tail's scan is built by the first query after an insert; readers that arrive
    together (the GIL released in each) all get the exact answer."""
    import threading

    pts = rng.standard_normal((2000, 2))
    index = hsrgeom.PartitionTree(pts, leaf_size=8)
    a = rng.standard_normal((64, 2))
    b = rng.random(64) * 0.5
    for _ in range(5):
        new = rng.standard_normal((int(rng.integers(1, 200)), 2))
        index.insert(new)  # the tail changed: no scan until a query asks
        pts = np.vstack([pts, new])
        expect = [ref.report(pts, a[j], b[j]) for j in range(len(a))]
        results, start = [None] * 8, threading.Barrier(8)

        def reader(i):
            start.wait()
            results[i] = (index.report(a, b), index.topk(a, 3)[1])

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for res, top in results:
            for j in range(len(a)):
                np.testing.assert_array_equal(res[j], expect[j])
            np.testing.assert_array_equal(top, results[0][1])
