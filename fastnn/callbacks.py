"""Training callbacks (Keras conventions): History, EarlyStopping, TerminateOnNaN,
ModelCheckpoint, CSVLogger, LearningRateScheduler."""
from __future__ import annotations

import csv
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


def _resolve_mode(mode: str, monitor: str, owner: str) -> bool:
    """True when ``monitor`` is to be maximised: ``mode="max"``, or ``"auto"`` with a name that
    contains "acc" (Keras' rule)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode == "max" or (mode == "auto" and "acc" in monitor)


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

    def plot(self, path: str | os.PathLike[str], metrics: list[str] | None = None) -> None:
        """Write a PNG of the learning curves: one panel per metric (``loss``, ``accuracy``,
        ...), its ``val_`` curve in the same panel, against the epoch (1-based).

        Parameters
        ----------
        path : str or path-like
            The PNG file to write.
        metrics : list of str, optional
            Which curves (without ``val_``); default every logged one except ``seconds`` and
            ``lr``.

        Raises
        ------
        ImportError
            Without matplotlib (``pip install fastnn[plot]``).
        ValueError
            If nothing was recorded, or a requested metric was not.
        """
        try:
            import matplotlib
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install fastnn[plot]") from None
        if not self.epoch:
            raise ValueError("History.plot: no epoch was recorded")
        names = metrics or [k for k in self.history
                            if not k.startswith("val_") and k not in ("seconds", "lr")]
        for k in names:
            if k not in self.history and f"val_{k}" not in self.history:
                raise ValueError(f"History.plot: {k!r} was not recorded; recorded: "
                                 f"{sorted(self.history)}")
        matplotlib.use("Agg", force=False)  # a file, no window (keeps a backend already chosen)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5 * len(names), 3.5), layout="constrained")
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        x = [e + 1 for e in self.epoch]
        for ax, k in zip(axes, names):
            for key, label in ((k, "train"), (f"val_{k}", "validation")):
                if key in self.history:
                    ax.plot(x, self.history[key], marker="o", markersize=3, label=label)
            ax.set_xlabel("epoch")
            ax.set_title(k)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.savefig(os.fspath(path), dpi=100)


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default="val_loss"
        A key of the epoch logs (``fit`` checks before the first epoch that it will be logged).
    mode : {"auto", "min", "max"}, default="auto"
        Whether ``monitor`` improves by going down or up; "auto" maximises names containing
        "acc" and minimises the others (Keras).
    min_delta : float, default=0.0
        The smallest change counted as an improvement.
    patience : int, default=0
        Epochs without improvement before stopping.
    restore_best_weights : bool, default=False
        Put back the weights of the best epoch when it stops training (as Keras: not when
        training runs to its last epoch).

    Raises
    ------
    ValueError
        A bad mode or negative patience; at the start of ``fit``, a monitor it will not log.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 restore_best_weights: bool = False, mode: str = "auto") -> None:
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        if int(patience) < 0:
            raise ValueError(f"patience must be >= 0, got {patience!r}")
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.mode = mode
        self.mode_max = _resolve_mode(mode, monitor, "EarlyStopping")

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
                self._restore()

    def _restore(self) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            assert self.model is not None  # set by fit
            self.model.set_weights(self.best_weights)
            self.best_weights = None


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
        Used with ``save_best_only``.
    save_best_only : bool, default=False
        Only save when ``monitor`` improved.
    mode : {"auto", "min", "max"}, default="auto"
        As :class:`EarlyStopping`.

    Notes
    -----
    The file stores the number of completed epochs (``fastnn.load(path).epochs_completed``), so
    ``fit(..., initial_epoch=model.epochs_completed)`` resumes where it stopped.
    """

    def __init__(self, path: str | os.PathLike[str], monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto") -> None:
        self.path = path
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode_max = _resolve_mode(mode, monitor, "ModelCheckpoint")
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


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (Keras' ``CSVLogger``): a header ``epoch`` and the
    epoch logs' keys (``loss``, metrics, ``val_`` metrics, ``seconds``), then one row per epoch
    (``epoch`` 0-based, as Keras), flushed as it is written.

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    separator : str, default=","
    append : bool, default=False
        Append to an existing file (no second header) instead of overwriting it; for resumed
        runs.

    Raises
    ------
    OSError
        If the file cannot be opened (at the start of ``fit``).
    """

    def __init__(self, path: str | os.PathLike[str], separator: str = ",",
                 append: bool = False) -> None:
        self.path = path
        self.separator = separator
        self.append = bool(append)
        self._file: Any = None
        self._writer: Any = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")
        self._keys = None
        if exists:  # continue under the existing header
            with open(self.path, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header else None
        self._writer = csv.writer(self._file, delimiter=self.separator)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self._keys is None:
            self._keys = list(logs)
            self._writer.writerow(["epoch"] + self._keys)
        self._writer.writerow([epoch] + [logs.get(k, "") for k in self._keys])
        self._file.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate from a schedule at the end of each epoch, for the next
    one: after epoch ``e`` (0-based) it is ``schedule(e + 1)``; epoch 0 uses the optimizer's own
    rate (Keras' ``LearningRateScheduler``, which sets it at each epoch's start).

    For a rate that changes every step, give the optimizer a schedule as its ``learning_rate``
    instead (``Adam(learning_rate=CosineDecay(1e-3, total_steps))``).

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch) -> float``, e.g. :class:`fastnn.schedules.CosineDecay` (counted in
        epochs here).

    Raises
    ------
    TypeError
        If ``schedule`` is not callable; at the start of ``fit``, if the optimizer's learning
        rate is itself a Schedule (as Keras: the two would fight over the rate).
    """

    def __init__(self, schedule: Callable[[int], float]) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule

    def on_train_begin(self, logs: Logs | None = None) -> None:
        _check_float_learning_rate(self)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.model is not None and self.model.optimizer is not None  # set by fit
        self.model.optimizer.learning_rate = float(self.schedule(epoch + 1))


def _check_float_learning_rate(callback: Callback) -> None:
    """TypeError if the model's optimizer has a Schedule as its learning rate."""
    from .schedules import Schedule

    optimizer = callback.model.optimizer if callback.model is not None else None
    if optimizer is not None and isinstance(optimizer.learning_rate, Schedule):
        raise TypeError(f"{type(callback).__name__} sets the optimizer's learning rate, but "
                        f"{type(optimizer).__name__} was given the schedule "
                        f"{optimizer.learning_rate!r} as its learning_rate; use one or the other")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs (Keras' ``ReduceLROnPlateau``).

    At the end of each epoch: during a cooldown the wait counter stays 0; an improvement (by
    more than ``min_delta``) resets it; otherwise, outside a cooldown, it counts up and on
    reaching ``patience`` the rate becomes ``max(lr * factor, min_lr)`` (if ``lr > min_lr``),
    the wait restarts and a cooldown of ``cooldown`` epochs begins.

    Parameters
    ----------
    monitor : str, default="val_loss"
        A key of the epoch logs (checked at the start of ``fit``).
    factor : float, default=0.1
        In ``(0, 1)``.
    patience : int, default=10
        Epochs without improvement before a reduction, ``>= 0``.
    mode : {"auto", "min", "max"}, default="auto"
        "auto" maximises names containing "acc", minimises the others.
    min_delta : float, default=1e-4
        The smallest change counted as an improvement, ``>= 0``.
    cooldown : int, default=0
        Epochs after a reduction during which no wait is counted, ``>= 0``.
    min_lr : float, default=0.0
        Lower bound of the rate, ``>= 0``.

    Attributes
    ----------
    best : float
        The best monitored value so far.
    wait, cooldown_counter : int
        As in Keras.

    Raises
    ------
    ValueError
        An argument out of range or a bad mode; at the start of ``fit``, a monitor that fit will
        not log.
    TypeError
        At the start of ``fit``, if the optimizer's learning rate is a Schedule (Keras too
        refuses to set a scheduled rate).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0,
                 min_lr: float = 0.0) -> None:
        from . import _validation as V

        self.monitor = monitor
        self.factor = V.check_float(factor, "factor", minimum=0.0, maximum=1.0,
                                    min_inclusive=False, max_inclusive=False)
        self.patience = V.check_int(patience, "patience", minimum=0)
        self.mode = mode
        self.mode_max = _resolve_mode(mode, monitor, "ReduceLROnPlateau")
        self.min_delta = V.check_float(min_delta, "min_delta", minimum=0.0)
        self.cooldown = V.check_int(cooldown, "cooldown", minimum=0)
        self.min_lr = V.check_float(min_lr, "min_lr", minimum=0.0)
        self._reset()

    def _reset(self) -> None:
        self.best = -np.inf if self.mode_max else np.inf
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._check_monitor(self.monitor)
        _check_float_learning_rate(self)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.model is not None and self.model.optimizer is not None  # set by fit
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"ReduceLROnPlateau monitors {self.monitor!r}, which is not in the "
                           f"epoch logs {sorted(logs or {})}")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        better = (value > self.best + self.min_delta) if self.mode_max \
            else (value < self.best - self.min_delta)
        if better:
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                optimizer = self.model.optimizer
                old = optimizer.learning_rate
                assert isinstance(old, float)  # not a Schedule: checked at train begin
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    if new > 0:
                        optimizer.learning_rate = new
                    self.cooldown_counter = self.cooldown
                    self.wait = 0
