"""hsrgeom's binary file format: writing, and reading files that may be hostile.

Layout (little-endian)::

    MAGIC (8 bytes) | u32 version | u64 header length | header (UTF-8 JSON object)
    | points (n x d, the header's dtype) | ids (n x int64) | [values (next_id x dv)] | sha256 of all before

Version 1 has no values; version 2 adds the attached values (header key "values"). The writer
uses version 1 unless values are attached. The structure itself is not stored: it is rebuilt
from the points on load (builds are deterministic).

Reading contract (what :func:`load`, :func:`from_bytes` and unpickling guarantee): nothing in
a file is trusted before it is checked, and every failure is a ValueError naming the file (or
"pickled state") and the field. In order:

1. the fixed part: magic, a version this module reads (1, 2), a header length of at most
   ``MAX_HEADER`` bytes that fits in the file (checked against the file size before the header
   is read);
2. the header: JSON of nesting depth at most ``MAX_DEPTH``, an object with exactly the keys the
   writer writes, a known class, dtype float32 or float64, integers n >= 0, d >= 1, next_id >= n,
   a values entry (version 2) of a float dtype with dv >= 0, params with exactly the class's
   parameter names (a parameter the class added later, listed in its ``_added_params``, may be
   missing: it takes the value listed there, which rebuilds what the older writer built);
3. sizes: the payload the header implies must be exactly the rest of the file before the
   checksum (checked before the payload is read, so nothing larger than the file is ever
   read or allocated; streams of unknown size are read in bounded chunks and must end there);
4. the sha256 checksum;
5. the content: finite points, ids strictly ascending in [0, next_id); next_id is trusted only
   where the payload holds next_id value rows, otherwise it must be at most
   ``max(MAX_ID_RATIO * n, MAX_UNBACKED_IDS)`` (a dynamic index keeps one bit per id ever
   given);
6. the build: the class's own parameter checks (as its constructor), errors re-raised as
   ValueError.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import stat
import struct

import numpy as np

MAGIC = b"HSRGEOM\x00"
FORMAT_VERSION = 2  # reads 1 and 2; writes 1 unless values are attached
_FIXED = len(MAGIC) + 12  # magic, u32 version, u64 header length
_DIGEST = 32  # sha256

MAX_HEADER = 1 << 20  # bytes; the writer's header is a few hundred bytes (the auto reason ~1 KB)
MAX_DEPTH = 8  # JSON nesting; the writer's is 2 (params, values)
# A header's next_id that the payload does not back (no value rows) is accepted up to this
# many ids, or MAX_ID_RATIO per stored point: loading allocates the dynamic state's
# tombstone bits, one per id.
MAX_UNBACKED_IDS = 1 << 26
MAX_ID_RATIO = 1024
MAX_EMPTY_D = 1 << 16  # d of an index without points (no payload backs it)
_CHUNK = 1 << 24  # streams of unknown size are read in chunks of this many bytes

_DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
_HEADER_KEYS = frozenset({"class", "dtype", "n", "d", "params", "reason", "next_id"})
_VALUES_KEYS = frozenset({"dtype", "dv", "flat"})


# ---- writing ----------------------------------------------------------------------------------
def to_bytes(index):
    """The index in the binary format (what :func:`save` writes)."""
    pts, ids = index.points(), index.ids()
    dyn = index._dyn
    h = {
        "class": type(index).__name__, "dtype": index.dtype.name, "n": int(len(ids)), "d": int(index.d),
        "params": index._params(), "reason": index.reason,
        "next_id": int(dyn.next_id if dyn else len(ids)),
    }
    vals = index._values()
    if vals is not None:  # format 2: the attached values follow the ids
        h["values"] = {"dtype": vals.dtype.name, "dv": int(vals.shape[1]), "flat": index._vflat}
    header = json.dumps(h).encode()
    body = MAGIC + struct.pack("<IQ", 1 if vals is None else FORMAT_VERSION, len(header)) + header
    body += np.ascontiguousarray(pts, dtype=pts.dtype.newbyteorder("<")).tobytes()
    body += ids.astype("<i8").tobytes()
    if vals is not None:
        body += np.ascontiguousarray(vals, dtype=vals.dtype.newbyteorder("<")).tobytes()
    return body + hashlib.sha256(body).digest()


def save(index, path):
    """Write ``index`` to ``path`` atomically (a temporary file, then a rename)."""
    data = to_bytes(index)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---- reading ----------------------------------------------------------------------------------
class _Reader:
    """Reads exactly the bytes asked for from a buffer or a file; ``size`` is the total size
    when known (a buffer, a regular file), else None (pipes, devices: read in bounded chunks)."""

    def __init__(self, source, buf=None, f=None, size=None):
        self.source, self.buf, self.f, self.size, self.pos = source, buf, f, size, 0

    def fail(self, msg):
        _fail(self.source, msg)

    def read(self, k, what):
        if self.buf is not None:
            out = self.buf[self.pos : self.pos + k]
        else:
            parts, left = [], k
            while left:
                chunk = self.f.read(min(left, _CHUNK))
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
            out = b"".join(parts)
        if len(out) != k:
            self.fail(f"truncated file: {what} needs {k} bytes at offset {self.pos}, only {len(out)} left")
        self.pos += k
        return out

    def checksum_of_rest(self, sha):
        """Whether the file's last 32 bytes are the sha256 of everything before them (``sha``
        holds the bytes read so far); for a file of known size, hashed in bounded chunks."""
        left = self.size - self.pos - _DIGEST
        while left > 0:
            k = min(left, _CHUNK)
            sha.update(self.read(k, "the payload"))
            left -= k
        return sha.digest() == bytes(self.read(_DIGEST, "the checksum"))

    def check_end(self):
        extra = len(self.buf) - self.pos if self.buf is not None else len(self.f.read(1))
        if extra:
            self.fail(f"trailing data after the checksum at offset {self.pos}")


def _fail(source, msg):
    raise ValueError(f"hsrgeom: cannot read {source}: {msg}")


def _field_int(h, key, reader, minimum=0):
    v = h[key]
    if type(v) is not int or v < minimum:
        reader.fail(f"header field {key!r} must be an integer >= {minimum}, got {v!r:.80}")
    return v


def _check_depth(raw, reader):
    """JSON nesting depth of ``raw`` at most MAX_DEPTH (json.loads recurses per level)."""
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", raw)  # strings may hold brackets
    b = np.frombuffer(bare, dtype=np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    if len(step) and np.cumsum(step).max() > MAX_DEPTH:
        reader.fail(f"header nested deeper than {MAX_DEPTH} levels")


def _param_names(cls):
    """The parameters a structure stores in the header: those of its _build, less the points
    and the build's thread count (never stored)."""
    names = list(inspect.signature(cls._build).parameters)[2:]  # self, points
    return frozenset(names) - {"n_threads"}


