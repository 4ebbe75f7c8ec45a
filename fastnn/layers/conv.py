"""2-D convolution, channels-last, on the im2col + GEMM kernels of ``src_cython/conv.pyx``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _conv
from .. import _validation as V
from .._config import get_num_threads
from ._geometry import Padding, axis_pads, check_image_shape, conv_out, padding_arg, pair
from .base import ParamLayer


class Conv2D(ParamLayer):
    """2-D convolution (cross-correlation, as in all frameworks), channels-last:
    ``Y[n, i, j] = g(sum_{a, b, c} Xpad[n, i sh + a, j sw + b, c] weight[a, b, c] + bias)``.

    Parameters
    ----------
    in_channels : int
        Channels of the input (its last axis), ``>= 1``.
    out_channels : int
        Channels of the output, ``>= 1``.
    kernel_size : int or (int, int)
        Window ``(kernel_h, kernel_w)``, each ``>= 1``.
    stride : int or (int, int), default=1
        Step ``(stride_h, stride_w)``, each ``>= 1``.
    padding : {"valid", "same"} or int or (int, int), default=0
        Implicit zeros around the input. An int or pair ``(padding_h, padding_w)``, each ``>= 0``:
        that many rows (columns) on both sides (PyTorch's ``Conv2d(padding=...)``). ``"valid"``:
        none (the same as 0). ``"same"``: TensorFlow's / Keras' arithmetic for any stride, so that
        ``H_out = ceil(H / stride_h)``: the total padding ``max((H_out - 1) stride_h + kernel_h -
        H, 0)`` is split ``total // 2`` on top and the rest at the bottom (the odd row at the
        bottom; columns alike, the odd one on the right). Strings are case-insensitive and kept
        lower-case.
    activation : str or None, default=None
        An elementwise name of :data:`fastnn.activations.ACTIVATIONS` ("relu", "leaky_relu",
        "elu", "gelu", "silu", "softplus", "sigmoid", "tanh", ...; not softmax); ``None`` is the
        identity. Applied in the kernel while the output is in cache.
    weight_init : str or callable, optional
        Name from :mod:`fastnn.init`; default He normal for the ReLU family, Glorot uniform
        otherwise, with ``fan_in = kernel_h kernel_w in_channels`` and
        ``fan_out = kernel_h kernel_w out_channels``.
    bias_init : str or callable, default="zeros"
    alpha : float or None, default=None
        leaky_relu's negative slope (default 0.01) or elu's scale (default 1.0), ``> 0``; ignored
        by the other activations.

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(kernel_h, kernel_w, in_channels, out_channels)``, ``"bias"`` of
        shape ``(out_channels,)``.

    Shape
    -----
    - Input: ``(N, H, W, in_channels)``, float32 or float64 (the layer's dtype; other inputs are
      converted).
    - Output: ``(N, H_out, W_out, out_channels)``, the layer's dtype, with

      - ints: ``H_out = (H + 2 padding_h - kernel_h) // stride_h + 1`` and
        ``W_out = (W + 2 padding_w - kernel_w) // stride_w + 1``;
      - ``"valid"``: ``H_out = (H - kernel_h) // stride_h + 1``, ``W_out`` alike;
      - ``"same"``: ``H_out = ceil(H / stride_h)``, ``W_out = ceil(W / stride_w)``.

    Raises
    ------
    ValueError
        If the input is not 4-D, its channel count is not ``in_channels``, or the kernel is larger
        than the padded input; a stride or kernel size ``< 1``, a padding ``< 0``, or a padding
        string other than ``"valid"`` / ``"same"``.
    TypeError
        If a size is not an int.

    Notes
    -----
    Forward: for each block of output rows, im2col into a per-thread buffer (each kernel row of a
    patch is one contiguous run of ``kernel_w * in_channels`` values in NHWC), one GEMM with the
    bias pre-filled, then the activation; a 1x1, stride-1, unpadded convolution skips im2col.
    Padding is never materialised: im2col writes zeros for the positions outside the input and
    col2im skips them, so asymmetric ("same") padding costs nothing extra.
    Backward: ``dweight`` and ``dbias`` are summed per fixed chunk of images, then over chunks in
    order, so results do not depend on the number of threads.

    References
    ----------
    Chellapilla, Puri & Simard, "High Performance Convolutional Neural Networks for Document
    Processing", 2006 (im2col + GEMM); He et al., ICCV 2015 (default init for ReLU); TensorFlow's
    "same" padding: ``tf.nn.convolution`` docs ("Notes on padding").
    """

    allow_softmax = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: str | int | tuple[int, int] = 0,
                 activation: str | None = None, weight_init: Any = None,
                 bias_init: Any = "zeros", alpha: float | None = None) -> None:
        self.in_channels = V.check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = V.check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding: Padding = padding_arg(padding)
        super().__init__(activation, weight_init, bias_init, alpha)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        kh, kw = self.kernel_size
        return {"weight": (kh, kw, self.in_channels, self.out_channels),
                "bias": (self.out_channels,)}

    def fans(self) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return kh * kw * self.in_channels, kh * kw * self.out_channels

    def _size_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": (self.padding if isinstance(self.padding, str)
                            else list(self.padding))}

    def pads(self, H: int, W: int) -> tuple[int, int, int, int]:
        """The padding ``(top, bottom, left, right)`` applied to an ``H x W`` input (asymmetric
        only for ``"same"``, see the class docstring)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return (axis_pads(self.padding, H, kh, sh, 0) + axis_pads(self.padding, W, kw, sw, 1))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        H, W, _ = check_image_shape(self._name(), input_shape, self.in_channels)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pt, pb, pl, pr = self.pads(H, W)
        if H + pt + pb < kh or W + pl + pr < kw:
            raise ValueError(f"{self._name()}: kernel ({kh}, {kw}) is larger than the padded input "
                             f"({H + pt + pb}, {W + pl + pr}) (input {H}x{W}, padding "
                             f"{self.padding!r})")
        return (conv_out(H, kh, sh, pt, pb), conv_out(W, kw, sw, pl, pr), self.out_channels)

    def _name(self) -> str:
        return (f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r})")

    def _matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """weight and its gradient as ``(kernel_h kernel_w in_channels, out_channels)`` matrix
        views (the parameters are C-contiguous arrays of the layer's dtype, see ParamDict)."""
        K = self.fans()[0]
        return (self.params["weight"].reshape(K, self.out_channels),
                self.grads["weight"].reshape(K, self.out_channels))

    def _workspace(self, X: np.ndarray, nt: int) -> tuple[np.ndarray, int]:
        N, H, W, C = X.shape
        assert self.dtype is not None  # built by _check_input
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pt, pb, pl, pr = self.pads(H, W)
        key = (N, H, W, C, self.dtype.itemsize)
        plan = self.__dict__.get("_plan")
        if plan is None or plan[0] != key:
            plan = (key, _conv.conv_workspace(N, H, W, C, self.out_channels, kh, kw, sh, sw, pt,
                                              pl, self.dtype.itemsize, ph_end=pb, pw_end=pr))
            self._plan = plan
        col_rows, K, nchunks = plan[1]
        return self._buffer("col", (nt, col_rows, K)), nchunks

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Compute the convolution; see the class docstring for shapes."""
        X = self._check_input(X)
        N = X.shape[0]
        Ho, Wo, M = self.output_shape(X.shape[1:])
        W2, _ = self._matrices()
        b = self.params["bias"]
        nt = get_num_threads()
        A = self._buffer("A", (N, Ho, Wo, M))
        self._Z = self._z_buffer(A.shape)  # gelu, silu: the kernel keeps the pre-activation
        if N == 0:  # an empty batch: empty output, no kernel call
            self._X, self._A = X, A
            return A
        col, _ = self._workspace(X, nt)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pt, pb, pl, pr = self.pads(X.shape[1], X.shape[2])
        _conv.conv_forward(X, W2, b, A, col, kh, kw, sh, sw, pt, pl, self._kind, self.alpha, nt,
                           ph_end=pb, pw_end=pr, Z=self._Z, bf16=self.compute_bf16,
                           Wpk=self._packed_bf16_weight(W2, training))
        self._X, self._A = X, A
        return A

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Fill ``grads`` and return ``dX`` of shape ``(N, H, W, in_channels)`` (``None`` when
        ``need_input_grad`` is False, e.g. for a model's first layer).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X, A, dA, dZ, dX, _ = self._begin_backward(grad_output)
        W2, dW2 = self._matrices()
        db = self.grads["bias"]
        nt = get_num_threads()
        if X.shape[0] == 0:  # an empty batch contributes nothing
            dW2[...] = 0
            db[...] = 0
            return dX
        col, nchunks = self._workspace(X, nt)
        K, M = W2.shape
        pdW = self._buffer("pdW", (nchunks, K, M))
        pdb = self._buffer("pdb", (nchunks, M))
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pt, pb, pl, pr = self.pads(X.shape[1], X.shape[2])
        _conv.conv_backward(X, W2, A, dA, dZ, dW2, db, dX, col, pdW, pdb, kh, kw, sh, sw, pt, pl,
                            self._kind, self.alpha, nt, ph_end=pb, pw_end=pr,
                            bf16=self.compute_bf16,
                            WTpk=self._packed_bf16_transposed(W2) if dX is not None else None)
        return dX
