"""hsrgeom attention inside Hugging Face ``transformers`` models (the ``[llm]`` extra).

Usage (not run as a doctest: it needs a model)::

    import hsrgeom.attention.hf as hf
    hf.register()        # "hsrgeom" in AttentionInterface and AttentionMaskInterface
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="hsrgeom")
    hf.enable(model, top_p=0.999)   # knobs, layer selection; generate() uses HsrgeomCache
    model.generate(**inputs)

What runs where (every other case is plain sdpa, so outputs are sdpa's):

* Decoding steps (one query row) of the selected layers, whose keys live in an
  :class:`HsrgeomCache` layer and number at least ``min_keys``: :meth:`DecodeCache.attend
  <hsrgeom.attention.DecodeCache.attend>` over that layer's :class:`~hsrgeom.attention.DecodeCache`
  (one half-space index per (batch, kv head), grown by one key per token; all query heads of a
  kv head are one batch of queries), in softmax mode with the knobs given (``top_r``,
  ``threshold`` or ``top_p``; none of them: every key, i.e. dense softmax to rounding).
* Prompt prefill (several query rows), contexts below ``min_keys`` (:data:`MIN_KEYS` /
  :data:`MIN_KEYS_TOP_P` / :data:`MIN_KEYS_SCAN`, the dense
  fallback: there sdpa is faster than any index), layers not selected (by default the
  sliding-window layers, whose few keys never pay for an index), padded batches (an explicit
  attention mask), dropout, logit soft-capping and attention sinks: sdpa.

The mask function registered beside the attention function is sdpa's: without an
``AttentionMaskInterface`` entry transformers builds *no* mask for an unknown implementation,
and the sliding-window layers would silently see every key.
"""
from __future__ import annotations

try:
    import torch
    import transformers  # noqa: F401
    from transformers import AttentionInterface, DynamicCache
    from transformers.cache_utils import DynamicLayer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        f"hsrgeom.attention.hf needs torch and transformers ({e}): pip install 'hsrgeom[llm]' "
        "(it pins a CPU build of torch)") from e

import numbers
import warnings

import numpy as np

from ._api import _top_p
from ._cache import DecodeCache

# Dense fallback: below this many keys a decoding step runs sdpa. Measured on the development
# machine (Gemma 3 270M shapes: 4 query heads over 1 kv head, d = 256, float32, one token):
# torch sdpa against DecodeCache.attend; see docs/attention.md, "transformers integration".
# MIN_KEYS: top_r alone (the fused step over the key codes: one compiled call per kv head);
# MIN_KEYS_TOP_P: top_p < 1 alone (the fused certified top-p step; on the captured layers it
# ties sdpa at 4K keys on one machine here, wins by 1.2-1.5x on another, and by 1.6x at 8K);
# MIN_KEYS_SCAN: every other setting (threshold, top_p = 1, none), which keep a large share of
# the keys on real layers and were not measured to beat sdpa below it.
MIN_KEYS = 1 << 12
MIN_KEYS_TOP_P = 1 << 13
MIN_KEYS_SCAN = 1 << 17

_ATTR = "_hsrgeom_settings"     # on attention modules: their Settings, or None (not selected)
_LAYER = "_hsrgeom_layer"       # on the key tensor an HsrgeomLayer returns: that layer
_registered = set()


class Settings:
    """What a selected attention layer does on a decoding step (validated on creation).

    ``mode`` "softmax" (the only mode a softmax-trained model can use); ``top_r`` (int >= 1),
    ``threshold`` (logit cut-off) or ``top_p`` (in (0, 1], certified mass; see
    :func:`hsrgeom.attention.softmax_attention`); ``min_keys``: the dense fallback below it;
    ``index``: the ``kind`` of each head's index (:func:`hsrgeom.build_index`).
    """

    def __init__(self, mode="softmax", *, top_r=None, threshold=None, top_p=None, min_keys=None, index="auto"):
        if mode != "softmax":
            raise ValueError(f"mode must be 'softmax' (the model's own attention), got {mode!r}")
        if top_r is not None:
            if isinstance(top_r, (bool, np.bool_)) or not isinstance(top_r, numbers.Integral):
                raise TypeError(f"top_r must be an integer >= 1, got {type(top_r).__name__}")
            if top_r < 1:
                raise ValueError(f"top_r must be >= 1, got {top_r}")
            top_r = int(top_r)
        if threshold is not None:
            if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
                raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
            if not np.isfinite(threshold):
                raise ValueError(f"threshold must be finite, got {threshold}")
            threshold = float(threshold)
        if top_p is not None:
            top_p = _top_p(top_p)
            if top_r is not None or threshold is not None:
                raise ValueError("top_p cannot be combined with top_r or threshold (it chooses its own cut-off)")
        if min_keys is None:
            if top_r is not None and threshold is None:
                min_keys = MIN_KEYS
            elif top_p is not None and top_p < 1:
                min_keys = MIN_KEYS_TOP_P
            else:
                min_keys = MIN_KEYS_SCAN
        if isinstance(min_keys, (bool, np.bool_)) or not isinstance(min_keys, numbers.Integral) or min_keys < 0:
            raise ValueError(f"min_keys must be an integer >= 0, got {min_keys!r}")
        if not isinstance(index, str):
            raise TypeError(f"index must be a str (a kind of hsrgeom.build_index), got {type(index).__name__}")
        self.mode, self.top_r, self.threshold, self.top_p = mode, top_r, threshold, top_p
        self.min_keys, self.index = int(min_keys), index

    def knobs(self):
        return {"top_r": self.top_r, "threshold": self.threshold, "top_p": self.top_p}

    def __repr__(self):
        kn = ", ".join(f"{k}={v!r}" for k, v in self.knobs().items() if v is not None) or "every key"
        return f"Settings(mode={self.mode!r}, {kn}, min_keys={self.min_keys}, index={self.index!r})"


