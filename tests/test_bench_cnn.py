"""The CNN benchmark's pieces: FLOP formulas, the NumPy baseline's gradients (float64 central
differences against a loop-by-definition reference written here), and the NumPy baseline and
fastnn computing the same train step. Nothing about speed."""
import copy
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.models import (MODELS, forward_flops, gemms, layer_flops, layer_name,  # noqa: E402
                          layer_shapes, train_step_flops)
from bench.numpy_net import MaxPool2D as NpMaxPool2D  # noqa: E402
from bench.numpy_net import NumpyNet, make_data  # noqa: E402
from conftest import numerical_grad, softmax_ce  # noqa: E402


def _conv(cin, cout, k, stride=1, padding=0, activation="relu"):
    k = k if isinstance(k, list) else [k, k]
    stride = stride if isinstance(stride, list) else [stride, stride]
    padding = padding if isinstance(padding, list) else [padding, padding]
    return {"type": "conv", "in_channels": cin, "out_channels": cout, "kernel_size": k,
            "stride": stride, "padding": padding, "activation": activation}


def _pool(k, s):
    return {"type": "maxpool", "kernel_size": [k, k], "stride": [s, s]}


def _dense(k, m, activation="relu"):
    return {"type": "dense", "in_features": k, "out_features": m, "activation": activation}


FLAT = {"type": "flatten"}

# Small nets covering: stride 2 with padding on a size the stride does not divide, max pooling
# that tiles its input exactly, that leaves rows uncovered, and that overlaps; a conv without
# activation; non-square kernels and strides; both losses.
SMALL_SPECS = {
    "ce_tiled_pool": {
        "kind": "cnn", "input_shape": [8, 7, 2], "loss": "softmax_ce", "inputs": "normal",
        "layers": [_conv(2, 3, 3, stride=2, padding=1), _pool(2, 2),   # (4,4,3) -> (2,2,3)
                   _conv(3, 4, 2, padding=1), FLAT,                       # (3,3,4)
                   _dense(36, 5), _dense(5, 4, None)]},
    "ce_uncovered_pool": {
        "kind": "cnn", "input_shape": [9, 8, 2], "loss": "softmax_ce", "inputs": "normal",
        "layers": [_conv(2, 3, [3, 2], stride=[2, 1], padding=[1, 0]),  # (5,7,3)
                   _pool(2, 2), FLAT,                                     # (2,3,3)
                   _dense(18, 4, None)]},
    "mse_overlapping_pool": {
        "kind": "cnn", "input_shape": [8, 8, 3], "loss": "mse", "inputs": "uniform",
        "layers": [_conv(3, 4, 3), _pool(3, 2),                            # (6,6,4) -> (2,2,4)
                   _conv(4, 5, 2, activation=None), FLAT,                  # (1,1,5)
                   _dense(5, 3, None)]},
}


# -- FLOP formulas ----------------------------------------------------------------------------

def test_flops_dqn_by_hand():
    n = 32
    c1 = 2 * n * 20 * 20 * 8 * 8 * 4 * 32
    c2 = 2 * n * 9 * 9 * 4 * 4 * 32 * 64
    c3 = 2 * n * 7 * 7 * 3 * 3 * 64 * 64
    d1 = 2 * n * 3136 * 512
    d2 = 2 * n * 512 * 6
    # forward f, backward 2f, except the first layer (no dX): f
    assert layer_flops(MODELS["dqn"], n) == [(c1, c1), (c2, 2 * c2), (c3, 2 * c3), (0, 0),
                                             (d1, 2 * d1), (d2, 2 * d2)]
    assert train_step_flops(MODELS["dqn"], n) == 2 * c1 + 3 * (c2 + c3 + d1 + d2)


