"""Sequential: fit / train_on_batch / evaluate / predict against NumPy, determinism, NaN handling,
callbacks, gradient_check, and logistic / softmax regression on separable problems."""
import re

import numpy as np
import pytest

import fastnn
from fastnn import (SGD, Activation, Adam, BinaryCrossEntropy, Callback, Dense, EarlyStopping,
                    MeanSquaredError, Sequential, SoftmaxCrossEntropy)

from conftest import softmax, softmax_ce


# -- references and data ------------------------------------------------------------------------
def blobs(rng, n, d=5, k=4, spread=4.0, centers=None):
    """k well separated Gaussian blobs in d dimensions."""
    C = rng.standard_normal((k, d)) * spread if centers is None else centers
    y = rng.integers(0, k, size=n)
    return C[y] + rng.standard_normal((n, d)), y, C


def linearly_separable_2d(rng, n, margin=0.05):
    w, c = np.array([1.0, -2.0]), 0.3
    X = rng.uniform(-1, 1, size=(6 * n, 2))
    s = (X @ w + c) / np.linalg.norm(w)
    keep = np.abs(s) > margin
    return X[keep][:n], (s[keep][:n] > 0).astype(np.float64)


def mlp(seed=0, dtype="float32", n_in=20, hidden=32, k=3):
    return Sequential([Dense(n_in, hidden, activation="relu"), Dense(hidden, hidden, "tanh"),
                       Dense(hidden, k)], dtype=dtype, seed=seed)


def small_problem(seed=0, n=300, n_in=20, k=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(np.float32)
    y = (X[:, :k] + 0.1 * rng.standard_normal((n, k))).argmax(axis=1)
    return X, y


def flat_weights(model):
    return [p for layer in model.get_weights() for p in layer.values()]


def same_weights(a, b):
    return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(flat_weights(a), b))


class Snapshots(Callback):
    """Records the weights after every applied batch and at every epoch end."""

    def __init__(self):
        self.after_batch, self.after_epoch, self.batches_in_epoch = [], [], [0]

    def on_train_begin(self, logs=None):
        self.initial = flat_weights(self.model)

    def on_batch_end(self, batch, logs=None):
        self.after_batch.append(flat_weights(self.model))
        self.batches_in_epoch[-1] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch.append(flat_weights(self.model))
        self.batches_in_epoch.append(0)


# -- construction, weights ----------------------------------------------------------------------
def test_sequential_construction_errors():
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        Sequential([Dense(3, 2), "relu"])
    with pytest.raises(ValueError, match="layer 1"):
        Sequential([Dense(4, 3), Dense(5, 2)])
    with pytest.raises(TypeError, match="dtype"):
        Sequential([Dense(4, 3)], dtype="float16")
    with pytest.raises(TypeError, match="dtype"):
        Sequential([Dense(4, 3)], dtype="int32")


