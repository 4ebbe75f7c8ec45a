"""Losses on the fused kernels of ``src_cython/losses.pyx``.

Each loss is called as ``loss.forward(output, target) -> float`` (the mean over the batch) and
then ``loss.backward() -> grad`` (d mean-loss / d output, same shape as ``output``). The model's
last layer should output raw scores (logits) for the two cross-entropies: the softmax/sigmoid is
fused into the loss, which is both faster and numerically stable.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _losses
from . import _validation as V
from ._config import get_num_threads
from ._registry import Registry, auto_register

#: name -> loss class: class names and each class's ``aliases``; every Loss subclass registers
#: itself when it is defined (so a user's own loss saves and loads with the model)
LOSSES: Registry[Loss] = Registry("loss")


class Loss:
    """Base class of losses. Subclasses define ``prepare_target``, ``forward`` (which sets
    ``self._grad``), and optionally ``metric``/``score``, ``aliases`` and ``get_config`` (their
    constructor arguments, if any: ``fastnn.load`` calls ``cls(**get_config())``).

    A subclass registers itself in :data:`LOSSES` under its class name and its ``aliases`` when
    it is defined; a model compiled with it saves, and loads again once the module defining it
    has been imported.
    """

    #: name of the metric reported by ``fit``/``evaluate`` besides the loss (or None)
    metric: str | None = None
    #: other names ``compile(loss=...)`` accepts for this class
    aliases: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(LOSSES, cls, cls.__dict__.get("aliases", ()))

    def __init__(self) -> None:
        self._grad: np.ndarray | None = None

    def __call__(self, output: ArrayLike, target: ArrayLike) -> float:
        return self.forward(output, target)

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False) -> float:
        """Mean loss over the batch (float); caches ``d loss / d output`` for :meth:`backward`.

        Parameters
        ----------
        output : ndarray, shape ``(N, K)``
            float32 or float64 (logits for the cross-entropies).
        target : array_like
            As the subclass documents; ``prepared=True`` means it already passed
            :meth:`prepare_target`.

        Raises
        ------
        ValueError, TypeError
            Bad output or target shapes, dtypes or values.
        """
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        """Gradient of the last ``forward``'s mean loss with respect to ``output``.

        Raises
        ------
        RuntimeError
            If ``forward`` was not called first.
        """
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._grad

    def _buffer(self, key: str, shape: Sequence[int], dtype: DTypeLike) -> np.ndarray:
        bufs = self.__dict__.setdefault("_buffers", {})
        buf = bufs.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            bufs[key] = buf
        return buf

    def check_output(self, output: ArrayLike) -> np.ndarray:
        if not isinstance(output, np.ndarray) or output.dtype not in V.FLOAT_DTYPES:
            output = V.as_float_array(output, "output", np.float32, check_finite=False)
        if not output.flags.c_contiguous:
            output = np.ascontiguousarray(output)
        if output.ndim != 2:
            raise ValueError(f"output must have shape (N, K), got {output.shape}")
        if output.shape[0] == 0:
            raise ValueError("output is empty (0 samples)")
        return output

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        """Validate ``target`` for an output of ``output_shape``; returns the checked array."""
        raise NotImplementedError

    def score(self, output: np.ndarray, target: np.ndarray) -> float | None:
        """The metric for already-prepared targets (e.g. accuracy), or None."""
        return None

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (saved with the model); ``{}`` by default."""
        return {}


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused: ``mean_n [logsumexp(z_n) - z_n[y_n]]``.

    Gradient ``(softmax(z) - onehot(y)) / N``. Stable for any finite logits (max subtracted).

    Shape
    -----
    - output (logits): ``(N, K)``, float32 or float64.
    - target: ``(N,)`` integer labels in ``[0, K)`` (int dtype, or floats without fraction), or a
      one-hot ``(N, K)`` matrix.

    Raises
    ------
    ValueError
        Labels out of range, wrong length, or a 2-D target that is not one-hot.
    TypeError
        Non-integer label dtype.

    References
    ----------
    Bishop, "Pattern Recognition and Machine Learning", 2006, eq. 4.108-4.109.
    """

    metric = "accuracy"
    aliases = ("softmax_cross_entropy", "categorical_crossentropy", "cross_entropy")

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        return V.check_labels(target, "y", output_shape[0], output_shape[1])

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False) -> float:
        z = self.check_output(output)
        # prepared: ``target`` is the array prepare_target returned
        y = cast(np.ndarray, target) if prepared else self.prepare_target(target, z.shape)
        N = z.shape[0]
        grad = self._buffer("grad", z.shape, z.dtype)
        rows = self._buffer("rows", (N,), np.float64)
        loss = _losses.softmax_cross_entropy(z, y, grad, rows, 1.0 / N, get_num_threads())
        self._grad = grad
        return loss

    def score(self, output: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean(np.argmax(output, axis=1) == target))

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        """Row softmax of logits ``(N, K)``."""
        prob = np.empty_like(output)
        _losses.softmax(np.ascontiguousarray(output), prob, get_num_threads())
        return prob


class BinaryCrossEntropy(Loss):
    """Sigmoid followed by binary cross-entropy on logits, fused (as torch's BCEWithLogitsLoss).

    ``loss = mean over all elements of max(z, 0) - z y + log(1 + exp(-|z|))``, gradient
    ``(sigmoid(z) - y) / (N K)``.

    Shape
    -----
    - output (logits): ``(N, K)`` (``K = 1`` for binary classification, ``K > 1`` multi-label).
    - target: same shape, or ``(N,)`` when ``K = 1``; values in ``[0, 1]``.

    Raises
    ------
    ValueError
        Wrong target shape, or values outside [0, 1], NaN or inf.
    """

    metric = "accuracy"
    aliases = ("binary_cross_entropy", "binary_crossentropy")

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        N, K = output_shape
        t = V.as_float_array(target, "y", np.float64, ndim=(1, 2))
        if t.ndim == 1 and K == 1:
            t = t.reshape(N, 1) if t.shape[0] == N else t
        if t.shape != (N, K):
            raise ValueError(f"y must have shape ({N}, {K})" + (f" or ({N},)" if K == 1 else "")
                             + f" to match the output, got {np.shape(target)}")
        if t.min() < 0 or t.max() > 1:
            raise ValueError(f"y must be in [0, 1] for binary cross-entropy, got values in "
                             f"[{t.min()}, {t.max()}]")
        return t

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False) -> float:
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        t = np.ascontiguousarray(t, dtype=z.dtype)
        L = z.size
        grad = self._buffer("grad", z.shape, z.dtype)
        blocks = self._buffer("blocks", ((L + 4095) // 4096,), np.float64)
        loss = _losses.sigmoid_binary_cross_entropy(z.reshape(-1), t.reshape(-1),
                                                        grad.reshape(-1), blocks, 1.0 / L,
                                                        get_num_threads())
        self._grad = grad
        return loss

    def score(self, output: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean((output > 0) == (target >= 0.5)))

    @staticmethod
    def probabilities(output: np.ndarray) -> np.ndarray:
        """Elementwise sigmoid of logits, stable for both signs."""
        out = np.empty_like(output)
        pos = output >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-output[pos]))
        e = np.exp(output[~pos])
        out[~pos] = e / (1.0 + e)
        return out


class MeanSquaredError(Loss):
    """Mean squared error over all elements: ``mean((output - target)^2)`` (as torch's MSELoss).

    Gradient ``2 (output - target) / (N K)``.

    Shape
    -----
    - output: ``(N, K)``.
    - target: same shape, or ``(N,)`` when ``K = 1``.

    Raises
    ------
    ValueError
        Wrong target shape, NaN or inf.
    """

    aliases = ("mse", "mean_squared_error")

    def prepare_target(self, target: ArrayLike, output_shape: Sequence[int]) -> np.ndarray:
        N, K = output_shape
        t = V.as_float_array(target, "y", np.float64, ndim=(1, 2))
        if t.ndim == 1 and K == 1 and t.shape[0] == N:
            t = t.reshape(N, 1)
        if t.shape != (N, K):
            raise ValueError(f"y must have shape ({N}, {K}) to match the output, got "
                             f"{np.shape(target)}")
        return t

    def forward(self, output: ArrayLike, target: ArrayLike, prepared: bool = False) -> float:
        z = self.check_output(output)
        t = target if prepared else self.prepare_target(target, z.shape)
        t = np.ascontiguousarray(t, dtype=z.dtype)
        L = z.size
        grad = self._buffer("grad", z.shape, z.dtype)
        blocks = self._buffer("blocks", ((L + 4095) // 4096,), np.float64)
        loss = _losses.mean_squared_error(z.reshape(-1), t.reshape(-1), grad.reshape(-1),
                                              blocks, 1.0 / L, get_num_threads())
        self._grad = grad
        return loss


def get(loss: Any) -> Loss:
    """A Loss instance from an instance, a class or a registered name (see ``LOSSES``).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"unknown loss {loss!r}; use a Loss instance or one of {sorted(LOSSES)}")
