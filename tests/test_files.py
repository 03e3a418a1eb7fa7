"""Reading hostile index files and pickle states (issue 18, items 3, 4, 6, 14, 15).

Crafted files carry VALID checksums (``pack`` re-packs a header dict and a payload), so they
test the checks behind the checksum. Every bad input must raise ValueError (OSError for an
unreadable path) promptly, naming the file or the field. Calls that crashed, hung or exhausted
memory before the checks existed run in a subprocess (``isolated``), under a time limit and,
where the point is not to allocate, a limit on the address space.
"""
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import hsrgeom
import exact_reference as ref

MAGIC = b"HSRGEOM\x00"
DATA = Path(__file__).parent / "data"


# ---- helpers ------------------------------------------------------------------------------------
def unpack(data):
    """(version, header dict, payload) of a file's bytes."""
    version, hlen = struct.unpack("<IQ", data[8:20])
    return version, json.loads(data[20 : 20 + hlen]), data[20 + hlen : -32]


def pack(header, payload, version=None, raw_header=None):
    """A file of ``header`` (a dict, or the raw bytes ``raw_header``) and ``payload`` with a
    valid sha256 checksum."""
    raw = json.dumps(header).encode() if raw_header is None else raw_header
    if version is None:
        version = 2 if isinstance(header, dict) and "values" in header else 1
    body = MAGIC + struct.pack("<IQ", version, len(raw)) + raw + payload
    return body + hashlib.sha256(body).digest()


def crafted(cls="BruteForce", points=((1.0, 0.0), (0.0, 1.0)), ids=None, dtype="float64", params=None,
            next_id=None, **header):
    """A crafted file: points written with ``dtype`` (any numpy dtype, to forge payloads),
    ids (default 0..n-1); ``header`` entries override or (None) delete header keys."""
    pts = np.asarray(points, dtype=dtype)
    n = len(pts)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    h = {"class": cls, "dtype": str(dtype), "n": n, "d": pts.shape[1] if pts.ndim == 2 else 0,
         "params": {} if params is None else params, "reason": "crafted", "next_id": n if next_id is None else next_id}
    for k, v in header.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return pack(h, pts.tobytes() + ids.astype("<i8").tobytes())


def rejects(tmp_path, data, match=None, name="crafted.hsr"):
    """``data`` is rejected with ValueError by load (naming the path), from_bytes and unpickling."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as err:
        hsrgeom.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match=match):
        hsrgeom._structures._from_bytes(data)
    try:  # unpickled as the class the header names, where it names one
        cls = getattr(hsrgeom, unpack(data)[1]["class"])
    except Exception:  # noqa: BLE001 - any malformed header
        cls = hsrgeom.BruteForce
    cls = cls if isinstance(cls, type) else hsrgeom.BruteForce
    with pytest.raises(ValueError, match=match):
        cls.__new__(cls).__setstate__({"hsrgeom": data})


ISOLATED_PRELUDE = """
import json, os, resource, struct, sys, hashlib
import numpy as np
import hsrgeom
def limit_memory(extra):
    # address space: what the process has mapped now plus ``extra`` bytes
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))
def outcome(call):
    try:
        call()
    except ValueError as exc:
        print("ValueError:", exc)
    except BaseException as exc:
        print("OTHER:", type(exc).__name__, exc)
    else:
        print("ACCEPTED")