def test_get_set_weights_round_trip_and_errors():
    a, b = mlp(seed=1), mlp(seed=2)
    assert not same_weights(a, flat_weights(b))
    b.set_weights(a.get_weights())
    assert same_weights(a, flat_weights(b))
    w = a.get_weights()
    w[0]["weight"][...] = 0  # get_weights returns copies
    assert not np.array_equal(a.layers[0].weight, w[0]["weight"])
    with pytest.raises(ValueError, match="3 layers"):
        b.set_weights(w[:2])
    bad = a.get_weights()
    bad[1]["weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="shape"):
        b.set_weights(bad)
    bad = a.get_weights()
    bad[0]["kernel"] = bad[0].pop("weight")
    with pytest.raises(ValueError, match="parameters"):
        b.set_weights(bad)


def test_count_params_and_summary():
    m = mlp()
    assert m.count_params() == 20 * 32 + 32 + 32 * 32 + 32 + 32 * 3 + 3
    assert f"{m.count_params():,}" in m.summary(print_fn=None)


def test_compile_by_name():
    m = mlp().compile("adam", "mse")
    assert isinstance(m.optimizer, Adam) and isinstance(m.loss, MeanSquaredError)
    m.compile(optimizer=SGD(0.1), loss="binary_cross_entropy")
    assert isinstance(m.loss, BinaryCrossEntropy)
    with pytest.raises(ValueError, match="optimizer"):
        m.compile("lbfgs", "mse")
    with pytest.raises(ValueError, match="loss"):
        m.compile("sgd", "hinge")


# -- one step against NumPy ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_on_batch_is_one_sgd_step(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((13, 5))
    y = rng.integers(0, 4, size=13)
    m = Sequential([Dense(5, 4)], dtype=dtype, seed=0).compile(SGD(0.3), SoftmaxCrossEntropy())
    W, b = m.layers[0].weight.astype(np.float64), m.layers[0].bias.astype(np.float64)
    Xd = X.astype(dtype).astype(np.float64)
    Z = Xd @ W + b
    loss = m.train_on_batch(X, y)
    assert isinstance(loss, float)
    t = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(loss, softmax_ce(Z, y), rtol=t)
    G = (softmax(Z) - np.eye(4)[y]) / 13
    np.testing.assert_allclose(m.layers[0].weight, W - 0.3 * Xd.T @ G, rtol=t, atol=t)
    np.testing.assert_allclose(m.layers[0].bias, b - 0.3 * G.sum(axis=0), rtol=t, atol=t)


def test_forward_backward_fill_gradients():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 5))
    m = Sequential([Dense(5, 3, activation="tanh")], dtype="float64", seed=0)
    W, b = m.layers[0].weight.copy(), m.layers[0].bias.copy()
    out = m.forward(X)
    np.testing.assert_allclose(out, np.tanh(X @ W + b), rtol=1e-12)
    np.testing.assert_array_equal(out, m.predict(X))
    R = rng.standard_normal((9, 3))
    m.forward(X)
    m.backward(R)
    dZ = R * (1 - np.tanh(X @ W + b) ** 2)
    np.testing.assert_allclose(m.layers[0].grads["weight"], X.T @ dZ, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.layers[0].grads["bias"], dZ.sum(axis=0), rtol=1e-12)


def test_fit_without_shuffle_equals_manual_train_on_batch_loop():
    X, y = small_problem(n=250)
    a = mlp(seed=3).compile(SGD(0.05, momentum=0.9), SoftmaxCrossEntropy())
    b = mlp(seed=3).compile(SGD(0.05, momentum=0.9), SoftmaxCrossEntropy())
    h = a.fit(X, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    for _ in range(2):
        total = 0.0
        for s in range(0, 250, 32):
            total += b.train_on_batch(X[s:s + 32], y[s:s + 32]) * len(y[s:s + 32])
    assert same_weights(a, flat_weights(b))
    assert h.history["loss"][-1] == pytest.approx(total / 250, rel=1e-12)


# -- fit / History ------------------------------------------------------------------------------
def test_fit_returns_history_and_learns():
    X, y = small_problem(n=2000)
    Xv, yv = small_problem(seed=1, n=300)
    m = mlp().compile(Adam(1e-2), SoftmaxCrossEntropy())
    before = m.evaluate(Xv, yv)
    h = m.fit(X, y, epochs=4, batch_size=32, validation_data=(Xv, yv), verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert h.epoch == [0, 1, 2, 3]
    assert all(len(v) == 4 for v in h.history.values())
    assert all(s > 0 for s in h.history["seconds"])
    assert h.history["loss"][-1] < 0.6 * h.history["loss"][0]
    after = m.evaluate(Xv, yv)
    assert h.history["val_loss"][-1] == after["loss"]
    assert h.history["val_accuracy"][-1] == after["accuracy"]
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.85
    assert 0 <= min(h.history["accuracy"]) and max(h.history["accuracy"]) <= 1


def test_fit_mse_history_has_no_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    t = X @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.1
    m = Sequential([Dense(4, 1)], dtype="float64", seed=0).compile(Adam(0.05), "mse")
    h = m.fit(X, t[:, 0], epochs=30, batch_size=20, validation_data=(X, t), verbose=0)
    assert set(h.history) == {"loss", "val_loss", "seconds"}
    assert h.history["val_loss"][-1] < 1e-3  # linear regression recovers the exact map
    np.testing.assert_allclose(m.layers[0].weight[:, 0], [1, -2, 0.5, 0], atol=0.03)
    assert m.evaluate(X, t) == {"loss": pytest.approx(np.mean((m.predict(X) - t) ** 2))}


def test_initial_epoch_and_verbose_output(capsys):
    X, y = small_problem(n=64)
    m = mlp().compile(SGD(0.01), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=4, initial_epoch=2, batch_size=32, verbose=2)
    assert h.epoch == [2, 3]
    out = capsys.readouterr().out
    assert "epoch 3/4" in out and "epoch 4/4" in out and "loss=" in out
    m.fit(X, y, epochs=1, batch_size=32, verbose=1)
    assert "epoch 1/1" in capsys.readouterr().out
    m.fit(X, y, epochs=1, batch_size=32, verbose=0)
    assert capsys.readouterr().out == ""


# -- evaluate / predict -------------------------------------------------------------------------
def test_evaluate_matches_numpy_over_several_chunks():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2500, 20))
    y = rng.integers(0, 3, size=2500)
    m = mlp(dtype="float64").compile("sgd", SoftmaxCrossEntropy())
    res = m.evaluate(X, y)
    Z = m.predict(X)
    assert set(res) == {"loss", "accuracy"}
    assert res["loss"] == pytest.approx(softmax_ce(Z, y), rel=1e-12)
    assert res["accuracy"] == pytest.approx(np.mean(Z.argmax(axis=1) == y), abs=1e-12)
    assert m.evaluate(X, y, batch_size=333)["loss"] == pytest.approx(res["loss"], rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 7, 2500])
