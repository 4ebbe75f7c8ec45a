"""Dense and Activation layers against plain NumPy references and float64 finite differences.

Every activation is checked both as an ``Activation`` layer and fused into ``Dense``: the forward
output against the NumPy formula, the backward pass (input, weight and bias gradients) against
the analytic NumPy formula (float32 and float64) and against central finite differences in
float64 (relative error < 1e-6), for several batch sizes and odd feature counts, and the results
must be bit-identical with 1 and 2 OpenMP threads.
"""
import numpy as np
import pytest

import fastnn
from fastnn import Activation, Dense

from conftest import ACTIVATION_TABLE, act_backward, act_forward, max_rel_error, numerical_grad

ACTIVATIONS = list(ACTIVATION_TABLE)  # every name of fastnn.activations
BATCHES = [1, 7, 64, 257]
DTYPES = [np.float32, np.float64]
ALPHA = 0.07  # a non-default leaky slope, so that a kernel ignoring alpha would be caught


# -- data: values on a grid so that no pre-activation is near a ReLU kink ----------------------
def grid_data(rng, N, n_in, n_out):
    """X in multiples of 1/4, W in multiples of 1/8, b = 1/64 + multiples of 1/32: every
    pre-activation X @ W + b is a multiple of 1/32 plus 1/64, so |Z| >= 1/64 (exactly, in float32
    too), far from the kink at 0 for a finite-difference step of 1e-6."""
    X = rng.integers(-3, 4, size=(N, n_in)) / 4.0
    W = rng.integers(-3, 4, size=(n_in, n_out)) / 8.0
    b = rng.integers(-4, 4, size=n_out) / 32.0 + 1.0 / 64.0
    return X, W, b


def away_from_zero(rng, shape, lo=0.1, hi=2.0):
    """Random values with |x| in [lo, hi] and random signs."""
    return rng.uniform(lo, hi, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def make_dense(n_in, n_out, act, dtype, W, b):
    layer = Dense(n_in, n_out, activation=act, alpha=ALPHA).build(dtype, np.random.default_rng(0))
    layer.params["weight"][...] = W
    layer.params["bias"][...] = b
    return layer


def make_act(act, dtype):
    return Activation(act, alpha=ALPHA).build(dtype)


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def fd_check(forward, arr, R, analytic, rng, max_checks=40, eps=1e-6):
    """Central differences of ``sum(forward() * R)`` with respect to up to ``max_checks`` random
    entries of ``arr`` (perturbed in place), compared with ``analytic``; returns the max relative
    error."""
    idx = rng.choice(arr.size, size=min(max_checks, arr.size), replace=False)
    num = numerical_grad(forward, arr, h=eps, indices=idx, weights=R)
    return max_rel_error(analytic.reshape(-1)[idx], num)


# -- Activation layer ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", BATCHES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_layer_matches_numpy(act, N, dtype):
    rng = np.random.default_rng(N)
    K = 13
    X = away_from_zero(rng, (N, K)).astype(dtype)
    R = rng.standard_normal((N, K)).astype(dtype)
    layer = make_act(act, dtype)
    Y = layer.forward(X)
    assert Y.dtype == dtype and Y.shape == (N, K)
    np.testing.assert_allclose(Y, act_forward(X, act, ALPHA), **tol(dtype))
    dX = layer.backward(R)
    assert dX.dtype == dtype and dX.shape == (N, K)
    np.testing.assert_allclose(dX, act_backward(X, R, act, ALPHA), **tol(dtype))


@pytest.mark.parametrize("N", BATCHES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_layer_input_gradient_finite_differences(act, N):
    rng = np.random.default_rng(100 + N)
    X = away_from_zero(rng, (N, 9))
    R = rng.standard_normal((N, 9))
    layer = make_act(act, np.float64)
    layer.forward(X)
    dX = layer.backward(R).copy()
    err = fd_check(lambda: layer.forward(X), X, R, dX, rng)
    assert err < 1e-6, err


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a != "softmax"])
def test_activation_layer_any_shape_elementwise(act):
    rng = np.random.default_rng(3)
    X = away_from_zero(rng, (5, 3, 7))
    R = rng.standard_normal(X.shape)
    layer = make_act(act, np.float64)
    Y = layer.forward(X)
    assert Y.shape == X.shape
    np.testing.assert_allclose(Y, act_forward(X, act, ALPHA), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(R), act_backward(X, R, act, ALPHA), rtol=1e-12,
                               atol=1e-12)


