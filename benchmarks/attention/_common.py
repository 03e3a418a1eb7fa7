"""Shared pieces of the experiments: output locations, timing, fits, markdown sections."""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np


def docs_dir(args) -> Path:
    """Where results go: --out, else the repository's docs/ (above benchmarks/), else ./docs."""
    if getattr(args, "out", None):
        return Path(args.out)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "docs").is_dir():
            return parent / "docs"
    return Path.cwd() / "docs"


def best_time(fn, repeat=3, budget=0.25, most=50):
    """Best wall time (seconds) of at least ``repeat`` calls, more (up to ``most``) while the
    calls so far took less than ``budget`` seconds: millisecond timings on this 2-core machine
    jitter by ~2x between calls (threads descheduled), so a short call gets more tries. Returns
    (best, the last result)."""
    best, out, spent, calls = float("inf"), None, 0.0, 0
    while calls < repeat or (spent < budget and calls < most):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best, out


def best_blas_time(fn, repeat=3):
    """Best wall time of ``fn`` over BLAS thread counts (1 and the default), so that a dense
    baseline is not judged by a thread count that happens to suit it badly here (measured:
    OpenBLAS's 2-thread sgemv can be slower than 1 thread on this 2-core machine). Without
    threadpoolctl, the default only. Returns (seconds, result, threads of the best)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        t, out = best_time(fn, repeat)
        return t, out, "default"
    results = []
    for limit in (1, None):
        with threadpool_limits(limits=limit, user_api="blas"):
            t, out = best_time(fn, repeat)
        results.append((t, out, limit or "default"))
    return min(results, key=lambda r: r[0])


def fit_exponent(ns, ys):
    """Least-squares slope of log y against log n (points with y > 0 only)."""
    ns, ys = np.asarray(ns, float), np.asarray(ys, float)
    ok = ys > 0
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns[ok]), np.log(ys[ok]), 1)[0])


def table(header, rows):
    """A markdown table; floats are printed with 3 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    import hsrgeom
    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    cpu = platform.machine()
    try:  # the CPU's name: machines of one kind here differ (AVX-512 or not, Xeon or EPYC)
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__} (BLAS threads: {blas}), hsrgeom {hsrgeom.__version__} "
            f"(threads: {hsrgeom.get_num_threads()})")


def command(name, argv) -> str:
    return "python benchmarks/attention/run.py " + " ".join([name, *argv])


def write_section(args, name: str, title: str, body: str, argv=(), key=None) -> Path:
    """Replace (or append) the section ``key`` (default: ``name``) of docs/attention.md; returns
    the file."""
    key = key or name
    path = docs_dir(args) / "attention.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else (
        "# hsrgeom.attention: the paper's claims, measured\n\n"
        "Every section below is written by one command (shown in it); rerun it to regenerate that section.\n")
    block = (f"<!-- begin:{key} -->\n## {title}\n\n`{command(name, argv)}`  \n"
             f"Machine: {machine()}; {time.strftime('%Y-%m-%d')}.\n\n{body.strip()}\n<!-- end:{key} -->")
    pattern = re.compile(rf"<!-- begin:{re.escape(key)} -->.*?<!-- end:{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path


def savefig(args, fig, filename: str) -> str:
    """Save a matplotlib figure under docs/img/; returns the markdown-relative path."""
    img = docs_dir(args) / "img"
    img.mkdir(parents=True, exist_ok=True)
    fig.savefig(img / filename, dpi=110, bbox_inches="tight")
    return f"img/{filename}"


def log(*a):
    print(*a, file=sys.stderr, flush=True)