def _parse_header(raw, version, reader, structures):
    """Validated header fields: (cls, dtype, n, d, next_id, values spec or None, params, reason)."""
    _check_depth(raw, reader)
    try:
        h = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, int digits
        reader.fail(f"header is not valid JSON ({exc})")
    if type(h) is not dict:
        reader.fail(f"header must be a JSON object, got {type(h).__name__}")
    keys = _HEADER_KEYS | ({"values"} if version == 2 else set())
    if set(h) != keys:
        missing, unknown = sorted(keys - set(h)), sorted(set(h) - keys)
        reader.fail(f"header of format version {version} has missing keys {missing} / unknown keys "
                    f"{[k[:40] for k in unknown]}")
    classes = {c.__name__: c for c in structures}
    if type(h["class"]) is not str or h["class"] not in classes:
        reader.fail(f"header field 'class' must be one of {sorted(classes)}, got {h['class']!r:.80}")
    cls = classes[h["class"]]
    if type(h["dtype"]) is not str or h["dtype"] not in _DTYPES:
        reader.fail(f"header field 'dtype' must be 'float32' or 'float64', got {h['dtype']!r:.80}")
    dtype = _DTYPES[h["dtype"]]
    n, d, next_id = _field_int(h, "n", reader), _field_int(h, "d", reader, 1), _field_int(h, "next_id", reader)
    if next_id < n:
        reader.fail(f"header field 'next_id' ({next_id}) is smaller than 'n' ({n})")
    if n == 0 and d > MAX_EMPTY_D:
        reader.fail(f"header field 'd' ({d}) is larger than {MAX_EMPTY_D} for an index without points")
    if type(h["reason"]) is not str:
        reader.fail(f"header field 'reason' must be a string, got {type(h['reason']).__name__}")
    params = h["params"]
    if type(params) is dict:  # files written before a parameter was added: the value that rebuilds them
        params = {**{k: v for k, v in getattr(cls, "_added_params", {}).items() if k not in params}, **params}
    if type(params) is not dict or set(params) != _param_names(cls):
        got = sorted(params)[:20] if type(params) is dict else type(params).__name__
        reader.fail(f"header field 'params' of {cls.__name__} must have exactly the keys "
                    f"{sorted(_param_names(cls))}, got {got}")
    hv = None
    if version == 2:
        hv = h["values"]
        if type(hv) is not dict or set(hv) != _VALUES_KEYS:
            reader.fail(f"header field 'values' must be an object with keys {sorted(_VALUES_KEYS)}, got {hv!r:.80}")
        if type(hv["dtype"]) is not str or hv["dtype"] not in _DTYPES:
            reader.fail(f"header field 'values.dtype' must be 'float32' or 'float64', got {hv['dtype']!r:.80}")
        dv = _field_int(hv, "dv", reader)
        if type(hv["flat"]) is not bool or (hv["flat"] and dv != 1):
            reader.fail(f"header field 'values.flat' must be a boolean (true only with dv = 1), got {hv['flat']!r:.80}")
        hv = (_DTYPES[hv["dtype"]], dv, hv["flat"])
    return cls, dtype, n, d, next_id, hv, params, h["reason"]


