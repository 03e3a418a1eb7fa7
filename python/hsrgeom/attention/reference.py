"""Dense reference attention in float64: what every test of :mod:`hsrgeom.attention` compares to.

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: ``q`` is
(batch, heads, m, d), ``k`` is (batch, kv_heads, n, d), ``v`` is (batch, kv_heads, n, d_v),
``kv_heads`` divides ``heads`` (query head h reads kv head ``h // (heads // kv_heads)``).

Causal masking is aligned to the bottom right, as in FlashAttention: query row i sits at
position ``n - m + i`` and sees keys ``j <= n - m + i`` (for m == n this is the usual lower
triangle; for decoding, m = 1, the query sees every key). A row that sees no key, or whose
weights are all zero, returns zeros.

These functions are O(m n) in time and memory per head; they are meant for checking, not speed.
The scores ``scale q k^T`` are evaluated in float64 as they are: inputs whose scores overflow
(``|scale <q, k>|`` beyond ~1.8e308) give inf/NaN here, while :mod:`hsrgeom.attention` scales such
rows by powers of two and stays exact; check those against exact (rational) arithmetic.
"""
from __future__ import annotations

import numpy as np

__all__ = ["scores", "relu_attention", "softmax_attention", "topr_softmax_attention", "causal_mask"]


def _expand_kv(x, heads):
    """(batch, kv_heads, n, e) -> (batch, heads, n, e) by repeating each kv head."""
    return np.repeat(x, heads // x.shape[1], axis=1)


def causal_mask(m, n):
    """Boolean (m, n): True where query row i may see key j (bottom-right aligned)."""
    return np.arange(n)[None, :] <= (n - m + np.arange(m))[:, None]


def scores(q, k, scale=None):
    """``scale * q k^T`` in float64, shape (batch, heads, m, n)."""
    q = np.asarray(q, dtype=np.float64)
    k = _expand_kv(np.asarray(k, dtype=np.float64), q.shape[1])
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    return scale * np.einsum("bhmd,bhnd->bhmn", q, k)


def _weighted(w, v, heads):
    v = _expand_kv(np.asarray(v, dtype=np.float64), heads)
    den = w.sum(axis=-1, keepdims=True)
    out = np.einsum("bhmn,bhne->bhme", w, v)
    return np.divide(out, den, out=np.zeros_like(out), where=den > 0)


def relu_attention(q, k, v, *, bias, alpha=1, scale=None, causal=False):
    """``D^-1 ReLU^alpha(scale q k^T - bias) v``, D the row sums of the weights (float64).

    ``bias`` is a scalar or broadcasts to (batch, heads, m). The weights of a row are divided
    by its largest before the power (D^-1 cancels the factor), so any alpha works.
    """
    s = scores(q, k, scale) - np.asarray(bias, dtype=np.float64)[..., None]
    x = np.maximum(s, 0.0)
    if causal:
        x = np.where(causal_mask(s.shape[-2], s.shape[-1]), x, 0.0)
    # D^-1 cancels any positive factor of a row's weights: (x / x_max) ** alpha <= 1 neither
    # overflows nor underflows to an all-zero row (x ** alpha would for x ~ 10 and alpha ~ 330)
    top = x.max(axis=-1, keepdims=True, initial=0.0)
    alpha = int(alpha)
    with np.errstate(under="ignore"):
        w = np.power(x / np.where(top > 0, top, 1.0), float(alpha) if alpha.bit_length() <= 1000 else np.inf)
    return _weighted(w, v, s.shape[1])


def softmax_attention(q, k, v, *, scale=None, causal=False):
    """Dense softmax attention in float64 (rows that see no key return zeros)."""
    s = scores(q, k, scale)
    if causal:
        s = np.where(causal_mask(s.shape[-2], s.shape[-1]), s, -np.inf)
    mx = s.max(axis=-1, keepdims=True, initial=-np.inf)
    w = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    return _weighted(w, v, s.shape[1])


def topr_softmax_attention(q, k, v, *, top_r, scale=None, causal=False):
    """Softmax over the ``top_r`` largest scores of each row (ties: smaller key index first)."""
    s = scores(q, k, scale)
    if causal:
        s = np.where(causal_mask(s.shape[-2], s.shape[-1]), s, -np.inf)
    order = np.argsort(-s, axis=-1, kind="stable")[..., : int(top_r)]
    keep = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=-1)
    s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True, initial=-np.inf)
    w = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    return _weighted(w, v, s.shape[1])
