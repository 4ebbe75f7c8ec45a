"""Learning-rate schedules: ``schedule(step) -> learning rate``.

A schedule is a function of a 0-based counter. Passed as an optimizer's ``learning_rate`` (Keras'
convention) it is counted in optimizer steps: the update that follows ``t`` earlier updates
(``optimizer.iterations == t``) uses ``schedule(t)``, so the first one uses ``schedule(0)``. Given
to the :class:`~fastnn.callbacks.LearningRateScheduler` callback it is counted in epochs instead.

Every :class:`Schedule` subclass registers itself in :data:`SCHEDULES` under its class name when it
is defined (names as in Keras' ``keras.optimizers.schedules``), and serialises to JSON as
``{"class": name, "config": get_config()}`` (:func:`serialize`, :func:`deserialize`), which is how
a model file stores an optimizer's scheduled learning rate.
"""
from __future__ import annotations

import math
from typing import Any

from . import _validation as V
from ._registry import Registry, auto_register

#: name -> schedule class
SCHEDULES: Registry[Schedule] = Registry("schedule")


class Schedule:
    """Base class: ``__call__(step)`` gives the learning rate of the 0-based ``step``;
    ``get_config()`` the constructor arguments (JSON-serialisable; ``cls(**config)`` rebuilds it).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(SCHEDULES, cls)

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


#: what ``learning_rate=`` accepts: a number, a schedule, or a schedule's serialised form
LearningRate = float | Schedule | dict


def _check_step(step: Any) -> int:
    return V.check_int(step, "step", minimum=0)


def serialize(schedule: Schedule) -> dict[str, Any]:
    """``{"class": <registered name>, "config": schedule.get_config()}`` (JSON-serialisable).

    Raises
    ------
    TypeError
        If ``schedule`` is not a :class:`Schedule`.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"expected a fastnn.schedules.Schedule, got {type(schedule).__name__}")
    return {"class": SCHEDULES.name_of(type(schedule)), "config": schedule.get_config()}


def deserialize(entry: Any) -> Schedule:
    """The schedule a :func:`serialize` dict describes.

    Raises
    ------
    ValueError
        Unknown class name, a malformed entry or an invalid config.
    """
    if not isinstance(entry, dict) or set(entry) - {"class", "config"} or "class" not in entry:
        raise ValueError(f"a schedule entry must be {{'class': name, 'config': {{...}}}}, got "
                         f"{entry!r}")
    cls = SCHEDULES.get_class(entry["class"])
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"schedule config must be a mapping, got {config!r}")
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"invalid config for schedule {entry['class']!r}: {exc}") from None


def get(value: Any, name: str = "learning_rate") -> float | Schedule:
    """A learning rate as optimizers store it: a float ``> 0`` or a :class:`Schedule` (a
    :func:`serialize` dict is rebuilt).

    Raises
    ------
    TypeError
        If ``value`` is none of these.
    ValueError
        A number that is not finite and ``> 0``, or an invalid schedule entry.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        return deserialize(value)
    try:
        return V.check_float(value, name, minimum=0.0, min_inclusive=False)
    except TypeError:
        raise TypeError(f"{name} must be a positive number or a fastnn.schedules.Schedule, got "
                        f"{type(value).__name__} {value!r}") from None


def to_config(value: float | Schedule) -> float | dict[str, Any]:
    """What ``get_config`` stores for a learning rate: the float, or :func:`serialize`'s dict."""
    return serialize(value) if isinstance(value, Schedule) else value