def _read(reader, structures, expected=None):
    fits = reader.size is None or reader.size >= _FIXED
    prefix = bytes(reader.read(_FIXED, "the fixed part")) if fits else None
    if prefix is None or not prefix.startswith(MAGIC):
        reader.fail("not an hsrgeom index file (bad magic or too short)")
    version, hlen = struct.unpack("<IQ", prefix[len(MAGIC) :])
    if version not in (1, 2):
        reader.fail(f"unsupported hsrgeom file format version {version} (this hsrgeom reads 1 and 2)")
    if hlen > MAX_HEADER:
        reader.fail(f"header length {hlen} is larger than {MAX_HEADER} bytes")
    if reader.size is not None and _FIXED + hlen + _DIGEST > reader.size:
        reader.fail(f"header length {hlen} does not fit in the file ({reader.size} bytes)")
    raw = bytes(reader.read(hlen, "the header"))
    cls, dtype, n, d, next_id, hv, params, reason = _parse_header(raw, version, reader, structures)
    if expected is not None and cls is not expected:
        reader.fail(f"holds a {cls.__name__}, not a {expected.__name__}")
    size_pts, size_ids = n * d * dtype.itemsize, 8 * n
    size_vals = 0 if hv is None else next_id * hv[1] * hv[0].itemsize
    payload = size_pts + size_ids + size_vals
    if reader.size is not None and reader.size != _FIXED + hlen + payload + _DIGEST:
        msg = (f"sizes in the header (n={n}, d={d}, next_id={next_id}) imply {_FIXED + hlen + payload + _DIGEST} "
               f"bytes, the file has {reader.size}")
        if reader.size < reader.pos + _DIGEST or not reader.checksum_of_rest(hashlib.sha256(prefix + raw)):
            msg = f"corrupted or truncated hsrgeom index file: checksum mismatch ({msg})"
        reader.fail(msg)
    if hv is None or hv[1] == 0:  # next_id is not backed by value rows
        bound = max(MAX_ID_RATIO * n, MAX_UNBACKED_IDS)
        if next_id > bound:
            reader.fail(f"header field 'next_id' ({next_id}) is larger than {bound} (at most "
                        f"max({MAX_ID_RATIO} n, {MAX_UNBACKED_IDS}) ids without value rows)")
    body = reader.read(payload, "the points, ids and values")
    digest = reader.read(_DIGEST, "the checksum")
    reader.check_end()
    sha = hashlib.sha256(prefix)
    sha.update(raw)
    sha.update(body)
    if sha.digest() != digest:
        reader.fail("corrupted or truncated hsrgeom index file: checksum mismatch")

    pts = np.frombuffer(body, dtype=dtype, count=n * d).reshape(n, d).astype(dtype.newbyteorder("="))
    if not np.isfinite(pts).all():
        reader.fail(f"the points contain NaN or inf (first at row {int(np.argwhere(~np.isfinite(pts))[0][0])})")
    ids = np.frombuffer(body, dtype="<i8", count=n, offset=size_pts).astype(np.int64)
    if n and (ids[0] < 0 or ids[-1] >= next_id):
        reader.fail(f"the ids must lie in [0, next_id={next_id}), got {int(ids.min())} .. {int(ids.max())}")
    if n > 1 and not (np.diff(ids) > 0).all():
        reader.fail("the ids must be unique and ascending")
    try:
        index = cls._from_valid(pts, **params)
    except (TypeError, ValueError, OverflowError) as exc:
        reader.fail(f"header field 'params' ({params!r:.200}) or the points do not build a {cls.__name__}: {exc}")
    index.reason = reason
    if next_id != n or not np.array_equal(ids, np.arange(n)):
        index._dynamic(ids, next_id)  # one block holding every stored point, ids as stored
    if hv is not None:
        vdtype, dv, flat = hv
        vals = np.frombuffer(body, dtype=vdtype, count=next_id * dv, offset=size_pts + size_ids)
        vals = vals.reshape(next_id, dv).astype(vdtype.newbyteorder("="))
        index.attach_values(vals[:, 0] if flat else vals)
    return index


