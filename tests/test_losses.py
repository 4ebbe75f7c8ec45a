"""Losses: values against the NumPy formulas (PyTorch's published definitions written out),
gradients against float64 central differences; sample weights, label smoothing, Huber, KL
divergence and the entropy / kl_divergence helpers."""
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import (BinaryCrossEntropy, Huber, KLDivergence, MeanSquaredError,
                    SoftmaxCrossEntropy)
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


# -- references of the new losses (float64, plainly) ----------------------------------------------
def log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def np_smoothed_ce_rows(z, y, eps):
    """torch.nn.CrossEntropyLoss(label_smoothing=eps, reduction="none"):
    (1 - eps) * nll + eps * mean_k(-log_softmax(z)_k)."""
    lp = log_softmax(z)
    return (1 - eps) * -lp[np.arange(len(y)), y] + eps * -lp.mean(axis=1)


def np_huber(o, t, delta):
    d = o.astype(np.float64) - t
    a = np.abs(d)
    return np.where(a < delta, 0.5 * d ** 2, delta * (a - 0.5 * delta))


def np_kl_rows(z, t):
    """torch.nn.KLDivLoss(reduction="none")(log_softmax(z), t).sum(1): t (log t - log q)."""
    lp = log_softmax(z)
    return np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - lp), 0.0).sum(axis=1)


def prob_targets(rng, N, K):
    t = rng.dirichlet(np.ones(K), N)
    t[rng.uniform(size=(N, K)) < 0.3] = 0.0   # zeros: 0 log 0 = 0
    t[:, 0] += 0.01
    t /= t.sum(axis=1, keepdims=True)
    t[0] = np.eye(K)[K - 1]                   # a one-hot row
    return t


def weights(rng, N):
    w = rng.uniform(0.2, 3.0, N)
    w[N // 2] = 0.0
    return w


# -- label smoothing ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("N,K", [(1, 2), (9, 4), (130, 10), (40, 50)])
def test_label_smoothing_value_and_gradient_match_torch_formula(N, K, eps, dtype):
    rng = np.random.default_rng([N, K, int(100 * eps)])
    z = (rng.standard_normal((N, K)) * 3).astype(dtype)
    y = rng.integers(0, K, size=N)
    loss = SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(z, y)
    np.testing.assert_allclose(value, np_smoothed_ce_rows(z, y, eps).mean(), rtol=vtol(dtype) * 4)
    t = (1 - eps) * np.eye(K)[y] + eps / K
    ref = (np.exp(log_softmax(z)) - t) / N
    np.testing.assert_allclose(loss.backward(), ref, rtol=vtol(dtype) * 10, atol=vtol(dtype) / N)
    # one-hot targets are smoothed the same way
    other = SoftmaxCrossEntropy(label_smoothing=eps)
    assert other.forward(z, np.eye(K)[y]) == value
    assert np.array_equal(other.backward(), loss.backward())


@pytest.mark.parametrize("eps", [0.1, 0.7])
def test_label_smoothing_gradient_finite_differences(eps):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 5)) * 2
    y = rng.integers(0, 5, size=6)
    loss = SoftmaxCrossEntropy(eps)
    loss.forward(z, y)
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, z, y)) < 1e-6


def test_label_smoothing_zero_is_the_default_bit_for_bit():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((300, 10)).astype(np.float32)
    y = rng.integers(0, 10, size=300)
    a, b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.0)
    assert a.forward(z, y) == b.forward(z, y)
    assert np.array_equal(a.backward(), b.backward())
    # smoothing moves probability mass off the label: a confident right row costs more
    assert SoftmaxCrossEntropy(0.1).forward(z, y) > a.forward(z, y) - 1.0
    confident = np.array([[10.0, 0.0, 0.0]])
    assert SoftmaxCrossEntropy(0.1).forward(confident, [0]) > a.forward(confident, [0])


@pytest.mark.parametrize("bad,err", [(-0.1, ValueError), (1.01, ValueError), (np.nan, ValueError),
                                     ("0.1", TypeError), (True, TypeError)])
def test_label_smoothing_is_checked(bad, err):
    with pytest.raises(err, match="label_smoothing"):
        SoftmaxCrossEntropy(label_smoothing=bad)


