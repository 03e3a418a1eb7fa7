"""Validation of attention inputs: clear errors naming the argument, nothing changed in place."""
from __future__ import annotations

import numbers

import numpy as np

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_array(x, name):
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything numpy can't take
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc


def _check_finite(arr, name):
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)})")


def tensor(x, name, ndim=4):
    """numpy view of ``x`` (anything ``numpy.asarray`` takes, torch CPU tensors included)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensors: no autograd graph, on CPU
        x = x.detach().cpu()
    arr = _as_array(x, name)
    if arr.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}; convert explicitly")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D (batch, heads, length, dim), got shape {arr.shape}")
    _check_finite(arr, name)
    return arr


def qkv(q, k, v):
    """Validated (q, k, v) with the shape rules of ``scaled_dot_product_attention`` (plus GQA)."""
    q, k, v = tensor(q, "q"), tensor(k, "k"), tensor(v, "v")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, _, d = q.shape
    if h == 0:
        raise ValueError(f"q must have heads >= 1, got shape {q.shape} (batch, heads, m, d)")
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[3] != d:
        raise ValueError(f"k has head dim {k.shape[3]} but q has {d}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k {k.shape} and v {v.shape} must agree in kv_heads and length")
    if k.shape[1] == 0 or h % k.shape[1]:
        raise ValueError(f"kv_heads={k.shape[1]} must divide heads={h} (grouped-query attention)")
    if d == 0:
        raise ValueError("head dim must be >= 1")
    return q, k, v


def scale(s, d):
    if s is None:
        return 1.0 / np.sqrt(d)
    if isinstance(s, (bool, np.bool_)) or not isinstance(s, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"scale must be a real number, got {type(s).__name__}")
    try:
        s = float(s)
    except OverflowError:  # a Python int beyond float64
        raise ValueError("scale must be finite and > 0, got an int beyond the float64 range") from None
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"scale must be finite and > 0, got {s}")
    return s


def alpha(a):
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, (numbers.Integral, np.integer)):
        raise TypeError(f"alpha must be a positive integer, got {a!r}")
    if int(a) < 1:
        raise ValueError(f"alpha must be a positive integer, got {a}")
    return int(a)


def per_row(x, shape, name):
    """A scalar or array broadcast to ``shape`` = (batch, heads, m), as float64."""
    arr = _as_array(x, name)
    if arr.dtype == object:  # e.g. Python ints beyond int64: numbers only if they fit float64
        try:
            arr = arr.astype(np.float64)
        except OverflowError:
            raise ValueError(f"{name} holds a number beyond the float64 range") from None
        except (TypeError, ValueError):
            pass
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be a real number or array, got dtype {arr.dtype}")
    try:
        arr = np.broadcast_to(arr.astype(np.float64), shape)
    except ValueError:
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to (batch, heads, m) = {shape}") from None
    _check_finite(arr, name)
    return arr


def flag(x, name):
    """A bool argument: True/False (or 1/0); anything else is an error rather than silently
    truthy (a string, an array)."""
    if isinstance(x, (bool, np.bool_, numbers.Integral, np.integer)) and x in (0, 1):
        return bool(x)
    raise ValueError(f"{name} must be False or True, got {x!r}")


def return_stats(x, exact):
    """``return_stats``: False or True (or "exact" where ``exact``). Returns a bool or "exact"."""
    if exact and isinstance(x, str) and x == "exact":
        return x
    if not exact or not isinstance(x, str):
        try:
            return flag(x, "return_stats")
        except ValueError:
            pass
    allowed = "False, True or 'exact'" if exact else "False or True"
    raise ValueError(f"return_stats must be {allowed}, got {x!r}")


def count(x, name, minimum=1):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    if int(x) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)