def test_softmax_activation_needs_2d_input():
    with pytest.raises(ValueError, match="softmax"):
        make_act("softmax", np.float64).forward(np.zeros((4, 3, 2)))


def test_softmax_activation_large_logits_finite_rows_sum_to_one():
    X = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4 + 1.0]])
    for dtype in DTYPES:
        Y = make_act("softmax", dtype).forward(X.astype(dtype))
        assert np.isfinite(Y).all()
        np.testing.assert_allclose(Y.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(Y, act_forward(X, "softmax", ALPHA), atol=1e-6)


# -- Dense layer --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N", BATCHES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_dense_matches_numpy(act, N, dtype):
    rng = np.random.default_rng(N + 7)
    n_in, n_out = 13, 11
    X, W, b = grid_data(rng, N, n_in, n_out)
    R = rng.standard_normal((N, n_out))
    layer = make_dense(n_in, n_out, act, dtype, W, b)
    Y = layer.forward(X.astype(dtype))
    Z = X @ W + b
    assert Y.dtype == dtype and Y.shape == (N, n_out)
    np.testing.assert_allclose(Y, act_forward(Z, act, ALPHA), **tol(dtype))
    dX = layer.backward(R.astype(dtype))
    dZ = act_backward(Z, R.astype(dtype), act, ALPHA)
    assert dX.dtype == dtype and dX.shape == (N, n_in)
    t = tol(dtype)
    scale = dict(rtol=t["rtol"], atol=t["atol"] * max(1.0, np.abs(dZ).sum(axis=0).max()))
    np.testing.assert_allclose(layer.grads["weight"], X.T @ dZ, **scale)
    np.testing.assert_allclose(layer.grads["bias"], dZ.sum(axis=0), **scale)
    np.testing.assert_allclose(dX, dZ @ W.T, **scale)
    assert layer.grads["weight"].dtype == dtype and layer.grads["bias"].dtype == dtype


@pytest.mark.parametrize("N", BATCHES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_dense_gradients_finite_differences(act, N):
    rng = np.random.default_rng(200 + N)
    n_in, n_out = 7, 5
    X, W, b = grid_data(rng, N, n_in, n_out)
    R = rng.standard_normal((N, n_out))
    layer = make_dense(n_in, n_out, act, np.float64, W, b)
    layer.forward(X)
    dX = layer.backward(R).copy()
    dW, db = layer.grads["weight"].copy(), layer.grads["bias"].copy()
    fwd = lambda: layer.forward(X)  # noqa: E731
    assert fd_check(fwd, X, R, dX, rng) < 1e-6
    assert fd_check(fwd, layer.params["weight"], R, dW, rng) < 1e-6
    assert fd_check(fwd, layer.params["bias"], R, db, rng) < 1e-6


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_dense_activation_equals_dense_then_activation_layer(act):
    """Dense(activation=g) is Dense followed by Activation(g), forward and backward."""
    rng = np.random.default_rng(5)
    X, W, b = grid_data(rng, 31, 9, 6)
    R = rng.standard_normal((31, 6))
    fused = make_dense(9, 6, act, np.float64, W, b)
    lin = make_dense(9, 6, None, np.float64, W, b)
    g = make_act(act, np.float64)
    np.testing.assert_allclose(fused.forward(X), g.forward(lin.forward(X)), rtol=1e-13, atol=1e-14)
    dX = fused.backward(R)
    dX2 = lin.backward(g.backward(R))
    np.testing.assert_allclose(dX, dX2, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fused.grads["weight"], lin.grads["weight"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fused.grads["bias"], lin.grads["bias"], rtol=1e-12, atol=1e-13)


def test_dense_first_layer_skips_input_gradient():
    rng = np.random.default_rng(0)
    X, W, b = grid_data(rng, 8, 5, 3)
    layer = make_dense(5, 3, "tanh", np.float64, W, b)
    layer.need_input_grad = False
    layer.forward(X)
    R = rng.standard_normal((8, 3))
    assert layer.backward(R) is None
    dZ = act_backward(X @ W + b, R, "tanh", ALPHA)
    np.testing.assert_allclose(layer.grads["weight"], X.T @ dZ, rtol=1e-12, atol=1e-13)


def test_dense_parameter_shapes_and_dtype():
    for dtype in DTYPES:
        layer = Dense(17, 3).build(dtype, np.random.default_rng(0))
        assert layer.weight.shape == (17, 3) and layer.bias.shape == (3,)
        assert layer.weight.dtype == dtype and layer.bias.dtype == dtype
        assert layer.output_shape((17,)) == (3,)


def test_dense_wrong_input_features_raises():
    layer = Dense(4, 2).build(np.float64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="4"):
        layer.forward(np.zeros((3, 5)))


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="before forward"):
        Dense(3, 2).build(np.float64, np.random.default_rng(0)).backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        make_act("tanh", np.float64).backward(np.zeros((1, 2)))


def test_backward_wrong_grad_shape_raises():
    layer = Dense(3, 2).build(np.float64, np.random.default_rng(0))
    layer.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match="grad_output"):
        layer.backward(np.zeros((4, 3)))
    act = make_act("relu", np.float64)
    act.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match="grad_output"):
        act.backward(np.zeros((3, 4)))