def test_predict_shapes_dtype_and_chunking(n, dtype):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 20))
    m = mlp(dtype=dtype, k=5).compile("sgd", SoftmaxCrossEntropy())
    Z = m.predict(X)
    assert Z.shape == (n, 5) and Z.dtype == np.dtype(dtype)
    # a NumPy forward pass of the same weights
    w = m.get_weights()
    h = np.maximum(X @ w[0]["weight"].astype(np.float64) + w[0]["bias"], 0)
    h = np.tanh(h @ w[1]["weight"].astype(np.float64) + w[1]["bias"])
    ref = h @ w[2]["weight"].astype(np.float64) + w[2]["bias"]
    t = 1e-10 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(Z, ref, rtol=t, atol=t)
    np.testing.assert_allclose(m.predict(X, batch_size=3), Z, rtol=t, atol=t)
    P = m.predict_proba(X)
    assert P.shape == (n, 5) and P.dtype == np.dtype(dtype)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(P, softmax(Z.astype(np.float64)), rtol=t, atol=t)
    c = m.predict_classes(X)
    assert c.dtype == np.int64 and np.array_equal(c, Z.argmax(axis=1))
    # the result is a fresh array, not a layer buffer overwritten by the next call
    Z2 = m.predict(X + 1.0)
    assert not np.array_equal(Z, Z2)
    np.testing.assert_array_equal(Z, m.predict(X))


def test_predict_proba_binary_and_errors():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 4))
    m = Sequential([Dense(4, 1)], dtype="float64", seed=0).compile("sgd", BinaryCrossEntropy())
    z = m.predict(X)
    np.testing.assert_allclose(m.predict_proba(X), 1 / (1 + np.exp(-z)), rtol=1e-12)
    assert np.array_equal(m.predict_classes(X), (z[:, 0] > 0).astype(int))
    with pytest.raises(RuntimeError, match="predict_proba"):
        Sequential([Dense(4, 1)]).compile("sgd", "mse").predict_proba(X)
    with pytest.raises(RuntimeError, match="predict_proba"):
        Sequential([Dense(4, 1)]).predict_proba(X)


# -- determinism --------------------------------------------------------------------------------
def _fit_weights(seed, threads, fit_seed=None):
    fastnn.set_num_threads(threads)
    X, y = small_problem(n=520, n_in=64)
    m = Sequential([Dense(64, 128, activation="relu"), Dense(128, 96, activation="tanh"),
                    Dense(96, 3)], seed=seed)
    m.compile(Adam(1e-3), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=2, batch_size=64, seed=fit_seed, verbose=0)
    return flat_weights(m), h.history["loss"]


def test_fit_same_seed_bit_identical_and_thread_independent():
    # batch 64 x 64 x 128 multiply-adds: above the kernels' parallel threshold
    w1, l1 = _fit_weights(0, 1)
    w1b, l1b = _fit_weights(0, 1)
    w2, l2 = _fit_weights(0, 2)
    assert all(np.array_equal(a, b) for a, b in zip(w1, w1b)) and l1 == l1b
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2)) and l1 == l2
    w3, _ = _fit_weights(1, 2)
    assert not np.array_equal(w1[0], w3[0])
    w4, _ = _fit_weights(0, 2, fit_seed=123)  # same init, other shuffling
    assert not np.array_equal(w1[0], w4[0])


