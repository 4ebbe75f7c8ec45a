"""Activation functions: the one table of names, kernel codes and properties.

The kernel codes are the C enum ``fnn_activation`` of ``src_cython/simd.h`` (its
``FNN_ACTIVATION_LIST``), handed to Python by ``fastnn._activations.activation_codes()``; this
module builds its table from there, so a name and its code are written once. ``g`` is applied by
the fused kernels. The derivative is written in terms of the output ``A = g(Z)`` where it can be,
so that layers keep only A for the backward pass; gelu and silu need the pre-activation ``Z``
(``from_z``): the fused forward kernels then also write Z into a buffer of the layer (in the
activation's own loop), and the backward kernels read Z where the others read A.

============  ==================================  ===========================================
name          g(z)                                g'(z) from a = g(z), or from z (gelu, silu)
============  ==================================  ===========================================
identity      z                                   1
relu          max(z, 0)                           1 if a > 0 else 0
leaky_relu    z if z > 0 else alpha z             1 if a > 0 else alpha (alpha default 0.01)
sigmoid       1 / (1 + exp(-z))                   a (1 - a)
tanh          tanh(z)                             1 - a^2
elu           z if z > 0 else alpha (exp(z) - 1)  1 if a > 0 else a + alpha (alpha default 1)
softplus      log(1 + exp(z)); z if z > 20        1 if a > 20 else 1 - exp(-a) (= sigmoid(z))
gelu          z Phi(z) = z (1 + erf(z / sqrt 2))  from z: Phi(z) + z phi(z),
              / 2                                 phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
silu          z sigmoid(z)                        from z: s (1 + z (1 - s)), s = sigmoid(z)
softmax       exp(z) / sum exp(z)                 the row Jacobian-vector product,
                                                  :func:`softmax_backward`
============  ==================================  ===========================================

Sources: torch.nn.ReLU, LeakyReLU, Sigmoid, Tanh, ELU (alpha=1.0; Clevert et al., "Fast and
Accurate Deep Network Learning by Exponential Linear Units", ICLR 2016), Softplus (beta=1,
threshold=20: above it the input is returned as is, as PyTorch does), GELU (the exact, erf form,
``approximate="none"``; Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016), SiLU (Elfwing
et al., "Sigmoid-Weighted Linear Units", 2018). Phi is the standard normal CDF. float32 uses
vectorised polynomial approximations (``src_cython/simd.h``; the errors measured are stated in
``tests/test_kernels_activations.py``), float64 libm (``exp``, ``tanh``, ``expm1``, ``log1p``,
``erfc``). Unlike PyTorch's ``1 + erf`` form, gelu evaluates Phi(z) for z < 0 through erfc, so it
keeps its relative accuracy for strongly negative inputs. float32 results that would be below the
normal range are 0 (no subnormals): softplus and silu for z < -87.33, gelu for z <= -12.95. Large
finite inputs give finite outputs and derivatives (the limits z and 0, elu -alpha); -inf gives NaN
for gelu and silu (-inf * 0), as in PyTorch.

Adding an activation: one ``FNN_ACTIVATION_LIST`` entry (name, and whether its derivative needs
Z) and one case in each of the two loops of ``simd.h``, a row of :data:`PROPERTIES` here only if
it differs from the defaults, and its line in the table above. Nothing else: the layers read
``from_z``, ``has_alpha`` and ``default_alpha`` from :data:`ACTIVATIONS`.
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
        Whether the ``alpha`` argument applies (leaky_relu's negative slope, elu's scale).
    default_alpha : float
        ``alpha`` when none is given (0.0 where it does not apply).
    from_z : bool
        Whether the derivative needs the pre-activation Z (gelu, silu): the layer keeps Z and
        passes it to the backward kernels in place of the output A.
    """

    code: int
    default_init: str = "glorot_uniform"
    has_alpha: bool = False
    default_alpha: float = 0.0
    from_z: bool = False


#: properties that differ from ActivationInfo's defaults. He et al. 2015 init for the ReLU family
#: (relu, leaky_relu; elu as in Clevert et al. 2016; gelu, silu and softplus, which are ReLU-like
#: for large |z|); the other defaults as in torch.nn (LeakyReLU 0.01, ELU 1.0).
PROPERTIES: dict[str, dict[str, Any]] = {
    "relu": {"default_init": "he_normal"},
    "leaky_relu": {"default_init": "he_normal", "has_alpha": True, "default_alpha": 0.01},
    "elu": {"default_init": "he_normal", "has_alpha": True, "default_alpha": 1.0},
    "softplus": {"default_init": "he_normal"},
    "gelu": {"default_init": "he_normal"},
    "silu": {"default_init": "he_normal"},
}

_FROM_Z = frozenset(_activations.activations_from_z())
#: name -> ActivationInfo, built from the kernels' list, plus softmax (a row operation)
ACTIVATIONS: dict[str, ActivationInfo] = {
    name: ActivationInfo(code, **PROPERTIES.get(name, {}), from_z=name in _FROM_Z)
    for name, code in _activations.activation_codes().items()
}
ACTIVATIONS["softmax"] = ActivationInfo(-1)
#: names that mean identity
IDENTITY_ALIASES = (None, "linear")
NAMES = tuple(ACTIVATIONS)
IDENTITY = ACTIVATIONS["identity"].code


def resolve(name: str | None, alpha: float | None = None) -> tuple[str, int, float]:
    """Map an activation name to ``(canonical_name, kernel_code, alpha)``.

    Parameters
    ----------
    name : str or None
        A key of :data:`ACTIVATIONS`; ``None`` and ``"linear"`` mean identity. ``"softmax"`` has
        code -1 (handled by the layer).
    alpha : float or None
        leaky_relu's negative slope or elu's scale, ``> 0`` (finite); ``None``: the activation's
        ``default_alpha`` (leaky_relu 0.01, elu 1.0). Ignored by the other activations (returned
        as given, 0.0 for ``None``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones), or ``alpha <= 0`` or not finite
        with leaky_relu or elu.
    TypeError
        For a non-numeric ``alpha`` with leaky_relu or elu.
    """
    if name in IDENTITY_ALIASES:
        name = "identity"
    info = ACTIVATIONS.get(name) if isinstance(name, str) else None
    if info is None or not isinstance(name, str):
        raise ValueError(f"activation must be one of {NAMES} or None, got {name!r}")
    if alpha is None:
        return name, info.code, info.default_alpha
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
