"""Optimizers with fused Cython updates (``src_cython/optim.pyx``).

Formulas as PyTorch's ``torch.optim.SGD``, ``Adam``, ``AdamW``, ``RMSprop`` and ``Adagrad``
(weight decay is L2 added to the gradient, except AdamW's decoupled decay), except that values
below the smallest normal float (subnormals) in the gradients and the optimizer state are flushed to
0 (see ``src_cython/optim.h``: subnormal arithmetic is ~100x slower on x86 and the flushed amounts
are below any normal weight's resolution).

All parameters of the trained layers live in one flat buffer, their gradients in another and each
optimizer slot (velocity, Adam's moments) in a third of the same layout (``fastnn._flat``), so a
step is one kernel call over the whole model. State is still reachable per parameter, as views
keyed ``"<layer index>.<name>"`` in ``optimizer.state``.

Every optimizer takes ``learning_rate`` as a number or a :class:`fastnn.schedules.Schedule` of the
step (Keras' convention), and ``clipnorm`` / ``clipvalue`` (Keras' names) for gradient clipping,
fused into the update kernel.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _flat
from . import _optim
from . import _validation as V
from . import schedules as schedules_mod
from ._config import get_num_threads
from ._registry import Registry, auto_register
from .schedules import LearningRate, Schedule

if TYPE_CHECKING:
    from .layers.base import Layer


#: name -> optimizer class (case-insensitive); every Optimizer subclass registers itself
OPTIMIZERS: Registry[Optimizer] = Registry("optimizer", case_sensitive=False)

#: added to the global norm before dividing, as ``torch.nn.utils.clip_grad_norm_``
CLIPNORM_EPS = 1e-6


def _check_clip(value: Any, name: str) -> float | None:
    if value is None:
        return None
    return V.check_float(value, name, minimum=0.0, min_inclusive=False)


class Optimizer:
    """Base class. ``step(layers)`` updates every layer's ``params`` from its ``grads``.

    A subclass defines ``slots`` (names of its per-parameter state arrays), ``_update`` (one
    fused kernel call over the flat buffers) and ``get_config`` (its constructor arguments, with
    ``self._base_config()``); it registers itself in :data:`OPTIMIZERS` under its class name when
    it is defined, so ``compile(optimizer="name")`` and ``fastnn.load`` find it.

    Parameters
    ----------
    learning_rate : float or Schedule
        A number ``> 0``, or a :class:`fastnn.schedules.Schedule` of the step: the update made
        when ``iterations == t`` (``t`` earlier updates) uses ``schedule(t)``, the first one
        ``schedule(0)`` (Keras' convention). A ``{"class", "config"}`` dict of
        :func:`fastnn.schedules.serialize` is rebuilt (what ``get_config`` stores).
    clipnorm : float, optional
        Clip the gradients by their global L2 norm over all parameters, as
        ``torch.nn.utils.clip_grad_norm_(max_norm=clipnorm)``: with
        ``norm = sqrt(sum of grad**2 over every parameter)``, each gradient is multiplied by
        ``min(1, clipnorm / (norm + 1e-6))`` (so only when ``norm + 1e-6 > clipnorm``; a NaN
        norm leaves the gradients NaN, an infinite one makes them NaN, as in PyTorch). ``> 0``.
        (Keras' ``clipnorm`` is per variable; this is its ``global_clipnorm``.)
    clipvalue : float, optional
        Clamp each gradient element to ``[-clipvalue, clipvalue]`` (Keras' ``clipvalue``,
        ``torch.nn.utils.clip_grad_value_``). ``> 0``.

    Clipping acts on the raw gradient, before weight decay, momentum and moments. It is fused
    into the update: the optimizer reads the clipped values, but ``layer.grads`` keep the
    unclipped gradients (unlike PyTorch's in-place ``clip_grad_norm_``).

    Attributes
    ----------
    learning_rate : float or Schedule
        Assignable (a float ``> 0`` or a Schedule), e.g. by
        :class:`~fastnn.callbacks.LearningRateScheduler`.
    current_learning_rate : float
        The rate the next update uses (``schedule(iterations)`` for a schedule).
    state : dict of str -> dict of str -> ndarray
        Per parameter ``"<layer index>.<name>"``, the slot arrays (views of the flat slot
        buffers). Before the first step, arrays may be placed here (e.g. when loading); they are
        copied into the flat buffers then. After it, assigning ``state[key][slot] = array``
        copies into the existing slot.
    iterations : int
        Steps taken.

    Raises
    ------
    ValueError
        A learning rate, clipnorm or clipvalue out of range (or NaN/inf), both clipnorm and
        clipvalue given (Keras allows one), or at a step, a schedule value that is negative or
        not finite.
    TypeError
        A learning rate that is neither a number nor a Schedule.
    """

    #: names of the per-parameter state arrays
    slots: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(OPTIMIZERS, cls)

    def __init__(self, learning_rate: LearningRate, clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        self.learning_rate = learning_rate  # the setter checks and converts it
        self.clipnorm = _check_clip(clipnorm, "clipnorm")
        self.clipvalue = _check_clip(clipvalue, "clipvalue")
        if self.clipnorm is not None and self.clipvalue is not None:
            raise ValueError(f"give at most one of clipnorm and clipvalue, got clipnorm="
                             f"{clipnorm!r} and clipvalue={clipvalue!r}")
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.iterations = 0
        self._group: _flat.ParamGroup | None = None
        self._slot_buffers: dict[str, np.ndarray] = {}

    @property
    def learning_rate(self) -> float | Schedule:
        """The learning rate: a float, or the Schedule of the step it was given."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        self._learning_rate = schedules_mod.get(value, "learning_rate")

    def learning_rate_at(self, step: int) -> float:
        """The rate of the update made when ``iterations == step``.

        Raises
        ------
        ValueError
            If the schedule returns a negative, NaN or infinite rate.
        """
        lr = self._learning_rate
        if not isinstance(lr, Schedule):
            return lr
        value = lr(step)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"learning-rate schedule {lr!r} returned {value!r} at step {step}, "
                            f"not a number") from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"learning-rate schedule {lr!r} returned {value} at step {step}; "
                             f"it must be finite and >= 0")
        return value

    @property
    def current_learning_rate(self) -> float:
        """The rate the next update will use (``schedule(iterations)`` for a schedule)."""
        return self.learning_rate_at(self.iterations)

    def step(self, layers: Iterable[Layer]) -> None:
        """One update of every parameter of ``layers`` from its gradient (one kernel call, and a
        norm reduction before it with ``clipnorm``).

        ``layers`` is normally ``model.layers``, whose flat buffers the model built; other layers
        are packed into a flat group of their own at their first step.
        """
        group = _flat.param_group(layers)
        if group is not self._group:
            self._bind(group)
        lr = self.learning_rate_at(self.iterations)
        self.iterations += 1
        if not group.params.size:
            return
        num_threads = get_num_threads()
        scale = 1.0
        if self.clipnorm is not None:
            norm = _optim.grad_norm(group.grads, num_threads)
            # min() keeps 1.0 for a NaN norm: the gradients stay NaN, as with PyTorch
            scale = min(1.0, self.clipnorm / (norm + CLIPNORM_EPS))
        clip = self.clipvalue if self.clipvalue is not None else math.inf
        self._update(group.params, group.grads, self._slot_buffers, lr, scale, clip, num_threads)

    def _bind(self, group: _flat.ParamGroup) -> None:
        """Create the flat slot buffers in ``group``'s layout, keeping the values already in
        ``self.state`` (same key and shape), and make ``state`` hold their views."""
        names = self.active_slots()
        keys = group.keys()
        shapes = [pv.shape for _, _, pv, _ in group.entries]
        buffers, views = {}, {}
        for s in names:
            buffers[s], views[s] = _flat.empty_like_layout(shapes, group.params.dtype)
            initial = self.initial_slot_value(s)
            for key, view in zip(keys, views[s]):
                old = self.state.get(key, {}).get(s)
                if old is not None and np.shape(old) == view.shape:
                    np.copyto(view, old, casting="same_kind")
                elif initial != 0:
                    view.fill(initial)
        self.state = {key: _flat.ParamDict(f"{type(self).__name__}.state[{key!r}]",
                                           {s: views[s][k] for s in names})
                      for k, key in enumerate(keys)}
        self._slot_buffers = buffers
        self._group = group

    def active_slots(self) -> tuple[str, ...]:
        """The slot names this optimizer's settings use."""
        return self.slots

    def initial_slot_value(self, slot: str) -> float:
        """The value a new slot array starts from (0; Adagrad's accumulator may differ)."""
        return 0.0

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                learning_rate: float, grad_scale: float, clip_value: float,
                num_threads: int) -> None:
        """One fused kernel call: the update with ``learning_rate``, reading the gradient as
        ``clamp(grads * grad_scale, -clip_value, clip_value)`` (``self.iterations`` is already
        the 1-based number of this step)."""
        raise NotImplementedError

    def _base_config(self) -> dict[str, Any]:
        return {"learning_rate": schedules_mod.to_config(self._learning_rate),
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue}

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (saved with the model; a schedule as its
        ``{"class", "config"}`` dict)."""
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
    ``p <- p - lr * (g + momentum * v)``), as ``torch.optim.SGD`` (dampening 0).

    Parameters
    ----------
    learning_rate : float or Schedule, default=0.01
        ``> 0``, or a schedule of the step (see :class:`Optimizer`).
    momentum : float, default=0.0
        In ``[0, 1)``.
    nesterov : bool, default=False
        Requires ``momentum > 0``.
    weight_decay : float, default=0.0
        ``>= 0``.
    clipnorm : float, optional
        Global-norm gradient clipping (see :class:`Optimizer`).
    clipvalue : float, optional
        Elementwise gradient clipping (see :class:`Optimizer`).

    Shape
    -----
    Any parameters, float32 or float64 (one dtype per model); slot ``velocity`` (with momentum)
    of each parameter's shape.

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.
    TypeError
        A parameter of the wrong type.

    References
    ----------
    Sutskever et al., "On the importance of initialization and momentum in deep learning",
    ICML 2013.
    """

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 clipnorm: float | None = None, clipvalue: float | None = None) -> None:
        super().__init__(learning_rate, clipnorm, clipvalue)
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
                learning_rate: float, grad_scale: float, clip_value: float,
                num_threads: int) -> None:
        v = slots.get("velocity", params)  # unused without momentum
        _optim.sgd_update(params, grads, v, learning_rate, self.momentum, self.nesterov,
                          self.weight_decay, num_threads, grad_scale, clip_value)

    def get_config(self) -> dict[str, Any]:
        return {**self._base_config(), "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam: ``g = grad + weight_decay * p; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)`` at step ``t = 1, 2, ...``, as ``torch.optim.Adam``.

    Parameters
    ----------
    learning_rate : float or Schedule, default=0.001
        ``> 0``, or a schedule of the step (see :class:`Optimizer`).
    beta1 : float, default=0.9
        In ``[0, 1)``.
    beta2 : float, default=0.999
        In ``[0, 1)``.
    eps : float, default=1e-8
        ``> 0``.
    weight_decay : float, default=0.0
        L2 added to the gradient (torch.optim.Adam's ``weight_decay``); see :class:`AdamW` for
        the decoupled decay.
    clipnorm : float, optional
        Global-norm gradient clipping (see :class:`Optimizer`).
    clipvalue : float, optional
        Elementwise gradient clipping (see :class:`Optimizer`).

    Shape
    -----
    Any parameters, float32 or float64; slots ``m`` and ``v`` of each parameter's shape.

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.
    TypeError
        A parameter of the wrong type.

    References
    ----------
    Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 1.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 clipnorm: float | None = None, clipvalue: float | None = None) -> None:
        super().__init__(learning_rate, clipnorm, clipvalue)
        self.beta1 = V.check_float(beta1, "beta1", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.beta2 = V.check_float(beta2, "beta2", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.eps = V.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    slots = ("m", "v")

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                learning_rate: float, grad_scale: float, clip_value: float,
                num_threads: int) -> None:
        _optim.adam_update(params, grads, slots["m"], slots["v"], learning_rate,
                           self.beta1, self.beta2, self.eps, self.weight_decay, self.iterations,
                           num_threads, grad_scale, clip_value)

    def get_config(self) -> dict[str, Any]:
        return {**self._base_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: at step ``t``,
    ``p <- p * (1 - lr * weight_decay)``, then the Adam step of :class:`Adam` with the gradient
    alone (no L2 term). Every parameter is decayed, biases included (as PyTorch with one
    parameter group).

    Parameters
    ----------
    learning_rate : float or Schedule, default=0.001
        ``> 0``, or a schedule of the step (the decay uses the same step's rate).
    beta1 : float, default=0.9
        In ``[0, 1)``.
    beta2 : float, default=0.999
        In ``[0, 1)``.
    eps : float, default=1e-8
        ``> 0``.
    weight_decay : float, default=0.01
        ``>= 0`` (PyTorch's default).
    clipnorm : float, optional
        Global-norm gradient clipping (see :class:`Optimizer`).
    clipvalue : float, optional
        Elementwise gradient clipping (see :class:`Optimizer`).

    Shape
    -----
    Any parameters, float32 or float64; slots ``m`` and ``v`` of each parameter's shape.

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.
    TypeError
        A parameter of the wrong type.

    References
    ----------
    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, Algorithm 2.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01,
                 clipnorm: float | None = None, clipvalue: float | None = None) -> None:
        super().__init__(learning_rate, beta1, beta2, eps, weight_decay, clipnorm, clipvalue)

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                learning_rate: float, grad_scale: float, clip_value: float,
                num_threads: int) -> None:
        _optim.adamw_update(params, grads, slots["m"], slots["v"], learning_rate,
                            self.beta1, self.beta2, self.eps, self.weight_decay, self.iterations,
                            num_threads, grad_scale, clip_value)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop`` (``rho`` is its ``alpha``; eps outside the root):

    ``g = grad + weight_decay * p; s <- rho s + (1 - rho) g^2``; centered:
    ``a <- rho a + (1 - rho) g``, ``d = sqrt(s - a^2) + eps``, else ``d = sqrt(s) + eps``;
    with momentum ``b <- momentum * b + g / d; p <- p - lr * b``, else ``p <- p - lr * g / d``.
    (``s - a^2 >= 0`` in exact arithmetic; a negative rounding residue is taken as 0.)

    Parameters
    ----------
    learning_rate : float or Schedule, default=0.01
        ``> 0``, or a schedule of the step (see :class:`Optimizer`).
    rho : float, default=0.99
        Decay of the moving averages, in ``[0, 1)``.
    eps : float, default=1e-8
        ``> 0``.
    momentum : float, default=0.0
        In ``[0, 1)``.
    centered : bool, default=False
        Normalise by the estimated variance of the gradient (Graves 2013) instead of its
        uncentered second moment.
    weight_decay : float, default=0.0
        L2 added to the gradient, ``>= 0``.
    clipnorm : float, optional
        Global-norm gradient clipping (see :class:`Optimizer`).
    clipvalue : float, optional
        Elementwise gradient clipping (see :class:`Optimizer`).

    Shape
    -----
    Any parameters, float32 or float64; slots ``square_avg``, ``grad_avg`` (centered) and
    ``momentum_buffer`` (momentum > 0) of each parameter's shape (PyTorch's state names).

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.
    TypeError
        A parameter of the wrong type.

    References
    ----------
    Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
    Learning, 2012; Graves, "Generating Sequences With Recurrent Neural Networks", 2013
    (centered).
    """

    slots = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, learning_rate: LearningRate = 0.01, rho: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0,
                 clipnorm: float | None = None, clipvalue: float | None = None) -> None:
        super().__init__(learning_rate, clipnorm, clipvalue)
        self.rho = V.check_float(rho, "rho", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.eps = V.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
        self.momentum = V.check_float(momentum, "momentum", minimum=0.0, maximum=1.0,
                                      max_inclusive=False)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be a bool, got {type(centered).__name__} "
                            f"{centered!r}")
        self.centered = bool(centered)
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)

    def active_slots(self) -> tuple[str, ...]:
        return ("square_avg",) + (("grad_avg",) if self.centered else ()) \
            + (("momentum_buffer",) if self.momentum > 0 else ())

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                learning_rate: float, grad_scale: float, clip_value: float,
                num_threads: int) -> None:
        _optim.rmsprop_update(params, grads, slots["square_avg"],
                              slots.get("grad_avg", params),  # unused unless centered
                              slots.get("momentum_buffer", params),  # unused without momentum
                              learning_rate, self.rho, self.eps, self.weight_decay,
                              self.momentum, self.centered, num_threads, grad_scale, clip_value)

    def get_config(self) -> dict[str, Any]:
        return {**self._base_config(), "rho": self.rho, "eps": self.eps,
                "momentum": self.momentum, "centered": self.centered,
                "weight_decay": self.weight_decay}


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``: at step ``t = 1, 2, ...``,
    ``clr = lr / (1 + (t - 1) * lr_decay); g = grad + weight_decay * p; s <- s + g^2;
    p <- p - clr * g / (sqrt(s) + eps)``, ``s`` starting at ``initial_accumulator_value``.

    Parameters
    ----------
    learning_rate : float or Schedule, default=0.01
        ``> 0``, or a schedule of the step (``lr`` above: ``lr_decay`` applies on top of it).
    eps : float, default=1e-10
        ``> 0``.
    initial_accumulator_value : float, default=0.0
        ``>= 0``.
    weight_decay : float, default=0.0
        L2 added to the gradient, ``>= 0``.
    lr_decay : float, default=0.0
        ``>= 0``.
    clipnorm : float, optional
        Global-norm gradient clipping (see :class:`Optimizer`).
    clipvalue : float, optional
        Elementwise gradient clipping (see :class:`Optimizer`).

    Shape
    -----
    Any parameters, float32 or float64; slot ``sum`` (PyTorch's name) of each parameter's
    shape.

    Raises
    ------
    ValueError
        A parameter out of range, NaN or inf.
    TypeError
        A parameter of the wrong type.

    References
    ----------
    Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 12, 2011.
    """

    slots = ("sum",)

    def __init__(self, learning_rate: LearningRate = 0.01, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0, weight_decay: float = 0.0,
                 lr_decay: float = 0.0, clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        super().__init__(learning_rate, clipnorm, clipvalue)
        self.eps = V.check_float(eps, "eps", minimum=0.0, min_inclusive=False)
        self.initial_accumulator_value = V.check_float(
            initial_accumulator_value, "initial_accumulator_value", minimum=0.0)
        self.weight_decay = V.check_float(weight_decay, "weight_decay", minimum=0.0)
        self.lr_decay = V.check_float(lr_decay, "lr_decay", minimum=0.0)

    def initial_slot_value(self, slot: str) -> float:
        return self.initial_accumulator_value

    def _update(self, params: np.ndarray, grads: np.ndarray, slots: dict[str, np.ndarray],
                learning_rate: float, grad_scale: float, clip_value: float,
                num_threads: int) -> None:
        _optim.adagrad_update(params, grads, slots["sum"], learning_rate, self.eps,
                              self.weight_decay, self.lr_decay, self.iterations, num_threads,
                              grad_scale, clip_value)

    def get_config(self) -> dict[str, Any]:
        return {**self._base_config(), "eps": self.eps,
                "initial_accumulator_value": self.initial_accumulator_value,
                "weight_decay": self.weight_decay, "lr_decay": self.lr_decay}


def get(optimizer: Any) -> Optimizer:
    """An Optimizer from an instance or a registered name (``"sgd"``, ``"adam"``, ``"adamw"``,
    ``"rmsprop"``, ``"adagrad"``, any case, with default settings).

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
