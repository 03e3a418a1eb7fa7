"""hsrgeom.distributed: a sharded index on Dask answers exactly as the local index.

One module-scoped LocalCluster (2 worker processes, 1 thread each) serves most tests; one test
starts a real multi-process cluster (``dask scheduler`` + 2 ``dask worker`` subprocesses with a
scheduler file). Faults kill a worker holding a shard (``client.run(os._exit, 1, ...)``);
Dask must rebuild the shard from its lineage and the answers must not change.
"""
import json
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hsrgeom

distributed = pytest.importorskip("distributed")
hd = pytest.importorskip("hsrgeom.distributed")
from hsrgeom.distributed import _partition as P  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture()
def fresh_client():
    """A LocalCluster of its own for a test that kills workers (2 processes, 1 thread each)."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _data(n, d, dtype, seed):
    """Random points plus adversarial ones: duplicates and points on a small integer grid
    (many exact boundary ties with integer normals and offsets)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, (n, d))
    g = max(1, n // 4)
    x[:g] = rng.integers(-3, 4, (g, d))
    x[g : g + 20] = x[0]  # duplicates
    return x.astype(dtype)


def _queries(x, m, seed):
    rng = np.random.default_rng(seed + 1)
    d = x.shape[1]
    a = rng.standard_normal((m, d))
    half = m // 2
    a[:half] = rng.integers(-2, 3, (half, d))  # integer normals: boundary ties on the grid points
    a[np.abs(a).sum(axis=1) == 0, 0] = 1.0
    a = a.astype(x.dtype)
    sc = x[: min(len(x), 2000)].astype(np.float64) @ a.T.astype(np.float64)
    b = np.quantile(sc, rng.uniform(0.5, 0.999, m), axis=0)[np.arange(m), np.arange(m)] if len(x) else np.zeros(m)
    b[:half] = np.round(b[:half])  # integer offsets: exactly on grid points' scores
    b[0] = 1e9  # nothing
    b[1] = -1e9  # everything
    return a, b


def _check(idx, loc, a, b, k=5):
    r, rl = idx.report(a, b), loc.report(a, b)
    assert np.array_equal(r.lims, rl.lims) and np.array_equal(r.ids, rl.ids)
    assert np.array_equal(idx.count(a, b), loc.count(a, b))
    assert np.array_equal(idx.empty(a, b), loc.empty(a, b))
    k = min(k, loc.n)
    s, i = idx.topk(a, k)
    sl, il = loc.topk(a, k)
    assert np.array_equal(i, il)
    assert np.array_equal(s, sl)
    su, sul = idx.sum(a, b, power=1), loc.sum(a, b, power=1)
    assert np.array_equal(su.counts, sul.counts)
    np.testing.assert_allclose(su.weights, sul.weights, rtol=1e-9, atol=1e-9)
    rs = idx.report(a, b, return_scores=True)
    np.testing.assert_allclose(rs.scores, loc.report(a, b, return_scores=True).scores, rtol=1e-12, atol=0)


CASES = [  # kind, d, shards, dtype, partition
    ("partition_tree", 2, 16, np.float32, "kd"),
    ("partition_tree", 2, 3, np.float64, "chunks"),
    ("convex_layers", 2, 16, np.float64, "kd"),
    ("convex_layers", 2, 1, np.float32, "chunks"),
    ("partition_tree", 3, 3, np.float32, "kd"),
    ("brute_force", 3, 16, np.float64, "chunks"),
    ("partition_tree", 8, 16, np.float64, "kd"),
    ("brute_force", 8, 3, np.float32, "kd"),
    ("brute_force", 32, 3, np.float64, "kd"),
    ("partition_tree", 32, 16, np.float32, "chunks"),
    ("auto", 2, 3, np.float32, "auto"),
]


@pytest.mark.parametrize("kind,d,shards,dtype,partition", CASES)
def test_equivalence_with_local_index(client, tmp_path, kind, d, shards, dtype, partition):
    x = _data(1500, d, dtype, seed=d * 7 + shards)
    a, b = _queries(x, 24, seed=d)
    loc = hsrgeom.BruteForce(x)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, kind=kind, partition=partition,
                               shards=shards) as idx:
        assert idx.partition in ("kd", "chunks") and len(idx.shards) == shards
        assert sum(s["n"] for s in idx.shards) == len(x)
        _check(idx, loc, a, b)


