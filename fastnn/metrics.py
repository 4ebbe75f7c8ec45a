"""Metrics reported by ``fit`` / ``evaluate`` besides the loss: ``compile(metrics=[...])``.

A metric is called as ``metric(output, target, loss) -> float``, the mean over the batch, where
``output`` is the model's output ``(N, K)`` (logits for the cross-entropy losses), ``target`` the
array the loss's ``prepare_target`` returned (``(N,)`` int labels for
:class:`~fastnn.losses.SoftmaxCrossEntropy`, ``(N, K)`` floats otherwise) and ``loss`` the
model's loss (it tells how ``output`` is to be read: logits of a softmax or of sigmoids).
``fit`` averages a metric over an epoch weighted by batch sizes, so every metric here is a mean
over samples (metrics are not weighted by ``sample_weight``/``class_weight``, as Keras'
``metrics=``).

Every :class:`Metric` subclass registers itself in :data:`METRICS` under its ``name`` and aliases
when it is defined (names as Keras').

==================  ===========================================================================
name                value
==================  ===========================================================================
accuracy            fraction of samples whose predicted class is the target class: argmax of
                    the logits vs the label (or the target row's argmax); for a sigmoid output
                    (BinaryCrossEntropy) ``logit > 0`` vs ``target >= 0.5``, per element
top_k_accuracy      fraction of samples whose label is among the ``k`` largest logits (k=5)
mae                 mean absolute error ``mean |output - target|`` over all elements
mse                 mean squared error ``mean (output - target)^2`` over all elements
==================  ===========================================================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _validation as V
from ._registry import Registry, auto_register

if TYPE_CHECKING:
    from .losses import Loss

#: name -> metric class; every Metric subclass registers itself under its ``name`` and aliases
METRICS: Registry[Metric] = Registry("metric")


def _sigmoid_output(loss: Loss | None) -> bool:
    from .losses import BinaryCrossEntropy

    return isinstance(loss, BinaryCrossEntropy)


def _labels(target: np.ndarray, what: str) -> np.ndarray:
    """``(N,)`` class labels from int labels or from ``(N, K)`` one-hot / probability rows."""
    if target.ndim == 1:
        return target
    if target.ndim == 2 and target.shape[1] > 1:
        return np.argmax(target, axis=1)
    raise ValueError(f"{what} needs class labels (N,) or one target row per class (N, K), got "
                     f"targets of shape {target.shape}")


class Metric:
    """Base class: ``__call__(output, target, loss) -> float`` (the mean over the batch).

    A subclass sets ``name`` (the key in the logs and in History) and may set ``aliases``; it
    defines ``__call__``, ``check_loss`` (raises ValueError at ``compile`` when the metric does
    not apply to the loss) and ``get_config`` (its constructor arguments).
    """

    #: key of the metric in the epoch logs, History and evaluate's dict
    name: str = ""
    #: other names ``compile(metrics=[...])`` accepts
    aliases: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            auto_register(METRICS, cls, (cls.name,) + tuple(cls.__dict__.get("aliases", ())))

    def __call__(self, output: np.ndarray, target: np.ndarray, loss: Loss | None = None) -> float:
        raise NotImplementedError

    def check_loss(self, loss: Loss) -> None:
        """Raise ValueError if this metric cannot be computed for ``loss``'s outputs/targets."""

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _classification_loss(loss: Loss, metric: str) -> None:
    from .losses import MeanSquaredError

    if isinstance(loss, MeanSquaredError) or type(loss).__name__ == "Huber":
        raise ValueError(f"metric {metric!r} needs a classification loss; "
                         f"{type(loss).__name__} is a regression loss (use 'mae' or 'mse')")


class Accuracy(Metric):
    """Classification accuracy, the fraction of correctly classified samples.

    Shape
    -----
    - output: ``(N, K)`` logits, float32 or float64.
    - target: ``(N,)`` int labels or ``(N, K)`` one-hot / probability rows (argmax taken); with
      :class:`~fastnn.losses.BinaryCrossEntropy`, ``(N, K)`` values in ``[0, 1]``, compared
      per element as ``(logit > 0) == (target >= 0.5)`` (Keras' ``binary_accuracy``).

    Raises
    ------
    ValueError
        At ``compile``, with a regression loss (MeanSquaredError, Huber).
    """

    name = "accuracy"
    aliases = ("acc",)

    def check_loss(self, loss: Loss) -> None:
        _classification_loss(loss, self.name)

    def __call__(self, output: np.ndarray, target: np.ndarray, loss: Loss | None = None) -> float:
        if _sigmoid_output(loss) or output.shape[1] == 1:
            t = target.reshape(output.shape)
            return float(np.mean((output > 0) == (t >= 0.5)))
        return float(np.mean(np.argmax(output, axis=1) == _labels(target, self.name)))


