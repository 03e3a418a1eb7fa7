"""Input validation shared by every index: clear errors that name the argument."""
from __future__ import annotations

import numbers

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Bounds of what the compiled core represents (documented in README "Input rules"):
MAX_D = 2**24  # columns of points (a C++ int, also in products such as d * d)
MAX_N = 2**30  # points of one index (tree node numbers are int32: up to 2 n nodes)
MAX_THREADS = 4096  # n_threads / set_num_threads (parallel.hpp kMaxThreads)
INT_MAX = 2**31 - 1  # integer parameters passed to the core as C++ int
INDEX_MAX = 2**63 - 1  # ... as C++ int64 (index_t)
MAX_POWER = 2**31 - 1  # sum(power=): a C int in the core (weights take O(log power) multiplications)


def _as_array(x, name):
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything numpy can't take
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc


def _check_real(arr, name):
    if arr.dtype.kind not in "fiu":  # float, signed or unsigned integer (not bool, complex, ...)
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")


def _check_finite(arr, name):
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"{name} contains NaN or inf (first at index {where})")


def points(x, name="points"):
    """Validate the points an index is built on; returns a C-contiguous float32/float64 array.

    The dtype is never changed silently: float32 and float64 are kept, anything else is an error
    (cast it yourself, e.g. ``points.astype(np.float64)``). The caller's array is copied by the
    index, never modified.
    """
    arr = _as_array(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.dtype not in SUPPORTED_DTYPES:
        _check_real(arr, name)
        raise TypeError(
            f"{name} must be float32 or float64, got {arr.dtype}; convert explicitly "
            f"(e.g. {name}.astype(np.float64)) so that no precision is lost silently"
        )
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column (d >= 1), got shape {arr.shape}")
    if arr.shape[1] > MAX_D:
        raise ValueError(f"{name} has d={arr.shape[1]} columns; at most {MAX_D} are supported")
    if arr.shape[0] > MAX_N:
        raise ValueError(f"{name} has n={arr.shape[0]} rows; an index holds at most {MAX_N} points")
    _check_finite(arr, name)
    return np.ascontiguousarray(arr)


def queries(x, d, dtype, name="normals", check_finite=True):
    """Validate an (m, d) batch of query vectors; converted to the index dtype.

    ``check_finite=False`` leaves the NaN/inf check to the caller: the compiled query functions
    check the converted array themselves (a float64 value beyond the float32 range becomes inf
    when cast to a float32 index and is an error there too), which costs nanoseconds instead of
    numpy's ~1.5 us per call.
    """
    if (type(x) is np.ndarray and x.dtype == dtype and x.ndim == 2 and x.shape[1] == d
            and x.flags.c_contiguous and not check_finite):
        return x  # already what the index takes: no copy, no numpy calls
    arr = _as_array(x, name)
    _check_real(arr, name)
    if arr.ndim == 1 and name.endswith("s"):
        raise ValueError(
            f"{name} must be 2-D of shape (m, {d}), got a 1-D array; use report_one for a "
            f"single query or {name}[None, :]"
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape (m, {d}), got shape {arr.shape}")
    if arr.shape[1] != d:
        raise ValueError(f"{name} has d={arr.shape[1]} but the index has d={d}")
    if check_finite:
        _check_finite(arr, name)
    return np.ascontiguousarray(arr, dtype=dtype)


def vector(x, d, dtype, name="a"):
    arr = _as_array(x, name)
    _check_real(arr, name)
    if arr.ndim != 1 or arr.shape[0] != d:
        raise ValueError(f"{name} must be 1-D of length d={d}, got shape {arr.shape}")
    _check_finite(arr, name)
    return np.ascontiguousarray(arr[None, :], dtype=dtype)


def offsets(x, m, name="offsets", check_finite=True):
    """Validate offsets b: a scalar (broadcast) or an (m,) array; kept as float64.
    ``check_finite=False``: as in :func:`queries`."""
    if type(x) is np.ndarray and x.dtype.kind == "f" and x.ndim == 1 and x.shape[0] == m and not check_finite:
        # already float64 and contiguous: as it is; other floats (float32): one copy, not the
        # general path's ~1 us
        return x if x.dtype == np.float64 and x.flags.c_contiguous else x.astype(np.float64)
    arr = _as_array(x, name)
    _check_real(arr, name)
    if arr.ndim == 0:
        arr = np.full(m, float(arr), dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != m:
        raise ValueError(f"{name} must be a scalar or 1-D of length m={m}, got shape {arr.shape}")
    if check_finite:
        _check_finite(arr, name)
    return np.ascontiguousarray(arr, dtype=np.float64)


def scalar_offset(b, name="b"):
    if isinstance(b, (bool, np.bool_)) or not isinstance(b, (numbers.Real, np.floating, np.integer)):
        arr = _as_array(b, name)
        if arr.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
        _check_real(arr, name)
        b = float(arr)
    b = float(b)
    if not np.isfinite(b):
        raise ValueError(f"{name} must be finite, got {b}")
    return np.array([b], dtype=np.float64)


def values(x, rows, name="values"):
    """Validate per-point values for ``sum``: (N,) or (N, dv) with N >= rows; returns a 2-D
    C-contiguous float32/float64 array (other real dtypes are converted to float64, a copy) and
    whether the input was 1-D. Values are summed as given: NaN and inf propagate like numpy.sum."""
    arr = _as_array(x, name)
    _check_real(arr, name)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (N,) or 2-D (N, dv), got shape {arr.shape}")
    if arr.shape[0] < rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but point ids go up to {rows - 1}")
    flat = arr.ndim == 1
    dtype = arr.dtype if arr.dtype in SUPPORTED_DTYPES else np.float64
    arr = np.ascontiguousarray(arr.reshape(len(arr), -1) if flat else arr, dtype=dtype)
    return arr, flat


def positive_int(x, name, minimum=1, maximum=INT_MAX):
    """An integer in [minimum, maximum] (default maximum: the C++ int range), as a Python int."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    x = int(x)
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if x > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {x}")
    return x


def nonnegative_float(x, name):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    x = float(x)
    if not (np.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {x}")
    return x


def threads(x):
    """n_threads: None (0: the default, hsrgeom.set_num_threads) or an int in [1, MAX_THREADS].
    An upper bound: a call starts at most as many threads as there are processors, work items
    and threads the process can start (parallel.hpp)."""
    if x is None:
        return 0
    if type(x) is int and 1 <= x <= MAX_THREADS:
        return x
    return positive_int(x, "n_threads", minimum=1, maximum=MAX_THREADS)
