"""Flatten: ``(N, d1, d2, ...)`` -> ``(N, d1 * d2 * ...)``, a reshape (no copy, no kernel)."""
from __future__ import annotations

from collections.abc import Sequence
from math import prod

import numpy as np
from numpy.typing import ArrayLike

from .base import Layer


class Flatten(Layer):
    """Flatten every sample into a vector, keeping the batch axis (C order, as ``reshape``).

    Between a channels-last convolution stack and Dense layers: ``(N, H, W, C)`` becomes
    ``(N, H * W * C)`` with the channel varying fastest (the same order as Keras' Flatten on
    channels-last data).

    Shape
    -----
    - Input: ``(N, *)``, float32 or float64, at least 2-D.
    - Output: ``(N, prod(*))``, same dtype. The output is a view of the input (a reshape of a
      C-contiguous array); do not modify it in place.

    Raises
    ------
    ValueError
        If the input has no per-sample dimensions.
    """

    def __init__(self) -> None:
        super().__init__()
        self._in_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) < 1:
            raise ValueError("Flatten expects input of shape (N, d1, ...) with at least one "
                             "dimension after the batch, got (N,)")
        return (prod(shape),)

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Return ``X.reshape(N, -1)``; see the class docstring for shapes."""
        X = self._check_input(X)
        self._in_shape = X.shape
        return X.reshape(X.shape[0], prod(X.shape[1:]))

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return the gradient reshaped to the last input's shape (``None`` when
        ``need_input_grad`` is False).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        shape = self._in_shape
        dY = self._check_grad(grad_output, None if shape is None else (shape[0], prod(shape[1:])))
        if not self.need_input_grad:
            return None
        return dY.reshape(shape)