class TopKAccuracy(Metric):
    """Top-k accuracy: the fraction of samples whose class is among the ``k`` largest logits
    (Keras' ``top_k_categorical_accuracy``; ties broken towards the lower class index).

    Parameters
    ----------
    k : int, default=5
        ``>= 1``; ``k >= K`` gives 1.

    Shape
    -----
    - output: ``(N, K)`` logits; target: ``(N,)`` labels or ``(N, K)`` rows (argmax taken).

    Raises
    ------
    ValueError
        ``k < 1``; at ``compile``, a regression loss or BinaryCrossEntropy.
    """

    name = "top_k_accuracy"
    aliases = ("top_k_categorical_accuracy",)

    def __init__(self, k: int = 5) -> None:
        self.k = V.check_int(k, "k", minimum=1)

    def check_loss(self, loss: Loss) -> None:
        _classification_loss(loss, self.name)
        if _sigmoid_output(loss):
            raise ValueError("metric 'top_k_accuracy' needs one logit per class (a softmax "
                             "loss), not BinaryCrossEntropy's independent sigmoids")

    def __call__(self, output: np.ndarray, target: np.ndarray, loss: Loss | None = None) -> float:
        labels = _labels(target, self.name)
        K = output.shape[1]
        if self.k >= K:
            return 1.0
        # the label is in the top k when fewer than k classes score strictly higher, counting
        # equal scores of lower class indices as higher (a stable tie-break)
        own = np.take_along_axis(output, labels.reshape(-1, 1).astype(np.intp), axis=1)
        higher = (output > own).sum(axis=1)
        cols = np.arange(K)
        ties = ((output == own) & (cols < labels.reshape(-1, 1))).sum(axis=1)
        return float(np.mean(higher + ties < self.k))

    def get_config(self) -> dict[str, Any]:
        return {"k": self.k}


def _same_shape(output: np.ndarray, target: np.ndarray, what: str) -> np.ndarray:
    if target.shape != output.shape:
        if target.ndim == 1 and output.shape[1] == 1 and target.shape[0] == output.shape[0]:
            return target.reshape(output.shape)
        raise ValueError(f"{what} needs targets of the output's shape {output.shape}, got "
                         f"{target.shape}")
    return target


class MeanAbsoluteError(Metric):
    """Mean absolute error over all elements, ``mean |output - target|`` (Keras' ``mae``).

    Shape
    -----
    - output: ``(N, K)``; target: the same shape (or ``(N,)`` when ``K = 1``).

    Raises
    ------
    ValueError
        At ``compile``, with a loss whose targets are class labels (SoftmaxCrossEntropy).
    """

    name = "mae"
    aliases = ("mean_absolute_error",)

    def check_loss(self, loss: Loss) -> None:
        from .losses import SoftmaxCrossEntropy

        if isinstance(loss, SoftmaxCrossEntropy):
            raise ValueError(f"metric {self.name!r} compares outputs with targets of the same "
                             f"shape; SoftmaxCrossEntropy's targets are class labels")

    def __call__(self, output: np.ndarray, target: np.ndarray, loss: Loss | None = None) -> float:
        t = _same_shape(output, target, self.name)
        return float(np.mean(np.abs(output.astype(np.float64) - t)))


class MeanSquaredErrorMetric(MeanAbsoluteError):
    """Mean squared error over all elements, ``mean (output - target)^2`` (Keras' ``mse``).

    Shape and errors as :class:`MeanAbsoluteError`.
    """

    name = "mse"
    aliases = ("mean_squared_error",)

    def __call__(self, output: np.ndarray, target: np.ndarray, loss: Loss | None = None) -> float:
        t = _same_shape(output, target, self.name)
        return float(np.mean(np.square(output.astype(np.float64) - t)))


def get(metric: Any) -> Metric:
    """A Metric from an instance, a class or a registered name (see :data:`METRICS`).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        return metric()
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]()
    raise ValueError(f"unknown metric {metric!r}; use a Metric instance or one of "
                     f"{sorted(METRICS)}")
