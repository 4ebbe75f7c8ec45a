"""ONNX export (fastnn/onnx.py): onnxruntime's output on the exported file against
``model.predict``, for every layer type in several shapes and random models.

Tolerance: ``|ort - predict| <= 1e-5 |predict| + 1e-6 max|predict|`` elementwise (float32). The
absolute term, a millionth of the largest output of the array, is for values near 0: a dot
product's rounding error is relative to the sum of the magnitudes of its terms, not to the result,
so an output that cancels to ~0 can have an arbitrarily large relative error in any two float32
implementations (onnxruntime's GEMM and convolution sum in another order than fastnn's).
"""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastnn  # noqa: E402
from fastnn import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,  # noqa: E402
                    GlobalAvgPool2D, Layer, LayerNorm, MaxPool2D, Sequential, models)
from fastnn.onnx import export  # noqa: E402

RTOL = 1e-5
#: the absolute tolerance, as a fraction of the array's largest |predict| (see the docstring)
ATOL_FRACTION = 1e-6
ELEMENTWISE = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu",
               "silu")


def _session(proto_or_path, threads=1):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    src = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") \
        else str(proto_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _assert_matches(out, ref, what=""):
    assert out.dtype == np.float32 and out.shape == ref.shape, (out.dtype, out.shape, ref.shape)
    atol = ATOL_FRACTION * float(np.max(np.abs(ref)))
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=atol, err_msg=what)


def _randomize(model, rng):
    """Non-trivial biases, BatchNorm running statistics and norm scales (the defaults are 0 and
    1, which would hide a wrong mapping)."""
    for layer in model.layers:
        if "bias" in layer.params:
            layer.params["bias"] = rng.normal(0.0, 0.3, layer.params["bias"].shape)
        if isinstance(layer, (BatchNorm, LayerNorm)):
            C = layer.num_features
            layer.params["weight"] = rng.normal(1.0, 0.5, C)
        if isinstance(layer, BatchNorm):
            layer.buffers["running_mean"] = rng.normal(0.0, 0.5, C)
            layer.buffers["running_var"] = rng.uniform(0.3, 2.0, C)
    return model


def _check(model, X, threads=1, what="", **kwargs):
    """Export (checking the proto with onnx.checker), run with onnxruntime, compare; returns the
    proto."""
    proto = export(model, None, **kwargs)
    onnx.checker.check_model(proto, full_check=True)
    X = np.asarray(X, np.float32)
    out = _session(proto, threads).run(None, {"input": X})
    _assert_matches(out[0], model.predict(X), what or repr(model))
    return proto


def _alpha(name):
    return 0.2 if name == "leaky_relu" else (0.7 if name == "elu" else None)


# ---- layer by layer ------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ELEMENTWISE + ("softmax",))
def test_dense_with_each_fused_activation(activation):
    rng = np.random.default_rng(1)
    model = _randomize(Sequential([Dense(13, 9, activation=activation, alpha=_alpha(activation)),
                                   Dense(9, 5)], seed=2), rng)
    _check(model, rng.normal(0, 2, (6, 13)))


@pytest.mark.parametrize("activation", ELEMENTWISE + ("softmax",))
def test_activation_layer_over_a_wide_range(activation):
    """Inputs in [-30, 30], where an approximate sigmoid or erf would show (silu near -18)."""
    X = np.linspace(-30, 30, 2 * 601, dtype=np.float32).reshape(2, 601)
    model = Sequential([Activation(activation, alpha=_alpha(activation))], input_shape=(601,))
    _check(model, X)


@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_activation_layer_on_images(activation):
    rng = np.random.default_rng(3)
    model = Sequential([Activation(activation, alpha=_alpha(activation))], input_shape=(5, 4, 3))
    _check(model, rng.normal(0, 3, (4, 5, 4, 3)))


