"""Optimizers with fused Cython updates (``src_cython/optim.pyx``).

Formulas as PyTorch's ``torch.optim.SGD`` and ``torch.optim.Adam`` (weight decay is L2 added to
the gradient), except that values below the smallest normal float (subnormals) in the gradients
and the optimizer state are flushed to 0 (see ``src_cython/optim.h``: subnormal arithmetic is
~100x slower on x86 and the flushed amounts are below any normal weight's resolution).

All parameters of the trained layers live in one flat buffer, their gradients in another and each
optimizer slot (velocity, Adam's moments) in a third of the same layout (``fastnn._flat``), so a
step is one kernel call over the whole model. State is still reachable per parameter, as views
keyed ``"<layer index>.<name>"`` in ``optimizer.state``.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _flat
from . import _optim
from . import _validation as V
from ._config import get_num_threads
from ._registry import Registry, auto_register

if TYPE_CHECKING:
    from .layers.base import Layer


#: name -> optimizer class (case-insensitive); every Optimizer subclass registers itself
OPTIMIZERS: Registry[Optimizer] = Registry("optimizer", case_sensitive=False)


class Optimizer:
    """Base class. ``step(layers)`` updates every layer's ``params`` from its ``grads``.

    A subclass defines ``slots`` (names of its per-parameter state arrays), ``_update`` (one
    fused kernel call over the flat buffers) and ``get_config`` (its constructor arguments); it
    registers itself in :data:`OPTIMIZERS` under its class name when it is defined, so
    ``compile(optimizer="name")`` and ``fastnn.load`` find it.

    Attributes
    ----------
    state : dict of str -> dict of str -> ndarray
        Per parameter ``"<layer index>.<name>"``, the slot arrays (views of the flat slot
        buffers). Before the first step, arrays may be placed here (e.g. when loading); they are
        copied into the flat buffers then. After it, assigning ``state[key][slot] = array``
        copies into the existing slot.
    iterations : int
        Steps taken.
    """

    #: names of the per-parameter state arrays
    slots: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(OPTIMIZERS, cls)

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = V.check_float(learning_rate, "learning_rate", minimum=0.0,
                                           min_inclusive=False)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.iterations = 0
        self._group: _flat.ParamGroup | None = None
        self._slot_buffers: dict[str, np.ndarray] = {}

    def step(self, layers: Iterable[Layer]) -> None:
        """One update of every parameter of ``layers`` from its gradient (one kernel call).

        ``layers`` is normally ``model.layers``, whose flat buffers the model built; other layers
        are packed into a flat group of their own at their first step.
        """
        group = _flat.param_group(layers)
        if group is not self._group:
            self._bind(group)
        self.iterations += 1
        if group.params.size:
            self._update(group.params, group.grads, self._slot_buffers, get_num_threads())

    def _bind(self, group: _flat.ParamGroup) -> None:
        """Create the flat slot buffers in ``group``'s layout, keeping the values already in
        ``self.state`` (same key and shape), and make ``state`` hold their views."""
        names = self.active_slots()
        keys = group.keys()
        shapes = [pv.shape for _, _, pv, _ in group.entries]
        buffers, views = {}, {}
        for s in names:
            buffers[s], views[s] = _flat.empty_like_layout(shapes, group.params.dtype)
            for key, view in zip(keys, views[s]):
                old = self.state.get(key, {}).get(s)
                if old is not None and np.shape(old) == view.shape:
                    np.copyto(view, old, casting="same_kind")
        self.state = {key: _flat.ParamDict(f"{type(self).__name__}.state[{key!r}]",
                                           {s: views[s][k] for s in names})
                      for k, key in enumerate(keys)}
        self._slot_buffers = buffers
        self._group = group

    def active_slots(self) -> tuple[str, ...]:
        """The slot names this optimizer's settings use."""
        return self.slots

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                num_threads: int) -> None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (saved with the model)."""
        raise NotImplementedError

    # flat buffers are rebuilt after unpickling / deep copies
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        state["_slot_buffers"] = {}
        state["state"] = {k: {s: np.array(a) for s, a in v.items()}
                          for k, v in self.state.items()}
        return state


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

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate)
        self.momentum = V.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                      max_inclusive=False)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0")
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    slots = ("velocity",)

    def active_slots(self) -> tuple[str, ...]:
        return self.slots if self.momentum > 0 else ()

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                num_threads: int) -> None:
        v = slots.get("velocity", params)  # unused without momentum
        _optim.sgd_update(params, grads, v, self.learning_rate, self.momentum, self.nesterov,
                          self.weight_decay, num_threads)

    def get_config(self) -> dict[str, Any]:
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

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate)
        self.beta1 = V.check_float(beta1, "beta1", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.beta2 = V.check_float(beta2, "beta2", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.eps = V.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    slots = ("m", "v")

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                num_threads: int) -> None:
        _optim.adam_update(params, grads, slots["m"], slots["v"], self.learning_rate,
                           self.beta1, self.beta2, self.eps, self.weight_decay, self.iterations,
                           num_threads)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps, "weight_decay": self.weight_decay}


def get(optimizer: Any) -> Optimizer:
    """An Optimizer from an instance or a registered name (``"sgd"``, ``"adam"``, any case,
    with default settings).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer in OPTIMIZERS:
        # mypy checks the call against Optimizer.__init__, whose learning_rate has no default;
        # every registered optimizer gives it one (a user's class without one raises TypeError)
        return OPTIMIZERS[optimizer]()  # type: ignore[call-arg]
    raise ValueError(f"unknown optimizer {optimizer!r}; use an Optimizer or one of "
                     f"{sorted(OPTIMIZERS)}")
