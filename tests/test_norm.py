"""BatchNorm and LayerNorm: forward values against NumPy references of the PyTorch formulas,
running statistics, gradients against central differences, thread-count bit-identity, training
in models, validation."""
import numpy as np
import pytest
from conftest import numerical_grad

import fastnn
from fastnn import (Adam, BatchNorm, Conv2D, Dense, Dropout, Flatten, LayerNorm, Sequential,
                    SoftmaxCrossEntropy)
from fastnn import _norm

SHAPES = [(16, 5), (3, 4, 5, 6)]  # Dense outputs (N, C) and images (N, H, W, C)
TOL = {np.float32: 2e-6, np.float64: 1e-12}


# ---- NumPy references (float64), PyTorch's formulas ---------------------------------------------

def bn_reference(X, weight, bias, eps, mean=None, var=None):
    """torch.nn.BatchNorm: statistics over every axis but the last (biased variance) unless
    given (inference: the running ones)."""
    X = np.asarray(X, np.float64)
    axes = tuple(range(X.ndim - 1))
    if mean is None:
        mean, var = X.mean(axis=axes), X.var(axis=axes)
    return (X - mean) / np.sqrt(var + eps) * weight + bias


def ln_reference(X, weight, bias, eps):
    """torch.nn.LayerNorm(normalized_shape=C): per position over the last axis."""
    X = np.asarray(X, np.float64)
    mean = X.mean(axis=-1, keepdims=True)
    var = X.var(axis=-1, keepdims=True)
    return (X - mean) / np.sqrt(var + eps) * weight + bias


def random_affine(layer, rng):
    """Non-trivial weight and bias (the defaults 1 and 0 would hide mistakes)."""
    C = layer.num_features
    layer.params["weight"] = rng.uniform(0.5, 2.0, C)
    layer.params["bias"] = rng.standard_normal(C)


