"""The fused decoding step: one compiled call per (batch, kv head) and token for all the query
rows of that kv head (the query heads of a GQA group), over 8-bit codes of its keys.

``_attend.HeadCodesF32/F64`` (this package's compiled module, ``cpp/include/hsrgeom/attend.hpp``)
keep each kv head's keys as codes with proven error bounds and select, for a batch of query
rows, exactly the keys a scan of the float64 scores would (top-r, ties to the smaller position,
or a threshold), reading one byte per coordinate for every key and the full rows of the few
candidates only. ``softmax_top_r`` also takes the softmax over the kept keys, the V gather and
the certified dropped-mass bound in the same call, so a decoding step with ``top_r`` costs one
compiled call per kv head and a few array operations; so does top-p (``softmax_top_p``: one
scan of the codes for the top-1 and the report's candidates, each candidate key row and kept
value row read once for all the rows, the certified prefix by weight buckets). Thresholds use
:class:`CodedKeys`, which gives ``_api._head_softmax`` the same ``topk`` / ``report`` a
``HeadKeys`` index gives (the selection then costs two scans of the codes).

ReLU attention does not come here: its weights need the exact half-space predicate of the
index (every key a float64 evaluation could make positive), which HeadKeys keeps.
"""
from __future__ import annotations

import numpy as np

from .. import get_num_threads
from ._attend import HeadCodesF32, HeadCodesF64

# Codes serve high-dimensional keys, where no index prunes and a scan reads every key; below
# this head dimension the index's own structure (trees, hulls) is the better selector.
MIN_DIM = 16


def new_codes(d, dv, dtype):
    """An empty ``HeadCodes`` for keys of dimension d (values d_v) of ``dtype``."""
    cls = HeadCodesF32 if np.dtype(dtype) == np.float32 else HeadCodesF64
    return cls(d, dv)


class CodedKeys:
    """The selections of a :class:`~hsrgeom.attention._sparse.HeadKeys` (``topk``, ``report``)
    answered from the codes of its keys, for query rows that see every key (a decoding step).
    ``lkmax``: log2 max ||k|| of the keys (kept beside the codes: the index may not hold every
    key yet); ``vmax`` is max ||v|| (kept by the codes)."""

    def __init__(self, hk, codes, K, lkmax):
        self.hk, self.codes, self.K = hk, codes, K
        self.lkmax = lkmax
        self.vmax = codes.value_norm_max
        self.points_tested = hk.points_tested
        self.nodes_visited = hk.nodes_visited

    @property
    def description(self):
        return (self.hk.description or "no index") + " + codes"

    def topk(self, Q, r, K, limit=None):
        Q = np.ascontiguousarray(Q)
        lims, ids, dots, tested = self.codes.select(Q, self.K, r=int(r), threads=get_num_threads())
        self.points_tested += tested
        return lims, ids, dots

    def report(self, Q, t, limit=None, blocks=None):
        t = np.ascontiguousarray(t, dtype=np.float64)
        lims, ids, dots, tested = self.codes.select(np.ascontiguousarray(Q), self.K, t=t, threads=get_num_threads())
        self.points_tested += tested
        return lims, ids, dots


def softmax_top_p(Qg, K, V, codes, p, scale):
    """Certified top-p (0 < p < 1) of each row of ``Qg`` (all rows see every key) in one compiled
    call: the exact top-1, one report at ``s* - g``, the shortest certified prefix, its softmax
    and V gather (the algorithm and proof of :func:`~hsrgeom.attention.softmax_attention`).
    Returns as :func:`softmax_top_r`, or None where the general path must run."""
    res = codes.softmax_top_p(Qg, K, V, float(p), float(scale), get_num_threads())
    return None if res is None else _stats(res, codes)


def softmax_top_r(Qg, K, V, codes, r, scale):
    """Softmax over the exact top-r keys of each row of ``Qg`` (all rows see every key), in one
    compiled call: ``(out (m, d_v) float64, stats)`` or None where the general path must run
    (inner products beyond the plain float64 range, values near its maximum).
    Stats: ``entries``, ``dropped_mass_bound``, ``error_bound`` (per row), ``_kept`` (CSR of the
    kept keys) and ``points_tested`` (full key rows read)."""
    res = codes.softmax_top_r(Qg, K, V, int(r), float(scale), get_num_threads())
    return None if res is None else _stats(res, codes)


def _stats(res, codes):
    out, entries, bound, lims, ids, tested = res
    err = np.where(bound > 0, 2.0 * bound * codes.value_norm_max, 0.0)
    return out, {"entries": entries, "dropped_mass_bound": bound, "error_bound": err, "_kept": (lims, ids),
                 "points_tested": tested}
