"""Activation functions: the one table of names, kernel codes and properties.

The kernel codes are the C enum ``fnn_activation`` of ``src_cython/simd.h`` (its
``FNN_ACTIVATION_LIST``), handed to Python by ``fastnn._activations.activation_codes()``; this
module builds its table from there, so a name and its code are written once. ``g`` is applied by
the fused kernels; the derivative is written in terms of the output ``A = g(Z)``, so layers keep
only A for the backward pass:

============  =====================  ===========================
name          g(z)                   g'(z) from a = g(z)
============  =====================  ===========================
identity      z                      1
relu          max(z, 0)              1 if a > 0 else 0
leaky_relu    z if z > 0 else a z    1 if a > 0 else alpha
sigmoid       1 / (1 + exp(-z))      a (1 - a)
tanh          tanh(z)                1 - a^2
softmax       exp(z) / sum exp(z)    the row Jacobian-vector product, :func:`softmax_backward`
============  =====================  ===========================

Adding an activation whose derivative comes from its output: one ``FNN_ACTIVATION_LIST`` entry and
one case in each of the two loops of ``simd.h``, a row of :data:`PROPERTIES` here only if it
differs from the defaults, and its line in the table above.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import _activations


class ActivationInfo(NamedTuple):
    """What the layers need to know of an activation.

    Attributes
    ----------
    code : int
        The kernel code (``fnn_activation``); -1 for softmax, which is not elementwise.
    default_init : str
        The weight initialiser a layer uses with this activation (``fastnn.init``).
    has_alpha : bool
        Whether the ``alpha`` argument (negative slope) applies.
    """

    code: int
    default_init: str = "glorot_uniform"
    has_alpha: bool = False


#: properties that differ from ActivationInfo's defaults (He et al. 2015 init for the ReLU family)
PROPERTIES: dict[str, dict[str, Any]] = {
    "relu": {"default_init": "he_normal"},
    "leaky_relu": {"default_init": "he_normal", "has_alpha": True},
}

#: name -> ActivationInfo, built from the kernels' list, plus softmax (a row operation)
ACTIVATIONS: dict[str, ActivationInfo] = {
    name: ActivationInfo(code, **PROPERTIES.get(name, {}))
    for name, code in _activations.activation_codes().items()
}
ACTIVATIONS["softmax"] = ActivationInfo(-1)
#: names that mean identity
IDENTITY_ALIASES = (None, "linear")
NAMES = tuple(ACTIVATIONS)
IDENTITY = ACTIVATIONS["identity"].code


def resolve(name: str | None, alpha: float = 0.01) -> tuple[str, int, float]:
    """Map an activation name to ``(canonical_name, kernel_code, alpha)``.

    Parameters
    ----------
    name : str or None
        A key of :data:`ACTIVATIONS`; ``None`` and ``"linear"`` mean identity. ``"softmax"`` has
        code -1 (handled by the layer).
    alpha : float
        Negative slope of leaky ReLU, ``> 0`` (ignored by the other activations).

    Raises
    ------
    ValueError
        For an unknown name or ``alpha <= 0`` with leaky_relu.
    """
    if name in IDENTITY_ALIASES:
        name = "identity"
    info = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if info is None or not isinstance(name, str):
        raise ValueError(f"activation must be one of {NAMES} or None, got {name!r}")
    if info.has_alpha:
        from ._validation import check_float

        alpha = check_float(alpha, "alpha", minimum=0.0, min_inclusive=False)
    return name, info.code, float(alpha)


def default_init(name: str) -> str:
    """The default weight initialiser for a canonical activation name."""
    return ACTIVATIONS[name].default_init


def softmax_backward(A: np.ndarray, dA: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The softmax row Jacobian-vector product ``out = A * (dA - sum(dA * A, axis=1))``.

    Parameters
    ----------
    A : ndarray, shape ``(N, K)``
        The softmax output (rows sum to 1), float32 or float64.
    dA : ndarray, shape ``(N, K)``
        Gradient with respect to ``A``, same dtype.
    out : ndarray, shape ``(N, K)``
        Receives the gradient with respect to the logits; must alias neither ``A`` nor ``dA``.

    Returns
    -------
    ndarray
        ``out``.

    References
    ----------
    Bishop, "Pattern Recognition and Machine Learning", 2006, eq. 4.106 (the softmax Jacobian).
    """
    np.multiply(dA, A, out=out)
    s = out.sum(axis=1, keepdims=True)
    np.subtract(dA, s, out=out)
    np.multiply(out, A, out=out)
    return out
