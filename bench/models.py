"""Benchmark models: the spec every implementation builds, and its useful FLOPs per train step.

A spec is a plain JSON-serialisable dict sent to the worker processes, and every implementation
(``bench/<impl>_net.py``, ``bench/_sgemm.py``) builds any spec: a channels-last stack of
``conv``/``maxpool``/``flatten``/``dense`` layers given by ``layers``, its per-sample
``input_shape``, its ``loss`` (``softmax_ce`` or ``mse``) and its random ``inputs`` (``normal``
or ``uniform``). An MLP is a spec with dense layers only (:func:`mlp_layers`). ``kind`` says
which of the two a net is (``mlp`` or ``cnn``): the driver profiles the ``cnn`` nets layer by
layer. ``batches`` gives each net's train-step batch sizes per run profile, ``predict_batches``
its inference (``predict``) batch sizes, ``settings`` optional overrides of the run profile's
other settings (e.g. fewer rounds for slow steps).

Useful FLOPs (multiply-adds count 2) count only the GEMM work of conv and dense layers:

* dense (N,K)->(M): forward ``2NKM``; backward ``4NKM`` (dW and dX), or ``2NKM`` for the
  first layer, which skips dX;
* conv: forward ``2 N Ho Wo kh kw Cin Cout``; backward twice that (dW and dX), or once for
  the first layer (no dX).

Bias, activation, pooling, loss and optimizer work is not counted (as ``fastnn.profile``).
Inference (``predict``) counts the forward GEMMs only (:func:`forward_flops`).

:func:`gemms` lists these GEMMs one by one with their shapes (the im2col GEMMs for conv layers):
the sgemm roofline (``bench/_sgemm.py``) times exactly them, and their FLOPs add up to
:func:`train_step_flops` (:func:`forward_flops` for inference).
"""


def _conv(cin, cout, k, stride=1, padding=0, activation="relu"):
    return {"type": "conv", "in_channels": cin, "out_channels": cout, "kernel_size": [k, k],
            "stride": [stride, stride], "padding": [padding, padding], "activation": activation}


def _dense(k, m, activation="relu"):
    return {"type": "dense", "in_features": k, "out_features": m, "activation": activation}


def mlp_layers(sizes, activation="relu"):
    """The dense layers of an MLP of widths ``sizes`` (input first): ``activation`` on the hidden
    layers, none on the last."""
    n = len(sizes) - 1
    return [_dense(k, m, activation if i < n - 1 else None)
            for i, (k, m) in enumerate(zip(sizes[:-1], sizes[1:]))]


MLP = {
    "kind": "mlp",
    "input_shape": [784],
    "layers": mlp_layers([784, 256, 128, 10]),
    "loss": "softmax_ce",
    "inputs": "normal",          # X ~ N(0, 1); y: integer labels in [0, 10)
    "dtype": "float32",
    "learning_rate": 0.01,
    "momentum": 0.9,
    "batches": {"default": [32, 64, 128, 256], "quick": [32, 64, 128, 256],
                "smoke": [32, 128]},
    "predict_batches": {"default": [1, 32], "quick": [1, 32], "smoke": [1, 32]},
    "description": "MLP 784-256-128-10 ReLU, softmax-CE, SGD momentum 0.9, float32",
}


SMALL_CNN = {
    "kind": "cnn",
    "builder": "small_cnn",  # fastnn.models.small_cnn; fastnn_net checks it matches `layers`
    "input_shape": [28, 28, 1],
    "layers": [
        _conv(1, 32, 3, padding=1),
        {"type": "maxpool", "kernel_size": [2, 2], "stride": [2, 2]},
        _conv(32, 64, 3, stride=2, padding=1),
        {"type": "flatten"},
        _dense(7 * 7 * 64, 128),
        _dense(128, 10, None),
    ],
    "loss": "softmax_ce",
    "inputs": "normal",          # X ~ N(0, 1); y: integer labels in [0, 10)
    "dtype": "float32",
    "learning_rate": 0.01,
    "momentum": 0.9,
    "batches": {"default": [64, 128], "quick": [64, 128], "smoke": [16]},
    "predict_batches": {"default": [1, 32], "quick": [1, 32], "smoke": [1, 4]},
    "settings": {"default": {"rounds": 12}},  # per-profile overrides of bench.run.PROFILES
    "description": "small CNN 28x28x1: conv3x3 1->32 pad1 relu, maxpool2, conv3x3 32->64 s2 pad1 "
                   "relu, dense 3136-128 relu, dense 128-10; softmax-CE, SGD momentum 0.9, "
                   "float32",
}

