"""hsrgeom.attention.hf: the transformers integration, on a tiny randomly initialised Gemma 3
(2 full-attention and 2 sliding-window layers, GQA 4:1, sliding window 8; no weights needed),
against transformers' own sdpa."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import AttentionInterface, DynamicCache, Gemma3ForCausalLM, Gemma3TextConfig  # noqa: E402
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask  # noqa: E402

import hsrgeom.attention as A  # noqa: E402
import hsrgeom.attention.hf as hf  # noqa: E402

TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
FULL = [1, 3]
PROMPT = 40  # > sliding_window: the sliding layers' mask matters


def tiny(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=8,
                           layer_types=TYPES, max_position_embeddings=256, query_pre_attn_scalar=32,
                           attn_implementation="sdpa")
    model = Gemma3ForCausalLM(cfg).eval().to(dtype)
    with torch.no_grad():  # sharper attention than the default init, so that dropping keys shows
        for i in FULL + [0, 2]:
            model.model.layers[i].self_attn.q_proj.weight.mul_(4.0)
    return model


def ids(batch=1, n=PROMPT, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 96, (batch, n), generator=g)


TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


def logits(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw).logits


@pytest.fixture
def counting(monkeypatch):
    """Counts DecodeCache.attend calls (the hsrgeom path really ran)."""
    calls = []
    orig = A.DecodeCache.attend

    def attend(self, *a, **kw):
        calls.append(len(self))
        return orig(self, *a, **kw)

    monkeypatch.setattr(A.DecodeCache, "attend", attend)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prefill_and_decode_match_sdpa(dtype, counting):
    model = tiny(dtype)
    x = ids()
    ref = logits(model, x)
    c0 = DynamicCache(config=model.config)
    logits(model, x, cache=c0, use_cache=True)
    ref_step = logits(model, torch.tensor([[5]]), cache=c0, use_cache=True)

    hf.enable(model, min_keys=0)  # every key kept (no knob): equal to sdpa up to rounding
    assert model.config._attn_implementation == "hsrgeom"
    out = logits(model, x)
    assert (out - ref).abs().max() <= TOL[dtype] * ref.abs().max()
    c1 = hf.HsrgeomCache(model.config)
    logits(model, x, cache=c1, use_cache=True)
    assert counting == []  # prefill is sdpa
    step = logits(model, torch.tensor([[5]]), cache=c1, use_cache=True)
    assert counting == [PROMPT + 1] * len(FULL)  # one attend per full-attention layer, over every key
    assert (step - ref_step).abs().max() <= TOL[dtype] * ref_step.abs().max()
    assert [type(layer).__name__ for layer in c1.layers] == [
        "DynamicSlidingWindowLayer", "HsrgeomLayer", "DynamicSlidingWindowLayer", "HsrgeomLayer"]
    st = c1.layers[1].last_stats
    assert (st["entries"] == PROMPT + 1).all() and (st["dropped_mass_bound"] == 0).all()

    # a sparse setting really changes the output (the test above can fail)
    hf.enable(model, top_r=1, min_keys=0)
    c2 = hf.HsrgeomCache(model)
    logits(model, x, cache=c2, use_cache=True)
    sparse = logits(model, torch.tensor([[5]]), cache=c2, use_cache=True)
    assert (sparse - ref_step).abs().max() > 100 * TOL[dtype] * ref_step.abs().max()


def test_top_p_certificate_in_model(monkeypatch):
    """top_p through the hook: each step's certified bound is <= 1 - p, and (checked densely on
    the very queries the model asked) the kept keys hold >= p of the softmax mass."""
    model = tiny()
    seen = []
    orig = A.DecodeCache.attend

    def attend(self, q, *a, **kw):
        kw["return_stats"] = "exact"
        out, st = orig(self, q, *a, **kw)
        seen.append(st)
        return out, st

    monkeypatch.setattr(A.DecodeCache, "attend", attend)
    hf.enable(model, top_p=0.9, min_keys=0)
    with torch.no_grad():
        model.generate(ids(seed=5), max_new_tokens=4, do_sample=False)
    assert len(seen) == 3 * len(FULL)
    for st in seen:
        assert (st["dropped_mass_bound"] <= 0.1 + 1e-9).all() and (st["entries"] >= 1).all()
        assert (st["kept_mass"] >= 0.9 - 1e-9).all()
        assert (1 - st["kept_mass"] <= st["dropped_mass_bound"] + 1e-9).all()
    assert any((st["entries"] < st["visible"]).any() for st in seen)  # keys were really dropped


def test_generate_matches_sdpa(counting):
    model = tiny()
    x = ids(seed=2)
    kw = dict(max_new_tokens=8, do_sample=False, return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        g0 = model.generate(x, **kw)
    hf.enable(model, min_keys=0)
    with torch.no_grad():
        g1 = model.generate(x, **kw)
    assert torch.equal(g0.sequences, g1.sequences)
    for s0, s1 in zip(g0.scores, g1.scores):
        assert (s0 - s1).abs().max() <= 1e-4 * s0.abs().max()
    assert len(counting) == 7 * len(FULL)  # every decoding step of both full layers went through hsrgeom
    assert isinstance(g1.cache if hasattr(g1, "cache") else g1.past_key_values, hf.HsrgeomCache)
    # beam search reorders the cache (HsrgeomLayer.reorder_cache drops and rebuilds the index)
    with torch.no_grad():
        b1 = model.generate(x, max_new_tokens=5, num_beams=3, do_sample=False)
    hf.disable(model)
    with torch.no_grad():
        b0 = model.generate(x, max_new_tokens=5, num_beams=3, do_sample=False)
    assert torch.equal(b0, b1)


def test_padded_batch_and_fallback(counting):
    model = tiny()
    x = ids(batch=2, seed=3)
    mask = torch.ones_like(x)
    mask[1, :5] = 0  # left padding: an explicit mask, served by sdpa
    kw = dict(attention_mask=mask, max_new_tokens=4, do_sample=False)
    with torch.no_grad():
        g0 = model.generate(x, **kw)
    hf.enable(model, min_keys=0)
    with torch.no_grad():
        g1 = model.generate(x, **kw)
    assert torch.equal(g0, g1)
    # below min_keys every step is dense: no index is ever built
    hf.enable(model, top_r=1, min_keys=10_000)
    counting.clear()
    cache = hf.HsrgeomCache(model.config)
    with torch.no_grad():
        model.generate(ids(), max_new_tokens=4, do_sample=False, cache=cache)
    assert counting == [] and all(getattr(layer, "decode", None) is None for layer in cache.layers)


def test_from_pretrained_after_register(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    x = ids()
    ref = logits(model, x)
    assert hf.register() == "hsrgeom"
    assert ALL_MASK_ATTENTION_FUNCTIONS["hsrgeom"] is sdpa_mask
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="hsrgeom").eval()
    assert loaded.config._attn_implementation == "hsrgeom"
    assert hf.settings(loaded)[1] is not None and hf.settings(loaded)[0] is None  # default: full layers only
    out = logits(loaded, x)
    assert (out - ref).abs().max() <= TOL[torch.float32] * ref.abs().max()
    cache = hf.HsrgeomCache(loaded.config)
    with torch.no_grad():
        g = loaded.generate(x, max_new_tokens=3, do_sample=False, cache=cache)
        g0 = model.generate(x, max_new_tokens=3, do_sample=False)
    assert torch.equal(g, g0)


def test_sliding_window_mask_reaches_sliding_layers():
    """Without the AttentionMaskInterface entry the sliding layers get no mask and see every key;
    register() adds it, so they get sdpa's sliding-window mask."""
    model = tiny()
    x = ids()
    ref = logits(model, x)
    AttentionInterface.register("hsrgeom_nomask", hf.attention)  # what register() would be without the mask entry
    seen = {}
    orig = hf.sdpa_attention_forward

    def spy(module, q, k, v, mask, **kw):
        seen[module.layer_idx] = mask
        return orig(module, q, k, v, mask, **kw)

    try:
        hf.sdpa_attention_forward = spy
        model.set_attn_implementation("hsrgeom_nomask")
        broken = logits(model, x)
        assert seen[0] is None  # no mask at all: the bug
        assert (broken - ref).abs().max() > 1e-3 * ref.abs().max()
        seen.clear()
        hf.enable(model, min_keys=0, name="hsrgeom")
        fixed = logits(model, x)
        assert seen[0] is not None and seen[0].shape[-1] == PROMPT
        assert not bool(seen[0][0, 0, -1, 0])  # the last row does not see key 0 (outside the window)
        assert (fixed - ref).abs().max() <= TOL[torch.float32] * ref.abs().max()
    finally:
        hf.sdpa_attention_forward = orig


