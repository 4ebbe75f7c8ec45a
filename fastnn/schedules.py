"""Learning-rate schedules: ``schedule(epoch) -> learning rate``, applied by the
:class:`~fastnn.callbacks.LearningRateScheduler` callback.

Every :class:`Schedule` subclass registers itself in :data:`SCHEDULES` under its class name when it
is defined (names as in Keras' ``keras.optimizers.schedules``).
"""
from __future__ import annotations

import math
from typing import Any

from . import _validation as V
from ._registry import Registry, auto_register

#: name -> schedule class
SCHEDULES: Registry[Schedule] = Registry("schedule")


class Schedule:
    """Base class: ``__call__(epoch)`` gives the learning rate of the 0-based ``epoch``;
    ``get_config()`` the constructor arguments."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        auto_register(SCHEDULES, cls)

    def __call__(self, epoch: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}


class Constant(Schedule):
    """The same learning rate every epoch.

    Parameters
    ----------
    learning_rate : float
        ``> 0``.

    Raises
    ------
    ValueError
        If ``learning_rate <= 0``, NaN or inf.
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = V.check_float(learning_rate, "learning_rate", minimum=0.0,
                                           min_inclusive=False)

    def __call__(self, epoch: int) -> float:
        return self.learning_rate

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


class CosineDecay(Schedule):
    """Half-cosine decay, Keras' ``CosineDecay`` formula counted in epochs:
    ``lr(e) = initial_learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + cos(pi * min(e, decay_steps)
    / decay_steps)))``.

    ``lr(0)`` is the initial rate; ``lr(decay_steps) = alpha * initial_learning_rate``, so with
    ``decay_steps = epochs`` the last epoch trains just above the final rate.

    Parameters
    ----------
    initial_learning_rate : float
        ``> 0``.
    decay_steps : int
        Epochs over which to decay, ``>= 1``.
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

    def __call__(self, epoch: int) -> float:
        t = min(epoch, self.decay_steps) / self.decay_steps
        return self.initial_learning_rate * (
            self.alpha + (1.0 - self.alpha) * 0.5 * (1.0 + math.cos(math.pi * t)))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha}
