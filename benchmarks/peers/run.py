"""hsrgeom against its peers, side by side in one run, as ratios: numpy/BLAS scan, FAISS exact
range search, CGAL's kd-tree; every peer's id sets are checked against hsrgeom.BruteForce.
Every case is measured at one or more output sizes (points reported per query).

    pip install faiss-cpu matplotlib threadpoolctl        # into the venv that has hsrgeom
    apt-get install -y libcgal-dev                        # CGAL 5.x headers (Debian); optional
    python benchmarks/peers/run.py --reported 100,1000,10000
                                  # n = 10^6, the grid below: docs/peers.md, docs/img/peers.png
    python benchmarks/peers/run.py --n 10000000 --cases uniform:2,uniform:3 \
        --reported 100,1000,10000 --out docs/peers_1e7.md
    python benchmarks/peers/run.py --quick                # n = 10^5, fewer cases, prints only
    python benchmarks/peers/run.py --json rows.json ...   # also save every row
    python benchmarks/peers/run.py --from-json rows.json --out docs/peers.md
                                  # rewrite the page and its plot from saved rows, no measuring

Data (float32), --cases data:d,...: "uniform" points in [0, 1]^d; "gaussian" standard normal
points; "clustered" points (100 Gaussian clusters, sd 0.02, centres uniform in [0, 1]^d);
"low-rank" points (a 4-dimensional standard Gaussian embedded in R^d by a random orthonormal
basis, plus 1e-3 Gaussian noise: where geometry can win in high d). Default grid (issue 20):
uniform d in {2, 3, 4, 8, 16}, clustered and gaussian d in {2, 3, 8}; d = 32/128 and low-rank
only with --cases (e.g. uniform:128,low-rank:16,low-rank:128).

Output sizes, --reported k1,k2,...: each case's points are generated and its structures, FAISS
index and CGAL points file made ONCE; then every size k is asked with its own queries. auto is
built per size (build_index(kind="auto", output_size=k, batch_size=m): its choice depends on k).
Default: one size, 0.1 % of n.

Queries: m random unit normals a (float32; m = 200 at d <= 16, 50 above) with offsets b that leave
~k of the points inside. Each offset is placed in a *gap* of the exactly computed projections
<a, x> (ranks 0.7k..1.3k, the rank nearest k whose gap is wide enough) and rounded to a float32
value that keeps a margin on both sides larger than the worst-case float32 rounding error of a
(d+1)-term dot product (gamma_{d+1} (||a||_1 max|x| + |b|)). So every point is unambiguously
inside or outside: float32 peers (numpy, FAISS) and CGAL's double-precision test must return
exactly the sets hsrgeom returns (hsrgeom is exact for any offset). This changes which queries
are asked, not how long they take. Offsets whose window holds no wide-enough gap are counted and
reported ("unseparated"); mismatches are reported, never hidden.

Peers:
  numpy     `X[blk] @ A.T >= b` in float32 blocks of 65536 points (BLAS sgemm, 2 threads).
  FAISS     IndexFlatIP.range_search keeps ids with <q, y> > radius, *strictly* (checked on
            faiss-cpu 1.15.1 with an exact tie), and takes one radius per batch, so each
            half-space is lifted: q = (a, -b), y = (x, 1), radius 0. With the gap margins above,
            > versus >= cannot matter. faiss.omp_set_num_threads(2).
  CGAL      benchmarks/peers/cgal_halfspace.cpp: CGAL::Kd_tree with a half-space FuzzyQueryItem,
            points passed as float64 (the float32 values, exactly), d <= 16 only; one points file
            per case, one program call (tree build + queries) per output size. CGAL's search is
            single-threaded, so every hsrgeom method is also timed with n_threads=1 at d <= 16 for
            per-core ratios. Two CGAL rows: the search alone (output: point handles in tree order,
            CGAL's contract) and the search plus int64 ids in ascending order (hsrgeom's and FAISS's
            contract); both timed inside the C++ program, no Python or I/O in the time.
            The binary is compiled on first use into benchmarks/peers/build/ (git-ignored).
  hsrgeom   BruteForce (the blocked scan), PartitionTree, PartitionTree(split="pca") for d >= 8,
            QuantizedScan for d >= 8, ConvexLayers (default and 256-level table) at d = 2,
            ConvexLayers3 and ShallowCutting3 (default and tiers) at d = 3,
            build_index(kind="auto", batch_size=m, output_size=k); 2 threads unless marked 1.
            Every structure but BruteForce also with return_sorted=False
            ("unsorted ids": ids in the structure's order, like CGAL's handles): 2 and 1 threads at
            d <= 3, 1 thread at 4 <= d <= 16.

Time per query = best batch time / m (best of 3, fewer when a batch takes > 10 s in all, more
-- up to 50 -- while the calls took < 0.25 s in all). hsrgeom's times include the Python call.
ns per id = time per query / mean reported per query.

The page (--out, default docs/peers.md; the plot in docs/img/<page>.png): a summary with one row
per (case, output size): ns per reported id at one thread for the fastest hsrgeom structure,
unsorted and sorted; CGAL's time / it on the same contract (unsorted handles; handles + sort);
the scan (BruteForce) / the fastest structure; auto's choice and auto / the fastest structure
(sorted ids, 2 threads; the two timed alternately, see `paired`). Then every row (ratios to auto
with 2 threads, "x auto"; to auto with 1 thread for single-threaded rows, "x auto 1t"; to the
scan, "x scan"), the exactness notes, the log, and per case a log-log panel of time per query against output size, one line per method
(hsrgeom solid, peers dashed). --json saves the rows (and the page's header data); --from-json
rewrites the page and plot from such a file without measuring.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import hsrgeom

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CGAL_SRC = os.path.join(HERE, "cgal_halfspace.cpp")
CGAL_BIN = os.path.join(HERE, "build", "cgal_halfspace")
CGAL_CMD = ["g++", "-O2", "-std=c++17", "-DNDEBUG", "-DCGAL_NDEBUG", CGAL_SRC, "-o", CGAL_BIN, "-lgmp", "-lmpfr"]
CGAL_MAX_D = 16
THREADS = 2
U32 = 2.0**-24
U64 = 2.0**-53
KINDS = ("uniform", "gaussian", "clustered", "low-rank")
#: the peers grid of issue 20
DEFAULT_CASES = ([("uniform", d) for d in (2, 3, 4, 8, 16)] + [("clustered", d) for d in (2, 3, 8)]
                 + [("gaussian", d) for d in (2, 3, 8)])


def gamma(k, u):
    return k * u / (1 - k * u)


# ---------------------------------------------------------------------------------------- data
def make(kind, n, d, rng):
    if kind == "uniform":
        return rng.random((n, d), dtype=np.float32)
    if kind == "gaussian":
        return rng.standard_normal((n, d), dtype=np.float32)
    if kind == "clustered":  # 100 Gaussian clusters (sd 0.02) with centres uniform in [0, 1]^d
        centres = rng.random((100, d))
        x = centres[rng.integers(0, 100, n)] + 0.02 * rng.standard_normal((n, d))
        return x.astype(np.float32)
    if kind == "low-rank":
        basis = np.linalg.qr(rng.standard_normal((d, 4)))[0].T
        x = rng.standard_normal((n, 4)) @ basis + 1e-3 * rng.standard_normal((n, d))
        return x.astype(np.float32)
    raise ValueError(kind)


def top_projections(x, a64, k, block=131072):
    """For each query column, the k largest values of x @ a (float64, from the float32 values).
    A running top k is merged with each block: memory (k + block) x m, whatever n."""
    top = None
    for s in range(0, len(x), block):
        p = x[s : s + block].astype(np.float64) @ a64.T
        if top is not None:
            p = np.concatenate([top, p])
        kk = min(k, len(p))
        top = -np.partition(-p, kk - 1, axis=0)[:kk]
    return -np.sort(-top, axis=0)[:k]  # (k, m), descending per column


def gap_queries(x, m, target, rng):
    """Unit normals (float32) and float32-valued offsets placed in wide gaps of the projections."""
    n, d = x.shape
    a = rng.standard_normal((m, d))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    a = a.astype(np.float32)
    a64 = a.astype(np.float64)
    lo, hi = max(1, int(0.7 * target)), min(n - 1, int(np.ceil(1.3 * target)))
    v = top_projections(x, a64, hi + 1)
    s = np.abs(a64).sum(axis=1) * float(np.abs(x).max())  # >= sum_i |a_i x_i| for every point
    b = np.empty(m)
    unseparated = 0
    min_rel_margin = np.inf
    for j in range(m):
        above, below = v[lo - 1 : hi, j], v[lo : hi + 1, j]  # rank r: v[r-1] inside, v[r] outside
        ranks = np.arange(lo, hi + 1)
        mid = np.float32((above + below) / 2).astype(np.float64)
        margin = 1.01 * (gamma(d + 1, U32) * (s[j] + np.abs(mid)) + gamma(d + 1, U64) * s[j])
        ok = (above - mid > margin) & (mid - below > margin)
        if ok.any():
            cand = np.flatnonzero(ok)
            pick = cand[np.argmin(np.abs(ranks[cand] - target))]
        else:
            unseparated += 1
            pick = int(np.argmax(above - below))
        b[j] = mid[pick]
        min_rel_margin = min(min_rel_margin, min(above[pick] - mid[pick], mid[pick] - below[pick]) / margin[pick])
    return a, b, unseparated, min_rel_margin


# ------------------------------------------------------------------------------------- peers
def numpy_scan(x, a, b32, block=65536):
    parts = [[] for _ in range(len(a))]
    at = np.ascontiguousarray(a.T)
    for s in range(0, len(x), block):
        hit = (x[s : s + block] @ at) >= b32
        rows, cols = np.nonzero(hit.T)  # rows: query, ascending ids within each query
        cuts = np.searchsorted(rows, np.arange(len(a) + 1))
        for j in range(len(a)):
            parts[j].append(cols[cuts[j] : cuts[j + 1]] + s)
    return [np.concatenate(p) for p in parts]


def faiss_index(x):
    import faiss

    ix = faiss.IndexFlatIP(x.shape[1] + 1)
    ix.add(np.hstack([x, np.ones((len(x), 1), np.float32)]))
    return ix


def faiss_query(ix, a, b):
    q = np.ascontiguousarray(np.hstack([a, -b[:, None].astype(np.float32)]))
    return ix.range_search(q, 0.0)  # keeps <q, y> > 0, i.e. <a, x> - b > 0 (float32)


def faiss_sets(res, m):
    lims, _, ids = res
    return [np.sort(ids[lims[j] : lims[j + 1]]) for j in range(m)]


def ensure_cgal():
    """Path of the compiled CGAL program, or (None, reason)."""
    if not os.path.exists("/usr/include/CGAL/Kd_tree.h"):
        return None, "CGAL headers not found (apt-get install libcgal-dev)"
    if not os.path.exists(CGAL_BIN) or os.path.getmtime(CGAL_BIN) < os.path.getmtime(CGAL_SRC):
        os.makedirs(os.path.dirname(CGAL_BIN), exist_ok=True)
        print("compiling:", " ".join(CGAL_CMD), flush=True)
        r = subprocess.run(CGAL_CMD, capture_output=True, text=True)
        if r.returncode != 0:
            return None, "compile failed: " + r.stderr[-2000:]
    return CGAL_BIN, ""


# ----------------------------------------------------------------------------------- helpers
def timed(f, repeat=3, budget=10.0, fast=0.25, most=50):
    """Best time of f() over `repeat` calls (fewer past `budget` s in all; more, up to `most`,
    while all calls together took under `fast` s: sub-millisecond batches are noisy)."""
    best, total, out, k = np.inf, 0.0, None, 0
    while k < repeat or (total < fast and k < most):
        t = time.perf_counter()
        out = f()
        dt = time.perf_counter() - t
        best, total, k = min(best, dt), total + dt, k + 1
        if total > budget:
            break
    return best, out


def paired(f, g, rounds=5):
    """Best times of f() and of g() (`timed` each), alternately for `rounds` rounds: the ratio of
    two methods timed minutes apart also carries the machine's drift in between (session 40:
    auto / fastest 1.4-2.7 for the very structure auto had built, ~1.0 timed alternately)."""
    bf = bg = np.inf
    for _ in range(rounds):
        bf = min(bf, timed(f)[0])
        bg = min(bg, timed(g)[0])
    return bf, bg


def compare(sets, ref):
    """(number of queries whose set differs, size of the symmetric differences summed)."""
    bad, ids = 0, 0
    for s, r in zip(sets, ref):
        if not np.array_equal(s, r):
            bad += 1
            ids += len(np.setxor1d(s, r))
    return bad, ids


def cgal_write_points(x, path):
    """The points file of cgal_halfspace (written once per case, read by one call per output size)."""
    with open(path, "wb") as f:
        np.array(x.shape, np.int64).tofile(f)
        for s in range(0, len(x), 262144):
            x[s : s + 262144].astype(np.float64).tofile(f)


def cgal_run(binary, pts, a, b, tmp):
    qry, out = (os.path.join(tmp, f) for f in ("queries.bin", "ids.bin"))
    with open(qry, "wb") as f:
        np.array(a.shape, np.int64).tofile(f)
        a.astype(np.float64).tofile(f)
        b.astype(np.float64).tofile(f)
    r = subprocess.run([binary, pts, qry, out, "3", "10"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("cgal_halfspace failed: " + r.stderr[-2000:])
    info = json.loads(r.stdout)
    raw = np.fromfile(out, np.int64)
    os.remove(out)
    sets, pos = [], 0
    for _ in range(len(a)):
        c = int(raw[pos])
        sets.append(raw[pos + 1 : pos + 1 + c])
        pos += 1 + c
    return info, sets


def structures_for(d):
    """(method name, builder) of the hsrgeom structures asked in dimension d, BruteForce first."""
    out = [("BruteForce", hsrgeom.BruteForce), ("PartitionTree", hsrgeom.PartitionTree)]
    if d >= 8:
        out.append(("QuantizedScan", hsrgeom.QuantizedScan))
    if d >= 8:
        out.append(("PartitionTree(pca)", lambda x: hsrgeom.PartitionTree(x, split="pca")))
    if d == 2:
        out += [("ConvexLayers", hsrgeom.ConvexLayers),
                # the 256-level table: what auto builds for outputs above 500 points (above
                # 2*10^6 points peeling only its 257 layers)
                ("ConvexLayers(256)", lambda x: hsrgeom.ConvexLayers(x, **hsrgeom._auto._layers_params(len(x), 1000)))]
    if d == 3:
        out += [("ConvexLayers3", hsrgeom.ConvexLayers3), ("ShallowCutting3", hsrgeom.ShallowCutting3),
                # tiers (docs/cuttings.md): what auto builds for outputs of 445-3000 points (here
                # for 1,000: max_depth 12,000)
                ("ShallowCutting3(tiers)", lambda x: hsrgeom.ShallowCutting3(
                    x, **hsrgeom._auto._deep_cutting_params(len(x), 1000)))]
    return out


def run_case(kind, d, n, targets, rng, cgal_bin, tmp, log):
    """Every method on one (data, d) case at every output size of `targets`: the points, the
    structures, FAISS's index and CGAL's points file are made once; the queries (and auto, whose
    choice depends on the output size) once per size. Returns the rows, grouped by size."""
    x = make(kind, n, d, rng)
    m = 200 if d <= 16 else 50
    one_thread = d <= CGAL_MAX_D  # per-core rows, CGAL's contract (its search is single-threaded)
    queries = {}
    for target in targets:
        a, b, unsep, rel = gap_queries(x, m, target, rng)
        b32 = b.astype(np.float32)
        assert np.array_equal(b32.astype(np.float64), b)
        queries[target] = (a, b, b32, unsep, rel)
    rows, ref = [], {}

    def add(target, method, threads, build_s, t, sets):
        if target not in ref:  # BruteForce comes first: the reference of this size
            ref[target] = sets
        bad, ids = compare(sets, ref[target])
        rows.append(dict(kind=kind, d=d, target=target, method=method, threads=threads, build_s=build_s,
                         ms=t / m * 1e3, bad_queries=bad, bad_ids=ids))

    def build(f):
        t = time.perf_counter()
        obj = f()
        return time.perf_counter() - t, obj

    def ask(target, name, index, tb, unsorted):
        a, b = queries[target][:2]
        t, res = timed(lambda: index.report(a, b))
        add(target, f"hsrgeom {name}", THREADS, tb, t, res.split())
        if one_thread:
            t, res = timed(lambda: index.report(a, b, n_threads=1))
            add(target, f"hsrgeom {name}", 1, tb, t, res.split())
        for th in ((THREADS, 1) if d <= 3 else (1,) if one_thread else ()) if unsorted else ():
            t, res = timed(lambda: index.report(a, b, n_threads=th, return_sorted=False))
            add(target, f"hsrgeom {name}, unsorted ids", th, tb, t, [np.sort(s) for s in res.split()])

    fastest = {}  # per size: (ms, name, index) of the fastest structure, sorted ids, THREADS threads
    for name, cls in structures_for(d):
        tb, index = build(lambda: cls(x))
        for target in targets:
            # unsorted ids (like CGAL's handles: the structure's order) for all but the reference
            ask(target, name, index, tb, name != "BruteForce")
            ms = next(r["ms"] for r in rows
                      if (r["target"], r["method"], r["threads"]) == (target, f"hsrgeom {name}", THREADS))
            if target not in fastest or ms < fastest[target][0]:
                fastest[target] = (ms, name, index)  # kept (until a faster one) for auto's paired timing
        del index
    for target in targets:
        a, b = queries[target][:2]
        tb, auto = build(lambda: hsrgeom.build_index(x, kind="auto", batch_size=m, output_size=target))
        log(f"{kind:9s} d={d:<4d} k={target:<7d} auto: {auto.reason}")  # why it chose (its probe's times)
        ask(target, f"auto ({auto.kind})", auto, tb, False)
        # auto against the fastest structure, timed alternately (summary's auto / fastest)
        _, fname, findex = fastest.pop(target)
        ta, tf = paired(lambda: auto.report(a, b), lambda: findex.report(a, b))
        row = next(r for r in rows if r["target"] == target and r["method"].startswith("hsrgeom auto")
                   and r["threads"] == THREADS)
        row.update(paired_method=fname, paired_ms=ta / m * 1e3, paired_fast_ms=tf / m * 1e3)
        del auto, findex
    for target in targets:
        a, b, b32 = queries[target][:3]
        t, sets = timed(lambda: numpy_scan(x, a, b32))
        add(target, "numpy scan (float32 BLAS)", THREADS, 0.0, t, sets)
    tb, fx = build(lambda: faiss_index(x))
    for target in targets:
        a, b = queries[target][:2]
        t, res = timed(lambda: faiss_query(fx, a, b))
        add(target, "faiss IndexFlatIP.range_search", THREADS, tb, t, faiss_sets(res, m))
        del res
    del fx
    if cgal_bin and d <= CGAL_MAX_D:
        pts = os.path.join(tmp, "points.bin")
        cgal_write_points(x, pts)
        for target in targets:
            a, b = queries[target][:2]
            info, sets = cgal_run(cgal_bin, pts, a, b, tmp)
            add(target, "CGAL Kd_tree (unsorted handles)", 1, info["build_s"], info["query_s"], sets)
            add(target, "CGAL Kd_tree + ids sorted", 1, info["build_s"], info["query_sorted_s"], sets)
        os.remove(pts)

    rows.sort(key=lambda r: targets.index(r["target"]))  # stable: methods in the order asked
    for target in targets:
        rs = [r for r in rows if r["target"] == target]
        unsep, rel = queries[target][3:]
        t_auto = {r["threads"]: r["ms"] for r in rs if r["method"].startswith("hsrgeom auto")}
        t_scan = next(r["ms"] for r in rs if r["method"] == "hsrgeom BruteForce" and r["threads"] == THREADS)
        reported = float(np.mean([len(s) for s in ref[target]]))
        for r in rs:
            r["reported"] = reported
            r["ns_per_id"] = r["ms"] * 1e6 / reported if reported else None
            r["x_auto"] = r["ms"] / t_auto[THREADS]
            r["x_auto_1t"] = r["ms"] / t_auto[1] if r["threads"] == 1 and 1 in t_auto else None
            r["x_scan"] = r["ms"] / t_scan
            r["unseparated"] = unsep
            log(f"{kind:9s} d={d:<4d} k={target:<7d} {r['method']:34s} {r['threads']}t build {r['build_s']:6.2f} s "
                f"{r['ms']:9.4f} ms/query {fmt_ns(r['ns_per_id']):>7s} ns/id  x{r['x_auto']:7.2f} auto"
                + (f"  x{r['x_auto_1t']:7.2f} auto-1t" if r["x_auto_1t"] is not None else "")
                + f"  mismatching queries {r['bad_queries']} (ids {r['bad_ids']})")
        log(f"{kind:9s} d={d:<4d} k={target:<7d} m={m}, reported/query {reported:.0f}, offsets without a wide gap: "
            f"{unsep}, smallest gap margin / float32 error bound: {rel:.2f}")
    return rows


# ------------------------------------------------------------------------------------ output
def fmt_ratio(v):
    return "" if v is None else f"{v:.3g}"


def fmt_ns(v):
    return "" if v is None else f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def case_keys(rows):
    """(data, d, output size) in the order of the rows."""
    keys = []
    for r in rows:
        if (r["kind"], r["d"], r["target"]) not in keys:
            keys.append((r["kind"], r["d"], r["target"]))
    return keys


def is_structure(r):
    """An hsrgeom structure's row (auto excluded: it is one of them, built by a timed choice)."""
    return r["method"].startswith("hsrgeom") and not r["method"].startswith("hsrgeom auto")