def test_cache_round_trip():
    model = tiny()
    hf.enable(model, min_keys=0)
    cache = hf.HsrgeomCache(model.config)
    cache.activate_past_recording()  # the sliding layers keep their past, so that crop() can roll back
    x = ids(batch=2, seed=4)
    with torch.no_grad():
        model(x, cache=cache, use_cache=True)
        model(torch.tensor([[1], [2]]), cache=cache, use_cache=True)
    assert cache.get_seq_length() == PROMPT + 1
    layer = cache.layers[1]
    dc = layer.decode_cache()
    assert len(dc) == PROMPT + 1
    np.testing.assert_array_equal(dc.keys(), layer.keys.numpy())
    np.testing.assert_array_equal(dc.values(), layer.values.numpy())
    cache.reorder_cache(torch.tensor([1, 0]))
    assert layer.decode is None
    np.testing.assert_array_equal(layer.decode_cache().keys(), layer.keys.numpy())
    np.testing.assert_array_equal(layer.decode_cache().keys()[0], dc.keys()[1])
    cache.crop(-3)
    assert cache.get_seq_length() == PROMPT - 2 and layer.decode is None
    assert len(layer.decode_cache()) == PROMPT - 2
    np.testing.assert_array_equal(layer.decode_cache().keys(), layer.keys.numpy())
    # decoding after a crop continues from the cropped keys (compared with a DynamicCache)
    ref = DynamicCache(config=model.config)
    ref.activate_past_recording()
    hf.disable(model)
    with torch.no_grad():
        model(x[[1, 0]], cache=ref, use_cache=True)
        ref.crop(-2)
        r = model(torch.tensor([[7], [8]]), cache=ref, use_cache=True).logits
    hf.enable(model, min_keys=0)
    with torch.no_grad():
        h = model(torch.tensor([[7], [8]]), cache=cache, use_cache=True).logits
    assert (h - r).abs().max() <= TOL[torch.float32] * r.abs().max()
    cache.batch_select_indices(torch.tensor([0]))
    assert layer.decode is None and len(layer.decode_cache()) == PROMPT - 1
    cache.reset()
    assert cache.get_seq_length() == 0 and layer.decode is None


