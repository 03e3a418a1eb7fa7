"""Tombstones of the dynamic index are checked in the sink (dynamic.hpp LiveSink): a removed id
is dropped where the structure hands it over, also when it comes inside a whole range (a tree
node inside the half-space, a table's answer) and when every point of such a range is removed.
Answers are checked against the exact reference over the live points, float32 and float64, on
data with ties and duplicates."""
import numpy as np
import pytest
from test_dynamic_ops import KINDS, _check, _points

import hsrgeom

import exact_reference as ref


def _tree(x):
    return hsrgeom.PartitionTree(x, leaf_size=4)


def _exact(lp, live, a, b):
    return [live[ref.report(lp, a[j], b[j])] for j in range(len(a))]


def _index(kind, seed, n, dtype):
    """(d, points, index of `kind` over them) on data with ties and duplicates."""
    d, make = KINDS[kind]
    x = _points(np.random.default_rng(seed + sorted(KINDS).index(kind)), n, d, dtype)
    return d, x, make(x)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_removals_inside_whole_ranges(kind, dtype):
    # half-spaces holding most points: trees and tables hand whole ranges, and a third of the
    # ids inside them (duplicates included) are removed, never more than half of the block
    # (it keeps its tombstones)
    d, x, index = _index(kind, 101, 1500, dtype)
    rng = np.random.default_rng(1)
    alive = np.ones(len(x), dtype=bool)
    a = np.zeros((1, d), dtype=dtype)
    a[0, 0] = 1
    inside = np.flatnonzero(x[:, 0].astype(np.float64) >= -2)
    gone = inside[::3]
    index.remove(gone)
    alive[gone] = False
    assert index._dyn._c.part_removed[0] == len(gone)  # still tombstones, not a rebuild
    _check(index, x, alive, rng, d, dtype)
    live = np.flatnonzero(alive)
    b = np.array([-2.0])
    np.testing.assert_array_equal(index.report(a, b)[0], _exact(x[live], live, a, b)[0])
    assert index.count(a, b)[0] == len(inside) - len(gone)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_half_space_whose_points_are_all_removed_is_empty(kind, dtype):
    d, x, index = _index(kind, 7, 1200, dtype)
    a = np.zeros((2, d), dtype=dtype)
    a[:, 0] = 1
    s = x[:, 0].astype(np.float64)
    top = np.flatnonzero(s >= 3)  # the points at the largest coordinate (ties: many)
    assert 0 < len(top) < len(x) // 2
    index.remove(top)
    b = np.array([3.0, 2.0])
    assert index.empty(a, b).tolist() == [True, False]
    assert index.count(a, b)[0] == 0
    assert len(index.report(a, b)[0]) == 0
    sums = index.sum(a, b, np.ones((len(x), 1)), power=1)
    assert sums.counts[0] == 0 and sums.weights[0] == 0 and sums.sums[0, 0] == 0
    live = np.flatnonzero(np.isin(np.arange(len(x)), top, invert=True))
    np.testing.assert_array_equal(index.report(a, b)[1], _exact(x[live], live, a, b)[1])


def test_tree_ranges_are_handed_over_and_filtered(dtype):
    # the tree hands whole nodes (points reported > points tested one by one) while a share of
    # their ids is removed: the tombstones are dropped from those ranges
    rng = np.random.default_rng(5)
    x = rng.integers(-20, 21, (4000, 2)).astype(dtype)
    index = _tree(x)
    gone = rng.choice(len(x), 1000, replace=False)
    index.remove(gone)
    alive = np.ones(len(x), dtype=bool)
    alive[gone] = False
    live = np.flatnonzero(alive)
    a = np.array([[1, 0], [1, 1], [0, -1]], dtype=dtype)
    b = np.array([-15.0, -10.0, -3.0])
    res = index.report(a, b)
    st = index.stats
    for j in range(len(a)):
        np.testing.assert_array_equal(res[j], _exact(x[live], live, a, b)[j])
        assert st.points_reported[j] > st.points_tested[j]  # whole ranges were handed over
    np.testing.assert_array_equal(index.count(a, b), [len(res[j]) for j in range(len(a))])


def test_node_sums_are_not_used_where_a_node_holds_removed_points(dtype):
    # attached values with per-node sums: a block with tombstones adds its live points one by
    # one (a node's sums include its removed points), the others use their node sums
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5000, 3)).astype(dtype)
    vals = rng.integers(-4, 5, (5000, 2)).astype(np.float64)
    index = hsrgeom.PartitionTree(x, leaf_size=8).attach_values(vals)
    gone = np.arange(0, 5000, 7)
    index.remove(gone)
    alive = np.ones(len(x), dtype=bool)
    alive[gone] = False
    live = np.flatnonzero(alive)
    a = rng.standard_normal((6, 3)).astype(dtype)
    b = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 9.0])
    expect = _exact(x[live], live, a, b)
    s = index.sum(a, b, "attached", power=0)
    np.testing.assert_array_equal(s.counts, [len(e) for e in expect])
    for j in range(len(a)):
        np.testing.assert_array_equal(s.sums[j], vals[expect[j]].sum(axis=0))  # small integers: exact
    s1 = index.sum(a, b, "attached", power=1, shift=b - 1)
    for j in range(len(a)):
        w = np.maximum(x[expect[j]].astype(np.float64) @ a[j].astype(np.float64) - (b[j] - 1), 0)
        np.testing.assert_allclose(s1.weights[j], w.sum(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(s1.sums[j], w @ vals[expect[j]], rtol=1e-9, atol=1e-9)
