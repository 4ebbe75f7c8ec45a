"""The CNN builders of fastnn.models inside Sequential: shapes, training steps, save/load,
thread-count independence, and (when the data is installed) learning on Fashion-MNIST."""
import os

import numpy as np
import pytest

import fastnn
from fastnn.layers import Conv2D, Dense, Flatten, MaxPool2D
from fastnn.models import cnn_bn, dqn, small_cnn

from conftest import requires_fashion_mnist


def test_small_cnn_structure_and_forward():
    model = small_cnn(seed=0)
    assert model.input_shape == (28, 28, 1)
    assert model.output_shape((28, 28, 1)) == (10,)
    assert model.count_params() == 421642
    X = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    out = model.predict(X)
    assert out.shape == (5, 10) and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("n_actions", [1, 4, 18])
def test_dqn_structure(n_actions):
    model = dqn(n_actions, seed=0)
    assert model.input_shape == (84, 84, 4)
    shapes = [(20, 20, 32), (9, 9, 64), (7, 7, 64), (3136,), (512,), (n_actions,)]
    shape = (84, 84, 4)
    for layer, want in zip(model.layers, shapes):
        shape = layer.output_shape(shape)
        assert shape == want
    assert model.count_params() == 1684128 + 513 * n_actions
    assert model.loss is not None and model.optimizer is not None


@pytest.mark.parametrize("bad", [0, -3])
def test_dqn_bad_n_actions(bad):
    with pytest.raises(ValueError):
        dqn(bad)


def test_dqn_trains_on_random_data():
    rng = np.random.default_rng(0)
    X = rng.random((32, 84, 84, 4), dtype=np.float32)
    y = rng.standard_normal((32, 6)).astype(np.float32)
    model = dqn(6, seed=1, learning_rate=1e-4)
    losses = [model.train_on_batch(X, y) for _ in range(15)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0]


def test_dqn_wrong_input_shape_is_a_clear_error():
    model = dqn(4, seed=0)
    with pytest.raises(ValueError):
        model.predict(np.zeros((2, 84, 84, 3), np.float32))
    with pytest.raises(ValueError):
        model.predict(np.zeros((2, 4, 84, 84), np.float32))


def test_channel_mismatch_between_layers_raises_at_build():
    with pytest.raises(ValueError, match="channels"):
        fastnn.Sequential([Conv2D(1, 8, 3), Conv2D(16, 8, 3)], input_shape=(10, 10, 1))
    with pytest.raises(ValueError, match="larger than the padded input"):
        fastnn.Sequential([Conv2D(1, 8, 5), MaxPool2D(2), Conv2D(8, 8, 5)],
                          input_shape=(12, 12, 1))
    with pytest.raises(ValueError):
        fastnn.Sequential([Conv2D(1, 8, 3), Flatten(), Dense(100, 10)], input_shape=(8, 8, 1))


def test_channel_mismatch_without_input_shape_raises_at_first_call():
    model = fastnn.Sequential([Conv2D(3, 8, 3), Flatten(), Dense(8 * 6 * 6, 2)], seed=0)
    with pytest.raises(ValueError, match="channels"):
        model.predict(np.zeros((2, 8, 8, 1), np.float32))
    assert model.predict(np.zeros((2, 8, 8, 3), np.float32)).shape == (2, 2)


def _train_steps(threads, dtype="float32"):
    fastnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    X = rng.random((64, 28, 28, 1)).astype(dtype)
    y = rng.integers(0, 10, 64)
    model = small_cnn(dtype=dtype, seed=3)
    model.compile(optimizer=fastnn.Adam(1e-3), loss=fastnn.SoftmaxCrossEntropy())
    losses = [model.train_on_batch(X, y) for _ in range(3)]
    return losses, model.get_weights()


def test_training_is_bit_identical_for_any_thread_count():
    l1, w1 = _train_steps(1)
    l2, w2 = _train_steps(2)
    assert l1 == l2
    for a, b in zip(w1, w2):
        for k in a:
            assert np.array_equal(a[k], b[k])


def test_small_cnn_gradient_check_float64():
    model = fastnn.Sequential([Conv2D(1, 3, 3, padding=1, activation="tanh"), MaxPool2D(2),
                               Conv2D(3, 4, 3, stride=2, padding=1, activation="tanh"), Flatten(),
                               Dense(4 * 3 * 3, 5)], dtype="float64", seed=0,
                              input_shape=(10, 10, 1))
    model.compile(optimizer="sgd", loss="softmax_cross_entropy")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 10, 10, 1))
    y = np.array([0, 3, 4])
    errors = fastnn.gradient_check(model, X, y, max_checks=30)
    assert set(errors) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    assert max(errors.values()) < 1e-6, errors


def test_save_load_round_trip(tmp_path):
    model = small_cnn(seed=0)
    model.compile(optimizer=fastnn.Adam(1e-3), loss=fastnn.SoftmaxCrossEntropy())
    rng = np.random.default_rng(1)
    X = rng.random((8, 28, 28, 1), dtype=np.float32)
    model.train_on_batch(X, rng.integers(0, 10, 8))
    path = os.path.join(tmp_path, "cnn.npz")
    model.save(path)
    loaded = fastnn.load(path)
    assert [type(layer).__name__ for layer in loaded.layers] == \
        ["Conv2D", "MaxPool2D", "Conv2D", "Flatten", "Dense", "Dense"]
    assert loaded.layers[2].stride == (2, 2) and loaded.layers[2].padding == (1, 1)
    assert np.array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.slow
@requires_fashion_mnist
def test_small_cnn_learns_fashion_mnist_subset():
    from fastnn.datasets import load_fashion_mnist

    (X, y), (Xt, yt) = load_fashion_mnist(flatten=False)
    model = small_cnn(seed=0)
    model.compile(optimizer=fastnn.Adam(1e-3), loss=fastnn.SoftmaxCrossEntropy())
    model.fit(X[:4000], y[:4000], epochs=2, batch_size=64, seed=0, verbose=0)
    acc = model.evaluate(Xt[:2000], yt[:2000])["accuracy"]
    assert acc > 0.75


def test_cnn_bn_architecture():
    from fastnn import BatchNorm, Dropout
    m = cnn_bn(seed=0)
    assert m.count_params() == 862_218
    assert sum(isinstance(layer, BatchNorm) for layer in m.layers) == 4
    assert [layer.rate for layer in m.layers if isinstance(layer, Dropout)] == [0.25, 0.5]
    assert m.output_shape((28, 28, 1)) == (10,)
    X = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    assert np.array_equal(m.predict(X), cnn_bn(seed=0).predict(X))  # seeded
