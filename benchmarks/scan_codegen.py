"""QuantizedScan's scan speed by build target and kernel (issue 20: the native -march build was
3.6x slower than the portable one at d = 16; docs/performance.md, "QuantizedScan by build").

Two modes, both on uniform float32 points in [0, 1]^d, m random unit normals (200 at d <= 16, 50
above, as benchmarks/peers/run.py) with offsets at the k-th largest projection (~k points
reported per query); time per query = best batch time / m.

    python benchmarks/scan_codegen.py --cxx [--include cpp/include] [--targets native,x86-64-v3,x86-64]
        compiles a small C++ driver of QuantizedScan (no Python, with symbols: `perf record`
        works on it) against the headers in --include, once per -march target, with CMake's
        Release flags for hsrgeom_core (-O3 -ffp-contract=off -fopenmp), and times report and
        count. Use it to compare two source trees (e.g. `git archive main` into a temporary
        directory) on every target in seconds instead of a wheel build each.
    python benchmarks/scan_codegen.py --builds native=DIR1,v3=DIR2,portable=DIR3 [--kernels avx512,avx2,sse2]
        times the installed packages `pip install --target DIR ...` (each in a child process with
        PYTHONPATH=DIR; an empty DIR: the interpreter's own hsrgeom) through the Python API,
        optionally with each scan kernel forced (HSRGEOM_SCAN_KERNEL), interleaved over
        --rounds rounds, best of all.

Common options: --n (10^6), --dims (8,16,64), --k (1000), --threads (1,2), --rounds (3).
The machine may be shared: note the load (`uptime`) with the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DRIVER = r"""
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "hsrgeom/quantized_scan.hpp"

using namespace hsrgeom;

int main(int argc, char** argv) {
  const index_t n = std::atoll(argv[1]), m = std::atoll(argv[3]), k = std::atoll(argv[4]);
  const int d = std::atoi(argv[2]), threads = std::atoi(argv[5]), reps = std::atoi(argv[6]);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  std::normal_distribution<float> gauss;
  std::vector<float> x(static_cast<size_t>(n) * d), a(static_cast<size_t>(m) * d);
  for (auto& v : x) v = uni(rng);
  std::vector<double> b(m), proj(n);
  for (index_t j = 0; j < m; ++j) {
    double s = 0;
    for (int t = 0; t < d; ++t) s += std::pow(a[j * d + t] = gauss(rng), 2);
    for (int t = 0; t < d; ++t) a[j * d + t] = static_cast<float>(a[j * d + t] / std::sqrt(s));
    for (index_t i = 0; i < n; ++i) {
      double v = 0;
      for (int t = 0; t < d; ++t) v += static_cast<double>(a[j * d + t]) * x[i * d + t];
      proj[i] = v;
    }
    std::nth_element(proj.begin(), proj.begin() + (k - 1), proj.end(), std::greater<double>());
    b[j] = proj[k - 1];
  }
  const QuantizedScan<float> qs(PointsView<float>{x.data(), n, d}, threads);
  const Halfspaces<float> q{a.data(), b.data(), m};
  double best_r = 1e300, best_c = 1e300, tested = 0, reported = 0;
  for (int r = 0; r < reps; ++r) {
    QueryStats st;
    auto t0 = std::chrono::steady_clock::now();
    const ReportResult res = qs.report(q, &st, threads);
    auto t1 = std::chrono::steady_clock::now();
    const std::vector<std::int64_t> cnt = qs.count(q, nullptr, threads);
    auto t2 = std::chrono::steady_clock::now();
    best_r = std::min(best_r, std::chrono::duration<double>(t1 - t0).count());
    best_c = std::min(best_c, std::chrono::duration<double>(t2 - t1).count());
    tested = reported = 0;
    for (index_t j = 0; j < m; ++j) tested += st.points_tested[j], reported += cnt[j];
  }
  std::printf("{\"report\": %.6g, \"count\": %.6g, \"tested\": %.6g, \"reported\": %.6g}\n", best_r / m * 1e6,
              best_c / m * 1e6, tested / m, reported / m);
  return 0;
}
"""


def eigen_include():
    for p in sys.path:
        inc = Path(p) / "cmeel.prefix" / "include" / "eigen3"
        if inc.is_dir():
            return inc
    sys.exit("no Eigen headers: pip install cmeel-eigen")


def run_cxx(args):
    include = Path(args.include).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="scan_codegen_"))
    (tmp / "driver.cpp").write_text(DRIVER)
    binaries = {}
    for target in args.targets.split(","):
        exe = tmp / f"driver_{target}"
        cmd = ["g++", "-std=c++17", "-O3", "-g", "-DNDEBUG", "-ffp-contract=off", "-fopenmp", f"-march={target}",
               f"-I{include}", f"-I{eigen_include()}", str(tmp / "driver.cpp"), "-o", str(exe)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"# built {exe} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        binaries[target] = exe
    rows = {}
    for _ in range(args.rounds):
        for d in dims(args):
            m = 200 if d <= 16 else 50
            for th in threads(args):
                for target, exe in binaries.items():
                    out = subprocess.run([str(exe), str(args.n), str(d), str(m), str(args.k), str(th), "2"],
                                         check=True, capture_output=True, text=True).stdout
                    r = json.loads(out)
                    for op in ("report", "count"):
                        cell = rows.setdefault((d, th, op), {})
                        cell[target] = min(cell.get(target, float("inf")), r[op])
                    rows.setdefault((d, th, "tested"), {})[target] = r["tested"]
    table(rows, list(binaries), f"C++ driver, {include}, n = {args.n}, ~{args.k} reported")


CHILD = r"""
import json, os, sys, time
import numpy as np
import hsrgeom
n, k = int(sys.argv[1]), int(sys.argv[2])
dims = [int(v) for v in sys.argv[3].split(",")]
threads = [int(v) for v in sys.argv[4].split(",")]
out = {"file": hsrgeom.__file__}
for d in dims:
    rng = np.random.default_rng(d)
    m = 200 if d <= 16 else 50
    x = rng.random((n, d), dtype=np.float32)
    a = rng.standard_normal((m, d))
    a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    proj = x.astype(np.float64) @ a.T.astype(np.float64)
    b = -np.partition(-proj, k - 1, axis=0)[k - 1]
    del proj
    idx = hsrgeom.QuantizedScan(x)
    for th in threads:
        for op in ("report", "count"):
            f = (lambda: idx.report(a, b, n_threads=th)) if op == "report" else (lambda: idx.count(a, b, n_threads=th))
            best = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                f()
                best = min(best, time.perf_counter() - t0)
            out[f"{d},{th},{op}"] = best / m * 1e6
        idx.report(a, b, n_threads=th)
        out[f"{d},{th},tested"] = float(idx.stats.points_tested.mean())
