"""fastnn: fast neural-network training on the CPU (Cython + OpenMP kernels, Keras-like API).

Quick start::

    from fastnn import Sequential, Dense, SoftmaxCrossEntropy, Adam
    model = Sequential([Dense(784, 256, activation="relu"), Dense(256, 10)], seed=0)
    model.compile(optimizer=Adam(1e-3), loss=SoftmaxCrossEntropy())
    model.fit(X, y, epochs=5, batch_size=64)

Every layer, loss and optimizer class is exported here from its registry
(``fastnn.layers.LAYERS``, ``fastnn.losses.LOSSES``, ``fastnn.optimizers.OPTIMIZERS``), so a new one
is defined in its own module only; schedules are in ``fastnn.schedules``.
"""
__version__ = "0.1.0"

from typing import TYPE_CHECKING  # noqa: E402

from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from . import datasets, metrics, schedules  # noqa: E402
from .callbacks import (Callback, CSVLogger, EarlyStopping, History,  # noqa: E402
                        LearningRateScheduler, ModelCheckpoint, ReduceLROnPlateau,
                        TerminateOnNaN)
from .gradcheck import gradient_check  # noqa: E402
from .io import load  # noqa: E402
from .layers import LAYERS, Layer  # noqa: E402
from .losses import LOSSES, Loss, entropy, kl_divergence  # noqa: E402
from .model import Sequential  # noqa: E402
from .optimizers import OPTIMIZERS, Optimizer  # noqa: E402
from .profiler import format_profile, profile  # noqa: E402

if TYPE_CHECKING:
    # What type checkers see of the registered classes, which are exported at run time by the
    # globals().update below (tests/test_source_rules.py checks that the two lists agree)
    from .layers import Activation as Activation, AvgPool2D as AvgPool2D, Conv2D as Conv2D
    from .layers import Dense as Dense, Flatten as Flatten, MaxPool2D as MaxPool2D
    from .layers import BatchNorm as BatchNorm, Dropout as Dropout, LayerNorm as LayerNorm
    from .layers import GlobalAvgPool2D as GlobalAvgPool2D
    from .losses import BinaryCrossEntropy as BinaryCrossEntropy, Huber as Huber
    from .losses import KLDivergence as KLDivergence
    from .losses import MeanSquaredError as MeanSquaredError
    from .losses import SoftmaxCrossEntropy as SoftmaxCrossEntropy
    from .optimizers import SGD as SGD, Adam as Adam, Adagrad as Adagrad, AdamW as AdamW
    from .optimizers import RMSprop as RMSprop

_REGISTERED = {cls.__name__: cls for registry in (LAYERS, LOSSES, OPTIMIZERS)
               for cls in registry.values() if cls.__module__.startswith("fastnn.")}
globals().update(_REGISTERED)
one_hot = datasets.one_hot
minibatches = datasets.minibatches

__all__ = [
    "Sequential", "Layer", "Loss", "Optimizer", "Callback", "History", "EarlyStopping",
    "ModelCheckpoint", "TerminateOnNaN", "LearningRateScheduler", "CSVLogger", "ReduceLROnPlateau",
    "metrics",
    "gradient_check", "load",
    "one_hot", "minibatches", "datasets", "schedules", "set_num_threads", "get_num_threads",
    "show_config", "profile", "format_profile", "entropy", "kl_divergence",
]
__all__ += sorted(_REGISTERED)  # a statement of its own, so type checkers read the list above