def test_layer_selection():
    model = tiny()
    assert {i for i, s in hf.settings(hf.enable(model)).items() if s is not None} == set(FULL)
    assert all(s is not None for s in hf.settings(hf.enable(model, layers="all")).values())
    sel = hf.settings(hf.enable(model, layers=[3], top_p=0.9))
    assert sel[1] is None and sel[3].top_p == 0.9
    hf.disable(model)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kw, err, word", [
    (dict(top_r=0), ValueError, "top_r"), (dict(top_r=-3), ValueError, "top_r"), (dict(top_r=2.5), TypeError, "top_r"),
    (dict(top_p=0.0), ValueError, "top_p"), (dict(top_p=1.01), ValueError, "top_p"),
    (dict(top_p=float("nan")), ValueError, "top_p"), (dict(top_p="0.9"), TypeError, "top_p"),
    (dict(top_p=0.9, top_r=4), ValueError, "top_p"), (dict(threshold=float("inf")), ValueError, "threshold"),
    (dict(layers="sliding"), ValueError, "layers"), (dict(layers=[0, 9]), ValueError, "layers"),
    (dict(layers=[True]), ValueError, "layers"), (dict(layers=3), ValueError, "layers"),
    (dict(mode="relu"), ValueError, "mode"), (dict(min_keys=-1), ValueError, "min_keys"),
    (dict(name=""), ValueError, "name"),
])
def test_bad_settings(kw, err, word):
    model = tiny()
    with pytest.raises(err, match=word):
        hf.enable(model, **kw)
    assert model.config._attn_implementation == "sdpa"  # nothing changed