# -- NaN / inf ----------------------------------------------------------------------------------
def _exploding_model():
    # no bounded activation: a huge learning rate overflows the weights within a few batches
    return Sequential([Dense(20, 32, activation="relu"), Dense(32, 3)], seed=0).compile(
        SGD(1e12), SoftmaxCrossEntropy())


def test_nan_loss_raises_naming_epoch_and_batch_weights_from_before():
    X, y = small_problem(n=256)
    m = _exploding_model()
    snap = Snapshots()
    with pytest.raises(FloatingPointError) as info:
        m.fit(X, y, epochs=3, batch_size=32, callbacks=[snap], verbose=0)
    match = re.search(r"epoch (\d+), batch (\d+)", str(info.value))
    assert match, str(info.value)
    epoch, batch = int(match.group(1)), int(match.group(2))
    assert epoch == len(snap.after_epoch) + 1
    assert batch == snap.batches_in_epoch[-1] + 1
    last = snap.after_batch[-1] if snap.after_batch else snap.initial
    assert same_weights(m, last)
    assert all(np.isfinite(w).all() for w in flat_weights(m))


def test_nan_injected_weight_raises_at_first_batch_weights_unchanged():
    X, y = small_problem(n=96)
    m = mlp(seed=0).compile(Adam(1e-3), SoftmaxCrossEntropy())
    m.layers[1].params["weight"][2, 3] = np.nan
    before = flat_weights(m)
    with pytest.raises(FloatingPointError, match="epoch 1, batch 1"):
        m.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert same_weights(m, before)
    assert m.optimizer.iterations == 0
    with pytest.raises(FloatingPointError, match="not applied"):
        m.train_on_batch(X[:8], y[:8])
    assert same_weights(m, before)