@pytest.mark.parametrize("bad", ["swish", "ReLU", 3])
def test_unknown_activation_raises(bad):
    with pytest.raises(ValueError, match="activation"):
        Dense(3, 2, activation=bad)
    with pytest.raises(ValueError, match="activation"):
        Activation(bad)


@pytest.mark.parametrize("alpha", [0.0, -0.1, float("nan"), float("inf")])
def test_leaky_relu_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        Dense(3, 2, activation="leaky_relu", alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        Activation("leaky_relu", alpha=alpha)


@pytest.mark.parametrize("arg", [0, -1])
def test_dense_bad_sizes_raise(arg):
    with pytest.raises(ValueError, match="in_features"):
        Dense(arg, 2)
    with pytest.raises(ValueError, match="out_features"):
        Dense(2, arg)
    with pytest.raises(TypeError, match="in_features"):
        Dense(2.0, 2)


# -- threads ------------------------------------------------------------------------------------
def _run_dense(act, dtype, X, W, b, R):
    layer = make_dense(W.shape[0], W.shape[1], act, dtype, W, b)
    Y = layer.forward(X.astype(dtype)).copy()
    dX = layer.backward(R.astype(dtype)).copy()
    return Y, dX, layer.grads["weight"].copy(), layer.grads["bias"].copy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_dense_bit_identical_with_1_and_2_threads(act, dtype):
    # N*K*M = 257*129*67 is above the kernels' parallel threshold, so 2 threads really split work
    rng = np.random.default_rng(11)
    X = rng.standard_normal((257, 129))
    W = rng.standard_normal((129, 67)) * 0.1
    b = rng.standard_normal(67) * 0.1
    R = rng.standard_normal((257, 67))
    fastnn.set_num_threads(1)
    one = _run_dense(act, dtype, X, W, b, R)
    fastnn.set_num_threads(2)
    assert fastnn.get_num_threads() == (2 if fastnn._threads.openmp_enabled() else 1)
    two = _run_dense(act, dtype, X, W, b, R)
    for a, c in zip(one, two):
        assert np.array_equal(a, c)
    # and a wide, small batch (the kernel then splits output columns instead of rows)
    Xs, Ws, bs, Rs = X[:3], rng.standard_normal((129, 301)) * 0.1, np.zeros(301), R[:3, :1] * \
        np.ones((1, 301))
    fastnn.set_num_threads(1)
    one = _run_dense(act, dtype, Xs, Ws, bs, Rs)
    fastnn.set_num_threads(2)
    two = _run_dense(act, dtype, Xs, Ws, bs, Rs)
    for a, c in zip(one, two):
        assert np.array_equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_bit_identical_with_1_and_2_threads(act, dtype):
    # 257*129 elements: above the elementwise and softmax parallel thresholds
    rng = np.random.default_rng(12)
    X = rng.standard_normal((257, 129)).astype(dtype)
    R = rng.standard_normal((257, 129)).astype(dtype)
    res = []
    for nt in (1, 2):
        fastnn.set_num_threads(nt)
        layer = make_act(act, dtype)
        res.append((layer.forward(X).copy(), layer.backward(R).copy()))
    assert np.array_equal(res[0][0], res[1][0])
    assert np.array_equal(res[0][1], res[1][1])


# -- elu, softplus, gelu, silu: alpha defaults, saved configs, models ---------------------------
NEW_ACTIVATIONS = ["elu", "softplus", "gelu", "silu"]


def test_alpha_defaults_follow_the_activation():
    """alpha=None is the activation's own default: torch.nn.LeakyReLU 0.01, torch.nn.ELU 1.0."""
    assert Dense(3, 2, activation="leaky_relu").alpha == 0.01
    assert Dense(3, 2, activation="elu").alpha == 1.0
    assert Activation("elu").alpha == 1.0 and Activation("leaky_relu").alpha == 0.01
    assert fastnn.Conv2D(1, 2, 3, activation="elu").alpha == 1.0
    assert Dense(3, 2, activation="elu", alpha=0.5).alpha == 0.5
    # saved only where it applies, with its resolved value
    assert Dense(3, 2, activation="elu").get_config()["alpha"] == 1.0
    assert Activation("leaky_relu").get_config() == {"name": "leaky_relu", "alpha": 0.01}
    for name in ("gelu", "silu", "softplus", "relu"):
        assert "alpha" not in Dense(3, 2, activation=name).get_config()
        assert Activation(name).get_config() == {"name": name}


def test_elu_alpha_is_used_and_checked():
    X = np.array([[-2.0, -0.5, 0.0, 1.5]])
    for alpha in (1.0, 0.3):
        Y = Activation("elu", alpha=alpha).build(np.float64).forward(X)
        np.testing.assert_allclose(Y, [[alpha * np.expm1(-2.0), alpha * np.expm1(-0.5), 0.0, 1.5]],
                                   rtol=1e-15)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha"):
            Dense(3, 2, activation="elu", alpha=bad)
        with pytest.raises(ValueError, match="alpha"):
            Activation("elu", alpha=bad)
    with pytest.raises(TypeError, match="alpha"):
        Activation("elu", alpha="1")


def test_unknown_activation_error_lists_the_names():
    with pytest.raises(ValueError) as e:
        Dense(3, 2, activation="swish")
    for name in ("relu", "leaky_relu", "sigmoid", "tanh", "softmax", *NEW_ACTIVATIONS):
        assert repr(name) in str(e.value)
    assert "'swish'" in str(e.value)


def test_old_leaky_relu_configs_load_unchanged():
    """Configs written before alpha defaulted to None (alpha=0.01 saved for leaky_relu) rebuild
    the same layers; so do configs without alpha."""
    old = {"in_features": 3, "out_features": 2, "activation": "leaky_relu",
           "weight_init": "he_normal", "bias_init": "zeros", "alpha": 0.01}
    layer = Dense(**old)
    assert layer.alpha == 0.01 and layer.get_config() == old
    assert Activation(**{"name": "leaky_relu", "alpha": 0.2}).alpha == 0.2
    assert Dense(3, 2, activation="relu", alpha=0.01).get_config()["activation"] == "relu"


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_dense_keeps_preactivation_only_for_gelu_and_silu(act):
    """gelu and silu keep Z = X W + b (one extra buffer, written by the forward kernel); relu and
    the others keep only their output, as before."""
    rng = np.random.default_rng(4)
    X, W, b = grid_data(rng, 9, 5, 4)
    layer = make_dense(5, 4, act, np.float64, W, b)
    layer.forward(X)
    np.testing.assert_array_equal(layer._Z, X @ W + b)
    other = make_dense(5, 4, "relu", np.float64, W, b)
    other.forward(X)
    assert other._Z is None and set(other.__dict__["_buffers"]) == {"A"}


def _model_with_new_activations(dtype, seed=0):
    return fastnn.Sequential([
        fastnn.Conv2D(2, 4, 3, padding=1, activation="gelu"),
        fastnn.Conv2D(4, 3, 3, activation="elu", alpha=0.7),
        fastnn.Flatten(),
        Dense(3 * 3 * 3, 8, activation="silu"),
        Activation("softplus"),
        Dense(8, 6, activation="elu"),
        Activation("gelu"),
        Dense(6, 3),
    ], dtype=dtype, seed=seed, input_shape=(5, 5, 2)).compile(fastnn.Adam(1e-2),
                                                               fastnn.SoftmaxCrossEntropy())


def test_model_with_new_activations_gradient_check():
    """Every parameter of a model chaining the four (fused into Conv2D and Dense, and as layers)
    against float64 central differences."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5, 5, 2))
    y = rng.integers(0, 3, size=6)
    model = _model_with_new_activations("float64")
    errors = fastnn.gradient_check(model, X, y)
    assert len(errors) == 10  # weight and bias of 2 Conv2D and 3 Dense
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_with_new_activations_save_load_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 5, 5, 2))
    y = rng.integers(0, 3, size=16)
    model = _model_with_new_activations(dtype)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "acts.npz"
    model.save(path)
    same = fastnn.load(path)
    assert [getattr(layer, "activation", None) for layer in same.layers] == \
        ["gelu", "elu", None, "silu", "softplus", "elu", "gelu", "identity"]
    assert same.layers[1].alpha == 0.7 and same.layers[5].alpha == 1.0
    assert [layer.get_config() for layer in same.layers] == \
        [layer.get_config() for layer in model.layers]
    np.testing.assert_array_equal(same.predict(X), model.predict(X))
    # training continues identically (the kept Z of gelu/silu is rebuilt by the first forward)
    l1 = model.train_on_batch(X[:8], y[:8])
    l2 = same.train_on_batch(X[:8], y[:8])
    assert l1 == l2
    for a, b in zip(model.layers, same.layers):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("dtype", DTYPES)
def test_new_activations_large_inputs_stay_finite_in_layers(dtype):
    """Pre-activations of +-1e4 through Dense: outputs and gradients finite, with the limits."""
    X = np.array([[1.0], [-1.0]])
    W = np.array([[1e4, -1e4, 30.0]])
    for act in NEW_ACTIVATIONS:
        layer = make_dense(1, 3, act, dtype, W, np.zeros(3))
        Y = layer.forward(X.astype(dtype))
        assert np.all(np.isfinite(Y)), act
        assert Y[0, 0] == 1e4 and Y[1, 1] == 1e4, act
        dX = layer.backward(np.ones((2, 3), dtype=dtype))
        assert np.all(np.isfinite(dX)) and np.all(np.isfinite(layer.grads["weight"])), act


def test_summary_shows_alpha_only_where_it_is_not_the_activations_default():
    m = fastnn.Sequential([Dense(4, 3, activation="leaky_relu"), Dense(3, 3, activation="elu"),
                           Activation("elu", alpha=0.5), Dense(3, 2, activation="leaky_relu",
                                                                  alpha=0.2)])
    lines = m.summary(print_fn=None).splitlines()
    rows = [next(line for line in lines if line.startswith(f"{i}: ")) for i in range(4)]
    assert "alpha" not in rows[0] and "alpha" not in rows[1]
    assert "alpha=0.5" in rows[2] and "alpha=0.2" in rows[3]