def test_flops_small_cnn_by_hand():
    n = 64
    c1 = 2 * n * 28 * 28 * 3 * 3 * 1 * 32
    c2 = 2 * n * 7 * 7 * 3 * 3 * 32 * 64
    d1, d2 = 2 * n * 3136 * 128, 2 * n * 128 * 10
    assert train_step_flops(MODELS["cnn"], n) == 2 * c1 + 3 * (c2 + d1 + d2)


def test_shapes_and_names():
    assert [s for _, s in layer_shapes(MODELS["dqn"])] == [
        (20, 20, 32), (9, 9, 64), (7, 7, 64), (3136,), (512,), (6,)]
    assert [s for _, s in layer_shapes(MODELS["cnn"])] == [
        (28, 28, 32), (14, 14, 32), (7, 7, 64), (3136,), (128,), (10,)]
    assert [layer_name(c) for c in MODELS["cnn"]["layers"]] == [
        "conv 3x3/1 pad1 1->32", "maxpool 2x2", "conv 3x3/2 pad1 32->64", "flatten",
        "dense 3136->128", "dense 128->10"]
    for spec in SMALL_SPECS.values():
        layer_shapes(spec)  # consistent


def test_gemms_add_up_to_the_flop_formulas():
    """The sgemm roofline times exactly the GEMMs the useful FLOPs count."""
    for spec in list(MODELS.values()) + list(SMALL_SPECS.values()):
        for n in (1, 3):
            train, predict = gemms(spec, n), gemms(spec, n, "predict")
            assert sum(2 * g["m"] * g["k"] * g["n"] for g in train) == train_step_flops(spec, n)
            assert sum(2 * g["m"] * g["k"] * g["n"] for g in predict) == forward_flops(spec, n)
            assert predict == [g for g in train if g["phase"] == "forward"]
            assert forward_flops(spec, n) == sum(f for f, _ in layer_flops(spec, n))
            # the first layer with weights has no dX; every other one has one
            first = train[0]["layer"]
            assert [g["layer"] for g in train if g["phase"] == "dX"] == [
                g["layer"] for g in predict[::-1] if g["layer"] != first]


def test_gemm_shapes_dqn_by_hand():
    n = 2
    by = {(g["layer"], g["phase"]): (g["m"], g["k"], g["n"]) for g in gemms(MODELS["dqn"], n)}
    P1, K1 = n * 20 * 20, 8 * 8 * 4                   # im2col of conv 8x8/4 4->32
    assert by[(0, "forward")] == (P1, K1, 32)
    assert by[(0, "dW")] == (K1, P1, 32)
    assert (0, "dX") not in by                          # the input needs no gradient
    P2, K2 = n * 9 * 9, 4 * 4 * 32
    assert by[(1, "dX")] == (P2, 64, K2)
    assert by[(4, "forward")] == (n, 3136, 512)         # dense (N,K)x(K,M)
    assert by[(4, "dW")] == (3136, n, 512)              # (K,N)x(N,M)
    assert by[(4, "dX")] == (n, 512, 3136)              # (N,M)x(M,K)
    assert [k for k in by if k[1] == "forward"] == [(0, "forward"), (1, "forward"),
                                                     (2, "forward"), (4, "forward"),
                                                     (5, "forward")]


@pytest.mark.parametrize("name", ["mlp", "cnn", "ce_tiled_pool"])
@pytest.mark.parametrize("mode", ["train", "predict"])
def test_sgemm_step_runs_exactly_the_gemms(name, mode):
    from bench._sgemm import GemmStep

    spec = dict(MODELS.get(name) or SMALL_SPECS[name], dtype="float64")
    step = GemmStep(spec, 3, mode, seed=0)
    assert step() is None
    want = train_step_flops(spec, 3) if mode == "train" else forward_flops(spec, 3)
    assert step.flops == want
    assert [(i, p) for i, p, *_ in step.calls] == [(g["layer"], g["phase"])
                                                   for g in gemms(spec, 3, mode)]
    for _, _phase, a, b, out in step.calls:
        np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
        assert out.dtype == np.float64 and np.isfinite(out).all()
    if mode == "train":  # dW = X^T dZ and dX = dZ W^T share the forward's operands
        ops = {(i, p): (a, b) for i, p, a, b, _ in step.calls}
        for i, p in ops:
            if p == "dW":
                assert np.shares_memory(ops[(i, "dW")][0], ops[(i, "forward")][0])
            if p == "dX":
                assert np.shares_memory(ops[(i, "dX")][1], ops[(i, "forward")][1])
    rows = step.profile(2)
    assert [r["name"] for r in rows] == [layer_name(c) for c in spec["layers"]] + [
        "loss", "optimizer"]
    assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in rows)