def test_import_needs_llm_extra():
    env = dict(os.environ)
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers'): raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import hsrgeom.attention\n"
            "assert 'torch' not in sys.modules\n"
            "try:\n"
            "    import hsrgeom.attention.hf\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hsrgeom[llm]" in out.stdout
    plain = subprocess.run([sys.executable, "-c", "import sys, hsrgeom.attention; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=120)
    assert plain.stdout.strip() == "False", plain.stderr


def test_dense_fallback_threshold_follows_the_knob():
    """top_r alone runs the fused step (MIN_KEYS), top_p < 1 the fused top-p step
    (MIN_KEYS_TOP_P); top_p = 1, thresholds and no knob fall back to sdpa up to MIN_KEYS_SCAN;
    an explicit min_keys wins."""
    assert hf.MIN_KEYS < hf.MIN_KEYS_SCAN and hf.MIN_KEYS_TOP_P < hf.MIN_KEYS_SCAN
    assert hf.Settings(top_r=64).min_keys == hf.MIN_KEYS
    assert hf.Settings(top_p=0.99).min_keys == hf.MIN_KEYS_TOP_P
    assert hf.Settings(top_p=1.0).min_keys == hf.MIN_KEYS_SCAN
    assert hf.Settings(threshold=1.0, top_r=5).min_keys == hf.MIN_KEYS_SCAN
    assert hf.Settings().min_keys == hf.MIN_KEYS_SCAN
    assert hf.Settings(top_r=64, min_keys=7).min_keys == 7


def test_layer_grows_in_place_and_equals_dynamic_layer():
    """HsrgeomLayer keeps its keys and values as views of buffers that double (a token appends
    in place, no copy of the cache), with the same tensors as transformers' DynamicLayer after
    every update, crop, batch selection, reorder and deepcopy."""
    import copy

    from transformers.cache_utils import DynamicLayer
    g = torch.Generator().manual_seed(5)
    mine, ref = hf.HsrgeomLayer(), DynamicLayer()

    def step(t, batch=2):
        k, v = torch.randn(batch, 1, t, 8, generator=g), torch.randn(batch, 1, t, 6, generator=g)
        a, b = mine.update(k, v)
        c, d = ref.update(k, v)
        assert torch.equal(a, c) and torch.equal(b, d) and a.shape == c.shape
        assert getattr(a, hf._LAYER) is mine
        return a

    step(20)
    ptrs = {step(1).data_ptr() for _ in range(10)}  # 20 -> 30 keys: within the first capacity (40)
    assert len(ptrs) == 1
    for layer in (mine, ref):
        layer.crop(-4)
    step(1)
    step(3)
    for layer in (mine, ref):
        layer.batch_select_indices(torch.tensor([1]))
    step(1, batch=1)
    for layer in (mine, ref):
        layer.batch_repeat_interleave(3)
    step(2, batch=3)
    for layer in (mine, ref):
        layer.reorder_cache(torch.tensor([2, 0, 1]))
    step(1, batch=3)
    mine, ref = copy.deepcopy(mine), copy.deepcopy(ref)
    for _ in range(40):  # past the capacity: the buffers double
        step(1, batch=3)
    assert mine.keys.shape == ref.keys.shape == (3, 1, 74, 8)
    with torch.enable_grad():  # autograd: plain concatenation, no in-place buffers
        k = torch.randn(3, 1, 1, 8, requires_grad=True)
        a, _ = mine.update(k, torch.randn(3, 1, 1, 6))
        assert a.requires_grad and a.shape[-2] == 75
    mine.reset()
    assert mine.get_seq_length() == 0