CONV_CASES = [
    # (H, W, C_in, C_out, kernel, stride, padding, activation)
    (8, 8, 1, 4, 3, 1, 0, "relu"),
    (9, 7, 3, 5, 3, 1, 1, None),
    (10, 11, 2, 4, (3, 2), (2, 1), (1, 0), "tanh"),
    (9, 9, 3, 6, 3, 2, "same", "gelu"),       # total padding 2: 1 top, 1 bottom
    (10, 10, 3, 6, 3, 2, "same", "silu"),     # total padding 1: 0 top, 1 bottom (asymmetric)
    (11, 8, 2, 3, (4, 2), (3, 2), "same", "leaky_relu"),  # asymmetric on both axes
    (7, 7, 2, 3, 2, 1, "same", "elu"),        # even kernel, stride 1: 0 top, 1 bottom
    (12, 12, 4, 8, 5, 3, "valid", "sigmoid"),
    (6, 6, 4, 8, 1, 1, 0, "softplus"),        # 1x1
    (20, 20, 4, 8, 8, 4, 0, "relu"),          # DQN's first layer
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-k{c[4]}"
                         f"-s{c[5]}-p{c[6]}-{c[7]}")
def test_conv2d_padding_modes_and_strides(case):
    H, W, Ci, Co, k, s, p, act = case
    rng = np.random.default_rng(4)
    conv = Conv2D(Ci, Co, k, stride=s, padding=p, activation=act, alpha=_alpha(act))
    model = _randomize(Sequential([conv], seed=5, input_shape=(H, W, Ci)), rng)
    _check(model, rng.normal(size=(3, H, W, Ci)))


POOL_CASES = [
    # (H, W, kernel, stride, padding)
    (8, 8, 2, None, 0),
    (9, 7, 3, 2, 1),
    (9, 9, 3, 2, "same"),
    (10, 10, 3, 2, "same"),                   # asymmetric: 0 top, 1 bottom
    (7, 8, (3, 2), (1, 2), "same"),
    (7, 7, 2, 2, "valid"),                    # trailing row and column dropped
    (6, 9, (2, 3), (2, 3), (1, 1)),
]


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}x{c[1]}-k{c[2]}-s{c[3]}-p{c[4]}")
def test_pools_with_padding(pool, case):
    """AvgPool2D divides by the real inputs of a window (count_include_pad=0), MaxPool2D ignores
    padded positions; the input has negative values, so a zero pad would show in either."""
    H, W, k, s, p = case
    rng = np.random.default_rng(6)
    model = Sequential([pool(k, stride=s, padding=p)], input_shape=(H, W, 3))
    _check(model, rng.normal(-1.0, 1.0, (4, H, W, 3)))


def test_global_avgpool_then_dense():
    rng = np.random.default_rng(7)
    model = _randomize(Sequential([Conv2D(2, 5, 3, padding=1, activation="relu"),
                                   GlobalAvgPool2D(), Dense(5, 3)], seed=8,
                                  input_shape=(6, 7, 2)), rng)
    _check(model, rng.normal(size=(5, 6, 7, 2)))
    _check(Sequential([GlobalAvgPool2D()], input_shape=(4, 3, 6)), rng.normal(size=(3, 4, 3, 6)))


@pytest.mark.parametrize("after", ["dense", "dense_after_activation", "softmax", "end",
                                   "batchnorm", "layernorm"])
def test_flatten_keeps_channels_last_order(after):
    """Flatten after a convolution: fastnn orders the features (H, W, C). The export flattens the
    NCHW tensor and permutes the next Dense weight's rows, or gathers the features back."""
    rng = np.random.default_rng(9)
    F = 4 * 3 * 5
    tail = {"dense": [Dense(F, 6)],
            "dense_after_activation": [Activation("tanh"), Dropout(0.5), Dense(F, 6)],
            "softmax": [Activation("softmax")],
            "end": [],
            "batchnorm": [BatchNorm(F)],
            "layernorm": [LayerNorm(F), Dense(F, 2)]}[after]
    model = _randomize(Sequential([Conv2D(2, 5, 3, padding=1, activation="relu"), MaxPool2D(2),
                                   Flatten(), *tail], seed=10, input_shape=(8, 6, 2)), rng)
    proto = _check(model, rng.normal(size=(4, 8, 6, 2)))
    ops = [n.op_type for n in proto.graph.node]
    if after.startswith("dense"):  # no transpose back: the Dense weight absorbed the order
        assert ops.count("Transpose") == 1 and "Gather" not in ops


