"""fastnn's own float32 GEMM (src_cython/gemm.h, fastnn._gemm): every kernel level against a
float64 NumPy reference, the few-rows path against the tiled one, and the layers' thread-count
bit-identity with each kernel."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import _config, _gemm
from fastnn.layers import Conv2D, Dense

# every level; a level the CPU cannot run falls back to the best one it can (still tested)
KERNELS = ["generic", "avx2", "avx512", "blas"]

SHAPES = [  # (M, N, K): edges of the 12 x 32 / 6 x 16 / 4 x 16 tiles, KC = 128 slices, few rows
    (1, 1, 1), (1, 10, 784), (3, 256, 784), (5, 70, 300), (11, 33, 129), (12, 32, 128),
    (13, 65, 257), (37, 17, 3), (130, 64, 576), (200, 1100, 40),
]


@pytest.fixture(params=KERNELS)
def kernel(request):
    name = _config.set_gemm_kernel(request.param)
    yield name
    _config.set_gemm_kernel(None)


def _operands(rng, M, N, K, trans_a, trans_b, dtype=np.float32):
    A = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    return A, B


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_matches_float64_reference(kernel, M, N, K, trans_a, trans_b):
    rng = np.random.default_rng(M * 1000 + N + K)
    A, B = _operands(rng, M, N, K, trans_a, trans_b)
    opA = (A.T if trans_a else A).astype(np.float64)
    opB = (B.T if trans_b else B).astype(np.float64)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    for accumulate in (False, True):
        C = C0.copy()
        _gemm.gemm(A, B, C, trans_a, trans_b, accumulate)
        ref = opA @ opB + (C0 if accumulate else 0)
        # float32 rounding of sums of K products: |error| <= ~K eps sum |a b|
        bound = 4 * max(K, 1) * np.finfo(np.float32).eps * (np.abs(opA) @ np.abs(opB) + 1)
        assert np.all(np.abs(C - ref) <= bound), (kernel, M, N, K, accumulate)


def test_gemm_zero_inner_dimension(kernel):
    A = np.zeros((4, 0), np.float32)
    B = np.zeros((0, 5), np.float32)
    C = np.ones((4, 5), np.float32)
    _gemm.gemm(A, B, C, False, False, True)
    assert np.all(C == 1)
    _gemm.gemm(A, B, C, False, False, False)
    assert np.all(C == 0)


def test_gemm_float64_runs_blas():
    rng = np.random.default_rng(1)
    A, B = _operands(rng, 7, 9, 11, False, True, np.float64)
    C = np.empty((7, 9))
    _gemm.gemm(A, B, C, False, True, False)
    np.testing.assert_allclose(C, A @ B.T, rtol=1e-12)


def test_gemm_shape_mismatch_raises():
    with pytest.raises(ValueError, match="op\\(A\\)"):
        _gemm.gemm(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32),
                   np.ones((2, 5), np.float32), False, False, False)


@pytest.mark.parametrize("K", [5, 300])
def test_a_row_does_not_depend_on_the_number_of_rows(kernel, K):
    """Each C element is summed in the same order with the same operations in the few-rows path,
    the full tiles and the edge tiles: row i of a GEMM equals the same row computed alone."""
    rng = np.random.default_rng(K)
    A = rng.standard_normal((29, K)).astype(np.float32)
    B = rng.standard_normal((K, 77)).astype(np.float32)
    full = np.empty((29, 77), np.float32)
    _gemm.gemm(A, B, full, False, False, False)
    for i in (0, 3, 11, 12, 28):
        row = np.empty((1, 77), np.float32)
        _gemm.gemm(A[i:i + 1], B, row, False, False, False)
        if kernel == "blas":  # the system BLAS promises nothing here
            np.testing.assert_allclose(row[0], full[i], rtol=1e-5, atol=1e-5)
        else:
            assert np.array_equal(row[0], full[i]), (kernel, i)


def test_set_gemm_kernel_rejects_unknown_names():
    with pytest.raises(ValueError, match="gemm kernel"):
        _config.set_gemm_kernel("sse9")


def test_show_config_names_the_kernel(capsys):
    fastnn.show_config()
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("gemm_kernel")]
    assert line and line[0].split()[1] in ("avx512", "avx2+blas", "blas", "avx2", "generic")


@pytest.mark.parametrize("make", [
    lambda: (Dense(300, 70, activation="relu"), (45, 300)),
    lambda: (Conv2D(6, 40, 3, stride=2, padding=1, activation="tanh"), (9, 15, 13, 6)),
])
def test_layers_bit_identical_across_threads_with_each_kernel(kernel, make):
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer, shape = make()
        layer.build(np.float32, np.random.default_rng(1))
        X = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        Y = layer.forward(X).copy()
        dX = layer.backward(np.random.default_rng(2).standard_normal(Y.shape).astype(np.float32))
        results.append((Y, dX.copy(), *(g.copy() for g in layer.grads.values())))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_fma_peak_is_measured():
    """The bench's FMA peak: a positive rate where AVX2 or AVX-512 exists, and the same order
    of magnitude twice (the chains are really run, not optimised away)."""
    a = _gemm.fma_peak_gflops(0.05)
    if _config.set_gemm_kernel("avx2") == "generic":  # no AVX2: nothing to measure
        assert a == 0.0
        return
    b = _gemm.fma_peak_gflops(0.05)
    assert 1.0 < a < 1e5 and 1.0 < b < 1e5
    assert 0.1 < a / b < 10


def test_env_avx2_blas_is_the_automatic_avx2_choice():
    """FASTNN_GEMM=avx2+blas (bench --avx2-blas) gives what an AVX2 CPU picks by itself."""
    code = "from fastnn import _gemm; print(_gemm.gemm_kernel())"
    env = dict(os.environ, FASTNN_GEMM="avx2+blas")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.strip()
    assert out in ("avx2+blas", "blas")  # "blas": a CPU without AVX2
