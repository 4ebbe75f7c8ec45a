"""fastnn.metrics against plain NumPy definitions, and compile(metrics=...) in fit / evaluate."""
import numpy as np
import pytest

from fastnn import (BinaryCrossEntropy, Dense, MeanSquaredError, Sequential,
                    SoftmaxCrossEntropy)
from fastnn import metrics as M


def test_accuracy_labels_one_hot_and_sigmoid():
    rng = np.random.default_rng(0)
    out = rng.standard_normal((50, 4))
    y = rng.integers(0, 4, 50)
    ref = np.mean(out.argmax(1) == y)
    assert M.Accuracy()(out, y, SoftmaxCrossEntropy()) == ref
    assert M.Accuracy()(out, np.eye(4)[y], SoftmaxCrossEntropy()) == ref
    # sigmoid logits: per element, logit > 0 against target >= 0.5
    t = (rng.random((50, 3)) > 0.5).astype(np.float64)
    z = rng.standard_normal((50, 3))
    assert M.Accuracy()(z, t, BinaryCrossEntropy()) == np.mean((z > 0) == (t == 1))


def top_k_reference(out, y, k):
    """Loop over samples: the label's rank under a stable descending sort."""
    hits = 0
    for row, label in zip(out, y):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in order[:k]
    return hits / len(y)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_top_k_accuracy_with_ties(k):
    rng = np.random.default_rng(k)
    out = rng.integers(0, 3, (200, 6)).astype(np.float32)  # many ties
    y = rng.integers(0, 6, 200)
    assert M.TopKAccuracy(k)(out, y) == pytest.approx(top_k_reference(out, y, k), abs=0)
    if k == 1:
        assert M.TopKAccuracy(1)(out, y) == M.Accuracy()(out, y)  # argmax takes the first max


def test_mae_mse():
    rng = np.random.default_rng(1)
    out = rng.standard_normal((10, 2)).astype(np.float32)
    t = rng.standard_normal((10, 2))
    assert M.MeanAbsoluteError()(out, t) == pytest.approx(np.mean(np.abs(out - t)))
    assert M.MeanSquaredErrorMetric()(out, t) == pytest.approx(np.mean((out - t) ** 2))
    assert M.get("mse")(out[:, :1], t[:, 0]) == pytest.approx(np.mean((out[:, 0] - t[:, 0]) ** 2))


def test_get_and_errors():
    assert isinstance(M.get("accuracy"), M.Accuracy)
    assert isinstance(M.get("acc"), M.Accuracy)
    assert M.get("top_k_accuracy").k == 5
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        M.get("f1")
    with pytest.raises(ValueError, match="k must be"):
        M.TopKAccuracy(0)


def model(k=4, seed=0):
    return Sequential([Dense(6, 16, "relu"), Dense(16, k)], seed=seed)


def data(n=120, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    return X, (X[:, :k] + 0.3 * rng.standard_normal((n, k))).argmax(1)


def test_compile_metrics_in_history_and_evaluate():
    X, y = data()
    m = model().compile("adam", "softmax_cross_entropy",
                        metrics=["accuracy", M.TopKAccuracy(k=2)])
    h = m.fit(X[:80], y[:80], epochs=2, batch_size=16, validation_data=(X[80:], y[80:]),
              verbose=0)
    assert set(h.history) == {"loss", "accuracy", "top_k_accuracy", "val_loss", "val_accuracy",
                              "val_top_k_accuracy", "seconds"}
    res = m.evaluate(X[80:], y[80:])
    out = m.predict(X[80:])
    assert res["accuracy"] == pytest.approx(np.mean(out.argmax(1) == y[80:]))
    assert res["top_k_accuracy"] == pytest.approx(top_k_reference(out, y[80:], 2))
    assert res["loss"] == pytest.approx(h.history["val_loss"][-1])  # same weights, same data
    assert res["top_k_accuracy"] >= res["accuracy"]


def test_epoch_metric_is_the_sample_mean_over_batches():
    """The epoch's accuracy is the mean over every sample of the epoch (batches of unequal size
    weighted by size): with shuffle off and a tiny learning rate it equals recomputing it."""
    X, y = data(n=50)
    m = model().compile("sgd", "softmax_cross_entropy", metrics=["accuracy"])
    seen = []

    from fastnn import Callback

    class Rec(Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(batch)

    before = m.get_weights()
    preds = []
    for s in range(0, 50, 16):  # the accuracy each batch had before its own step
        m.set_weights(before)
        preds.append(m.predict(X[s:s + 16]).argmax(1))
    m.set_weights(before)
    m.optimizer.learning_rate = 1e-30
    h = m.fit(X, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[Rec()])
    assert seen == [0, 1, 2, 3]
    assert h.history["accuracy"][0] == pytest.approx(np.mean(np.concatenate(preds) == y))


def test_default_metrics_and_empty_list():
    X, y = data(n=40)
    m = model().compile("sgd", "softmax_cross_entropy")
    assert [x.name for x in m.metrics] == ["accuracy"]
    m.compile("sgd", "softmax_cross_entropy", metrics=[])
    assert set(m.fit(X, y, verbose=0).history) == {"loss", "seconds"}
    r = Sequential([Dense(6, 1)], seed=0).compile("sgd", "mse")
    assert r.metrics == []


def test_regression_metrics():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 6)).astype(np.float32)
    t = X @ rng.standard_normal((6, 2))
    m = Sequential([Dense(6, 2)], seed=0).compile("sgd", MeanSquaredError(), metrics=["mae",
                                                                                      "mse"])
    res = m.evaluate(X, t)
    out = m.predict(X).astype(np.float64)
    assert res["mae"] == pytest.approx(np.mean(np.abs(out - t)), rel=1e-6)
    assert res["mse"] == pytest.approx(np.mean((out - t) ** 2), rel=1e-6)
    assert res["mse"] == pytest.approx(res["loss"], rel=1e-5)  # MSE loss is the same mean


def test_compile_rejects_metrics_that_do_not_apply():
    with pytest.raises(ValueError, match="needs a classification loss"):
        Sequential([Dense(6, 1)]).compile("sgd", "mse", metrics=["accuracy"])
    with pytest.raises(ValueError, match="class labels"):
        model().compile("sgd", "softmax_cross_entropy", metrics=["mae"])
    with pytest.raises(ValueError, match="distinct names"):
        model().compile("sgd", "softmax_cross_entropy", metrics=["accuracy", "acc"])
    with pytest.raises(ValueError, match="independent sigmoids"):
        Sequential([Dense(6, 3)]).compile("sgd", BinaryCrossEntropy(),
                                          metrics=["top_k_accuracy"])


def test_metrics_are_saved_with_the_model(tmp_path):
    import fastnn
    X, y = data(n=40)
    m = model().compile("sgd", "softmax_cross_entropy", metrics=[M.TopKAccuracy(k=2), "acc"])
    m.save(tmp_path / "m.npz")
    back = fastnn.load(tmp_path / "m.npz")
    assert [(type(x), x.get_config()) for x in back.metrics] == \
        [(M.TopKAccuracy, {"k": 2}), (M.Accuracy, {})]
    assert back.evaluate(X, y) == m.evaluate(X, y)
