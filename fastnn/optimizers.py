"""Optimizers with fused Cython updates (``src_cython/optim.pyx``).

Formulas as PyTorch's ``torch.optim.SGD`` and ``torch.optim.Adam`` (weight decay is L2 added to
the gradient). State is kept per parameter, keyed ``"<layer index>.<name>"``.
"""
import numpy as np

from . import _optim
from . import _validation as V
from ._config import get_num_threads


class Optimizer:
    """Base class. ``step(layers)`` updates every layer's ``params`` from its ``grads``."""

    def __init__(self, learning_rate):
        self.learning_rate = V.check_float(learning_rate, "learning_rate", minimum=0.0,
                                           min_inclusive=False)
        self.state = {}
        self.iterations = 0

    def step(self, layers):
        self.iterations += 1
        nt = get_num_threads()
        for i, layer in enumerate(layers):
            for name, p in layer.params.items():
                g = layer.grads[name]
                self._update(f"{i}.{name}", p.reshape(-1), g.reshape(-1), nt)

    def _slot(self, key, slot, like):
        st = self.state.setdefault(key, {})
        arr = st.get(slot)
        if arr is None or arr.shape != like.shape or arr.dtype != like.dtype:
            arr = np.zeros_like(like)
            st[slot] = arr
        return arr

    def get_config(self):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``g = grad + weight_decay * p; v <- momentum * v + g; p <- p - lr * v`` (Nesterov:
    ``p <- p - lr * (g + momentum * v)``), as ``torch.optim.SGD``.

    Parameters
    ----------
    learning_rate : float, default=0.01
        ``> 0``.
    momentum : float, default=0.0
        In ``[0, 1)``.
    nesterov : bool, default=False
        Requires ``momentum > 0``.
    weight_decay : float, default=0.0
        ``>= 0``.

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.

    References
    ----------
    Sutskever et al., "On the importance of initialization and momentum in deep learning",
    ICML 2013.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate)
        self.momentum = V.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                      max_inclusive=False)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0")
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    def _update(self, key, p, g, nt):
        v = self._slot(key, "velocity", p) if self.momentum > 0 else p
        _optim.sgd_update(p, g, v, self.learning_rate, self.momentum, self.nesterov,
                          self.weight_decay, nt)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam: ``m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with bias-corrected ``m_hat``, ``v_hat``.

    Parameters
    ----------
    learning_rate : float, default=0.001
    beta1 : float, default=0.9
        In ``[0, 1)``.
    beta2 : float, default=0.999
        In ``[0, 1)``.
    eps : float, default=1e-8
        ``> 0``.
    weight_decay : float, default=0.0
        L2 added to the gradient (torch.optim.Adam's ``weight_decay``).

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 1.
    """

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(learning_rate)
        self.beta1 = V.check_float(beta1, "beta1", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.beta2 = V.check_float(beta2, "beta2", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.eps = V.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    def _update(self, key, p, g, nt):
        m = self._slot(key, "m", p)
        v = self._slot(key, "v", p)
        _optim.adam_update(p, g, m, v, self.learning_rate, self.beta1, self.beta2, self.eps,
                           self.weight_decay, self.iterations, nt)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps, "weight_decay": self.weight_decay}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get(optimizer):
    """An Optimizer from an instance or a name (``"sgd"``, ``"adam"``, with default settings).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise ValueError(f"unknown optimizer {optimizer!r}; use an Optimizer or one of "
                     f"{sorted(OPTIMIZERS)}")