def test_shallow_cutting3_tiers_through_shards(client, tmp_path):
    """ShallowCutting3's tiers (fine_depth: deeper levels on coarser grids) reach every shard,
    survive inserts, a flush and a reopen, and answer as a local index does."""
    x = _data(1500, 3, np.float32, seed=5)
    a, b = _queries(x, 24, seed=5)
    loc = hsrgeom.BruteForce(x)
    prm = {"grid": 4, "fine_depth": 8, "max_depth": 400, "max_candidates": 200_000}
    path = tmp_path / "ix"
    with hd.ShardedIndex.build(x, path, client=client, kind="shallow_cutting3", partition="chunks", shards=3,
                               **prm) as idx:
        assert all(s["kind"] == "shallow_cutting3" and {k: s["params"][k] for k in prm} == prm for s in idx.shards)
        _check(idx, loc, a, b)
        new = idx.insert(x[:40] * np.float32(1.5))
        assert np.array_equal(new, loc.insert(x[:40] * np.float32(1.5)))
        idx.flush()
        _check(idx, loc, a, b)
        files = [path / s["file"] for s in idx.shards]
    shard = hsrgeom.load(files[0])
    assert shard.kind == "shallow_cutting3" and set(shard.level_grids()) == {4, 2, 1}  # three tiers
    with hd.ShardedIndex.open(path, client=client) as idx:
        _check(idx, loc, a, b)


def test_empty_shards_and_tiny_data(client, tmp_path):
    x = _data(10, 2, np.float64, 3)  # 16 shards over 10 points: chunks leave empty shards
    a, b = _queries(x, 10, 3)
    loc = hsrgeom.BruteForce(x)
    for part in ("chunks", "kd"):
        with hd.ShardedIndex.build(x, tmp_path / part, client=client, kind="partition_tree", partition=part,
                                   shards=16) as idx:
            assert any(s["n"] == 0 for s in idx.shards)
            _check(idx, loc, a, b, k=10)
    x0 = np.zeros((0, 3), np.float32)
    with hd.ShardedIndex.build(x0, tmp_path / "zero", client=client, shards=3, partition="kd") as idx:
        assert idx.n == 0 and idx.count(np.ones((2, 3)), [0, 1]).tolist() == [0, 0]
        assert idx.report(np.ones((2, 3)), 0.0).ids.size == 0


def test_sources_dask_array_and_npy(client, tmp_path):
    import dask.array as da

    x = _data(2000, 3, np.float32, 5)
    a, b = _queries(x, 16, 5)
    loc = hsrgeom.BruteForce(x)
    np.save(tmp_path / "x.npy", x)
    for name, src in (("dask", da.from_array(x, chunks=(300, 3))), ("npy", str(tmp_path / "x.npy"))):
        with hd.ShardedIndex.build(src, tmp_path / name, client=client, shards=5, partition="kd") as idx:
            _check(idx, loc, a, b)


@pytest.mark.parametrize("dtype,partition", [(np.float32, "kd"), (np.float64, "chunks")])
def test_source_zarr_path(client, tmp_path, monkeypatch, dtype, partition):
    """X as the path of a zarr array: read chunk by chunk by the workers, never in the client."""
    zarr = pytest.importorskip("zarr")
    x = _data(2500, 3, dtype, 6)
    a, b = _queries(x, 16, 6)
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, chunks=(400, 3), dtype=dtype)
    z[:] = x
    # the client reads only the array's metadata (and empty selections): reading data here fails
    reads = []

    def no_data(orig):
        def get(self, *args, **kwargs):
            out = orig(self, *args, **kwargs)
            if np.size(out):
                reads.append(args)
            return out
        return get

    for name in ("__getitem__", "get_basic_selection", "get_orthogonal_selection"):
        monkeypatch.setattr(zarr.Array, name, no_data(getattr(zarr.Array, name)))
    with hd.ShardedIndex.build(tmp_path / "x.zarr", tmp_path / "ix", client=client, shards=5,
                               partition=partition) as idx:
        assert idx.dtype == np.dtype(dtype) and idx.n == len(x)
        _check(idx, hsrgeom.BruteForce(x), a, b)
    assert not reads, f"zarr data read in the client: {reads[:3]}"