_DEFAULT = Settings()  # modules of a model loaded with attn_implementation="hsrgeom" and no enable()


def _module_settings(module):
    """The Settings of an attention module, or None when it runs sdpa. Modules enable() has not
    seen: the full-attention ones (no sliding window) with the defaults."""
    if hasattr(module, _ATTR):
        return getattr(module, _ATTR)
    return _DEFAULT if getattr(module, "sliding_window", None) is None else None


def _np(x):
    """A float32/float64 numpy view (or copy, for other dtypes) of a CPU tensor."""
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x.cpu().numpy()


_warned_plain_cache = False


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The function registered with ``transformers.AttentionInterface`` (see the module doc).

    ``query`` (batch, heads, m, d), ``key``/``value`` (batch, kv_heads, n, d) as the model
    passes them; returns ``(output (batch, m, heads, d_v), None)`` as sdpa does."""
    global _warned_plain_cache
    s = _module_settings(module)
    n, m = key.shape[2], query.shape[2]
    if (s is None or m != 1 or n < max(s.min_keys, 1) or dropout or kwargs.get("softcap") is not None
            or kwargs.get("s_aux") is not None or kwargs.get("output_attentions")
            or (attention_mask is not None and not (attention_mask.dtype == torch.bool and bool(attention_mask.all())))
            or query.device.type != "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    layer = getattr(key, _LAYER, None)
    if layer is None:
        # a sliding-window layer's cache holds only its window (no index is kept over a moving
        # window): sdpa, silently; any other layer: the cache is not an HsrgeomCache
        if not _warned_plain_cache and getattr(module, "sliding_window", None) is None:
            _warned_plain_cache = True
            warnings.warn("hsrgeom attention: the keys do not come from an HsrgeomCache, so decoding runs sdpa; "
                          "call hsrgeom.attention.hf.enable(model) (generate() then makes one) or pass "
                          "cache=HsrgeomCache(model.config)", RuntimeWarning, stacklevel=2)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    cache = layer.decode_cache(s.index)
    q = _np(query)
    if q.dtype != cache.dtype:
        q = q.astype(cache.dtype)
    out, stats = cache.attend(q, mode="softmax", scale=scaling, return_stats=True, **s.knobs())
    layer.last_stats = stats
    res = torch.from_numpy(np.ascontiguousarray(out)).to(query.dtype).transpose(1, 2).contiguous()
    return res, None


class HsrgeomLayer(DynamicLayer):
    """A transformers cache layer (a :class:`~transformers.cache_utils.DynamicLayer`: the keys and
    values as tensors, which sdpa uses for prefill and the dense fallback) with a
    :class:`~hsrgeom.attention.DecodeCache` beside them, for the decoding steps.

    The DecodeCache is filled lazily: the first decoding step that uses it appends every key so
    far, later steps the new ones (its index grows by the logarithmic method). Anything that
    rewrites the cache (``crop``, ``reorder_cache``, batch selection or repetition, ``reset``)
    drops it, and it is rebuilt from the tensors on the next use, so it always holds exactly
    the layer's keys and values. ``last_stats``: the statistics of the last step (kept entries,
    ``dropped_mass_bound``, ...; see :func:`hsrgeom.attention.softmax_attention`).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.decode = None
        self.last_stats = None
        self._buf = None  # (keys, values) with room to grow; self.keys / self.values are views of them

    def update(self, key_states, value_states, *args, **kwargs):
        if key_states.requires_grad or value_states.requires_grad:  # autograd: no in-place buffers
            self._buf = None
            keys, values = super().update(key_states, value_states, *args, **kwargs)
        else:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            keys, values = self.keys, self.values = self._grown(key_states, value_states)
        setattr(keys, _LAYER, self)  # how the attention function finds this layer
        return keys, values

    def _views_of_buffers(self):
        """Whether self.keys / self.values are the leading positions of the buffers."""
        buf = self._buf
        if buf is None or self.keys is None or self.keys.dim() != 4 or self.values.dim() != 4:
            return False
        n = self.keys.shape[-2]
        return all(x.data_ptr() == b.data_ptr() and x.shape == b[:, :, :n].shape and x.stride() == b.stride()
                   and x.dtype == b.dtype and x.device == b.device for x, b in zip((self.keys, self.values), buf))

    def _grown(self, k, v):
        """self.keys / self.values with k, v appended, as views of buffers whose capacity doubles
        (DynamicLayer concatenates: a copy of the whole cache per token). The buffers are made
        anew from self.keys / self.values whenever these are not their views any more (a batch
        selection, or any code that set them; a crop leaves views, and the next token
        overwrites the positions it dropped)."""
        n, t = self.get_seq_length(), k.shape[-2]
        buf = self._buf
        if (not self._views_of_buffers() or buf[0].shape[:2] != k.shape[:2] or buf[0].shape[-1] != k.shape[-1]
                or buf[1].shape[-1] != v.shape[-1] or buf[0].dtype != k.dtype or buf[1].dtype != v.dtype
                or n + t > buf[0].shape[-2]):
            cap = max(2 * n, n + t, 16)
            new = (k.new_empty(k.shape[:2] + (cap, k.shape[-1])), v.new_empty(v.shape[:2] + (cap, v.shape[-1])))
            if n:
                new[0][:, :, :n] = self.keys
                new[1][:, :, :n] = self.values
            self._buf = buf = new
        buf[0][:, :, n:n + t] = k
        buf[1][:, :, n:n + t] = v
        return buf[0][:, :, :n + t], buf[1][:, :, :n + t]

    def decode_cache(self, index="auto"):
        """The layer's DecodeCache holding all of its keys and values (appending the new ones)."""
        n = self.get_seq_length()
        if self.decode is not None and (self.decode.kind != index or len(self.decode) > n):
            self.decode = None
        if self.decode is None:
            self.decode = DecodeCache(kind=index)
        have = len(self.decode)
        if have < n:
            self.decode.append(_np(self.keys[:, :, have:]), _np(self.values[:, :, have:]))
        return self.decode

    def _drop(self):
        self.decode = None
        self.last_stats = None

    def reset(self):
        super().reset()
        self._drop()

    def crop(self, tokens_to_remove):
        super().crop(tokens_to_remove)
        self._drop()

    def reorder_cache(self, beam_idx):
        super().reorder_cache(beam_idx)
        self._drop()

    def batch_repeat_interleave(self, repeats):
        super().batch_repeat_interleave(repeats)
        self._drop()

    def batch_select_indices(self, indices):
        super().batch_select_indices(indices)
        self._drop()


