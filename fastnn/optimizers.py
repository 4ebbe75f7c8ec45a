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
import numpy as np

from . import _flat
from . import _optim
from . import _validation as V
from ._config import get_num_threads


class Optimizer:
    """Base class. ``step(layers)`` updates every layer's ``params`` from its ``grads``.

    Attributes
    ----------
    state : dict of str -> dict of str -> ndarray
        Per parameter ``"<layer index>.<name>"``, the slot arrays (views of the flat slot
        buffers). Assigning a new array is allowed (e.g. when loading): the next step copies it
        into the flat buffer.
    iterations : int
        Steps taken.
    """

    #: names of the per-parameter state arrays
    slots = ()

    def __init__(self, learning_rate):
        self.learning_rate = V.check_float(learning_rate, "learning_rate", minimum=0.0,
                                           min_inclusive=False)
        self.state = {}
        self.iterations = 0
        self._group = None
        self._slot_views = None  # (slot buffers, list of (key, {slot: view}))

    def step(self, layers):
        """One update of every parameter of ``layers`` from its gradient (one kernel call)."""
        group = self._group
        if group is None or not group.matches(layers):
            group = self._group = _flat.param_group(layers)
            self._slot_views = None
        slots = self._slot_buffers(group)
        self.iterations += 1
        if group.params.size:
            self._update(group.params, group.grads, slots, get_num_threads())

    def _slot_buffers(self, group):
        """The flat slot buffers of ``group``'s layout, rebuilt (keeping the values of
        ``self.state``) when a state array is not one of their views."""
        names = self.active_slots()
        cached = self._slot_views
        if cached is not None and cached[0].keys() == set(names):
            ok = True
            for key, views in cached[1]:
                st = self.state.get(key)
                if st is None or any(st.get(s) is not views[s] for s in names):
                    ok = False
                    break
            if ok:
                return cached[0]
        index = {id(layer): i for i, layer in enumerate(group.layers)}
        keyed = [f"{index[id(layer)]}.{name}" for layer, name, _, _ in group.entries]
        shapes = [pv.shape for _, _, pv, _ in group.entries]
        buffers, views_by_slot = {}, {}
        for s in names:  # same layout as group.params
            buffers[s], views_by_slot[s] = _flat.empty_like_layout(shapes, group.params.dtype)
            for key, view in zip(keyed, views_by_slot[s]):
                old = self.state.get(key, {}).get(s)
                if old is not None and np.shape(old) == view.shape:
                    np.copyto(view, old, casting="same_kind")
        per_key = []
        for k, key in enumerate(keyed):
            views = {s: views_by_slot[s][k] for s in names}
            self.state.setdefault(key, {}).update(views)
            per_key.append((key, views))
        self._slot_views = (buffers, per_key)
        return buffers

    def active_slots(self):
        """The slot names this optimizer's settings use."""
        return self.slots

    def _update(self, params, grads, slots, num_threads):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    def __getstate__(self):  # flat buffers are rebuilt after unpickling / deep copies
        state = self.__dict__.copy()
        state["_group"] = state["_slot_views"] = None
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

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate)
        self.momentum = V.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                      max_inclusive=False)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0")
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    slots = ("velocity",)

    def active_slots(self):
        return self.slots if self.momentum > 0 else ()

    def _update(self, params, grads, slots, num_threads):
        v = slots.get("velocity", params)  # unused without momentum
        _optim.sgd_update(params, grads, v, self.learning_rate, self.momentum, self.nesterov,
                          self.weight_decay, num_threads)

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

    slots = ("m", "v")

    def _update(self, params, grads, slots, num_threads):
        _optim.adam_update(params, grads, slots["m"], slots["v"], self.learning_rate,
                           self.beta1, self.beta2, self.eps, self.weight_decay, self.iterations,
                           num_threads)

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
