"""2-D max and average pooling, channels-last, on the kernels of ``src_cython/conv.pyx``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _conv
from .._config import get_num_threads
from .base import Layer
from ._geometry import check_image_shape, conv_out, pair


class _Pool2D(Layer):
    """Shared parts of MaxPool2D and AvgPool2D (no padding: every window lies in the input)."""

    def __init__(self, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self._in_shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def _name(self) -> str:
        return f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride})"

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        H, W, C = check_image_shape(self._name(), input_shape, None)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if H < kh or W < kw:
            raise ValueError(f"{self._name()}: window ({kh}, {kw}) is larger than the input "
                             f"({H}, {W})")
        if H * W >= 2 ** 31 - 1:
            raise ValueError(f"{self._name()}: input of {H}x{W} positions is too large")
        return (conv_out(H, kh, sh, 0), conv_out(W, kw, sw, 0), C)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}

    def _prepare_backward(self, grad_output: ArrayLike) -> tuple[np.ndarray, np.ndarray | None]:
        dY = self._check_grad(grad_output, self._out_shape)
        assert self._in_shape is not None  # set by forward (_check_grad raised otherwise)
        if not self.need_input_grad:
            return dY, None
        return dY, self._buffer("dX", self._in_shape)


class MaxPool2D(_Pool2D):
    """2-D max pooling, channels-last: the maximum of each ``kernel_size`` window, per channel.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window ``(kernel_h, kernel_w)``, each ``>= 1``.
    stride : int or (int, int), optional
        Step ``(stride_h, stride_w)``, each ``>= 1``; default ``kernel_size`` (non-overlapping).

    Shape
    -----
    - Input: ``(N, H, W, C)``, float32 or float64.
    - Output: ``(N, H_out, W_out, C)``, same dtype, with ``H_out = (H - kernel_h) // stride_h + 1``
      and ``W_out = (W - kernel_w) // stride_w + 1`` (trailing rows/columns that do not fill a
      window are dropped, as in PyTorch and Keras ``padding="valid"``).

    Raises
    ------
    ValueError
        If the input is not 4-D or the window is larger than the input; a size ``< 1``.
    TypeError
        If a size is not an int.

    Notes
    -----
    The forward pass stores the position of each maximum (the first one on ties); the backward
    pass routes the gradient there. With overlapping windows a position collects the gradients of
    every window it is the maximum of.
    """

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Max over each window; see the class docstring for shapes."""
        X = self._check_input(X)
        Ho, Wo, C = self.output_shape(X.shape[1:])
        out_shape = (X.shape[0], Ho, Wo, C)
        Y = self._buffer("Y", out_shape)
        idx = self._argmax = self._buffer("argmax", out_shape, np.intc)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        _conv.maxpool_forward(X, Y, idx, kh, kw, sh, sw, get_num_threads())
        self._in_shape, self._out_shape = X.shape, out_shape
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return ``dX`` of the input's shape (``None`` when ``need_input_grad`` is False)."""
        dY, dX = self._prepare_backward(grad_output)
        if dX is not None:
            (kh, kw), (sh, sw) = self.kernel_size, self.stride
            _conv.maxpool_backward(dY, self._argmax, dX, kh, kw, sh, sw, get_num_threads())
        return dX


class AvgPool2D(_Pool2D):
    """2-D average pooling, channels-last: the mean of each ``kernel_size`` window, per channel.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window ``(kernel_h, kernel_w)``, each ``>= 1``.
    stride : int or (int, int), optional
        Step ``(stride_h, stride_w)``, each ``>= 1``; default ``kernel_size`` (non-overlapping).

    Shape
    -----
    - Input: ``(N, H, W, C)``, float32 or float64.
    - Output: ``(N, H_out, W_out, C)``, same dtype, with ``H_out = (H - kernel_h) // stride_h + 1``
      and ``W_out = (W - kernel_w) // stride_w + 1``.

    Raises
    ------
    ValueError
        If the input is not 4-D or the window is larger than the input; a size ``< 1``.
    TypeError
        If a size is not an int.
    """

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Mean over each window; see the class docstring for shapes."""
        X = self._check_input(X)
        Ho, Wo, C = self.output_shape(X.shape[1:])
        out_shape = (X.shape[0], Ho, Wo, C)
        Y = self._buffer("Y", out_shape)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        _conv.avgpool_forward(X, Y, kh, kw, sh, sw, get_num_threads())
        self._in_shape, self._out_shape = X.shape, out_shape
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return ``dX`` of the input's shape (``None`` when ``need_input_grad`` is False)."""
        dY, dX = self._prepare_backward(grad_output)
        if dX is not None:
            (kh, kw), (sh, sw) = self.kernel_size, self.stride
            _conv.avgpool_backward(dY, dX, kh, kw, sh, sw, get_num_threads())
        return dX
