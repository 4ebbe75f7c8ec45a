"""Batch and layer normalisation over the channel (last) axis, on the fused kernels of
``src_cython/norm.pyx``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .. import _norm
from .. import _validation as V
from .._config import get_num_threads
from .base import Layer

if TYPE_CHECKING:
    from typing_extensions import Self


class _ChannelNorm(Layer):
    """Shared parts: ``num_features`` channels on the last axis, ``weight`` (ones) and ``bias``
    (zeros) of shape ``(num_features,)``, the input/gradient checks and the 2-D views."""

    _abstract = True

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = V.check_int(num_features, "num_features", minimum=1)
        self.eps = V.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
        self._X: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_features,), "bias": (self.num_features,)}

    def build(self, dtype: DTypeLike = np.float32,
              rng: np.random.Generator | None = None) -> Self:
        """Create ``weight`` (ones) and ``bias`` (zeros) in ``dtype``; ``rng`` is not used."""
        super().build(dtype, rng)
        C = self.num_features
        self._set_params({"weight": np.ones(C), "bias": np.zeros(C)})
        return self

    @property
    def weight(self) -> np.ndarray:
        """The scale ``gamma``, shape ``(num_features,)``, the layer's dtype (trainable)."""
        return self.params["weight"]

    @property
    def bias(self) -> np.ndarray:
        """The shift ``beta``, shape ``(num_features,)``, the layer's dtype (trainable)."""
        return self.params["bias"]

    @property
    def gamma(self) -> np.ndarray:
        """Alias of :attr:`weight` (Keras' name)."""
        return self.params["weight"]

    @property
    def beta(self) -> np.ndarray:
        """Alias of :attr:`bias` (Keras' name)."""
        return self.params["bias"]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in input_shape)
        if not shape or shape[-1] != self.num_features:
            got = "(N, " + ", ".join(map(str, shape)) + ")" if shape else "(N,)"
            raise ValueError(f"{type(self).__name__}(num_features={self.num_features}) expects "
                             f"input with {self.num_features} channels on the last axis "
                             f"(N, ..., {self.num_features}), got {got}")
        return shape

    def _rows(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """The checked input and its ``(M, C)`` view."""
        X = self._check_input(X)
        return X, X.reshape(-1, self.num_features)

    def _grad_rows(self, grad_output: ArrayLike) -> tuple[
            np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The checks of ``backward``: ``(X2, dY2, dX, dX2)`` (2-D views; ``dX`` and ``dX2``
        ``None`` when ``need_input_grad`` is False).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X = self._X
        dY = self._check_grad(grad_output, None if X is None else X.shape)
        assert X is not None  # set by forward (_check_grad raised otherwise)
        C = self.num_features
        dX = self._buffer("dX", X.shape) if self.need_input_grad else None
        return (X.reshape(-1, C), dY.reshape(-1, C), dX,
                None if dX is None else dX.reshape(-1, C))


class BatchNorm(_ChannelNorm):
    """Batch normalisation over every axis but the last (the channels).

    ``Y = (X - mean) / sqrt(var + eps) * weight + bias`` per channel ``c``, where in training
    (``training=True``, as ``fit`` calls it) ``mean`` and ``var`` are the mean and the biased
    variance of channel ``c`` over the ``M = N * H * W`` (or ``N``) values of the batch, and at
    inference (``training=False``) the running statistics. Each training pass updates them as
    ``running = (1 - momentum) * running + momentum * batch``, ``running_var`` with the
    unbiased batch variance ``var * M / (M - 1)``. As torch.nn.BatchNorm1d (input ``(N, C)``)
    and torch.nn.BatchNorm2d (here channels-last, ``(N, H, W, C)``).

    Parameters
    ----------
    num_features : int
        Number of channels ``C``, ``>= 1``.
    momentum : float, default=0.1
        Weight of the batch statistic in the running average, ``0 <= momentum <= 1``
        (PyTorch's convention; Keras' ``momentum`` is ``1 - momentum``).
    eps : float, default=1e-5
        Added to the variance, ``> 0``.

    Attributes
    ----------
    weight, bias : ndarray, shape ``(C,)``
        The trainable scale (``gamma``, initialised to 1) and shift (``beta``, 0);
        ``gamma``/``beta`` are read-only aliases.
    running_mean, running_var : ndarray, shape ``(C,)``
        The running statistics (start at 0 and 1): non-trainable :attr:`buffers`, saved and
        loaded with the model, not updated by the optimizer.

    Shape
    -----
    - Input: ``(N, *, C)``, float32 or float64 (the layer's dtype; other inputs are converted),
      e.g. ``(N, C)`` after a Dense layer or ``(N, H, W, C)`` after a Conv2D.
    - Output: same shape and dtype.

    Raises
    ------
    ValueError
        If the input's last axis is not ``num_features``; in training, if there is only one value
        per channel (``M = 1``: no variance, as PyTorch); a bad argument.
    TypeError
        If ``num_features`` is not an int or ``momentum``/``eps`` not a real number.

    Notes
    -----
    Statistics and gradients are computed in float64 (two passes: the mean, then the squared
    deviations), in fixed chunks of rows added in a fixed order: results do not depend on the
    thread count. The training backward pass is
    ``dX = weight / sqrt(var + eps) * (dY - mean(dY) - xhat * mean(dY * xhat))`` with
    ``xhat = (X - mean) / sqrt(var + eps)``; after an inference forward it is
    ``dX = weight / sqrt(running_var + eps) * dY`` (fixed statistics).

    References
    ----------
    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift", ICML 2015.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps)
        self.momentum = V.check_float(momentum, "momentum", minimum=0.0, maximum=1.0)
        self._training = False

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def build(self, dtype: DTypeLike = np.float32,
              rng: np.random.Generator | None = None) -> Self:
        """Create ``weight`` (ones), ``bias`` (zeros), ``running_mean`` (zeros) and
        ``running_var`` (ones) in ``dtype``; ``rng`` is not used."""
        super().build(dtype, rng)
        C = self.num_features
        self._set_buffers({"running_mean": np.zeros(C), "running_var": np.ones(C)})
        return self

    @property
    def running_mean(self) -> np.ndarray:
        """Running mean of each channel, shape ``(C,)``, the layer's dtype."""
        self._ensure_built()
        return self.buffers["running_mean"]

    @property
    def running_var(self) -> np.ndarray:
        """Running (unbiased) variance of each channel, shape ``(C,)``, the layer's dtype."""
        self._ensure_built()
        return self.buffers["running_var"]

    def get_config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Normalise with the batch's statistics and update the running ones (``training``), or
        normalise with the running statistics; see the class docstring."""
        X, X2 = self._rows(X)
        M, C = X2.shape
        if training and M < 2:
            raise ValueError(f"BatchNorm needs more than 1 value per channel when training, got "
                             f"input of shape {X.shape} (use a batch of at least 2 samples)")
        mean = self._buffer("mean", (C,), np.float64)
        var = self._buffer("var", (C,), np.float64)
        invstd = self._buffer("invstd", (C,), np.float64)
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        if not training:
            mean[...] = rm
            var[...] = rv
        Y = self._buffer("Y", X.shape)
        _norm.batchnorm_forward(X2, self.params["weight"], self.params["bias"], mean, var,
                                invstd, Y.reshape(-1, C), self.eps, bool(training),
                                get_num_threads())
        if training:
            m = self.momentum
            rm[...] = (1.0 - m) * rm.astype(np.float64) + m * mean
            rv[...] = (1.0 - m) * rv.astype(np.float64) + m * (var * (M / (M - 1.0)))
        self._X, self._training = X, bool(training)
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Fill ``grads`` (``weight``, ``bias``) and return ``dX`` of the input's shape (``None``
        when ``need_input_grad`` is False); see the class docstring for the formula.

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X2, dY2, dX, dX2 = self._grad_rows(grad_output)
        _norm.batchnorm_backward(X2, dY2, self.params["weight"],
                                 self._buffer("mean", (self.num_features,), np.float64),
                                 self._buffer("invstd", (self.num_features,), np.float64),
                                 dX2, self.grads["weight"], self.grads["bias"], self._training,
                                 get_num_threads())
        return dX


class LayerNorm(_ChannelNorm):
    """Layer normalisation over the last axis, with an elementwise affine transform.

    ``Y = (X - mean) / sqrt(var + eps) * weight + bias`` where ``mean`` and ``var`` (biased) are
    taken over the last axis of each sample position separately; the same in training and at
    inference (no running statistics). As torch.nn.LayerNorm(normalized_shape=num_features).

    Parameters
    ----------
    num_features : int
        Size ``C`` of the last axis, ``>= 1``.
    eps : float, default=1e-5
        Added to the variance, ``> 0``.

    Attributes
    ----------
    weight, bias : ndarray, shape ``(C,)``
        The trainable scale (``gamma``, initialised to 1) and shift (``beta``, 0);
        ``gamma``/``beta`` are read-only aliases.

    Shape
    -----
    - Input: ``(N, *, C)``, float32 or float64 (the layer's dtype; other inputs are converted).
    - Output: same shape and dtype.

    Raises
    ------
    ValueError
        If the input's last axis is not ``num_features``; a bad argument.
    TypeError
        If ``num_features`` is not an int or ``eps`` not a real number.

    Notes
    -----
    Statistics in float64 (two passes). Backward, per row with ``g = dY * weight`` and
    ``xhat = (X - mean) / sqrt(var + eps)``:
    ``dX = (g - mean_C(g) - xhat * mean_C(g * xhat)) / sqrt(var + eps)``; the parameter
    gradients ``sum dY * xhat`` and ``sum dY`` over all rows are added in fixed chunks in a fixed
    order, so results do not depend on the thread count.

    References
    ----------
    Ba, Kiros & Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
    """

    def get_config(self) -> dict[str, Any]:
        return {"num_features": self.num_features, "eps": self.eps}

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Normalise each position over the last axis; see the class docstring."""
        X, X2 = self._rows(X)
        M = X2.shape[0]
        mean = self._buffer("mean", (M,), np.float64)
        invstd = self._buffer("invstd", (M,), np.float64)
        Y = self._buffer("Y", X.shape)
        _norm.layernorm_forward(X2, self.params["weight"], self.params["bias"], mean, invstd,
                                Y.reshape(-1, self.num_features), self.eps, get_num_threads())
        self._X = X
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Fill ``grads`` (``weight``, ``bias``) and return ``dX`` of the input's shape (``None``
        when ``need_input_grad`` is False); see the class docstring for the formula.

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X2, dY2, dX, dX2 = self._grad_rows(grad_output)
        M = X2.shape[0]
        _norm.layernorm_backward(X2, dY2, self.params["weight"],
                                 self._buffer("mean", (M,), np.float64),
                                 self._buffer("invstd", (M,), np.float64), dX2,
                                 self.grads["weight"], self.grads["bias"], get_num_threads())
        return dX
