"""Fused dense kernels (fastnn._dense) against plain NumPy written here, in float64.

forward:  A = g(X @ W + b) (and, for gelu and silu, Z = X @ W + b kept in an optional buffer)
backward: dZ = dA * g'(Z) (g' written with the output A, or with the kept Z for gelu and silu),
          dW = X^T dZ, db = sum_n dZ, dX = dZ W^T

Tolerances are relative to the magnitude of the computation (|X| @ |W| + |b| and so on), not to
the result, so that cancellation in a dot product does not make a correct kernel fail:
float64 1e-12, float32 1e-5, plus an absolute term for the float32 polynomial sigmoid/tanh.
Every output starts as NaN so that an element the kernel forgot to write is caught.
"""
import numpy as np
import pytest

from fastnn import _activations, _dense

from conftest import (FROM_Z_CODES, IDENTITY, KERNEL_CODES, KERNEL_NAMES, LEAKY_RELU, RELU,
                      SIGMOID, TANH, act_forward, act_grad_from_saved, act_saved, assert_within)

KINDS = list(KERNEL_CODES)  # every code of the kernels' list (simd.h)
KIND_IDS = [KERNEL_NAMES[k] for k in KINDS]
ALPHA = 0.1
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# error of the activation itself (float32: polynomial exp in simd.h, measured ~9e-8)
ACT_ATOL = {np.float32: 2e-7, np.float64: 1e-15}

# (N, K, M): batch, in_features, out_features. Small batches are split by output columns in the
# kernel, large ones by rows; dX / dW choose their split from N < K and M >= K: all branches occur.
SHAPES = [
    (1, 1, 1),
    (1, 784, 256),
    (7, 3, 13),
    (7, 784, 256),
    (64, 13, 33),
    (64, 784, 256),
    (64, 256, 10),
    (257, 33, 1),
    (257, 33, 256),
    (257, 784, 256),
]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def make_inputs(shape, dtype, seed=0):
    N, K, M = shape
    rng = np.random.default_rng([seed, N, K, M])
    X = rng.standard_normal((N, K)).astype(dtype)
    W = (rng.standard_normal((K, M)) / np.sqrt(K)).astype(dtype)
    b = (0.1 * rng.standard_normal(M)).astype(dtype)
    return X, W, b


def run_forward(X, W, b, kind, nt, alpha=ALPHA):
    A = np.full((X.shape[0], W.shape[1]), np.nan, dtype=X.dtype)
    _dense.forward(X, W, b, A, kind, alpha, nt)
    return A


def run_backward(X, W, A, dA, kind, nt, alpha=ALPHA, with_dx=True):
    N, K = X.shape
    M = W.shape[1]
    dt = X.dtype
    dZ = np.full((N, M), np.nan, dtype=dt)
    dW = np.full((K, M), np.nan, dtype=dt)
    db = np.full(M, np.nan, dtype=dt)
    dX = np.full((N, K), np.nan, dtype=dt) if with_dx else None
    _dense.backward(X, W, A, dA, dZ, dW, db, dX, kind, alpha, nt)
    return dZ, dW, db, dX


def backward_inputs(shape, dtype, kind):
    """X, W, and what the backward takes, computed by the reference (cast to dtype): the output
    A = g(X W + b), or Z = X W + b for gelu and silu; plus dA."""
    X, W, b = make_inputs(shape, dtype)
    Z = X.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    A = act_saved(Z, kind, ALPHA).astype(dtype)
    rng = np.random.default_rng([1, *shape])
    dA = rng.standard_normal(A.shape).astype(dtype)
    return X, W, A, dA


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_forward_matches_numpy(dtype, shape, kind, nt):
    X, W, b = make_inputs(shape, dtype)
    A = run_forward(X, W, b, kind, nt)
    X64, W64, b64 = (a.astype(np.float64) for a in (X, W, b))
    ref = act_forward(X64 @ W64 + b64, kind, ALPHA)
    # every activation here is 1-Lipschitz, so the error of Z carries over to A
    mag = np.abs(X64) @ np.abs(W64) + np.abs(b64)
    bound = RTOL[dtype] * mag + (ACT_ATOL[dtype] if kind in (SIGMOID, TANH) else 0.0)
    assert A.dtype == dtype
    assert_within(A, ref, bound, "A")


