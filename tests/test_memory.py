"""Outputs that cannot fit in memory: a MemoryError, never a crash, and the index still works.

Each case runs in a child process whose address space is limited (resource.setrlimit) to its
current size plus a margin far below what the output needs."""
import os
import subprocess
import sys
import textwrap

import pytest

resource = pytest.importorskip("resource")
# AddressSanitizer's allocator aborts on an allocation it cannot serve (by design), so these
# cases cannot run under .ci/sanitizers' preloaded runtime
pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="AddressSanitizer aborts on out-of-memory instead of raising")

CHILD = textwrap.dedent(
    """
    import resource, numpy as np, hsrgeom
    pts = np.random.default_rng(0).random((100_000, 2))
    index = hsrgeom.{kind}(pts)
    a = np.tile([[1.0, 0.0]], (4000, 1))     # every query reports every point: 4 * 10^8 ids, 3.2 GB
    ref = index.count(a[:3], -1.0)
    usage = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (usage + (512 << 20), resource.RLIM_INFINITY))
    try:
        index.{call}
    except MemoryError:
        print("MemoryError")
    assert (index.count(a[:3], -1.0) == ref).all() and (ref == len(pts)).all()
    print("still works")
    """
)


@pytest.mark.parametrize("kind", ["BruteForce", "PartitionTree", "ConvexLayers"])
@pytest.mark.parametrize("call", ["report(a, -1.0)", "report(a, -1.0, return_scores=True, return_sorted=False)"])
def test_output_too_large_is_a_memory_error(kind, call):
    r = subprocess.run([sys.executable, "-c", CHILD.format(kind=kind, call=call)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["MemoryError", "still", "works"], r.stdout + r.stderr[-2000:]
