"""Losses: values against the NumPy formulas, gradients against float64 central differences."""
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy
from fastnn import losses as losses_mod

from conftest import max_rel_error, numerical_grad, sigmoid, softmax_ce, softmax_ce_grad

DTYPES = [np.float32, np.float64]


# -- NumPy references ---------------------------------------------------------------------------
def np_bce(z, t):
    z, t = z.astype(np.float64), t.astype(np.float64)
    # -t log(s) - (1-t) log(1-s) with s = sigmoid(z), written stably
    return np.mean(np.logaddexp(0, -z) * t + np.logaddexp(0, z) * (1 - t))


def np_bce_grad(z, t):
    z, t = z.astype(np.float64), t.astype(np.float64)
    return (sigmoid(z) - t) / z.size


def np_mse(o, t):
    return np.mean((o.astype(np.float64) - t) ** 2)


def fd_grad(loss, z, target, eps=1e-5):
    """Central differences of ``loss.forward(z, target)`` for every entry of float64 ``z``."""
    return numerical_grad(lambda: loss.forward(z, target), z, h=eps)


def vtol(dtype):
    return 1e-12 if dtype == np.float64 else 2e-6


# -- SoftmaxCrossEntropy ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 2), (7, 3), (64, 10), (257, 13)])
def test_softmax_ce_value_and_gradient_match_numpy(N, K, dtype):
    rng = np.random.default_rng(N * K)
    z = (rng.standard_normal((N, K)) * 3).astype(dtype)
    y = rng.integers(0, K, size=N)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(z, y)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, softmax_ce(z, y), rtol=vtol(dtype))
    g = loss.backward()
    assert g.shape == (N, K) and g.dtype == dtype
    np.testing.assert_allclose(g, softmax_ce_grad(z, y), rtol=vtol(dtype) * 10,
                               atol=vtol(dtype) / N)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_one_hot_equals_int_labels(dtype):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((20, 5)).astype(dtype)
    y = rng.integers(0, 5, size=20)
    onehot = np.eye(5)[y]
    a, b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert a.forward(z, y) == b.forward(z, onehot)
    assert np.array_equal(a.backward(), b.backward())
    assert a.forward(z, y) == b.forward(z, onehot.astype(np.int32))


@pytest.mark.parametrize("N,K", [(1, 2), (5, 3), (9, 7)])
def test_softmax_ce_gradient_finite_differences(N, K):
    rng = np.random.default_rng(10 + N)
    z = rng.standard_normal((N, K)) * 2
    y = rng.integers(0, K, size=N)
    loss = SoftmaxCrossEntropy()
    loss.forward(z, y)
    g = loss.backward().copy()
    assert max_rel_error(g, fd_grad(loss, z, y)) < 1e-6
    # one-hot targets give the same gradient
    loss.forward(z, np.eye(K)[y])
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, z, np.eye(K)[y])) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_extreme_logits_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [1e4, 0, -1e4]],
                 dtype=dtype)
    y = np.array([1, 0, 2, 0])
    loss = SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss.forward(z, y)
    g = loss.backward()
    assert np.isfinite(value) and np.isfinite(g).all()
    np.testing.assert_allclose(value, softmax_ce(z, y), rtol=1e-6)
    np.testing.assert_allclose(g, softmax_ce_grad(z, y), atol=1e-7)


def test_softmax_ce_score_is_accuracy():
    z = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 2.0], [5.0, 0.0, 0.0]])
    y = np.array([0, 1, 0, 2])
    assert SoftmaxCrossEntropy().score(z, y) == pytest.approx(0.5)


def test_softmax_ce_probabilities_are_softmax():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((6, 4)) * 5
    p = SoftmaxCrossEntropy.probabilities(z)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


# -- BinaryCrossEntropy -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ["N1", "N", "NK"])
@pytest.mark.parametrize("N", [1, 7, 257])
def test_bce_value_and_gradient_match_numpy(N, shape, dtype):
    rng = np.random.default_rng(N + len(shape))
    K = 5 if shape == "NK" else 1
    z = (rng.standard_normal((N, K)) * 3).astype(dtype)
    t2 = rng.integers(0, 2, size=(N, K)).astype(np.float64)
    if shape == "NK":
        t2[:, 0] = rng.uniform(0, 1, size=N)  # soft targets are allowed too
    target = t2[:, 0] if shape == "N" else t2
    loss = BinaryCrossEntropy()
    value = loss.forward(z, target)
    np.testing.assert_allclose(value, np_bce(z, t2), rtol=vtol(dtype))
    g = loss.backward()
    assert g.shape == (N, K) and g.dtype == dtype
    np.testing.assert_allclose(g, np_bce_grad(z, t2), rtol=vtol(dtype) * 10,
                               atol=vtol(dtype) / z.size)


