"""Weight initialisers: shapes, dtypes, statistics, defaults per activation, seeding, warnings."""
import warnings

import numpy as np
import pytest

from fastnn import Dense, Sequential
from fastnn import init

FAN_IN, FAN_OUT = 800, 1200  # 960,000 weights: sample variances within ~0.3% of the true ones

# name -> (variance, uniform bound or None)
EXPECTED = {
    "glorot_uniform": (2.0 / (FAN_IN + FAN_OUT), np.sqrt(6.0 / (FAN_IN + FAN_OUT))),
    "glorot_normal": (2.0 / (FAN_IN + FAN_OUT), None),
    "he_normal": (2.0 / FAN_IN, None),
    "he_uniform": (2.0 / FAN_IN, np.sqrt(6.0 / FAN_IN)),
    "normal": (0.01 ** 2, None),
}
ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal",
           "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform",
           "small_random": "normal"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_initializer_statistics(name, dtype):
    rng = np.random.default_rng(0)
    W = init.get(name)((FAN_IN, FAN_OUT), FAN_IN, FAN_OUT, rng, dtype)
    assert W.shape == (FAN_IN, FAN_OUT) and W.dtype == dtype
    var, bound = EXPECTED[name]
    w = W.astype(np.float64)
    assert abs(w.var() / var - 1) < 0.02, (w.var(), var)
    assert abs(w.mean()) < 5 * np.sqrt(var / w.size)
    if bound is not None:
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.99 * bound  # it really fills the interval
    else:  # a normal distribution: about 68.3% within one standard deviation
        assert abs(np.mean(np.abs(w) < np.sqrt(var)) - 0.6827) < 0.005


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_aliases(alias, name):
    assert init.get(alias) is init.get(name)


def test_zeros_and_ones():
    rng = np.random.default_rng(0)
    assert np.array_equal(init.zeros((3, 4), 3, 4, rng, np.float32), np.zeros((3, 4)))
    assert np.array_equal(init.ones((5,), 3, 5, rng, np.float64), np.ones(5))


def test_zero_weight_init_warns_but_zero_bias_does_not():
    with pytest.warns(UserWarning, match="symmetry"):
        Dense(4, 3, weight_init="zeros").build(np.float32, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = Dense(4, 3, bias_init="zeros").build(np.float32, np.random.default_rng(0))
    assert np.array_equal(layer.bias, np.zeros(3))


@pytest.mark.parametrize("act,expected", [
    ("relu", "he_normal"), ("leaky_relu", "he_normal"), (None, "glorot_uniform"),
    ("identity", "glorot_uniform"), ("sigmoid", "glorot_uniform"), ("tanh", "glorot_uniform"),
    ("softmax", "glorot_uniform"),
])
def test_default_weight_init_per_activation(act, expected):
    layer = Dense(FAN_IN, FAN_OUT, activation=act)
    assert layer.weight_init == expected
    layer.build(np.float64, np.random.default_rng(1))
    w = layer.weight
    var = EXPECTED[expected][0]
    assert abs(w.var() / var - 1) < 0.02
    if expected == "glorot_uniform":
        assert np.abs(w).max() <= EXPECTED[expected][1]
    assert np.array_equal(layer.bias, np.zeros(FAN_OUT))


def test_same_seed_same_weights_different_seed_different():
    def weights(seed, dtype="float32"):
        m = Sequential([Dense(20, 16, activation="relu"), Dense(16, 3)], dtype=dtype, seed=seed)
        return [p for layer in m.get_weights() for p in layer.values()]

    a, b, c = weights(7), weights(7), weights(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    # float64 and float32 models from the same seed hold the same draws (up to rounding)
    d = weights(7, "float64")
    assert d[0].dtype == np.float64
    np.testing.assert_allclose(a[0], d[0], rtol=1e-7)


def test_callable_initializer_and_errors():
    def constant(shape, fan_in, fan_out, rng, dtype):
        return np.full(shape, 0.5, dtype=dtype)

    layer = Dense(3, 2, weight_init=constant).build(np.float64, np.random.default_rng(0))
    assert np.array_equal(layer.weight, np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="unknown initializer"):
        Dense(3, 2, weight_init="orthogonal")
    with pytest.raises(ValueError, match="unknown initializer"):
        Dense(3, 2, bias_init="nope")

    def wrong(shape, fan_in, fan_out, rng, dtype):
        return np.zeros((1, 1), dtype=dtype)

    with pytest.raises(ValueError, match="shape"):
        Dense(3, 2, weight_init=wrong).build(np.float64, np.random.default_rng(0))


def test_initialized_weights_are_c_contiguous_of_layer_dtype():
    def fortran(shape, fan_in, fan_out, rng, dtype):
        return np.asfortranarray(rng.standard_normal(shape))

    layer = Dense(5, 4, weight_init=fortran).build(np.float32, np.random.default_rng(0))
    assert layer.weight.flags.c_contiguous and layer.weight.dtype == np.float32
