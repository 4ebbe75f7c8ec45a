"""2-D max and average pooling and global average pooling, channels-last, on the kernels of
``src_cython/conv.pyx``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _conv
from .._config import get_num_threads
from .base import Layer
from ._geometry import Padding, axis_pads, check_image_shape, conv_out, padding_arg, pair


class _Pool2D(Layer):
    """Shared parts of MaxPool2D and AvgPool2D: the geometry (window, stride, padding), the shape
    checks and the configuration."""

    def __init__(self, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] | None = None,
                 padding: str | int | Sequence[int] = 0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding: Padding = padding_arg(padding)
        if not isinstance(self.padding, str):
            for axis, (p, k) in enumerate(zip(self.padding, self.kernel_size)):
                if p > k // 2:  # torch's check: "pad should be at most half of kernel size"
                    raise ValueError(f"padding must be at most half the window, padding[{axis}] "
                                     f"<= kernel_size[{axis}] // 2 = {k // 2} (as in PyTorch), "
                                     f"got padding {self.padding} for kernel_size "
                                     f"{self.kernel_size}")
        self._in_shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def _name(self) -> str:
        pad = "" if self.padding in ("valid", (0, 0)) else f", padding={self.padding!r}"
        return f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}{pad})"

    def pads(self, H: int, W: int) -> tuple[int, int, int, int]:
        """The padding ``(top, bottom, left, right)`` applied to an ``H x W`` input (asymmetric
        only for ``"same"``, see the class docstring)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (axis_pads(self.padding, H, kh, sh, 0) + axis_pads(self.padding, W, kw, sw, 1))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        H, W, C = check_image_shape(self._name(), input_shape, None)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pt, pb, pl, pr = self.pads(H, W)
        if H + pt + pb < kh or W + pl + pr < kw:
            what = "input" if self.padding in ("valid", (0, 0)) else "padded input"
            raise ValueError(f"{self._name()}: window ({kh}, {kw}) is larger than the {what} "
                             f"({H + pt + pb}, {W + pl + pr})")
        if H * W >= 2 ** 31 - 1:
            raise ValueError(f"{self._name()}: input of {H}x{W} positions is too large")
        return (conv_out(H, kh, sh, pt, pb), conv_out(W, kw, sw, pl, pr), C)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding)}

    def _geometry(self, shape: Sequence[int]) -> dict[str, int]:
        """The kernels' geometry keywords for an input of ``shape`` ``(N, H, W, C)``."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pt, pb, pl, pr = self.pads(shape[1], shape[2])
        return {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "num_threads": get_num_threads(),
                "ph": pt, "pw": pl, "ph_end": pb, "pw_end": pr}

    def _prepare_backward(self, grad_output: ArrayLike) -> tuple[np.ndarray, np.ndarray | None]:
        dY = self._check_grad(grad_output, self._out_shape)
        assert self._in_shape is not None  # set by forward (_check_grad raised otherwise)
        if not self.need_input_grad:
            return dY, None
        return dY, self._buffer("dX", self._in_shape)


class MaxPool2D(_Pool2D):
    """2-D max pooling, channels-last: the maximum of each ``kernel_size`` window, per channel;
    padded positions are ignored (as if ``-inf``, as in PyTorch and TensorFlow).

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window ``(kernel_h, kernel_w)``, each ``>= 1``.
    stride : int or (int, int), optional
        Step ``(stride_h, stride_w)``, each ``>= 1``; default ``kernel_size`` (non-overlapping).
    padding : {"valid", "same"} or int or (int, int), default=0
        ``0`` / ``"valid"``: none, every window lies in the input. ``"same"``: TensorFlow's /
        Keras' arithmetic, ``H_out = ceil(H / stride_h)``, the total padding
        ``max((H_out - 1) stride_h + kernel_h - H, 0)`` split ``total // 2`` on top and the rest at
        the bottom (the odd row at the bottom; columns alike). An int or pair
        ``(padding_h, padding_w)``: that many rows (columns) on both sides, each at most half the
        window (``padding_h <= kernel_h // 2``, PyTorch's rule). Strings are case-insensitive.

    Shape
    -----
    - Input: ``(N, H, W, C)``, float32 or float64.
    - Output: ``(N, H_out, W_out, C)``, same dtype, with

      - ``0`` / ``"valid"``: ``H_out = (H - kernel_h) // stride_h + 1`` and
        ``W_out = (W - kernel_w) // stride_w + 1`` (trailing rows/columns that do not fill a
        window are dropped, as in PyTorch and Keras);
      - ``"same"``: ``H_out = ceil(H / stride_h)``, ``W_out = ceil(W / stride_w)``;
      - ints: ``H_out = (H + 2 padding_h - kernel_h) // stride_h + 1``, ``W_out`` alike.

    Raises
    ------
    ValueError
        If the input is not 4-D or the window is larger than the (padded) input; a size ``< 1``,
        a padding ``< 0`` or above half the window, or a padding string other than ``"valid"`` /
        ``"same"``.
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
        _conv.maxpool_forward(X, Y, idx, **self._geometry(X.shape))
        self._in_shape, self._out_shape = X.shape, out_shape
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return ``dX`` of the input's shape (``None`` when ``need_input_grad`` is False)."""
        dY, dX = self._prepare_backward(grad_output)
        if dX is not None:
            _conv.maxpool_backward(dY, self._argmax, dX, **self._geometry(dX.shape))
        return dX


