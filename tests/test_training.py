"""Training on real data: an MLP on Fashion-MNIST reaches a real test accuracy (one run)."""
import numpy as np
import pytest

import fastnn
from fastnn import Adam, Dense, Sequential, SoftmaxCrossEntropy

from conftest import requires_fashion_mnist

pytestmark = requires_fashion_mnist


@pytest.fixture
def one_thread():
    # One thread: the result is the same for any thread count (tests/test_model.py checks that),
    # and on a loaded 2-core machine 2 spinning OpenMP threads made this run take ~110 s, not ~5 s.
    fastnn.set_num_threads(1)
    yield
    fastnn.set_num_threads(None)


@pytest.mark.slow
def test_mlp_fashion_mnist_two_epochs_reaches_85_percent(one_thread):
    (X, y), (Xt, yt) = fastnn.datasets.load_fashion_mnist()
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    model = Sequential([Dense(784, 256, activation="relu"), Dense(256, 128, activation="relu"),
                        Dense(128, 10)], seed=0)
    model.compile(optimizer=Adam(1e-3), loss=SoftmaxCrossEntropy())
    h = model.fit(X, y, epochs=2, batch_size=64, validation_data=(Xt, yt), verbose=0)
    assert h.history["loss"][1] < h.history["loss"][0]
    res = model.evaluate(Xt, yt)
    assert res["accuracy"] >= 0.85, res
    assert res["accuracy"] == h.history["val_accuracy"][-1]
    # the accuracy is real: it agrees with the predicted classes, computed independently
    pred = model.predict_classes(Xt)
    assert np.mean(pred == yt) == pytest.approx(res["accuracy"], abs=1e-12)
    # and every class is predicted (no collapse onto a few classes)
    assert len(np.unique(pred)) == 10
