"""2-D convolution, channels-last, on the im2col + GEMM kernels of ``src_cython/conv.pyx``."""
import numpy as np

from .. import _config, _conv
from .. import _validation as V
from .. import activations as act
from .. import init as initializers
from .._config import get_num_threads
from .base import Layer

_config._register_kernel_module(_conv)


def _pair(value, name, minimum):
    """An int or a pair of ints, each ``>= minimum``, as a tuple ``(h, w)``.

    Raises
    ------
    TypeError
        If a value is not an int (bool is refused).
    ValueError
        If a value is below ``minimum`` or a sequence does not have two entries.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (V.check_int(value[0], f"{name}[0]", minimum=minimum),
                V.check_int(value[1], f"{name}[1]", minimum=minimum))
    v = V.check_int(value, name, minimum=minimum)
    return (v, v)


def _conv_out(size, kernel, stride, pad):
    """``(size + 2 pad - kernel) // stride + 1``, or 0 when the kernel does not fit."""
    if size + 2 * pad < kernel:
        return 0
    return (size + 2 * pad - kernel) // stride + 1


def _check_image_shape(layer, input_shape, channels):
    """Per-sample input shape ``(H, W, C)`` with ``C == channels``; returns it as ints."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{layer} expects input of shape (N, H, W, C) (channels-last), got (N, "
                         f"{', '.join(map(str, shape))})")
    H, W, C = (int(s) for s in shape)
    if H < 1 or W < 1 or C < 1:
        raise ValueError(f"{layer} expects a non-empty image, got input of shape (N, {H}, {W}, "
                         f"{C})")
    if channels is not None and C != channels:
        raise ValueError(f"{layer} expects {channels} input channels (last axis, channels-last), "
                         f"got input of shape (N, {H}, {W}, {C})")
    return H, W, C


class Conv2D(Layer):
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
    padding : int or (int, int), default=0
        Implicit zeros added on both sides, ``(padding_h, padding_w)``, each ``>= 0``.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh", "identity", None}, default=None
        ``None`` is the identity. Applied in the kernel while the output is in cache.
    weight_init : str or callable, optional
        Name from :mod:`fastnn.init`; default He normal for the ReLU family, Glorot uniform
        otherwise, with ``fan_in = kernel_h kernel_w in_channels`` and
        ``fan_out = kernel_h kernel_w out_channels``.
    bias_init : str or callable, default="zeros"
    alpha : float, default=0.01
        Negative slope of leaky ReLU.

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
      ``H_out = (H + 2 padding_h - kernel_h) // stride_h + 1`` and
      ``W_out = (W + 2 padding_w - kernel_w) // stride_w + 1``.

    Raises
    ------
    ValueError
        If the input is not 4-D, its channel count is not ``in_channels``, or the kernel is larger
        than the padded input; a stride or kernel size ``< 1`` or a padding ``< 0``.
    TypeError
        If a size is not an int.

    Notes
    -----
    Forward: for each block of output rows, im2col into a per-thread buffer (each kernel row of a
    patch is one contiguous run of ``kernel_w * in_channels`` values in NHWC), one GEMM with the
    bias pre-filled, then the activation; a 1x1, stride-1, unpadded convolution skips im2col.
    Backward: ``dweight`` and ``dbias`` are summed per fixed chunk of images, then over chunks in
    order, so results do not depend on the number of threads.

    References
    ----------
    Chellapilla, Puri & Simard, "High Performance Convolutional Neural Networks for Document
    Processing", 2006 (im2col + GEMM); He et al., ICCV 2015 (default init for ReLU).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 activation=None, weight_init=None, bias_init="zeros", alpha=0.01):
        super().__init__()
        self.in_channels = V.check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = V.check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.activation, self._kind, self.alpha = act.resolve(activation, alpha)
        if self._kind < 0:
            raise ValueError("Conv2D does not take activation='softmax'; flatten and use a Dense "
                             "layer (or the loss) for it")
        self.weight_init = weight_init if weight_init is not None else initializers.default_for(
            self.activation)
        self.bias_init = bias_init
        initializers.get(self.weight_init)
        initializers.get(self.bias_init)
        self._X = None
        self._A = None

    def build(self, dtype=np.float32, rng=None):
        super().build(dtype, rng)
        rng = rng if rng is not None else np.random.default_rng()
        kh, kw = self.kernel_size
        shape = (kh, kw, self.in_channels, self.out_channels)
        fan_in = kh * kw * self.in_channels
        fan_out = kh * kw * self.out_channels
        self.params = {
            "weight": initializers.initialize(self.weight_init, shape, fan_in, fan_out, rng,
                                              self.dtype),
            "bias": initializers.initialize(self.bias_init, (self.out_channels,), fan_in, fan_out,
                                            rng, self.dtype, what="bias"),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return self

    @property
    def weight(self):
        return self.params["weight"]

    @property
    def bias(self):
        return self.params["bias"]

    def output_shape(self, input_shape):
        H, W, _ = _check_image_shape(self._name(), input_shape, self.in_channels)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ValueError(f"{self._name()}: kernel ({kh}, {kw}) is larger than the padded input "
                             f"({H + 2 * ph}, {W + 2 * pw}) (input {H}x{W}, padding ({ph}, {pw}))")
        return (_conv_out(H, kh, sh, ph), _conv_out(W, kw, sw, pw), self.out_channels)

    def get_config(self):
        cfg = {"in_channels": self.in_channels, "out_channels": self.out_channels,
               "kernel_size": list(self.kernel_size), "stride": list(self.stride),
               "padding": list(self.padding),
               "activation": None if self.activation == "identity" else self.activation,
               "weight_init": self.weight_init if isinstance(self.weight_init, str) else None,
               "bias_init": self.bias_init if isinstance(self.bias_init, str) else "zeros"}
        if self.activation == "leaky_relu":
            cfg["alpha"] = self.alpha
        return cfg

    def _name(self):
        return (f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding})")

    def _checked_params(self):
        """weight as its (K, out_channels) matrix view, bias, and the matching grad views; the
        arrays reach nogil code, so their shape, dtype and contiguity are checked here."""
        kh, kw = self.kernel_size
        K = kh * kw * self.in_channels
        out = []
        for store, key, shape in ((self.params, "weight", (kh, kw, self.in_channels,
                                                          self.out_channels)),
                                  (self.params, "bias", (self.out_channels,)),
                                  (self.grads, "weight", (kh, kw, self.in_channels,
                                                         self.out_channels)),
                                  (self.grads, "bias", (self.out_channels,))):
            a = store.get(key)
            if not isinstance(a, np.ndarray) or a.shape != shape:
                raise ValueError(f"{self._name()}: {key} must have shape {shape}, got "
                                 f"{getattr(a, 'shape', type(a).__name__)}")
            if a.dtype != self.dtype or not a.flags.c_contiguous or not a.flags.writeable:
                a = np.ascontiguousarray(a, dtype=self.dtype).copy()
                store[key] = a
            out.append(a)
        W, b, dW, db = out
        return W.reshape(K, self.out_channels), b, dW.reshape(K, self.out_channels), db

    def _workspace(self, X, nt):
        N, H, W, C = X.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        key = (N, H, W, C, self.dtype.itemsize)
        plan = self.__dict__.get("_plan")
        if plan is None or plan[0] != key:
            plan = (key, _conv.conv_workspace(N, H, W, C, self.out_channels, kh, kw, sh, sw, ph,
                                              pw, self.dtype.itemsize))
            self._plan = plan
        col_rows, K, nchunks = plan[1]
        return self._buffer("col", (nt, col_rows, K)), nchunks

    def forward(self, X, training=True):
        """Compute the convolution; see the class docstring for shapes."""
        X = self._check_input(X)
        N = X.shape[0]
        Ho, Wo, M = self.output_shape(X.shape[1:])
        W2, b, _, _ = self._checked_params()
        nt = get_num_threads()
        A = self._buffer("A", (N, Ho, Wo, M))
        if N == 0:  # an empty batch: empty output, no kernel call
            self._X, self._A = X, A
            return A
        col, _ = self._workspace(X, nt)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _conv.conv_forward(X, W2, b, A, col, kh, kw, sh, sw, ph, pw, self._kind, self.alpha, nt)
        self._X, self._A = X, A
        return A

    def backward(self, grad_output):
        """Fill ``grads`` and return ``dX`` of shape ``(N, H, W, in_channels)`` (``None`` when
        ``need_input_grad`` is False, e.g. for a model's first layer).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X, A = self._X, self._A
        dA = self._check_grad(grad_output, None if A is None else A.shape)
        W2, _, dW2, db = self._checked_params()
        nt = get_num_threads()
        if X.shape[0] == 0:  # an empty batch contributes nothing
            dW2[...] = 0
            db[...] = 0
            return self._buffer("dX", X.shape) if self.need_input_grad else None
        col, nchunks = self._workspace(X, nt)
        K, M = W2.shape
        dZ = dA if self._kind == 0 else self._buffer("dZ", A.shape)
        dX = self._buffer("dX", X.shape) if self.need_input_grad else None
        pdW = self._buffer("pdW", (nchunks, K, M))
        pdb = self._buffer("pdb", (nchunks, M))
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _conv.conv_backward(X, W2, A, dA, dZ, dW2, db, dX, col, pdW, pdb, kh, kw, sh, sw, ph, pw,
                            self._kind, self.alpha, nt)
        return dX
