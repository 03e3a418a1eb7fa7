"""Bad input raises a clear error naming the argument; valid odd input is accepted."""
import numpy as np
import pytest

import hsrgeom

CLASSES = [hsrgeom.BruteForce, hsrgeom.PartitionTree, hsrgeom.SimplicialPartitionTree, hsrgeom.build_index]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    "points, exc, match",
    [
        (np.zeros(5), ValueError, "points must be a 2-D"),
        (np.zeros((2, 3, 4)), ValueError, "points must be a 2-D"),
        (np.zeros((5, 0)), ValueError, "d >= 1"),
        (np.zeros((5, 2), dtype=np.int64), TypeError, "points must be float32 or float64"),
        (np.zeros((5, 2), dtype=np.float16), TypeError, "points must be float32 or float64"),
        (np.zeros((5, 2), dtype=bool), TypeError, "points"),
        (np.zeros((5, 2), dtype=complex), TypeError, "points"),
        (np.array([[1.0, np.nan]]), ValueError, "points contains NaN or inf"),
        (np.array([[1.0, np.inf]]), ValueError, "points contains NaN or inf"),
        ([["a", "b"]], TypeError, "points"),
    ],
)
def test_bad_points(cls, points, exc, match):
    with pytest.raises(exc, match=match):
        cls(points)


@pytest.fixture(params=["brute_force", "quantized_scan", "partition_tree", "simplicial", "convex_layers3", "shallow_cutting3", "dynamic"])
def index(request):
    pts = np.random.default_rng(0).standard_normal((100, 3))
    if request.param == "dynamic":  # the Bentley-Saxe path, which checks in Python
        index = hsrgeom.build_index(pts, kind="partition_tree")
        index.insert(pts[:5])
        return index
    return hsrgeom.build_index(pts, kind=request.param)


@pytest.mark.parametrize(
    "normals, offsets, exc, match",
    [
        (np.ones((2, 4)), np.zeros(2), ValueError, "normals has d=4 but the index has d=3"),
        (np.ones(3), np.zeros(1), ValueError, "normals must be 2-D"),
        (np.ones((2, 3)), np.zeros(3), ValueError, "offsets must be a scalar or 1-D of length m=2"),
        (np.ones((2, 3)), np.zeros((2, 1)), ValueError, "offsets"),
        (np.array([[1.0, np.nan, 0]]), np.zeros(1), ValueError, "normals contains NaN"),
        (np.ones((1, 3)), np.array([np.inf]), ValueError, "offsets contains NaN or inf"),
        (np.ones((1, 3), dtype=complex), np.zeros(1), TypeError, "normals must hold real numbers"),
    ],
)
def test_bad_queries(index, normals, offsets, exc, match):
    with pytest.raises(exc, match=match):
        index.report(normals, offsets)
    with pytest.raises(exc, match=match):
        index.count(normals, offsets)
    with pytest.raises(exc, match=match):
        index.empty(normals, offsets)


@pytest.mark.parametrize("kind", ["brute_force", "partition_tree", "convex_layers"])
def test_query_values_beyond_float32_are_an_error(kind):
    # 1e300 is finite in float64 but inf once cast to a float32 index: an error, not a query
    # with an infinite normal.
    index = hsrgeom.build_index(np.random.default_rng(0).random((50, 2), dtype=np.float32), kind=kind)
    with pytest.raises(ValueError, match=r"normals contains NaN or inf \(first at index \(1, 0\)\) in the index dtype float32"):
        index.report(np.array([[1.0, 0.0], [1e300, 0.0]]), 0.0)
    with pytest.raises(ValueError, match=r"offsets contains NaN or inf \(first at index \(2,\)\)$"):
        index.count(np.ones((3, 2), dtype=np.float32), np.array([0.0, 1.0, -np.inf]))
    with pytest.raises(ValueError, match="NaN or inf"):
        index.empty(np.full((1, 2), np.nan, dtype=np.float32), 0.0)


def test_bad_single_query(index):
    with pytest.raises(ValueError, match="a must be 1-D of length d=3"):
        index.report_one(np.ones(2), 0.0)
    with pytest.raises(ValueError, match="b must be finite"):
        index.report_one(np.ones(3), np.nan)
    with pytest.raises(ValueError, match="b must be a scalar"):
        index.report_one(np.ones(3), [1.0, 2.0])
    with pytest.raises(ValueError, match="queries has d=2"):
        index.topk(np.ones((1, 2)), 1)


def test_bad_parameters():
    pts = np.zeros((10, 2))
    with pytest.raises(ValueError, match="leaf_size"):
        hsrgeom.PartitionTree(pts, leaf_size=0)
    with pytest.raises(TypeError, match="leaf_size"):
        hsrgeom.PartitionTree(pts, leaf_size=2.0)
    with pytest.raises(ValueError, match="split"):
        hsrgeom.PartitionTree(pts, split="median")
    with pytest.raises(ValueError, match="kind"):
        hsrgeom.build_index(pts, kind="kd")
    with pytest.raises(ValueError, match="r must be >= 2"):
        hsrgeom.SimplicialPartitionTree(pts, r=1)
    with pytest.raises(ValueError, match="r must be <= 256"):
        hsrgeom.SimplicialPartitionTree(pts, r=257)
    with pytest.raises(TypeError, match="leaf_size"):
        hsrgeom.SimplicialPartitionTree(pts, leaf_size=1.5)
    with pytest.raises(ValueError, match="seed"):
        hsrgeom.SimplicialPartitionTree(pts, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        hsrgeom.SimplicialPartitionTree(pts, seed=2**64)
    with pytest.raises(ValueError, match="n_threads"):
        hsrgeom.BruteForce(pts).report(np.ones((1, 2)), [0.0], n_threads=0)


def test_queries_are_converted_not_modified(index):
    normals = np.asfortranarray(np.random.default_rng(1).standard_normal((5, 3)))[:, :]
    strided = np.random.default_rng(2).standard_normal((10, 6))[::2, ::2]
    before = strided.copy()
    ints = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.int32)
    a = index.report(strided, np.zeros(5))
    b = index.report(np.ascontiguousarray(strided), np.zeros(5))
    assert a == b
    np.testing.assert_array_equal(strided, before)
    assert index.report(ints, 0).counts.shape == (2,)
    assert index.report(normals.tolist(), 0.5) == index.report(normals, np.full(5, 0.5))