def best(rs, pred):
    rs = [r for r in rs if pred(r)]
    return min(rs, key=lambda r: r["ms"]) if rs else None


def summary_rows(rows):
    """One dict per (data, d, output size): the per-id costs, the ratios to CGAL and to the scan,
    auto's choice against the fastest structure. Missing measurements are None."""
    out = []
    for kind, d, target in case_keys(rows):
        rs = [r for r in rows if (r["kind"], r["d"], r["target"]) == (kind, d, target)]
        s = dict(kind=kind, d=d, target=target, reported=rs[0]["reported"])
        for contract, unsorted, cgal in (("unsorted", True, "CGAL Kd_tree (unsorted handles)"),
                                         ("sorted", False, "CGAL Kd_tree + ids sorted")):
            h = best(rs, lambda r: is_structure(r) and r["threads"] == 1
                     and r["method"].endswith(", unsorted ids") == unsorted)
            c = next((r for r in rs if r["method"] == cgal), None)
            s[contract] = h and dict(method=h["method"][len("hsrgeom "):], ns=h["ns_per_id"], ms=h["ms"])
            s[f"cgal_{contract}"] = c and dict(ns=c["ns_per_id"], ms=c["ms"])
            s[f"cgal_{contract}_ratio"] = c["ms"] / h["ms"] if c and h else None
        fast = best(rs, lambda r: is_structure(r) and r["threads"] == THREADS and not r["method"].endswith("unsorted ids"))
        scan = next(r for r in rs if r["method"] == "hsrgeom BruteForce" and r["threads"] == THREADS)
        auto = next(r for r in rs if r["method"].startswith("hsrgeom auto") and r["threads"] == THREADS)
        s["fastest"] = dict(method=fast["method"][len("hsrgeom "):], ms=fast["ms"])
        s["scan_ratio"] = scan["ms"] / fast["ms"]
        s["auto"] = dict(kind=auto["method"][len("hsrgeom auto ("):-1], ms=auto["ms"])
        s["auto_ratio"] = auto["ms"] / fast["ms"]
        s["auto_fast_ms"] = fast["ms"]
        if "paired_ms" in auto:  # timed alternately with the fastest structure (rows of older runs: not)
            s["auto"]["ms"], s["auto_fast_ms"] = auto["paired_ms"], auto["paired_fast_ms"]
            s["auto_ratio"] = auto["paired_ms"] / auto["paired_fast_ms"]
        # the same structure (PartitionTree's kind is "partition_tree"): then the ratio is noise
        s["auto_is_fastest"] = s["auto"]["kind"].replace("_", "") == s["fastest"]["method"].lower()
        s["mismatches"] = sum(r["bad_queries"] for r in rs)
        out.append(s)
    return out