def test_nan_in_second_epoch_is_named():
    X, y = small_problem(n=64)
    m = mlp(seed=0).compile(SGD(0.01), SoftmaxCrossEntropy())

    class Poison(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.layers[2].params["bias"][0] = np.inf

    with pytest.raises(FloatingPointError, match="epoch 2, batch 1"):
        m.fit(X, y, epochs=3, batch_size=32, callbacks=[Poison()], verbose=0)


def test_on_nan_stop_warns_and_stops():
    X, y = small_problem(n=256)
    m = _exploding_model()
    snap = Snapshots()
    with pytest.warns(RuntimeWarning, match=r"epoch 1, batch \d+.*training stopped"):
        h = m.fit(X, y, epochs=5, batch_size=32, callbacks=[snap], on_nan="stop", verbose=0)
    assert len(h.epoch) == 1
    assert m.stop_training
    assert same_weights(m, snap.after_batch[-1])
    assert all(np.isfinite(w).all() for w in flat_weights(m))
    assert np.isfinite(h.history["loss"][0])


def test_on_nan_stop_at_first_batch_does_not_report_zero_loss():
    X, y = small_problem(n=64)
    m = mlp(seed=0).compile(SGD(0.01), SoftmaxCrossEntropy())
    m.layers[0].params["weight"][0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="epoch 1, batch 1"):
        h = m.fit(X, y, epochs=3, batch_size=32, on_nan="stop", verbose=0)
    losses = h.history.get("loss", [])
    assert not losses or not np.isfinite(losses[-1])


# -- callbacks ----------------------------------------------------------------------------------
class _Holder:
    stop_training = False

    def get_weights(self):
        return []

    def set_weights(self, w):
        pass


def _feed(es, values, key):
    es.model = _Holder()
    es.on_train_begin()
    for epoch, v in enumerate(values):
        es.on_epoch_end(epoch, {key: v})
        if es.model.stop_training:
            return epoch
    return None


def test_early_stopping_min_and_max_modes():
    assert _feed(EarlyStopping("val_loss", patience=0), [1.0, 0.9, 0.8, 0.85, 0.7], "val_loss") == 3
    assert _feed(EarlyStopping("val_loss", patience=5), [1.0, 0.9, 0.8, 0.7], "val_loss") is None
    assert _feed(EarlyStopping("val_accuracy", patience=0), [0.5, 0.6, 0.55], "val_accuracy") == 2
    assert _feed(EarlyStopping("val_accuracy", patience=0), [0.5, 0.6, 0.7], "val_accuracy") is None
    # min_delta: an improvement smaller than min_delta does not count
    assert _feed(EarlyStopping("loss", min_delta=0.1, patience=0), [1.0, 0.95], "loss") == 1
    with pytest.raises(KeyError, match="val_loss"):
        _feed(EarlyStopping("val_loss"), [1.0], "loss")


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    # improvement at epoch 0, then none: with patience=2 training stops at epoch 2 (Keras)
    assert _feed(EarlyStopping("loss", patience=2), [1.0, 1.1, 1.2, 1.3, 1.4], "loss") == 2


def test_early_stopping_in_fit_restores_best_weights():
    X, y = small_problem(n=128)
    m = mlp(seed=0).compile(SGD(0.05), SoftmaxCrossEntropy())
    snap = Snapshots()
    # min_delta is so large that only the first epoch counts as an improvement
    es = EarlyStopping(monitor="val_loss", min_delta=1e9, patience=0, restore_best_weights=True)
    h = m.fit(X, y, epochs=10, batch_size=32, validation_data=(X, y), callbacks=[snap, es],
              verbose=0)
    assert len(h.epoch) == 2 and es.stopped_epoch == 1
    assert same_weights(m, snap.after_epoch[0])
    assert not same_weights(m, snap.after_epoch[1])


def test_callbacks_must_be_callbacks():
    X, y = small_problem(n=64)
    m = mlp().compile("sgd", SoftmaxCrossEntropy())
    with pytest.raises(TypeError, match="callbacks"):
        m.fit(X, y, callbacks=[lambda: None], verbose=0)


# -- gradient_check -----------------------------------------------------------------------------
@pytest.mark.parametrize("loss,target", [
    (SoftmaxCrossEntropy(), "labels"), (BinaryCrossEntropy(), "binary"),
    (MeanSquaredError(), "real"),
])
def test_gradient_check_small_mlp_float32(loss, target):
    rng = np.random.default_rng(4)
    m = Sequential([Dense(6, 8, activation="tanh"), Dense(8, 7, activation="relu"),
                    Activation("sigmoid"), Dense(7, 5, activation="leaky_relu", alpha=0.1),
                    Dense(5, 3)], dtype="float32", seed=4).compile("sgd", loss)
    X = rng.standard_normal((5, 6))
    y = {"labels": rng.integers(0, 3, size=5),
         "binary": rng.integers(0, 2, size=(5, 3)).astype(float),
         "real": rng.standard_normal((5, 3))}[target]
    errors = fastnn.gradient_check(m, X, y)
    assert set(errors) == {f"{i}.{k}" for i in (0, 1, 3, 4) for k in ("weight", "bias")}
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_softmax_output_with_mse():
    rng = np.random.default_rng(5)
    m = Sequential([Dense(4, 6, activation="tanh"), Dense(6, 3, activation="softmax")],
                   seed=1).compile("sgd", "mse")
    errors = fastnn.gradient_check(m, rng.standard_normal((4, 4)), rng.uniform(size=(4, 3)))
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_detects_a_wrong_gradient(monkeypatch):
    rng = np.random.default_rng(6)
    m = Sequential([Dense(4, 5, activation="tanh"), Dense(5, 3)], seed=0).compile(
        "sgd", SoftmaxCrossEntropy())
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, size=6)
    original = Dense.backward

    def wrong_backward(self, grad_output):
        out = original(self, grad_output)
        self.grads["weight"] *= 1.01
        return out

    monkeypatch.setattr(Dense, "backward", wrong_backward)
    errors = fastnn.gradient_check(m, X, y)
    assert errors["0.weight"] > 1e-3 and errors["1.weight"] > 1e-3
    assert errors["1.bias"] < 1e-6


def test_gradient_check_needs_a_loss():
    with pytest.raises(RuntimeError, match="compile"):
        fastnn.gradient_check(mlp(), np.zeros((2, 20)), np.zeros(2, dtype=int))