def test_source_path_errors(client, tmp_path):
    """A path that is neither a .npy file nor a zarr array: a ValueError naming X, nothing built."""
    zarr = pytest.importorskip("zarr")
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("not an array")
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    for bad, why in (("empty_dir", "not a zarr array"), ("notes.txt", "not a zarr array"),
                     ("group.zarr", "not a zarr array"), ("missing.zarr", "does not exist"),
                     ("missing.npy", "cannot read the .npy file")):
        with pytest.raises(ValueError, match="^X: ") as e:
            hd.ShardedIndex.build(tmp_path / bad, tmp_path / "ix", client=client, shards=2)
        assert str(e.value).startswith("X: ") and why in str(e.value), str(e.value)
        assert not (tmp_path / "ix").exists()
    z = zarr.open_array(str(tmp_path / "i.zarr"), mode="w", shape=(10, 2), dtype=np.int32)
    z[:] = 1
    with pytest.raises(TypeError, match="float32 or float64"):
        hd.ShardedIndex.build(tmp_path / "i.zarr", tmp_path / "ix", client=client)


def test_kd_prunes_and_count_uses_manifest(client, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((8000, 2))
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=16, partition="kd") as idx:
        a = np.array([[1.0, 0.0]] * 4)
        b = np.array([0.99, 0.5, 0.0, 2.0])
        c = idx.count(a, b)
        assert np.array_equal(c, hsrgeom.BruteForce(x).count(a, b))
        st = idx.stats
        assert st.shards_visited[0] < 16 and st.shards_inside[2] == 16 and st.shards_visited[3] == 0
        idx.report(a[:1], b[:1])
        assert idx.stats.shards_visited[0] <= 4  # a thin slab of a 4x4 kd grid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dask_dataframe(client, tmp_path, dtype):
    """output="dask": a lazy dask DataFrame (query, id), one partition per visited shard, whose
    compute() is the gathered answer up to row order."""
    dd = pytest.importorskip("dask.dataframe")
    x = _data(1000, 2, dtype, 9)
    a, b = _queries(x, 8, 9)
    r = hsrgeom.BruteForce(x).report(a, b)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=4, partition="kd") as idx:
        df = idx.report(a, b, output="dask")
        assert isinstance(df, dd.DataFrame) and list(df.columns) == ["query", "id"]
        assert 1 <= df.npartitions == idx.stats.tasks <= 4  # one partition per visited shard
        assert not df.known_divisions
        got = df.compute()
        assert [str(t) for t in got.dtypes] == ["int64", "int64"]
        got = got.sort_values(["query", "id"])
        assert np.array_equal(got["query"].to_numpy(), r.rows()) and np.array_equal(got["id"].to_numpy(), r.ids)
        assert got.shape[0] == r.ids.size and df.map_partitions(len).compute().sum() == r.ids.size
        none = idx.report(a[:2], [1e9, 1e9], output="dask")  # no shard visited
        assert list(none.columns) == ["query", "id"] and len(none.compute()) == 0
        loc = hsrgeom.BruteForce(x)
        new = idx.insert(x[:40] + 0.25)  # deltas and tombstones in the shards' answers
        loc.insert(x[:40] + 0.25)
        idx.remove([1, 2, int(new[3])])
        loc.remove([1, 2, int(new[3])])
        r = loc.report(a, b)
        got = idx.report(a, b, output="dask").compute().sort_values(["query", "id"])
        assert np.array_equal(got["query"].to_numpy(), r.rows()) and np.array_equal(got["id"].to_numpy(), r.ids)


def test_sum_values(client, tmp_path):
    x = _data(1200, 3, np.float64, 4)
    vals = np.random.default_rng(1).standard_normal((1200, 2))
    a, b = _queries(x, 12, 4)
    loc = hsrgeom.BruteForce(x)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=5, values=vals, partition="kd") as idx:
        for v in ("attached", vals):
            s, sl = idx.sum(a, b, v, power=2), loc.sum(a, b, vals, power=2)
            assert np.array_equal(s.counts, sl.counts)
            np.testing.assert_allclose(s.sums, sl.sums, rtol=1e-9, atol=1e-9)
        new = idx.insert(x[:5] + 0.25, values=vals[:5])
        loc.insert(x[:5] + 0.25)
        idx.remove([0, 7, int(new[1])])
        loc.remove([0, 7, int(new[1])])
        vv = np.concatenate([vals, vals[:5]])
        s, sl = idx.sum(a, b, "attached", power=1), loc.sum(a, b, vv, power=1)
        assert np.array_equal(s.counts, sl.counts)
        np.testing.assert_allclose(s.sums, sl.sums, rtol=1e-9, atol=1e-9)


