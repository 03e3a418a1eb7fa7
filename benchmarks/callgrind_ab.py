"""Instruction counts of the query calls of two hsrgeom installs (A/B), under callgrind.

Wall-clock on a shared machine is noisy; instruction counts are repeatable under load. For each
structure x dimension x operation on a fixed workload (n points, 64 queries reporting ~100 and
~1000 points, one thread), the query call alone is measured: the process runs without
instrumentation (build included) and switches it on only around the call (callgrind client
requests from a tiny C helper compiled here), after one warm-up call. Prints Ir(A), Ir(B) and
B/A per cell.

    python benchmarks/callgrind_ab.py --a /work/venv-base/bin/python --b /work/venv-base/bin/python \
        --a-path /tmp/cg_a --b-path /tmp/cg_b

Needs valgrind (with valgrind/callgrind.h) and a C compiler. Valgrind does not run AVX-512:
build both installs without -march=native, e.g.

    pip install --no-deps --target /tmp/cg_a -C cmake.define.HSRGEOM_NATIVE=OFF \
        -C cmake.define.CMAKE_CXX_FLAGS=-march=x86-64-v3 -C build-dir=/tmp/cg_build_a <source A>

and pass them as --a-path/--b-path (prepended to PYTHONPATH; use an interpreter without an
editable hsrgeom, whose import hook would win). One worker process per (install, structure, d),
the two installs side by side; --only limits the structures (names as in STRUCTURES below).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HELPER_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(const char* label) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(label); }
"""

# structure name -> (constructor source, dimensions)
STRUCTURES = {
    "BruteForce": ("hsrgeom.BruteForce(x)", [2, 8]),
    "QuantizedScan": ("hsrgeom.QuantizedScan(x)", [3, 8]),
    "PartitionTree": ("hsrgeom.PartitionTree(x)", [2, 3, 8]),
    "SimplicialPartitionTree": ("hsrgeom.SimplicialPartitionTree(x)", [3]),
    "ConvexLayers": ("hsrgeom.ConvexLayers(x)", [2]),
    "ConvexLayers3": ("hsrgeom.ConvexLayers3(x)", [3]),
    "ShallowCutting3": ("hsrgeom.ShallowCutting3(x)", [3]),
}
OPS = ["report_sorted", "report_unsorted", "count", "empty", "topk", "sum"]


def worker(args):
    import ctypes

    import numpy as np

    import hsrgeom

    cg = ctypes.CDLL(args.helper)
    cg.cg_stop.argtypes = [ctypes.c_char_p]
    hsrgeom.set_num_threads(1)
    rng = np.random.default_rng(7)
    d = args.d
    x = rng.standard_normal((args.n, d)).astype(np.float32)
    index = eval(STRUCTURES[args.structure][0])  # noqa: S307 (fixed table above)
    values = rng.standard_normal((args.n, 4)).astype(np.float32)
    normals = rng.standard_normal((64, d)).astype(np.float32)
    proj = x.astype(np.float64) @ normals.astype(np.float64).T
    for k in (100, 1000):
        offsets = np.array([np.sort(proj[:, j])[-k] for j in range(64)])
        calls = {
            "report_sorted": lambda: index.report(normals, offsets),
            "report_unsorted": lambda: index.report(normals, offsets, return_sorted=False),
            "count": lambda: index.count(normals, offsets),
            "empty": lambda: index.empty(normals, offsets),
            "topk": lambda: index.topk(normals, k),
            "sum": lambda: index.sum(normals, offsets, values, power=1),
        }
        for op in OPS:
            calls[op]()  # warm-up (allocator, arena hints, code paths)
            label = f"{op}@{k}"
            cg.cg_start()
            calls[op]()
            cg.cg_stop(label.encode())



def parse_dumps(directory):
    """label -> Ir of the callgrind dumps in directory."""
    res = {}
    for name in os.listdir(directory):
        if not name.startswith("cg."):
            continue
        text = open(os.path.join(directory, name), errors="replace").read()
        m = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
        t = re.search(r"^totals: (\d+)", text, re.M)
        if m and t:
            res[m.group(1)] = int(t.group(1))
    return res


def env_for(path):
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_pair(pythons, paths, helper, structure, d, n):
    """Runs the worker under callgrind for each python at once; returns their label -> Ir."""
    tmps = [tempfile.mkdtemp(prefix="cg_") for _ in pythons]
    procs = []
    for python, path, tmp in zip(pythons, paths, tmps):
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=yes",
               f"--callgrind-out-file={tmp}/cg.%p", python, os.path.abspath(__file__), "--worker",
               "--helper", helper, "--structure", structure, "--d", str(d), "--n", str(n)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_for(path)))
    out = []
    for proc, tmp in zip(procs, tmps):
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"worker failed ({proc.returncode}): {err.decode()[-2000:]}")
        out.append(parse_dumps(tmp))
        shutil.rmtree(tmp)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", default="/work/venv-base/bin/python", help="python of install A (before)")
    p.add_argument("--b", default=sys.executable, help="python of install B (after)")
    p.add_argument("--a-path", help="prepended to PYTHONPATH for A (an install made with --target)")
    p.add_argument("--b-path", help="prepended to PYTHONPATH for B")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--only", nargs="*", help="structures to run (default: all)")
    p.add_argument("--dims", nargs="*", type=int, help="dimensions to run (default: each structure's)")
    p.add_argument("--json", help="write the raw counts here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--helper", help=argparse.SUPPRESS)
    p.add_argument("--structure", help=argparse.SUPPRESS)
    p.add_argument("--d", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    tmp = tempfile.mkdtemp(prefix="callgrind_ab_")
    helper = os.path.join(tmp, "cghelper.so")
    src = os.path.join(tmp, "cghelper.c")
    open(src, "w").write(HELPER_C)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", helper, src], check=True)
    rows = []
    for label, python, path in (("A", args.a, args.a_path), ("B", args.b, args.b_path)):
        where = subprocess.run([python, "-c", "import hsrgeom; print(hsrgeom.__file__)"], env=env_for(path),
                               capture_output=True, text=True, check=True).stdout.strip()
        print(f"{label}: {python} -> {where}")
    print(f"n = {args.n}, 64 float32 queries, 1 thread")
    print(f"{'structure':<24}{'d':>2}  {'op@k':<20}{'Ir A':>14}{'Ir B':>14}{'B/A':>7}")
    for name, (_, dims) in STRUCTURES.items():
        if args.only and name not in args.only:
            continue
        for d in dims:
            if args.dims and d not in args.dims:
                continue
            t0 = time.time()
            a, b = run_pair([args.a, args.b], [args.a_path, args.b_path], helper, name, d, args.n)
            for label in sorted(set(a) | set(b), key=lambda s: (int(s.split("@")[1]), OPS.index(s.split("@")[0]))):
                ia, ib = a.get(label), b.get(label)
                ratio = f"{ib / ia:7.3f}" if ia and ib else "      -"
                print(f"{name:<24}{d:>2}  {label:<20}{ia or 0:>14,}{ib or 0:>14,}{ratio}", flush=True)
                rows.append({"structure": name, "d": d, "op": label, "ir_a": ia, "ir_b": ib})
            print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
