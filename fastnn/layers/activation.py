"""Activation as a layer of its own (elementwise kernels of ``src_cython/activations.pyx``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _activations, _losses
from .. import activations as act
from .._config import get_num_threads
from .base import Layer


class Activation(Layer):
    """Elementwise activation layer ``Y = g(X)`` (softmax: over the last axis of a 2-D input).

    Parameters
    ----------
    name : str
        A name of :data:`fastnn.activations.ACTIVATIONS` (the table in :mod:`fastnn.activations`:
        identity, relu, leaky_relu, elu, gelu, silu, softplus, sigmoid, tanh, softmax).
    alpha : float or None, default=None
        leaky_relu's negative slope (default 0.01) or elu's scale (default 1.0), ``> 0``; ignored
        by the other activations.

    Shape
    -----
    - Input: any ``(N, *)`` (softmax: ``(N, K)``), float32 or float64.
    - Output: same shape and dtype.

    Raises
    ------
    ValueError
        For an unknown name, a bad ``alpha``, or a softmax input that is not 2-D.

    Notes
    -----
    For gelu and silu, whose derivative needs the input, the layer keeps a reference to the last
    input (not a copy, as Dense does for its weight gradient) and the backward reads it.
    """

    def __init__(self, name: str | None, alpha: float | None = None) -> None:
        super().__init__()
        self.activation, self._kind, self.alpha = act.resolve(name, alpha)
        self._from_z = act.ACTIVATIONS[self.activation].from_z
        self._A: np.ndarray | None = None
        self._X: np.ndarray | None = None

    def get_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.activation}
        if act.ACTIVATIONS[self.activation].has_alpha:
            cfg["alpha"] = self.alpha
        return cfg

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        if self._kind < 0 and len(tuple(input_shape)) != 1:
            raise ValueError(f"softmax expects input of shape (N, K), got (N, "
                             f"{', '.join(map(str, input_shape))})")
        return tuple(input_shape)

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """``g(X)``, same shape and dtype as X (see the class docstring)."""
        X = self._check_input(X)
        A = self._buffer("A", X.shape)
        nt = get_num_threads()
        if self._kind < 0:
            _losses.softmax(X, A, nt)
        else:
            np.copyto(A, X)
            _activations.forward_inplace(A.reshape(-1), self._kind, self.alpha, nt)
        self._A = A
        self._X = X if self._from_z else None
        return A

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """``dX = grad_output * g'(X)`` (softmax: the row Jacobian-vector product
        ``A * (grad_output - sum(grad_output * A))``), same shape as the input.

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        A = self._A
        dA = self._check_grad(grad_output, None if A is None else A.shape)
        assert A is not None  # set by forward (_check_grad raised otherwise)
        dX = self._buffer("dX", A.shape)
        if self._kind < 0:
            act.softmax_backward(A, dA, dX)
        else:
            # the derivative from the output A, or from the input for gelu and silu
            S = self._X if self._from_z else A
            assert S is not None  # kept by forward
            _activations.backward(S.reshape(-1), dA.reshape(-1), dX.reshape(-1), self._kind,
                                  self.alpha, get_num_threads())
        return dX