def test_flatten_of_channels_last_input_and_of_vectors():
    rng = np.random.default_rng(11)
    _check(Sequential([Flatten(), Dense(24, 3)], seed=0, input_shape=(2, 3, 4)),
           rng.normal(size=(3, 2, 3, 4)))
    _check(Sequential([Flatten(), Dense(5, 2)], seed=0, input_shape=(5,)), rng.normal(size=(3, 5)))


@pytest.mark.parametrize("shape", [(7,), (5, 6, 4), (6, 4), (3, 2, 2, 4)],
                         ids=lambda s: "x".join(map(str, s)))
def test_batchnorm_uses_running_statistics(shape):
    """(N, C), (N, H, W, C), (N, L, C) and a 5-D input: BatchNormalization on channels-first."""
    rng = np.random.default_rng(12)
    model = _randomize(Sequential([BatchNorm(shape[-1], eps=1e-3)], input_shape=shape), rng)
    _check(model, rng.normal(size=(5, *shape)))


@pytest.mark.parametrize("shape", [(7,), (5, 6, 4), (6, 4)], ids=lambda s: "x".join(map(str, s)))
def test_layernorm_over_the_last_axis(shape):
    rng = np.random.default_rng(13)
    model = _randomize(Sequential([LayerNorm(shape[-1], eps=1e-4)], input_shape=shape), rng)
    _check(model, rng.normal(2.0, 3.0, (5, *shape)))


def test_norms_between_convolutions():
    """BatchNorm stays channels-first between convolutions; LayerNorm needs channels-last."""
    rng = np.random.default_rng(14)
    model = _randomize(Sequential([
        BatchNorm(3), Conv2D(3, 4, 3, padding="same"), BatchNorm(4), Activation("relu"),
        LayerNorm(4), Conv2D(4, 4, 2, stride=2), BatchNorm(4), AvgPool2D(2, padding=1),
        LayerNorm(4)], seed=15, input_shape=(9, 8, 3)), rng)
    _check(model, rng.normal(size=(3, 9, 8, 3)))


def test_dropout_is_the_identity():
    rng = np.random.default_rng(16)
    model = _randomize(Sequential([Dense(6, 8, activation="relu"), Dropout(0.5), Dense(8, 3),
                                   Dropout(0.2)], seed=17), rng)
    proto = _check(model, rng.normal(size=(5, 6)))
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm"]
    only = Sequential([Dropout(0.3)], input_shape=(4,))  # no node at all: an Identity
    _check(only, rng.normal(size=(2, 4)))


# ---- random models -------------------------------------------------------------------------------

