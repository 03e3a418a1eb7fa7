"""Arguments beyond what the compiled core represents: clear errors naming the argument (never a
wrapped value, pybind11's "incompatible function arguments", or a silently ignored parameter),
and valid extreme inputs that must work."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hsrgeom
MAX_D = 2**24  # _validate.MAX_D (documented bound)
MAX_POWER = 2**31 - 1  # _validate.MAX_POWER

from exact_reference import report as exact_report


# ---- d and n ------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2**31, 2**32 + 3, MAX_D + 1])
def test_d_beyond_the_bound(d):
    with pytest.raises(ValueError, match=r"points has d=\d+ columns; at most"):
        hsrgeom.BruteForce(np.zeros((0, d)))
    with pytest.raises(ValueError, match="points"):
        hsrgeom.build_index(np.zeros((0, d), dtype=np.float32))


def test_d_at_the_bound():
    assert hsrgeom.BruteForce(np.zeros((0, MAX_D))).d == MAX_D


def test_n_beyond_the_bound():
    # a broadcast view: the bound is checked before anything is copied. In a subprocess with
    # limited memory, so that a build that would copy 16 GiB fails instead of swapping
    code = textwrap.dedent("""
        import resource, numpy as np, hsrgeom
        # what is mapped now (a sanitizer's shadow memory included) + 2 GiB
        vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), vm + (2 << 30)))
        big = np.broadcast_to(np.zeros((1, 1)), (2**31, 1))
        try:
            hsrgeom.BruteForce(big)
        except ValueError as e:
            print(e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "points has n=2147483648 rows" in r.stdout, (r.stdout, r.stderr[-2000:])


# ---- integer parameters ---------------------------------------------------------------------------
P2 = np.random.default_rng(0).random((50, 2))
P3 = np.random.default_rng(0).random((50, 3))

BUILDS = [
    ("leaf_size", lambda v: hsrgeom.PartitionTree(P2, leaf_size=v)),
    ("leaf_size", lambda v: hsrgeom.SimplicialPartitionTree(P2, leaf_size=v)),
    ("r", lambda v: hsrgeom.SimplicialPartitionTree(P2, r=v)),
    ("seed", lambda v: hsrgeom.SimplicialPartitionTree(P2, seed=v * 2**33)),
    ("table_layers", lambda v: hsrgeom.ConvexLayers(P2, table_layers=v)),
    ("max_layers", lambda v: hsrgeom.ConvexLayers(P2, max_layers=v * 2**32)),
    ("max_layers", lambda v: hsrgeom.ConvexLayers3(P3, max_layers=v * 2**32)),
    ("grid", lambda v: hsrgeom.ShallowCutting3(P3, grid=v)),
    ("max_depth", lambda v: hsrgeom.ShallowCutting3(P3, max_depth=v * 2**32)),
    ("max_candidates", lambda v: hsrgeom.ShallowCutting3(P3, max_candidates=v * 2**32)),
    ("n_threads", lambda v: hsrgeom.PartitionTree(P2, n_threads=v)),
    ("n_threads", lambda v: hsrgeom.QuantizedScan(P2, n_threads=v)),
    ("leaf_size", lambda v: hsrgeom.build_index(P2, leaf_size=v)),
]


@pytest.mark.parametrize("name,build", BUILDS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BUILDS)])
@pytest.mark.parametrize("value", [2**31, 2**40])
def test_structure_parameters_beyond_the_core_range(name, build, value):
    with pytest.raises(ValueError, match=f"^{name} must be <= "):
        build(value)


QUERIES = [
    ("power", lambda ix, v: ix.sum(np.ones((1, 2)), 0.0, power=v)),
    ("k", lambda ix, v: ix.topk(np.ones((1, 2)), v * 2**32)),
    ("n_threads", lambda ix, v: ix.report(np.ones((1, 2)), 0.0, n_threads=v)),
    ("n_threads", lambda ix, v: ix.count(np.ones((1, 2)), 0.0, n_threads=v)),
    ("n_threads", lambda ix, v: ix.topk(np.ones((1, 2)), 1, n_threads=v)),
    ("n_threads", lambda ix, v: ix.attach_values(np.ones(50), n_threads=v)),
]


