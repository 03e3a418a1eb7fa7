"""The C++ unit tests (cpp/tests/test_core.cpp): exact predicates, sort_ids, the top-k collector.

Configures CMakeLists.txt with HSRGEOM_BUILD_TESTS=ON and without the Python module, builds the
one target test_core into a temporary directory (a few seconds) and runs it, once per instruction
set the code has a path for that this CPU runs: the baseline (scalar), x86-64-v3 (AVX2 + FMA) and
-march=native (AVX-512 where the CPU has it), so that each vector path is checked against the
same exact answers. Eigen comes from the cmeel-eigen package, as for the wheel (the `test` extra
installs it). Skipped only when cmake or a C++ compiler is missing (a target only when the CPU
lacks it).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed: cannot build the C++ unit tests")
@pytest.mark.skipif(_compiler() is None, reason="no C++ compiler (CXX, c++, g++, clang++): cannot build C++ unit tests")
@pytest.mark.parametrize("march", ["", "x86-64-v3", "native"])
def test_cpp_core_units(tmp_path, march):
    if not (ROOT / "cpp" / "tests" / "test_core.cpp").exists():
        pytest.skip("not a source checkout (cpp/tests is missing)")
    if march == "x86-64-v3" and not {"avx2", "fma", "bmi2"} <= _cpu_flags():
        pytest.skip("this CPU does not run x86-64-v3 (AVX2 + FMA) code")
    build = tmp_path / "build"
    _run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            "-DHSRGEOM_BUILD_TESTS=ON",
            "-DHSRGEOM_BUILD_MODULE=OFF",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_CXX_COMPILER={_compiler()}",
            f"-DCMAKE_CXX_FLAGS={'-march=' + march if march else ''}",
        ]
    )
    _run(["cmake", "--build", str(build), "--target", "test_core"])
    proc = subprocess.run([str(build / "test_core")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout.splitlines()[-1], proc.stdout