DQN = {
    "kind": "cnn",
    "builder": "dqn",  # fastnn.models.dqn (recompiled with SGD momentum and the MSE)
    "input_shape": [84, 84, 4],
    "layers": [
        _conv(4, 32, 8, stride=4),
        _conv(32, 64, 4, stride=2),
        _conv(64, 64, 3, stride=1),
        {"type": "flatten"},
        _dense(7 * 7 * 64, 512),
        _dense(512, 6, None),
    ],
    "loss": "mse",
    "inputs": "uniform",         # X ~ U[0, 1) (frames / 255); y ~ N(0, 1) random Q targets
    "dtype": "float32",
    "learning_rate": 1e-4,
    "momentum": 0.9,
    "batches": {"default": [32, 64], "quick": [32, 64], "smoke": [8]},
    "predict_batches": {"default": [1, 32], "quick": [1, 32], "smoke": [1, 4]},
    "settings": {"default": {"rounds": 12}},
    "description": "DQN (Mnih et al. 2015) 84x84x4: conv 8x8/4 32, 4x4/2 64, 3x3/1 64, dense "
                   "3136-512, 512-6, ReLU; MSE on random targets, SGD momentum 0.9, float32",
}

MODELS = {"mlp": MLP, "cnn": SMALL_CNN, "dqn": DQN}


