"""Dropout on the counter-based kernels of ``src_cython/norm.pyx``."""
from __future__ import annotations

import numbers
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

#: seeds and step counters are unsigned 64-bit integers in the kernel
_UINT64 = 2 ** 64


def _check_uint64(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if not 0 <= value < _UINT64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


class Dropout(Layer):
    """Inverted dropout: in training each element is zeroed with probability ``rate`` and the
    kept ones are scaled by ``1 / (1 - rate)``; the identity at inference.

    ``Y = X * mask / (1 - rate)`` with ``mask`` Bernoulli(``1 - rate``) per element
    (``training=True``, as ``fit`` and ``train_on_batch`` call it); ``Y = X`` with
    ``training=False`` (``predict``, ``evaluate``). The expectation of ``Y`` is ``X``.
    As torch.nn.Dropout and keras.layers.Dropout.

    Parameters
    ----------
    rate : float
        Probability of zeroing an element, ``0 <= rate < 1``.
    seed : int, optional
        Key of the masks, in ``[0, 2**64)``. ``None``: drawn from the model's seeded generator
        when the layer is built (so ``Sequential(..., seed=0)`` is reproducible), or from fresh
        entropy for a layer used on its own. The drawn value is part of :meth:`get_config`.

    Attributes
    ----------
    step : int
        The number of training forward passes so far. The mask of a pass depends on
        ``(seed, step, element index)`` only: a counter-based hash (SplitMix64, see
        ``src_cython/norm.h``) with no generator state, so masks are the same at any thread
        count, differ between steps, and a model saved at step ``t`` and loaded (``step`` is
        saved, :meth:`get_state`) draws the masks an uninterrupted run would. Assign it to
        replay a step's mask.

    Shape
    -----
    - Input: ``(N, *)``, float32 or float64 (the layer's dtype; other inputs are converted).
    - Output: same shape and dtype. At inference the output is the input array itself.

    Raises
    ------
    ValueError
        If ``rate`` is not in ``[0, 1)`` or ``seed`` not in ``[0, 2**64)``.
    TypeError
        If ``rate`` is not a real number or ``seed`` not an int.

    Notes
    -----
    The forward pass keeps the mask (one byte per element); the backward pass multiplies the
    gradient by the same ``mask / (1 - rate)``. A backward pass after an inference forward is
    the identity. The element index is the position in the C-ordered batch, so the same samples
    in another batch get other masks.

    References
    ----------
    Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting",
    JMLR 15, 2014. Steele, Lea & Flood, "Fast Splittable Pseudorandom Number Generators",
    OOPSLA 2014 (SplitMix64).
    """

    def __init__(self, rate: float, seed: int | None = None) -> None:
        super().__init__()
        self.rate = V.check_float(rate, "rate", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.seed: int | None = None if seed is None else _check_uint64(seed, "seed")
        self.step = 0
        self._shape: tuple[int, ...] | None = None
        self._masked = False

    def build(self, dtype: DTypeLike = np.float32,
              rng: np.random.Generator | None = None) -> Self:
        """Fix the dtype; with ``seed=None`` draw the seed from ``rng`` (the model's generator;
        fresh entropy if None)."""
        super().build(dtype, rng)
        if self.seed is None:
            rng = rng if rng is not None else np.random.default_rng()
            self.seed = int(rng.integers(0, _UINT64, dtype=np.uint64))
        return self

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "seed": self.seed}

    def get_state(self) -> dict[str, Any]:
        """``{"step": step}``."""
        return {"step": int(self.step)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``{"step": int}`` (as :meth:`get_state`; a missing step is 0).

        Raises
        ------
        ValueError
            If another key is given or the step is not an int in ``[0, 2**64)``.
        """
        if not isinstance(state, dict):
            raise ValueError(f"Dropout state must be a mapping, got {state!r}")
        extra = set(state) - {"step"}
        if extra:
            raise ValueError(f"Dropout has no state entries {sorted(extra)}")
        try:
            self.step = _check_uint64(state.get("step", 0), "Dropout step")
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    @property
    def step(self) -> int:
        """Training forward passes so far (the mask counter); see the class docstring."""
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        self._step = _check_uint64(value, "step")

    def forward(self, X: ArrayLike, training: bool = True) -> np.ndarray:
        """Return the dropped-out ``X`` (``training=True``, then ``step`` advances by one) or
        ``X`` itself; see the class docstring."""
        X = self._check_input(X)
        self._shape = X.shape
        if not training or self.rate == 0.0:
            self._masked = False
            if training:
                self._step = (self._step + 1) % _UINT64
            return X
        assert self.seed is not None  # drawn by build (_check_input builds)
        Y = self._buffer("Y", X.shape)
        mask = self._buffer("mask", X.shape, np.uint8)
        _norm.dropout_forward(X.reshape(-1), Y.reshape(-1), mask.reshape(-1), self.rate,
                              self.seed, self._step, get_num_threads())
        self._step = (self._step + 1) % _UINT64
        self._masked = True
        return Y

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Return ``grad_output * mask / (1 - rate)`` (``grad_output`` itself after an inference
        forward; ``None`` when ``need_input_grad`` is False).

        Raises
        ------
        RuntimeError
            If called before ``forward``.
        ValueError
            If ``grad_output`` does not have the shape of the last output.
        """
        dY = self._check_grad(grad_output, self._shape)
        if not self.need_input_grad:
            return None
        if not self._masked:
            return dY
        dX = self._buffer("dX", dY.shape)
        _norm.dropout_backward(dY.reshape(-1), self._buffer("mask", dY.shape, np.uint8).reshape(-1),
                               dX.reshape(-1), self.rate, get_num_threads())
        return dX
