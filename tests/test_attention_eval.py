"""benchmarks/attention/eval.py, the offline long-context evaluation kit: its pure pieces (no model,
no torch): the GGUF-vocabulary tokenizer (llama.cpp's SentencePiece algorithm) against a naive
reference on toy vocabularies, the passkey prompt generator against token counters, the scoring,
the option parsers and the small numeric helpers."""
import contextlib
import importlib.util
import io
import os
import random
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "attention")
sys.path.insert(0, BENCH)  # eval.py imports _common and _llm_model from beside it
_spec = importlib.util.spec_from_file_location("attention_eval_kit", os.path.join(BENCH, "eval.py"))
E = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = E  # (its dataclass looks its module up)
_spec.loader.exec_module(E)

S = E.SPACE


def vocab(tokens, scores=None, types=None, *, bytes_=True, **kw):
    """An SpmTokenizer over ``tokens`` (with <bos> first and the 256 byte tokens last)."""
    toks = ["<bos>", *tokens]
    sc = [0.0, *(scores if scores is not None else [0.0] * len(tokens))]
    ty = [E.CONTROL, *(types if types is not None else [E.NORMAL] * len(tokens))]
    if bytes_:
        toks += [f"<0x{b:02X}>" for b in range(256)]
        sc += [0.0] * 256
        ty += [E.BYTE] * 256
    return E.SpmTokenizer(toks, sc, ty, bos_id=0, **kw)


def naive_spm(tok, text):
    """The definition: merge the adjacent pair whose concatenation is a token of highest score
    (leftmost on ties) until none is; then tokens, or UTF-8 byte tokens for unknown characters.
    User-defined tokens are cut out first, longest first."""
    parts = [text]
    for t in sorted((t for t, ty in zip(tok.tokens, tok.types) if ty == E.USER_DEFINED), key=len, reverse=True):
        out = []
        for p in parts:
            if isinstance(p, str):
                for j, s in enumerate(p.split(t)):
                    if j:
                        out.append(tok.ids[t])
                    if s:
                        out.append(s)
            else:
                out.append(p)
        parts = out
    ids = [tok.bos_id]
    for p in parts:
        if isinstance(p, int):
            ids.append(p)
            continue
        sym = list(p.replace(" ", S))
        while True:
            best, at = None, None
            for i in range(len(sym) - 1):
                t = tok.ids.get(sym[i] + sym[i + 1])
                if t is not None and (best is None or tok.scores[t] > best):
                    best, at = tok.scores[t], i
            if at is None:
                break
            sym[at:at + 2] = [sym[at] + sym[at + 1]]
        for s in sym:
            if s in tok.ids:
                ids.append(tok.ids[s])
            else:
                ids += [tok.byte_ids[b] for b in s.encode("utf-8")]
    return ids


# ----------------------------------------------------------------------------------------------
# SpmTokenizer


def test_merges_follow_scores_not_order():
    chars = ["a", "b", "c"]
    t1 = vocab(chars + ["ab", "bc"], [0, 0, 0, -1.0, -0.5])  # bc scores higher: a + bc
    assert [t1.tokens[i] for i in t1.encode("abc")[1:]] == ["a", "bc"]
    t2 = vocab(chars + ["ab", "bc"], [0, 0, 0, -0.5, -1.0])  # ab scores higher: ab + c
    assert [t2.tokens[i] for i in t2.encode("abc")[1:]] == ["ab", "c"]
    t3 = vocab(chars + ["ab", "bc", "abc"], [0, 0, 0, -1.0, -0.5, -2.0])  # a+bc never forms abc from ab
    assert [t3.tokens[i] for i in t3.encode("abc")[1:]] == ["abc"]


def test_ties_merge_leftmost_first():
    t = vocab(["a", "aa"], [0.0, -1.0])
    assert [t.tokens[i] for i in t.encode("aaa", add_special_tokens=False)] == ["aa", "a"]
    assert [t.tokens[i] for i in t.encode("aaaaa", add_special_tokens=False)] == ["aa", "aa", "a"]


def test_spaces_become_u2581_and_prefix_space_is_optional():
    t = vocab(["a", "b", S, S + "a", S + "b"], [0, 0, 0, -1.0, -1.0])
    assert [t.tokens[i] for i in t.encode("a b", add_special_tokens=False)] == ["a", S + "b"]
    tp = vocab(["a", "b", S, S + "a", S + "b"], [0, 0, 0, -1.0, -1.0], add_space_prefix=True)
    assert [tp.tokens[i] for i in tp.encode("a b", add_special_tokens=False)] == [S + "a", S + "b"]


def test_byte_fallback_and_missing_byte_token():
    t = vocab(["a"])
    ids = t.encode("aé", add_special_tokens=False)
    assert [t.tokens[i] for i in ids] == ["a", "<0xC3>", "<0xA9>"]
    assert t.decode(ids) == "aé"
    nob = vocab(["a"], bytes_=False)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        nob.encode("é")