def test_label_smoothing_is_saved_with_the_model(tmp_path):
    model = fastnn.Sequential([fastnn.Dense(3, 4)], dtype="float64", seed=0)
    model.compile("sgd", SoftmaxCrossEntropy(label_smoothing=0.2))
    assert model.loss.get_config() == {"label_smoothing": 0.2}
    model.save(tmp_path / "m.npz")
    back = fastnn.load(tmp_path / "m.npz")
    assert isinstance(back.loss, SoftmaxCrossEntropy) and back.loss.label_smoothing == 0.2
    X = np.random.default_rng(0).standard_normal((8, 3))
    y = np.arange(8) % 4
    assert back.evaluate(X, y)["loss"] == model.evaluate(X, y)["loss"]


# -- Huber ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("delta", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("N,K", [(1, 1), (7, 3), (257, 5), (3000, 2)])
def test_huber_value_and_gradient_match_torch_formula(N, K, delta, dtype):
    rng = np.random.default_rng([N, K, int(4 * delta)])
    o = (rng.standard_normal((N, K)) * 2).astype(dtype)
    t = rng.standard_normal((N, K))
    loss = Huber(delta)
    value = loss.forward(o, t)
    t_cast = t.astype(dtype).astype(np.float64)  # the kernel sees the target in the model dtype
    np.testing.assert_allclose(value, np_huber(o, t_cast, delta).mean(), rtol=vtol(dtype))
    d = o.astype(np.float64) - t_cast
    ref = np.where(np.abs(d) < delta, d, delta * np.sign(d)) / o.size
    g = loss.backward()
    assert g.shape == (N, K) and g.dtype == dtype
    np.testing.assert_allclose(g, ref, rtol=vtol(dtype) * 10, atol=vtol(dtype) / o.size)


@pytest.mark.parametrize("delta", [0.5, 2.0])
def test_huber_gradient_finite_differences_and_1d_target(delta):
    rng = np.random.default_rng(5)
    o = rng.standard_normal((8, 3)) * 2
    t = rng.standard_normal((8, 3))
    # keep every |d| away from the kink at delta, where the central difference straddles it
    d = o - t
    near = np.abs(np.abs(d) - delta) < 1e-3
    o[near] += 0.01
    loss = Huber(delta)
    loss.forward(o, t)
    g = loss.backward().copy()
    assert max_rel_error(g, fd_grad(loss, o, t)) < 1e-6
    assert np.any(np.abs(o - t) < delta) and np.any(np.abs(o - t) > delta)
    o1 = o[:, :1].copy()
    v = loss.forward(o1, t[:, 0:1])
    assert loss.forward(o1, t[:, 0]) == v
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, o1, t[:, 0])) < 1e-6


def test_huber_is_mse_like_inside_delta_and_mae_like_outside():
    o = np.array([[0.1], [-0.2], [0.3]])
    t = np.zeros(3)
    assert Huber(1.0).forward(o, t) == pytest.approx(MeanSquaredError().forward(o, t) / 2,
                                                     rel=1e-15)
    big = np.array([[10.0], [-20.0]])
    assert Huber(1.0).forward(big, np.zeros(2)) == pytest.approx((9.5 + 19.5) / 2, rel=1e-15)


@pytest.mark.parametrize("bad,err", [(0.0, ValueError), (-1.0, ValueError), (np.inf, ValueError),
                                     (None, TypeError)])
def test_huber_delta_is_checked(bad, err):
    with pytest.raises(err, match="delta"):
        Huber(delta=bad)


