"""fastnn: fast neural-network training on the CPU (Cython + OpenMP kernels, Keras-like API).

Quick start::

    from fastnn import Sequential, Dense, SoftmaxCrossEntropy, Adam
    model = Sequential([Dense(784, 256, activation="relu"), Dense(256, 10)], seed=0)
    model.compile(optimizer=Adam(1e-3), loss=SoftmaxCrossEntropy())
    model.fit(X, y, epochs=5, batch_size=64)
"""
__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from . import datasets  # noqa: E402,F401
from .callbacks import Callback, EarlyStopping, History, ModelCheckpoint, TerminateOnNaN  # noqa: E402
from .gradcheck import gradient_check  # noqa: E402
from .io import load  # noqa: E402
from .layers import LAYERS, Activation, Dense, Layer  # noqa: E402
from .losses import BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy  # noqa: E402
from .model import Sequential  # noqa: E402
from .optimizers import SGD, Adam  # noqa: E402
from .profiler import format_profile, profile  # noqa: E402

globals().update({k: v for k, v in LAYERS.items()})
one_hot = datasets.one_hot
minibatches = datasets.minibatches

__all__ = [
    "Sequential", "Layer", "Dense", "Activation", "SoftmaxCrossEntropy", "BinaryCrossEntropy",
    "MeanSquaredError", "SGD", "Adam", "Callback", "History", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN",
    "gradient_check", "load", "one_hot", "minibatches", "datasets", "set_num_threads",
    "get_num_threads", "show_config", "profile", "format_profile",
] + [k for k in LAYERS if k not in ("Dense", "Activation")]
