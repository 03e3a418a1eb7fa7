"""DecodeCache: keys and values of a generation, with a half-space index per (batch, kv head)
that grows with every appended token."""
from __future__ import annotations

import numpy as np

from . import _inputs as I
from ._api import _run
from ._fused import MIN_DIM, CodedKeys, new_codes
from ._sparse import HeadKeys, log2_max_norm


class _Grow:
    """An (n, e) array with amortised O(1) appends (capacity doubles)."""

    def __init__(self, e, dtype):
        self.buf = np.zeros((16, e), dtype=dtype)
        self.n = 0

    def append(self, x):
        if self.n + len(x) > len(self.buf):  # (room for as many again: a prompt, then tokens)
            new = np.empty((max(2 * len(self.buf), 2 * (self.n + len(x))), self.buf.shape[1]), dtype=self.buf.dtype)
            new[: self.n] = self.buf[: self.n]
            self.buf = new
        self.buf[self.n : self.n + len(x)] = x
        self.n += len(x)

    @property
    def data(self):
        return self.buf[: self.n]


def _coded(k, v):
    """The codes of keys k (n, d) with their values v (n, d_v)."""
    codes = new_codes(k.shape[1], v.shape[1], k.dtype)
    if len(k):
        codes.append(np.ascontiguousarray(k), np.ascontiguousarray(v))
    return codes


