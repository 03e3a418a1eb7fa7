"""benchmarks/peers/run.py: the page writer on synthetic rows (summary per case and output size,
--from-json), the gap queries' exactness contract, and one tiny case through every method."""
import importlib.util
import json
import os

import numpy as np
import pytest

import exact_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("peers_run", os.path.join(ROOT, "benchmarks", "peers", "run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def _row(kind, d, target, method, threads, ms, reported, bad=0):
    return dict(kind=kind, d=d, target=target, method=method, threads=threads, build_s=0.5, ms=ms,
                bad_queries=bad, bad_ids=3 * bad, reported=reported, ns_per_id=ms * 1e6 / reported,
                x_auto=1.0, x_auto_1t=None, x_scan=1.0, unseparated=0)


def _rows():
    """Two cases, two output sizes each; times chosen so every summary cell is known."""
    rows = []
    for kind, d in (("uniform", 2), ("gaussian", 8)):
        for target, scale in ((100, 1.0), (1000, 4.0)):
            reported = target * 1.02
            r = lambda *a, **k: rows.append(_row(kind, d, target, *a, reported, **k))  # noqa: E731
            r("hsrgeom BruteForce", 2, 10.0 * scale)
            r("hsrgeom BruteForce", 1, 18.0 * scale)
            r("hsrgeom PartitionTree", 2, 0.5 * scale)
            r("hsrgeom PartitionTree", 1, 0.8 * scale)
            r("hsrgeom PartitionTree, unsorted ids", 1, 0.4 * scale)
            r("hsrgeom ConvexLayers", 2, 0.4 * scale if target == 1000 else 0.6)
            r("hsrgeom ConvexLayers", 1, 0.7 * scale)
            r("hsrgeom ConvexLayers, unsorted ids", 1, 0.3 * scale)
            # auto with 1 thread is faster than every structure: it must not count as "fastest"
            r("hsrgeom auto (partition_tree)", 2, 0.55 * scale)
            r("hsrgeom auto (partition_tree)", 1, 0.1 * scale)
            r("numpy scan (float32 BLAS)", 2, 12.0 * scale)
            r("faiss IndexFlatIP.range_search", 2, 0.45 * scale, bad=1 if kind == "gaussian" else 0)
            r("CGAL Kd_tree (unsorted handles)", 1, 1.2 * scale)
            r("CGAL Kd_tree + ids sorted", 1, 2.4 * scale)
    return rows


def _saved(rows, targets=(100, 1000)):
    return dict(n=10**5, targets=list(targets), elapsed_s=90.0, cmd="python benchmarks/peers/run.py --test",
                meta="Machine: test.", faiss_version="0.0", log=["line one", "line two"], rows=rows)


def test_summary_rows_per_case_and_output_size():
    s = run.summary_rows(_rows())
    assert [(x["kind"], x["d"], x["target"]) for x in s] == [
        ("uniform", 2, 100), ("uniform", 2, 1000), ("gaussian", 8, 100), ("gaussian", 8, 1000)]
    first, second = s[0], s[1]
    # one thread, unsorted: ConvexLayers (0.3) beats PartitionTree (0.4); CGAL 1.2
    assert first["unsorted"]["method"] == "ConvexLayers, unsorted ids"
    assert first["cgal_unsorted_ratio"] == pytest.approx(1.2 / 0.3)
    assert first["unsorted"]["ns"] == pytest.approx(0.3 * 1e6 / 102)
    # one thread, sorted: ConvexLayers 0.7 (auto's 0.1 is not a structure); CGAL + sort 2.4
    assert first["sorted"]["method"] == "ConvexLayers"
    assert first["cgal_sorted_ratio"] == pytest.approx(2.4 / 0.7)
    # 2 threads, sorted: PartitionTree 0.5 at k = 100, ConvexLayers 1.6 at k = 1000
    assert first["fastest"]["method"] == "PartitionTree"
    assert first["scan_ratio"] == pytest.approx(10.0 / 0.5)
    assert first["auto_ratio"] == pytest.approx(0.55 / 0.5)
    assert first["auto"]["kind"] == "partition_tree" and first["auto_is_fastest"]
    assert second["fastest"]["method"] == "ConvexLayers" and not second["auto_is_fastest"]
    assert second["auto_ratio"] == pytest.approx(2.2 / 1.6)
    assert s[2]["mismatches"] == 1 and first["mismatches"] == 0


def test_summary_without_cgal_leaves_cells_empty():
    rows = [r for r in _rows() if not r["method"].startswith("CGAL")]
    s = run.summary_rows(rows)[0]
    assert s["cgal_unsorted"] is None and s["cgal_unsorted_ratio"] is None
    assert s["unsorted"]["method"] == "ConvexLayers, unsorted ids"
    lines = run.summary(rows)
    table = [ln for ln in lines if ln.startswith("| uniform |")]
    assert len(table) == 2 and "|  |" in table[0]


def test_page_from_json(tmp_path):
    rows = _rows()
    saved_path = tmp_path / "rows.json"
    saved_path.write_text(json.dumps(_saved(rows)))
    out = tmp_path / "docs" / "peers_test.md"
    out.parent.mkdir()
    run.main(["--from-json", str(saved_path), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# hsrgeom and its peers at n = 100,000")
    assert "`python benchmarks/peers/run.py --test` — took 1.5 min" in text
    summary = text[text.index("## Summary"):text.index("## Every row")]
    assert len([ln for ln in summary.splitlines() if ln.startswith(("| uniform |", "| gaussian |"))]) == 4
    assert "| uniform | 2 | 1,000 | 1,020 |" in summary
    assert "| partition_tree (= fastest) | 1.1 (0.55 / 0.5 ms) |" in summary  # auto at k = 100
    assert "| partition_tree | 1.38 (2.2 / 1.6 ms) |" in summary  # k = 1000: ConvexLayers is faster
    every = text[text.index("## Every row"):text.index("## Exact sets")]
    assert len([ln for ln in every.splitlines() if ln.startswith(("| uniform |", "| gaussian |"))]) == len(rows)
    assert "| gaussian | 8 | 100 | faiss IndexFlatIP.range_search | 2 |" in every and "| 1 (3) |" in every
    assert "gaussian d=8 k=100: faiss IndexFlatIP.range_search" in text  # beats auto: listed
    assert "line two" in text[text.index("## Log"):]
    pytest.importorskip("matplotlib")
    img = tmp_path / "docs" / "img" / "peers_test.png"
    assert img.stat().st_size > 1000
    assert "![peers](img/peers_test.png)" in text


def test_plot_one_line_per_method(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    lines = []
    real = matplotlib.axes.Axes.plot

    def spy(self, xs, ys, style, **kw):
        lines.append((self.get_title(), kw["label"], style, list(xs)))
        return real(self, xs, ys, style, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    rows = _rows()
    run.plot(str(tmp_path / "img" / "p.png"), rows, 10**5)
    labels = {run.line_label(r) for r in rows}
    assert len(lines) == 2 * len(labels)  # two panels, every method in each
    for _title, label, style, xs in lines:
        assert style == ("-" if label.startswith("hsrgeom") else "--")
        assert xs == [102.0, 1020.0]  # increasing output size
    assert "hsrgeom auto 1t" in labels and "hsrgeom PartitionTree, unsorted ids 1t" in labels


def test_parse_arguments():
    assert run.parse_reported("100,1000") == [100, 1000]
    assert run.parse_cases("uniform:2, gaussian:3,low-rank:128") == [("uniform", 2), ("gaussian", 3), ("low-rank", 128)]
    for bad in ("", "0", "100,100", "1e3", "-5"):
        with pytest.raises(SystemExit, match="--reported"):
            run.parse_reported(bad)
    for bad in ("uniform", "normal:2", "uniform:x", "uniform:0"):
        with pytest.raises(SystemExit, match="--cases"):
            run.parse_cases(bad)
    assert ("gaussian", 8) in run.DEFAULT_CASES and ("clustered", 2) in run.DEFAULT_CASES
    assert {d for k, d in run.DEFAULT_CASES if k == "uniform"} == {2, 3, 4, 8, 16}


@pytest.mark.parametrize("k", [1, 7, 999, 1000, 2500, 5000])
def test_top_projections_merge_blocks(k):
    """The running top k over blocks equals the top k of all projections (ties included)."""
    rng = np.random.default_rng(k)
    x = (rng.integers(0, 50, (5000, 3)) / 7).astype(np.float32)
    a = rng.standard_normal((4, 3))
    full = -np.sort(-(x.astype(np.float64) @ a.T), axis=0)[:k]
    assert np.array_equal(run.top_projections(x, a, k, block=1000), full)


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "ties"])
def test_gap_queries_separate_float32(kind):
    """Offsets land in gaps wider than float32's error: numpy's float32 test, float64's and the
    exact answer agree, and each holds ~target points."""
    rng = np.random.default_rng(5)
    if kind == "ties":  # duplicates on a coarse grid: many equal projections
        x = (rng.integers(0, 8, (3000, 3)) / 8).astype(np.float32)
    else:
        x = run.make(kind, 3000, 3, rng)
    a, b, unsep, rel = run.gap_queries(x, 20, 60, rng)
    b32 = b.astype(np.float32)
    assert np.array_equal(b32.astype(np.float64), b)
    for j in range(len(a)):
        exact = ref.report(x, a[j].astype(np.float64), float(b[j]))
        assert np.array_equal(np.flatnonzero(x @ a[j] >= b32[j]), exact)
        assert np.array_equal(np.flatnonzero(x.astype(np.float64) @ a[j].astype(np.float64) >= b[j]), exact)
        if kind != "ties":
            assert 0.7 * 60 <= len(exact) <= 1.3 * 60
    if kind != "ties":
        assert unsep == 0 and rel > 1


def test_run_case_every_method_exact(tmp_path, monkeypatch):
    """One small case at two output sizes, without CGAL: every method's sets equal BruteForce's,
    auto is built per size, the structures once."""
    pytest.importorskip("faiss")
    monkeypatch.setattr(run, "timed", lambda f, **kw: (1e-3, f()))
    built = []
    real = run.structures_for
    monkeypatch.setattr(run, "structures_for", lambda d: [(nm, lambda x, c=c, nm=nm: built.append(nm) or c(x))
                                                          for nm, c in real(d)])
    logs = []
    rows = run.run_case("gaussian", 3, 4000, [20, 200], np.random.default_rng(1), None, str(tmp_path), logs.append)
    assert built == ["BruteForce", "PartitionTree", "ConvexLayers3", "ShallowCutting3", "ShallowCutting3(tiers)"]
    assert [r["target"] for r in rows] == sorted(r["target"] for r in rows)
    for target in (20, 200):
        rs = [r for r in rows if r["target"] == target]
        methods = {(r["method"].split(" (")[0], r["threads"]) for r in rs}
        assert ("hsrgeom auto", 2) in methods and ("hsrgeom auto", 1) in methods
        assert ("hsrgeom ConvexLayers3, unsorted ids", 1) in methods
        assert ("faiss IndexFlatIP.range_search", 2) in methods and ("numpy scan", 2) in methods
        assert all(r["bad_queries"] == 0 for r in rs), [r for r in rs if r["bad_queries"]]
        assert 0.7 * target <= rs[0]["reported"] <= 1.3 * target
    assert os.listdir(tmp_path) == []
    assert any("k=200" in s for s in logs)
    assert run.summary_rows(rows)[1]["target"] == 200
