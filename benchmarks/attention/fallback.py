"""``fallback``: where hsrgeom's decoding step starts to beat torch sdpa (the dense fallback
threshold ``hsrgeom.attention.hf.MIN_KEYS``).

One decoding step at Gemma 3 270M's shapes (4 query heads sharing 1 kv head, d = 256, float32):
torch ``scaled_dot_product_attention`` (what transformers runs) against
:meth:`hsrgeom.attention.DecodeCache.attend` (softmax, each knob given) on the same keys, for a
few context lengths. The machine is shared, so each timing is the median of ``--repeat`` rounds
(each round: the mean of a few calls), rounds of the two methods interleaved, with the load
average printed beside it. Keys are Gaussian with a few planted "massive" keys the query aligns
with (real full-attention layers are peaked; top-p keeps few keys there), or ``--flat`` ones.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
from _common import log, table, write_section


def add_arguments(parser, name):
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 4096, 16384, 32768, 65536],
                        help="context lengths (default 1K 4K 16K 32K 64K)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds per method and length (median; default 7)")
    parser.add_argument("--top-p", type=float, default=0.999, help="top_p of the hsrgeom run (default 0.999)")
    parser.add_argument("--top-r", type=int, default=64, help="top_r of the hsrgeom run (default 64)")
    parser.add_argument("--flat", action="store_true", help="plain Gaussian keys (no planted peak)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads (default 1, as the LLM experiments: on a shared machine more can be "
                             "many times slower); 0: torch's own default")


def _keys(rng, n, d, flat):
    k = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((4, d)).astype(np.float32)
    if not flat:  # a few keys aligned with the queries: their logits ~ 12 above the rest
        hot = rng.choice(n, size=max(4, n // 1024), replace=False)
        k[hot] += 3.0 * q.mean(axis=0)
    return q, k


def _mean_call(fn, calls):
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls


def interleaved(fns, repeat, calls):
    """({name: median seconds per call}, median load average): ``repeat`` rounds, each timing
    every function in turn (a warm-up call, then the mean of ``calls`` calls)."""
    times = {key: [] for key in fns}
    loads = []
    for _ in range(repeat):
        for key, fn in fns.items():
            fn()
            times[key].append(_mean_call(fn, calls))
        loads.append(os.getloadavg()[0])
    return {key: statistics.median(t) for key, t in times.items()}, statistics.median(loads)


def run(args, name, argv):
    import torch
    import torch.nn.functional as F

    from hsrgeom.attention import DecodeCache
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.quick:
        args.n, args.repeat = [1024, 4096], 3
    d = 256
    scale = d ** -0.5
    rng = np.random.default_rng(0)
    rows = []
    for n in args.n:
        q, k = _keys(rng, n, d, args.flat)
        v = rng.standard_normal((n, d)).astype(np.float32)
        cache = DecodeCache()
        cache.append(k[None, None], v[None, None])
        qt = torch.from_numpy(q)[None, :, None]
        kt, vt = torch.from_numpy(k)[None, None], torch.from_numpy(v)[None, None]
        qn = q[None, :, None]

        def sdpa():
            with torch.no_grad():
                F.scaled_dot_product_attention(qt, kt, vt, scale=scale, enable_gqa=True)

        knobs = {"top_p": {"top_p": args.top_p}, "top_r": {"top_r": args.top_r}}
        fns = {"sdpa": sdpa}
        for key, kw in knobs.items():
            fns[key] = (lambda kw=kw: cache.attend(qn, mode="softmax", scale=scale, return_stats=False, **kw))
        _, st = cache.attend(qn, mode="softmax", scale=scale, top_p=args.top_p)
        med, load = interleaved(fns, args.repeat, max(1, int(1e5 // n)))
        rows.append([n, med["sdpa"] * 1e3, med["top_p"] * 1e3, med["top_r"] * 1e3, med["sdpa"] / med["top_p"],
                     med["sdpa"] / med["top_r"], float(st["entries"].mean()),
                     repr(cache).split("index=[")[-1].rstrip("])").split()[-1], load])
        log(f"n={n}: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in med.items()) + f" (load {load:.1f})")
    header = ["n", "sdpa ms", f"top_p={args.top_p} ms", f"top_r={args.top_r} ms", "sdpa/top_p", "sdpa/top_r",
              "top_p keys kept", "index", "load avg"]
    body = table(header, rows)
    print(body)
    if not args.quick:
        write_section(args, name, "Dense fallback threshold (sdpa vs DecodeCache.attend)", body, argv)