print(json.dumps(out))
"""


def run_builds(args):
    builds = dict(item.split("=", 1) for item in args.builds.split(","))
    kernels = args.kernels.split(",") if args.kernels else [None]
    configs = [(name, kern) for name in builds for kern in kernels]
    rows = {}
    for _ in range(args.rounds):
        for name, kern in configs:
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            env.pop("HSRGEOM_SCAN_KERNEL", None)
            if builds[name]:
                env["PYTHONPATH"] = builds[name]
            if kern:
                env["HSRGEOM_SCAN_KERNEL"] = kern
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.n), str(args.k), args.dims, args.threads],
                                 env=env, check=True, capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout
            r = json.loads(out)
            col = name if kern is None else f"{name}/{kern}"
            print(f"# {col}: {r.pop('file')}", file=sys.stderr)
            for key, v in r.items():
                d, th, op = key.split(",")
                cell = rows.setdefault((int(d), int(th), op), {})
                cell[col] = v if op == "tested" else min(cell.get(col, float("inf")), v)
    cols = [name if kern is None else f"{name}/{kern}" for name, kern in configs]
    table(rows, cols, f"Python API, n = {args.n}, ~{args.k} reported")


def table(rows, cols, title):
    print(f"\n{title}; µs per query (best), points tested per query\n")
    print("| d | threads | op | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for (d, th, op), cell in sorted(rows.items()):
        fmt = (lambda v: f"{v:.0f}") if op == "tested" else (lambda v: f"{v:,.0f}".replace(",", " "))
        print(f"| {d} | {th} | {op} | " + " | ".join(fmt(cell[c]) if c in cell else "" for c in cols) + " |")


def dims(args):
    return [int(v) for v in args.dims.split(",")]


def threads(args):
    return [int(v) for v in args.threads.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cxx", action="store_true", help="compile and time the C++ driver")
    ap.add_argument("--include", default=str(ROOT / "cpp" / "include"), help="hsrgeom headers for --cxx")
    ap.add_argument("--targets", default="native,x86-64-v3,x86-64", help="-march targets for --cxx")
    ap.add_argument("--builds", default="", help="name=DIR,... installed packages to time (DIR empty: this Python's)")
    ap.add_argument("--kernels", default="", help="scan kernels to force in each build (HSRGEOM_SCAN_KERNEL)")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dims", default="8,16,64")
    ap.add_argument("--k", type=int, default=1000, help="points reported per query (about)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()}", file=sys.stderr)
    if args.cxx:
        run_cxx(args)
    else:
        run_builds(args if args.builds else ap.parse_args(sys.argv[1:] + ["--builds", "installed="]))
    print(f"# done {time.strftime('%H:%M:%S UTC', time.gmtime())}, load {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
