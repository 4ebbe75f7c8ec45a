"""Dense (fully connected) layer on the fused Cython kernels of ``src_cython/dense.pyx``."""
import numpy as np

from .. import _dense, _softmax_ce
from .. import _validation as V
from .. import activations as act
from .. import init as initializers
from .._config import get_num_threads
from .base import Layer


class Dense(Layer):
    """Fully connected layer: ``Y = g(X @ weight + bias)``.

    Parameters
    ----------
    in_features : int
        Size of each input sample, ``>= 1``.
    out_features : int
        Size of each output sample, ``>= 1``.
    activation : {"relu", "leaky_relu", "sigmoid", "tanh", "softmax", "identity", None}, default=None
        ``None`` is the identity (the layer outputs logits).
    weight_init : str or callable, optional
        Name from :mod:`fastnn.init`; default He normal for the ReLU family, Glorot uniform
        otherwise.
    bias_init : str or callable, default="zeros"
    alpha : float, default=0.01
        Negative slope of leaky ReLU.

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

    def __init__(self, in_features, out_features, activation=None, weight_init=None,
                 bias_init="zeros", alpha=0.01):
        super().__init__()
        self.in_features = V.check_int(in_features, "in_features", minimum=1)
        self.out_features = V.check_int(out_features, "out_features", minimum=1)
        self.activation, self._kind, self.alpha = act.resolve(activation, alpha)
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
        shape = (self.in_features, self.out_features)
        self.params = {
            "weight": initializers.initialize(self.weight_init, shape, self.in_features,
                                              self.out_features, rng, self.dtype),
            "bias": initializers.initialize(self.bias_init, (self.out_features,),
                                            self.in_features, self.out_features, rng, self.dtype,
                                            what="bias"),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        return self

    @property
    def weight(self):
        """``(in_features, out_features)`` array, the layer's dtype."""
        return self.params["weight"]

    @property
    def bias(self):
        """``(out_features,)`` array, the layer's dtype."""
        return self.params["bias"]

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"Dense({self.in_features}, {self.out_features}) expects input of "
                             f"shape (N, {self.in_features}), got (N, "
                             f"{', '.join(map(str, input_shape))})")
        return (self.out_features,)

    def get_config(self):
        cfg = {"in_features": self.in_features, "out_features": self.out_features,
               "activation": None if self.activation == "identity" else self.activation,
               "weight_init": self.weight_init if isinstance(self.weight_init, str) else None,
               "bias_init": self.bias_init if isinstance(self.bias_init, str) else "zeros"}
        if self.activation == "leaky_relu":
            cfg["alpha"] = self.alpha
        return cfg

    def forward(self, X, training=True):
        """Compute ``g(X @ weight + bias)``; see the class docstring for shapes."""
        X = self._check_input(X)
        N = X.shape[0]
        A = self._buffer("A", (N, self.out_features))
        W, b = self.params["weight"], self.params["bias"]
        nt = get_num_threads()
        if self._kind >= 0:
            _dense.forward(X, W, b, A, self._kind, self.alpha, nt)
        else:  # softmax: logits, then a row softmax
            Z = self._buffer("Z", (N, self.out_features))
            _dense.forward(X, W, b, Z, 0, 0.0, nt)
            _softmax_ce.softmax(Z, A, nt)
        self._X, self._A = X, A
        return A

    def backward(self, grad_output):
        """Fill ``grads`` and return ``dX`` of shape ``(N, in_features)`` (``None`` when
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
        N = X.shape[0]
        kind = self._kind
        if kind < 0:  # softmax Jacobian-vector product: dZ = A * (dA - sum(dA * A))
            dZ = self._buffer("dZ", A.shape)
            np.multiply(dA, A, out=dZ)
            s = dZ.sum(axis=1, keepdims=True)
            np.subtract(dA, s, out=dZ)
            np.multiply(dZ, A, out=dZ)
            dA, kind = dZ, 0
        dZ = dA if kind == 0 else self._buffer("dZ", A.shape)
        dX = self._buffer("dX", (N, self.in_features)) if self.need_input_grad else None
        _dense.backward(X, self.params["weight"], A, dA, dZ, self.grads["weight"],
                        self.grads["bias"], dX, kind, self.alpha, get_num_threads())
        return dX
