"""Cross-build bit identity of the fused decoding step (attend.hpp): runs a fixed set of inputs
through ``hsrgeom.attention._attend`` and ``DecodeCache.attend`` and prints one SHA-256 per case
and one over all of them. Run it on two builds (e.g. the native AVX-512 one and an x86-64-v3
one, see docs/attention.md, "The fused step on AVX2-only CPUs"); equal hashes: the same bits.

    python benchmarks/attention/bitcheck.py                      # the installed build
    PYTHONPATH=build-v3/site python benchmarks/attention/bitcheck.py

Cases: Gemma 3 270M shapes (4 query rows, d = 256, float32, n = 4096, planted peaks), float64
d = 100 / d_v = 37 (tails after the vector blocks) with 3 rows (a partial group of 4), integer
keys (exact ties at every cut), and logits spread so that weights underflow to subnormals and 0;
each through select (top-r, threshold), softmax_top_r (r = 64 and r = n) and softmax_top_p.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import numpy as np

from hsrgeom.attention import DecodeCache, _attend


def _cases():
    rng = np.random.default_rng(2026)
    n, d = 4096, 256
    k = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((4, d)).astype(np.float32)
    k[rng.choice(n, 8, replace=False)] += 3.0 * q.mean(axis=0)
    yield "gemma f32", q, k, rng.standard_normal((n, d)).astype(np.float32), d ** -0.5
    n, d, dv = 3000, 100, 37
    yield ("f64 tails", rng.standard_normal((3, d)), rng.standard_normal((n, d)) * np.exp2(rng.integers(-8, 8, (n, 1))),
           rng.standard_normal((n, dv)), 0.1)
    ki = rng.integers(-2, 3, (2000, 48)).astype(np.float32)
    ki[1000:] = ki[:1000]
    yield "integer ties", rng.integers(-2, 3, (4, 48)).astype(np.float32), ki, rng.standard_normal((2000, 24)).astype(
        np.float32), 0.5
    yield "underflow", q, k, k[:, :40].copy(), 40.0


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def main():
    so = _attend.__file__
    print(f"module: {so}")
    if shutil.which("objdump"):
        asm = subprocess.run(["objdump", "-d", so], capture_output=True, text=True).stdout
        print(f"zmm (AVX-512) instructions in it: {asm.count('zmm')}")
    total = hashlib.sha256()
    for name, q, k, v, scale in _cases():
        codes = (_attend.HeadCodesF32 if k.dtype == np.float32 else _attend.HeadCodesF64)(k.shape[1], v.shape[1])
        codes.append(k, v)
        s = q.astype(np.float64) @ k.astype(np.float64).T
        t = np.quantile(s, 0.98, axis=1)
        parts = {
            "select r=64": codes.select(q, k, r=64, threads=1)[:3],
            "select t": codes.select(q, k, t=t, threads=1)[:3],
            "softmax_top_r 64": codes.softmax_top_r(q, k, v, 64, scale, 1)[:5],
            "softmax_top_r n": codes.softmax_top_r(q, k, v, len(k), scale, 1)[:5],
            "softmax_top_p 0.99": codes.softmax_top_p(q, k, v, 0.99, scale, 1)[:5],
            "softmax_top_p 0.5": codes.softmax_top_p(q, k, v, 0.5, scale, 1)[:5],
        }
        cache = DecodeCache().append(k[None, None], v[None, None])
        qn = q[None, :, None]
        knobs = (("top_r", {"top_r": 64}), ("top_p", {"top_p": 0.99}),
                 ("threshold", {"threshold": t[None, :, None] * scale}))
        for key, kw in knobs:
            out, st = cache.attend(qn, mode="softmax", scale=scale, return_stats=True, **kw)
            parts[f"attend {key}"] = (out, st["entries"], st["dropped_mass_bound"])
        for key, arrays in parts.items():
            dg = _digest(*arrays)
            total.update(dg.encode())
            print(f"{name:13s} {key:20s} {dg[:16]}")
    print(f"all: {total.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