def test_user_defined_whitespace_runs_are_cut_out_longest_first():
    ud = E.USER_DEFINED
    t = vocab(["x", "y", S, S + "y", "  ", "   ", "\n\n"], [0, 0, 0, -1.0, 0, 0, 0], [1, 1, 1, 1, ud, ud, ud])
    pieces = [t.piece(i) for i in t.encode("x     y\n\n", add_special_tokens=False)]
    assert pieces == ["x", "   ", "  ", "y", "\n\n"]  # 5 spaces: 3 then 2; "y" not "\u2581y"
    assert t.decode(t.encode("x     y\n\n")) == "x     y\n\n"


def test_bos_and_call_form():
    t = vocab(["a"])
    assert t.encode("a")[0] == 0 and t("a")["input_ids"] == t.encode("a")
    assert t("a", add_special_tokens=False)["input_ids"] == t.encode("a")[1:]
    assert vocab(["a"], add_bos=False).encode("a")[0] != 0
    with pytest.raises(TypeError, match="text must be a str"):
        t.encode(b"a")
    with pytest.raises(ValueError, match="one length"):
        E.SpmTokenizer(["a", "b"], [0.0], [1, 1])


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_naive_definition_on_random_vocabularies(seed):
    rng = random.Random(seed)
    alphabet = ["a", "b", "c", S, "\n"]
    toks = set(alphabet)
    while len(toks) < 40:  # multi-character tokens, many with equal scores (ties)
        toks.add("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 5))))
    toks = sorted(toks)
    scores = [rng.choice([-1.0, -2.0, -3.0, rng.uniform(-5, 0)]) for _ in toks]
    types = [E.NORMAL] * len(toks)
    # two user-defined runs (as Gemma stores runs of spaces), written with real spaces
    toks += ["  ", "    "]
    scores += [0.0, 0.0]
    types += [E.USER_DEFINED, E.USER_DEFINED]
    t = vocab(toks, scores, types)
    for _ in range(60):
        text = "".join(rng.choice("abc \n\u00e9") for _ in range(rng.randint(0, 40)))
        ids = t.encode(text)
        assert ids == naive_spm(t, text), text
        assert t.decode(ids) == text


def test_decode_drops_control_tokens_unless_asked():
    t = vocab(["a"])
    assert t.decode([0, t.ids["a"]]) == "a"
    assert t.decode([0, t.ids["a"]], skip_special_tokens=False) == "<bos>a"


# ----------------------------------------------------------------------------------------------
# passkey prompts


def words(text):  # a token counter: BOS + whitespace-separated words
    return 1 + len(text.split())


def chars(text):
    return 1 + len(text)


@pytest.mark.parametrize("count", [words, chars])
@pytest.mark.parametrize("length", [60, 200, 1000, 5000])
@pytest.mark.parametrize("depth", [0, 10, 50, 90, 100])
def test_prompt_is_the_longest_within_the_budget(count, length, depth):
    if count is chars and length < 300:
        length += 300  # the fixed text alone is ~240 characters
    p = E.build_passkey_prompt(count, length, depth, "71432")
    assert p.n_tokens == count(p.text) <= length
    longer, _ = E._assemble(E.GRASS, p.units + 1, depth, "71432", " ")
    assert count(longer) > length  # maximal
    assert p.text.startswith(E.INTRO) and p.text.endswith(E.QUESTION)
    needle = E.NEEDLE.format(key="71432")
    assert p.text.count(needle) == 1 and p.text.count("71432") == 2
    before = p.text[:p.text.index(needle)].count(".") - E.INTRO.count(".")
    assert before == round(p.units * depth / 100)  # filler units before the needle
    head = p.text[:p.text.index(needle)].rstrip(" ")
    assert p.needle_token == count(head)


def test_prompt_with_a_real_tokenizer_counts_its_tokens():
    text = " ".join(E.GRASS + (E.INTRO, E.NEEDLE, E.QUESTION)) + "0123456789"
    t = vocab(sorted(set(text.replace(" ", S))) + ["is", S + "is", "Th", S + "Th", S + "The"])  # chars, a few words
    p = E.build_passkey_prompt(lambda s: len(t(s)["input_ids"]), 700, 50, "12345")
    ids = t(p.text)["input_ids"]
    assert len(ids) == p.n_tokens <= 700 and len(ids) > 700 - 25
    assert t.decode(ids) == p.text


def test_prompt_is_deterministic_and_keys_vary():
    a = E.build_passkey_prompt(words, 500, 50, E.passkey_for(0, 500, 50, 0))
    b = E.build_passkey_prompt(words, 500, 50, E.passkey_for(0, 500, 50, 0))
    assert a.text == b.text
    keys = {E.passkey_for(s, 1024, d, t) for s in range(2) for d in (10, 50, 90) for t in range(4)}
    assert len(keys) > 20 and all(len(k) == 5 and k.isdigit() and k[0] != "0" for k in keys)
    assert E.passkey_for(3, 1024, 10, 1) == E.passkey_for(3, 1024, 10, 1)


def test_stdlib_filler_lines():
    units = E.stdlib_units(max_chars=50_000)
    assert len(units) > 100 and all(u.strip() for u in units)
    p = E.build_passkey_prompt(words, 3000, 90, "55555", units, "\n")
    assert p.n_tokens <= 3000 and "\n" + E.NEEDLE.format(key="55555") + "\n" in p.text


@pytest.mark.parametrize("kw, match", [
    (dict(length=0), "length must be a positive integer"),
    (dict(length=2.5), "length must be a positive integer"),
    (dict(length=True), "length must be a positive integer"),
    (dict(depth=101), "depth must be a percentage"),
    (dict(depth=-1), "depth must be a percentage"),
    (dict(key="12a45"), "key must be a string of digits"),
    (dict(key=12345), "key must be a string of digits"),
    (dict(units=()), "units must be"),
    (dict(units=("a", "")), "units must be"),
    (dict(length=20), "too small"),
])
def test_prompt_arguments_are_checked(kw, match):
    args = dict(count=words, length=500, depth=50, key="12345")
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        E.build_passkey_prompt(**args)


@pytest.mark.parametrize("out, ok", [
    (" 71432.", True), ("71432", True), (" 71432. Remember", True), ("The key is 71432", True),
    (" 7143", False), (" 714320", False), (" 1 71432", False), ("", False), (" seventy", False),
    (" 71432"[::-1], False),
])
def test_score_is_exact_match_of_the_first_digit_run(out, ok):
    assert E.score_passkey(out, "71432") is ok


# ----------------------------------------------------------------------------------------------
# options and helpers


def test_parse_settings():
    assert E.parse_settings("dense,top_r=64,top_p=0.99") == [
        ("dense (sdpa)", None), ("hsrgeom top_r=64", {"top_r": 64}), ("hsrgeom top_p=0.99", {"top_p": 0.99})]
    # dense is always first (the reference); duplicates dropped; all = every key through hsrgeom
    assert E.parse_settings("top_r=8, all, dense, top_r=8") == [
        ("dense (sdpa)", None), ("hsrgeom top_r=8", {"top_r": 8}), ("hsrgeom every key", {})]
    assert E.parse_settings("threshold=-1.5")[1] == ("hsrgeom threshold=-1.5", {"threshold": -1.5})


@pytest.mark.parametrize("spec, match", [
    ("", "nothing given"), ("top_k=4", "is not 'dense'"), ("top_r", "is not 'dense'"),
    ("top_r=0", "top_r must be >= 1"), ("top_r=2.5", "top_r must be int"), ("top_p=0", r"top_p must be in \(0, 1\]"),
    ("top_p=1.5", r"top_p must be in \(0, 1\]"), ("threshold=nan", "threshold must be finite"),
])
def test_parse_settings_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        E.parse_settings(spec)


def test_parse_lengths_and_depths():
    assert E.parse_lengths("1K,2k, 4096,32K") == [1024, 2048, 4096, 32768]
    assert E.parse_depths("10,50,90") == [10, 50, 90]
    for bad in ("", "0", "1M", "-5", "4.5k"):
        with pytest.raises(ValueError, match="lengths"):
            E.parse_lengths(bad)
    for bad in ("", "101", "-1", "5.5", "x"):
        with pytest.raises(ValueError, match="depths"):
            E.parse_depths(bad)


def test_perplexity():
    assert E.perplexity(np.log([0.25] * 7)) == pytest.approx(4.0)
    assert E.perplexity([0.0, 0.0]) == 1.0
    assert E.perplexity(np.log([0.5, 0.125])) == pytest.approx(4.0)  # geometric mean of 1/p
    with pytest.raises(ValueError, match="no tokens"):
        E.perplexity([])


def test_fit_prefill_recovers_linear_and_quadratic_parts():
    ns = np.array([1000, 2000, 4000, 8000])
    a, b = E.fit_prefill(ns, 3e-3 * ns + 2e-7 * ns ** 2)
    assert a == pytest.approx(3e-3) and b == pytest.approx(2e-7)
    a, b = E.fit_prefill(ns, 5e-3 * ns - 1e-9 * ns ** 2)  # a negative quadratic part is not extrapolated
    assert b == 0.0 and a > 0


def test_registered_in_run_py():
    spec = importlib.util.spec_from_file_location("attention_run", os.path.join(BENCH, "run.py"))
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    for name in ("eval-tokenizer", "eval-passkey", "eval-ppl", "eval-fidelity"):
        assert run.EXPERIMENTS[name][0] == "eval"
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
            run.main([name, "--help"])
        assert e.value.code == 0 and "--no-write" in buf.getvalue() and "--tokenizer" in buf.getvalue()


def test_section_key_separates_runs_at_other_lengths():
    assert E.section_key("eval-passkey", [1024, 2048, 4096], (1024, 2048, 4096)) == "eval-passkey"
    assert E.section_key("eval-passkey", [8192], (1024, 2048, 4096)) == "eval-passkey-8192"
    assert E.section_key("eval-ppl", [16384, 32768], (4096,)) == "eval-ppl-16384-32768"