@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_backward_matches_numpy(dtype, shape, kind, nt):
    X, W, A, dA = backward_inputs(shape, dtype, kind)
    dZ, dW, db, dX = run_backward(X, W, A, dA, kind, nt)

    X64, W64, A64, dA64 = (a.astype(np.float64) for a in (X, W, A, dA))
    dZ_ref = dA64 * act_grad_from_saved(A64, kind, ALPHA)
    dW_ref = X64.T @ dZ_ref
    db_ref = dZ_ref.sum(axis=0)
    dX_ref = dZ_ref @ W64.T

    rtol = RTOL[dtype]
    # |g'| <= 1.13 (gelu) and the terms of g' are about 1 in magnitude, so |dA| bounds the scale
    # of dZ
    mag_dZ = 1.13 * np.abs(dA64)
    assert_within(dZ, dZ_ref, rtol * mag_dZ, "dZ")
    assert_within(dW, dW_ref, rtol * (np.abs(X64).T @ mag_dZ), "dW")
    assert_within(db, db_ref, rtol * mag_dZ.sum(axis=0), "db")
    assert_within(dX, dX_ref, rtol * (mag_dZ @ np.abs(W64).T), "dX")


@pytest.mark.parametrize("kind", [RELU, TANH], ids=["relu", "tanh"])
@pytest.mark.parametrize("shape", [(7, 784, 256), (257, 33, 13)], ids=["7x784x256", "257x33x13"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_backward_without_dx(dtype, shape, kind):
    """dX=None (first layer) gives the same dZ, dW, db and leaves nothing unwritten."""
    X, W, A, dA = backward_inputs(shape, dtype, kind)
    full = run_backward(X, W, A, dA, kind, 2)
    part = run_backward(X, W, A, dA, kind, 2, with_dx=False)
    assert part[3] is None
    for name, a, c in zip(("dZ", "dW", "db"), full[:3], part[:3]):
        assert np.array_equal(a, c), name


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("shape", [(7, 13, 33), (257, 784, 256)], ids=["7x13x33", "257x784x256"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_backward_dZ_may_alias_dA(dtype, shape, kind):
    """The documented in-place use: dZ is dA itself."""
    X, W, A, dA = backward_inputs(shape, dtype, kind)
    ref = run_backward(X, W, A, dA, kind, 2)
    N, K = X.shape
    M = W.shape[1]
    buf = dA.copy()
    dW = np.full((K, M), np.nan, dtype=dtype)
    db = np.full(M, np.nan, dtype=dtype)
    dX = np.full((N, K), np.nan, dtype=dtype)
    _dense.backward(X, W, A, buf, buf, dW, db, dX, kind, ALPHA, 2)
    for name, a, c in zip(("dZ", "dW", "db", "dX"), ref, (buf, dW, db, dX)):
        assert np.array_equal(a, c), name


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bit_identical_across_threads(dtype, shape, kind):
    """Fixed chunking: 1, 2 and 3 threads give exactly the same bits (forward and backward)."""
    X, W, b = make_inputs(shape, dtype)
    fw = [run_forward(X, W, b, kind, nt) for nt in (1, 2, 3)]
    assert np.array_equal(fw[0], fw[1]) and np.array_equal(fw[0], fw[2]), "forward A"

    X, W, A, dA = backward_inputs(shape, dtype, kind)
    bw = [run_backward(X, W, A, dA, kind, nt) for nt in (1, 2, 3)]
    for j, name in enumerate(("dZ", "dW", "db", "dX")):
        assert np.array_equal(bw[0][j], bw[1][j]), f"{name}: 1 vs 2 threads"
        assert np.array_equal(bw[0][j], bw[2][j]), f"{name}: 1 vs 3 threads"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_repeated_calls_are_deterministic(dtype):
    """Same call twice with 2 threads (dynamic task list in backward): same bits."""
    X, W, A, dA = backward_inputs((257, 784, 256), dtype, RELU)
    r1 = run_backward(X, W, A, dA, RELU, 2)
    r2 = run_backward(X, W, A, dA, RELU, 2)
    for a, c in zip(r1, r2):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_relu_and_leaky_relu_at_zero(dtype):
    """Z exactly 0: relu gives 0 and passes no gradient; leaky passes alpha * dA."""
    X = np.zeros((3, 2), dtype=dtype)
    W = np.ones((2, 4), dtype=dtype)
    b = np.array([0.0, 1.0, -1.0, 0.0], dtype=dtype)
    A = run_forward(X, W, b, RELU, 1)
    assert np.array_equal(A, np.tile(np.array([0, 1, 0, 0], dtype=dtype), (3, 1)))
    A2 = run_forward(X, W, b, LEAKY_RELU, 1, alpha=0.25)
    assert np.array_equal(A2, np.tile(np.array([0, 1, -0.25, 0], dtype=dtype), (3, 1)))
    dA = np.ones((3, 4), dtype=dtype)
    dZ = run_backward(X, W, A, dA, RELU, 1)[0]
    assert np.array_equal(dZ, np.tile(np.array([0, 1, 0, 0], dtype=dtype), (3, 1)))
    dZ2 = run_backward(X, W, A2, dA, LEAKY_RELU, 1, alpha=0.25)[0]
    assert np.array_equal(dZ2, np.tile(np.array([0.25, 1, 0.25, 0.25], dtype=dtype), (3, 1)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_forward_extreme_preactivations_stay_finite(dtype):
    """Saturated sigmoid / tanh (|Z| ~ 1e4) give exact 0/1 and -1/1 and zero derivatives."""
    X = np.array([[1.0], [-1.0]], dtype=dtype)
    W = np.array([[1e4, -1e4, 0.0]], dtype=dtype)
    b = np.zeros(3, dtype=dtype)
    S = run_forward(X, W, b, SIGMOID, 1)
    T = run_forward(X, W, b, TANH, 1)
    assert np.array_equal(S, np.array([[1, 0, 0.5], [0, 1, 0.5]], dtype=dtype))
    assert np.array_equal(T, np.array([[1, -1, 0], [-1, 1, 0]], dtype=dtype))
    dA = np.ones_like(S)
    for kind, A in ((SIGMOID, S), (TANH, T)):
        dZ, dW, db, dX = run_backward(X, W, A, dA, kind, 1)
        for arr in (dZ, dW, db, dX):
            assert np.all(np.isfinite(arr))
        assert np.array_equal(dZ[:, :2], np.zeros((2, 2), dtype=dtype))


# ---- the pre-activation kept for gelu and silu -------------------------------------------------

@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 784, 256), (64, 13, 33), (257, 33, 256)],
                         ids=["1x1x1", "7x784x256", "64x13x33", "257x33x256"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_forward_keeps_preactivation(dtype, shape, kind):
    """With the optional Z buffer, gelu and silu write Z = X W + b (the same bits as the identity
    forward) and A = g(Z) (the same bits as the elementwise kernel on that Z, and as without Z);
    the other activations leave Z unwritten. Any thread count gives the same bits."""
    X, W, b = make_inputs(shape, dtype)
    Z_id = run_forward(X, W, b, IDENTITY, 1)
    A_ref = Z_id.copy()
    _activations.forward_inplace(A_ref.reshape(-1), kind, ALPHA, 1)
    for nt in (1, 2, 3):
        A = np.full_like(Z_id, np.nan)
        Z = np.full_like(Z_id, np.nan)
        _dense.forward(X, W, b, A, kind, ALPHA, nt, Z)
        assert np.array_equal(A, A_ref), nt
        assert np.array_equal(A, run_forward(X, W, b, kind, nt)), nt
        if kind in FROM_Z_CODES:
            assert np.array_equal(Z, Z_id), nt
        else:
            assert np.all(np.isnan(Z)), nt


def test_forward_keep_buffer_of_wrong_shape_raises():
    X, W, b = make_inputs((4, 3, 5), np.float64)
    A = np.empty((4, 5))
    with pytest.raises(ValueError, match="Z has shape"):
        _dense.forward(X, W, b, A, FROM_Z_CODES[0], 0.0, 1, np.empty((4, 4)))
    with pytest.raises(ValueError):  # dtype of the others
        _dense.forward(X, W, b, A, FROM_Z_CODES[0], 0.0, 1, np.empty((4, 5), np.float32))

