"""fastnn train step and inference of any spec of :mod:`bench.models`:
``Sequential.train_on_batch`` and ``Sequential.predict`` through the public API.

The model comes from the builder a spec names (``fastnn.models.small_cnn`` or
``fastnn.models.dqn``) or, without one, from the spec's layers (the MLP: ``Dense`` layers); it is
checked layer by layer against the spec, and compiled with the spec's loss and SGD with momentum,
so every implementation runs the same optimizer. The timed call is what a user
calls, input checks included (``predict`` returns the network's output, a new array). Per-layer
times come from :func:`fastnn.profile`.
"""
import os

import numpy as np

import fastnn
import fastnn.models
from fastnn import SGD, MeanSquaredError, SoftmaxCrossEntropy, Sequential
from fastnn.layers import Conv2D, Dense, Flatten, MaxPool2D

from .models import layer_name
from .numpy_net import make_data


def _from_spec(spec, dtype, seed):
    layers = []
    for cfg in spec["layers"]:
        t = cfg["type"]
        if t == "conv":
            layers.append(Conv2D(cfg["in_channels"], cfg["out_channels"],
                                 tuple(cfg["kernel_size"]), stride=tuple(cfg["stride"]),
                                 padding=tuple(cfg["padding"]), activation=cfg["activation"]))
        elif t == "maxpool":
            layers.append(MaxPool2D(tuple(cfg["kernel_size"]), stride=tuple(cfg["stride"])))
        elif t == "flatten":
            layers.append(Flatten())
        else:
            layers.append(Dense(cfg["in_features"], cfg["out_features"],
                                activation=cfg["activation"]))
    return Sequential(layers, dtype=dtype, seed=seed, input_shape=tuple(spec["input_shape"]))


def _check_matches(model, spec):
    """Raise if the builder's layers differ from the spec (the NumPy side builds the spec)."""
    if len(model.layers) != len(spec["layers"]):
        raise ValueError(f"builder {spec.get('builder')!r} has {len(model.layers)} layers, the "
                         f"spec {len(spec['layers'])}")
    kinds = {"conv": Conv2D, "maxpool": MaxPool2D, "flatten": Flatten, "dense": Dense}
    for layer, cfg in zip(model.layers, spec["layers"]):
        if not isinstance(layer, kinds[cfg["type"]]):
            raise ValueError(f"{layer!r} is not a {cfg['type']} layer")
        got = layer.get_config()
        for key, want in cfg.items():
            if key == "type":
                continue
            have = got.get(key)
            if isinstance(have, tuple):
                have = list(have)
            if have != want:
                raise ValueError(f"{layer!r}: {key} is {have!r}, the spec says {want!r}")


def make_model(spec, seed=0):
    # the fastnn-bf16 variant (bench.run.VARIANT_ENV): Sequential's mixed_bfloat16 policy
    dtype = os.environ.get("FASTNN_BENCH_DTYPE") or spec.get("dtype", "float32")
    builder = spec.get("builder")
    if builder == "small_cnn":
        model = fastnn.models.small_cnn(dtype=dtype, seed=seed)
    elif builder == "dqn":
        model = fastnn.models.dqn(spec["layers"][-1]["out_features"], dtype=dtype, seed=seed)
    elif builder is None:
        model = _from_spec(spec, dtype, seed)
    else:
        raise ValueError(f"unknown builder {builder!r}")
    _check_matches(model, spec)
    loss = MeanSquaredError() if spec["loss"] == "mse" else SoftmaxCrossEntropy()
    model.compile(optimizer=SGD(learning_rate=spec.get("learning_rate", 0.01),
                                momentum=spec.get("momentum", 0.9)), loss=loss)
    return model


def profile_rows(model, X, y, names, repeats=10):
    """:func:`fastnn.profile` as bench rows: ``name``, ``forward_ms``, ``backward_ms`` per layer,
    then the loss and the optimizer (fastnn's own GFLOP/s kept as ``fastnn_gflops``)."""
    rows = fastnn.profile(model, X, y, repeats=repeats, warmup=2)
    L = len(model.layers)
    out = []
    for name, r in zip(names + ["loss", "optimizer"], rows[:L] + rows[L:L + 2]):
        out.append({"name": name, "forward_ms": float(r["forward_ms"]),
                    "backward_ms": float(r["backward_ms"]),
                    "fastnn_gflops": r.get("gflops"), "fastnn_name": r["name"]})
    return out


def build(spec, batch, seed=0):
    """Return a zero-argument callable doing one train step on a fixed random batch; its
    ``profile(repeats)`` attribute gives per-layer times."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    X, y = make_data(spec, batch, seed, dtype)
    model = make_model(spec, seed=seed)
    names = [layer_name(cfg) for cfg in spec["layers"]]

    def step():
        return model.train_on_batch(X, y)

    step.profile = lambda repeats=10: profile_rows(model, X, y, names, repeats=repeats)
    return step


def build_predict(spec, batch, seed=0):
    """Return a zero-argument callable doing one ``model.predict(X)`` on a fixed random batch."""
    dtype = np.dtype(spec.get("dtype", "float32"))
    X, _ = make_data(spec, batch, seed, dtype)
    model = make_model(spec, seed=seed)
    return lambda: model.predict(X)


def configure_threads(n):
    fastnn.set_num_threads(n)


def versions():
    return {"fastnn": fastnn.__version__, "numpy": np.__version__}


def extra_info():
    from fastnn._config import config

    info = config()
    info.pop("threadpools", None)  # reported by the worker for every implementation
    return {"fastnn_config": info}


def build_epoch(spec, batch, seed=0):
    """Return a callable training one epoch of Fashion-MNIST with ``model.fit(epochs=1)``
    (shuffling and per-batch gathering included, input checks once per call)."""
    from .numpy_net import epoch_data

    dtype = np.dtype(spec.get("dtype", "float32"))
    X, y, n = epoch_data(spec, batch, dtype)
    model = make_model(spec, seed=seed)
    for b in range(3):  # warm-up
        model.train_on_batch(X[b * batch:(b + 1) * batch], y[b * batch:(b + 1) * batch])
    epochs = [0]

    def epoch():
        epochs[0] += 1
        history = model.fit(X, y, epochs=1, batch_size=batch, verbose=0, seed=seed + epochs[0])
        return history.history["loss"][-1]

    return epoch