# -- the inference steps -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "cnn", "dqn"])
def test_numpy_forward_matches_fastnn_predict(name):
    """The NumPy baseline's inference (its forward pass) computes what fastnn's predict does."""
    import fastnn
    from bench.fastnn_net import make_model

    spec = dict(MODELS[name], dtype="float64")
    n = 2
    net = NumpyNet(spec, n, dtype=np.float64, seed=1)
    net.flat_params += 0.01
    model = make_model(spec)
    _copy_weights(net, model)
    X, _ = make_data(spec, n, seed=0, dtype=np.float64)
    fastnn.set_num_threads(1)
    try:
        np.testing.assert_allclose(net.forward(X), model.predict(X), rtol=1e-10, atol=1e-12)
    finally:
        fastnn.set_num_threads(None)


@pytest.mark.parametrize("impl", ["numpy", "fastnn", "torch", "sgemm"])
@pytest.mark.parametrize("name", ["mlp", "dqn"])
def test_build_predict(impl, name):
    import importlib

    if impl == "torch":
        pytest.importorskip("torch")
    from bench._worker import MODULES

    spec = MODELS[name]
    mod = importlib.import_module(MODULES[impl])
    for n in (1, 3):
        out = mod.build_predict(spec, n, seed=0)()
        if impl == "sgemm":
            assert out is None
            continue
        out = np.asarray(out)
        n_out = spec["layers"][-1]["out_features"]
        assert out.shape == (n, n_out) and np.isfinite(out).all()


# -- a plain float64 reference ------------------------------------------------------------------

