"""QuantizedScan's scan kernels (quantize.hpp block_dots: scalar, SSE2, AVX2, AVX-512, picked at
run time; HSRGEOM_SCAN_KERNEL forces a lower one when an index is built).

Every kernel must give the same exact int32 dot products, so the same candidates
(``stats.points_tested``) and the same ids as the exact reference, on random and adversarial
points (ties on the boundary, duplicates, zero rows, huge and tiny rows that cannot be coded), in
float32 and float64, for d around the 16-point block and coordinate-pair boundaries and n not a
multiple of 16.
"""
import numpy as np
import pytest

import hsrgeom

from exact_reference import report as exact_report

KERNELS = ["scalar", "sse2", "avx2", "avx512"]


def _build(monkeypatch, kernel, x):
    monkeypatch.setenv("HSRGEOM_SCAN_KERNEL", kernel)
    return hsrgeom.QuantizedScan(x)


def _want(x, a, b):
    return [exact_report(x, a[j], b[j]) for j in range(len(b))]


def _check(idx, want, a, b, threads):
    res = idx.report(a, b, n_threads=threads)
    tested = idx.stats.points_tested.copy()
    for j in range(len(b)):
        np.testing.assert_array_equal(res[j], want[j])
    np.testing.assert_array_equal(idx.count(a, b, n_threads=threads), res.counts)
    return tested


def _random_case(rng, n, d, dtype):
    x = rng.random((n, d)).astype(dtype)
    a = rng.standard_normal((6, d)).astype(dtype)
    proj = x.astype(np.float64) @ a.astype(np.float64).T
    b = np.array([np.quantile(proj[:, j], q) for j, q in enumerate([0.0, 0.3, 0.9, 0.99, 0.999, 1.0])])
    return x, a, b


def _tie_case(rng, n, d, dtype):
    # small multiples of 1/4 (exact in float32): many points exactly on each boundary, duplicates
    x = (rng.integers(-3, 4, size=(n, d)) * 0.25).astype(dtype)
    x[n // 2 :: 7] = x[1]
    x[5] = 0  # a zero row: codes exactly 0
    # huge and tiny rows (in float64 beyond [1e-290, 1e290]: uncodable, always candidates)
    x[9, 0] = 1e30 if dtype == np.float32 else 1e300
    x[10] = 1e-45 if dtype == np.float32 else 1e-300
    a = rng.integers(-3, 4, size=(6, d)).astype(dtype)
    a[0] = 0  # zero normal: everything inside when b <= 0
    b = rng.integers(-2, 3, size=6) * 0.25
    b[0] = 0.0
    return x, a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("d", [1, 2, 7, 16, 17, 33])
@pytest.mark.parametrize("case", [_random_case, _tie_case], ids=["random", "ties"])
def test_every_kernel_exact_and_identical(monkeypatch, dtype, d, case):
    rng = np.random.default_rng(d)
    x, a, b = case(rng, 1037, d, dtype)  # n = 64 blocks + 13: a padded last block
    x0 = x.copy()
    want = _want(x, a, b)
    assert 0 < sum(map(len, want)) < len(b) * len(x)
    tested = {}
    for kernel in KERNELS:
        idx = _build(monkeypatch, kernel, x)
        tested[kernel] = _check(idx, want, a, b, 1)
        _check(idx, want, a, b, 2)
    # same exact dots: the same candidates in every kernel (a lower kernel than the CPU runs is
    # the best one below it, so this compares every kernel this CPU has)
    for kernel in KERNELS[1:]:
        np.testing.assert_array_equal(tested[kernel], tested["scalar"])
    np.testing.assert_array_equal(x, x0)


def test_codes_filter(monkeypatch):
    # the codes rule out most points of a far half-space in every kernel (a kernel that returned
    # wrong dots would test too many points or miss some)
    rng = np.random.default_rng(3)
    x = rng.random((4099, 16)).astype(np.float32)
    a = rng.standard_normal((3, 16)).astype(np.float32)
    b = np.quantile(x.astype(np.float64) @ a.astype(np.float64).T, 0.99, axis=0)
    want = _want(x, a, b)
    for kernel in KERNELS:
        idx = _build(monkeypatch, kernel, x)
        tested = _check(idx, want, a, b, 1)
        assert np.all(tested < 0.1 * len(x))
        assert np.all(tested >= [len(w) for w in want])


def test_unknown_kernel_name_uses_the_best(monkeypatch):
    rng = np.random.default_rng(4)
    x, a, b = _random_case(rng, 300, 16, np.float64)
    idx = _build(monkeypatch, "no-such-isa", x)
    _check(idx, _want(x, a, b), a, b, 1)
