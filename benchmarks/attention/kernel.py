"""``kernel``: one decoding step of one layer at Gemma 3 270M's shapes (4 query heads sharing
1 kv head, d = 256, float32), per method, as ratios to torch sdpa (issue 21's acceptance line 1).

Methods, on the same keys: torch ``scaled_dot_product_attention`` (dense, what transformers
runs); the plain GEMV scan (numpy ``K @ q`` for the 4 heads, then the top-r by ``argpartition``,
softmax over them and the V gather: the exact bar an index must clear); hsrgeom
``DecodeCache.attend`` with ``top_r`` (the fused step over the key codes: one compiled call per
kv head) and with ``top_p`` (and with ``--plain`` the index path, ``DecodeCache(codes=False)``).
For each: median latency (interleaved rounds, load average beside), keys kept, the share of
the softmax mass kept and the output's relative error against float64 dense softmax. Keys are
synthetic (Gaussian with planted peaks, as the ``fallback`` experiment), or with ``--real
TOKENS`` the captured post-RoPE Q/K/V of Gemma 3 270M's full-attention layers (the last query
row over all TOKENS keys).
"""
from __future__ import annotations

import numpy as np
from _common import log, table, write_section
from fallback import _keys, interleaved


def add_shared_arguments(parser):
    """The options kernel and peers share (context lengths, knobs, data)."""
    parser.add_argument("--n", type=int, nargs="+", default=[4096, 16384, 32768],
                        help="context lengths (default 4K 16K 32K)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per method and length (median; default 5)")
    parser.add_argument("--top-r", type=int, default=64, help="top_r of the selective methods (default 64)")
    parser.add_argument("--top-p", type=float, default=0.99, help="top_p of hsrgeom (default 0.99)")
    parser.add_argument("--flat", action="store_true", help="plain Gaussian keys (no planted peak)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--npz", metavar="FILE",
                        help="a capture of --real (~/.cache/hsrgeom-llm/qkv-*.npz), read without loading the model")
    parser.add_argument("--real", type=int, default=0, metavar="TOKENS",
                        help="captured Q/K/V of the full-attention layers of a TOKENS-token forward pass of "
                             "Gemma 3 270M (the [llm] extra; cached under ~/.cache/hsrgeom-llm) instead of "
                             "synthetic keys")


def add_arguments(parser, name):
    add_shared_arguments(parser)
    parser.add_argument("--plain", action="store_true",
                        help="also time DecodeCache(codes=False) (the index path, before the fused step)")


def _dense64(q, k, v, scale):
    s = (q.astype(np.float64) @ k.astype(np.float64).T) * scale  # (4, n)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p, p @ v.astype(np.float64)


def _gemv_top_r(q, k, v, scale, r):
    s = k @ q.T  # (n, 4) float32 GEMV
    out = np.empty((q.shape[0], v.shape[1]), dtype=np.float32)
    kept = []
    for h in range(q.shape[0]):
        idx = np.argpartition(-s[:, h], r - 1)[:r]
        w = np.exp(scale * (s[idx, h] - s[idx, h].max()))
        out[h] = (w @ v[idx]) / w.sum()
        kept.append(idx)
    return out, kept


def sdpa_call(q, k, v, scale):
    """A function running torch sdpa for the query heads q (h, d) over one kv head (k, v)."""
    import torch
    import torch.nn.functional as F
    qt = torch.from_numpy(q)[None, :, None]
    kt, vt = torch.from_numpy(k)[None, None], torch.from_numpy(v)[None, None]

    def sdpa():
        with torch.no_grad():
            return F.scaled_dot_product_attention(qt, kt, vt, scale=scale, enable_gqa=True)[0, :, 0].numpy()
    return sdpa