# ---- the rounding-safe box test ---------------------------------------------------------------
def _exact(a, x):
    return sum((Fraction(float(ai)) * Fraction(float(xi)) for ai, xi in zip(a, x)), Fraction(0))


coords = st.one_of(st.integers(-8, 8).map(float), st.floats(-1e3, 1e3, allow_nan=False, width=32),
                   st.floats(-1e-3, 1e-3, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4).flatmap(lambda d: st.tuples(
    st.lists(coords, min_size=d, max_size=d), st.lists(coords, min_size=d, max_size=d),
    st.lists(coords, min_size=d, max_size=d), st.integers(0, 2 ** d - 1), st.sampled_from([np.float32, np.float64]),
    st.sampled_from(["corner_down", "corner_up", "corner_exact", "random"]), coords)))
def test_skip_test_is_rounding_safe(case):
    """Points at the box corners, offsets exactly at (or one float beside) a corner's exact
    score: SKIP only if no corner reaches the offset, INSIDE only if every corner does."""
    u, v, a, ci, dtype, mode, rb = case
    lo = np.minimum(u, v).astype(dtype).astype(np.float64)
    hi = np.maximum(u, v).astype(dtype).astype(np.float64)
    a = np.asarray(a, dtype=dtype)
    d = len(lo)
    corners = [np.where([(c >> i) & 1 for i in range(d)], hi, lo) for c in range(2 ** d)]
    ex = _exact(a, corners[ci])
    f = float(ex)  # nearest
    if mode == "corner_down":
        b = f if Fraction(f) <= ex else float(np.nextafter(f, -np.inf))
    elif mode == "corner_up":
        b = float(np.nextafter(f, np.inf)) if Fraction(f) <= ex else f
    elif mode == "corner_exact":
        b = f
    else:
        b = float(rb)
    st_ = P.classify(a[None], np.array([b]), lo[None], hi[None], np.array([True]))[0, 0]
    scores = [_exact(a, c) for c in corners]
    if st_ == P.SKIP:
        assert all(s < Fraction(b) for s in scores)
    if st_ == P.INSIDE:
        assert all(s >= Fraction(b) for s in scores)
    if any(s >= Fraction(b) for s in scores):
        assert st_ != P.SKIP
    # the bounds used for ordering and pruning top-k are rigorous too
    up, low = P.box_bounds(a[None], lo[None], hi[None])
    assert Fraction(up[0, 0]) >= max(scores) if np.isfinite(up[0, 0]) else True
    assert Fraction(low[0, 0]) <= min(scores) if np.isfinite(low[0, 0]) else True


def test_boundary_points_at_box_corners_end_to_end(client, tmp_path):
    """Shards whose boxes have data points at their corners; half-spaces through those corners."""
    g = np.array([[i, j] for i in range(4) for j in range(4)], dtype=np.float64) * 0.1  # 0.1 is inexact
    x = np.concatenate([g, g + 0.7, g * 3])
    loc = hsrgeom.BruteForce(x)
    a = np.array([[1.0, 1.0], [0.1, 0.3], [-1.0, 2.0], [3.0, -0.7]] * 3)
    b = np.array([_float_score(ai, xi) for ai, xi in zip(a, x[[15, 31, 47, 3, 12, 20, 0, 40, 9, 30, 33, 44]])])
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=8, partition="kd") as idx:
        _check(idx, loc, a, b)


def _float_score(a, x):
    return float(_exact(a, x))


