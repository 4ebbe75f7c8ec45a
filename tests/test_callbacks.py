"""Callbacks: EarlyStopping (mode, the monitor check before training), CSVLogger, History.plot,
and the fit options of the training toolkit (validation_split, batch_size clipping, warnings,
summary)."""
import csv
import warnings

import numpy as np
import pytest

from fastnn import (Activation, BinaryCrossEntropy, CSVLogger, Dense, EarlyStopping, Sequential,
                    SoftmaxCrossEntropy)
from fastnn.callbacks import ModelCheckpoint


def model(k=3, seed=0, last_activation=None):
    return Sequential([Dense(5, 12, "relu"), Dense(12, k, activation=last_activation)], seed=seed)


def data(n=100, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    return X, (X[:, :k] + 0.2 * rng.standard_normal((n, k))).argmax(1)


# -- EarlyStopping --------------------------------------------------------------------------------
def test_early_stopping_checks_monitor_before_the_first_epoch():
    X, y = data()
    m = model().compile("sgd", "softmax_cross_entropy")
    w0 = m.get_weights()
    with pytest.raises(ValueError, match="val_loss.*validation_data"):
        m.fit(X, y, epochs=3, verbose=0, callbacks=[EarlyStopping("val_loss")])
    assert all(np.array_equal(a["weight"], b["weight"]) for a, b in zip(w0, m.get_weights()))
    # validation_split makes val_loss exist
    m.fit(X, y, epochs=1, verbose=0, validation_split=0.2, callbacks=[EarlyStopping("val_loss")])


class Feed(EarlyStopping):
    """EarlyStopping fed a fixed sequence of monitored values instead of the real logs."""

    def __init__(self, values, **kw):
        super().__init__(monitor="loss", **kw)
        self.values = list(values)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, {"loss": self.values[epoch]})


@pytest.mark.parametrize("mode, values, stopped", [
    ("min", [3, 2, 2.5, 2.4, 1], 3),     # no improvement at epochs 2 and 3: stop after 3
    ("max", [1, 2, 1.5, 1.9, 3], 3),
    ("max", [3, 2, 2.5, 2.4, 1], 2),     # maximising a falling value: stops early
    ("min", [5, 4, 3, 2, 1], None),      # always improving
])
def test_early_stopping_modes(mode, values, stopped):
    X, y = data()
    m = model().compile("sgd", "softmax_cross_entropy")
    es = Feed(values, mode=mode, patience=2)
    h = m.fit(X, y, epochs=5, verbose=0, callbacks=[es])
    assert es.stopped_epoch == stopped
    assert len(h.epoch) == (stopped + 1 if stopped is not None else 5)


def test_early_stopping_restores_best_weights_and_validates():
    X, y = data()
    m = model().compile("sgd", "softmax_cross_entropy")
    snaps = []

    class Snap(EarlyStopping):
        def on_epoch_end(self, epoch, logs=None):
            snaps.append(self.model.get_weights())
            super().on_epoch_end(epoch, {"loss": [1.0, 0.5, 0.7, 0.8][epoch]})

    m.fit(X, y, epochs=4, verbose=0,
          callbacks=[Snap("loss", patience=2, restore_best_weights=True)])
    for a, b in zip(m.get_weights(), snaps[1]):  # epoch 1 had the best value
        assert np.array_equal(a["weight"], b["weight"])
    with pytest.raises(ValueError, match="mode must be"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode must be"):
        ModelCheckpoint("x.npz", mode="best")


# -- CSVLogger and History.plot ------------------------------------------------------------------
def test_csv_logger_writes_the_history(tmp_path):
    X, y = data()
    m = model().compile("adam", "softmax_cross_entropy")
    path = tmp_path / "log.csv"
    h = m.fit(X, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[CSVLogger(path)])
    rows = list(csv.DictReader(open(path)))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ["epoch"] + list(h.history)
    for key in h.history:
        assert [float(r[key]) for r in rows] == pytest.approx(h.history[key])
    # append: resumed training adds rows under the same header
    m.fit(X, y, epochs=5, initial_epoch=3, verbose=0, validation_split=0.25,
          callbacks=[CSVLogger(path, append=True)])
    rows = list(csv.DictReader(open(path)))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    X, y = data()
    m = model().compile("adam", "softmax_cross_entropy")
    h = m.fit(X, y, epochs=2, verbose=0, validation_split=0.2)
    path = tmp_path / "curves.png"
    h.plot(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="'f1' was not recorded"):
        h.plot(tmp_path / "x.png", metrics=["f1"])
    from fastnn import History
    with pytest.raises(ValueError, match="no epoch"):
        History().plot(tmp_path / "y.png")


# -- fit options ---------------------------------------------------------------------------------
def test_validation_split_holds_out_the_last_fraction_before_shuffling():
    X, y = data(n=100)
    a = model().compile("sgd", "softmax_cross_entropy")
    b = model().compile("sgd", "softmax_cross_entropy")
    ha = a.fit(X, y, epochs=2, batch_size=10, validation_split=0.3, seed=1, verbose=0)
    hb = b.fit(X[:70], y[:70], epochs=2, batch_size=10, validation_data=(X[70:], y[70:]),
               seed=1, verbose=0)
    assert ha.history["loss"] == hb.history["loss"]
    assert ha.history["val_accuracy"] == hb.history["val_accuracy"]
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="validation_split"):
            a.fit(X, y, validation_split=bad, verbose=0)
    with pytest.raises(ValueError, match="leaves 3 for validation and 0 for training"):
        a.fit(X[:3], y[:3], validation_split=0.9, verbose=0)


def test_batch_size_larger_than_the_data_is_clipped_with_a_warning():
    X, y = data(n=20)
    a = model().compile("sgd", "softmax_cross_entropy")
    b = model().compile("sgd", "softmax_cross_entropy")
    with pytest.warns(UserWarning, match=r"batch_size \(64\) is larger .* using batch_size=20"):
        ha = a.fit(X, y, epochs=2, batch_size=64, verbose=0, seed=0)
    hb = b.fit(X, y, epochs=2, batch_size=20, verbose=0, seed=0)
    assert ha.history["loss"] == hb.history["loss"]


def test_double_softmax_and_sigmoid_warnings():
    with pytest.warns(UserWarning, match="applies softmax"):
        model(last_activation="softmax").compile("sgd", SoftmaxCrossEntropy())
    with pytest.warns(UserWarning, match="applies sigmoid"):
        model(k=1, last_activation="sigmoid").compile("sgd", BinaryCrossEntropy())
    with pytest.warns(UserWarning, match="applies softmax"):
        Sequential([Dense(5, 3), Activation("softmax")]).compile("sgd", "softmax_cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model().compile("sgd", SoftmaxCrossEntropy())
        model(last_activation="softmax").compile("sgd", "mse")  # softmax output into MSE: fine


def test_a_layer_in_a_second_model_raises():
    first = model()
    with pytest.raises(ValueError, match="already belongs to another model"):
        Sequential([first.layers[0], Dense(12, 3)])


def test_summary_table():
    m = Sequential([Dense(5, 12, "relu"), Dense(12, 3)], seed=0)
    lines = []
    assert m.summary(print_fn=lines.append) is None
    text = m.summary(print_fn=None)
    assert lines == [text]
    assert "Dense(in_features=5, out_features=12, activation='relu'" in text  # not truncated
    assert "(None, 12)" in text and "(None, 3)" in text
    assert "Total params: 111" in text and "Trainable params: 111" in text
    assert "Non-trainable params: 0" in text
    assert f"{5 * 12 + 12:,}" in text
