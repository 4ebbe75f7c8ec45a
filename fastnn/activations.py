"""Activation functions: names, kernel codes, and their plain definitions.

``g`` is applied by the fused kernels (``src_cython/simd.h``); the derivative is written in terms
of the output ``A = g(Z)``, so layers keep only A for the backward pass:

============  =====================  ===========================
name          g(z)                   g'(z) from a = g(z)
============  =====================  ===========================
identity      z                      1
relu          max(z, 0)              1 if a > 0 else 0
leaky_relu    z if z > 0 else a z    1 if a > 0 else alpha
sigmoid       1 / (1 + exp(-z))      a (1 - a)
tanh          tanh(z)                1 - a^2
softmax       exp(z) / sum exp(z)    (row Jacobian; fused with cross-entropy in the loss)
============  =====================  ===========================
"""
KINDS = {None: 0, "identity": 0, "linear": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4}
NAMES = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "softmax")
RELU_FAMILY = ("relu", "leaky_relu")


def resolve(name, alpha=0.01):
    """Map an activation name to ``(canonical_name, kernel_code, alpha)``.

    Parameters
    ----------
    name : {"identity", "linear", "relu", "leaky_relu", "sigmoid", "tanh", "softmax", None}
        ``None`` and ``"linear"`` mean identity. ``"softmax"`` has code -1 (handled by the layer).
    alpha : float
        Negative slope of leaky ReLU, ``> 0``.

    Raises
    ------
    ValueError
        For an unknown name or ``alpha <= 0`` with leaky_relu.
    """
    if name == "softmax":
        return "softmax", -1, 0.0
    if name not in KINDS:
        raise ValueError(f"activation must be one of {NAMES} or None, got {name!r}")
    canonical = "identity" if KINDS[name] == 0 else name
    if canonical == "leaky_relu":
        from ._validation import check_float

        alpha = check_float(alpha, "alpha", minimum=0.0, min_inclusive=False)
    return canonical, KINDS[name], float(alpha)