# ---- BatchNorm forward ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_training_forward_matches_torch_formula(dtype, shape):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    layer = BatchNorm(shape[-1], eps=1e-3).build(dtype)
    random_affine(layer, rng)
    Y = layer.forward(X, training=True)
    assert Y.shape == X.shape and Y.dtype == dtype
    ref = bn_reference(X, layer.weight, layer.bias, 1e-3)
    np.testing.assert_allclose(Y, ref, rtol=0, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_running_statistics_follow_the_formula_over_steps(dtype, shape):
    rng = np.random.default_rng(1)
    C = shape[-1]
    layer = BatchNorm(C, momentum=0.3).build(dtype)
    np.testing.assert_array_equal(layer.running_mean, np.zeros(C))
    np.testing.assert_array_equal(layer.running_var, np.ones(C))
    rm, rv = np.zeros(C), np.ones(C)
    axes = tuple(range(len(shape) - 1))
    M = int(np.prod(shape[:-1]))
    for step in range(4):
        X = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        layer.forward(X, training=True)
        Xd = X.astype(np.float64)
        rm = 0.7 * rm + 0.3 * Xd.mean(axis=axes)
        rv = 0.7 * rv + 0.3 * Xd.var(axis=axes) * M / (M - 1)  # unbiased
        np.testing.assert_allclose(layer.running_mean, rm, rtol=TOL[dtype] * 10, atol=1e-12)
        np.testing.assert_allclose(layer.running_var, rv, rtol=TOL[dtype] * 10)
        assert layer.running_mean.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_inference_uses_and_keeps_the_running_statistics(dtype, shape):
    rng = np.random.default_rng(2)
    C = shape[-1]
    layer = BatchNorm(C).build(dtype)
    random_affine(layer, rng)
    layer.buffers["running_mean"] = rng.standard_normal(C)
    layer.buffers["running_var"] = rng.uniform(0.5, 3.0, C)
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    X = rng.standard_normal(shape).astype(dtype)
    Y = layer.forward(X, training=False)
    ref = bn_reference(X, layer.weight, layer.bias, 1e-5, rm.astype(np.float64),
                       rv.astype(np.float64))
    np.testing.assert_allclose(Y, ref, rtol=0, atol=TOL[dtype] * 10)
    np.testing.assert_array_equal(layer.running_mean, rm)
    np.testing.assert_array_equal(layer.running_var, rv)


def test_batchnorm_float32_statistics_of_a_large_mean_are_accurate():
    """float64 two-pass statistics: a float32 channel at 1e4 with unit spread keeps its
    variance (a float32 one-pass E[x^2] - E[x]^2 would lose it entirely)."""
    rng = np.random.default_rng(3)
    X = (1e4 + rng.standard_normal((4096, 3))).astype(np.float32)
    layer = BatchNorm(3, momentum=1.0).build(np.float32)
    Y = layer.forward(X)
    Xd = X.astype(np.float64)
    np.testing.assert_allclose(layer.running_var, Xd.var(axis=0) * 4096 / 4095, rtol=1e-6)
    np.testing.assert_allclose(Y, bn_reference(X, 1.0, 0.0, 1e-5), rtol=0, atol=2e-5)


def test_batchnorm_parameters_and_aliases():
    layer = BatchNorm(4).build(np.float64)
    np.testing.assert_array_equal(layer.weight, np.ones(4))
    np.testing.assert_array_equal(layer.bias, np.zeros(4))
    assert layer.gamma is layer.weight and layer.beta is layer.bias
    assert set(layer.params) == {"weight", "bias"}
    assert set(layer.buffers) == {"running_mean", "running_var"}
    with pytest.raises(AttributeError):
        layer.gamma = np.zeros(4)
    with pytest.raises(AttributeError):
        layer.running_mean = np.zeros(4)


# ---- LayerNorm forward ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_layernorm_forward_matches_torch_formula(dtype, shape, training):
    rng = np.random.default_rng(4)
    X = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
    layer = LayerNorm(shape[-1], eps=1e-4).build(dtype)
    random_affine(layer, rng)
    Y = layer.forward(X, training=training)
    assert Y.shape == X.shape and Y.dtype == dtype
    np.testing.assert_allclose(Y, ln_reference(X, layer.weight, layer.bias, 1e-4), rtol=0,
                               atol=TOL[dtype] * 10)
    assert layer.buffers == {}


# ---- gradients --------------------------------------------------------------------------------

def _check_gradients(layer, X, training, rng):
    """Input and parameter gradients of sum(Y * G) against central differences (float64)."""
    G = rng.standard_normal(X.shape)

    def f():
        return np.sum(layer.forward(X, training=training) * G)

    num_x = numerical_grad(f, X)
    num_w = numerical_grad(f, layer.params["weight"])
    num_b = numerical_grad(f, layer.params["bias"])
    f()
    dX = layer.backward(G)
    np.testing.assert_allclose(dX, num_x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.grads["weight"], num_w, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.grads["bias"], num_b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients_finite_differences(shape, training):
    rng = np.random.default_rng(5)
    layer = BatchNorm(shape[-1]).build(np.float64)
    random_affine(layer, rng)
    layer.buffers["running_mean"] = rng.standard_normal(shape[-1])
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, shape[-1])
    X = rng.standard_normal(shape) * 2 + 1
    # in training the check's forward passes move the running statistics, which Y ignores
    _check_gradients(layer, X, training, rng)


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm_gradients_finite_differences(shape):
    rng = np.random.default_rng(6)
    layer = LayerNorm(shape[-1]).build(np.float64)
    random_affine(layer, rng)
    _check_gradients(layer, rng.standard_normal(shape) * 2 + 1, True, rng)


@pytest.mark.parametrize("cls", [BatchNorm, LayerNorm])
def test_gradients_match_a_numpy_backward(cls):
    """The closed forms of the docstrings on a larger input (several reduction chunks)."""
    rng = np.random.default_rng(7)
    C = 3
    X = rng.standard_normal((4000, 2, C)) + 5
    G = rng.standard_normal(X.shape)
    layer = cls(C).build(np.float64)
    random_affine(layer, rng)
    w = layer.weight.copy()
    layer.forward(X)
    dX = layer.backward(G).copy()
    axes = (0, 1) if cls is BatchNorm else (-1,)
    mean = X.mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(X.var(axis=axes, keepdims=True) + 1e-5)
    xhat = (X - mean) * inv
    if cls is BatchNorm:
        ref = w * inv * (G - G.mean(axis=axes) - xhat * (G * xhat).mean(axis=axes))
    else:
        g = G * w
        ref = inv * (g - g.mean(axis=-1, keepdims=True)
                     - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    np.testing.assert_allclose(dX, ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(layer.grads["weight"], (G * xhat).sum(axis=(0, 1)), rtol=1e-10)
    np.testing.assert_allclose(layer.grads["bias"], G.sum(axis=(0, 1)), rtol=1e-10)


# ---- thread-count bit-identity ----------------------------------------------------------------

@pytest.mark.parametrize("cls", [BatchNorm, LayerNorm])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_bit_identical_with_1_and_2_threads(cls, dtype, training):
    rng = np.random.default_rng(8)
    X = (rng.standard_normal((64, 12, 12, 8)) + 3).astype(dtype)  # many chunks, threaded
    G = rng.standard_normal(X.shape).astype(dtype)
    out = {}
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        layer = cls(8).build(dtype)
        random_affine(layer, np.random.default_rng(9))
        for _ in range(2):
            Y = layer.forward(X, training=training)
        dX = layer.backward(G)
        out[nt] = [Y.copy(), dX.copy(), layer.grads["weight"].copy(),
                   layer.grads["bias"].copy()] + [b.copy() for b in layer.buffers.values()]
    for a, b in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, b)


# ---- kernels directly -------------------------------------------------------------------------

def test_kernels_reject_mismatched_shapes_and_threads():
    X = np.ones((4, 3))
    w, b = np.ones(3), np.zeros(3)
    c3, c4 = np.empty(3), np.empty(4)
    with pytest.raises(ValueError, match="do not fit"):
        _norm.batchnorm_forward(X, w, b, c4, c3, c3, np.empty((4, 3)), 1e-5, True, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _norm.batchnorm_forward(X, w, b, c3, c3, c3, np.empty((4, 3)), 1e-5, True, 0)
    with pytest.raises(ValueError, match="do not fit"):
        _norm.batchnorm_backward(X, X, w, c3, c3, np.empty((3, 3)), c3.copy(), c3.copy(),
                                 True, 1)
    with pytest.raises(ValueError, match="do not fit"):
        _norm.layernorm_forward(X, w, b, c3, c4, np.empty((4, 3)), 1e-5, 1)
    with pytest.raises(ValueError, match="do not fit"):
        _norm.layernorm_backward(X, X, w, c4, c4, None, c4, c3, 1)


def test_batchnorm_backward_kernel_without_dx_still_fills_parameter_grads():
    rng = np.random.default_rng(10)
    X, G = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    mean, var, inv = np.empty(4), np.empty(4), np.empty(4)
    _norm.batchnorm_forward(X, np.ones(4), np.zeros(4), mean, var, inv, np.empty_like(X), 1e-5,
                            True, 1)
    dw, db = np.empty(4), np.empty(4)
    _norm.batchnorm_backward(X, G, np.ones(4), mean, inv, None, dw, db, True, 1)
    np.testing.assert_allclose(dw, (G * (X - mean) * inv).sum(0), rtol=1e-12)
    np.testing.assert_allclose(db, G.sum(0), rtol=1e-12)


# ---- in models --------------------------------------------------------------------------------

def _blobs(n, d, k, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d)) * 3
    return (centres[y] + rng.standard_normal((n, d)) + 10).astype(np.float32), y


def test_dense_batchnorm_dropout_model_trains_and_stats_stay_out_of_the_optimizer():
    X, y = _blobs(256, 8, 4, 0)
    model = Sequential([Dense(8, 32, activation="relu"), BatchNorm(32), Dropout(0.2),
                        Dense(32, 4)], seed=0).compile(Adam(1e-2), SoftmaxCrossEntropy())
    bn = model.layers[1]
    assert model.count_params() == 8 * 32 + 32 + 2 * 32 + 32 * 4 + 4  # no running statistics
    assert {name for _, name, _, _ in model._params.entries} == {"weight", "bias"}
    for buf in bn.buffers.values():
        assert not np.shares_memory(buf, model._params.params)
    before = model.evaluate(X, y)["loss"]
    hist = model.fit(X, y, epochs=8, batch_size=32, verbose=0)
    after = model.evaluate(X, y)["loss"]
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert after < 0.5 * before
    # the running mean tracked the (shifted) inputs' ReLU features: no longer the initial 0
    assert np.all(np.isfinite(bn.running_mean)) and np.any(bn.running_mean != 0)
    table = model.summary(print_fn=None)
    assert "Non-trainable params: 64" in table


def test_conv_model_with_batchnorm_on_images_trains():
    rng = np.random.default_rng(1)
    n = 96
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, 8, 8, 1)).astype(np.float32) * 0.5
    X[y == 1, 2:6, 2:6, 0] += 2.0  # a bright square for class 1
    model = Sequential([Conv2D(1, 4, 3, activation=None), BatchNorm(4), LayerNorm(4),
                        Flatten(), Dense(6 * 6 * 4, 2)], seed=0, input_shape=(8, 8, 1))
    model.compile(Adam(1e-2), SoftmaxCrossEntropy())
    before = model.evaluate(X, y)["loss"]
    model.fit(X, y, epochs=5, batch_size=16, verbose=0)
    assert model.evaluate(X, y)["loss"] < 0.5 * before


