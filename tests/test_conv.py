"""Conv2D and Flatten: forward against a loop-by-definition reference, gradients against central
differences, thread-count independence, and clear errors for bad shapes."""
import numpy as np
import pytest

import fastnn
from fastnn import _activations, _conv
from fastnn.layers import Conv2D, Flatten

from conftest import ACTIVATION_TABLE, act_forward, numerical_grad, rel_error


# ---- plain references ------------------------------------------------------------------------

def conv_reference(X, weight, bias, stride, padding):
    """Y[n, i, j, m] = sum_{a, b, c} Xpad[n, i*sh + a, j*sw + b, c] * weight[a, b, c, m] + bias[m],
    by loops over output positions and kernel taps, in float64."""
    X = np.asarray(X, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    N, H, W, C = X.shape
    kh, kw, _, M = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    Xpad = np.zeros((N, H + 2 * ph, W + 2 * pw, C))
    Xpad[:, ph:ph + H, pw:pw + W, :] = X
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    Y = np.zeros((N, Ho, Wo, M))
    for i in range(Ho):
        for j in range(Wo):
            for a in range(kh):
                for b in range(kw):
                    Y[:, i, j, :] += Xpad[:, i * sh + a, j * sw + b, :] @ weight[a, b]
    return Y + np.asarray(bias, dtype=np.float64)


ACTIVATIONS = [None] + [n for n in ACTIVATION_TABLE if n not in ("identity", "softmax")]
LEAKY_ALPHA = 0.01  # Conv2D's default slope


def make_conv(cin, cout, k, s=1, p=0, activation=None, dtype=np.float64, seed=0):
    layer = Conv2D(cin, cout, k, stride=s, padding=p, activation=activation)
    layer.build(dtype, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 100)
    layer.params["bias"][...] = rng.standard_normal(cout) * 0.5
    return layer


@pytest.fixture(params=[None, "gemm", "direct"])
def path(request):
    """Run a test with the path chosen by geometry, then forced to im2col + GEMM and to the direct
    kernel (pointwise convolutions always take the pointwise path)."""
    _conv._force_path(request.param)
    yield request.param
    _conv._force_path(None)


# ---- forward ---------------------------------------------------------------------------------

def _sweep_cases():
    """Edge cases first (1x1 pointwise, kernel == padded input, stride > kernel, the DQN layers),
    then a fixed random sample of kernel 1..8, stride 1..4, padding 0..3, non-square, channels
    1..64, batch 1..9, float32/float64."""
    cases = [
        # N, H, W, Cin, Cout, (kh, kw), (sh, sw), (ph, pw), dtype, activation
        (3, 5, 4, 6, 7, (1, 1), (1, 1), (0, 0), np.float32, None),
        (2, 5, 4, 6, 7, (1, 1), (1, 1), (0, 0), np.float64, "relu"),
        (2, 5, 4, 3, 2, (1, 1), (2, 3), (1, 0), np.float64, None),
        (2, 3, 4, 2, 3, (5, 6), (1, 1), (1, 1), np.float64, None),
        (1, 9, 9, 2, 2, (2, 2), (4, 4), (0, 0), np.float32, None),
        (4, 84, 84, 4, 32, (8, 8), (4, 4), (0, 0), np.float32, "relu"),
        (3, 20, 20, 32, 64, (4, 4), (2, 2), (0, 0), np.float32, "relu"),
        (5, 9, 9, 64, 64, (3, 3), (1, 1), (0, 0), np.float64, "relu"),
        (9, 28, 28, 1, 32, (3, 3), (1, 1), (1, 1), np.float32, "tanh"),
    ]
    rng = np.random.default_rng(2024)
    acts = list(ACTIVATIONS)
    while len(cases) < 90:
        kh, kw = rng.integers(1, 9, size=2)
        sh, sw = rng.integers(1, 5, size=2)
        ph, pw = rng.integers(0, 4, size=2)
        ph, pw = min(ph, kh - 1), min(pw, kw - 1)  # padding >= kernel only adds zero rows
        if rng.random() < 0.15:
            ph, pw = rng.integers(0, 4, size=2)  # ... which must work all the same
        H = int(max(1, kh - 2 * ph + rng.integers(0, 12)))
        W = int(max(1, kw - 2 * pw + rng.integers(0, 12)))
        cin = int(rng.choice([1, 2, 3, 4, 5, 8, 13, 16, 32, 64]))
        cout = int(rng.choice([1, 2, 3, 7, 8, 16, 32, 64]))
        N = int(rng.integers(1, 10))
        dtype = np.float32 if rng.random() < 0.5 else np.float64
        act = acts[int(rng.integers(len(acts)))]
        cases.append((N, H, W, cin, cout, (int(kh), int(kw)), (int(sh), int(sw)),
                      (int(ph), int(pw)), dtype, act))
    return cases


@pytest.mark.parametrize("case", _sweep_cases(),
                         ids=lambda c: "N{}_{}x{}x{}->{}_k{}_s{}_p{}_{}_{}".format(
    c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], np.dtype(c[8]).name, c[9]))
