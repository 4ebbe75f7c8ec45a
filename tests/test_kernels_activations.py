"""Elementwise activation kernels (fastnn._activations) and the float32 polynomial exp of simd.h.

References are plain float64 NumPy written here. float64 kernels use libm (exp, tanh) and must
agree to ~1e-12; float32 sigmoid / tanh use a polynomial exp, and their measured errors are bounded
a little above what was measured (exhaustively over every float32 in the ranges named below;
sigmoid / tanh through the kernels' x86-64-v4 (AVX-512) clone, fast_expf through its test wrapper,
which is compiled for the x86-64 baseline):

    fast_expf, every float32 in [-87, 88]: max relative error 8.31e-8 (at x = -81.4432)
    sigmoid f32, every float32 in [-100, 100]: max abs error 8.93e-8, max rel error 1.48e-7
    tanh f32, every float32 in [-100, 100]: max abs error 9.0e-8, max rel error 3.73e-7
      (the relative error peaks just above |x| = 0.0625, where (1 - t) / (1 + t) cancels)
"""
import numpy as np
import pytest

from fastnn import _activations

from conftest import (IDENTITY, KERNEL_CODES, KERNEL_NAMES, LEAKY_RELU, RELU, SIGMOID, TANH,
                      act_forward, act_grad_from_output)

KINDS = list(KERNEL_CODES)  # every code of the kernels' list (simd.h)
KIND_IDS = [KERNEL_NAMES[k] for k in KINDS]
ALPHA = 0.1
DTYPES = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
LENGTHS = [1, 7, 64, 257, 13 * 33, 784 * 256, 100_003]

FLT_MIN = float(np.finfo(np.float32).tiny)
FLT_MAX = float(np.finfo(np.float32).max)

# measured bounds (see the module docstring), with some headroom
EXPF_REL_BOUND = 1.2e-7
SIGMOID_F32_ABS = 1.2e-7
SIGMOID_F32_REL = 2.0e-7
TANH_F32_ABS = 1.2e-7
TANH_F32_REL = 4.5e-7
F64_REL = 1e-15


def forward(Z, kind, nt=1, alpha=ALPHA):
    A = Z.copy()
    _activations.forward_inplace(A, kind, alpha, nt)
    return A