# -- regression on separable problems -----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logistic_regression_separable_2d(dtype):
    rng = np.random.default_rng(0)
    X, y = linearly_separable_2d(rng, 400)
    Xt, yt = linearly_separable_2d(rng, 400)
    m = Sequential([Dense(2, 1)], dtype=dtype, seed=0).compile(Adam(0.05), BinaryCrossEntropy())
    m.fit(X, y, epochs=60, batch_size=32, verbose=0)
    assert m.evaluate(X, y)["accuracy"] == 1.0
    assert np.mean(m.predict_classes(X) == y) == 1.0
    assert np.mean(m.predict_classes(Xt) == yt) >= 0.99
    # the learned boundary is the true one: w proportional to (1, -2)
    w = m.layers[0].weight[:, 0].astype(np.float64)
    cos = w @ np.array([1.0, -2.0]) / (np.linalg.norm(w) * np.sqrt(5))
    assert cos > 0.99


def test_softmax_regression_separable_blobs():
    rng = np.random.default_rng(1)
    X, y, C = blobs(rng, 800, d=5, k=4, spread=8.0)
    Xt, yt, _ = blobs(rng, 400, centers=C)
    # the problem is separable: the nearest-centre rule is right on every held-out point
    nearest = ((Xt[:, None, :] - C[None]) ** 2).sum(axis=-1).argmin(axis=1)
    assert np.array_equal(nearest, yt)
    m = Sequential([Dense(5, 4)], seed=0).compile(Adam(0.05), SoftmaxCrossEntropy())
    h = m.fit(X, y, epochs=20, batch_size=32, verbose=0)
    assert h.history["accuracy"][-1] >= 0.99
    assert m.evaluate(Xt, yt)["accuracy"] >= 0.99
    assert np.mean(m.predict_classes(Xt) == yt) >= 0.99
    # one-hot targets train the same model bit for bit
    m2 = Sequential([Dense(5, 4)], seed=0).compile(Adam(0.05), SoftmaxCrossEntropy())
    m2.fit(X, np.eye(4)[y], epochs=20, batch_size=32, verbose=0)
    assert same_weights(m, flat_weights(m2))


# -- the model owns its parameters (one flat buffer; arrays change in place only) ----------------
def test_parameters_are_views_of_the_models_flat_buffer_and_change_in_place():
    m = Sequential([Dense(4, 3, activation="relu"), Dense(3, 2)], seed=0)
    flat = m._params.params
    for layer in m.layers:
        for p in layer.params.values():
            assert np.shares_memory(p, flat)
    w = m.layers[0].params["weight"]
    new = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(4, 3))
    m.layers[0].params["weight"] = new  # float64, Fortran order: copied into the view
    assert m.layers[0].params["weight"] is w and w.dtype == np.float32 and w.flags.c_contiguous
    np.testing.assert_array_equal(w, new.astype(np.float32))
    m.set_weights(m.get_weights())
    assert m.layers[0].params["weight"] is w


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros((3, 4)), ValueError, r"Dense.weight must have shape \(4, 3\), got \(3, 4\)"),
    (np.array([["a"] * 3] * 4), TypeError, "real numeric"),
])
def test_assigning_a_bad_parameter_array_names_the_parameter(bad, err, match):
    m = Sequential([Dense(4, 3)], seed=0)
    with pytest.raises(err, match=match):
        m.layers[0].params["weight"] = bad
    with pytest.raises(KeyError, match="no parameter 'kernel'"):
        m.layers[0].params["kernel"] = np.zeros((4, 3))
    with pytest.raises(TypeError, match="in place only"):
        del m.layers[0].params["weight"]


def test_a_layer_cannot_belong_to_two_models():
    shared = Dense(4, 3)
    first = Sequential([shared], seed=0)
    before = first.get_weights()
    with pytest.raises(ValueError, match="already belongs to another model"):
        Sequential([shared, Dense(3, 2)], seed=1)
    np.testing.assert_array_equal(first.get_weights()[0]["weight"], before[0]["weight"])
    with pytest.raises(ValueError, match="appears twice"):
        Sequential([Dense(3, 3), *([Dense(3, 3)] * 2)])


def test_deep_copy_owns_new_buffers_and_trains_independently():
    import copy

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 4)), rng.integers(0, 2, 16)
    m = Sequential([Dense(4, 5, activation="tanh"), Dense(5, 2)], seed=0)
    m.compile(Adam(1e-2), SoftmaxCrossEntropy())
    m.train_on_batch(X, y)
    c = copy.deepcopy(m)
    assert not np.shares_memory(c._params.params, m._params.params)
    for layer in c.layers:
        for p in layer.params.values():
            assert np.shares_memory(p, c._params.params)
    c.train_on_batch(X, y)
    m.train_on_batch(X, y)
    for a, b in zip(c.get_weights(), m.get_weights()):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])  # same state, same step


