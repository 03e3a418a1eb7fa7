"""Offline long-context evaluation of hsrgeom attention in Gemma 3 270M (issue 21, item 4).

Five experiments (``python benchmarks/attention/run.py NAME``), each one command writing its own
section of docs/attention.md (``--no-write``: print the section instead):

eval-tokenizer
    The tokenizer transformers builds from the GGUF (``AutoTokenizer.from_pretrained(dir,
    gguf_file=...)``) against the model's own vocabulary read from the GGUF with the ``gguf``
    package and tokenized the way llama.cpp tokenizes a SentencePiece (``tokenizer.ggml.model ==
    "llama"``) vocabulary (:class:`SpmTokenizer`): tokens per character on code and prose, common
    words, spaces and newlines.
eval-passkey
    Passkey retrieval (needle in a haystack): a seeded 5-digit key sentence at a depth of the
    filler, the question at the end, greedy decoding of a few tokens, exact match of the digits;
    dense sdpa and hsrgeom settings on the same prompts (the prefill is dense sdpa in every run,
    shared; the decoding steps are where hsrgeom acts).
eval-ppl
    Teacher-forced next-token agreement and perplexity on long real text (the Python
    standard-library sources of ``_llm_model.text_tokens``): a dense prefill of the first N - W
    tokens, then the last W tokens fed one at a time through the cache, for dense and each
    hsrgeom setting.
eval-fidelity
    Per full-attention layer (5, 11, 17): the hsrgeom settings on the captured post-RoPE Q, K, V
    of the last rows of the same text against float64 dense softmax (keys kept, softmax mass
    kept, relative output error).
eval-speed
    End-to-end decoding speed through ``model.generate()`` after an N-token prompt of the same
    text (prefilled densely in chunks, then handed to ``generate()`` in its cache): tokens/s of
    dense sdpa and each hsrgeom setting, the first step (where hsrgeom builds its indexes over
    the prompt's keys) apart from the steady steps, and the share of a dense step spent in the
    attention of the full-attention layers.

Every length is counted in tokens of the tokenizer the model is run with (``--tokenizer``:
``gguf``, the model's own vocabulary tokenized as llama.cpp does, the default; or ``hf``, the
transformers tokenizer built from the GGUF). The pure pieces (tokenizer, prompt generator,
scoring, settings) need neither torch nor the model and are tested in
``tests/test_attention_eval.py``.
"""
from __future__ import annotations

import copy
import heapq
import re
import tempfile
import time
from dataclasses import dataclass, field

import _common as C
import numpy as np
from _common import log

# ----------------------------------------------------------------------------------------------
# the model's own tokenizer from the GGUF vocabulary (llama.cpp's SentencePiece algorithm)

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # gguf TokenType
SPACE = "\u2581"  # SentencePiece's visible space