# ---- errors -------------------------------------------------------------------------------------
def test_errors(client, tmp_path):
    x = _data(300, 3, np.float64, 1)
    with pytest.raises(ValueError, match="no manifest.json"):
        hd.ShardedIndex.open(tmp_path, client=client)
    with pytest.raises(ValueError, match="not a directory"):
        hd.ShardedIndex.open(tmp_path / "nope", client=client)
    with pytest.raises(TypeError, match="float32 or float64"):
        hd.ShardedIndex.build(x.astype(np.int64), tmp_path / "i", client=client)
    bad = x.copy()
    bad[17, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        hd.ShardedIndex.build(bad, tmp_path / "nan", client=client, shards=2, partition="chunks")
    assert not (tmp_path / "nan").exists()  # a failed build leaves nothing behind
    with pytest.raises(ValueError, match="partition"):
        hd.ShardedIndex.build(x, tmp_path / "p", client=client, partition="grid")
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=3) as idx:
        with pytest.raises(ValueError, match="d=2 but the index has d=3"):
            idx.report(np.ones((2, 2)), 0.0)
        with pytest.raises(ValueError, match="NaN or inf"):
            idx.count(np.full((1, 3), np.nan), 0.0)
        with pytest.raises(ValueError, match="offsets"):
            idx.report(np.ones((2, 3)), [1, 2, 3])
        with pytest.raises(ValueError, match="k=301"):
            idx.topk(np.ones((1, 3)), 301)
        with pytest.raises(TypeError, match="index dtype"):
            idx.insert(x[:2].astype(np.float32))
        with pytest.raises(ValueError, match="not in the index"):
            idx.remove([300])
        a0 = np.ones((2, 3))
        idx.report(a0, 0.5)
        assert np.array_equal(a0, np.ones((2, 3)))  # the caller's arrays are never modified
        assert "ShardedIndex(" in repr(idx)
    with pytest.raises(ValueError, match="exists and is not an empty directory"):
        hd.ShardedIndex.build(x, tmp_path / "ix", client=client)
    man = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    man["version"] = 99
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="unknown manifest version 99"):
        hd.ShardedIndex.open(tmp_path / "ix", client=client)


def test_corrupted_shard_file_is_reported(client, tmp_path):
    x = _data(600, 2, np.float32, 2)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=3, partition="chunks"):
        pass
    f = tmp_path / "ix" / "shard_00001.g0.hsr"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="shard_00001.g0.hsr"):
        hd.ShardedIndex.open(tmp_path / "ix", client=client)


def test_unreachable_scheduler(tmp_path):
    x = _data(50, 2, np.float64, 0)
    t = time.perf_counter()
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        hd.ShardedIndex.build(x, tmp_path / "ix", client="tcp://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t < 60
    assert not (tmp_path / "ix").exists()


# ---- updates ------------------------------------------------------------------------------------
@pytest.mark.parametrize("partition,dtype", [("kd", np.float32), ("chunks", np.float64)])
def test_updates_flush_reopen(client, tmp_path, partition, dtype):
    x = _data(1200, 3, dtype, 11)
    a, b = _queries(x, 16, 11)
    loc = hsrgeom.BruteForce(x)
    rng = np.random.default_rng(2)
    path = tmp_path / "ix"
    idx = hd.ShardedIndex.build(x, path, client=client, shards=6, partition=partition, kind="partition_tree")
    pts = np.concatenate([x[:30], rng.uniform(-6, 6, (50, 3)).astype(dtype)])  # duplicates and new extremes
    new = idx.insert(pts)
    assert np.array_equal(new, loc.insert(pts))
    gone = np.concatenate([np.arange(0, 1200, 7), new[::3]])
    idx.remove(gone)
    loc.remove(gone)
    one = idx.insert(x[5])  # one point, 1-D
    assert one.tolist() == loc.insert(x[5]).tolist()
    assert idx.n == loc.n
    _check(idx, loc, a, b)
    with pytest.raises(ValueError, match="not in the index"):
        idx.remove([int(gone[3])])
    idx.close()
    # unflushed updates are in the write-ahead log: open() replays them
    with hd.ShardedIndex.open(path, client=client) as idx:
        assert idx.n == loc.n
        _check(idx, loc, a, b)
        idx.flush()
        assert not os.listdir(path / "wal")
        _check(idx, loc, a, b)
        more = idx.insert(x[100:110] * 2)
        loc.insert(x[100:110] * 2)
        idx.remove(more[:2])
        loc.remove(more[:2])
        _check(idx, loc, a, b)
        idx.flush()
    files = sorted(os.listdir(path))
    man = json.loads((path / "manifest.json").read_text())
    assert man["generation"] == 2 and man["n"] == loc.n and man["next_id"] == 1291
    assert {e["file"] for e in man["shards"]} | {e["ids_file"] for e in man["shards"]} | {"manifest.json", "wal"} \
        == set(files)  # old generations deleted
    with hd.ShardedIndex.open(path, client=client) as idx:
        _check(idx, loc, a, b)


# ---- faults -------------------------------------------------------------------------------------
def _kill_holder(client, idx, shard):
    """Kill the worker process holding ``shard`` (its nanny starts a new one)."""
    w = idx.shards[shard]["workers"]
    assert w, "shard not in memory"
    try:
        client.run(os._exit, 1, workers=w[:1])
    except Exception:  # noqa: BLE001 - the connection to the dying worker breaks
        pass
    return w[0]


def test_worker_killed_after_build_and_after_unflushed_inserts(fresh_client, tmp_path):
    client_ = fresh_client
    x = _data(3000, 2, np.float64, 21)
    a, b = _queries(x, 30, 21)
    loc = hsrgeom.BruteForce(x)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client_, shards=6, partition="kd") as idx:
        before = idx.report(a, b)
        _kill_holder(client_, idx, 0)
        assert idx.report(a, b) == before  # lost shards rebuilt from their lineage (the files)
        _check(idx, loc, a, b)
        new = idx.insert(x[:200] + 0.5)
        loc.insert(x[:200] + 0.5)
        idx.remove(new[:10])
        loc.remove(new[:10])
        client_.wait_for_workers(1, timeout=120)
        distributed.wait([f for f in idx._futs])
        dirty = [s["shard"] for s in idx.shards if s["pending_updates"]]
        _kill_holder(client_, idx, dirty[0])
        _check(idx, loc, a, b)  # nothing inserted is lost: updates replayed from the lineage
        assert idx.n == loc.n