def _random_model(seed):
    """A random stack of every layer type on a random image shape: conv and pool blocks (random
    kernels, strides and padding modes, fused or separate activations, BatchNorm, LayerNorm,
    Dropout), then Flatten or GlobalAvgPool2D, then Dense blocks."""
    rng = np.random.default_rng(seed)
    H, W, C = int(rng.integers(6, 14)), int(rng.integers(6, 14)), int(rng.integers(1, 4))
    shape = (H, W, C)
    layers = []

    def add(layer):
        nonlocal shape
        try:
            new = layer.output_shape(shape)
        except ValueError:
            return
        if new and all(s > 0 for s in new):
            layers.append(layer)
            shape = tuple(new)

    def act():
        return str(rng.choice(ELEMENTWISE))

    pads = [0, 1, (1, 0), "same", "valid"]
    if rng.random() < 0.3:
        add(BatchNorm(C))
    for _ in range(int(rng.integers(1, 4))):
        a = act()
        add(Conv2D(shape[-1], int(rng.integers(2, 6)), int(rng.integers(1, 4)),
                   stride=int(rng.integers(1, 3)), padding=pads[int(rng.integers(len(pads)))],
                   activation=a, alpha=_alpha(a)))
        r = rng.random()
        if r < 0.3:
            add(BatchNorm(shape[-1]))
            add(Activation(act()))
        elif r < 0.45:
            add(LayerNorm(shape[-1]))
        if rng.random() < 0.5:
            pool = MaxPool2D if rng.random() < 0.5 else AvgPool2D
            k = int(rng.integers(1, 4))
            add(pool(k, stride=int(rng.integers(1, 3)),
                     padding=["same", "valid", k // 2][int(rng.integers(3))]))
        if rng.random() < 0.2:
            add(Dropout(0.3))
    add(GlobalAvgPool2D() if rng.random() < 0.3 else Flatten())
    for _ in range(int(rng.integers(1, 3))):
        a = act()
        add(Dense(shape[0], int(rng.integers(3, 12)), activation=a, alpha=_alpha(a)))
        r = rng.random()
        if r < 0.3:
            add(BatchNorm(shape[0]))
        elif r < 0.5:
            add(LayerNorm(shape[0]))
        if rng.random() < 0.3:
            add(Dropout(0.5))
    add(Dense(shape[0], int(rng.integers(2, 6)),
              activation="softmax" if rng.random() < 0.3 else None))
    model = Sequential(layers, seed=seed, input_shape=(H, W, C))
    return _randomize(model, rng), rng.normal(size=(4, H, W, C))


@pytest.mark.parametrize("seed", range(24))
def test_random_models(seed):
    model, X = _random_model(seed)
    _check(model, X, what=f"seed {seed}: {model!r}")


def test_random_models_cover_every_layer_type():
    seen = {type(layer).__name__ for seed in range(24) for layer in _random_model(seed)[0].layers}
    assert seen == set(fastnn.onnx.SUPPORTED_LAYERS)


# ---- the ready-made models, trained state, dynamic batch -----------------------------------------

@pytest.mark.parametrize("name", ["mlp", "small_cnn", "cnn_bn", "dqn"])
def test_ready_made_models(name, tmp_path):
    """The file on disk, run at batch 1 and batch 7 by one session (the dynamic batch axis), with
    1 and 2 onnxruntime threads."""
    rng = np.random.default_rng(18)
    model = {"mlp": lambda: models.mlp(seed=0), "small_cnn": lambda: models.small_cnn(seed=0),
             "cnn_bn": lambda: models.cnn_bn(seed=0), "dqn": lambda: models.dqn(6, seed=0)}[name]()
    _randomize(model, rng)
    path = tmp_path / f"{name}.onnx"
    model.export_onnx(path)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for threads in (1, 2):
        sess = _session(path, threads)
        for n in (1, 7):
            X = rng.uniform(0, 1, (n, *model.input_shape)).astype(np.float32)
            out = sess.run(None, {"input": X})
            assert len(out) == 1
            _assert_matches(out[0], model.predict(X), f"{name} batch {n} threads {threads}")


def test_trained_model_with_batchnorm_and_dropout():
    """After fit: BatchNorm's running statistics and the trained weights are what is exported."""
    rng = np.random.default_rng(19)
    X = rng.normal(size=(96, 8, 8, 1)).astype(np.float32)
    y = (X[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    model = Sequential([Conv2D(1, 4, 3, padding="same"), BatchNorm(4), Activation("relu"),
                        MaxPool2D(2), Dropout(0.2), Flatten(), Dense(64, 16), BatchNorm(16),
                        Activation("gelu"), Dense(16, 2)], seed=20, input_shape=(8, 8, 1))
    model.compile(fastnn.Adam(1e-2), fastnn.SoftmaxCrossEntropy())
    model.fit(X, y, epochs=2, batch_size=32, verbose=0)
    assert not np.allclose(model.layers[1].running_mean, 0)
    _check(model, X[:10])


def test_probabilities_output_equals_predict_proba():
    rng = np.random.default_rng(21)
    X = rng.normal(size=(6, 5)).astype(np.float32)
    softmax = _randomize(Sequential([Dense(5, 4)], seed=22), rng)
    softmax.compile("adam", fastnn.SoftmaxCrossEntropy())
    sigmoid = _randomize(Sequential([Dense(5, 3)], seed=23), rng)
    sigmoid.compile("adam", fastnn.BinaryCrossEntropy())
    for model in (softmax, sigmoid):
        proto = export(model, None, probabilities=True)
        assert [o.name for o in proto.graph.output] == ["output", "probabilities"]
        logits, proba = _session(proto).run(None, {"input": X})
        _assert_matches(logits, model.predict(X))
        _assert_matches(proba, model.predict_proba(X))
    assert proto.graph.node[-1].op_type == "Sigmoid"


def test_float64_model_exports_float32_graph():
    rng = np.random.default_rng(24)
    model = _randomize(Sequential([Conv2D(2, 3, 3, padding="same", activation="elu"), Flatten(),
                                   Dense(75, 4)], dtype="float64", seed=25,
                                  input_shape=(5, 5, 2)), rng)
    X = rng.normal(size=(3, 5, 5, 2))
    out = _session(export(model, None)).run(None, {"input": X.astype(np.float32)})[0]
    ref = model.predict(X)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=ATOL_FRACTION * np.abs(ref).max())


def test_opset_and_ir_version():
    model = Sequential([Dense(3, 2), LayerNorm(2)], seed=0)
    proto = export(model, None)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.ir_version == 8  # the lowest IR version of opset 17: older runtimes read it
    assert proto.producer_name == "fastnn"
    proto18 = export(model, None, opset=18)
    assert proto18.opset_import[0].version == 18
    X = np.ones((2, 3), np.float32)
    _assert_matches(_session(proto18).run(None, {"input": X})[0], model.predict(X))


def test_input_shape_argument_for_a_model_without_one():
    rng = np.random.default_rng(26)
    model = Sequential([Conv2D(1, 2, 3, padding="same"), GlobalAvgPool2D()], seed=0)
    with pytest.raises(ValueError, match="input_shape"):
        export(model, None)
    _check(model, rng.normal(size=(2, 6, 5, 1)), input_shape=(6, 5, 1))
    with pytest.raises(ValueError, match="layer 0 \\(Conv2D\\)"):
        export(model, None, input_shape=(6, 5, 3))  # 3 channels, the conv takes 1
    with pytest.raises(ValueError, match="differs"):
        export(models.mlp(seed=0), None, input_shape=(783,))


# ---- what cannot be exported ---------------------------------------------------------------------

class Scale(Layer):
    """A user's layer: ``Y = 2 X`` (no ONNX converter)."""

    def forward(self, X, training=True):
        return 2.0 * np.asarray(X)

    def backward(self, grad_output):
        return 2.0 * np.asarray(grad_output)


class MyDense(Dense):
    """A subclass of a fastnn layer: may compute something else, so it is refused too."""


def test_a_layer_that_cannot_be_exported_is_named():
    model = Sequential([Dense(4, 3), Scale(), Dense(3, 2)], seed=0)
    with pytest.raises(TypeError, match=r"layer 1 \(Scale\) cannot be exported to ONNX"):
        export(model, None)
    with pytest.raises(TypeError, match=r"layer 0 \(MyDense\).*subclasses Dense"):
        Sequential([MyDense(4, 3)], seed=0).export_onnx(None)


def test_bad_arguments(tmp_path):
    model = Sequential([Dense(4, 3)], seed=0)
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export(model, None, opset=16)
    with pytest.raises(ValueError, match="opset must be <="):
        export(model, None, opset=10_000)
    with pytest.raises(TypeError, match="opset must be an int"):
        export(model, None, opset=17.0)
    with pytest.raises(TypeError, match="model must be a fastnn Sequential"):
        export([Dense(4, 3)], None)
    with pytest.raises(TypeError, match="probabilities must be a bool"):
        export(model, None, probabilities="yes")
    with pytest.raises(TypeError, match="path must be"):
        export(model, 3)
    image = Sequential([Conv2D(1, 2, 3)], seed=0, input_shape=(5, 5, 1))
    with pytest.raises(ValueError, match="probabilities=True needs a 2-D output"):
        export(image, None, probabilities=True)
    assert not list(tmp_path.iterdir())


def test_import_fastnn_does_not_import_onnx():
    code = ("import sys, fastnn, fastnn.models; "
            "bad = [m for m in ('onnx', 'onnxruntime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