class SpmTokenizer:
    """A SentencePiece-BPE tokenizer over a GGUF vocabulary, as llama.cpp runs one.

    ``tokens``, ``scores``, ``types``: the ``tokenizer.ggml.tokens / scores / token_type`` arrays.
    Encoding: user-defined tokens (type 4) are cut out of the raw text first, longest first
    (Gemma stores its runs of spaces and newlines so); each remaining piece has its spaces
    replaced by U+2581 (and one prepended if ``add_space_prefix``), is split into characters,
    and the adjacent pair whose concatenation is a token of highest score is merged, repeatedly
    (ties: the leftmost pair); a character that is no token is written as its UTF-8 bytes
    (``<0xXX>`` tokens). Control and unknown tokens are never matched in the text.
    """

    def __init__(self, tokens, scores, types, bos_id=None, add_bos=True, add_space_prefix=False):
        if not (len(tokens) == len(scores) == len(types)):
            raise ValueError(f"tokens, scores and types must have one length, got {len(tokens)}, "
                             f"{len(scores)}, {len(types)}")
        self.tokens = list(tokens)
        self.scores = [float(s) for s in scores]
        self.types = [int(t) for t in types]
        self.ids = {t: i for i, t in enumerate(self.tokens)}  # later duplicates win, as in llama.cpp
        self.bos_id = bos_id
        self.add_bos = bool(add_bos) and bos_id is not None
        self.add_space_prefix = bool(add_space_prefix)
        # user-defined tokens, longest first (the order of llama.cpp's special-token partition)
        self.user_defined = sorted((t for t, ty in zip(self.tokens, self.types) if ty == USER_DEFINED and t),
                                   key=len, reverse=True)
        self.byte_ids = {}
        for i, (t, ty) in enumerate(zip(self.tokens, self.types)):
            if ty == BYTE and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t):
                self.byte_ids[int(t[3:5], 16)] = i

    @classmethod
    def from_gguf(cls, path):
        """The tokenizer of a GGUF file (``tokenizer.ggml.model`` must be "llama": SentencePiece)."""
        import gguf
        r = gguf.GGUFReader(str(path))

        def get(key, default=None):
            f = r.fields.get(key)
            return default if f is None else f.contents()
        model = get("tokenizer.ggml.model")
        if model != "llama":
            raise ValueError(f"{path}: tokenizer.ggml.model is {model!r}; SpmTokenizer reads SentencePiece "
                             "('llama') vocabularies only")
        tok = cls(get("tokenizer.ggml.tokens"), get("tokenizer.ggml.scores"), get("tokenizer.ggml.token_type"),
                  bos_id=get("tokenizer.ggml.bos_token_id"), add_bos=get("tokenizer.ggml.add_bos_token", True),
                  add_space_prefix=get("tokenizer.ggml.add_space_prefix", True))
        tok.meta = {k: get(k) for k in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token",
                                        "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix",
                                        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")}
        tok.meta["has merges"] = "tokenizer.ggml.merges" in r.fields
        return tok

    def __len__(self):
        return len(self.tokens)

    def _partition(self, text):
        """The text cut at user-defined tokens: a list of str (raw pieces) and int (token ids)."""
        parts = [text]
        for t in self.user_defined:
            if t not in text:      # (a token absent from the whole text is absent from every piece)
                continue
            tid = self.ids[t]
            out = []
            for p in parts:
                if isinstance(p, str) and t in p:
                    pieces = p.split(t)
                    for j, s in enumerate(pieces):
                        if j:
                            out.append(tid)
                        if s:
                            out.append(s)
                else:
                    out.append(p)
            parts = out
        return parts

    def _bpe(self, text, out):
        """Append the tokens of one raw piece (spaces already escaped) to ``out``."""
        sym = list(text)
        n = len(sym)
        if n == 0:
            return
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap = []
        ids, scores = self.ids, self.scores

        def push(a, b):
            if a == -1 or b == -1:
                return
            s = sym[a] + sym[b]
            t = ids.get(s)
            if t is not None:
                heapq.heappush(heap, (-scores[t], a, b, len(s)))
        for i in range(1, n):
            push(i - 1, i)
        while heap:
            _, a, b, size = heapq.heappop(heap)
            if not sym[a] or not sym[b] or len(sym[a]) + len(sym[b]) != size:
                continue  # a stale pair: one side was merged since
            sym[a] += sym[b]
            sym[b] = ""
            nxt[a] = nxt[b]
            if nxt[b] >= 0:
                prev[nxt[b]] = a
            push(prev[a], a)
            push(a, nxt[a])
        i = 0
        while i != -1:
            s = sym[i]
            t = ids.get(s)
            if t is not None:
                out.append(t)
            else:  # only single characters can be missing: byte fallback
                for byte in s.encode("utf-8"):
                    if byte not in self.byte_ids:
                        raise ValueError(f"character {s!r} is not in the vocabulary and it has no <0x{byte:02X}> token")
                    out.append(self.byte_ids[byte])
            i = nxt[i]

    def encode(self, text, add_special_tokens=True):
        """Token ids of ``text`` (BOS first when the vocabulary says so and add_special_tokens)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out = [self.bos_id] if add_special_tokens and self.add_bos else []
        prev_special = True
        for p in self._partition(text):
            if isinstance(p, int):
                out.append(p)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                p = " " + p
            self._bpe(p.replace(" ", SPACE), out)
            prev_special = False
        return out

    def __call__(self, text, add_special_tokens=True):
        """The call form of a transformers tokenizer (what ``_llm_model.text_tokens`` uses)."""
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def piece(self, i):
        """The text of token ``i`` (control and unknown tokens: their name)."""
        t, ty = self.tokens[i], self.types[i]
        if ty == BYTE:
            return t
        return t if ty in (USER_DEFINED, CONTROL, UNKNOWN) else t.replace(SPACE, " ")

    def decode(self, ids, skip_special_tokens=True):
        """The text of ``ids`` (byte tokens reassembled; control tokens dropped if skip_special_tokens)."""
        buf = bytearray()
        for i in ids:
            i = int(i)
            ty = self.types[i]
            if ty in (CONTROL, UNKNOWN, UNUSED) and skip_special_tokens:
                continue
            if ty == BYTE:
                buf.append(int(self.tokens[i][3:5], 16))
            else:
                buf += self.piece(i).encode("utf-8")
        return buf.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------
# passkey retrieval: prompt generator and scoring

# The classic filler of the passkey test (Mohtashami & Jaggi 2023, "Landmark Attention").
GRASS = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.")
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"


def passkey_for(seed, length, depth, trial):
    """The 5-digit key of one prompt: a function of (seed, length, depth, trial) only."""
    rng = np.random.default_rng([int(seed), int(length), int(depth), int(trial)])
    return str(int(rng.integers(10000, 100000)))


@dataclass
class PasskeyPrompt:
    text: str
    key: str
    n_tokens: int        # tokens of text, BOS included (what the model is fed)
    length: int          # the budget asked for: n_tokens <= length
    depth: int           # percent of the filler before the needle
    units: int           # filler units in the text
    needle_token: int = -1  # first token of the needle sentence (-1: not computed)
    extra: dict = field(default_factory=dict)


def _assemble(units, n, depth, key, sep):
    k = int(round(n * depth / 100.0))
    fill = [units[i % len(units)] for i in range(n)]
    head = sep.join([INTRO, *fill[:k]])
    needle = NEEDLE.format(key=key)
    return head + sep + needle + sep + sep.join([*fill[k:], QUESTION]), head


def build_passkey_prompt(count, length, depth, key, units=GRASS, sep=" "):
    """The longest passkey prompt of at most ``length`` tokens.

    ``count(text)``: the number of tokens the model is fed for ``text`` (BOS included). The text
    is INTRO, n filler units (cycling through ``units``) with the needle sentence after the
    first round(n * depth / 100) of them, and QUESTION, joined by ``sep``; n is the largest
    whose count is <= length (found by bracketing and bisection; the count is assumed to grow
    with n). The needle's first token is located by counting the text before it.
    """
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    if not (0 <= depth <= 100):
        raise ValueError(f"depth must be a percentage in [0, 100], got {depth!r}")
    if not (isinstance(key, str) and key.isdigit()):
        raise ValueError(f"key must be a string of digits, got {key!r}")
    if not units or not all(isinstance(u, str) and u for u in units):
        raise ValueError("units must be a non-empty sequence of non-empty strings")
    cache = {}

    def c(n):
        if n not in cache:
            cache[n] = count(_assemble(units, n, depth, key, sep)[0])
        return cache[n]
    if c(0) > length:
        raise ValueError(f"length {length} is too small: the intro, needle and question alone take {c(0)} tokens")
    # bracket [lo, hi): c(lo) <= length < c(hi), starting from a per-unit estimate
    per = max((c(16) - c(0)) / 16.0, 1e-9)
    guess = max(int((length - c(0)) / per), 0)
    lo, hi = max(guess - 8, 0), guess + 8
    while c(lo) > length:
        lo = lo // 2
    while c(hi) <= length:
        lo, hi = hi, 2 * hi + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if c(mid) <= length:
            lo = mid
        else:
            hi = mid
    text, head = _assemble(units, lo, depth, key, sep)
    needle_token = count(head)  # (BOS included: the index of the needle's first token, to +-1)
    return PasskeyPrompt(text=text, key=key, n_tokens=c(lo), length=int(length), depth=depth, units=lo,
                         needle_token=needle_token)


def score_passkey(generated, key):
    """True when the first run of digits in the generated text is exactly the key."""
    m = re.search(r"\d+", generated)
    return bool(m) and m.group(0) == key


def stdlib_texts():
    """(name, source) of the standard-library files of ``_llm_model.TEXT_FILES`` that exist, in order."""
    import sysconfig
    from pathlib import Path

    from _llm_model import TEXT_FILES
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in TEXT_FILES:
        if (stdlib / name).exists():
            yield name, (stdlib / name).read_text(encoding="utf-8")


def _collect(pieces, max_chars):
    """The leading pieces of an iterable until they hold more than ``max_chars`` characters."""
    out, total = [], 0
    for p in pieces:
        out.append(p)
        total += len(p)
        if total > max_chars:
            break
    return out


def stdlib_units(max_chars=2_000_000):
    """Filler units from the standard-library text of _llm_model (its lines, blank ones dropped)."""
    return tuple(_collect((ln for _, src in stdlib_texts() for ln in src.splitlines() if ln.strip()), max_chars))


# ----------------------------------------------------------------------------------------------
# options

_KNOBS = {"top_r": int, "top_p": float, "threshold": float}


def parse_settings(spec):
    """``"dense,top_r=64,top_p=0.99,all"`` -> [(label, knobs)]: knobs None = dense sdpa, {} =
    hsrgeom over every key, else the keyword of :func:`hsrgeom.attention.hf.enable`."""
    out, seen = [], set()
    for item in (s.strip() for s in str(spec).split(",")):
        if not item:
            continue
        if item == "dense":
            label, knobs = "dense (sdpa)", None
        elif item == "all":
            label, knobs = "hsrgeom every key", {}
        else:
            name, eq, value = item.partition("=")
            if not eq or name not in _KNOBS:
                raise ValueError(f"settings: {item!r} is not 'dense', 'all' or one of "
                                 f"{', '.join(k + '=VALUE' for k in _KNOBS)}")
            try:
                v = _KNOBS[name](value)
            except ValueError:
                raise ValueError(f"settings: {item!r}: {name} must be {_KNOBS[name].__name__}") from None
            if name == "top_r" and v < 1:
                raise ValueError(f"settings: {item!r}: top_r must be >= 1")
            if name == "top_p" and not (0 < v <= 1):
                raise ValueError(f"settings: {item!r}: top_p must be in (0, 1]")
            if name == "threshold" and not np.isfinite(v):
                raise ValueError(f"settings: {item!r}: threshold must be finite")
            label, knobs = f"hsrgeom {name}={v:g}", {name: v}
        if label not in seen:
            seen.add(label)
            out.append((label, knobs))
    if not out:
        raise ValueError(f"settings: nothing given in {spec!r}")
    if out[0][1] is not None:  # dense is the reference of every comparison: first, always
        out = [("dense (sdpa)", None)] + [s for s in out if s[1] is not None]
    return out


def _parse_list(spec, name, item):
    """The comma-separated values of ``spec`` through ``item`` (which raises on a bad one)."""
    out = [item(s) for s in (s.strip() for s in str(spec).split(",")) if s]
    if not out:
        raise ValueError(f"{name}: nothing given in {spec!r}")
    return out


def parse_lengths(spec):
    """``"1K,2048,4k"`` -> [1024, 2048, 4096] (K = 1024)."""
    def item(s):
        m = re.fullmatch(r"(\d+)([kK]?)", s)
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"lengths: {s!r} is not a positive token count (e.g. 1024 or 1K)")
        return int(m.group(1)) * (1024 if m.group(2) else 1)
    return _parse_list(spec, "lengths", item)


def parse_depths(spec):
    def item(s):
        if not re.fullmatch(r"\d+", s) or not (0 <= int(s) <= 100):
            raise ValueError(f"depths: {s!r} is not a percentage in [0, 100]")
        return int(s)
    return _parse_list(spec, "depths", item)


def perplexity(logp):
    """exp(-mean log p) of the log-probabilities of the true tokens."""
    logp = np.asarray(logp, float)
    if logp.size == 0:
        raise ValueError("perplexity of no tokens")
    return float(np.exp(-logp.mean()))


def fit_prefill(ns, secs):
    """Least-squares t = a n + b n^2 (a, b >= 0) through measured prefill times: the linear part
    (MLPs, projections, the sliding-window layers) and the quadratic one (full attention)."""
    ns, secs = np.asarray(ns, float), np.asarray(secs, float)
    A = np.stack([ns, ns ** 2], axis=1)
    coef = np.linalg.lstsq(A, secs, rcond=None)[0]
    if coef[1] < 0:
        coef = np.array([float((ns * secs).sum() / (ns * ns).sum()), 0.0])
    elif coef[0] < 0:
        coef = np.array([0.0, float((ns ** 2 * secs).sum() / (ns ** 4).sum())])
    return float(coef[0]), float(coef[1])


# ----------------------------------------------------------------------------------------------
# running the model


def add_arguments(parser, name):
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and hsrgeom threads (default 1: on a shared machine more can be slower)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the markdown section instead of writing docs/attention.md")
    parser.add_argument("--tokenizer", choices=["gguf", "hf"], default="gguf",
                        help="how text becomes tokens: gguf = the GGUF vocabulary tokenized as llama.cpp does "
                             "(the model's own tokenizer; default), hf = the transformers tokenizer built from "
                             "the GGUF; every length counts tokens of this one")
    if name == "eval-tokenizer":
        parser.add_argument("--chars", type=int, default=60000, help="characters of each text compared (default 60000)")
        parser.add_argument("--model-chars", type=int, default=3000,
                            help="characters of each text the model scores under both tokenizations (default 3000; "
                                 "0: skip loading the model)")
        return
    parser.add_argument("--settings", default="dense,top_r=64,top_p=0.99",
                        help="comma-separated: dense, all (hsrgeom over every key), top_r=R, top_p=P, threshold=T "
                             "(default dense,top_r=64,top_p=0.99)")
    parser.add_argument("--min-keys", type=int, default=0,
                        help="hf.enable's dense fallback: decoding steps over fewer keys run sdpa (default 0: "
                             "hsrgeom acts at every length; the library's default falls back below 4096 keys "
                             "for top_r and top_p < 1 and 131072 for the others)")
    parser.add_argument("--prefill-chunk", type=int, default=4096,
                        help="prefill the prompt in chunks of this many tokens (bounds sdpa's memory at 16K-32K; "
                             "default 4096)")
    if name == "eval-passkey":
        parser.add_argument("--lengths", default="1K,2K,4K", help="prompt lengths in tokens (default 1K,2K,4K; "
                                                                  "up to 32K)")
        parser.add_argument("--depths", default="10,50,90", help="needle depths in percent (default 10,50,90)")
        parser.add_argument("--trials", type=int, default=2, help="prompts (keys) per length and depth (default 2)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the keys (default 0)")
        parser.add_argument("--filler", choices=["grass", "stdlib"], default="grass",
                            help="haystack: the classic repeated sentences (default) or standard-library lines")
        parser.add_argument("--new-tokens", type=int, default=8, help="tokens decoded greedily (default 8)")
    else:
        parser.add_argument("--tokens", default="4096", help="text lengths N in tokens, comma-separated (default 4096)")
    if name == "eval-speed":
        parser.add_argument("--new-tokens", type=int, default=64, help="tokens generate() decodes (default 64)")
    if name == "eval-ppl":
        parser.add_argument("--window", type=int, default=256,
                            help="the last W tokens are scored, fed one at a time through the cache (default 256)")
    if name == "eval-fidelity":
        parser.add_argument("--rows", type=int, default=128,
                            help="query rows analysed per layer and head: the last ROWS of the text (default 128)")


def run(args, name, argv):
    import _llm_model as M
    M.require()
    {"eval-tokenizer": eval_tokenizer, "eval-passkey": eval_passkey, "eval-ppl": eval_ppl,
     "eval-fidelity": eval_fidelity, "eval-speed": eval_speed}[name](args, name, argv)


def section_key(name, lengths, default):
    """The docs section of a run: ``name``, or ``name-<lengths>`` when the lengths are not the
    default ones (so that runs at other lengths keep their own sections, like kernel-real-N)."""
    lengths = [int(n) for n in lengths]
    return name if lengths == list(default) else f"{name}-{'-'.join(map(str, lengths))}"


def _emit(args, name, title, body, argv, key=None):
    """Write the section ``key`` (default ``name``), or print it with --no-write / --quick."""
    key = key or name
    if args.no_write or args.quick:
        with tempfile.TemporaryDirectory() as d:
            ns = copy.copy(args)
            ns.out = d
            text = C.write_section(ns, name, title, body, argv, key=key).read_text()
        m = re.search(rf"<!-- begin:{re.escape(key)} -->.*?<!-- end:{re.escape(key)} -->", text, re.S)
        print(m.group(0))
        log("--no-write: docs/attention.md not written")
    else:
        log(f"wrote {C.write_section(args, name, title, body, argv, key=key)}")


def _tokenizers(args, need_hf):
    """(the tokenizer the model is run with, SpmTokenizer, the transformers one or None)."""
    import _llm_model as M
    spm = SpmTokenizer.from_gguf(M.gguf_path())
    hf_tok = None
    if need_hf or args.tokenizer == "hf":
        import os
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers import AutoTokenizer
        path = M.gguf_path()
        hf_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return (spm if args.tokenizer == "gguf" else hf_tok), spm, hf_tok


def _model(args):
    import _llm_model as M
    t = time.perf_counter()
    model, _ = M.load_model(args.threads)
    return model, time.perf_counter() - t


def _apply(model, knobs, min_keys):
    """Dense sdpa everywhere (knobs None), else hsrgeom with ``knobs`` in the full-attention layers."""
    import _llm_model as M

    from hsrgeom.attention import hf
    M.State.reset("dense")
    if knobs is not None:
        hf.enable(model, layers="full", min_keys=min_keys, name=M.IMPL, **knobs)


def _prefill(model, ids, chunk):
    """Dense prefill of ``ids`` (in chunks of ``chunk`` tokens): (last logits, cache, seconds)."""
    import _llm_model as M
    _apply(model, None, 0)
    t = time.perf_counter()
    cache, logits = None, None
    step = max(int(chunk), 1)
    for i in range(0, len(ids), step):
        logits, cache = M.forward(model, ids[i:i + step], cache)
    return logits, cache, time.perf_counter() - t


# ----------------------------------------------------------------------------------------------
# eval-tokenizer

COMMON = (" the", " of", " and", " is", " return", " def", " self", " import", "The", " pass", " key",
          "\n", "\n\n", "    ", "        ", " = ", "():")
SNIPPET = "def f(self, x):\n    \"\"\"Return the key.\"\"\"\n\n        return x  # done\n"


def _prose(max_chars):
    """English prose: the docstrings (over 80 characters) of the standard-library files."""
    import ast

    def docs():
        for _, src in stdlib_texts():
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    d = ast.get_docstring(node)
                    if d and len(d) > 80:
                        yield d
    return "\n\n".join(_collect(docs(), max_chars))[:max_chars]


def _code(max_chars):
    """The standard-library text as _llm_model.text_tokens joins it."""
    return "\n".join(_collect((f"# ---- {n} ----\n" + src for n, src in stdlib_texts()), max_chars))[:max_chars]


def _pieces(ids, tok, spm):
    if tok is spm:
        return [spm.piece(i) for i in ids]
    return tok.convert_ids_to_tokens(list(ids))


def eval_tokenizer(args, name, argv):
    import difflib
    t_all = time.perf_counter()
    t = time.perf_counter()
    _, spm, hf_tok = _tokenizers(args, need_hf=True)
    t_load = time.perf_counter() - t
    n_chars = 20000 if args.quick else args.chars
    grass = " ".join(GRASS[i % 5] for i in range(n_chars // 18))[:n_chars]
    texts = [("Python stdlib code (the eval-ppl text)", _code(n_chars)), ("English prose (stdlib docstrings)",
             _prose(n_chars)), ("passkey filler (grass)", grass)]
    rows, detail = [], []
    for label, text in texts:
        t = time.perf_counter()
        a = spm.encode(text)
        t_spm = time.perf_counter() - t
        t = time.perf_counter()
        b = hf_tok(text, add_special_tokens=True)["input_ids"]
        t_hf = time.perf_counter() - t
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is None and len(a) != len(b):
            first = min(len(a), len(b))
        same = difflib.SequenceMatcher(None, a, b, autojunk=False)
        matched = sum(blk.size for blk in same.get_matching_blocks())
        rt = spm.decode(a) == text
        rt_hf = hf_tok.decode(b, skip_special_tokens=True) == text
        rows.append([label, len(text), len(a), len(b), f"{len(text) / len(a):.2f}", f"{len(text) / len(b):.2f}",
                     f"{len(b) / len(a):.3f}", "yes" if a == b else "no",
                     "-" if first is None else str(first), f"{matched / max(len(a), 1):.3f}",
                     "yes" if rt else "no", "yes" if rt_hf else "no", f"{t_spm:.2f}", f"{t_hf:.3f}"])
        if first is not None:
            lo = max(first - 3, 0)
            detail.append(f"* {label}, first difference at token {first}:\n"
                          f"  gguf: `{_pieces(a[lo:first + 6], spm, spm)!r}`"
                          f"\n  hf  : `{_pieces(b[lo:first + 6], hf_tok, spm)!r}`")
        log(f"{label}: {len(text)} chars, gguf {len(a)} tokens, hf {len(b)} tokens, identical: {a == b}")
    words = []
    for w in COMMON:
        a = spm.encode(w, add_special_tokens=False)
        b = hf_tok(w, add_special_tokens=False)["input_ids"]
        words.append([repr(w), repr(_pieces(a, spm, spm)), repr(_pieces(b, hf_tok, spm)), "yes" if a == b else "no"])
    scored = _score_tokenizations(args, texts, spm, hf_tok) if args.model_chars > 0 else None
    sa = spm.encode(SNIPPET, add_special_tokens=False)
    sb = hf_tok(SNIPPET, add_special_tokens=False)["input_ids"]
    total = time.perf_counter() - t_all
    meta = getattr(spm, "meta", {})
    n_types = {k: sum(1 for t in spm.types if t == v) for k, v in
               (("normal", NORMAL), ("control", CONTROL), ("user-defined", USER_DEFINED), ("byte", BYTE),
                ("unused", UNUSED), ("unknown", UNKNOWN))}
    ws = [t for t, ty in zip(spm.tokens, spm.types) if ty == USER_DEFINED and t and not t.strip()]
    sc = np.array([x for x, ty in zip(spm.scores, spm.types) if ty == NORMAL])
    mono = 100 * float((np.diff(sc) <= 0).mean()) if len(sc) > 1 else float("nan")
    score_note = (f"the scores of the normal tokens run from {sc.min():g} to {sc.max():g} "
                  f"({len(np.unique(sc))} distinct values; non-increasing with the token id for {mono:.1f}% of "
                  "neighbours)") if len(sc) > 1 else "no normal tokens"
    hdr = ["text", "chars", "gguf tokens", "hf tokens", "chars/token gguf", "chars/token hf", "hf / gguf tokens",
           "identical ids", "first differing token", "ids matched (share of gguf)", "gguf decode round-trips",
           "hf decode round-trips", "gguf encode s", "hf encode s"]
    tab = C.table(hdr, rows)
    wtab = C.table(["text", "gguf pieces", "hf pieces", "same ids"], words)
    print(tab)
    print(wtab)
    body = f"""
The model's real tokenizer is the SentencePiece vocabulary stored in the GGUF
(`tokenizer.ggml.model` = {meta.get('tokenizer.ggml.model')!r}, pre = {meta.get('tokenizer.ggml.pre')!r},
{len(spm)} tokens: {', '.join(f'{v} {k}' for k, v in n_types.items())}; merges stored: {meta.get('has merges')};
add_bos {meta.get('tokenizer.ggml.add_bos_token')}, add_space_prefix {meta.get('tokenizer.ggml.add_space_prefix')}).
*gguf* below is that vocabulary tokenized as llama.cpp does (`eval.SpmTokenizer`: user-defined
tokens cut out of the raw text first, longest first; spaces to U+2581; best-score pair merges;
byte fallback), *hf* is `AutoTokenizer.from_pretrained(dir, gguf_file=...)` (transformers
{_version('transformers')}), which rebuilds BPE merges from the vocabulary. {len(ws)} of the
user-defined tokens are runs of whitespace (spaces: up to {max((len(t) for t in ws if set(t) == {' '}), default=0)},
newlines: up to {max((len(t) for t in ws if set(t) == {chr(10)}), default=0)}), stored with real spaces;
{score_note}.
Both counts include BOS. Run time {total:.0f} s (tokenizers loaded in {t_load:.0f} s).

{tab}

{chr(10).join(detail) if detail else 'The two tokenizers give identical ids on every text.'}

Common words and whitespace (no BOS):

{wtab}

`{SNIPPET!r}`: gguf {len(sa)} tokens `{_pieces(sa, spm, spm)!r}`;
hf {len(sb)} tokens `{_pieces(sb, hf_tok, spm)!r}`.
"""
    if scored:
        same = all(r[1] == r[2] and r[4] == r[5] for r in scored)
        body += f"""
**Which one the model was trained with.** The model's own loss tells: the tokenization it was
trained on gives fewer bits per character of the same text. The first {args.model_chars} characters of
each text, one dense forward pass each (loss of every token after BOS; the sum over tokens, in bits,
divided by the characters). *control*: the same vocabulary with its scores ignored (every merge
leftmost-first), valid tokens that the model was not trained on, to show the check can tell
tokenizations apart.{' On these characters gguf and hf give the same ids, hence the same loss.' if same else ''}

{C.table(["text", "gguf tokens", "hf tokens", "control tokens", "bits / char gguf", "bits / char hf",
          "bits / char control", "nats / token gguf", "nats / token hf", "nats / token control"], scored)}
"""
    _emit(args, name, "Evaluation kit: the tokenizer (GGUF vocabulary vs transformers)", body, argv)


def _score_tokenizations(args, texts, spm, hf_tok):
    """Rows (text, then tokens, bits per character and nats per token of the gguf, hf and control
    tokenizations) of the model's loss on the first --model-chars characters of each text. The
    control is the same vocabulary with its scores ignored (every merge leftmost-first): valid
    tokens the model was not trained on, which shows that the check can tell tokenizations apart."""
    import math

    import torch
    model, _ = _model(args)
    _apply(model, None, 0)
    control = SpmTokenizer(spm.tokens, [0.0] * len(spm), spm.types, bos_id=spm.bos_id, add_bos=spm.add_bos,
                           add_space_prefix=spm.add_space_prefix)
    rows = []
    for label, text in texts[:2]:
        text = text[:args.model_chars]
        cells = []
        for which, ids in (("gguf", spm.encode(text)), ("hf", list(hf_tok(text)["input_ids"])),
                           ("control", control.encode(text))):
            if ids[0] != spm.bos_id:
                ids = [spm.bos_id] + ids
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids]), logits_to_keep=0).logits[0].float()
                lp = torch.log_softmax(logits[:-1], dim=-1)
                nll = float(-lp.gather(1, torch.tensor(ids[1:])[:, None]).sum())
            cells.append((len(ids), nll / math.log(2) / len(text), nll / (len(ids) - 1)))
            log(f"{label}, {which}: {len(ids)} tokens, {cells[-1][1]:.3f} bits/char")
        rows.append([label] + [c[0] for c in cells] + [f"{c[1]:.3f}" for c in cells] + [f"{c[2]:.3f}" for c in cells])
    return rows


def _version(mod):
    try:
        return __import__(mod).__version__
    except Exception:  # pragma: no cover
        return "?"


# ----------------------------------------------------------------------------------------------
# eval-passkey


def eval_passkey(args, name, argv):
    import _llm_model as M
    import llm as L
    t_all = time.perf_counter()
    settings = parse_settings(args.settings)
    lengths, depths = parse_lengths(args.lengths), parse_depths(args.depths)
    trials, G = args.trials, args.new_tokens
    if args.quick:
        lengths, depths, trials, settings = [512], [50], 1, settings[:2]
    if trials < 1 or G < 1:
        raise SystemExit("error: --trials and --new-tokens must be >= 1")
    tok, spm, _ = _tokenizers(args, need_hf=False)
    model, load_s = _model(args)
    units, sep = (GRASS, " ") if args.filler == "grass" else (stdlib_units(), "\n")
    records = []   # one per (prompt, setting)
    prompts = []
    for length in lengths:
        # the model is fed prompt + new tokens - 1 positions; keep them within `length`
        budget = length - G
        for depth in depths:
            for trial in range(trials):
                key = passkey_for(args.seed, length, depth, trial)
                t = time.perf_counter()
                p = build_passkey_prompt(lambda s: len(tok(s)["input_ids"]), budget, depth, key, units, sep)
                t_build = time.perf_counter() - t
                ids = list(tok(p.text)["input_ids"])
                assert len(ids) == p.n_tokens
                logits0, cache0, t_pre = _prefill(model, ids, args.prefill_chunk)
                prompts.append(dict(length=length, depth=depth, trial=trial, key=key, n=len(ids),
                                    needle=p.needle_token, prefill=t_pre, build=t_build))
                line = []
                for label, knobs in settings:
                    _apply(model, knobs, args.min_keys)
                    toks, _, _, dt = L._decode(model, copy.deepcopy(cache0), logits0, G)
                    out = tok.decode([int(x) for x in toks])
                    ok = score_passkey(out, key)
                    records.append(dict(length=length, depth=depth, trial=trial, setting=label, ok=ok, out=out,
                                        decode=dt, full=M.State.full_time / max(M.State.full_calls / 3, 1)))
                    line.append(f"{label}: {'ok' if ok else 'FAIL'} {out!r}")
                log(f"{length} tokens ({len(ids)} fed), depth {depth}%, key {key}: prefill {t_pre:.1f} s; "
                    + "; ".join(line))
                del cache0
    total = time.perf_counter() - t_all
    labels = [s[0] for s in settings]

    def acc(rs):
        return f"{sum(r['ok'] for r in rs)}/{len(rs)}"
    rows = []
    for length in lengths:
        for depth in [*depths, None]:
            sel = [r for r in records if r["length"] == length and (depth is None or r["depth"] == depth)]
            rows.append([length if depth is not None else f"**{length}**", f"{depth}%" if depth is not None else
                         "**all**"] + [acc([r for r in sel if r["setting"] == lab]) for lab in labels])
    tab = C.table(["length (tokens)", "depth", *labels], rows)
    det = []
    for p in prompts:
        outs = [r for r in records if (r["length"], r["depth"], r["trial"]) == (p["length"], p["depth"], p["trial"])]
        det.append([p["length"], p["n"], f"{p['depth']}%", p["needle"], p["key"], f"{p['prefill']:.1f}"]
                   + [("ok " if r["ok"] else "**fail** ") + repr(r["out"]).replace("|", "\\|") for r in outs])
    dtab = C.table(["length", "tokens fed", "depth", "needle at token", "key", "prefill s", *labels], det)
    trow = []
    for length in lengths:
        ps = [p for p in prompts if p["length"] == length]
        cells = [length, f"{np.mean([p['prefill'] for p in ps]):.1f}"]
        for lab in labels:
            rs = [r for r in records if r["length"] == length and r["setting"] == lab]
            per_token, full = np.mean([r["decode"] for r in rs]) / G, np.mean([r["full"] for r in rs])
            cells.append(f"{per_token * 1e3:.0f} / {full * 1e3:.1f}")
        trow.append(cells)
    ttab = C.table(["length", "dense prefill s (mean)", *[f"{lab}: ms/token / full-layer attention ms/token"
                                                           for lab in labels]], trow)
    reading = _passkey_reading(records, prompts, lengths, depths, labels)
    hay = ('the classic repeated sentences "' + " ".join(GRASS) + '"' if args.filler == "grass"
           else "standard-library source lines")
    chunked = f" (in chunks of {args.prefill_chunk} tokens)" if max(lengths) > args.prefill_chunk else ""
    body = f"""
Passkey retrieval with Gemma 3 270M (GGUF Q4_K_M dequantised to float32, CPU, torch {args.threads} thread(s)).
Each prompt: the intro *"{INTRO}"*, a haystack of {hay},
the needle *"{NEEDLE.format(key='KEY')}"* after {', '.join(f'{d}%' for d in depths)} of the haystack, and the question
*"{QUESTION}"*; KEY is 5 digits drawn from (seed {args.seed}, length, depth, trial). Lengths are tokens of
the `{args.tokenizer}` tokenizer (BOS included): the prompt is the longest that keeps prompt + {G} decoded tokens within
the length. The prompt is prefilled once with dense sdpa{chunked};
then each setting decodes {G} tokens greedily from a copy of that cache (`hf.enable(model, layers="full",
min_keys={args.min_keys}, ...)`: hsrgeom in the 3 full-attention layers on every decoding step; the 15
sliding-window layers stay sdpa). Score: the first run of digits in the output equals KEY.
{trials} prompt(s) per length and depth.

{tab}

{reading}

Times (wall, shared 2-core machine): prefill is dense and shared by the settings; per-token decode and
the time inside the attention of the 3 full-attention layers per token:

{ttab}

Run time {total:.0f} s ({load_s:.0f} s loading the model).

<details><summary>Every prompt and output</summary>

{dtab}

</details>
"""
    _emit(args, name, "Evaluation kit: passkey retrieval (Gemma 3 270M, dense vs hsrgeom decoding)", body, argv,
          key=section_key(name if args.filler == "grass" else f"{name}-{args.filler}", lengths, (1024, 2048, 4096)))


def _passkey_reading(records, prompts, lengths, depths, labels):
    out = []
    dense = labels[0]
    by = {(r["length"], r["depth"], r["trial"], r["setting"]): r["ok"] for r in records}
    cells = sorted({(r["length"], r["depth"], r["trial"]) for r in records})
    dense_fail = [c for c in cells if not by[(*c, dense)]]
    if dense_fail:
        out.append(f"* Dense itself fails {len(dense_fail)} of {len(cells)} prompts: "
                   + ", ".join(f"{c[0]} tokens at {c[1]}% (trial {c[2]})" for c in dense_fail) + ".")
    else:
        out.append(f"* Dense retrieves the key in all {len(cells)} prompts.")
    for lab in labels[1:]:
        lost = [c for c in cells if by[(*c, dense)] and not by[(*c, lab)]]
        won = [c for c in cells if not by[(*c, dense)] and by[(*c, lab)]]
        s = (f"* {lab}: " + ("equal to dense on every prompt where dense passes" if not lost else
             f"fails {len(lost)} prompt(s) where dense passes: "
             + ", ".join(f"{c[0]} tokens at {c[1]}%" for c in lost)))
        if won:
            s += f"; passes {len(won)} where dense fails"
        out.append(s + ".")
    ns = sorted({p["length"]: p for p in prompts}.values(), key=lambda p: p["n"])
    if len({p["n"] for p in prompts}) >= 2:
        a, b = fit_prefill([p["n"] for p in prompts], [p["prefill"] for p in prompts])
        est = ", ".join(f"{n // 1024}K: {(a * n + b * n * n) / 60:.0f} min" for n in (8192, 16384, 32768))
        out.append(f"* Dense prefill time fitted as a n + b n^2 over these prompts (a = {a * 1e3:.2f} ms/token; "
                   f"the n^2 term is {b * 4096 ** 2:.1f} s at 4K) extrapolates to {est} per prompt on this machine "
                   "(the decoding steps add seconds); lengths measured here: "
                   + ", ".join(str(p["length"]) for p in ns) + ".")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# eval-ppl


def eval_ppl(args, name, argv):
    import _llm_model as M
    import llm as L
    t_all = time.perf_counter()
    settings = parse_settings(args.settings)
    Ns, W = parse_lengths(args.tokens), args.window
    if args.quick:
        Ns, W = [512], 16
    if W < 2 or any(n <= W + 1 for n in Ns):
        raise SystemExit(f"error: need 2 <= --window < N - 1, got window {W}, tokens {Ns}")
    tok, _, _ = _tokenizers(args, need_hf=False)
    model, load_s = _model(args)
    rows, reading = [], []
    used = []
    for N in Ns:
        ids, used = M.text_tokens(tok, N)
        prompt, target = ids[:N - W], np.asarray(ids[N - W:])
        logits0, cache0, t_pre = _prefill(model, prompt, args.prefill_chunk)
        log(f"N = {N}: dense prefill of {len(prompt)} tokens {t_pre:.1f} s")
        res = {}
        for label, knobs in settings:
            _apply(model, knobs, args.min_keys)
            toks, lps, margins, dt = L._decode(model, copy.deepcopy(cache0), logits0, W, forced=target)
            res[label] = dict(toks=toks, lps=lps, margins=margins, t=dt,
                              full=M.State.full_time / max(M.State.full_calls / 3, 1))
            log(f"  {label}: ppl {perplexity(lps):.4f}, decode {dt:.1f} s")
        d = res[settings[0][0]]
        ppl_d = perplexity(d["lps"])
        for label, _ in settings:
            r = res[label]
            agree = float((r["toks"] == d["toks"]).mean())
            diff = np.nonzero(r["toks"] != d["toks"])[0]
            ppl = perplexity(r["lps"])
            dl = np.abs(r["lps"] - d["lps"])
            ok = agree >= 0.99 and abs(ppl / ppl_d - 1) <= 0.01
            rows.append([N, label, f"{agree:.4f}", f"{len(diff)}",
                         f"{d['margins'][diff].max():.3g}" if len(diff) else "-", f"{ppl:.4f}",
                         f"{100 * (ppl / ppl_d - 1):+.3f}%", f"{dl.mean():.2e}", f"{dl.max():.2e}",
                         f"{float((r['toks'] == target).mean()):.3f}", f"{1e3 * r['t'] / W:.0f}",
                         f"{1e3 * r['full']:.1f}", "-" if label == settings[0][0] else ("yes" if ok else "**no**")])
            if label != settings[0][0]:
                margin = (f", the dense top-2 margin there at most {d['margins'][diff].max():.3g} nats"
                          if len(diff) else "")
                reading.append(f"* N = {N}, {label}: top-1 agreement {agree:.4f} ({len(diff)} of {W} positions differ"
                               f"{margin}), perplexity {ppl:.4f} vs dense {ppl_d:.4f} "
                               f"({100 * (ppl / ppl_d - 1):+.3f}%): " + ("meets" if ok else "misses")
                               + " the acceptance (>= 99 % and within 1 %).")
        del cache0
    total = time.perf_counter() - t_all
    hdr = ["N", "attention", "top-1 agreement with dense", "positions differing", "max dense top-2 margin there (nats)",
           "perplexity", "vs dense", "mean abs dlogp", "max abs dlogp", "top-1 = text token", "ms / token",
           "full-layer attention ms / token", ">= 99 % and ppl within 1 %"]
    tab = C.table(hdr, rows)
    print(tab)
    chunked = f" (chunks of {args.prefill_chunk})" if max(Ns) - W > args.prefill_chunk else ""
    body = f"""
Teacher-forced evaluation on long real text: the first N tokens (`{args.tokenizer}` tokenizer, BOS
included) of Python {__import__('platform').python_version()}'s standard-library sources ({', '.join(used)}).
A dense sdpa prefill of the first N - {W} tokens{chunked},
then the last W = {W} tokens are fed one at a time through the cache (teacher forcing), once per
setting from a copy of the same prefilled cache; hsrgeom settings act in the 3 full-attention layers
on every decoding step (`hf.enable(model, layers="full", min_keys={args.min_keys}, ...)`), the sliding-window
layers stay sdpa. *top-1 agreement*: share of the W positions whose argmax equals dense's; *perplexity*:
exp of the mean negative log-likelihood of the W true tokens; *dlogp*: |log p(true token)| difference
to dense; *top-1 = text token*: share of positions where the argmax is the text's next token. Times are
wall times on the shared 2-core machine, torch {args.threads} thread(s).

{tab}

{chr(10).join(reading)}

Run time {total:.0f} s ({load_s:.0f} s loading the model).
"""
    _emit(args, name, "Evaluation kit: teacher-forced agreement and perplexity (Gemma 3 270M)", body, argv,
          key=section_key(name, Ns, (4096,)))


# ----------------------------------------------------------------------------------------------
# eval-fidelity


def _q(x, p):
    return float(np.quantile(x, p)) if np.size(x) else float("nan")


def eval_fidelity(args, name, argv):
    """Per full-attention layer: the hsrgeom settings on the captured post-RoPE Q, K, V of the last
    rows of a long text, against float64 dense softmax (kept keys, softmax mass kept, output error)."""
    import _llm_model as M

    import hsrgeom.attention as A
    from hsrgeom.attention import reference as R
    t_all = time.perf_counter()
    settings = [s for s in parse_settings(args.settings) if s[1] is not None]
    Ns, rows_m = parse_lengths(args.tokens), args.rows
    if args.quick:
        Ns, rows_m = [512], 16
    if rows_m < 1 or any(n <= rows_m for n in Ns):
        raise SystemExit(f"error: need 1 <= --rows < N, got rows {rows_m}, tokens {Ns}")
    tok, _, _ = _tokenizers(args, need_hf=False)
    model, load_s = _model(args)
    layers = M.full_layers(model.config)
    rows, used, t_calls, sanity = [], [], 0.0, []
    for N in Ns:
        ids, used = M.text_tokens(tok, N)
        _, cache, t_pre = _prefill(model, ids[:N - rows_m], args.prefill_chunk)
        M.State.reset("capture")   # the last rows in one call: their Q, and every key and value
        M.forward(model, ids[N - rows_m:], cache)
        data = M.State.captured
        M.State.reset("dense")
        del cache
        log(f"N = {N}: prefill {t_pre:.1f} s, captured layers {sorted(data)}")
        for layer in layers:
            d = data[layer]
            q, k, v, scale = d["q"], d["k"], d["v"], d["scale"]
            ref = R.softmax_attention(q, k, v, scale=scale, causal=True)
            sanity.append(float(np.abs(ref - d["out"]).max() / np.abs(ref).max()))
            for label, knobs in settings:
                t = time.perf_counter()
                _, st = A.softmax_attention(q, k, v, causal=True, scale=scale, return_stats="exact", **knobs)
                t_calls += time.perf_counter() - t
                e, km, ent = st["rel_error"].ravel(), st["kept_mass"].ravel(), st["entries"].ravel()
                bound = st.get("dropped_mass_bound")
                rows.append([N, layer, label, f"{np.mean(ent):.0f}", f"{100 * np.mean(ent) / N:.1f}%",
                             f"{_q(km, .5):.4f}", f"{_q(km, .1):.4f}", f"{km.min():.4f}",
                             f"{_q(e, .5):.3g}", f"{_q(e, .9):.3g}", f"{e.max():.3g}",
                             "-" if bound is None else f"{_q(bound.ravel(), .5):.3g}",
                             f"{float((e < 0.01).mean()):.2f}"])
    total = time.perf_counter() - t_all
    hdr = ["N", "layer", "setting", "keys kept (mean)", "of N", "softmax mass kept median", "p10", "min",
           "rel output error median", "p90", "max", "certified dropped-mass bound median", "rows with error < 1%"]
    tab = C.table(hdr, rows)
    print(tab)
    body = f"""
Attention fidelity of the hsrgeom settings in each full-attention layer ({', '.join(map(str, layers))}) of
Gemma 3 270M on real text (the first N tokens of the standard-library sources: {', '.join(used)};
`{args.tokenizer}` tokenizer): a dense prefill of the first N - {rows_m} tokens, then the last {rows_m}
tokens in one call that captures their post-RoPE Q and all N keys and values of each full-attention
layer; `hsrgeom.attention.softmax_attention(q, k, v, causal=True, return_stats="exact", ...)` over
them against float64 dense softmax (the model's own sdpa output matches that reference to a relative
{max(sanity):.1e}). Statistics over the {rows_m} rows x {model.config.num_attention_heads} query heads.
*softmax mass kept*: the dense probability mass of the kept keys (measured); *rel output error*:
`||o - o_dense|| / ||o_dense||`. The exact methods keep a prefix of each row's logit order, so their
recall of the true top-k is min(kept, k) / k by construction (the peers tables measure it for the
approximate methods).

{tab}

Run time {total:.0f} s ({load_s:.0f} s loading the model, {t_calls:.0f} s in the softmax_attention calls
with their exact dense comparison).
"""
    _emit(args, name, "Evaluation kit: attention fidelity per layer (Gemma 3 270M, captured Q/K/V)", body, argv,
          key=section_key(name, Ns, (4096,)))


# ----------------------------------------------------------------------------------------------
# eval-speed


def _stock_cache(cache):
    """A copy of a prefilled ``hf.HsrgeomCache`` whose full-attention layers are transformers' own
    ``DynamicLayer`` (what a user of sdpa decodes with: it concatenates the whole cache per token)."""
    from transformers.cache_utils import DynamicLayer

    from hsrgeom.attention import hf
    out = copy.deepcopy(cache)
    for i, layer in enumerate(out.layers):
        if isinstance(layer, hf.HsrgeomLayer):
            plain = DynamicLayer()
            plain.lazy_initialization(layer.keys, layer.values)
            plain.keys, plain.values = layer.keys.clone(), layer.values.clone()
            out.layers[i] = plain
    return out


def eval_speed(args, name, argv):
    """Decode tokens/s through ``model.generate()`` (greedy) after N-token prompts: dense vs the
    hsrgeom settings, with the first step (index build) apart and the attention share."""
    import _llm_model as M
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    t_all = time.perf_counter()
    settings = parse_settings(args.settings)
    Ns, T = parse_lengths(args.tokens), args.new_tokens
    if args.quick:
        Ns, T = [512], 8
    if T < 3 or any(n < 2 for n in Ns):
        raise SystemExit(f"error: need --new-tokens >= 3 and N >= 2, got {T}, {Ns}")
    tok, _, _ = _tokenizers(args, need_hf=False)
    model, load_s = _model(args)

    class Stamps(StoppingCriteria):
        """Called once per generated token: the wall time and the full-layer attention time so far."""
        def __init__(self):
            self.t, self.full = [], []

        def __call__(self, input_ids, scores, **kwargs):
            self.t.append(time.perf_counter())
            self.full.append(M.State.full_time)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    rows, reading, used = [], [], []
    stock = "dense (sdpa), transformers' DynamicCache"
    settings = [(stock, None)] + settings
    for N in Ns:
        ids, used = M.text_tokens(tok, N)
        _, cache0, t_pre = _prefill(model, ids[:-1], args.prefill_chunk)
        log(f"N = {N}: dense prefill of {N - 1} tokens {t_pre:.1f} s")
        res = {}
        for label, knobs in settings:
            _apply(model, knobs, args.min_keys)
            st = Stamps()
            cache = _stock_cache(cache0) if label == stock else copy.deepcopy(cache0)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=torch.tensor([ids]), cache=cache, max_new_tokens=T,
                                     min_new_tokens=T, do_sample=False, stopping_criteria=StoppingCriteriaList([st]))
            t_gen = time.perf_counter() - t0
            gen = out[0, N:].numpy()
            step = np.diff(st.t)                 # the steady steps: token 2..T
            full = np.diff(st.full)
            res[label] = dict(gen=gen, first=st.t[0] - t0, step=float(np.median(step)), steady=float(step.mean()),
                              full=float(full.mean()), full_median=float(np.median(full)), total=t_gen)
            log(f"  {label}: first step {1e3 * res[label]['first']:.0f} ms, then {1e3 * res[label]['steady']:.1f} "
                f"ms/token ({1e3 * res[label]['full']:.1f} in the full layers), generate() {t_gen:.1f} s")
        d = res[settings[0][0]]
        for label, _ in settings:
            r = res[label]
            same = int((r["gen"] == d["gen"]).sum())
            first_diff = np.nonzero(r["gen"] != d["gen"])[0]
            rows.append([N, label, f"{1e3 * r['first']:.0f}", f"{1e3 * r['steady']:.1f}", f"{1e3 * r['step']:.1f}",
                         f"{1 / r['steady']:.2f}", f"{d['steady'] / r['steady']:.2f}x",
                         f"{1e3 * r['full']:.1f} ({1e3 * r['full_median']:.1f})",
                         f"{100 * r['full'] / r['steady']:.0f}%", f"{T / r['total']:.2f}",
                         f"{same}/{T}" + ("" if not len(first_diff) else f" (first at {first_diff[0]})")])
        share = d["full"] / d["steady"]
        ours = [lab for lab, knobs in settings if knobs is not None]
        if ours:
            h = res[settings[1][0]]   # dense sdpa over an HsrgeomCache
            best = max(ours, key=lambda lab: d["steady"] / res[lab]["steady"])
            b = res[best]
            reading.append(
                f"* N = {N}: with transformers' own cache a dense decoding step takes {1e3 * d['steady']:.1f} ms, "
                f"{100 * share:.0f}% of it ({1e3 * d['full']:.1f} ms) in the attention of the 3 full-attention layers "
                f"(so attention alone can make the step at most {1 / (1 - share):.2f}x faster). Over an "
                f"`hf.HsrgeomCache` (keys appended in place) the same dense step takes {1e3 * h['steady']:.1f} ms. "
                f"The fastest hsrgeom setting, {best}, takes {1e3 * b['steady']:.1f} ms "
                f"({1e3 * b['full']:.1f} ms in those layers): **{d['steady'] / b['steady']:.2f}x** the stock dense "
                f"step and {h['steady'] / b['steady']:.2f}x dense over the same cache. Its first step, where the "
                f"codes of the {N} prompt keys are built, takes {1e3 * b['first']:.0f} ms against "
                f"{1e3 * d['first']:.0f} ms dense.")
        del cache0
    total = time.perf_counter() - t_all
    hdr = ["N (prompt tokens)", "attention", "first step ms", "steady ms / token (mean)", "median",
           "tokens / s (steady)", "vs dense", "full-layer attention ms / token (median)", "share of the step",
           "tokens / s (whole generate())", "tokens equal to dense"]
    tab = C.table(hdr, rows)
    print(tab)
    chunked = f" (chunks of {args.prefill_chunk})" if max(Ns) > args.prefill_chunk else ""
    body = f"""
End-to-end decoding speed of Gemma 3 270M (float32, CPU, torch {args.threads} thread(s), hsrgeom
{args.threads} thread(s)) through `model.generate(input_ids, cache=..., max_new_tokens={T},
do_sample=False)` after an N-token prompt (the first N `{args.tokenizer}` tokens of the standard-library
sources: {', '.join(used)}). The first N - 1 tokens are prefilled densely{chunked} into an
`hf.HsrgeomCache` (sdpa's scores of one 32K-token call would not fit in memory), and `generate()`
gets the whole prompt with that cache, so it runs the last prompt token and then {T - 1} more steps.
The first row decodes with transformers' own `DynamicCache` (its full-attention layers concatenate
the whole cache at every token), the others with `hf.HsrgeomCache` (whose full-attention layers
append in place); settings as in the other sections (`hf.enable(model, layers="full",
min_keys={args.min_keys}, ...)`: hsrgeom in the 3 full-attention layers, sdpa in the 15
sliding-window layers). *vs dense*: against the first row. *first step*: from the
call to the first token (for hsrgeom: building each layer's key codes over the N prompt keys);
*steady*: the following steps; *full-layer attention*: time inside the attention function of the
full-attention layers per steady step. Wall times on the 2-core machine, nothing else running.

{tab}

{chr(10).join(reading)}

Run time {total:.0f} s ({load_s:.0f} s loading the model).
"""
    _emit(args, name, "Evaluation kit: decoding speed through generate() (Gemma 3 270M)", body, argv,
          key=section_key(name, Ns, (4096,)))