class HsrgeomCache(DynamicCache):
    """A :class:`transformers.DynamicCache` whose full-attention layers are :class:`HsrgeomLayer`
    (sliding-window layers keep transformers' own window layer).

    ``HsrgeomCache(model.config)`` (or the model itself) has the same layers as
    ``DynamicCache(config=model.config)``, so it can be passed wherever one is: ``model(...,
    cache=c)``, ``model.generate(..., cache=c)``; :func:`enable` makes ``generate()`` create one.
    """

    def __init__(self, config=None, **kwargs):
        if config is not None and not hasattr(config, "get_text_config") and hasattr(config, "config"):
            config = config.config  # a model
        super().__init__(config=config, **kwargs)
        if config is None:
            self.layer_class_to_replicate = HsrgeomLayer
        else:
            self.layers = [HsrgeomLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]


def register(name="hsrgeom"):
    """Register the hsrgeom attention function under ``name`` with transformers'
    ``AttentionInterface``, and sdpa's mask function under the same name with
    ``AttentionMaskInterface`` (so that sliding-window and padded layers get their masks).
    Then ``from_pretrained(..., attn_implementation=name)`` works. Idempotent; returns ``name``."""
    if not isinstance(name, str) or not name or name in ("sdpa", "eager") or "|" in name:
        raise ValueError(f"name must be a new attention implementation name (a non-empty str), got {name!r}")
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    _registered.add(name)
    return name


