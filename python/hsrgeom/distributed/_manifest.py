"""The on-disk layout of a sharded index, and its write-ahead log.

A directory holds::

    manifest.json                  format, version, d, dtype, partition (kind, reason, kd cuts),
                                   next id, generation, last WAL record applied, and per shard:
                                   its files, their sha256, count, box, resolved kind and params
    shard_00000.g0.hsr             one hsrgeom index file per shard (versioned, checksummed)
    shard_00000.g0.ids.npy         its global ids (int64, ascending), row i = local id i
    wal/00000001.npz ...           updates not yet flushed (insert: points, ids, values;
                                   remove: ids), applied in order after the manifest's wal_seq

The manifest is replaced atomically (a temporary file, fsync, rename); shard files of a new
generation are written before it, and the files it no longer names are deleted after it.
"""
from __future__ import annotations

import json
import os

import numpy as np

FORMAT = "hsrgeom-sharded-index"
VERSION = 1
MANIFEST = "manifest.json"
WAL_DIR = "wal"
_KEYS = {"format", "version", "d", "dtype", "n", "next_id", "partition", "partition_reason", "cuts", "kind",
         "params", "generation", "wal_seq", "values", "shards"}
_SHARD_KEYS = {"file", "ids_file", "sha256", "ids_sha256", "n", "box", "kind", "params", "id_range"}


def _bad(path, msg):
    raise ValueError(f"hsrgeom.distributed: {path}: {msg}")


def read(path):
    """The manifest of the index directory ``path``, checked (ValueError naming what is wrong)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        _bad(path, "not a directory (a sharded index is a directory with a manifest.json)")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isfile(mpath):
        _bad(path, f"not a sharded hsrgeom index: no {MANIFEST}")
    try:
        with open(mpath, encoding="utf-8") as f:
            man = json.load(f)
    except (ValueError, OSError) as exc:
        _bad(mpath, f"unreadable manifest ({exc})")
    if type(man) is not dict or man.get("format") != FORMAT:
        _bad(mpath, f"not a sharded hsrgeom index manifest (format must be {FORMAT!r})")
    if man.get("version") != VERSION:
        _bad(mpath, f"unknown manifest version {man.get('version')!r} (this hsrgeom reads version {VERSION})")
    if set(man) != _KEYS:
        _bad(mpath, f"manifest keys missing {sorted(_KEYS - set(man))} / unknown {sorted(set(man) - _KEYS)[:10]}")
    if man["dtype"] not in ("float32", "float64") or type(man["d"]) is not int or man["d"] < 1:
        _bad(mpath, f"bad dtype/d: {man['dtype']!r}, {man['d']!r}")
    if man["partition"] not in ("kd", "chunks") or type(man["shards"]) is not list or not man["shards"]:
        _bad(mpath, "bad partition or shard list")
    for i, sh in enumerate(man["shards"]):
        if type(sh) is not dict or set(sh) != _SHARD_KEYS:
            _bad(mpath, f"shard {i}: entry must have the keys {sorted(_SHARD_KEYS)}")
        for k in ("file", "ids_file"):
            if type(sh[k]) is not str or os.path.basename(sh[k]) != sh[k] or sh[k] in ("", ".", ".."):
                _bad(mpath, f"shard {i}: {k} must be a file name inside the directory, got {sh[k]!r:.80}")
        if sh["box"] is not None and (len(sh["box"]) != 2 or any(len(v) != man["d"] for v in sh["box"])):
            _bad(mpath, f"shard {i}: box must be [lo, hi] of length d")
    return man


def write(path, man):
    """Replace the manifest atomically."""
    mpath = os.path.join(os.fspath(path), MANIFEST)
    tmp = mpath + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(man, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, mpath)
    _fsync_dir(path)


def _fsync_dir(path):
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- write-ahead log ----------------------------------------------------------------------------
def wal_append(path, seq, op, **arrays):
    """Write record ``seq`` (op "insert" or "remove") durably before it is applied."""
    wdir = os.path.join(os.fspath(path), WAL_DIR)
    os.makedirs(wdir, exist_ok=True)
    final = os.path.join(wdir, f"{seq:08d}.npz")
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, op=np.array(op), **{k: v for k, v in arrays.items() if v is not None})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(wdir)


def wal_records(path, after):
    """[(seq, op, arrays)] of the log records with seq > ``after``, in order."""
    wdir = os.path.join(os.fspath(path), WAL_DIR)
    if not os.path.isdir(wdir):
        return []
    out = []
    for name in sorted(os.listdir(wdir)):
        if not name.endswith(".npz"):
            continue
        seq = int(name[:-4])
        if seq <= after:
            continue
        try:
            with np.load(os.path.join(wdir, name), allow_pickle=False) as z:
                rec = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zip/npy errors of a damaged record
            _bad(os.path.join(wdir, name), f"unreadable write-ahead log record ({exc})")
        out.append((seq, str(rec.pop("op")), rec))
    return out


def wal_drop(path, upto):
    wdir = os.path.join(os.fspath(path), WAL_DIR)
    if os.path.isdir(wdir):
        for name in os.listdir(wdir):
            if name.endswith(".npz") and int(name[:-4]) <= upto:
                os.remove(os.path.join(wdir, name))
