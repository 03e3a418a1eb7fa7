"""Attention through half-space reporting (Chen, Liang, Sha, Shi, Song, arXiv 2410.10165).

* :func:`relu_attention` — ``D^-1 ReLU^alpha(scale q k^T - bias) v``. Its non-zero entries are a
  half-space query on the keys, so reporting finds exactly them: no approximation.
* :func:`softmax_attention` — softmax over the top-r (exact maximum inner product search) and/or
  over-threshold (half-space reporting) entries, or the top-p set (certified share p of the
  softmax mass), with bounds on the dropped mass and error.
* :class:`DecodeCache` — generation decoding: one index per (batch, kv head), grown per token.
* :func:`prefill` — all prompt rows at once, batched per head, with a causal cut.
* :mod:`hsrgeom.attention.reference` — dense float64 implementations, the ground truth.
* :mod:`hsrgeom.attention.hf` — the Hugging Face transformers integration (``register``,
  ``enable``, ``HsrgeomCache``); needs the ``[llm]`` extra and is imported only on demand
  (``import hsrgeom.attention`` never imports torch).

Shapes follow ``torch.nn.functional.scaled_dot_product_attention``: q (batch, heads, m, d),
k (batch, kv_heads, n, d), v (batch, kv_heads, n, d_v); kv_heads divides heads. Inputs are
numpy float32/float64 arrays or anything ``numpy.asarray`` takes (torch CPU tensors); outputs
are numpy arrays of the query dtype. Causal masks are bottom-right aligned (as FlashAttention):
row i sees keys ``j <= n - m + i``.
"""
from . import reference
from ._api import prefill, relu_attention, softmax_attention
from ._cache import DecodeCache

__all__ = ["relu_attention", "softmax_attention", "prefill", "DecodeCache", "reference"]