@pytest.mark.parametrize("name,call", QUERIES, ids=[f"{i}-{n}" for i, (n, _) in enumerate(QUERIES)])
@pytest.mark.parametrize("value", [2**31, 2**63])
def test_query_arguments_beyond_the_core_range(name, call, value):
    with pytest.raises(ValueError, match=f"^{name} must be <= "):
        call(hsrgeom.PartitionTree(P2), value)


def test_remove_ids_beyond_int64():
    index = hsrgeom.PartitionTree(P2)
    with pytest.raises(ValueError, match=f"ids: {2**64 - 1} is not in the index"):
        index.remove(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(TypeError, match="ids must be integers"):
        index.remove([2**70])
    assert index.n == 50


def test_power_at_the_bound():
    s = hsrgeom.BruteForce(P2).sum(np.ones((1, 2)), 0.5, power=MAX_POWER)
    assert s.counts[0] == np.sum(P2.sum(axis=1) >= 0.5)
    with pytest.raises(ValueError, match=f"power must be <= {MAX_POWER}"):
        hsrgeom.BruteForce(P2).sum(np.ones((1, 2)), 0.5, power=MAX_POWER + 1)


# ---- build_index params -----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [100, 5000])
def test_build_index_checks_params_whatever_auto_builds(n):
    pts = np.random.default_rng(1).random((n, 2))
    with pytest.raises(ValueError, match="leaf_size must be >= 1"):
        hsrgeom.build_index(pts, leaf_size=0)
    with pytest.raises(ValueError, match="split must be one of"):
        hsrgeom.build_index(pts, split="median")
    with pytest.raises(TypeError, match="unexpected keyword argument 'leafsize'"):
        hsrgeom.build_index(pts, leafsize=8)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        hsrgeom.build_index(pts, kind="brute_force", batch_size=0)
    assert hsrgeom.build_index(pts, leaf_size=8).n == n


def test_build_index_unknown_params_of_a_kind():
    with pytest.raises(TypeError, match=r"BruteForce\(\) got an unexpected keyword argument 'leaf_size'"):
        hsrgeom.build_index(P2, kind="brute_force", leaf_size=8)
    with pytest.raises(ValueError, match="table_layers must be <= 512"):
        hsrgeom.build_index(P2, kind="convex_layers", table_layers=513)
    assert hsrgeom.build_index(P2, kind="partition_tree", leaf_size=3).leaf_size == 3


# ---- topk with nothing left ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [hsrgeom.BruteForce, hsrgeom.PartitionTree])
def test_topk_zero_after_removing_everything(cls):
    index = cls(P2)
    index.remove(np.arange(50))
    scores, ids = index.topk(np.ones((3, 2)), 0)
    assert scores.shape == ids.shape == (3, 0) and ids.dtype == np.int64
    assert len(index.stats) == 3
    with pytest.raises(ValueError, match="k=1 is larger"):
        index.topk(np.ones((3, 2)), 1)
    new = index.insert(np.array([[0.5, 0.5]]))
    assert np.array_equal(index.topk(np.ones((3, 2)), 1)[1], np.repeat(new[None], 3, axis=0))


# ---- points near the floating-point limits ----------------------------------------------------------
def _extreme(dtype, how, n=5000, d=3):
    rng = np.random.default_rng(4)
    top = float(np.finfo(dtype).max) / 2
    u = rng.random((n, d))
    x = {"uniform": (2 * u - 1) * top, "positive": (0.5 + 0.5 * u) * top, "negative": -(0.5 + 0.5 * u) * top}[how]
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("how", ["uniform", "positive", "negative"])
def test_build_index_on_points_near_the_limit(dtype, how):
    pts = _extreme(dtype, how)
    index = hsrgeom.build_index(pts)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 3))
    a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(dtype)
    top = float(np.finfo(dtype).max)
    b = np.array([0.0, top / 8, -top / 8, float(pts[0, 0]) / 2])
    res = index.report(a, b)
    for j in range(4):
        assert np.array_equal(res[j], exact_report(pts, a[j], b[j]))