"""


def isolated(code, timeout=60):
    """Run ``code`` (after ISOLATED_PRELUDE) in a fresh interpreter; returns its stdout, after
    asserting that it exited cleanly (no crash) within ``timeout`` seconds."""
    try:
        r = subprocess.run([sys.executable, "-c", ISOLATED_PRELUDE + textwrap.dedent(code)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s")
    assert r.returncode == 0, f"exit code {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout


def assert_value_error(out, match=""):
    assert out.startswith("ValueError:"), out
    assert match in out, out


@pytest.fixture
def small_file():
    index = hsrgeom.PartitionTree(np.random.default_rng(3).standard_normal((6, 2)), leaf_size=2)
    index.insert(np.ones((1, 2)))
    index.remove([2])
    return index.to_bytes()


# ---- round trips --------------------------------------------------------------------------------
STRUCTURES = [
    lambda p: hsrgeom.BruteForce(p),
    lambda p: hsrgeom.QuantizedScan(p),
    lambda p: hsrgeom.PartitionTree(p, leaf_size=3, split="pca"),
    lambda p: hsrgeom.SimplicialPartitionTree(p, r=4, leaf_size=3, seed=5),
    lambda p: hsrgeom.ConvexLayers(p[:, :2], table_layers=2),
    lambda p: hsrgeom.ConvexLayers3(p, max_layers=3),
    lambda p: hsrgeom.ShallowCutting3(p, grid=2, max_depth=16),
]


@pytest.mark.parametrize("make", STRUCTURES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(make, dtype, tmp_path):
    index = make(np.random.default_rng(1).standard_normal((40, 3)).astype(dtype))
    index.insert(np.zeros((2, index.d), dtype=dtype))
    index.remove([0, 7])
    index.save(tmp_path / "i.hsr")
    a = np.random.default_rng(2).standard_normal((5, index.d)).astype(dtype)
    for clone in (hsrgeom.load(tmp_path / "i.hsr"), pickle.loads(pickle.dumps(index))):
        assert type(clone) is type(index) and clone._params() == index._params()
        assert clone.to_bytes() == index.to_bytes()
        assert clone.report(a, 0.1) == index.report(a, 0.1)


def test_files_written_by_main_still_load():
    """Fixtures written by the format's writer before this module existed (versions 1, 2)."""
    t = hsrgeom.load(DATA / "main_v1_partition_tree.hsr")
    assert type(t) is hsrgeom.PartitionTree and (t.leaf_size, t.split) == (4, "pca")
    np.testing.assert_array_equal(t.ids(), [0, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 14])
    assert t.insert(np.zeros((1, 2)))[0] == 15
    c = hsrgeom.load(DATA / "main_v2_convex_layers.hsr")
    assert type(c) is hsrgeom.ConvexLayers and c.dtype == np.float32
    assert c.max_candidates is None  # written before the parameter: the default rebuilds it
    np.testing.assert_array_equal(c.ids(), [0, 1, 3, 4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(c.values(), np.arange(11.0))
    for index in (t, c):
        pts, ids = index.points(), index.ids()
        a = np.array([[0.6, 0.8], [-1.0, 0.25]], dtype=index.dtype)
        res = index.report(a, [0.1, -0.3])
        for j in range(2):
            np.testing.assert_array_equal(res[j], ids[ref.report(pts, a[j], [0.1, -0.3][j])])


# ---- truncation, bit flips, trailing data -------------------------------------------------------
def test_truncated_at_every_offset(small_file, tmp_path):
    path = tmp_path / "t.hsr"
    for k in range(len(small_file)):
        path.write_bytes(small_file[:k])
        with pytest.raises(ValueError):
            hsrgeom.load(path)
        with pytest.raises(ValueError):
            hsrgeom._structures._from_bytes(small_file[:k])


def test_bit_flips(small_file):
    for i in range(len(small_file)):
        for bit in (0x01, 0x80):
            bad = bytearray(small_file)
            bad[i] ^= bit
            with pytest.raises(ValueError):
                hsrgeom._structures._from_bytes(bytes(bad))


def test_trailing_data(small_file, tmp_path):
    rejects(tmp_path, small_file + b"\x00")
    # trailing data that a crafted header accounts for in no field
    _, h, payload = unpack(small_file)
    rejects(tmp_path, pack(h, payload + b"\x00" * 8), match="imply")


# ---- item 3: crashes in the build --------------------------------------------------------------
def test_d_zero_pca_is_rejected(tmp_path):
    data = crafted("PartitionTree", points=np.zeros((3, 0)), params={"leaf_size": 2, "split": "pca"})
    (tmp_path / "d0.hsr").write_bytes(data)
    out = isolated(f"outcome(lambda: hsrgeom.load({str(tmp_path / 'd0.hsr')!r}))")
    assert_value_error(out, "'d'")


def test_build_options_in_params_are_rejected(tmp_path):
    data = crafted("BruteForce", params={"n_threads": 100000})
    rejects(tmp_path, data, match="params")
    data = crafted("PartitionTree", params={"leaf_size": 2, "split": "widest", "n_threads": 100000})
    (tmp_path / "nt.hsr").write_bytes(data)
    out = isolated(f"outcome(lambda: hsrgeom.load({str(tmp_path / 'nt.hsr')!r}))")
    assert_value_error(out, "params")


def test_compiled_tree_rejects_d_zero():
    """The C++ guard behind the Python checks: a tree over points without coordinates."""
    out = isolated("""
        pts = np.zeros((3, 0))
        outcome(lambda: hsrgeom._core.PartitionTreeF64(pts, 2, 1, 1))
    """)
    assert_value_error(out, "d >= 1")


# ---- item 4: non-finite points -------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points_are_rejected(bad, tmp_path):
    rejects(tmp_path, crafted(points=[[1.0, 0.0], [bad, 1.0]]), match="NaN or inf")


@pytest.mark.parametrize("cls, d", [("ConvexLayers", 2), ("ConvexLayers3", 3)])
def test_non_finite_points_layers(cls, d, tmp_path):
    pts = np.random.default_rng(0).standard_normal((20, d))
    pts[5, 0] = np.nan
    params = {"table_layers": 64, "max_layers": None} if cls == "ConvexLayers" else {"max_layers": 256}
    (tmp_path / "nan.hsr").write_bytes(crafted(cls, points=pts, params=params))
    out = isolated(f"""
        limit_memory(1 << 30)
        def call():
            index = hsrgeom.load({str(tmp_path / 'nan.hsr')!r})
            index.topk(np.ones((1, {d})), 3)
        outcome(call)
    """, timeout=30)
    assert_value_error(out, "NaN or inf")


# ---- item 6: dtype and ids -----------------------------------------------------------------------
def test_int64_payload_is_rejected(tmp_path):
    """An int64 payload was read as int64 points: report([[.6, .6]], .5) returned [] for [0, 1]."""
    rejects(tmp_path, crafted(points=[[1, 0], [0, 1]], dtype="int64"), match="'dtype'")


@pytest.mark.parametrize("dtype", ["float16", ">f8", "<f8", "f8", "object", 3, None])
def test_other_dtypes_are_rejected(dtype, tmp_path):
    data = crafted()
    _, h, payload = unpack(data)
    h["dtype"] = dtype
    rejects(tmp_path, pack(h, payload), match="dtype")


@pytest.mark.parametrize("ids, next_id, match", [
    ([-1, 1], 2, r"\[0, next_id"),
    ([1, 1], 2, "unique"),
    ([1, 0], 2, "ascending"),
    ([0, 5], 3, r"\[0, next_id"),
    ([0, 1], 1, "next_id"),
    ([0, 2**40], 2**41, None),
])
def test_hostile_ids_are_rejected(ids, next_id, match, tmp_path):
    rejects(tmp_path, crafted(ids=ids, next_id=next_id), match=match)


def test_next_id_backed_by_values_is_trusted(monkeypatch):
    """With value rows in the payload, next_id beyond the unbacked bound is accepted."""
    from hsrgeom import _format

    monkeypatch.setattr(_format, "MAX_UNBACKED_IDS", 4096)
    big = _format.MAX_UNBACKED_IDS + 1
    with pytest.raises(ValueError, match="next_id"):  # without values
        hsrgeom._structures._from_bytes(crafted(points=np.zeros((0, 2)), next_id=big))
    index = hsrgeom.BruteForce(np.zeros((1, 2))).attach_values(np.zeros(1, dtype=np.float32))
    _, h, payload = unpack(index.to_bytes())
    h["next_id"] = big
    ok = hsrgeom._structures._from_bytes(pack(h, payload[:24] + np.zeros(big, dtype=np.float32).tobytes()))
    assert ok.insert(np.zeros((1, 2)), np.float32([1.0]))[0] == big
    h["next_id"] = 3  # value rows must match next_id
    with pytest.raises(ValueError, match="imply"):
        hsrgeom._structures._from_bytes(pack(h, payload[:24] + np.zeros(2, dtype=np.float32).tobytes()))


# ---- item 14: sizes from the header or the state ----------------------------------------------------
def test_huge_next_id_allocates_nothing(tmp_path):
    (tmp_path / "big.hsr").write_bytes(crafted(next_id=3 * 10**9))
    out = isolated(f"""
        limit_memory(256 << 20)
        outcome(lambda: hsrgeom.load({str(tmp_path / 'big.hsr')!r}))
    """)
    assert_value_error(out, "next_id")


@pytest.mark.parametrize("field, value", [("n", 10**12), ("d", 10**12), ("next_id", 10**18), ("n", 2**63)])
def test_huge_sizes_allocate_nothing(field, value, tmp_path):
    data = crafted(**{field: value}) if field != "next_id" else crafted(next_id=value)
    (tmp_path / "big.hsr").write_bytes(data)
    out = isolated(f"""
        limit_memory(64 << 20)
        outcome(lambda: hsrgeom.load({str(tmp_path / 'big.hsr')!r}))
    """)
    assert_value_error(out)


def test_huge_declared_header_length(small_file, tmp_path):
    for hlen in (len(small_file), 2**40, 2**64 - 1):
        data = small_file[:12] + struct.pack("<Q", hlen) + small_file[20:]
        rejects(tmp_path, data, match="header length")


def test_setstate_checks_the_state(small_file):
    out = isolated("""
        limit_memory(256 << 20)
        t = hsrgeom.PartitionTree.__new__(hsrgeom.PartitionTree)
        outcome(lambda: t.__setstate__({"hsrgeom": 10**13}))
    """)
    assert_value_error(out, "bytes")
    t = hsrgeom.PartitionTree.__new__(hsrgeom.PartitionTree)
    for state in (None, [small_file], {"hsrgeom": small_file, "x": 1}, {}, {"hsrgeom": "text"}):
        with pytest.raises(ValueError, match="state"):
            t.__setstate__(state)
    t.__setstate__({"hsrgeom": small_file})
    assert t.n == 6
    with pytest.raises(ValueError, match="not a BruteForce"):
        hsrgeom.BruteForce.__new__(hsrgeom.BruteForce).__setstate__({"hsrgeom": small_file})


def test_pickle_of_another_class_is_rejected(small_file):
    """A pickle naming BruteForce whose state holds a PartitionTree."""
    class Forge:
        def __reduce__(self):
            return (hsrgeom.BruteForce.__new__, (hsrgeom.BruteForce,), {"hsrgeom": small_file})

    with pytest.raises(ValueError, match="holds a PartitionTree, not a BruteForce"):
        pickle.loads(pickle.dumps(Forge()))


def test_dev_zero():
    out = isolated("""
        limit_memory(64 << 20)
        outcome(lambda: hsrgeom.load("/dev/zero"))
    """, timeout=20)
    assert_value_error(out, "magic")


def test_endless_stream(small_file, tmp_path):
    """A FIFO whose writer never stops: the reader stops after the bytes the header implies."""
    fifo = tmp_path / "endless"
    os.mkfifo(fifo)
    out = isolated(f"""
        import threading
        data = {small_file!r}
        def write():
            try:
                with open({str(fifo)!r}, "wb") as f:
                    f.write(data)
                    while True:
                        f.write(b"\\0" * 65536)
            except BrokenPipeError:
                pass
        threading.Thread(target=write, daemon=True).start()
        limit_memory(256 << 20)
        outcome(lambda: hsrgeom.load({str(fifo)!r}))
    """, timeout=20)
    assert_value_error(out, "trailing data")


def test_stream_that_ends_loads(small_file, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as f:
            f.write(small_file)

    writer = threading.Thread(target=write)
    writer.start()
    assert hsrgeom.load(fifo).to_bytes() == small_file
    writer.join()


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(OSError):
        hsrgeom.load(tmp_path)
    with pytest.raises(OSError):
        hsrgeom.load(tmp_path / "missing.hsr")


# ---- item 15: every malformed header is a ValueError --------------------------------------------------
def _header_cases():
    deep = b'{"class": "BruteForce", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    return {
        "unknown param": (dict(params={"leaf_size": 3}), "params"),
        "param type": (dict(cls="PartitionTree", params={"leaf_size": "8", "split": "widest"}), "params"),
        "param value": (dict(cls="PartitionTree", params={"leaf_size": 0, "split": "widest"}), "leaf_size"),
        "param overflow": (dict(cls="PartitionTree", params={"leaf_size": 10**30, "split": "widest"}), "params"),
        "param bool": (dict(cls="ConvexLayers3", points=np.eye(3), params={"max_layers": True}), "params"),
        "params not a dict": (dict(params=[1]), "params"),
        "missing reason": (dict(reason=None), "missing keys"),
        "extra key": (dict(extra=1), "unknown keys"),
        "n inf": (dict(n=1e999), "'n'"),
        "n float": (dict(n=2.0), "'n'"),
        "n negative": (dict(n=-2), "'n'"),
        "d bool": (dict(d=True), "'d'"),
        "unknown class": (dict(cls="Nope"), "'class'"),
        "class not a string": (dict(cls=["BruteForce"]), "'class'"),
        "reason not a string": (dict(reason=3), "'reason'"),
        "wrong d for the class": (dict(cls="ConvexLayers", params={"table_layers": 64, "max_layers": None},
                                       points=np.eye(3)), "ConvexLayers"),
        "deep": (deep, "deeper"),
        "not an object": (b"[1, 2]", "JSON object"),
        "not JSON": (b"{nope", "JSON"),
        "not UTF-8": (b'{"class": "\xff"}', "JSON"),
        "huge integer": (b'{"n": ' + b"9" * 5000 + b"}", "JSON"),
    }


@pytest.mark.parametrize("case", list(_header_cases()))
def test_malformed_headers(case, tmp_path):
    spec, match = _header_cases()[case]
    if isinstance(spec, bytes):
        data = pack(None, b"", raw_header=spec)
    else:
        spec = dict(spec)
        data = crafted(spec.pop("cls", "BruteForce"), **spec)
    rejects(tmp_path, data, match=match)


@pytest.mark.parametrize("values, match", [
    ({"dtype": "int64", "dv": 1, "flat": False}, "values.dtype"),
    ({"dtype": "float64", "dv": -1, "flat": False}, "'dv'"),
    ({"dtype": "float64", "dv": 2, "flat": True}, "values.flat"),
    ({"dtype": "float64", "dv": 1, "flat": 1}, "values.flat"),
    ({"dtype": "float64", "dv": 1}, "values"),
    (None, "values"),
])
def test_malformed_values_entry(values, match, tmp_path):
    _, h, payload = unpack(crafted())
    h["values"] = values
    rejects(tmp_path, pack(h, payload + np.zeros(2).tobytes(), version=2), match=match)


def test_version_one_with_values_and_unknown_versions(tmp_path):
    index = hsrgeom.BruteForce(np.eye(2)).attach_values(np.ones(2))
    _, h, payload = unpack(index.to_bytes())
    rejects(tmp_path, pack(h, payload, version=1), match="unknown keys")
    for version in (0, 3, 2**32 - 1):
        rejects(tmp_path, pack(h, payload, version=version), match="version")


def test_error_does_not_modify_the_index_on_failed_setstate(small_file):
    index = hsrgeom.BruteForce(np.eye(2))
    before = index.to_bytes()
    with pytest.raises(ValueError):
        index.__setstate__({"hsrgeom": small_file})
    assert index.to_bytes() == before