def test_huber_targets_are_checked():
    with pytest.raises(ValueError, match=r"y must have shape \(4, 2\)"):
        Huber().forward(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        Huber().forward(np.zeros((2, 1)), [0.0, np.nan])


def test_huber_fits_and_evaluates_without_a_metric(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((64, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]]) + 3 * (rng.uniform(size=(64, 1)) < 0.1)
    model = fastnn.Sequential([fastnn.Dense(3, 1)], dtype="float64", seed=0)
    model.compile(fastnn.SGD(0.1), loss="huber")
    assert isinstance(model.loss, Huber) and model.loss.metric is None
    assert model.loss.score(X, y) is None
    before = model.evaluate(X, y)
    assert set(before) == {"loss"}
    history = model.fit(X, y, epochs=5, batch_size=16, verbose=0, shuffle=False)
    assert "loss" in history.history and not {"accuracy", "mae", "mse"} & set(history.history)
    assert model.evaluate(X, y)["loss"] < before["loss"]
    model.compile(fastnn.SGD(0.1), Huber(delta=0.5))
    model.save(tmp_path / "h.npz")
    back = fastnn.load(tmp_path / "h.npz")
    assert isinstance(back.loss, Huber) and back.loss.delta == 0.5


# -- KLDivergence ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 3), (9, 4), (130, 10), (20, 100)])
def test_kl_divergence_value_and_gradient_match_torch_formula(N, K, dtype):
    rng = np.random.default_rng([N, K, 7])
    z = (rng.standard_normal((N, K)) * 3).astype(dtype)
    t = prob_targets(rng, N, K)
    loss = KLDivergence()
    value = loss.forward(z, t)
    # KLDivLoss(reduction="batchmean")(log_softmax(z), t): the summed terms / N
    np.testing.assert_allclose(value, np_kl_rows(z, t).sum() / N, rtol=vtol(dtype) * 10)
    ref = (np.exp(log_softmax(z)) * t.sum(axis=1, keepdims=True) - t) / N
    g = loss.backward()
    assert g.shape == (N, K) and g.dtype == dtype
    np.testing.assert_allclose(g, ref, rtol=vtol(dtype) * 10, atol=vtol(dtype) / N)


def test_kl_divergence_gradient_finite_differences_with_zeros_in_the_target():
    rng = np.random.default_rng(8)
    z = rng.standard_normal((6, 5)) * 2
    t = prob_targets(rng, 6, 5)
    assert np.any(t == 0) and np.all(np.isfinite(t))
    loss = KLDivergence()
    loss.forward(z, t)
    assert max_rel_error(loss.backward().copy(), fd_grad(loss, z, t)) < 1e-6


def test_kl_divergence_one_hot_is_cross_entropy_and_zero_at_the_target():
    rng = np.random.default_rng(9)
    z = rng.standard_normal((12, 6)) * 3
    y = rng.integers(0, 6, size=12)
    kl, ce = KLDivergence(), SoftmaxCrossEntropy()
    assert kl.forward(z, np.eye(6)[y]) == pytest.approx(ce.forward(z, y), rel=1e-13)
    np.testing.assert_allclose(kl.backward(), ce.backward(), rtol=0, atol=1e-16)
    t = SoftmaxCrossEntropy.probabilities(z)
    assert abs(kl.forward(z, t)) < 1e-14
    assert np.abs(kl.backward()).max() < 1e-16
    np.testing.assert_array_equal(KLDivergence.probabilities(z), t)


@pytest.mark.parametrize("bad,match", [
    (lambda t: t[:, :3], r"y must have shape \(5, 4\)"),
    (lambda t: t[:, 0], "2 dimensions"),
    (lambda t: t * 1.01, "summing to 1"),
    (lambda t: np.where(t == t.max(), -0.1, t), ">= 0"),
    (lambda t: np.where(t == t.max(), np.nan, t), "NaN"),
])
def test_kl_divergence_targets_are_checked(bad, match):
    t = np.random.default_rng(0).dirichlet(np.ones(4), 5)
    with pytest.raises(ValueError, match=match):
        KLDivergence().forward(np.zeros((5, 4)), bad(t))


def test_kl_divergence_accepts_sums_within_the_tolerance():
    t = np.full((3, 3), 1 / 3)
    t[0, 0] += 0.5 * losses_mod.PROB_ATOL
    assert np.isfinite(KLDivergence().forward(np.zeros((3, 3)), t))


# -- sample weights -------------------------------------------------------------------------------
def _case(name, rng, N, K, dtype):
    """(loss, output, target) of each built-in loss with valid random data."""
    z = (rng.standard_normal((N, K)) * 2).astype(dtype)
    if name == "ce":
        return SoftmaxCrossEntropy(), z, rng.integers(0, K, size=N)
    if name == "ce_smooth":
        return SoftmaxCrossEntropy(0.2), z, rng.integers(0, K, size=N)
    if name == "bce":
        return BinaryCrossEntropy(), z, rng.uniform(0, 1, size=(N, K))
    if name == "mse":
        return MeanSquaredError(), z, rng.standard_normal((N, K))
    if name == "huber":
        return Huber(0.8), z, rng.standard_normal((N, K))
    return KLDivergence(), z, prob_targets(rng, N, K)


WEIGHTED = ["ce", "ce_smooth", "bce", "mse", "huber", "kl"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,K", [(1, 3), (7, 3), (300, 4)])
@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_loss_is_the_weighted_mean_of_sample_losses(name, N, K, dtype):
    """loss = sum_n w_n l_n / sum_n w_n, with l_n the loss of sample n alone (the mean over its
    K elements for the elementwise losses); gradient row n = w_n / sum(w) * N * (row n of the
    unweighted gradient)."""
    rng = np.random.default_rng([N, K, len(name)])
    loss, z, t = _case(name, rng, N, K, dtype)
    w = weights(rng, N) if N > 1 else np.array([2.5])
    value = loss.forward(z, t, sample_weight=w)
    g = loss.backward().copy()
    per_sample = np.array([loss.forward(z[n:n + 1], t[n:n + 1]) for n in range(N)])
    np.testing.assert_allclose(value, (w * per_sample).sum() / w.sum(), rtol=vtol(dtype) * 10)
    loss.forward(z, t)
    g_plain = loss.backward().copy()
    np.testing.assert_allclose(g, g_plain * (N * w / w.sum())[:, None], rtol=vtol(dtype) * 10,
                               atol=vtol(dtype) * np.abs(g_plain).max())
    assert np.all(g[w == 0] == 0)


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_gradient_finite_differences(name):
    rng = np.random.default_rng(len(name))
    loss, z, t = _case(name, rng, 6, 3, np.float64)
    if name == "huber":
        z[np.abs(np.abs(z - t) - 0.8) < 1e-3] += 0.01
    w = weights(rng, 6)
    loss.forward(z, t, sample_weight=w)
    g = loss.backward().copy()
    num = numerical_grad(lambda: loss.forward(z, t, sample_weight=w), z, h=1e-5)
    assert max_rel_error(g, num) < 1e-6


@pytest.mark.parametrize("name", ["ce", "mse", "huber", "kl"])
def test_unit_weights_are_bit_identical_to_no_weights(name):
    rng = np.random.default_rng(11)
    loss, z, t = _case(name, rng, 500, 10, np.float32)
    a = loss.forward(z, t)
    ga = loss.backward().copy()
    b = loss.forward(z, t, sample_weight=np.ones(500))
    assert a == b and np.array_equal(ga, loss.backward())


@pytest.mark.parametrize("name", WEIGHTED)
def test_integer_weights_equal_repeated_samples(name):
    """A weight of 2 counts a sample twice, a weight of 0 drops it (its target is ignored)."""
    rng = np.random.default_rng(12)
    loss, z, t = _case(name, rng, 5, 3, np.float64)
    w = np.array([2.0, 1.0, 0.0, 3.0, 1.0])
    idx = np.repeat(np.arange(5), w.astype(int))
    np.testing.assert_allclose(loss.forward(z, t, sample_weight=w), loss.forward(z[idx], t[idx]),
                               rtol=1e-13)
    t2 = t.copy()
    t2[2] = t[0]  # change the zero-weight sample's target: nothing changes
    assert loss.forward(z, t2, sample_weight=w) == loss.forward(z, t, sample_weight=w)


def test_weights_scale_invariance():
    rng = np.random.default_rng(13)
    loss, z, t = _case("bce", rng, 9, 2, np.float64)
    w = weights(rng, 9)
    a = loss.forward(z, t, sample_weight=w)
    assert loss.forward(z, t, sample_weight=4 * w) == pytest.approx(a, rel=1e-14)


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_losses_bit_identical_with_1_and_2_threads(name):
    rng = np.random.default_rng(14)
    loss, z, t = _case(name, rng, 4001, 10, np.float32)
    w = weights(rng, 4001)
    res = []
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        res.append((loss.forward(z, t, sample_weight=w), loss.backward().copy(),
                    loss.forward(z, t), loss.backward().copy()))
    assert res[0][0] == res[1][0] and np.array_equal(res[0][1], res[1][1])
    assert res[0][2] == res[1][2] and np.array_equal(res[0][3], res[1][3])


@pytest.mark.parametrize("bad,err,match", [
    (np.ones(4), ValueError, r"shape \(5,\)"),
    (np.ones((5, 1)), ValueError, r"shape \(5,\)"),
    (2.0, ValueError, "a scalar"),
    ([1, 1, np.nan, 1, 1], ValueError, "NaN"),
    ([1, 1, np.inf, 1, 1], ValueError, "NaN or inf"),
    ([1, 1, -0.5, 1, 1], ValueError, ">= 0"),
    (np.zeros(5), ValueError, "all 0"),
    (["a"] * 5, TypeError, "sample_weight"),
    (np.ones(5, dtype=bool), TypeError, "sample_weight"),
])
@pytest.mark.parametrize("name", WEIGHTED)
def test_sample_weight_is_checked(name, bad, err, match):
    loss, z, t = _case(name, np.random.default_rng(0), 5, 3, np.float64)
    with pytest.raises(err, match=match):
        loss.forward(z, t, sample_weight=bad)
    with pytest.raises(err, match=match):
        loss.check_sample_weight(bad, 5)


def test_check_sample_weight_returns_float64_contiguous():
    w = SoftmaxCrossEntropy().check_sample_weight(np.arange(1, 11, dtype=np.int32)[::2], 5)
    assert w.dtype == np.float64 and w.flags.c_contiguous
    np.testing.assert_array_equal(w, [1, 3, 5, 7, 9])


class _PlainMSE(fastnn.Loss):  # private name: not registered
    def prepare_target(self, target, output_shape):
        return np.asarray(target, dtype=np.float64).reshape(output_shape)

    def forward(self, output, target, prepared=False):
        d = output - (target if prepared else self.prepare_target(target, output.shape))
        self._grad = (2 / d.size * d).astype(output.dtype)
        return float(np.mean(d ** 2))


def test_loss_without_sample_weight_support_gets_a_clear_error():
    loss = _PlainMSE()
    z, t = np.ones((4, 1)), np.zeros(4)
    assert loss(z, t) == 1.0  # unweighted through __call__: works
    with pytest.raises(TypeError, match="_PlainMSE does not support sample_weight"):
        loss(z, t, sample_weight=np.ones(4))
    with pytest.raises(TypeError, match="supports_sample_weight = True"):
        loss.check_sample_weight(np.ones(4), 4)
    model = fastnn.Sequential([fastnn.Dense(2, 1)], dtype="float64", seed=0)
    model.compile("sgd", _PlainMSE())
    X = np.ones((4, 2))
    model.train_on_batch(X, t)
    weights_before = model.layers[0].params["weight"].copy()
    with pytest.raises(TypeError, match="_PlainMSE does not support sample_weight"):
        model.train_on_batch(X, t, sample_weight=np.ones(4))
    assert np.array_equal(model.layers[0].params["weight"], weights_before)
    # the built-in losses take weights through the model
    model.compile("sgd", "mse")
    assert np.isfinite(model.train_on_batch(X, t, sample_weight=[1, 2, 0, 1]))


def test_builtin_losses_declare_sample_weight_support():
    assert not fastnn.Loss.supports_sample_weight
    for cls in (SoftmaxCrossEntropy, BinaryCrossEntropy, MeanSquaredError, Huber, KLDivergence):
        assert cls.supports_sample_weight


# -- registry -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,cls", [("huber", Huber), ("huber_loss", Huber), ("Huber", Huber),
                                      ("kl_divergence", KLDivergence), ("kld", KLDivergence),
                                      ("KLD", KLDivergence), ("kl_div", KLDivergence),
                                      ("kullback_leibler_divergence", KLDivergence),
                                      ("KLDivergence", KLDivergence)])