class DecodeCache:
    """Key/value cache for generation decoding, indexed for half-space reporting.

    >>> import numpy as np
    >>> from hsrgeom.attention import DecodeCache
    >>> rng = np.random.default_rng(0)
    >>> k, v = rng.standard_normal((2, 1, 2, 104, 16))  # (batch, kv_heads, n, d) each
    >>> q = rng.standard_normal((1, 4, 4, 16))           # (batch, heads, steps, d)
    >>> cache = DecodeCache().append(k[:, :, :100], v[:, :, :100])  # the prompt
    >>> for t in range(4):                                # decoding: one token per step
    ...     out, stats = cache.append(k[:, :, 100 + t:101 + t], v[:, :, 100 + t:101 + t]).attend(
    ...         q[:, :, t:t + 1], mode="relu", bias=1.0)
    >>> out.shape, len(cache)
    ((1, 4, 1, 16), 104)

    ``append`` copies the keys and values (the caller's arrays are never kept or changed) and
    inserts the keys into each head's index (the logarithmic method of the structures:
    amortised O(log n) rebuild work per key). With codes (below), the insertion waits until a
    step needs the index (ReLU, prompt rows): softmax decoding steps never build one. A tree
    index also gets the values attached
    (:meth:`hsrgeom.PartitionTree.attach_values`: per-node sums, so a ReLU step with
    ``alpha = 1`` adds whole subtrees of keys inside the half-space; two more copies of V). With ``kind="auto"`` the index of a head is
    re-chosen by :func:`hsrgeom.build_index` whenever the cache has doubled since the last
    choice (from 4096 keys on), so a cache that starts with one token still ends with the
    structure that suits the data. The choice depends on how many keys a query row selects
    (the ReLU non-zeros; few favour a tree, a large share a scan): ``output_size`` is that
    number for the first choice when known (e.g. ``n ** 0.8`` for a bias set as in the paper);
    later choices use the share the queries so far selected.

    ``codes`` (default True; heads of dimension >= 16): the cache also keeps 8-bit codes of the
    keys of each kv head with proven error bounds (n (d + 32) bytes). A decoding step (one query
    row per head) in softmax mode then selects its keys from them: every key's code is read
    once for all query heads of the kv head, and the full rows only of the keys the bounds
    cannot exclude, so the kept set is exactly the one of the float64 scores; with ``top_r`` or
    ``top_p`` the selection, the softmax, the V gather and the certified bound run in one
    compiled call per kv head and token (thresholds select from the codes too). The codes are
    scaled per channel from the first keys appended (append the prompt first). ReLU steps and
    prompt rows use the index.

    ``attend(q, ...)`` treats the m rows of q as the last m positions of the cache (row i sees
    keys ``j <= len(cache) - m + i``; decoding one token, m = 1, sees every key) and returns
    what :func:`relu_attention` / :func:`softmax_attention` would on the cached keys and values,
    without rebuilding anything.
    """

    def __init__(self, kind="auto", output_size=None, *, codes=True, **params):
        self.kind = kind
        self.output_size = output_size
        self.codes = bool(codes)
        self.params = params
        self._k = self._v = self._heads = self._codes = None
        self._lkmax = None   # with codes, per head: log2 max ||k|| over every appended key
        self._indexed = 0    # keys inserted into the heads' indexes (all of them without codes)
        self.dtype = None

    def __len__(self):
        return 0 if self._k is None else self._k[0][0].n

    @property
    def shape(self):
        """(batch, kv_heads, n, d, d_v), or None before the first append."""
        if self._k is None:
            return None
        return (len(self._k), len(self._k[0]), len(self), self._k[0][0].buf.shape[1], self._v[0][0].buf.shape[1])

    def __repr__(self):
        if self._k is None:
            return f"DecodeCache(kind={self.kind!r}, empty)"
        b, h, n, d, dv = self.shape
        index = self._heads[0][0].description if self._indexed else "not built yet"
        codes = ", codes" if self._codes is not None else ""
        return (f"DecodeCache(kind={self.kind!r}, batch={b}, kv_heads={h}, n={n}, d={d}, d_v={dv}, "
                f"dtype={self.dtype.name}, index=[{index}]{codes})")

    def append(self, k, v):
        """Append keys (batch, kv_heads, t, d) and values (batch, kv_heads, t, d_v); t >= 0."""
        k, v = I.tensor(k, "k"), I.tensor(v, "v")
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(f"k {k.shape} and v {v.shape} must agree in batch, kv_heads and length")
        if k.dtype != v.dtype:
            raise TypeError(f"k and v must have one dtype, got {k.dtype} and {v.dtype}")
        if self._k is None:
            if k.shape[0] == 0 or k.shape[1] == 0:
                raise ValueError(f"k must have batch >= 1 and kv_heads >= 1, got shape {k.shape}")
            if k.shape[3] == 0:
                raise ValueError("head dim must be >= 1")
            self.dtype = k.dtype
            B, H = k.shape[:2]
            self._k = [[_Grow(k.shape[3], k.dtype) for _ in range(H)] for _ in range(B)]
            self._v = [[_Grow(v.shape[3], v.dtype) for _ in range(H)] for _ in range(B)]
            # a decoding step asks one query row per head: batch_size=1 tells "auto" so
            self._heads = [[HeadKeys(np.zeros((0, k.shape[3]), k.dtype), kind=self.kind, batch_size=1,
                                     output_size=self.output_size, **self.params)
                            for _ in range(H)] for _ in range(B)]
            self._lkmax = [[-np.inf] * H for _ in range(B)]
            if self.codes and k.shape[3] >= MIN_DIM:
                self._codes = [[new_codes(k.shape[3], v.shape[3], k.dtype) for _ in range(H)] for _ in range(B)]
        else:
            b, h, _, d, dv = self.shape
            if k.shape[:2] != (b, h) or k.shape[3] != d or v.shape[3] != dv:
                raise ValueError(f"k {k.shape} / v {v.shape} do not match the cache (batch={b}, kv_heads={h}, d={d}, d_v={dv})")
            if k.dtype != self.dtype:
                raise TypeError(f"k has dtype {k.dtype} but the cache holds {self.dtype}")
        for b, row in enumerate(self._heads):
            for h in range(len(row)):
                self._k[b][h].append(k[b, h])
                self._v[b][h].append(v[b, h])
                if self._codes is not None and k.shape[2]:
                    self._codes[b][h].append(np.ascontiguousarray(k[b, h]), np.ascontiguousarray(v[b, h]))
                    self._lkmax[b][h] = max(self._lkmax[b][h], log2_max_norm(k[b, h]))
        if self._codes is None:
            self._index_all()
        return self

    def _index_all(self):
        """Insert the keys appended since the last call into each head's index."""
        n, have = len(self), self._indexed
        if have == n:
            return
        for b, row in enumerate(self._heads):
            for h, hk in enumerate(row):
                K, V = self._k[b][h].data, self._v[b][h].data
                hk.append(np.ascontiguousarray(K[have:]), rebuild_from=K, values=V[have:], values_from=V)
        self._indexed = n

    def __getstate__(self):
        # the compiled codes are not pickled: they are rebuilt from the keys (deepcopy, pickle)
        state = self.__dict__.copy()
        state["_codes"] = None
        return state

    def __setstate__(self, state):
        if "_indexed" not in state:  # pickled before the index waited for its first use
            heads = state.get("_heads")
            state["_indexed"] = 0 if state.get("_k") is None else state["_k"][0][0].n
            state["_lkmax"] = None if heads is None else [[hk.lkmax for hk in row] for row in heads]
        self.__dict__.update(state)
        if self.codes and self._k is not None and self.shape[3] >= MIN_DIM:
            self._codes = [[_coded(k.data, v.data) for k, v in zip(krow, vrow)] for krow, vrow in zip(self._k, self._v)]

    def keys(self):
        """The cached keys, (batch, kv_heads, n, d) (a copy)."""
        return np.stack([np.stack([g.data for g in row]) for row in self._k])

    def values(self):
        """The cached values, (batch, kv_heads, n, d_v) (a copy)."""
        return np.stack([np.stack([g.data for g in row]) for row in self._v])

    def attend(self, q, mode="relu", *, bias=None, alpha=1, top_r=None, threshold=None, top_p=None, scale=None,
               return_stats=True):
        """Attention of q (batch, heads, m, d) over the cache; returns (out, stats) by default.

        ``mode="relu"`` takes ``bias`` (required) and ``alpha``; ``mode="softmax"`` takes
        ``top_r`` and/or ``threshold``, or ``top_p`` (certified share of the softmax mass, see
        :func:`softmax_attention`). Stats are those of the corresponding function.
        """
        if self._k is None:
            raise ValueError("the cache is empty: append keys and values first")
        if mode not in ("relu", "softmax"):
            raise ValueError(f"mode must be 'relu' or 'softmax', got {mode!r}")
        if mode == "relu" and bias is None:
            raise TypeError("mode='relu' needs bias")
        q = I.tensor(q, "q")
        B, H, n, d, dv = self.shape
        if q.shape[0] != B or q.shape[3] != d:
            raise ValueError(f"q {q.shape} does not match the cache (batch={B}, d={d})")
        if q.shape[1] == 0:
            raise ValueError(f"q must have heads >= 1, got shape {q.shape} (batch, heads, m, d)")
        if q.shape[1] % H:
            raise ValueError(f"kv_heads={H} must divide heads={q.shape[1]} (grouped-query attention)")
        if q.dtype != self.dtype:
            raise TypeError(f"q has dtype {q.dtype} but the cache holds {self.dtype}")
        return_stats = I.return_stats(return_stats, exact=mode == "softmax")
        kw = dict(bias=bias, alpha=alpha) if mode == "relu" else dict(top_r=top_r, threshold=threshold, top_p=top_p)

        # a decoding step (one row per head: every key visible) in softmax mode selects from the
        # codes of the keys (one compiled call per kv head for top_r, see _fused)
        coded = self._codes is not None and mode == "softmax" and q.shape[2] == 1
        if not coded:
            self._index_all()

        def head(b, kh):
            K, V, hk = self._k[b][kh].data, self._v[b][kh].data, self._heads[b][kh]
            return K, V, (CodedKeys(hk, self._codes[b][kh], K, self._lkmax[b][kh]) if coded else hk)

        return _run(mode, q, head, self.shape[:2] + (n, dv), scale=scale, causal=True,
                    return_stats=return_stats, **kw)
