"""Elementwise activation kernels (fastnn._activations) and the float32 polynomial exp of simd.h.

References are plain float64 NumPy (and scipy.special.ndtr, the normal CDF, for gelu) written in
conftest.py. float64 kernels use libm (exp, tanh, expm1, log1p, erfc) and must agree to ~1e-15
relative; float32 kernels use polynomial approximations, and their measured errors are bounded a
little above what was measured (sigmoid / tanh exhaustively over every float32 in the ranges named
below, the others over the grids of the tests below; through the kernels' x86-64-v4 (AVX-512)
clone; fast_expf through its test wrapper, which is compiled for the x86-64 baseline):

    fast_expf, every float32 in [-87, 88]: max relative error 8.31e-8 (at x = -81.4432)
    sigmoid f32, every float32 in [-100, 100]: max abs error 8.93e-8, max rel error 1.48e-7
    tanh f32, every float32 in [-100, 100]: max abs error 9.0e-8, max rel error 3.73e-7
      (the relative error peaks just above |x| = 0.0625, where (1 - t) / (1 + t) cancels)
    elu f32 (alpha 1 and 0.3), [-87, 100]: max rel error 1.33e-7 (at z = -0.543, alpha 0.3)
    softplus f32, [-87, 100]: max rel error 2.15e-7 (at z = -2.50)
    silu f32, [-87, 100]: max rel error 2.02e-7 (at z = -16.7)
    gelu f32: its normal CDF Phi (gelu(z) / z), over z in (-12.95, 100] where Phi >= FLT_MIN:
      max rel error 3.96e-7 (at z = -2.15; 2.8e-7 for -2 < z < -0.6, 1.5e-7 for -0.6 < z < 2,
      9.2e-8 for z > 2); gelu itself the same relative error; below z = -12.95 Phi and gelu
      are 0 (no subnormals)
    derivatives f32 (backward, dA = 1), max abs error: elu 4.5e-8, softplus 6.2e-8,
      gelu 1.4e-7, silu 2.2e-7

Below z = -87.33 the float32 exp is 0 (no subnormals), so softplus and silu return 0 there where
the exact value is a tiny normal or subnormal number (< 1e-36).
"""
import numpy as np
import pytest

from fastnn import _activations

from fastnn import activations as act

from conftest import (ELU, FROM_Z_CODES, GELU, IDENTITY, KERNEL_CODES, KERNEL_NAMES, LEAKY_RELU,
                      RELU, SIGMOID, SILU, SOFTPLUS, TANH, act_forward, act_grad_from_saved,
                      act_saved, normal_cdf)

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
# float32 relative error bounds of the newer activations (measured values in the module docstring)
F32_REL = {ELU: 1.6e-7, SOFTPLUS: 2.6e-7, SILU: 2.5e-7, GELU: 4.8e-7}
PHI_F32_REL = 4.8e-7
# float32 derivative: max abs error (dA = 1)
F32_GRAD_ABS = {ELU: 6e-8, SOFTPLUS: 8e-8, GELU: 1.8e-7, SILU: 2.7e-7}
# float64 gelu: erfc(-z / sqrt 2) with z / sqrt 2 rounded, relative condition ~ z^2; libm's erfc
# and scipy's ndtr (Cephes) differ by up to ~1.5e-15 relative near |z| = 1
GELU_F64_REL = 2e-15


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
        rel = GELU_F64_REL * (1 + Z.astype(np.float64) ** 2) if kind == GELU else F64_REL * 4
        assert np.all(np.abs(A - ref) <= rel * np.abs(ref))
    elif kind in F32_REL:
        assert max_rel(A, ref) <= F32_REL[kind]
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
    # what the layers keep: the output A, or the pre-activation Z for gelu and silu
    A = act_saved(3 * rng.standard_normal(n), kind, ALPHA).astype(dtype)
    dA = rng.standard_normal(n).astype(dtype)
    dZ = np.full_like(A, np.nan)
    _activations.backward(A, dA, dZ, kind, ALPHA, nt)
    alpha = float(np.asarray(ALPHA, dtype=dtype))
    ref = dA.astype(np.float64) * act_grad_from_saved(A, kind, alpha)
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
        _activations.backward(Z if kind in FROM_Z_CODES else A, dA, dZ, kind, ALPHA, nt)
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