def test_new_losses_by_name(name, cls):
    assert type(losses_mod.get(name)) is cls
    assert fastnn.LOSSES[name] is cls


def test_new_losses_are_exported():
    assert fastnn.Huber is Huber and fastnn.KLDivergence is KLDivergence
    assert fastnn.entropy is losses_mod.entropy
    assert fastnn.kl_divergence is losses_mod.kl_divergence


# -- entropy / kl_divergence helpers --------------------------------------------------------------
def test_entropy_matches_the_formula():
    rng = np.random.default_rng(15)
    p = rng.dirichlet(np.ones(6), size=(3, 4))
    p[0, 0] = np.eye(6)[2]  # 0 log 0 = 0: entropy 0
    h = losses_mod.entropy(p)
    assert h.shape == (3, 4)
    ref = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(axis=-1)
    np.testing.assert_allclose(h, ref, rtol=1e-14)
    assert h[0, 0] == 0.0
    assert losses_mod.entropy(np.full(8, 1 / 8)) == pytest.approx(np.log(8), rel=1e-15)
    assert isinstance(losses_mod.entropy([0.5, 0.5]), float)
    np.testing.assert_allclose(losses_mod.entropy(np.moveaxis(p, -1, 0), axis=0), h, rtol=1e-15)


def test_kl_divergence_helper_matches_the_formula():
    rng = np.random.default_rng(16)
    p = rng.dirichlet(np.ones(5), size=7)
    q = rng.dirichlet(np.ones(5), size=7)
    p[0] = [0.5, 0.5, 0, 0, 0]
    kl = losses_mod.kl_divergence(p, q)
    ref = (np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / q), 0)).sum(axis=1)
    np.testing.assert_allclose(kl, ref, rtol=1e-13)
    assert np.all(kl > 0)
    np.testing.assert_allclose(losses_mod.kl_divergence(p, p), 0, atol=1e-15)
    # q = 0 where p > 0: infinite; p = 0 where q > 0: finite
    assert losses_mod.kl_divergence([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert losses_mod.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2))
    # broadcasting: one q for every row of p, along axis 0 as well
    np.testing.assert_allclose(losses_mod.kl_divergence(p, q[0]),
                               [losses_mod.kl_divergence(r, q[0]) for r in p], rtol=1e-15)
    np.testing.assert_allclose(losses_mod.kl_divergence(p.T, q.T, axis=0), kl, rtol=1e-15)


