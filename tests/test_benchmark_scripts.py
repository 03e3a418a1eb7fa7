"""The A/B scripts that docs/performance.md's commands name still run and print what they say
(tiny sizes: seconds, not a benchmark)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "per_id.py"), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_per_id_kinds_with_parameters_hot_and_faults():
    out = run("--n", "5000", "--d", "2", "--k", "20,200", "--m", "8", "--hot", "--faults",
              "--kinds", "PartitionTree:leaf_size=32,PartitionTree:split=pca,ConvexLayers:table_layers=256")
    assert out.count("build ") == 3
    lines = [ln for ln in out.splitlines() if "ns per id: count" in ln]
    assert len(lines) == 6  # 3 kinds x 2 output sizes
    for ln in lines:
        assert re.search(r"nodes/query \d+ +faults/call \d+", ln), ln
        assert float(re.search(r"tested/reported ([0-9.]+)", ln).group(1)) >= 0
    assert out.count("hot (query 0 x 8)") == 6


def test_per_id_peers_data():
    out = run("--peers-data", "--n", "5000", "--d", "3", "--dists", "clustered", "--k", "50", "--m", "4",
              "--kinds", "ShallowCutting3:fine_depth=100:max_depth=1000:max_candidates=6n")
    assert "ShallowCutting3" in out and "k=    50" in out