# ---------------------------------------------------------------- elu, softplus, gelu, silu
def test_table_knows_the_new_activations():
    """Names, kernel codes, what the backward takes, alpha and its default (torch.nn's)."""
    info = act.ACTIVATIONS
    assert {"elu", "softplus", "gelu", "silu"} <= set(_activations.activation_codes())
    assert set(_activations.activations_from_z()) == {"gelu", "silu"}
    assert [n for n, i in info.items() if i.from_z] == ["gelu", "silu"]
    assert [n for n, i in info.items() if i.has_alpha] == ["leaky_relu", "elu"]
    assert info["elu"].default_alpha == 1.0 and info["leaky_relu"].default_alpha == 0.01
    assert act.resolve("elu") == ("elu", ELU, 1.0)
    assert act.resolve("leaky_relu") == ("leaky_relu", LEAKY_RELU, 0.01)
    assert act.resolve("elu", 0.5) == ("elu", ELU, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        act.resolve("elu", 0.0)
    with pytest.raises(ValueError, match=r"'gelu'.*'silu'.*got 'swish'"):
        act.resolve("swish")


@pytest.mark.parametrize("kind,alpha", [(ELU, 1.0), (ELU, 0.3), (SOFTPLUS, 0.0), (SILU, 0.0),
                                        (GELU, 0.0)], ids=["elu", "elu0.3", "softplus", "silu",
                                                           "gelu"])
def test_f32_new_activations_error_bound_on_dense_grid(kind, alpha):
    """Forward relative error over [-87, 100] (below -87.33 the float32 exp is 0), and the
    derivative's absolute error (from the float64 value of what the backward takes)."""
    Z = np.concatenate([dense_grid(-87, 100, 1_000_001), dense_grid(-3, 3, 600_001),
                        dense_grid(-1e-3, 1e-3, 20_001),
                        dense_grid(19.9, 20.1, 2_001)])  # softplus' threshold
    a32 = float(np.float32(alpha))
    A = forward(Z, kind, nt=2, alpha=alpha)
    ref = act_forward(Z, kind, a32)
    ok = Z > -12.95 if kind == GELU else np.ones(Z.shape, bool)  # gelu: Phi >= FLT_MIN
    assert np.all(np.isfinite(A))
    assert max_rel(A[ok], ref[ok]) <= F32_REL[kind]
    if kind == GELU:
        assert np.all(A[~ok] == 0)
        # Phi alone, gelu(z) / z, in the pieces of its approximation
        nz = ok & (Z != 0)
        phi = A[nz].astype(np.float64) / Z[nz]
        assert max_rel(phi, normal_cdf(Z[nz])) <= PHI_F32_REL
    S = act_saved(Z, kind, a32).astype(np.float32)
    dZ = np.full_like(Z, np.nan)
    _activations.backward(S, np.ones_like(Z), dZ, kind, alpha, 2)
    g = act_grad_from_saved(S, kind, a32)
    assert np.max(np.abs(dZ - g)) <= F32_GRAD_ABS[kind]


def test_f64_gelu_accurate_in_the_negative_tail():
    """gelu is z Phi(z) with Phi through erfc: no cancellation for z << 0, where the erf form
    0.5 z (1 + erf(z / sqrt 2)) of PyTorch loses every digit."""
    Z = -np.linspace(5, 37, 321)
    A = forward(Z, GELU)
    ref = act_forward(Z, GELU, 0.0)
    assert np.all(ref < 0)  # Phi(-37) = 6e-300: still a normal float64
    assert np.all(np.abs(A - ref) <= GELU_F64_REL * (1 + Z ** 2) * np.abs(ref))


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_new_activations_extreme_inputs(dtype):
    """Large |z|: no overflow, NaN or inf; the limits g(z) -> z (z -> inf) and elu -> -alpha,
    softplus, gelu, silu -> 0 (z -> -inf); derivatives -> 1 and 0; softplus(z) = z above 20."""
    info = np.finfo(dtype)
    big = np.array([100.0, 1e4, 1e30, float(info.max)], dtype=dtype)
    tiny = np.array([0.0, -0.0, float(info.tiny), -float(info.tiny)], dtype=dtype)
    alpha = 0.5
    for kind in (ELU, SOFTPLUS, GELU, SILU):
        with np.errstate(all="ignore"):
            hi, lo = forward(big, kind, alpha=alpha), forward(-big, kind, alpha=alpha)
            t = forward(tiny, kind, alpha=alpha)
        name = KERNEL_NAMES[kind]
        assert np.all(np.isfinite(hi)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(t)), name
        assert np.array_equal(hi, big), name
        # (float64 softplus(-100) is exp(-100) = 3.7e-44)
        np.testing.assert_allclose(lo, -alpha if kind == ELU else 0.0, rtol=0, atol=1e-40,
                                   err_msg=name)
        if kind == SOFTPLUS:
            np.testing.assert_allclose(t, np.log(2), rtol=2e-7)
        else:
            assert np.all(np.abs(t) <= np.abs(tiny)), name
        for S, g in ((act_saved(big, kind, alpha).astype(dtype), 1.0),
                     (act_saved(-big, kind, alpha).astype(dtype), 0.0)):
            dZ = np.full_like(S, np.nan)
            _activations.backward(S, np.ones_like(S), dZ, kind, alpha, 1)
            assert np.all(np.isfinite(dZ)), name
            np.testing.assert_allclose(dZ, g, rtol=0, atol=1e-40, err_msg=name)
    # softplus' threshold (torch.nn.Softplus(threshold=20)): z itself above 20
    Z = np.array([20.0, 20.000002, 20.5, 25.0], dtype=dtype)
    A = forward(Z, SOFTPLUS)
    assert np.array_equal(A[1:], Z[1:])
    np.testing.assert_allclose(A[0], 20.0 + np.log1p(np.exp(-20.0)), rtol=1e-7)


def test_elu_and_softplus_small_inputs_keep_relative_accuracy():
    """expm1 and log1p forms: elu(z) ~ alpha z and the softplus derivative 1 - exp(-a) ~ a for
    tiny |z| and a keep their relative accuracy (1 - exp would cancel to 0 or 1 ulp steps)."""
    for dtype in DTYPES:
        z = -np.logspace(-30, -1, 200).astype(dtype)
        A = forward(z, ELU, alpha=1.0)
        ref = np.expm1(z.astype(np.float64))
        bound = F32_REL[ELU] if dtype == np.float32 else 4 * F64_REL
        assert max_rel(A, ref) <= bound
        a = -z  # softplus outputs near 0 (z << 0): derivative sigmoid(z) = -expm1(-a)
        dZ = np.empty_like(a)
        _activations.backward(a, np.ones_like(a), dZ, SOFTPLUS, 0.0, 1)
        ref = -np.expm1(-a.astype(np.float64))
        assert max_rel(dZ, ref) <= (2e-7 if dtype == np.float32 else 4 * F64_REL)