def test_worker_killed_during_a_batch(fresh_client, tmp_path):
    client_ = fresh_client
    x = _data(20000, 2, np.float32, 22)
    a, b = _queries(x, 400, 22)
    loc = hsrgeom.BruteForce(x)
    client_.wait_for_workers(2, timeout=120)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client_, shards=8, partition="chunks",
                               kind="brute_force") as idx:
        expect = loc.report(a, b)
        results, killed = [], threading.Event()

        def batches():  # keeps querying until two batches ran after the kill
            after = 0
            while after < 2:
                was = killed.is_set()
                results.append(idx.report(a, b))
                after += was

        t = threading.Thread(target=batches)
        t.start()
        while not results and t.is_alive():
            time.sleep(0.01)
        _kill_holder(client_, idx, 3)  # while a batch is running
        killed.set()
        t.join(120)
        assert not t.is_alive()
        assert len(results) >= 3 and all(r == expect for r in results)


def test_corrupted_file_is_never_used_after_a_worker_loss(fresh_client, tmp_path):
    client_ = fresh_client
    x = _data(2000, 2, np.float64, 23)
    a, b = _queries(x, 10, 23)
    client_.wait_for_workers(2, timeout=120)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client_, shards=2, partition="chunks") as idx:
        f = tmp_path / "ix" / idx.shards[0]["file"]
        raw = bytearray(f.read_bytes())
        raw[100] ^= 1
        f.write_bytes(bytes(raw))
        _kill_holder(client_, idx, 0)
        with pytest.raises(ValueError, match=idx.shards[0]["file"].replace(".", r"\.")):
            idx.report(a, b)


def _count_file_loads():
    """In a worker: count hsrgeom.load calls (a shard loaded from its file, i.e. built again)."""
    import hsrgeom as h

    if not hasattr(h, "_loads_seen"):
        orig = h.load

        def load(*args, **kwargs):
            h._loads_seen += 1
            return orig(*args, **kwargs)

        h._loads_seen, h.load = 0, load
    return h._loads_seen


def _built_left():
    from hsrgeom.distributed import _shard

    return len(_shard._BUILT)


def _restricted(dask_scheduler, keys):
    return [k for k in keys if dask_scheduler.tasks[k].worker_restrictions or dask_scheduler.tasks[k].host_restrictions]