def from_bytes(data, structures, expected=None, source="hsrgeom data"):
    """The index held by ``data`` (bytes-like, in the format of :func:`to_bytes`), of one of the
    classes ``structures``; with ``expected``, the class it must hold. Raises ValueError naming
    ``source`` and the field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(source, f"must be bytes, got {type(data).__name__}")
    buf = memoryview(data)
    buf = buf.cast("B") if buf.c_contiguous else memoryview(buf.tobytes())
    return _read(_Reader(source, buf=buf, size=len(buf)), structures, expected)


def load(path, structures):
    """The index in the file ``path``, of one of the classes ``structures`` (the checks are
    listed in :func:`hsrgeom.load`)."""
    source = f"file descriptor {path}" if isinstance(path, int) else os.fspath(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"hsrgeom: cannot read {source}: is a directory")
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
        return _read(_Reader(source, f=f, size=size), structures)


def from_state(state, cls, structures):
    """Unpickling: the index of class ``cls`` in ``state`` (which ``__getstate__`` made:
    ``{"hsrgeom": bytes}``, checked like a file)."""
    source = f"pickled {cls.__name__} state"
    if type(state) is not dict or set(state) != {"hsrgeom"}:
        keys = sorted(map(str, state))[:10] if isinstance(state, dict) else type(state).__name__
        _fail(source, f"must be a dict with the one key 'hsrgeom', got {keys}")
    return from_bytes(state["hsrgeom"], structures, expected=cls, source=source)