class Constant(Schedule):
    """The same learning rate at every step.

    Parameters
    ----------
    learning_rate : float
        ``> 0``.

    Raises
    ------
    ValueError
        If ``learning_rate <= 0``, NaN or inf.
    TypeError
        If it is not a real number.
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = V.check_float(learning_rate, "learning_rate", minimum=0.0,
                                           min_inclusive=False)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.learning_rate

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


class CosineDecay(Schedule):
    """Half-cosine decay (Keras' ``CosineDecay`` formula, without warm-up):
    ``lr(t) = initial_learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * min(t,
    decay_steps) / decay_steps)))``.

    ``lr(0)`` is the initial rate; ``lr(t) = alpha * initial_learning_rate`` for
    ``t >= decay_steps``. ``t`` counts whatever calls the schedule: optimizer steps as an
    optimizer's ``learning_rate``, epochs in :class:`~fastnn.callbacks.LearningRateScheduler`.

    Parameters
    ----------
    initial_learning_rate : float
        ``> 0``.
    decay_steps : int
        Steps over which to decay, ``>= 1``.
    alpha : float, default=0.0
        Final rate as a fraction of the initial one, in ``[0, 1]``.

    Raises
    ------
    ValueError, TypeError
        An argument out of range or of the wrong type.

    References
    ----------
    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017;
    ``keras.optimizers.schedules.CosineDecay``.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 alpha: float = 0.0) -> None:
        self.initial_learning_rate = V.check_float(initial_learning_rate, "initial_learning_rate",
                                                   minimum=0.0, min_inclusive=False)
        self.decay_steps = V.check_int(decay_steps, "decay_steps", minimum=1)
        self.alpha = V.check_float(alpha, "alpha", minimum=0.0, maximum=1.0)

    def __call__(self, step: int) -> float:
        t = min(_check_step(step), self.decay_steps) / self.decay_steps
        return self.initial_learning_rate * (
            self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + math.cos(math.pi * t)))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha}


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps (PyTorch's ``StepLR``):
    ``lr(t) = initial_learning_rate * gamma ** (t // step_size)``.

    Parameters
    ----------
    initial_learning_rate : float
        ``> 0``.
    step_size : int
        Steps between decays, ``>= 1``.
    gamma : float, default=0.1
        Factor per decay, ``> 0``.

    Raises
    ------
    ValueError, TypeError
        An argument out of range or of the wrong type.

    References
    ----------
    ``torch.optim.lr_scheduler.StepLR``.
    """

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1) -> None:
        self.initial_learning_rate = V.check_float(initial_learning_rate, "initial_learning_rate",
                                                   minimum=0.0, min_inclusive=False)
        self.step_size = V.check_int(step_size, "step_size", minimum=1)
        self.gamma = V.check_float(gamma, "gamma", minimum=0.0, min_inclusive=False)

    def __call__(self, step: int) -> float:
        return float(self.initial_learning_rate
                     * self.gamma ** (_check_step(step) // self.step_size))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """Smooth exponential decay (Keras' ``ExponentialDecay`` with ``staircase=False``):
    ``lr(t) = initial_learning_rate * decay_rate ** (t / decay_steps)``.

    Parameters
    ----------
    initial_learning_rate : float
        ``> 0``.
    decay_steps : int
        Steps over which the rate is multiplied by ``decay_rate``, ``>= 1``.
    decay_rate : float
        ``> 0`` (``< 1`` decays).

    Raises
    ------
    ValueError, TypeError
        An argument out of range or of the wrong type.

    References
    ----------
    ``keras.optimizers.schedules.ExponentialDecay``.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 decay_rate: float) -> None:
        self.initial_learning_rate = V.check_float(initial_learning_rate, "initial_learning_rate",
                                                   minimum=0.0, min_inclusive=False)
        self.decay_steps = V.check_int(decay_steps, "decay_steps", minimum=1)
        self.decay_rate = V.check_float(decay_rate, "decay_rate", minimum=0.0,
                                        min_inclusive=False)

    def __call__(self, step: int) -> float:
        return float(self.initial_learning_rate
                     * self.decay_rate ** (_check_step(step) / self.decay_steps))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}


class LinearWarmup(Schedule):
    """Linear warm-up, then another schedule (or a constant rate), which starts counting its own
    steps when the warm-up ends:

    - ``lr(t) = s(0) * (start_factor + (1 - start_factor) * t / warmup_steps)`` for
      ``t < warmup_steps``,
    - ``lr(t) = s(t - warmup_steps)`` afterwards,

    ``s`` being ``schedule`` (a number is a constant rate). This is PyTorch's
    ``SequentialLR([LinearLR(start_factor, end_factor=1, total_iters=warmup_steps), s],
    milestones=[warmup_steps])``, and Keras' ``CosineDecay(warmup_steps=...)`` ramp (which also
    decays after the warm-up) from ``start_factor * s(0)`` to ``s(0)``. The rate is continuous at
    ``t = warmup_steps``.

    Parameters
    ----------
    schedule : float or Schedule
        The rate after the warm-up; a :func:`serialize` dict is accepted (loading).
    warmup_steps : int
        ``>= 1``.
    start_factor : float, default=0.0
        The first step's rate as a fraction of ``s(0)``, in ``[0, 1]`` (with 0 the first update
        has rate 0).

    Raises
    ------
    ValueError, TypeError
        An argument out of range or of the wrong type.

    References
    ----------
    Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (gradual
    warm-up); ``torch.optim.lr_scheduler.LinearLR``.
    """

    def __init__(self, schedule: LearningRate, warmup_steps: int,
                 start_factor: float = 0.0) -> None:
        self.schedule = get(schedule, "schedule")
        self.warmup_steps = V.check_int(warmup_steps, "warmup_steps", minimum=1)
        self.start_factor = V.check_float(start_factor, "start_factor", minimum=0.0, maximum=1.0)

    def _after(self, step: int) -> float:
        s = self.schedule
        return float(s(step)) if isinstance(s, Schedule) else s

    def __call__(self, step: int) -> float:
        t = _check_step(step)
        if t >= self.warmup_steps:
            return self._after(t - self.warmup_steps)
        return self._after(0) * (self.start_factor
                                 + (1.0 - self.start_factor) * t / self.warmup_steps)

    def get_config(self) -> dict[str, Any]:
        return {"schedule": to_config(self.schedule), "warmup_steps": self.warmup_steps,
                "start_factor": self.start_factor}
