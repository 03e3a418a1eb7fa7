"""Where the first hsrgeom decoding step of ``generate()`` spends its time (issue 21).

``python benchmarks/attention/first_step.py [N] [--threads T]``: loads Gemma 3 270M (the
``[llm]`` extra), prefills the first N - 1 tokens of the evaluation text densely (chunks of
4096), then for top_p = 0.99 and top_r = 64 decodes 4 tokens through ``generate()`` from a
copy of that cache and prints, for every :class:`hsrgeom.attention.DecodeCache` call of the 3
full-attention layers, its CPU time (``time.thread_time``: what the call itself costs, whatever
else the machine runs) and wall time, with the keys kept. The first step's ``append`` builds
the codes of the N prompt keys; later ones add one key. Prints only; writes nothing.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=8192, help="prompt tokens (default 8192)")
    ap.add_argument("--threads", type=int, default=1, help="torch and hsrgeom threads (default 1; with more, "
                         "the CPU times miss the other threads' work)")
    args = ap.parse_args()
    import _llm_model as M
    import eval as E
    import torch

    import hsrgeom
    from hsrgeom.attention import DecodeCache
    hsrgeom.set_num_threads(args.threads)
    calls = []

    def timed(name):
        f = getattr(DecodeCache, name)

        def g(self, *a, **k):
            c, w = time.thread_time(), time.perf_counter()
            r = f(self, *a, **k)
            kept = float(np.mean(r[1]["entries"])) if name == "attend" and isinstance(r, tuple) else None
            calls.append((name, len(self), time.thread_time() - c, time.perf_counter() - w, kept))
            return r
        setattr(DecodeCache, name, g)
    timed("append")
    timed("attend")

    class A:
        threads, tokenizer = args.threads, "gguf"
    model, _ = E._model(A)
    tok, _, _ = E._tokenizers(A, need_hf=False)
    ids, _ = M.text_tokens(tok, args.n)
    _, cache0, t_pre = E._prefill(model, ids[:-1], 4096)
    print(f"dense prefill of {args.n - 1} tokens: {t_pre:.1f} s")
    for knobs in (dict(top_p=0.99), dict(top_r=64)):
        E._apply(model, knobs, 0)
        cache = copy.deepcopy(cache0)
        calls.clear()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=torch.tensor([ids]), cache=cache, max_new_tokens=4, min_new_tokens=4,
                           do_sample=False)
        print(f"== {knobs}: generate() of 4 tokens {1e3 * (time.perf_counter() - t0):.0f} ms")
        for name, n, cpu, wall, kept in calls:
            print(f"  {name:6s} keys {n:6d}  cpu {1e3 * cpu:7.1f} ms  wall {1e3 * wall:7.1f} ms"
                  + ("" if kept is None else f"  kept {kept:.0f} per head"))


if __name__ == "__main__":
    main()
