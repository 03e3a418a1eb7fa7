"""insert/remove (logarithmic method) interleaved with queries; save/load; corrupted files."""
import pickle

import numpy as np
import pytest

import hsrgeom
import exact_reference as ref


def check_against_live(index, pts, alive, rng, d):
    a = rng.standard_normal((4, d)).astype(index.dtype)
    live = np.flatnonzero(alive)
    b = np.quantile(pts[live] @ a.T.astype(np.float64), [0.99, 0.7, 0.3, 0.0], axis=0).diagonal() if len(live) else np.zeros(4)
    res = index.report(a, b)
    for j in range(4):
        np.testing.assert_array_equal(res[j], live[ref.report(pts[live], a[j], b[j])])
    np.testing.assert_array_equal(index.count(a, b), res.counts)
    k = min(5, len(live))
    _, ids = index.topk(a, k)
    for j in range(4):
        np.testing.assert_array_equal(ids[j], live[ref.topk(pts[live], a[j], k)])
    assert index.n == len(live)
    np.testing.assert_array_equal(index.ids(), live)
    np.testing.assert_array_equal(index.points(), pts[live])


def test_insert_remove_interleaved(make_index, dtype, rng):
    d = 3
    pts = rng.integers(-4, 5, (700, d)).astype(dtype)  # ties and duplicates
    index = make_index(pts)
    alive = np.ones(len(pts), dtype=bool)
    for step in range(12):
        new = rng.integers(-4, 5, (int(rng.integers(1, 300)), d)).astype(dtype)
        ids = index.insert(new)
        np.testing.assert_array_equal(ids, np.arange(len(pts), len(pts) + len(new)))
        pts = np.vstack([pts, new])
        alive = np.concatenate([alive, np.ones(len(new), dtype=bool)])
        gone = rng.choice(np.flatnonzero(alive), size=min(120, alive.sum()), replace=False)
        index.remove(gone)
        alive[gone] = False
        check_against_live(index, pts, alive, rng, d)


def test_insert_one_point_and_empty_start(dtype, rng):
    index = hsrgeom.PartitionTree(np.zeros((0, 2), dtype=dtype))
    pts = rng.standard_normal((600, 2)).astype(dtype)
    for p in pts:
        index.insert(p)
    check_against_live(index, pts, np.ones(600, dtype=bool), rng, 2)


def test_update_errors(rng):
    index = hsrgeom.BruteForce(rng.standard_normal((10, 2)))
    with pytest.raises(ValueError, match="d=3"):
        index.insert(np.zeros((1, 3)))
    with pytest.raises(TypeError, match="index dtype"):
        index.insert(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.insert(np.array([[np.nan, 0.0]]))
    index.remove([3])
    with pytest.raises(ValueError, match="ids: 3 is not in the index"):
        index.remove([3])
    with pytest.raises(ValueError, match="ids: 10 is not in the index"):
        index.remove([10])
    with pytest.raises(ValueError, match="duplicates"):
        index.remove([1, 1])
    with pytest.raises(TypeError, match="integers"):
        index.remove([1.5])
    with pytest.raises(ValueError, match="larger than the number of points"):
        index.topk(np.ones((1, 2)), 10)


@pytest.mark.parametrize("updated", [False, True])
def test_save_load_and_pickle(make_index, dtype, rng, tmp_path, updated):
    pts = rng.standard_normal((2000, 4)).astype(dtype)
    index = make_index(pts)
    if updated:
        index.insert(rng.standard_normal((300, 4)).astype(dtype))
        index.remove(np.arange(0, 2300, 7))
    a = rng.standard_normal((6, 4))
    expected = index.report(a, 0.3)
    path = tmp_path / "index.hsr"
    index.save(path)
    for clone in (hsrgeom.load(path), pickle.loads(pickle.dumps(index))):
        assert type(clone) is type(index) and clone.reason == index.reason and clone.dtype == index.dtype
        assert clone.report(a, 0.3) == expected
        np.testing.assert_array_equal(clone.ids(), index.ids())
        if updated:  # ids keep counting where they stopped
            assert clone.insert(np.zeros((1, 4), dtype=dtype))[0] == 2300


def test_corrupted_files(tmp_path, rng):
    index = hsrgeom.PartitionTree(rng.standard_normal((100, 3)))
    path = tmp_path / "index.hsr"
    index.save(path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "flipped": data[:200] + bytes([data[200] ^ 1]) + data[201:],
        "magic": b"NOTHSRGE" + data[8:],
    }
    for name, bad in cases.items():
        p = tmp_path / f"{name}.hsr"
        p.write_bytes(bad)
        with pytest.raises(ValueError, match="hsrgeom"):
            hsrgeom.load(p)
