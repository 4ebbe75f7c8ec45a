"""Training callbacks (Keras conventions): History, EarlyStopping, TerminateOnNaN,
ModelCheckpoint, LearningRateScheduler."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import Sequential

#: the ``logs`` dicts passed to the hooks: metric name -> value
Logs = dict[str, Any]


class Callback:
    """Base class: hooks called by ``Sequential.fit``. ``self.model`` is set by fit, and
    ``self.params`` (as Keras' ``Callback.params``): ``{"epochs", "batch_size", "verbose",
    "metrics"}``, ``metrics`` being the keys every epoch's logs will hold."""

    model: Sequential | None = None
    params: dict[str, Any] = {}

    def _check_monitor(self, monitor: str) -> None:
        """ValueError before training if fit will never log ``monitor``."""
        metrics = self.params.get("metrics")
        if metrics is not None and monitor not in metrics:
            hint = (" (val_ metrics need validation_data in fit)"
                    if monitor.startswith("val_") else "")
            raise ValueError(f"{type(self).__name__} monitors {monitor!r}, which fit will not "
                             f"log: the epoch logs hold {list(metrics)}{hint}")

    def on_train_begin(self, logs: Logs | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        pass

    def on_train_end(self, logs: Logs | None = None) -> None:
        pass


class History(Callback):
    """What ``fit`` returns: ``history[key]`` is a list with one value per epoch (keys ``loss``,
    ``accuracy`` where the loss has it, ``val_loss``, ``val_accuracy``, ``seconds``)."""

    def __init__(self) -> None:
        self.history: dict[str, list[Any]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default="val_loss"
        A key of the epoch logs. Names containing "acc" are maximised, others minimised.
    min_delta : float, default=0.0
    patience : int, default=0
    restore_best_weights : bool, default=False
        Put back the weights of the best epoch when training stops.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 restore_best_weights: bool = False) -> None:
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.mode_max = "acc" in monitor

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._check_monitor(self.monitor)
        self.best = -np.inf if self.mode_max else np.inf
        self.wait = 0
        self.best_weights: list[dict[str, np.ndarray]] | None = None
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which is not in the epoch "
                           f"logs {sorted(logs or {})}")
        better = (value > self.best + self.min_delta) if self.mode_max \
            else (value < self.best - self.min_delta)
        if better:
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                assert self.model is not None  # set by fit
                self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                assert self.model is not None  # set by fit
                self.model.stop_training = True
                self.stopped_epoch = epoch
                if self.restore_best_weights and self.best_weights is not None:
                    self.model.set_weights(self.best_weights)


class TerminateOnNaN(Callback):
    """Stop training when a batch loss is NaN or inf (``fit`` also checks this by default)."""

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            assert self.model is not None  # set by fit
            self.model.stop_training = True


class ModelCheckpoint(Callback):
    """Save the model (weights and optimizer state) at the end of every epoch, atomically.

    Parameters
    ----------
    path : str or path-like
        File to write; may contain ``{epoch}`` (1-based), formatted per epoch.
    monitor : str, default="val_loss"
        Used with ``save_best_only``; names containing "acc" are maximised.
    save_best_only : bool, default=False
        Only save when ``monitor`` improved.

    Notes
    -----
    The file stores the number of completed epochs (``fastnn.load(path).epochs_completed``), so
    ``fit(..., initial_epoch=model.epochs_completed)`` resumes where it stopped.
    """

    def __init__(self, path: str | os.PathLike[str], monitor: str = "val_loss",
                 save_best_only: bool = False) -> None:
        self.path = path
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode_max = "acc" in monitor
        self.best: float | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self.save_best_only:
            self._check_monitor(self.monitor)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise KeyError(f"ModelCheckpoint monitors {self.monitor!r}, which is not in the "
                               f"epoch logs {sorted(logs)}")
            if self.best is not None and not (value > self.best if self.mode_max
                                              else value < self.best):
                return
            self.best = value
        assert self.model is not None  # set by fit
        self.model.epochs_completed = epoch + 1
        self.model.save(str(self.path).format(epoch=epoch + 1))


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate from a schedule at the end of each epoch, for the next
    one: after epoch ``e`` (0-based) it is ``schedule(e + 1)``; epoch 0 uses the optimizer's own
    rate (Keras' ``LearningRateScheduler``, which sets it at each epoch's start).

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch) -> float``, e.g. :class:`fastnn.schedules.CosineDecay`.

    Raises
    ------
    TypeError
        If ``schedule`` is not callable.
    """

    def __init__(self, schedule: Callable[[int], float]) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.model is not None and self.model.optimizer is not None  # set by fit
        self.model.optimizer.learning_rate = float(self.schedule(epoch + 1))
