"""fastnn MLP train step and inference: ``Sequential.train_on_batch`` and
``Sequential.predict`` through the public API.

The timed call is what a user calls, input checks included (``predict`` returns the logits, a
new array).
"""
import numpy as np

import fastnn
from fastnn import SGD, Dense, Sequential, SoftmaxCrossEntropy


def _model_and_data(spec, batch, seed):
    sizes = spec["sizes"]
    dtype = np.dtype(spec.get("dtype", "float32"))
    act = spec.get("activation", "relu")
    layers = [Dense(k, m, activation=act if i < len(sizes) - 2 else None)
              for i, (k, m) in enumerate(zip(sizes[:-1], sizes[1:]))]
    model = Sequential(layers, dtype=dtype.name, seed=seed)
    model.compile(optimizer=SGD(learning_rate=spec.get("learning_rate", 0.01),
                                momentum=spec.get("momentum", 0.9)),
                  loss=SoftmaxCrossEntropy())
    rng = np.random.default_rng(seed + 1)
    X = np.ascontiguousarray(rng.standard_normal((batch, sizes[0])), dtype=dtype)
    y = rng.integers(0, sizes[-1], size=batch, dtype=np.int64)
    return model, X, y


def build(spec, batch, seed=0):
    """Return a zero-argument callable doing one train step on a fixed random batch."""
    model, X, y = _model_and_data(spec, batch, seed)
    return lambda: model.train_on_batch(X, y)


def build_predict(spec, batch, seed=0):
    """Return a zero-argument callable doing one ``model.predict(X)`` on a fixed random batch."""
    model, X, _ = _model_and_data(spec, batch, seed)
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