# -- fastnn's own words for bad input (Reliability II) --------------------------------------------
def test_ragged_input_is_a_value_error_in_fastnns_words():
    m = Sequential([Dense(4, 2)], seed=0).compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"X is ragged: rows of lengths \[2, 4\]"):
        m.predict([[1., 2., 3., 4.], [1., 2.]])
    with pytest.raises(ValueError, match=r"y is ragged"):
        m.fit(np.zeros((2, 4)), [[1.0, 2.0], [1.0]], verbose=0)


@pytest.mark.parametrize("make", [lambda: fastnn.MaxPool2D(2), lambda: fastnn.AvgPool2D(2),
                                  lambda: fastnn.Flatten(), lambda: Activation("tanh"),
                                  lambda: Dense(4, 3)])
def test_unbuilt_layer_keeps_a_float64_inputs_dtype(make):
    layer = make()
    x = np.random.default_rng(0).standard_normal((2, 4) if isinstance(layer, (Dense, Activation))
                                                else (2, 4, 4, 3))
    assert layer(x).dtype == np.float64


@pytest.mark.parametrize("cb", [lambda: EarlyStopping(),
                                lambda: fastnn.ModelCheckpoint("unused.npz", save_best_only=True),
                                lambda: EarlyStopping(monitor="accuracy")])
def test_callback_monitoring_a_metric_fit_never_logs_fails_before_training(cb):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
    m = Sequential([Dense(4, 2)], seed=0).compile(SGD(0.1), "mse")  # mse: no accuracy
    before = m.get_weights()
    with pytest.raises(ValueError, match="fit will not log"):
        m.fit(X, y, epochs=2, batch_size=4, verbose=0, callbacks=[cb()])
    assert m.epochs_completed == 0
    np.testing.assert_array_equal(m.get_weights()[0]["weight"], before[0]["weight"])