def test_forward_matches_definition(case, path):
    N, H, W, cin, cout, k, s, p, dtype, activation = case
    layer = make_conv(cin, cout, k, s, p, activation, dtype, seed=N + H + cin)
    X = np.random.default_rng(7).standard_normal((N, H, W, cin)).astype(dtype)
    Y = layer.forward(X)
    Z = conv_reference(X, layer.weight, layer.bias, layer.stride, layer.padding)
    ref = act_forward(Z, activation, layer.alpha)  # the activation's default alpha
    assert Y.shape == ref.shape == (N,) + layer.output_shape((H, W, cin))
    assert Y.dtype == dtype
    scale = 1.0 + np.abs(Z).max()
    tol = 2e-6 if dtype == np.float32 else 1e-13
    assert np.abs(Y - ref).max() / scale < tol


def test_path_choice():
    assert _conv.conv_path(28, 28, 1, 32, 3, 3, 1, 1, 1, 1) == ("direct", "direct")  # K = 9
    assert _conv.conv_path(14, 14, 32, 64, 3, 3, 2, 2, 1, 1) == ("gemm", "gemm")     # K = 288
    assert _conv.conv_path(28, 28, 4, 32, 3, 3, 1, 1, 1, 1) == ("direct", "gemm")    # K = 36
    assert _conv.conv_path(84, 84, 4, 32, 8, 8, 4, 4, 0, 0) == ("gemm", "gemm")      # K = 256
    assert _conv.conv_path(9, 9, 64, 64, 1, 1, 1, 1, 0, 0) == ("pointwise", "pointwise")
    assert _conv.conv_path(9, 9, 128, 64, 1, 1, 2, 2, 0, 0) == ("gemm", "gemm")      # K = 128
    _conv._force_path("direct")
    assert _conv.conv_path(84, 84, 4, 32, 8, 8, 4, 4, 0, 0) == ("direct", "direct")
    _conv._force_path("gemm")
    assert _conv.conv_path(28, 28, 1, 32, 3, 3, 1, 1, 1, 1) == ("gemm", "gemm")


def test_output_shape_formula():
    layer = Conv2D(3, 8, (5, 2), stride=(3, 2), padding=(2, 1))
    H, W = 17, 10
    assert layer.output_shape((H, W, 3)) == ((H + 4 - 5) // 3 + 1, (W + 2 - 2) // 2 + 1, 8)


def test_forward_float32_input_to_float64_layer_is_converted():
    layer = make_conv(2, 3, 3, dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((2, 5, 5, 2)).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float64
    ref = conv_reference(X, layer.weight, layer.bias, (1, 1), (0, 0))
    assert np.allclose(Y, ref, rtol=1e-12, atol=1e-12)


def test_non_contiguous_input_is_made_contiguous():
    layer = make_conv(3, 4, 2, s=2, dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((2, 6, 7, 6))[..., ::2]
    Y = layer.forward(X)
    assert np.allclose(Y, conv_reference(X, layer.weight, layer.bias, (2, 2), (0, 0)))


def test_empty_batch():
    layer = make_conv(2, 3, 3, s=2, p=1)
    Y = layer.forward(np.zeros((0, 5, 5, 2)))
    assert Y.shape == (0, 3, 3, 3)
    dX = layer.backward(np.zeros_like(Y))
    assert dX.shape == (0, 5, 5, 2)
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()


# ---- gradients -------------------------------------------------------------------------------

GRAD_CASES = [
    # N, H, W, Cin, Cout, kernel, stride, padding, activation
    (2, 7, 6, 3, 4, (3, 2), (2, 3), (1, 0), None),        # strides that do not divide the input
    (3, 8, 9, 2, 3, (3, 3), (2, 2), (1, 1), "tanh"),
    (2, 9, 7, 2, 2, (4, 3), (3, 2), (2, 1), "sigmoid"),
    (2, 6, 5, 3, 2, (2, 2), (3, 3), (0, 0), None),        # stride > kernel: skipped inputs
    (3, 4, 5, 5, 3, (1, 1), (1, 1), (0, 0), "tanh"),      # pointwise path (no im2col)
    (2, 5, 5, 2, 3, (1, 1), (2, 2), (1, 1), None),        # 1x1 but strided and padded: im2col
    (2, 3, 4, 2, 2, (5, 6), (1, 1), (1, 1), "tanh"),      # kernel == padded input
    (17, 5, 4, 2, 3, (3, 2), (2, 1), (1, 1), "tanh"),     # 17 images: several chunks
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradients_match_central_differences(case, path):
    N, H, W, cin, cout, k, s, p, activation = case
    layer = make_conv(cin, cout, k, s, p, activation, np.float64, seed=3)
    rng = np.random.default_rng(11)
    X = rng.standard_normal((N, H, W, cin))
    R = rng.standard_normal((N,) + layer.output_shape((H, W, cin)))

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    dW = layer.grads["weight"].copy()
    db = layer.grads["bias"].copy()
    assert rel_error(dW, numerical_grad(loss, layer.params["weight"])) < 1e-6
    assert rel_error(db, numerical_grad(loss, layer.params["bias"])) < 1e-6
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6


def test_relu_gradient_away_from_the_kink():
    layer = make_conv(2, 3, 3, 2, 1, "relu", np.float64, seed=5)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 7, 8, 2))
    Z = conv_reference(X, layer.weight, layer.bias, (2, 2), (1, 1))
    assert np.abs(Z).min() > 1e-4  # central differences with h = 1e-5 do not cross 0
    R = rng.standard_normal(Z.shape)

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert rel_error(layer.grads["weight"].copy(),
                     numerical_grad(loss, layer.params["weight"])) < 1e-6
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6


def test_backward_without_input_grad_returns_none():
    layer = make_conv(2, 3, 3, 1, 1, "tanh")
    layer.need_input_grad = False
    X = np.random.default_rng(0).standard_normal((2, 5, 5, 2))
    Y = layer.forward(X)
    R = np.ones_like(Y)
    assert layer.backward(R) is None
    full = make_conv(2, 3, 3, 1, 1, "tanh")
    full.forward(X)
    full.backward(R)
    assert np.array_equal(layer.grads["weight"], full.grads["weight"])
    assert np.array_equal(layer.grads["bias"], full.grads["bias"])


def test_identity_backward_does_not_modify_grad_output():
    layer = make_conv(2, 3, 3, 2, 1, None)
    X = np.random.default_rng(0).standard_normal((2, 6, 6, 2))
    Y = layer.forward(X)
    R = np.random.default_rng(1).standard_normal(Y.shape)
    R0 = R.copy()
    layer.backward(R)
    assert np.array_equal(R, R0)


def test_float32_gradients_close_to_float64():
    l64 = make_conv(4, 6, (3, 4), (2, 1), (1, 2), "tanh", np.float64, seed=9)
    l32 = make_conv(4, 6, (3, 4), (2, 1), (1, 2), "tanh", np.float32, seed=9)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((5, 9, 8, 4))
    Y = l64.forward(X)
    R = rng.standard_normal(Y.shape)
    dX64 = l64.backward(R)
    l32.forward(X.astype(np.float32))
    dX32 = l32.backward(R.astype(np.float32))
    assert rel_error(dX32, dX64) < 1e-5
    assert rel_error(l32.grads["weight"], l64.grads["weight"]) < 1e-5
    assert rel_error(l32.grads["bias"], l64.grads["bias"]) < 1e-5


# ---- threads -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [
    (32, 84, 84, 4, 32, 8, 4, 0, "relu"),   # DQN layer 1
    (32, 20, 20, 32, 64, 4, 2, 0, "relu"),  # DQN layer 2
    (32, 9, 9, 64, 64, 3, 1, 0, "relu"),    # DQN layer 3
    (37, 14, 13, 5, 8, 3, 2, 1, "tanh"),    # odd batch and sizes
    (19, 6, 6, 16, 24, 1, 1, 0, None),      # pointwise
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_thread_count(shape, dtype, path):
    N, H, W, cin, cout, k, s, p, activation = shape
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, H, W, cin)).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer = make_conv(cin, cout, k, s, p, activation, dtype, seed=1)
        Y = layer.forward(X).copy()
        R = np.random.default_rng(3).standard_normal(Y.shape).astype(dtype)
        dX = layer.backward(R).copy()
        results.append((Y, dX, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


# ---- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"stride": 0}, {"stride": -1}, {"stride": (1, 0)}, {"kernel_size": 0},
    {"kernel_size": (3, -2)}, {"padding": -1}, {"padding": (0, -3)}, {"kernel_size": (1, 2, 3)},
    {"activation": "softmax"}, {"activation": "swish"},
])
def test_bad_arguments_raise_value_error(kwargs):
    args = {"in_channels": 3, "out_channels": 4, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError):
        Conv2D(**args)