# ---- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [BatchNorm, LayerNorm])
def test_wrong_channel_count_names_expected_and_actual(cls):
    layer = cls(3).build(np.float32)
    with pytest.raises(ValueError, match=r"3 channels.*got \(N, 5, 5, 4\)"):
        layer.forward(np.ones((2, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"layer 1 \(" + cls.__name__ + r"\).*3 channels"):
        Sequential([Dense(4, 5), cls(3)], input_shape=(4,))


@pytest.mark.parametrize("cls", [BatchNorm, LayerNorm])
def test_bad_arguments_raise(cls):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_features"):
            cls(bad)
    with pytest.raises(TypeError, match="num_features"):
        cls(2.5)
    with pytest.raises(ValueError, match="eps"):
        cls(3, eps=0.0)
    with pytest.raises(TypeError, match="eps"):
        cls(3, eps="small")


def test_batchnorm_bad_momentum_and_single_value_batch_raise():
    for bad in (-0.1, 1.5, float("inf")):
        with pytest.raises(ValueError, match="momentum"):
            BatchNorm(3, momentum=bad)
    layer = BatchNorm(3).build(np.float64)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.ones((1, 3)))
    layer.forward(np.ones((1, 3)), training=False)  # inference needs no batch statistics
    layer.forward(np.ones((1, 2, 1, 3)))  # two values per channel


@pytest.mark.parametrize("cls", [BatchNorm, LayerNorm])
def test_backward_before_forward_and_wrong_grad_shape_raise(cls):
    layer = cls(3).build(np.float64)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((4, 3)))
    layer.forward(np.random.default_rng(0).standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        layer.backward(np.ones((4, 2)))


def test_config_round_trip():
    for layer in (BatchNorm(7, momentum=0.2, eps=1e-3), LayerNorm(5, eps=1e-6)):
        clone = type(layer)(**layer.get_config())
        assert clone.get_config() == layer.get_config()