def fast_expf(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.full_like(x, np.nan)
    _activations.fast_expf(x, out)
    return out


def max_rel(actual, ref, floor=FLT_MIN):
    """Max relative error over elements whose reference is at least ``floor`` in magnitude."""
    actual = actual.astype(np.float64)
    mask = np.abs(ref) >= floor
    if not np.any(mask):
        return 0.0
    return float(np.max(np.abs(actual[mask] - ref[mask]) / np.abs(ref[mask])))


# ---------------------------------------------------------------- forward / backward vs NumPy
@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_forward_matches_numpy(dtype, n, kind, nt):
    rng = np.random.default_rng([n, kind])
    Z = (3 * rng.standard_normal(n)).astype(dtype)
    A = forward(Z, kind, nt)
    # alpha is used in the kernel's precision
    alpha = float(np.asarray(ALPHA, dtype=dtype))
    ref = act_forward(Z, kind, alpha)
    assert A.dtype == dtype
    if kind in (IDENTITY, RELU, LEAKY_RELU):
        # one correctly rounded multiplication at most: exact
        assert np.array_equal(A, ref.astype(dtype))
    elif dtype == np.float64:
        np.testing.assert_allclose(A, ref, rtol=F64_REL * 4, atol=0)
    else:
        abs_bound, rel_bound = (SIGMOID_F32_ABS, SIGMOID_F32_REL) if kind == SIGMOID else \
            (TANH_F32_ABS, TANH_F32_REL)
        assert np.max(np.abs(A - ref)) <= abs_bound
        assert max_rel(A, ref) <= rel_bound


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_backward_matches_numpy(dtype, n, kind, nt):
    rng = np.random.default_rng([n, kind, 1])
    A = act_forward(3 * rng.standard_normal(n), kind, ALPHA).astype(dtype)
    dA = rng.standard_normal(n).astype(dtype)
    dZ = np.full_like(A, np.nan)
    _activations.backward(A, dA, dZ, kind, ALPHA, nt)
    alpha = float(np.asarray(ALPHA, dtype=dtype))
    ref = dA.astype(np.float64) * act_grad_from_output(A, kind, alpha)
    assert dZ.dtype == dtype
    assert np.all(np.abs(dZ - ref) <= RTOL[dtype] * np.abs(dA.astype(np.float64)))
    if kind in (IDENTITY, RELU):
        assert np.array_equal(dZ, ref.astype(dtype))

    # in place: dZ is dA itself
    buf = dA.copy()
    _activations.backward(A, buf, buf, kind, ALPHA, nt)
    assert np.array_equal(buf, dZ)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_bit_identical_across_threads(dtype, kind):
    n = 3 * (1 << 15) + 17
    rng = np.random.default_rng(kind)
    Z = (3 * rng.standard_normal(n)).astype(dtype)
    dA = rng.standard_normal(n).astype(dtype)
    outs = []
    for nt in (1, 2, 3):
        A = forward(Z, kind, nt)
        dZ = np.empty_like(A)
        _activations.backward(A, dA, dZ, kind, ALPHA, nt)
        outs.append((A, dZ))
    for A, dZ in outs[1:]:
        assert np.array_equal(outs[0][0], A) and np.array_equal(outs[0][1], dZ)


# ---------------------------------------------------------------- float32 sigmoid / tanh accuracy
def dense_grid(lo, hi, n):
    return np.linspace(lo, hi, n, dtype=np.float32)


@pytest.mark.parametrize("kind", [SIGMOID, TANH], ids=["sigmoid", "tanh"])
def test_f32_sigmoid_tanh_error_bound_on_dense_grid(kind):
    abs_bound, rel_bound = (SIGMOID_F32_ABS, SIGMOID_F32_REL) if kind == SIGMOID else \
        (TANH_F32_ABS, TANH_F32_REL)
    # a fine grid near 0 (the tanh series/exp switch at |x| = 0.0625) and a wide one
    Z = np.concatenate([dense_grid(-100, 100, 1_000_001), dense_grid(-1, 1, 1_000_001),
                        dense_grid(0.06, 0.07, 100_001), dense_grid(-0.07, -0.06, 100_001)])
    A = forward(Z, kind, nt=2)
    ref = act_forward(Z, kind, ALPHA)
    assert np.max(np.abs(A - ref)) <= abs_bound
    assert max_rel(A, ref) <= rel_bound


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_sigmoid_tanh_extreme_inputs(dtype):
    info = np.finfo(dtype)
    Z = np.array([0.0, -0.0, 1e-30, -1e-30, float(info.tiny), -float(info.tiny),
                  float(info.smallest_subnormal), -float(info.smallest_subnormal),
                  1e4, -1e4, 88.7, -88.7, 100.0, -100.0, float(info.max), -float(info.max),
                  np.inf, -np.inf], dtype=dtype)
    with np.errstate(over="ignore"):
        S_ref = act_forward(Z, SIGMOID, ALPHA)
        T_ref = act_forward(Z, TANH, ALPHA)
    S = forward(Z, SIGMOID)
    T = forward(Z, TANH)
    assert np.all(np.isfinite(S)) and np.all(np.isfinite(T))
    assert np.all((S >= 0) & (S <= 1)) and np.all((T >= -1) & (T <= 1))
    abs_s = SIGMOID_F32_ABS if dtype == np.float32 else 1e-16
    abs_t = TANH_F32_ABS if dtype == np.float32 else 1e-16
    assert np.max(np.abs(S - S_ref)) <= abs_s
    assert np.max(np.abs(T - T_ref)) <= abs_t
    # exact values where they are representable
    assert np.all(S[:8] == 0.5)
    assert S[8] == 1 and S[9] == 0 and T[8] == 1 and T[9] == -1
    assert S[-2] == 1 and S[-1] == 0 and T[-2] == 1 and T[-1] == -1
    # tanh(x) = x for tiny x
    assert np.array_equal(T[:8], Z[:8])
    if dtype == np.float64:
        # libm keeps the sign of zero; the float32 kernel returns +0.0 for tanh(-0.0)
        # (fnn_tanhf: ``x < 0 ? -y : y``), harmless since -0.0 == 0.0, so not asserted there
        assert np.signbit(T[1]) and not np.signbit(T[0])
    # odd / symmetric
    assert np.array_equal(T[0::2], -T[1::2])
    np.testing.assert_allclose(S[0::2] + S[1::2], 1.0, rtol=0, atol=abs_s * 2)


# ---------------------------------------------------------------- the float32 polynomial exp
def test_fast_expf_relative_error_bound():
    x = np.concatenate([np.linspace(-87, 88, 4_000_001, dtype=np.float32),
                        np.random.default_rng(0).uniform(-87, 88, 1_000_000).astype(np.float32),
                        np.linspace(-1, 1, 200_001, dtype=np.float32),
                        np.array([-81.4432, 70.36417, 0.0, -0.0, 1e-30, -1e-30], dtype=np.float32)])
    out = fast_expf(x)
    ref = np.exp(x.astype(np.float64))
    rel = np.abs(out.astype(np.float64) - ref) / ref
    assert rel.max() < EXPF_REL_BOUND, f"max rel error {rel.max():.3e} at x={x[rel.argmax()]!r}"
    assert np.all(out[(x == 0)] == 1.0)


def test_fast_expf_is_zero_below_normal_range():
    """Results that would be subnormal are exactly 0 (no denormals, no garbage)."""
    x = np.concatenate([np.linspace(-1e4, -87.34, 100_001, dtype=np.float32),
                        np.array([-87.4, -88.0, -103.0, -1e30, -float(np.finfo(np.float32).max),
                                  -np.inf], dtype=np.float32)])
    assert np.all(fast_expf(x) == 0.0)
    # and just inside the range, normal numbers within the bound
    x = np.linspace(-87.33, -87.0, 10_001, dtype=np.float32)
    out = fast_expf(x)
    ref = np.exp(x.astype(np.float64))
    assert np.all(out >= FLT_MIN)
    assert np.max(np.abs(out - ref) / ref) < EXPF_REL_BOUND


def test_fast_expf_finite_up_to_float32_overflow():
    """exp(x) is a finite float32 for every x <= 88.7228 (exp(88.7228) = 3.4028e38 = FLT_MAX).

    Regression test: the exponent n = 128 (x >= 127.5 ln 2 = 88.3763) once produced the bit
    pattern of +inf for all 45426 float32 values in [88.37627, 88.72283]; fnn_expf now applies
    2^n in two halves.
    """
    x = np.array([88.0, 88.3, 88.37626, 88.37627, 88.5, 88.7, 88.72, 88.7228], dtype=np.float32)
    out = fast_expf(x)
    ref = np.exp(x.astype(np.float64))
    assert np.all(ref < FLT_MAX)
    assert np.all(np.isfinite(out)), f"inf at x = {x[~np.isfinite(out)]}"
    assert np.max(np.abs(out - ref) / ref) < EXPF_REL_BOUND


def test_fast_expf_large_inputs_saturate():
    """Beyond float32 overflow: +inf or at least FLT_MAX-sized, never NaN or small."""
    x = np.array([88.73, 89.0, 100.0, 1e4, float(np.finfo(np.float32).max), np.inf],
                 dtype=np.float32)
    out = fast_expf(x)
    assert not np.any(np.isnan(out))
    assert np.all(out >= 3.0e38)