def _conv_ref(X, W, b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = W.shape[:2]
    Xp = np.pad(X, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    Ho = (Xp.shape[1] - kh) // sh + 1
    Wo = (Xp.shape[2] - kw) // sw + 1
    Y = np.empty((X.shape[0], Ho, Wo, W.shape[3]))
    for i in range(Ho):
        for j in range(Wo):
            patch = Xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            Y[:, i, j, :] = np.einsum("nabc,abcm->nm", patch, W) + b
    return Y


def _pool_ref(X, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    Ho = (X.shape[1] - kh) // sh + 1
    Wo = (X.shape[2] - kw) // sw + 1
    Y = np.empty((X.shape[0], Ho, Wo, X.shape[3]))
    for i in range(Ho):
        for j in range(Wo):
            Y[:, i, j, :] = X[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :].max(axis=(1, 2))
    return Y


def _loss_ref(spec, params, X, y):
    """The spec's mean loss, by definition, in float64; ``params``: [W0, b0, W1, b1, ...]."""
    A = X
    it = iter(params)
    for cfg in spec["layers"]:
        t = cfg["type"]
        if t == "conv":
            W, b = next(it), next(it)
            A = _conv_ref(A, W, b, cfg["stride"], cfg["padding"])
        elif t == "dense":
            W, b = next(it), next(it)
            A = A @ W + b
        elif t == "maxpool":
            A = _pool_ref(A, cfg["kernel_size"], cfg["stride"])
        else:
            A = A.reshape(A.shape[0], -1)
        if cfg.get("activation") == "relu":
            A = np.maximum(A, 0)
    if spec["loss"] == "mse":
        return np.mean((A - y) ** 2)
    return softmax_ce(A, y)


@pytest.mark.parametrize("name", sorted(SMALL_SPECS))
def test_numpy_cnn_gradients_match_finite_differences(name):
    spec = SMALL_SPECS[name]
    n = 3
    net = NumpyNet(spec, n, dtype=np.float64, seed=4, learning_rate=0.0, momentum=0.9)
    net.flat_params += 0.05 * np.random.default_rng(5).standard_normal(net.flat_params.size)
    X, y = make_data(spec, n, seed=6, dtype=np.float64)
    loss = net.train_step(X, y)  # lr = 0: parameters unchanged, gradients filled
    assert loss == pytest.approx(_loss_ref(spec, net.params, X, y), rel=1e-12)
    grads = net.flat_grads.copy()
    assert np.abs(grads).max() > 0
    fd = numerical_grad(lambda: _loss_ref(spec, net.params, X, y), net.flat_params, h=1e-6)
    err = np.abs(grads - fd) / np.maximum(1e-3, np.abs(grads) + np.abs(fd))
    assert err.max() < 1e-6, (err.max(), np.argmax(err))


@pytest.mark.parametrize("name", sorted(SMALL_SPECS))
def test_numpy_cnn_input_gradient_of_second_layer(name):
    """dX of the layers after the first (the chain into the first layer) against differences of
    the reference in the first layer's output."""
    spec = SMALL_SPECS[name]
    n = 2
    net = NumpyNet(spec, n, dtype=np.float64, seed=1, learning_rate=0.0)
    X, y = make_data(spec, n, seed=2, dtype=np.float64)
    net.train_step(X, y)
    grad = net.grad
    for layer in net.layers[:0:-1]:  # back to the first layer's output (post-activation)
        grad = layer.backward(grad)
    dA0 = np.array(grad)
    A0 = net.layers[0].A.copy()
    tail = dict(spec, layers=spec["layers"][1:], input_shape=list(A0.shape[1:]))
    eps = 1e-6
    rng = np.random.default_rng(3)
    # positive entries only: a zero (ReLU) entry may tie with others for a window's maximum,
    # where the loss has a kink
    positive = np.argwhere(A0 > 0)
    assert len(positive) > 10
    for idx in map(tuple, positive[rng.choice(len(positive), 10, replace=False)]):
        A = A0.copy()
        A[idx] += eps
        up = _loss_ref(tail, net.params[2:], A, y)
        A[idx] -= 2 * eps
        down = _loss_ref(tail, net.params[2:], A, y)
        assert dA0[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)


def test_numpy_cnn_sgd_momentum_update():
    spec = SMALL_SPECS["ce_tiled_pool"]
    n = 4
    net = NumpyNet(spec, n, dtype=np.float64, seed=0, learning_rate=0.1, momentum=0.9)
    X, y = make_data(spec, n, seed=0, dtype=np.float64)
    p, v = net.flat_params.copy(), np.zeros_like(net.flat_params)
    for _ in range(3):
        net.train_step(X, y)
        v = 0.9 * v + net.flat_grads  # PyTorch's form, as fastnn
        p = p - 0.1 * v
        np.testing.assert_allclose(net.flat_params, p, rtol=1e-12, atol=1e-15)


def test_numpy_cnn_profile_rows():
    spec = SMALL_SPECS["mse_overlapping_pool"]
    net = NumpyNet(spec, 2, dtype=np.float32)
    X, y = make_data(spec, 2, seed=0, dtype=np.float32)
    rows = net.profile(X, y, repeats=3)
    assert [r["name"] for r in rows] == [layer_name(c) for c in spec["layers"]] + [
        "loss", "optimizer"]
    assert all(r["forward_ms"] >= 0 and r["backward_ms"] >= 0 for r in rows)


# -- max pooling ties: the first maximum of a window, as fastnn ---------------------------------

@pytest.mark.parametrize("kernel,stride,shape", [(2, 2, (3, 6, 6, 2)), (2, 2, (2, 5, 7, 3)),
                                                 (3, 2, (2, 7, 6, 2)), (3, 1, (1, 5, 5, 1))])
def test_numpy_maxpool_routes_to_first_maximum_like_fastnn(kernel, stride, shape):
    from fastnn.layers import MaxPool2D

    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=shape).astype(np.float64)  # many ties
    cfg = _pool(kernel, stride)
    Ho, Wo = ((shape[1] - kernel) // stride + 1, (shape[2] - kernel) // stride + 1)
    ours = NpMaxPool2D(cfg, shape[1:], (Ho, Wo, shape[3]), shape[0], np.float64, True)
    Y = ours.forward(X).copy()
    dY = rng.standard_normal(Y.shape)
    dX = ours.backward(dY).copy()
    theirs = MaxPool2D(kernel, stride=stride)
    theirs.build(np.float64)
    np.testing.assert_array_equal(Y, theirs.forward(X))
    np.testing.assert_allclose(dX, theirs.backward(dY), rtol=1e-15, atol=0)
    # the gradient is conserved: every window sends its dY to exactly one position
    assert dX.sum() == pytest.approx(dY.sum())


# -- the NumPy baseline and fastnn compute the same train step --------------------------------

def _fastnn_model(spec, seed=0):
    from bench.fastnn_net import make_model

    return make_model(spec, seed=seed)


def _copy_weights(net, model):
    it = iter(net.params)
    for layer in model.layers:
        if layer.params:
            layer.params["weight"][...] = next(it)
            layer.params["bias"][...] = next(it)


@pytest.mark.parametrize("name", ["mlp", "cnn", "dqn"] + sorted(SMALL_SPECS))
def test_numpy_baseline_and_fastnn_agree(name):
    import fastnn

    spec = copy.deepcopy(MODELS.get(name) or SMALL_SPECS[name])
    spec["dtype"] = "float64"
    spec.setdefault("learning_rate", 0.01)
    spec.setdefault("momentum", 0.9)
    n = 3
    net = NumpyNet(spec, n, dtype=np.float64, seed=0, learning_rate=spec["learning_rate"],
                   momentum=spec["momentum"])
    net.flat_params += 0.01 * np.random.default_rng(1).standard_normal(net.flat_params.size)
    model = _fastnn_model(spec)
    _copy_weights(net, model)
    X, y = make_data(spec, n, seed=0, dtype=np.float64)
    fastnn.set_num_threads(1)
    try:
        for _step in range(2):  # the second step also checks the momentum state
            loss_np = net.train_step(X, y)
            loss_fn = model.train_on_batch(X, y)
            assert loss_fn == pytest.approx(loss_np, rel=1e-10)
            it = iter(zip(net.params, net.grads))
            for layer in model.layers:
                if not layer.params:
                    continue
                for key in ("weight", "bias"):
                    p, g = next(it)
                    np.testing.assert_allclose(layer.grads[key], g, rtol=1e-8,
                                               atol=1e-12 * max(1.0, np.abs(g).max()))
                    np.testing.assert_allclose(layer.params[key], p, rtol=1e-10, atol=1e-13)
    finally:
        fastnn.set_num_threads(None)


def test_fastnn_builder_checked_against_spec():
    spec = copy.deepcopy(MODELS["dqn"])
    spec["layers"][0]["stride"] = [2, 2]
    with pytest.raises(ValueError, match="stride"):
        _fastnn_model(spec)


@pytest.mark.parametrize("impl", ["numpy", "fastnn"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "dqn"])
def test_bench_steps_run_and_profile(impl, name):
    import importlib

    mod = importlib.import_module(f"bench.{impl}_net")
    step = mod.build(MODELS[name], 2, seed=0)
    losses = [step() for _ in range(3)]
    assert all(np.isfinite(losses))
    rows = step.profile(2)
    assert [r["name"] for r in rows] == [layer_name(c) for c in MODELS[name]["layers"]] + [
        "loss", "optimizer"]