def test_each_shard_is_built_once(fresh_client, tmp_path):
    """The build task's index is the one queries run on (its load task takes it, without reading
    the file); after a worker loss the lost shards are rebuilt from their files."""
    client_ = fresh_client
    client_.wait_for_workers(2, timeout=120)
    client_.run(_count_file_loads)
    x = _data(3000, 2, np.float64, 24)
    a, b = _queries(x, 20, 24)
    loc = hsrgeom.BruteForce(x)
    for part in ("kd", "chunks"):
        with hd.ShardedIndex.build(x, tmp_path / part, client=client_, shards=6, partition=part) as idx:
            _check(idx, loc, a, b)
            assert sum(client_.run(_count_file_loads).values()) == 0  # no shard read back from its file
            assert sum(client_.run(_built_left).values()) == 0  # nothing left behind in the workers
            keys = [s["key"] for s in idx.shards]
            assert client_.run_on_scheduler(_restricted, keys=keys) == []  # recomputation may go anywhere
    with hd.ShardedIndex.build(x, tmp_path / "u", client=client_, shards=6, partition="kd") as idx:
        new = idx.insert(x[:50] + 0.125)
        loc.insert(x[:50] + 0.125)
        idx.flush()  # the rewritten shards are not read back either
        assert sum(client_.run(_count_file_loads).values()) == 0
        assert sum(client_.run(_built_left).values()) == 0
        _kill_holder(client_, idx, 0)
        _check(idx, loc, a, b)  # lost shards rebuilt from their (flushed) files
        assert idx.n == loc.n and new[0] == len(x)


def test_one_task_per_worker_thread(client, tmp_path):
    """A batch runs one task per worker thread holding visited shards, not one per shard; the
    answers are those of one task per shard."""
    x = _data(4000, 2, np.float32, 25)
    a, b = _queries(x, 40, 25)
    b[2:6] = -1e9  # every shard visited
    loc = hsrgeom.BruteForce(x)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=16, partition="kd") as idx:
        threads = sum(client.nthreads().values())
        _check(idx, loc, a, b)
        r = idx.report(a, b)
        assert idx.stats.shards_visited.max() == 16 and idx.stats.tasks <= threads
        c = idx.count(a, b)
        assert idx.stats.tasks <= threads
        try:
            idx._group_by_worker = False
            assert idx.report(a, b) == r and idx.stats.tasks == 16
            assert np.array_equal(idx.count(a, b), c)
        finally:
            del idx._group_by_worker


def test_real_multiprocess_cluster(tmp_path):
    """``dask scheduler --scheduler-file F`` and two ``dask worker --scheduler-file F --nthreads 1``
    as subprocesses on localhost; the index connects through the scheduler file."""
    sf = tmp_path / "scheduler.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cli = [sys.executable, "-m"]
    procs = [subprocess.Popen(cli + ["distributed.cli.dask_scheduler", "--scheduler-file", str(sf), "--port", "0",
                                     "--no-dashboard", "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(cli + ["distributed.cli.dask_worker", "--scheduler-file", str(sf),
                                                 "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        x = _data(4000, 3, np.float32, 31)
        a, b = _queries(x, 20, 31)
        loc = hsrgeom.BruteForce(x)
        with hd.ShardedIndex.build(x, tmp_path / "ix", client=str(sf), shards=6, partition="kd", timeout=60) as idx:
            idx.client.wait_for_workers(2, timeout=120)
            assert len(idx.client.scheduler_info()["workers"]) == 2
            _check(idx, loc, a, b)
            assert len({w for s in idx.shards for w in s["workers"]}) >= 1
        with hd.ShardedIndex.open(tmp_path / "ix", client=str(sf), timeout=60) as idx:
            _check(idx, loc, a, b)
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_shard_sizes_are_registered_with_dask(client, tmp_path):
    """dask.sizeof sees a shard's real size (points, ids, structure), so spilling and balancing
    do not take a shard for a few bytes."""
    x = _data(5000, 4, np.float64, 41)
    with hd.ShardedIndex.build(x, tmp_path / "ix", client=client, shards=2, partition="chunks") as idx:
        sizes = client.nbytes(summary=False)
        for s in idx.shards:
            assert sizes[s["key"]] >= s["n"] * (4 * 8 + 8)


def test_demo_distributed(capsys):
    from hsrgeom.__main__ import main

    assert main(["demo", "--distributed", "--n", "4000", "--dims", "2", "--queries", "20", "--shards", "4"]) == 0
    out = capsys.readouterr().out
    assert "exactly the local index's sets" in out and "shards visited per query" in out
