"""SimplicialPartitionTree specifics: parameters, determinism, crossing_stats (exactness of the
structure itself is covered by the parametrised structure tests)."""
import pickle

import numpy as np
import pytest

import hsrgeom


def test_params_repr_and_build_index(rng):
    pts = rng.random((3000, 3))
    idx = hsrgeom.build_index(pts, kind="simplicial", r=8, leaf_size=16, seed=7)
    assert type(idx) is hsrgeom.SimplicialPartitionTree and idx.kind == "simplicial"
    assert (idx.r, idx.leaf_size, idx.seed) == (8, 16, 7)
    assert repr(idx).startswith("SimplicialPartitionTree(n=3000, d=3, dtype=float64, r=8, leaf_size=16, seed=7")
    assert idx.depth >= 2 and idx.node_count > 3000 // 16
    clone = pickle.loads(pickle.dumps(idx))
    assert clone._params() == idx._params() and clone.node_count == idx.node_count
    idx.count(rng.standard_normal((5, 3)), 0.5)
    assert len(idx.stats) == 5 and idx.stats.points_tested.max() < 3000


def test_build_is_deterministic_across_threads_and_seeded(rng):
    pts = rng.standard_normal((40_000, 3))
    a = rng.standard_normal((8, 3))
    b = np.quantile(pts @ a.T, 0.99, axis=0)
    one = hsrgeom.SimplicialPartitionTree(pts, n_threads=1).crossing_stats(a, b)
    two = hsrgeom.SimplicialPartitionTree(pts, n_threads=2).crossing_stats(a, b)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    few = pts[:3000]
    other = hsrgeom.SimplicialPartitionTree(few, seed=1, leaf_size=8)
    assert other.report(a, b) == hsrgeom.BruteForce(few).report(a, b)


def test_crossing_stats_is_consistent(rng):
    pts = rng.random((20_000, 2))
    idx = hsrgeom.SimplicialPartitionTree(pts, r=16, leaf_size=16)
    a = rng.standard_normal((30, 2))
    b = np.quantile(pts @ a.T, np.linspace(0.0, 1.0, 30), axis=0).diagonal().copy()
    b[0] += 10  # nothing inside: the root is decided, no records
    s = idx.crossing_stats(a, b)
    assert set(s) == {"lims", "depth", "fanout", "crossed", "undecided", "node_crossed"}
    lims = s["lims"]
    assert lims.dtype == np.int64 and len(lims) == 31 and lims[0] == 0 and lims[1] == 0
    assert np.all(np.diff(lims) >= 0) and lims[-1] == len(s["depth"])
    # a child with points on both sides can never be decided by conservative bounds
    assert np.all(s["crossed"] <= s["undecided"]) and np.all(s["undecided"] <= s["fanout"])
    assert np.all((s["fanout"] >= 2) & (s["fanout"] <= 16))
    counts = idx.count(a, b)
    for j in range(30):
        recs = slice(lims[j], lims[j + 1])
        if lims[j + 1] > lims[j]:
            assert s["depth"][recs][0] == 0  # the root comes first
            assert s["node_crossed"][lims[j]] == (0 < counts[j] < len(pts))
    # a line crosses few of the 16 cells of a node
    assert s["crossed"].mean() < 6


def test_crossing_stats_errors(rng):
    idx = hsrgeom.SimplicialPartitionTree(rng.random((100, 2)))
    with pytest.raises(ValueError, match="normals has d=3"):
        idx.crossing_stats(np.ones((1, 3)), [0.0])
    idx.insert(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="insert/remove"):
        idx.crossing_stats(np.ones((1, 2)), [0.0])