class AvgPool2D(_Pool2D):
    """2-D average pooling, channels-last: the mean of each ``kernel_size`` window, per channel.

    With padding, a window's sum is divided by the number of its real (unpadded) positions:
    TensorFlow's / Keras' ``"same"`` semantics, PyTorch's ``AvgPool2d(count_include_pad=False)``.
    (PyTorch's default ``count_include_pad=True`` divides by ``kernel_h kernel_w`` instead,
    counting the padded zeros: it differs at the borders.)

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window ``(kernel_h, kernel_w)``, each ``>= 1``.
    stride : int or (int, int), optional
        Step ``(stride_h, stride_w)``, each ``>= 1``; default ``kernel_size`` (non-overlapping).
    padding : {"valid", "same"} or int or (int, int), default=0
        ``0`` / ``"valid"``: none, every window lies in the input. ``"same"``: TensorFlow's /
        Keras' arithmetic, ``H_out = ceil(H / stride_h)``, the total padding
        ``max((H_out - 1) stride_h + kernel_h - H, 0)`` split ``total // 2`` on top and the rest at
        the bottom (the odd row at the bottom; columns alike). An int or pair
        ``(padding_h, padding_w)``: that many rows (columns) on both sides, each at most half the
        window (``padding_h <= kernel_h // 2``, PyTorch's rule). Strings are case-insensitive.

    Shape
    -----
    - Input: ``(N, H, W, C)``, float32 or float64.
    - Output: ``(N, H_out, W_out, C)``, same dtype, with

      - ``0`` / ``"valid"``: ``H_out = (H - kernel_h) // stride_h + 1`` and
        ``W_out = (W - kernel_w) // stride_w + 1`` (trailing rows/columns that do not fill a
        window are dropped, as in PyTorch and Keras);
      - ``"same"``: ``H_out = ceil(H / stride_h)``, ``W_out = ceil(W / stride_w)``;
      - ints: ``H_out = (H + 2 padding_h - kernel_h) // stride_h + 1``, ``W_out`` alike.

    Raises
    ------
    ValueError
        If the input is not 4-D or the window is larger than the (padded) input; a size ``< 1``,
        a padding ``< 0`` or above half the window, or a padding string other than ``"valid"`` /
        ``"same"``.
    TypeError
        If a size is not an int.
    """

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Mean over each window; see the class docstring for shapes."""
        X = self._check_input(X)
        Ho, Wo, C = self.output_shape(X.shape[1:])
        out_shape = (X.shape[0], Ho, Wo, C)
        Y = self._buffer("Y", out_shape)
        _conv.avgpool_forward(X, Y, **self._geometry(X.shape))
        self._in_shape, self._out_shape = X.shape, out_shape
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return ``dX`` of the input's shape (``None`` when ``need_input_grad`` is False)."""
        dY, dX = self._prepare_backward(grad_output)
        if dX is not None:
            _conv.avgpool_backward(dY, dX, **self._geometry(dX.shape))
        return dX


class GlobalAvgPool2D(Layer):
    """Global average pooling, channels-last: ``Y[n, c] = mean over (h, w) of X[n, h, w, c]``
    (Keras' ``GlobalAveragePooling2D``; PyTorch's ``AdaptiveAvgPool2d(1)`` followed by a flatten).

    Shape
    -----
    - Input: ``(N, H, W, C)``, float32 or float64, ``H, W, C >= 1``.
    - Output: ``(N, C)``, same dtype.

    Raises
    ------
    ValueError
        If the input is not 4-D or is empty (``H``, ``W`` or ``C`` is 0).

    Notes
    -----
    Each image's sums run over the positions in order on one thread, then are divided by ``H W``:
    results do not depend on the number of threads. The backward pass spreads
    ``grad_output[n, c] / (H W)`` over every position.

    References
    ----------
    Lin, Chen & Yan, "Network In Network", ICLR 2014 (global average pooling).
    """

    def __init__(self) -> None:
        super().__init__()
        self._in_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int]:
        H, W, C = check_image_shape("GlobalAvgPool2D", input_shape, None)
        return (C,)

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Mean over the height and width; see the class docstring for shapes."""
        X = self._check_input(X)
        Y = self._buffer("Y", (X.shape[0], X.shape[3]))
        _conv.global_avgpool_forward(X, Y, get_num_threads())
        self._in_shape = X.shape
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return ``dX`` of the input's shape (``None`` when ``need_input_grad`` is False).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        shape = self._in_shape
        dY = self._check_grad(grad_output, None if shape is None else (shape[0], shape[3]))
        if not self.need_input_grad:
            return None
        assert shape is not None  # _check_grad raised otherwise
        dX = self._buffer("dX", shape)
        _conv.global_avgpool_backward(dY, dX, get_num_threads())
        return dX