def summary(rows):
    """The summary table (one row per case and output size) and the places a peer beats auto."""
    out = ["## Summary", "",
           "Per case and output size (*k*: points asked per query; *reported*: the mean reported). "
           "**ns / id** = time per query / reported, one thread (`n_threads=1`), for the fastest hsrgeom "
           "structure on each contract: unsorted ids (the structure's order, like CGAL's handles) and ids sorted "
           "ascending (hsrgeom's default). **CGAL / hsrgeom** = CGAL's kd-tree time / that structure's time on the "
           "same contract (unsorted handles; handles + a sort into ascending ids): above 1 hsrgeom is faster. "
           "**scan / fastest** = `BruteForce` (the blocked scan) / the fastest structure, sorted ids, 2 threads. "
           "**auto / fastest** = `build_index(kind=\"auto\", output_size=k)` / the fastest structure, sorted ids, "
           "2 threads, the two timed alternately (5 rounds, best of each: timed minutes apart, as in the rows below, "
           "their ratio would also measure the machine's drift) (*= fastest*: auto built the fastest structure, so "
           "the ratio's distance from 1 is timing noise).", "",
           "| data | d | k | reported | unsorted ns / id (1t) | CGAL ns / id | CGAL / hsrgeom | sorted ns / id (1t) | "
           "CGAL + sort ns / id | CGAL + sort / hsrgeom | scan / fastest (2t) | auto's choice | auto / fastest (2t) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary_rows(rows):
        cells = []
        for contract in ("unsorted", "sorted"):
            h, c = s[contract], s[f"cgal_{contract}"]
            cells += [f"{fmt_ns(h['ns'])} ({h['method'].replace(', unsorted ids', '')})" if h else "",
                      fmt_ns(c["ns"]) if c else "", fmt_ratio(s[f"cgal_{contract}_ratio"])]
        out.append(f"| {s['kind']} | {s['d']} | {s['target']:,} | {s['reported']:,.0f} | " + " | ".join(cells)
                   + f" | {s['scan_ratio']:.3g} ({s['fastest']['method']}) | {s['auto']['kind']}"
                   f"{' (= fastest)' if s['auto_is_fastest'] else ''} | "
                   f"{s['auto_ratio']:.3g} ({s['auto']['ms']:.4g} / {s['auto_fast_ms']:.4g} ms) |")
    losses = []
    for kind, d, target in case_keys(rows):
        rs = [r for r in rows if (r["kind"], r["d"], r["target"]) == (kind, d, target)]
        auto = next(r for r in rs if r["method"].startswith("hsrgeom auto") and r["threads"] == THREADS)
        for r in rs:
            if not r["method"].startswith("hsrgeom") and r["ms"] < auto["ms"]:
                losses.append(f"- {kind} d={d} k={target:,}: {r['method']} ({r['threads']} "
                              f"thread{'s' if r['threads'] > 1 else ''}) {r['ms']:.4g} ms vs hsrgeom auto "
                              f"{auto['ms']:.4g} ms: hsrgeom auto is {auto['ms'] / r['ms']:.2f}x slower.")
    out += ["", "### Where a peer beats hsrgeom auto", "",
            "(auto returns sorted ids with 2 threads; a peer's unsorted or single-threaded answer is another "
            "contract: see the summary's one-thread columns for like-for-like ratios.)", ""]
    return out + (losses or ["- nowhere in this run."]) + [""]


def exactness_notes(faiss_version, unsep):
    return [
        "## Exact sets",
        "",
        "FAISS's `range_search` keeps `<q, y> > radius` (strict; checked with an exact tie on faiss-cpu "
        f"{faiss_version}) and takes one radius per batch, so the half-space `<a, x> >= b` is asked as "
        "`<(a, -b), (x, 1)> > 0`. numpy compares `x @ a >= b` in float32; CGAL's point test is `<a, x> >= b` "
        "in double. None of these is exact in general, so each offset `b` is a float32 value placed in a gap "
        "of the exactly computed projections with a margin on both sides larger than the worst-case float32 "
        "error of a (d+1)-term dot product; then strict versus non-strict and rounding cannot change any "
        f"answer, and every peer must return exactly hsrgeom's sets. Offsets without such a gap: {unsep} "
        "(of all queries in the run). Column *mismatch* shows what the check found. With offsets that are "
        "not separated like this, the float32 peers disagree with the exact answer on points within "
        "rounding distance of the boundary (a previous version of this benchmark counted 2–40 ids per "
        "batch); hsrgeom's answers are exact for any offset.",
        "",
    ]


def write(path, img, saved):
    """The markdown page of a run (`saved`: the dict `--json` writes): header, summary, every row,
    the exactness notes, the log, the plot."""
    rows, n = saved["rows"], saved["n"]
    sizes = ", ".join(f"{t:,}" for t in saved["targets"])
    unsep = sum(r["unseparated"] for r in rows if r["method"] == "hsrgeom BruteForce" and r["threads"] == THREADS)
    lines = [
        f"# hsrgeom and its peers at n = {n:,}" + (f" ({saved['build']})" if saved.get("build") else ""),
        "",
        "Measured side by side in one run by `benchmarks/peers/run.py` (its docstring has every detail).",
        "",
        f"Command: `{saved['cmd']}` — took {saved['elapsed_s'] / 60:.1f} min. {saved['meta']}",
        "",
        f"n = {n:,} float32 points; each query reports ~k of them, k = {sizes} (offsets at that rank for "
        "random unit normals, nudged into a gap of the projections so the answer does not depend on float "
        "rounding: see *Exact sets* below); batches of m = 200 queries (d <= 16) or 50 (d >= 32); ms / query "
        "= best batch time / m; ns / id = ms / query / reported per query. Every structure is built once per "
        "case and asked every k; auto is built per k (`output_size=k`: its choice depends on it).",
        "",
    ] + summary(rows) + [
        "## Every row",
        "",
        "**x auto** = time / time of `hsrgeom.build_index(kind=\"auto\", output_size=k)` with 2 threads (> 1: "
        "slower than hsrgeom). **x auto 1t** (single-threaded rows only) = time / time of the same auto index "
        "queried with `n_threads=1`, the per-core comparison for CGAL. **x scan** = time / time of "
        "`hsrgeom.BruteForce` (2 threads). *mismatch* = queries whose id set differs from `hsrgeom.BruteForce` "
        "(symmetric difference in ids). Build s: index construction (numpy: none; auto includes its timed probe "
        "of the candidates; CGAL: tree build in C++, single-threaded, once per k).",
        "",
        "| data | d | k | method | threads | build s | ms / query | ns / id | x auto | x auto 1t | x scan | "
        "mismatch (ids) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['d']} | {r['target']:,} | {r['method']} | {r['threads']} | "
                     f"{r['build_s']:.2f} | {r['ms']:.4g} | {fmt_ns(r['ns_per_id'])} | {r['x_auto']:.3g} | "
                     f"{fmt_ratio(r['x_auto_1t'])} | {r['x_scan']:.3g} | {r['bad_queries']} ({r['bad_ids']}) |")
    lines += [""] + exactness_notes(saved["faiss_version"], unsep) + ["## Log", "", "```", *saved["log"], "```", ""]
    if img:
        lines += [f"![peers]({os.path.relpath(img, os.path.dirname(os.path.abspath(path)))})", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def line_label(r):
    """A plot line: the method (auto without its choice, which may change with k), one thread marked."""
    method = "hsrgeom auto" if r["method"].startswith("hsrgeom auto") else r["method"]
    return method + (" 1t" if r["threads"] == 1 else "")


def line_base(r):
    """What a line's colour shows: the structure or peer, whatever the contract and threads."""
    method = line_label(r).removesuffix(" 1t").removesuffix(", unsorted ids")
    return "CGAL Kd_tree" if method.startswith("CGAL") else method


def plot(img, rows, n):
    """Per case a log-log panel of time per query against mean reported per query, one line per
    method: colour = structure or peer, solid = hsrgeom, dashed = peers, hollow markers = unsorted
    ids (CGAL's handles), squares and thin lines = one thread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases, methods, bases = [], [], []
    for r in rows:
        for seen, key in ((cases, (r["kind"], r["d"])), (methods, line_label(r)), (bases, line_base(r))):
            if key not in seen:
                seen.append(key)
    colours = [plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "goldenrod", "lime", "navy"]
    ncol = min(4, len(cases))
    nrow = (len(cases) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow + 1.6), squeeze=False)
    handles = {}
    for ax, (kind, d) in zip(axes.flat, cases):
        for meth in methods:
            rs = sorted((r for r in rows if (r["kind"], r["d"]) == (kind, d) and line_label(r) == meth),
                        key=lambda r: r["reported"])
            if not rs:
                continue
            colour = colours[bases.index(line_base(rs[0])) % len(colours)]
            unsorted = "unsorted" in rs[0]["method"]
            one = rs[0]["threads"] == 1
            (h,) = ax.plot([r["reported"] for r in rs], [r["ms"] for r in rs],
                           "-" if meth.startswith("hsrgeom") else "--", marker="s" if one else "o",
                           markersize=3.5, markerfacecolor="none" if unsorted else colour, color=colour,
                           linewidth=0.8 if one else 1.4, label=meth)
            handles.setdefault(meth, h)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{kind}, d = {d}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(which="both", alpha=0.25)
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("ms per query", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("points reported per query", fontsize=8)
    fig.suptitle(f"half-space reporting, n = {n:,}: time per query against output size (solid: hsrgeom, "
                 "dashed: peers; hollow: unsorted ids; squares, thin: one thread)", fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 1.4 / (3.0 * nrow + 1.6), 1, 0.97))
    os.makedirs(os.path.dirname(img), exist_ok=True)
    fig.savefig(img, dpi=100)
    plt.close(fig)


def page(out, saved):
    """Write the plot (docs/img/<page>.png, skipped without matplotlib) and the page."""
    img = os.path.join(os.path.dirname(os.path.abspath(out)), "img", f"{os.path.splitext(os.path.basename(out))[0]}.png")
    try:
        plot(img, saved["rows"], saved["n"])
    except ImportError:
        img = None
    write(out, img, saved)
    return img


def parse_cases(text):
    cases = []
    for c in text.split(","):
        kind, _, d = c.strip().partition(":")
        if kind not in KINDS or not d.isdigit() or int(d) < 1:
            raise SystemExit(f"--cases: {c!r} is not data:d with data one of {', '.join(KINDS)} and d >= 1")
        cases.append((kind, int(d)))
    return cases


def parse_reported(text):
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise SystemExit(f"--reported: {text!r} is not a comma list of distinct positive integers")
    return sizes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10**6)
    p.add_argument("--quick", action="store_true", help="n = 10^5, a few cases, prints only")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "peers.md"))
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--no-cgal", action="store_true")
    p.add_argument("--json", default=None, help="also save the rows as JSON here")
    p.add_argument("--from-json", default=None, metavar="FILE",
                   help="rewrite the page (--out) and its plot from rows saved by --json; measures nothing")
    p.add_argument("--reported", default=None,
                   help="points reported per query, a comma list, e.g. 100,1000,10000 (default: 0.1 %% of n)")
    p.add_argument("--build", default=None,
                   help="names the hsrgeom build measured, in the page's title (e.g. 'x86-64-v3 build'; "
                        "run with PYTHONPATH pointing at it)")
    p.add_argument("--cases", default=None,
                   help="comma-separated data:d pairs, e.g. uniform:2,gaussian:3 (default: the grid above)")
    args = p.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        if args.build:
            saved["build"] = args.build
        img = page(args.out, saved)
        print("wrote", args.out, img or "")
        return

    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(THREADS)
    hsrgeom.set_num_threads(THREADS)
    threadpool_limits(THREADS)
    n = 10**5 if args.quick else args.n
    cases = DEFAULT_CASES
    if args.quick:
        cases = [("uniform", 2), ("gaussian", 3), ("uniform", 16), ("low-rank", 16)]
    if args.cases:
        cases = parse_cases(args.cases)
    targets = parse_reported(args.reported) if args.reported else [max(1, round(1e-3 * n))]
    if max(targets) >= n:
        raise SystemExit(f"--reported: every size must be below n = {n}")
    cgal_bin, why = (None, "--no-cgal") if args.no_cgal else ensure_cgal()
    if not cgal_bin:
        print("CGAL skipped:", why)
    cgal_version = ""
    if cgal_bin:
        try:
            cgal_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libcgal-dev"],
                                          capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    load0 = os.getloadavg()
    rng = np.random.default_rng(0)
    rows, log_lines = [], []

    def log(s):
        print(s, flush=True)
        log_lines.append(s)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hsrgeom-peers-") as tmp:
        for kind, d in cases:
            rows += run_case(kind, d, n, targets, rng, cgal_bin, tmp, log)
    elapsed = time.perf_counter() - t0
    load1 = os.getloadavg()
    print(f"\ntotal {elapsed / 60:.1f} min; load average before {load0[0]:.2f}, after {load1[0]:.2f}")

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    meta = (f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"python {platform.python_version()}, numpy {np.__version__}, faiss-cpu {faiss.__version__}, "
            f"hsrgeom {hsrgeom.__version__}"
            + (f", CGAL {cgal_version} (Debian libcgal-dev, g++ -O2)" if cgal_bin else ", CGAL not run")
            + f"; {time.strftime('%Y-%m-%d')}; 1-min load average {load0[0]:.2f} before, {load1[0]:.2f} after.")
    # a build other than the installed one (e.g. an x86-64-v3 build, docs/attention.md) is named by
    # PYTHONPATH; HSRGEOM_SCAN_KERNEL forces a lower dot kernel (an AVX2 CPU's, on an AVX-512 one)
    env = [f"{k}={os.environ[k]}" for k in ("HSRGEOM_SCAN_KERNEL", "PYTHONPATH") if os.environ.get(k)]
    saved = dict(n=n, targets=targets, elapsed_s=elapsed, cmd=" ".join(env + ["python benchmarks/peers/run.py"] + sys.argv[1:]),
                 meta=meta, faiss_version=faiss.__version__, log=log_lines, rows=rows, build=args.build)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(saved, f, indent=1)
    if args.quick or args.no_write:
        for s in summary(rows):
            print(s)
        return
    img = page(args.out, saved)
    print("wrote", args.out, img or "")


if __name__ == "__main__":
    main()