@pytest.mark.parametrize("K", [1, 4])
def test_bce_gradient_finite_differences(K):
    rng = np.random.default_rng(K)
    z = rng.standard_normal((6, K)) * 2
    t = rng.integers(0, 2, size=(6, K)).astype(float)
    t[0, 0] = 0.3
    loss = BinaryCrossEntropy()
    loss.forward(z, t)
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, z, t)) < 1e-6
    if K == 1:  # (N,) targets
        loss.forward(z, t[:, 0])
        assert max_rel_error(loss.backward().copy(), fd_grad(loss, z, t[:, 0])) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extreme_logits_finite(dtype):
    z = np.array([[1e4], [-1e4], [1e4], [-1e4], [0.0]], dtype=dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    loss = BinaryCrossEntropy()
    value = loss.forward(z, t)
    assert np.isfinite(value) and np.isfinite(loss.backward()).all()
    np.testing.assert_allclose(value, np_bce(z, t[:, None]), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = BinaryCrossEntropy.probabilities(z.astype(np.float64))
    np.testing.assert_allclose(p[:, 0], [1, 0, 1, 0, 0.5])


@pytest.mark.parametrize("bad", [[-0.1, 0.5, 1.0], [0.0, 1.5, 1.0], [0.0, np.nan, 1.0]])
def test_bce_target_outside_unit_interval_raises(bad):
    with pytest.raises(ValueError, match="y"):
        BinaryCrossEntropy().forward(np.zeros((3, 1)), np.array(bad))


def test_bce_target_wrong_shape_raises():
    with pytest.raises(ValueError, match=r"y must have shape \(3, 2\)"):
        BinaryCrossEntropy().forward(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="y must have shape"):
        BinaryCrossEntropy().forward(np.zeros((3, 1)), np.zeros(4))


def test_bce_score_is_thresholded_accuracy():
    z = np.array([[2.0, -1.0], [-0.5, 0.5]])
    t = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert BinaryCrossEntropy().score(z, t) == pytest.approx(0.75)


# -- MeanSquaredError ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 1), (7, 3), (257, 5)])
def test_mse_value_and_gradient_match_numpy(N, K, dtype):
    rng = np.random.default_rng(N * 31 + K)
    o = rng.standard_normal((N, K)).astype(dtype)
    t = rng.standard_normal((N, K))
    loss = MeanSquaredError()
    np.testing.assert_allclose(loss.forward(o, t), np_mse(o, t.astype(dtype)), rtol=vtol(dtype))
    g = loss.backward()
    assert g.shape == (N, K) and g.dtype == dtype
    ref = 2 * (o.astype(np.float64) - t.astype(dtype)) / o.size
    np.testing.assert_allclose(g, ref, rtol=vtol(dtype) * 10, atol=vtol(dtype) / o.size)


def test_mse_gradient_finite_differences_and_1d_target():
    rng = np.random.default_rng(4)
    o = rng.standard_normal((6, 3))
    t = rng.standard_normal((6, 3))
    loss = MeanSquaredError()
    loss.forward(o, t)
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, o, t)) < 1e-6
    o1 = o[:, :1].copy()
    v2 = loss.forward(o1, t[:, 0:1])
    assert loss.forward(o1, t[:, 0]) == v2
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, o1, t[:, 0])) < 1e-6


def test_mse_wrong_target_shape_raises():
    with pytest.raises(ValueError, match="y must have shape"):
        MeanSquaredError().forward(np.zeros((4, 2)), np.zeros((4, 3)))


# -- common -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SoftmaxCrossEntropy, BinaryCrossEntropy, MeanSquaredError])
def test_backward_before_forward_raises(cls):
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward()


@pytest.mark.parametrize("cls", [SoftmaxCrossEntropy, BinaryCrossEntropy, MeanSquaredError])
def test_output_must_be_2d_and_nonempty(cls):
    with pytest.raises(ValueError, match="output"):
        cls().forward(np.zeros(4), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="output"):
        cls().forward(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))


def test_losses_get():
    assert isinstance(losses_mod.get("mse"), MeanSquaredError)
    assert isinstance(losses_mod.get("binary_cross_entropy"), BinaryCrossEntropy)
    assert isinstance(losses_mod.get(SoftmaxCrossEntropy), SoftmaxCrossEntropy)
    inst = MeanSquaredError()
    assert losses_mod.get(inst) is inst
    with pytest.raises(ValueError, match="unknown loss"):
        losses_mod.get("hinge")


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_bit_identical_with_1_and_2_threads(dtype):
    # sizes above the kernels' parallel thresholds
    rng = np.random.default_rng(9)
    z = (rng.standard_normal((3001, 10)) * 3).astype(dtype)
    y = rng.integers(0, 10, size=3001)
    t = rng.integers(0, 2, size=(3001, 10)).astype(float)
    res = {}
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        out = []
        for loss, target in ((SoftmaxCrossEntropy(), y), (BinaryCrossEntropy(), t),
                             (MeanSquaredError(), t)):
            out.append((loss.forward(z, target), loss.backward().copy()))
        res[nt] = out
    for (v1, g1), (v2, g2) in zip(res[1], res[2]):
        assert v1 == v2
        assert np.array_equal(g1, g2)