def _cases(args):
    """(label, q (4, d), k (n, d), v (n, d), scale) per measured case: synthetic keys at each
    ``--n``, or with ``--real T`` the last query row of each full-attention layer of a T-token
    forward pass of Gemma 3 270M over the standard-library text (captured post-RoPE, cached)."""
    if getattr(args, "npz", None):  # a capture file of llm._capture, read without the model
        z = np.load(args.npz)
        args.real = z["5_k"].shape[2] if "5_k" in z else 0
        for layer in sorted({int(f.split("_")[0]) for f in z.keys()}):
            yield (f"layer {layer}", np.ascontiguousarray(z[f"{layer}_q"][0, :, -1]),
                   np.ascontiguousarray(z[f"{layer}_k"][0, 0]), np.ascontiguousarray(z[f"{layer}_v"][0, 0]),
                   float(z[f"{layer}_scale"]))
        return
    if args.real:
        import llm
        args.tokens = args.real
        args.threads = args.torch_threads
        args.no_cache = False
        data, meta, _ = llm._capture(args)
        for layer in sorted(data):
            c = data[layer]
            yield (f"layer {layer}", np.ascontiguousarray(c["q"][0, :, -1]), np.ascontiguousarray(c["k"][0, 0]),
                   np.ascontiguousarray(c["v"][0, 0]), float(c["scale"]))
        return
    d = 256
    rng = np.random.default_rng(1)
    for n in args.n:
        q, k = _keys(rng, n, d, args.flat)
        yield "synthetic", q, k, rng.standard_normal((n, d)).astype(np.float32), d ** -0.5


def run(args, name, argv):
    import torch

    from hsrgeom.attention import DecodeCache
    torch.set_num_threads(args.torch_threads)
    if args.quick:
        args.n, args.repeat = [4096], 3
    rows = []
    for label, q, k, v, scale in _cases(args):
        n = len(k)
        p64, ref = _dense64(q, k, v, scale)
        cache = DecodeCache().append(k[None, None], v[None, None])  # codes: the fused step
        plain = DecodeCache(codes=False).append(k[None, None], v[None, None]) if args.plain else None
        qn = q[None, :, None]
        sdpa = sdpa_call(q, k, v, scale)
        fns = {
            "sdpa": sdpa,
            f"GEMV + top_r={args.top_r}": lambda: _gemv_top_r(q, k, v, scale, args.top_r)[0],
            f"hsrgeom top_r={args.top_r}": lambda: cache.attend(qn, mode="softmax", top_r=args.top_r, scale=scale,
                                                                return_stats=False)[0, :, 0],
            f"hsrgeom top_p={args.top_p}": lambda: cache.attend(qn, mode="softmax", top_p=args.top_p, scale=scale,
                                                                return_stats=False)[0, :, 0],
        }
        if plain is not None:
            fns[f"index top_r={args.top_r} (codes=False)"] = lambda: plain.attend(
                qn, mode="softmax", top_r=args.top_r, scale=scale, return_stats=False)[0, :, 0]
        # quality: keys kept, softmax mass kept, relative output error (vs float64 dense)
        _, kept_g = _gemv_top_r(q, k, v, scale, args.top_r)
        quality = {"sdpa": (n, 1.0), f"GEMV + top_r={args.top_r}":
                   (args.top_r, float(np.mean([p64[h, kept_g[h]].sum() for h in range(4)])))}
        for key, kw in ((f"hsrgeom top_r={args.top_r}", {"top_r": args.top_r}),
                        (f"hsrgeom top_p={args.top_p}", {"top_p": args.top_p}),
                        (f"index top_r={args.top_r} (codes=False)", {"top_r": args.top_r})):
            if key not in fns:
                continue
            _, st = cache.attend(qn, mode="softmax", scale=scale, return_stats="exact", **kw)
            quality[key] = (float(st["entries"].mean()), float(st["kept_mass"].mean()))
        med, load = interleaved(fns, args.repeat, max(1, int(1e5 // n)))
        for key, fn in fns.items():
            out = np.asarray(fn(), dtype=np.float64)
            err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            kept, mass = quality[key]
            rows.append([label, n, key, med[key] * 1e3, med["sdpa"] / med[key], kept, mass, err, load])
        log(f"n={n}: " + ", ".join(f"{k} {t * 1e3:.3f} ms" for k, t in med.items()) + f" (load {load:.1f})")
    body = table(["keys", "n", "method", "ms / layer / token", "speed vs sdpa", "keys kept (mean per head)",
                  "softmax mass kept", "relative output error", "load avg"], rows)
    print(body)
    if not args.quick:
        key = f"kernel-real-{args.real}" if args.real else "kernel"
        title = (f"Kernel on captured Q/K/V of Gemma 3 270M's full-attention layers, {args.real} tokens"
                 if args.real else "Kernel: one layer, one token, Gemma 3 270M shapes (synthetic keys)")
        write_section(args, name, title, body, argv, key=key)