@pytest.mark.parametrize("kwargs", [{"stride": 1.5}, {"kernel_size": "3"}, {"padding": True},
                                    {"in_channels": 2.0}])
def test_non_int_sizes_raise_type_error(kwargs):
    args = {"in_channels": 3, "out_channels": 4, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(TypeError):
        Conv2D(**args)


def test_kernel_larger_than_padded_input_raises():
    layer = make_conv(2, 3, (5, 3), p=(1, 0))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.output_shape((2, 8, 2))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.forward(np.zeros((1, 2, 8, 2)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer.forward(np.zeros((1, 8, 2, 2)))
    layer.forward(np.zeros((1, 3, 3, 2)))  # 3 + 2 >= 5 and 3 >= 3: fits


def test_channel_mismatch_raises():
    layer = make_conv(3, 4, 3)
    with pytest.raises(ValueError, match="3 input channels"):
        layer.output_shape((10, 10, 4))
    with pytest.raises(ValueError, match="3 input channels"):
        layer.forward(np.zeros((2, 10, 10, 1)))


@pytest.mark.parametrize("shape", [(2, 10, 10), (10, 10, 3), (2, 1, 10, 10, 3), (2, 30)])
def test_wrong_rank_raises(shape):
    with pytest.raises(ValueError, match="channels-last"):
        make_conv(3, 4, 3).forward(np.zeros(shape))


def test_backward_errors():
    layer = make_conv(2, 3, 3)
    with pytest.raises(RuntimeError):
        layer.backward(np.zeros((1, 3, 3, 3)))
    Y = layer.forward(np.zeros((1, 5, 5, 2)))
    with pytest.raises(ValueError, match="shape"):
        layer.backward(np.zeros((1, 3, 3, 4)))
    layer.backward(np.zeros_like(Y))


def test_bad_parameter_arrays_are_refused_not_crashing():
    layer = make_conv(2, 3, 3)
    with pytest.raises(ValueError, match=r"Conv2D.weight must have shape \(3, 3, 2, 3\)"):
        layer.params["weight"] = np.zeros((3, 3, 2, 4))
    Y = layer.forward(np.zeros((1, 5, 5, 2)))  # the layer still works
    assert Y.shape == (1, 3, 3, 3)
    layer = make_conv(2, 3, 3)
    layer.params["weight"] = np.asfortranarray(layer.params["weight"])
    Y = layer.forward(np.ones((1, 5, 5, 2)))  # copied to C order, still correct
    assert np.allclose(Y, conv_reference(np.ones((1, 5, 5, 2)), layer.weight, layer.bias,
                                         (1, 1), (0, 0)))


def test_kernel_wrappers_check_geometry():
    X = np.zeros((2, 6, 6, 8), np.float32)
    W = np.zeros((72, 4), np.float32)
    b = np.zeros(4, np.float32)
    assert _conv.conv_path(6, 6, 8, 4, 3, 3, 1, 1, 0, 0)[0] == "gemm"
    rows, K, _ = _conv.conv_workspace(2, 6, 6, 8, 4, 3, 3, 1, 1, 0, 0, 4)
    col = np.zeros((1, rows, K), np.float32)
    A = np.zeros((2, 4, 4, 4), np.float32)
    _conv.conv_forward(X, W, b, A, col, 3, 3, 1, 1, 0, 0, 0, 0.0, 1)
    with pytest.raises(ValueError):  # output of the wrong size
        _conv.conv_forward(X, W, b, np.zeros((2, 5, 4, 4), np.float32), col, 3, 3, 1, 1, 0, 0,
                           0, 0.0, 1)
    with pytest.raises(ValueError):  # workspace too small
        _conv.conv_forward(X, W, b, A, col[:, :rows - 1], 3, 3, 1, 1, 0, 0, 0, 0.0, 1)
    with pytest.raises(ValueError):  # zero stride
        _conv.conv_forward(X, W, b, A, col, 3, 3, 0, 1, 0, 0, 0, 0.0, 1)
    with pytest.raises(ValueError):  # kernel larger than the input
        _conv.conv_workspace(2, 6, 6, 8, 4, 7, 3, 1, 1, 0, 0, 4)


def test_get_config_round_trip():
    layer = Conv2D(3, 8, (5, 3), stride=(2, 1), padding=(1, 2), activation="leaky_relu", alpha=0.2)
    clone = Conv2D(**layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.kernel_size == (5, 3) and clone.stride == (2, 1) and clone.padding == (1, 2)
    import json
    json.dumps(layer.get_config())


def test_default_init_scale():
    layer = Conv2D(16, 32, 3, activation="relu").build(np.float32, np.random.default_rng(0))
    assert layer.weight.shape == (3, 3, 16, 32) and layer.weight.dtype == np.float32
    std = layer.weight.std()
    assert abs(std - np.sqrt(2.0 / (3 * 3 * 16))) < 0.01  # He normal, fan_in = kh kw C_in
    assert not layer.bias.any()


# ---- Flatten ---------------------------------------------------------------------------------

def test_flatten_forward_backward():
    layer = Flatten().build(np.float64)
    X = np.random.default_rng(0).standard_normal((3, 4, 5, 2))
    Y = layer.forward(X)
    assert Y.shape == (3, 40) and layer.output_shape((4, 5, 2)) == (40,)
    assert np.array_equal(Y, X.reshape(3, -1))
    R = np.random.default_rng(1).standard_normal(Y.shape)

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert dX.shape == X.shape
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6
    with pytest.raises(ValueError):
        layer.backward(np.zeros((3, 41)))
    with pytest.raises(ValueError):
        layer.output_shape(())
    layer.need_input_grad = False
    assert layer.backward(R) is None
    assert Flatten().get_config() == {}


def test_conv_pool_flatten_stack_gradient():
    """Conv -> MaxPool -> Conv -> AvgPool -> Flatten chained by hand, input gradient end to end."""
    from fastnn.layers import AvgPool2D, MaxPool2D

    rng = np.random.default_rng(4)
    layers = [make_conv(2, 4, 3, 1, 1, "tanh", seed=1), MaxPool2D(2).build(np.float64),
              make_conv(4, 3, (2, 3), (2, 1), (0, 1), "sigmoid", seed=2),
              AvgPool2D((1, 2), stride=1).build(np.float64), Flatten().build(np.float64)]
    X = rng.standard_normal((2, 9, 11, 2))

    def run():
        h = X
        for lay in layers:
            h = lay.forward(h)
        return h

    R = rng.standard_normal(run().shape)

    def loss():
        return float(np.sum(run() * R))

    loss()
    g = R
    for lay in reversed(layers):
        g = lay.backward(g)
    dX = g.copy()
    dW0 = layers[0].grads["weight"].copy()
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6
    assert rel_error(dW0, numerical_grad(loss, layers[0].params["weight"])) < 1e-6


# ---- the three-tap dW pass of the direct kernel (kw * C == 3, conv.h FNN_CONV_DIRECT_DW3) ------

def dw_reference(X, G, kernel, stride, padding):
    """dW[a, b, c, m] = sum over n, i, j of Xpad[n, i sh + a, j sw + b, c] G[n, i, j, m]
    (float64)."""
    X = np.asarray(X, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    N, H, W, C = X.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Xpad = np.zeros((N, H + 2 * ph, W + 2 * pw, C))
    Xpad[:, ph:ph + H, pw:pw + W, :] = X
    Ho, Wo = G.shape[1], G.shape[2]
    dW = np.zeros((kh, kw, C, G.shape[3]))
    for a in range(kh):
        for b in range(kw):
            patch = Xpad[:, a:a + (Ho - 1) * sh + 1:sh, b:b + (Wo - 1) * sw + 1:sw, :]
            dW[a, b] = np.einsum("nijc,nijm->cm", patch, G)
    return dW


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    # H, W, Cin, Cout, kernel, stride, padding: kw * Cin == 3
    (28, 28, 1, 32, (3, 3), (1, 1), (1, 1)),   # the small CNN's first layer
    (9, 11, 1, 40, (3, 3), (2, 2), (1, 1)),    # 40 = one block of 32 + single vectors
    (8, 7, 1, 36, (2, 3), (1, 2), (0, 2)),     # wide padding: taps out of range at both ends
    (6, 5, 3, 33, (2, 1), (1, 1), (1, 0)),     # kw = 1, three channels; scalar remainder
    (7, 7, 1, 16, (3, 3), (3, 3), (0, 0)),     # float64: one block of 16, float32: none
], ids=["28x28", "stride2", "pad2", "kw1c3", "m16"])
def test_direct_three_tap_weight_gradient_matches_reference(case, dtype):
    H, W, cin, cout, k, s, p = case
    _conv._force_path("direct")
    try:
        layer = make_conv(cin, cout, k, s, p, None, dtype, seed=5)
        layer.need_input_grad = False
        rng = np.random.default_rng(6)
        X = rng.standard_normal((5, H, W, cin)).astype(dtype)
        G = rng.standard_normal((5,) + layer.output_shape((H, W, cin))).astype(dtype)
        layer.forward(X)
        layer.backward(G)
    finally:
        _conv._force_path(None)
    ref = dw_reference(X, G, k, s, p)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert rel_error(layer.grads["weight"], ref) < tol
    np.testing.assert_allclose(layer.grads["weight"], ref, rtol=tol * 50, atol=tol * 50)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    # N, H, W, Cin, Cout, kernel, stride, padding: Cout a multiple of 32 takes the direct
    # forward's two-position pass for interior positions (conv.h FNN_CONV_DIRECT)
    (3, 28, 28, 1, 32, (3, 3), (1, 1), (1, 1)),
    (2, 13, 12, 2, 32, (3, 2), (2, 1), (1, 2)),
    (2, 9, 10, 1, 64, (5, 5), (1, 2), (2, 2)),
    (2, 7, 6, 3, 16, (2, 2), (1, 3), (0, 1)),   # float64: 16 = one block; float32: not paired
], ids=["28x28", "strided", "5x5", "m16"])
def test_direct_forward_two_position_pass_matches_definition(case, dtype):
    N, H, W, cin, cout, k, s, p = case
    _conv._force_path("direct")
    try:
        layer = make_conv(cin, cout, k, s, p, None, dtype, seed=8)
        X = np.random.default_rng(9).standard_normal((N, H, W, cin)).astype(dtype)
        got = layer.forward(X).copy()
    finally:
        _conv._force_path(None)
    want = conv_reference(X, layer.params["weight"], layer.params["bias"], s, p)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert rel_error(got, want) < tol


# ---- padding="same" / "valid" (TensorFlow's arithmetic, asymmetric) ---------------------------

def tf_same_pads(size, kernel, stride):
    """TensorFlow's "same" padding of one axis: ``out = ceil(size / stride)``, total
    ``max((out - 1) stride + kernel - size, 0)``, ``total // 2`` before, the rest after."""
    out = int(np.ceil(size / stride))
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def conv_reference_same(X, weight, bias, stride):
    """The convolution of ``X`` zero-padded explicitly (np.pad) with TensorFlow's "same" split."""
    kh, kw = weight.shape[:2]
    (sh, sw) = stride
    _, pt, pb = tf_same_pads(X.shape[1], kh, sh)
    _, pl, pr = tf_same_pads(X.shape[2], kw, sw)
    Xpad = np.pad(np.asarray(X, np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    return conv_reference(Xpad, weight, bias, stride, (0, 0))


SAME_CASES = [
    # N, H, W, Cin, Cout, kernel, stride, dtype, activation
    (2, 7, 6, 3, 4, 3, 1, np.float64, None),              # odd kernel: (1, 1)
    (2, 7, 6, 3, 4, 2, 1, np.float32, "relu"),            # even kernel: (0, 1), extra bottom/right
    (2, 8, 9, 2, 5, 4, 1, np.float64, "tanh"),            # total 3: (1, 2)
    (3, 7, 8, 2, 3, 3, 2, np.float32, None),              # H (1, 1), W (0, 1)
    (2, 9, 10, 3, 4, (3, 4), 3, np.float64, "sigmoid"),   # H (0, 0), W (1, 2)
    (2, 5, 5, 1, 32, 5, 2, np.float32, "relu"),           # (2, 2), direct path by geometry
    (2, 11, 10, 4, 8, (5, 2), (3, 2), np.float64, None),  # H (1, 2), W (0, 0)
    (3, 10, 7, 3, 4, 2, 2, np.float64, None),             # H (0, 0), W (0, 1)
    (1, 4, 5, 2, 3, 1, 2, np.float32, None),              # 1x1 strided: no padding
    (2, 6, 6, 3, 2, 1, 1, np.float64, "tanh"),            # 1x1: the pointwise path
    (2, 3, 2, 2, 3, 5, 1, np.float64, None),              # kernel larger than the input
    (2, 2, 3, 2, 3, 4, 3, np.float32, None),              # one output: H (1, 1), W (0, 1)
    (2, 14, 13, 16, 32, 3, 2, np.float32, "relu"),        # K = 144: im2col + GEMM by geometry
]


def _same_id(c):
    return "N{}_{}x{}x{}->{}_k{}_s{}_{}_{}".format(c[0], c[1], c[2], c[3], c[4], c[5], c[6],
                                                    np.dtype(c[7]).name, c[8])


@pytest.mark.parametrize("case", SAME_CASES, ids=_same_id)
def test_same_padding_output_shape_and_pads_follow_tensorflow(case):
    N, H, W, cin, cout, k, s, dtype, activation = case
    layer = Conv2D(cin, cout, k, stride=s, padding="same")
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    Ho, pt, pb = tf_same_pads(H, kh, sh)
    Wo, pl, pr = tf_same_pads(W, kw, sw)
    assert layer.output_shape((H, W, cin)) == (Ho, Wo, cout)
    assert layer.pads(H, W) == (pt, pb, pl, pr)
    assert Ho == -(-H // sh) and Wo == -(-W // sw)


def test_same_cases_put_the_extra_padding_at_the_bottom_right():
    """The sweep above includes odd total paddings (more at the end) on both axes."""
    def _pair(v):
        return (v, v) if isinstance(v, int) else v

    uneven = set()
    for _, H, W, _, _, k, s, _, _ in SAME_CASES:
        (kh, kw), (sh, sw) = _pair(k), _pair(s)
        if tf_same_pads(H, kh, sh)[2] > tf_same_pads(H, kh, sh)[1]:
            uneven.add("H")
        if tf_same_pads(W, kw, sw)[2] > tf_same_pads(W, kw, sw)[1]:
            uneven.add("W")
    assert uneven == {"H", "W"}


@pytest.mark.parametrize("case", SAME_CASES, ids=_same_id)
def test_same_padding_forward_matches_explicit_padding(case, path):
    N, H, W, cin, cout, k, s, dtype, activation = case
    layer = Conv2D(cin, cout, k, stride=s, padding="same", activation=activation)
    layer.build(dtype, np.random.default_rng(N + H))
    layer.params["bias"] = np.random.default_rng(1).standard_normal(cout) * 0.5
    X = np.random.default_rng(7).standard_normal((N, H, W, cin)).astype(dtype)
    Y = layer.forward(X)
    Z = conv_reference_same(X, layer.weight, layer.bias, layer.stride)
    ref = act_forward(Z, activation, LEAKY_ALPHA)
    assert Y.shape == ref.shape == (N,) + layer.output_shape((H, W, cin))
    tol = 2e-6 if dtype == np.float32 else 1e-13
    assert np.abs(Y - ref).max() / (1.0 + np.abs(Z).max()) < tol


def test_same_padding_extra_row_and_column_are_at_the_bottom_right():
    """A 2x2 all-ones kernel on a 3x3 input: output (i, j) sums X[i:i+2, j:j+2], the zeros beyond
    the last row and column (TensorFlow); PyTorch-style top/left extra would shift every window."""
    layer = Conv2D(1, 1, 2, padding="same").build(np.float64)
    layer.params["weight"] = np.ones((2, 2, 1, 1))
    layer.params["bias"] = np.zeros(1)
    X = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    Y = layer.forward(X)[0, :, :, 0]
    assert Y.tolist() == [[12.0, 16.0, 9.0], [24.0, 28.0, 15.0], [15.0, 17.0, 9.0]]


@pytest.mark.parametrize("case", [c for c in SAME_CASES if c[0] * c[1] * c[2] * c[3] <= 350],
                         ids=_same_id)
def test_same_padding_gradients_match_central_differences(case, path):
    N, H, W, cin, cout, k, s, _, activation = case
    cout = min(cout, 4)
    activation = "tanh" if activation == "relu" else activation  # smooth: no kink to cross
    layer = Conv2D(cin, cout, k, stride=s, padding="same", activation=activation)
    layer.build(np.float64, np.random.default_rng(3))
    layer.params["bias"] = np.random.default_rng(4).standard_normal(cout) * 0.5
    rng = np.random.default_rng(11)
    X = rng.standard_normal((N, H, W, cin))
    R = rng.standard_normal((N,) + layer.output_shape((H, W, cin)))

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    dW = layer.grads["weight"].copy()
    db = layer.grads["bias"].copy()
    assert rel_error(dW, numerical_grad(loss, layer.params["weight"])) < 1e-6
    assert rel_error(db, numerical_grad(loss, layer.params["bias"])) < 1e-6
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6


@pytest.mark.parametrize("shape", [
    (37, 14, 13, 5, 8, 3, 2, "tanh"),     # odd sizes, extra column at the right
    (19, 9, 10, 1, 32, 4, 1, "relu"),     # even kernel, direct path by geometry
    (21, 12, 11, 16, 24, 2, 3, None),     # K = 64
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_padding_results_do_not_depend_on_thread_count(shape, dtype, path):
    N, H, W, cin, cout, k, s, activation = shape
    X = np.random.default_rng(0).standard_normal((N, H, W, cin)).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer = Conv2D(cin, cout, k, stride=s, padding="same", activation=activation)
        layer.build(dtype, np.random.default_rng(1))
        Y = layer.forward(X).copy()
        R = np.random.default_rng(3).standard_normal(Y.shape).astype(dtype)
        dX = layer.backward(R).copy()
        results.append((Y, dX, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_valid_padding_is_no_padding():
    valid = make_conv(3, 4, (3, 2), (2, 1), "valid", "tanh", seed=2)
    zero = make_conv(3, 4, (3, 2), (2, 1), 0, "tanh", seed=2)
    X = np.random.default_rng(0).standard_normal((2, 9, 8, 3))
    assert valid.output_shape((9, 8, 3)) == zero.output_shape((9, 8, 3)) == (4, 7, 4)
    assert valid.pads(9, 8) == (0, 0, 0, 0)
    assert np.array_equal(valid.forward(X), zero.forward(X))
    with pytest.raises(ValueError, match="larger than the padded input"):
        valid.forward(np.zeros((1, 2, 8, 3)))


@pytest.mark.parametrize("padding,saved", [("same", "same"), ("SAME", "same"),
                                           ("valid", "valid"), (1, [1, 1]), ((2, 0), [2, 0])])
def test_padding_config_keeps_what_was_given(padding, saved):
    layer = Conv2D(3, 4, 3, padding=padding)
    assert layer.get_config()["padding"] == saved
    clone = Conv2D(**layer.get_config())
    assert clone.padding == layer.padding and clone.get_config() == layer.get_config()


def test_same_padding_model_saves_and_loads(tmp_path):
    from fastnn import Sequential
    from fastnn.layers import AvgPool2D, Dense, GlobalAvgPool2D, MaxPool2D

    model = Sequential([Conv2D(2, 4, 3, stride=2, padding="same", activation="relu"),
                        MaxPool2D(3, stride=2, padding="same"), Conv2D(4, 6, 2, padding="same"),
                        AvgPool2D(3, stride=1, padding=1), GlobalAvgPool2D(), Dense(6, 3)],
                       dtype="float64", seed=0)
    X = np.random.default_rng(0).standard_normal((3, 11, 10, 2))
    Y = model.predict(X)
    assert Y.shape == (3, 3)
    path = tmp_path / "same.npz"
    model.save(path)
    loaded = fastnn.load(path)
    assert loaded.get_config() == model.get_config()
    assert [getattr(lay, "padding", None) for lay in loaded.layers][:4] == \
        ["same", "same", "same", (1, 1)]
    assert np.array_equal(loaded.predict(X), Y)
    rebuilt = Sequential.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    assert rebuilt.output_shape((11, 10, 2)) == (3,)


@pytest.mark.parametrize("padding", ["full", "", "causal", "same "])
def test_unknown_padding_string_names_the_allowed_values(padding):
    with pytest.raises(ValueError, match="'valid', 'same'") as info:
        Conv2D(3, 4, 3, padding=padding)
    assert repr(padding) in str(info.value)


@pytest.mark.parametrize("padding", [None, 1.5, ("same", 1), (1, 2.0), b"same"])
def test_non_int_padding_raises_type_error(padding):
    with pytest.raises(TypeError):
        Conv2D(3, 4, 3, padding=padding)


def test_kernel_wrappers_take_asymmetric_padding():
    """The kernels' end padding: checked, and a 1x1 convolution padded at the end does not take
    the pointwise path (which would read past the input)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2, 4, 5, 3))
    Wm = rng.standard_normal((3, 2))
    b = rng.standard_normal(2)
    assert _conv.conv_path(4, 5, 3, 2, 1, 1, 1, 1, 0, 0) == ("pointwise", "pointwise")
    assert _conv.conv_path(4, 5, 3, 2, 1, 1, 1, 1, 0, 0, ph_end=1)[0] != "pointwise"
    rows, K, _ = _conv.conv_workspace(2, 4, 5, 3, 2, 1, 1, 1, 1, 0, 0, 8, ph_end=1, pw_end=2)
    col = np.zeros((1, rows, K))
    A = np.zeros((2, 5, 7, 2))
    _conv.conv_forward(X, Wm, b, A, col, 1, 1, 1, 1, 0, 0, 0, 0.0, 1, ph_end=1, pw_end=2)
    Xpad = np.pad(X, ((0, 0), (0, 1), (0, 2), (0, 0)))
    assert np.allclose(A, Xpad @ Wm + b, rtol=0, atol=1e-13)
    with pytest.raises(ValueError):  # output sized for the symmetric padding
        _conv.conv_forward(X, Wm, b, np.zeros((2, 4, 5, 2)), col, 1, 1, 1, 1, 0, 0, 0, 0.0, 1,
                           ph_end=1, pw_end=2)
    with pytest.raises(ValueError, match="end padding"):
        _conv.conv_forward(X, Wm, b, A, col, 1, 1, 1, 1, 0, 0, 0, 0.0, 1, ph_end=-2, pw_end=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        _conv.conv_workspace(2, 4, 5, 3, 2, 6, 1, 1, 1, 1, 0, 8, ph_end=0)


@pytest.mark.parametrize("pads", [(0, 3, 2, 0), (2, 0, 0, 1), (1, 2, 3, 1), (0, 1, 0, 0)])
def test_arbitrary_asymmetric_padding_in_the_kernels(pads, path):
    """The kernels take any (top, bottom, left, right) padding, not only TensorFlow's split:
    forward against np.pad, every gradient against central differences (the layer's pads()
    overridden on the instance)."""
    layer = make_conv(2, 3, (3, 2), (2, 1), 0, "tanh", np.float64, seed=6)
    layer.pads = lambda H, W: pads
    pt, pb, pl, pr = pads
    rng = np.random.default_rng(8)
    X = rng.standard_normal((3, 6, 5, 2))
    Xpad = np.pad(X, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ref = np.tanh(conv_reference(Xpad, layer.weight, layer.bias, (2, 1), (0, 0)))
    Y = layer.forward(X)
    assert Y.shape == ref.shape == (3,) + layer.output_shape((6, 5, 2))
    assert np.abs(Y - ref).max() < 1e-13
    R = rng.standard_normal(Y.shape)

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    assert rel_error(layer.grads["weight"].copy(), numerical_grad(loss, layer.params["weight"])) \
        < 1e-6
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-6


# ---- activations fused into the kernel: elu, softplus, gelu, silu ------------------------------
# gelu and silu: the forward kernel keeps the pre-activation Z (its backward needs it)

NEW_ACTIVATIONS = ["elu", "softplus", "gelu", "silu"]
ACT_GRAD_CASES = [
    # N, H, W, Cin, Cout, kernel, stride, padding (gemm, direct and pointwise paths)
    (2, 7, 6, 3, 4, (3, 2), (2, 3), (1, 0)),
    (3, 4, 5, 5, 3, (1, 1), (1, 1), (0, 0)),
    (17, 5, 4, 2, 3, (3, 2), (2, 1), (1, 1)),
    (2, 6, 7, 2, 3, (2, 3), (2, 1), "same"),   # asymmetric padding
]


@pytest.mark.parametrize("case", ACT_GRAD_CASES, ids=["strided", "pointwise", "17images", "same"])
@pytest.mark.parametrize("activation", NEW_ACTIVATIONS)
def test_new_activation_gradients_match_central_differences(activation, case, path):
    N, H, W, cin, cout, k, s, p = case
    layer = make_conv(cin, cout, k, s, p, activation, np.float64, seed=3)
    rng = np.random.default_rng(12)
    X = rng.standard_normal((N, H, W, cin))
    R = rng.standard_normal((N,) + layer.output_shape((H, W, cin)))

    def loss():
        return float(np.sum(layer.forward(X) * R))

    loss()
    dX = layer.backward(R).copy()
    dW = layer.grads["weight"].copy()
    db = layer.grads["bias"].copy()
    assert rel_error(dW, numerical_grad(loss, layer.params["weight"])) < 1e-7
    assert rel_error(db, numerical_grad(loss, layer.params["bias"])) < 1e-7
    assert rel_error(dX, numerical_grad(loss, X)) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", NEW_ACTIVATIONS)
def test_new_activation_forward_keeps_preactivation(activation, dtype, path):
    """Forward: g(conv) with the same bits as the identity layer followed by the elementwise
    kernel; gelu and silu keep exactly the identity layer's output as Z, the others keep none."""
    layer = make_conv(3, 8, 3, 1, 1, activation, dtype, seed=4)
    lin = make_conv(3, 8, 3, 1, 1, None, dtype, seed=4)
    lin.params["weight"] = layer.weight  # (the default init depends on the activation)
    lin.params["bias"] = layer.bias
    X = np.random.default_rng(5).standard_normal((4, 9, 8, 3)).astype(dtype)
    Y = layer.forward(X)
    Z = lin.forward(X)
    A = Z.copy()
    _activations.forward_inplace(A.reshape(-1), layer._kind, layer.alpha, 1)
    assert np.array_equal(Y, A)
    if activation in ("gelu", "silu"):
        assert np.array_equal(layer._Z, Z)
    else:
        assert layer._Z is None and "Z" not in layer.__dict__.get("_buffers", {})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", NEW_ACTIVATIONS)
def test_new_activation_results_do_not_depend_on_thread_count(activation, dtype, path):
    N, H, W, cin, cout, k, s, p = 37, 14, 13, 5, 8, 3, 2, 1
    X = np.random.default_rng(0).standard_normal((N, H, W, cin)).astype(dtype)
    results = []
    for nt in (1, 2, 3):
        fastnn.set_num_threads(nt)
        layer = make_conv(cin, cout, k, s, p, activation, dtype, seed=1)
        Y = layer.forward(X).copy()
        R = np.random.default_rng(3).standard_normal(Y.shape).astype(dtype)
        dX = layer.backward(R).copy()
        results.append((Y, dX, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_conv_kernel_keep_buffer_of_wrong_shape_raises():
    X = np.zeros((2, 5, 5, 1))
    W = np.zeros((9, 4))
    b = np.zeros(4)
    A = np.zeros((2, 3, 3, 4))
    col = np.zeros((1,) + _conv.conv_workspace(2, 5, 5, 1, 4, 3, 3, 1, 1, 0, 0, 8)[:2])
    with pytest.raises(ValueError, match="Z"):
        _conv.conv_forward(X, W, b, A, col, 3, 3, 1, 1, 0, 0, 7, 0.0, 1, Z=np.zeros((2, 3, 3, 3)))