# -- sample_weight / class_weight ---------------------------------------------------------------
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "huber"])
def test_integer_sample_weights_equal_repeating_the_samples(loss):
    """The weighted mean sum(w l) / sum(w) with integer weights is the plain mean over the batch
    with each sample repeated w times: one SGD step gives the same loss and weights (float64)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 5))
    y = rng.integers(0, 3, 12)
    target = y if loss == "softmax_cross_entropy" else rng.standard_normal((12, 3))
    w = rng.integers(0, 4, 12).astype(np.float64)
    w[0] = 2.0
    a = Sequential([Dense(5, 8, "tanh"), Dense(8, 3)], dtype="float64", seed=0)
    b = Sequential([Dense(5, 8, "tanh"), Dense(8, 3)], dtype="float64", seed=0)
    a.compile(SGD(0.1), loss)
    b.compile(SGD(0.1), loss)
    la = a.train_on_batch(X, target, sample_weight=w)
    rep = np.repeat(np.arange(12), w.astype(int))
    lb = b.train_on_batch(X[rep], target[rep])
    assert la == pytest.approx(lb, rel=1e-12)
    for pa, pb in zip(flat_weights(a), flat_weights(b)):
        np.testing.assert_allclose(pa, pb, rtol=1e-12, atol=1e-14)


def test_class_weight_is_the_sample_weight_of_each_class():
    X, y = small_problem(n=90)
    a, b = mlp(), mlp()
    a.compile(SGD(0.05), "softmax_cross_entropy")
    b.compile(SGD(0.05), "softmax_cross_entropy")
    cw = {0: 0.5, 2: 3.0}  # class 1 not listed: weight 1
    ha = a.fit(X, y, epochs=2, batch_size=16, class_weight=cw, sample_weight=np.full(90, 2.0),
               verbose=0, seed=1)
    table = np.array([0.5, 1.0, 3.0])
    hb = b.fit(X, y, epochs=2, batch_size=16, sample_weight=2.0 * table[y], verbose=0, seed=1)
    assert ha.history["loss"] == hb.history["loss"]
    assert same_weights(a, flat_weights(b))
    # binary targets: the class is target >= 0.5
    Xb = X[:, :4]
    t = (Xb[:, 0] > 0).astype(np.float64)
    c = Sequential([Dense(4, 1)], seed=0).compile(SGD(0.1), "binary_cross_entropy")
    d = Sequential([Dense(4, 1)], seed=0).compile(SGD(0.1), "binary_cross_entropy")
    c.train_on_batch(Xb, t, class_weight={1: 4.0})
    d.train_on_batch(Xb, t, sample_weight=np.where(t == 1, 4.0, 1.0))
    assert same_weights(c, flat_weights(d))


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_weight": np.ones(5)}, r"shape \(90,\)"),
    ({"sample_weight": -np.ones(90)}, ">= 0"),
    ({"sample_weight": np.zeros(90)}, "all 0"),
    ({"class_weight": [1.0, 2.0]}, "dict"),
    ({"class_weight": {"a": 1.0}}, "class indices"),
    ({"class_weight": {0: -1.0}}, r"class_weight\[0\]"),
])
def test_bad_weights_raise(kwargs, match):
    X, y = small_problem(n=90)
    m = mlp().compile("sgd", "softmax_cross_entropy")
    with pytest.raises((ValueError, TypeError), match=match):
        m.fit(X, y, verbose=0, **kwargs)


def test_zero_weight_samples_do_not_train():
    """Samples of weight 0 contribute nothing: training on all with zeros for the second half
    equals training on the first half alone, batch by batch (no shuffle, batches aligned)."""
    X, y = small_problem(n=64)
    a, b = mlp(dtype="float64"), mlp(dtype="float64")
    a.compile(SGD(0.1), "softmax_cross_entropy")
    b.compile(SGD(0.1), "softmax_cross_entropy")
    w = np.r_[np.ones(32), np.zeros(32)]
    a.fit(X, y, epochs=1, batch_size=32, shuffle=False, sample_weight=w, verbose=0)
    b.fit(X[:32], y[:32], epochs=1, batch_size=32, shuffle=False, verbose=0)
    for pa, pb in zip(flat_weights(a), flat_weights(b)):
        np.testing.assert_allclose(pa, pb, rtol=1e-12)


# -- models with running statistics and dropout --------------------------------------------------
def bn_model(seed=0, dtype="float32"):
    from fastnn import BatchNorm, Dropout
    return Sequential([Dense(20, 16), BatchNorm(16), Activation("relu"), Dropout(0.3),
                       Dense(16, 3)], dtype=dtype, seed=seed)


def test_get_set_weights_include_running_statistics():
    X, y = small_problem(n=64)
    m = bn_model().compile("adam", "softmax_cross_entropy")
    w0 = m.get_weights()
    assert set(w0[1]) == {"weight", "bias", "running_mean", "running_var"}
    m.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(m.layers[1].buffers["running_mean"], w0[1]["running_mean"])
    m.set_weights(w0)
    assert np.array_equal(m.layers[1].buffers["running_mean"], w0[1]["running_mean"])
    assert np.array_equal(m.layers[1].buffers["running_var"], w0[1]["running_var"])


def test_nan_step_leaves_running_statistics_and_dropout_step():
    X, y = small_problem(n=32)
    m = bn_model().compile("sgd", "softmax_cross_entropy")
    m.train_on_batch(X[:16], y[:16])
    before = m.get_weights()
    step = m.layers[3].step
    Xbad = X[16:].copy()
    Xbad[0, 0] = np.inf
    with pytest.raises(FloatingPointError):
        m.train_on_batch(Xbad, y[16:], check_finite=False)
    assert m.layers[3].step == step
    for a, b in zip(m.get_weights(), before):
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=True), k


def test_gradient_check_with_dropout_and_batchnorm():
    X, y = small_problem(n=8)
    m = bn_model(dtype="float64").compile("sgd", "softmax_cross_entropy")
    res = fastnn.gradient_check(m, X, y)
    # the bias of the Dense before BatchNorm has a zero gradient (the normalisation removes any
    # per-channel shift), so its relative error compares rounding noise with rounding noise
    assert np.abs(m.layers[0].grads["bias"]).max() < 1e-12
    del res["0.bias"]
    assert max(res.values()) < 1e-6, res


def test_batchnorm_model_drops_a_last_batch_of_one_sample():
    X, y = small_problem(n=33)
    m = bn_model().compile("sgd", "softmax_cross_entropy")
    h = m.fit(X, y, epochs=2, batch_size=16, verbose=0)  # 16 + 16 + (1 dropped)
    assert m.optimizer.iterations == 4 and len(h.epoch) == 2