def _attention_modules(model):
    """[(layer index, module)] of the model's attention modules (those with a ``layer_idx``
    and the q/k/v projections of the functional attention interface)."""
    found = []
    for mod in model.modules():
        if hasattr(mod, "layer_idx") and hasattr(mod, "q_proj") and hasattr(mod, "k_proj"):
            found.append((int(mod.layer_idx), mod))
    return found


def _select(spec, mods):
    """Layer indexes selected by ``layers`` among the attention modules."""
    idx = sorted(i for i, _ in mods)
    if isinstance(spec, str):
        if spec == "full":
            return {i for i, mod in mods if getattr(mod, "sliding_window", None) is None}
        if spec == "all":
            return set(idx)
        raise ValueError(f"layers must be 'full', 'all' or a list of layer indices, got {spec!r}")
    try:
        chosen = list(spec)
    except TypeError:
        raise ValueError(f"layers must be 'full', 'all' or a list of layer indices, got {spec!r}") from None
    for i in chosen:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral) or int(i) not in idx:
            raise ValueError(f"layers: {i!r} is not a layer index of this model (0 to {len(idx) - 1})")
    return {int(i) for i in chosen}


def enable(model, mode="softmax", *, top_r=None, threshold=None, top_p=None, layers="full", min_keys=None,
           index="auto", name="hsrgeom"):
    """Run hsrgeom attention in the selected layers of a loaded model (in place; returns it).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A model whose attention uses transformers' ``AttentionInterface`` (Gemma 3, Llama, ...).
    mode : "softmax"
    top_r, threshold, top_p
        The knob of the decoding steps (at most one of ``top_p`` and the others): the ``top_r``
        largest logits, the logits ``>= threshold``, or the smallest set certified to hold a
        share ``top_p`` of the softmax mass. None of them: every key (dense softmax).
    layers : "full", "all" or a list of layer indices
        "full": the full-attention layers (sliding-window layers keep sdpa). A selected
        sliding-window layer still runs sdpa: its cache holds only the window (transformers'
        window layer), over which no index is kept.
    min_keys : int, default :data:`MIN_KEYS` (``top_r`` alone), :data:`MIN_KEYS_TOP_P` (``top_p`` < 1)
        or :data:`MIN_KEYS_SCAN` (others)
        The dense fallback: decoding steps over fewer keys run sdpa.
    index : str
        The ``kind`` of each head's index (:func:`hsrgeom.build_index`; "auto" chooses).
    name : str
        The implementation name (registered here by :func:`register` unless it already was).

    Notes
    -----
    ``generate()`` then creates an :class:`HsrgeomCache` instead of a plain ``DynamicCache``
    (a cache passed by the caller is used as given).
    """
    settings = Settings(mode, top_r=top_r, threshold=threshold, top_p=top_p, min_keys=min_keys, index=index)
    mods = _attention_modules(model)
    if not mods:
        raise ValueError("model has no attention modules with a layer_idx and q/k/v projections "
                         "(transformers' functional attention interface)")
    chosen = _select(layers, mods)
    if name not in _registered:  # (a function registered under the name since is kept)
        register(name)
    for i, mod in mods:
        setattr(mod, _ATTR, settings if i in chosen else None)
    model.set_attn_implementation(name)
    if not getattr(model, "_hsrgeom_generate_cache", False) and hasattr(model, "_prepare_cache_for_generation"):
        original = model._prepare_cache_for_generation

        def prepare(generation_config, model_kwargs, *args, **kwargs):
            out = original(generation_config, model_kwargs, *args, **kwargs)
            made = model_kwargs.get("cache")
            if type(made) is DynamicCache and not getattr(made, "_is_user_defined", False):
                model_kwargs["cache"] = HsrgeomCache(model.config.get_text_config(decoder=True))
            return out

        model._prepare_cache_for_generation = prepare
        model._hsrgeom_generate_cache = True
    return model


def disable(model):
    """Undo :func:`enable`: sdpa everywhere, plain ``DynamicCache`` in ``generate()``."""
    for _, mod in _attention_modules(model):
        if hasattr(mod, _ATTR):
            delattr(mod, _ATTR)
    if getattr(model, "_hsrgeom_generate_cache", False):
        del model._prepare_cache_for_generation
        model._hsrgeom_generate_cache = False
    model.set_attn_implementation("sdpa")
    return model


def settings(model):
    """{layer index: Settings or None (sdpa)} of the model's attention modules."""
    return {i: _module_settings(mod) for i, mod in sorted(_attention_modules(model), key=lambda t: t[0])}


__all__ = ["MIN_KEYS", "MIN_KEYS_SCAN", "MIN_KEYS_TOP_P", "Settings", "HsrgeomCache", "HsrgeomLayer", "attention",
           "register", "enable", "disable", "settings"]