def conv_out(size, kernel, stride, pad):
    """Output length of a convolution or pooling along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def layer_shapes(spec):
    """Per-sample ``(input_shape, output_shape)`` of every layer of a spec."""
    shape = tuple(spec["input_shape"])
    out = []
    for layer in spec["layers"]:
        t = layer["type"]
        if t == "conv":
            H, W, C = shape
            if C != layer["in_channels"]:
                raise ValueError(f"conv expects {layer['in_channels']} channels, gets {shape}")
            (kh, kw), (sh, sw), (ph, pw) = (layer["kernel_size"], layer["stride"],
                                            layer["padding"])
            new = (conv_out(H, kh, sh, ph), conv_out(W, kw, sw, pw), layer["out_channels"])
        elif t == "maxpool":
            H, W, C = shape
            (kh, kw), (sh, sw) = layer["kernel_size"], layer["stride"]
            new = (conv_out(H, kh, sh, 0), conv_out(W, kw, sw, 0), C)
        elif t == "flatten":
            size = 1
            for s in shape:
                size *= s
            new = (size,)
        elif t == "dense":
            if shape != (layer["in_features"],):
                raise ValueError(f"dense expects ({layer['in_features']},), gets {shape}")
            new = (layer["out_features"],)
        else:
            raise ValueError(f"unknown layer type {t!r}")
        if min(new) < 1:
            raise ValueError(f"layer {layer} gives an empty output {new} from {shape}")
        out.append((shape, new))
        shape = new
    return out


def layer_name(layer):
    """A short readable name of one layer of a spec, e.g. ``conv 8x8/4 4->32``."""
    t = layer["type"]
    if t == "conv":
        (kh, kw), (sh, sw), (ph, pw) = layer["kernel_size"], layer["stride"], layer["padding"]
        stride = f"/{sh}" if sh == sw else f"/{sh}x{sw}"
        pad = "" if (ph, pw) == (0, 0) else f" pad{ph}" if ph == pw else f" pad{ph}x{pw}"
        return (f"conv {kh}x{kw}{stride}{pad} {layer['in_channels']}->"
                f"{layer['out_channels']}")
    if t == "maxpool":
        (kh, kw), (sh, sw) = layer["kernel_size"], layer["stride"]
        return f"maxpool {kh}x{kw}" + ("" if (sh, sw) == (kh, kw) else f"/{sh}x{sw}")
    if t == "dense":
        return f"dense {layer['in_features']}->{layer['out_features']}"
    return t


def layer_flops(spec, batch):
    """``(forward, backward)`` useful FLOPs of every layer of a spec at ``batch``.

    The model's first layer skips the gradient with respect to its input (the data).
    """
    out = []
    for i, (layer, (_, out_shape)) in enumerate(zip(spec["layers"], layer_shapes(spec))):
        t = layer["type"]
        if t == "conv":
            kh, kw = layer["kernel_size"]
            ho, wo, _ = out_shape
            f = 2 * batch * ho * wo * kh * kw * layer["in_channels"] * layer["out_channels"]
        elif t == "dense":
            f = 2 * batch * layer["in_features"] * layer["out_features"]
        else:
            out.append((0, 0))
            continue
        out.append((f, f if i == 0 else 2 * f))
    return out


def train_step_flops(spec, batch):
    """Useful FLOPs of one train step of ``spec`` at batch size ``batch``."""
    return sum(f + b for f, b in layer_flops(spec, batch))


def gemms(spec, batch, mode="train"):
    """The GEMMs of one train step (``mode="train"``) or forward pass (``"predict"``).

    Returns a list of dicts ``{"layer": i, "phase": p, "m": m, "k": k, "n": n}``, one per GEMM
    ``C (m, n) = A (m, k) B (k, n)``, in the order a step runs them (forward layer by layer,
    then backward from the last layer: ``dW`` then ``dX``). For a dense layer (N,K)->(M):
    forward (N,K)x(K,M), ``dW`` (K,N)x(N,M), ``dX`` (N,M)x(M,K); for a conv layer with
    ``P = N Ho Wo`` rows and ``Kc = kh kw Cin``: forward (P,Kc)x(Kc,Cout), ``dW``
    (Kc,P)x(P,Cout), ``dX`` (P,Cout)x(Cout,Kc) (the im2col/col2im copies are not GEMMs). The
    first layer has no ``dX``. ``i`` indexes ``spec["layers"]``. Each GEMM's FLOPs are
    ``2 m k n``.
    """
    if mode not in ("train", "predict"):
        raise ValueError(f"mode must be 'train' or 'predict', got {mode!r}")
    per_layer = []  # (layer index, rows, K, M)
    for i, (layer, (_, out_shape)) in enumerate(zip(spec["layers"], layer_shapes(spec))):
        if layer["type"] == "conv":
            kh, kw = layer["kernel_size"]
            ho, wo, _ = out_shape
            per_layer.append((i, batch * ho * wo, kh * kw * layer["in_channels"],
                              layer["out_channels"]))
        elif layer["type"] == "dense":
            per_layer.append((i, batch, layer["in_features"], layer["out_features"]))
    out = [{"layer": i, "phase": "forward", "m": rows, "k": k, "n": m}
           for i, rows, k, m in per_layer]
    if mode == "predict":
        return out
    for j, (i, rows, k, m) in reversed(list(enumerate(per_layer))):
        out.append({"layer": i, "phase": "dW", "m": k, "k": rows, "n": m})
        if j > 0:
            out.append({"layer": i, "phase": "dX", "m": rows, "k": m, "n": k})
    return out


def forward_flops(spec, batch):
    """Useful FLOPs of one forward pass (inference) of ``spec`` at batch size ``batch``: the
    forward GEMMs of the dense and conv layers."""
    return sum(2 * g["m"] * g["k"] * g["n"] for g in gemms(spec, batch, "predict"))
