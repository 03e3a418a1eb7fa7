"""The fused step's compiled calls of two builds of hsrgeom (e.g. the native AVX-512 one and an
x86-64-v3 one) timed in interleaved rounds, one worker process per build (pybind11 cannot load
both into one process), so that the load of a shared machine hits both alike; also checks that
both return the same bits.

    python benchmarks/attention/builds.py - build-v3/site [--n 4096 16384 32768] [--repeat 15]

A and B: a PYTHONPATH to import hsrgeom from ("-": the installed one). Gemma 3 270M shapes (4
query rows over one kv head, d = 256, float32, the ``kernel`` experiment's synthetic keys):
``softmax_top_r`` (r = 64) and ``softmax_top_p`` (p = 0.99) of ``hsrgeom.attention._attend``,
1 thread; median ms per call of each build over the rounds and the ratio B / A.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def worker():
    sys.path.insert(0, HERE)
    from fallback import _keys

    from hsrgeom.attention import _attend
    state = {}
    for line in sys.stdin:
        n, name, reps = line.split()
        n, reps = int(n), int(reps)
        if n not in state:
            rng = np.random.default_rng(n)
            q, k = _keys(rng, n, 256, False)
            v = rng.standard_normal((n, 256)).astype(np.float32)
            c = _attend.HeadCodesF32(256, 256)
            c.append(k, v)
            state[n] = (q, k, v, c)
        q, k, v, c = state[n]
        if name == "top_r":
            call = lambda: c.softmax_top_r(q, k, v, 64, 256 ** -0.5, 1)  # noqa: E731
        else:
            call = lambda: c.softmax_top_p(q, k, v, 0.99, 256 ** -0.5, 1)  # noqa: E731
        out = call()
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        dt = (time.perf_counter() - t0) / reps
        h = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in out[:5])).hexdigest()[:16]
        print(f"{dt} {h}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="PYTHONPATH of build A ('-': installed)")
    ap.add_argument("b", help="PYTHONPATH of build B")
    ap.add_argument("--n", type=int, nargs="+", default=[4096, 16384, 32768])
    ap.add_argument("--repeat", type=int, default=15, help="interleaved rounds (median)")
    args = ap.parse_args()
    procs = {}
    for key, path in (("A", args.a), ("B", args.b)):
        env = dict(os.environ)
        if path != "-":
            env["PYTHONPATH"] = os.path.abspath(path)
        procs[key] = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)

    def ask(key, n, name, reps):
        procs[key].stdin.write(f"{n} {name} {reps}\n")
        procs[key].stdin.flush()
        dt, h = procs[key].stdout.readline().split()
        return float(dt), h

    print("| n | call | A ms | B ms | B / A | same bits |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        reps = max(1, int(1e6 // n))  # ~30-250 calls per round
        for name in ("top_r", "top_p"):
            t = {"A": [], "B": []}
            hashes = {}
            for _ in range(args.repeat):
                for key in ("A", "B"):
                    dt, hashes[key] = ask(key, n, name, reps)
                    t[key].append(dt)
            a, b = statistics.median(t["A"]) * 1e3, statistics.median(t["B"]) * 1e3
            label = "softmax_top_r 64" if name == "top_r" else "softmax_top_p 0.99"
            print(f"| {n} | {label} | {a:.3f} | {b:.3f} | {b / a:.2f} | {hashes['A'] == hashes['B']} |", flush=True)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    print(f"load average: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        sys.exit(main())
