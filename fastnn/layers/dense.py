"""Dense (fully connected) layer on the fused Cython kernels of ``src_cython/dense.pyx``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _dense, _losses
from .. import _validation as V
from .. import activations as act
from .._config import get_num_threads
from .base import ParamLayer


class Dense(ParamLayer):
    """Fully connected layer: ``Y = g(X @ weight + bias)``.

    Parameters
    ----------
    in_features : int
        Size of each input sample, ``>= 1``.
    out_features : int
        Size of each output sample, ``>= 1``.
    activation : str or None, default=None
        A name of :data:`fastnn.activations.ACTIVATIONS`: "relu", "leaky_relu", "elu", "gelu",
        "silu", "softplus", "sigmoid", "tanh", "softmax", ...; ``None`` is the identity (the layer
        outputs logits).
    weight_init : str or callable, optional
        Name from :mod:`fastnn.init`; default He normal for the ReLU family, Glorot uniform
        otherwise.
    bias_init : str or callable, default="zeros"
    alpha : float or None, default=None
        leaky_relu's negative slope (default 0.01) or elu's scale (default 1.0), ``> 0``; ignored
        by the other activations.

    Attributes
    ----------
    params : dict
        ``"weight"`` of shape ``(in_features, out_features)``, ``"bias"`` of shape
        ``(out_features,)``.

    Shape
    -----
    - Input: ``(N, in_features)``, float32 or float64 (the layer's dtype; other inputs are
      converted).
    - Output: ``(N, out_features)``, the layer's dtype.

    Raises
    ------
    ValueError
        If the input's last dimension is not ``in_features``, or a bad argument.
    TypeError
        If a size is not an int.

    References
    ----------
    He et al., "Delving Deep into Rectifiers", ICCV 2015 (default init for ReLU); Glorot & Bengio,
    AISTATS 2010 (otherwise).
    """

    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 weight_init: Any = None, bias_init: Any = "zeros",
                 alpha: float | None = None) -> None:
        self.in_features = V.check_int(in_features, "in_features", minimum=1)
        self.out_features = V.check_int(out_features, "out_features", minimum=1)
        super().__init__(activation, weight_init, bias_init, alpha)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.in_features, self.out_features), "bias": (self.out_features,)}

    def fans(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def _size_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) expects input of "
                             f"shape (N, {self.in_features}), got (N, "
                             f"{', '.join(map(str, input_shape))})")
        return (self.out_features,)

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Compute ``g(X @ weight + bias)``; see the class docstring for shapes."""
        X = self._check_input(X)
        N = X.shape[0]
        A = self._buffer("A", (N, self.out_features))
        W, b = self.params["weight"], self.params["bias"]
        nt = get_num_threads()
        if self._kind >= 0:
            Zk = self._z_buffer(A.shape)  # gelu, silu: the kernel keeps the pre-activation
            _dense.forward(X, W, b, A, self._kind, self.alpha, nt, Zk, bf16=self.compute_bf16,
                           Wpk=self._packed_bf16_weight(W, training))
            self._Z = Zk
        else:  # softmax: logits, then a row softmax
            Z = self._buffer("Z", (N, self.out_features))
            _dense.forward(X, W, b, Z, act.IDENTITY, 0.0, nt, bf16=self.compute_bf16,
                           Wpk=self._packed_bf16_weight(W, training))
            _losses.softmax(Z, A, nt)
        self._X, self._A = X, A
        return A

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Fill ``grads`` and return ``dX`` of shape ``(N, in_features)`` (``None`` when
        ``need_input_grad`` is False, e.g. for a model's first layer).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        X, A, dA, dZ, dX, kind = self._begin_backward(grad_output)
        W = self.params["weight"]
        _dense.backward(X, W, A, dA, dZ, self.grads["weight"], self.grads["bias"], dX, kind,
                        self.alpha, get_num_threads(), bf16=self.compute_bf16,
                        WTpk=self._packed_bf16_transposed(W) if dX is not None else None)
        return dX