def test_the_helpers_match_the_loss():
    """KLDivergence's loss is the helper's KL of the target from the softmax, averaged."""
    rng = np.random.default_rng(17)
    z = rng.standard_normal((10, 4)) * 2
    t = prob_targets(rng, 10, 4)
    q = SoftmaxCrossEntropy.probabilities(z)
    np.testing.assert_allclose(KLDivergence().forward(z, t),
                               np.mean(losses_mod.kl_divergence(t, q)), rtol=1e-12)
    # cross-entropy of soft targets = entropy + KL
    ce = -(t * log_softmax(z)).sum(axis=1)
    np.testing.assert_allclose(ce, losses_mod.entropy(t) + losses_mod.kl_divergence(t, q),
                               rtol=1e-12)


@pytest.mark.parametrize("call,err,match", [
    (lambda: losses_mod.entropy([0.5, 0.6]), ValueError, "summing to 1"),
    (lambda: losses_mod.entropy([1.5, -0.5]), ValueError, ">= 0"),
    (lambda: losses_mod.entropy([0.5, np.nan]), ValueError, "NaN"),
    (lambda: losses_mod.entropy(1.0), ValueError, "at least 1 dimension"),
    (lambda: losses_mod.entropy([0.5, 0.5], axis=1), ValueError, "axis 1 is out of range"),
    (lambda: losses_mod.entropy([0.5, 0.5], axis=0.5), TypeError, "axis"),
    (lambda: losses_mod.entropy(["a", "b"]), TypeError, "p"),
    (lambda: losses_mod.kl_divergence([1.0], 1.0), ValueError, "q must have at least 1"),
    (lambda: losses_mod.kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5]), ValueError, "broadcast"),
    (lambda: losses_mod.kl_divergence([0.5, 0.5], [0.2, 0.3]), ValueError, "q must hold"),
    (lambda: losses_mod.kl_divergence([[0.5, 0.5]], [[0.5, 0.5]], axis=0), ValueError,
     "p must hold"),
])
def test_helpers_check_their_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


@pytest.mark.parametrize("loss", ["kld", "huber"])
def test_random_batch_fits_the_new_losses(loss):
    """fastnn.datasets.random_batch (profile, smoke tests) makes targets the loss accepts."""
    model = fastnn.Sequential([fastnn.Dense(3, 4)], dtype="float32", seed=0).compile("sgd", loss)
    X, y = fastnn.datasets.random_batch(model, 16, seed=1)
    assert y.shape == (16, 4)
    assert np.isfinite(model.train_on_batch(X, y))
