"""Sequential: a stack of layers trained with fit / evaluate / predict (Keras conventions)."""
from __future__ import annotations

import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _config, _flat
from . import _validation as V
from . import io as io_mod
from . import losses as losses_mod
from . import optimizers as optimizers_mod
from ._registry import MODELS
from .callbacks import Callback, History
from .layers.base import LAYERS, Layer

if TYPE_CHECKING:
    from typing_extensions import Self

    from .losses import Loss
    from .optimizers import Optimizer


class _SigintFlag:
    """While active (in the main thread), Ctrl-C sets ``hit`` instead of raising, so ``fit`` stops
    between batches with a consistent model; a second Ctrl-C raises at once."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Sequential:
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer
        Applied in order. Each layer's parameters are created here, in ``dtype``, from ``seed``.
    dtype : {"float32", "float64"}, default="float32"
        The dtype of every parameter and computation. Inputs of another dtype (float64 data for a
        float32 model, or ints) are converted once per call of fit/evaluate/predict.
    seed : int or None, default=None
        Seed of the initialisers: the same seed and thread count give bit-identical weights and
        training runs (the kernels' reductions do not depend on the thread count).
    input_shape : tuple of int, optional
        Per-sample input shape, e.g. ``(28, 28, 1)``. When given (or known from a first Dense
        layer), the layers' shapes are checked against each other here, not at the first call.

    Raises
    ------
    TypeError
        If ``layers`` holds something that is not a Layer, or a bad dtype.
    ValueError
        If consecutive layers' shapes do not fit, or a layer already belongs to another model
        (a layer object holds one model's weights; build a new layer or ``copy.deepcopy`` it).

    Notes
    -----
    The model owns its parameters from construction: all of them live in one flat buffer and
    their gradients in another (``fastnn._flat``), and each ``layer.params[name]`` is a view of
    it that changes in place only, so the optimizer updates the whole model with one kernel
    call.

    Examples
    --------
    >>> from fastnn import Sequential, Dense, SoftmaxCrossEntropy, Adam
    >>> model = Sequential([Dense(784, 256, activation="relu"), Dense(256, 10)], seed=0)
    >>> model.compile(optimizer=Adam(1e-3), loss=SoftmaxCrossEntropy())
    """

    def __init__(self, layers: Iterable[Layer], dtype: DTypeLike = "float32",
                 seed: int | None = None, input_shape: Sequence[int] | None = None) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastnn Layer, got {type(layer).__name__}")
        for i, layer in enumerate(layers):
            group = getattr(layer, "_param_group", None)
            owner = group.owner() if group is not None and group.owner is not None else None
            if owner is not None:
                raise ValueError(f"layers[{i}] ({type(layer).__name__}) already belongs to "
                                 f"another model; a layer holds one model's weights (create a "
                                 f"new layer, or copy.deepcopy the layer)")
            if any(layer is other for other in layers[:i]):
                raise ValueError(f"layers[{i}] ({type(layer).__name__}) appears twice in layers")
        self.layers = layers
        self.dtype = V.check_dtype(dtype)
        self.seed = seed
        rng = np.random.default_rng(seed)
        for i, layer in enumerate(layers):
            layer.build(self.dtype, rng)
            layer.need_input_grad = i > 0
        self._own_parameters()
        if input_shape is None and hasattr(layers[0], "in_features"):
            input_shape = (layers[0].in_features,)
        self.input_shape: tuple[int, ...] | None = (tuple(input_shape) if input_shape is not None
                                                    else None)
        if self.input_shape is not None:
            self.output_shape(self.input_shape)
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.stop_training = False
        self.epochs_completed = 0
        self.history: History | None = None

    def _own_parameters(self) -> None:
        """Pack every parameter into the model's flat buffers (values kept)."""
        self._params = _flat.ParamGroup(self.layers)
        self._params.owner = weakref.ref(self)

    def __getstate__(self) -> dict[str, Any]:  # the flat buffers are rebuilt from the copied values
        state = self.__dict__.copy()
        state.pop("_params", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._own_parameters()

    # -- shapes and configuration -------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The model's structure as JSON-serialisable data: ``{"layers": [{"class", "config"}],
        "dtype", "input_shape", "seed"}`` (no weights; see :meth:`from_config`)."""
        return {"layers": [{"class": LAYERS.name_of(type(layer)), "config": layer.get_config()}
                           for layer in self.layers],
                "dtype": str(self.dtype),
                "input_shape": list(self.input_shape) if self.input_shape is not None else None,
                "seed": self.seed if isinstance(self.seed, int) else None}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """A new model (fresh weights) from :meth:`get_config`'s data; layer classes are looked up
        in ``fastnn.layers.LAYERS``.

        Raises
        ------
        ValueError
            An unknown layer class, an invalid layer config, or no layers.
        TypeError, KeyError
            A malformed config.
        """
        layers = []
        for i, entry in enumerate(config.get("layers") or []):
            if not isinstance(entry, dict):
                raise ValueError(f"layer {i} is not a {{class, config}} entry: {entry!r}")
            layer_cls = LAYERS.get_class(entry.get("class"))
            try:
                layers.append(layer_cls(**(entry.get("config") or {})))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"layer {i} config is invalid ({exc})") from None
        if not layers:
            raise ValueError("no layers")
        dtype = config.get("dtype", "float32")
        if not isinstance(dtype, str):
            raise ValueError(f"dtype must be a string, got {dtype!r}")
        model = cls(layers, dtype=dtype, input_shape=config.get("input_shape"))
        if isinstance(config.get("seed"), int):
            model.seed = config["seed"]
        return model

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape.

        Raises
        ------
        ValueError
            Naming the first layer whose input does not fit.
        """
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {exc}") from None
        return shape

    def compile(self, optimizer: Optimizer | str = "sgd",
                loss: Loss | type[Loss] | str = "softmax_cross_entropy") -> Self:
        """Set the optimizer and the loss (instances or names, see fastnn.optimizers/losses)."""
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        return self

    def _require_compiled(self) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError("call model.compile(optimizer, loss) before training")

    def count_params(self) -> int:
        return int(sum(p.size for layer in self.layers for p in layer.params.values()))

    def summary(self, input_shape: Sequence[int] | None = None) -> str:
        """A printable table of layers, output shapes and parameter counts."""
        shape = input_shape or self.input_shape
        lines = [f"{'layer':32s} {'output':18s} {'params':>10s}"]
        for layer in self.layers:
            if shape is not None:
                shape = layer.output_shape(shape)
            n = sum(p.size for p in layer.params.values())
            lines.append(f"{repr(layer)[:32]:32s} {str(shape):18s} {n:10d}")
        lines.append(f"total params: {self.count_params()}  dtype: {self.dtype}")
        return "\n".join(lines)

    def get_weights(self) -> list[dict[str, np.ndarray]]:
        """A list (per layer) of dicts of copies of the parameters."""
        return [{k: v.copy() for k, v in layer.params.items()} for layer in self.layers]

    def set_weights(self, weights: Sequence[Mapping[str, ArrayLike]]) -> None:
        """Copy weights (as returned by get_weights) into the layers.

        Raises
        ------
        ValueError
            If the structure or a shape differs.
        """
        if len(weights) != len(self.layers):
            raise ValueError(f"expected weights for {len(self.layers)} layers, got {len(weights)}")
        for i, (layer, w) in enumerate(zip(self.layers, weights)):
            if set(w) != set(layer.params):
                raise ValueError(f"layer {i}: expected parameters {sorted(layer.params)}, got "
                                 f"{sorted(w)}")
            for k, v in w.items():
                if np.shape(v) != layer.params[k].shape:
                    raise ValueError(f"layer {i} {k}: expected shape {layer.params[k].shape}, got "
                                     f"{np.shape(v)}")
                np.copyto(layer.params[k], v, casting="same_kind")

    # -- input checks -------------------------------------------------------------------------
    def _check_X(self, X: ArrayLike, name: str = "X",
                 check_finite: bool = True) -> tuple[np.ndarray, tuple[int, ...]]:
        if self.input_shape is not None:
            X = V.as_float_array(X, name, self.dtype, ndim=len(self.input_shape) + 1,
                                 trailing_shape=self.input_shape, check_finite=check_finite)
        else:
            X = V.as_float_array(X, name, self.dtype, check_finite=check_finite)
            if X.ndim < 2:
                raise ValueError(f"{name} must be batch-first with at least 2 dimensions, got "
                                 f"shape {X.shape}")
        try:
            out = self.output_shape(X.shape[1:])
        except ValueError as exc:
            raise ValueError(f"{name} of shape {X.shape} does not fit the model: {exc}") from None
        return X, out

    def _prepare_y(self, y: ArrayLike, n: int, out_shape: Sequence[int]) -> np.ndarray:
        if len(out_shape) != 1:
            raise ValueError(f"the loss needs a 2-D output (N, K); the model outputs (N, "
                             f"{', '.join(map(str, out_shape))})")
        if not hasattr(y, "__len__"):
            raise TypeError(f"y must be an array, got {type(y).__name__}")
        assert self.loss is not None  # callers check that the model is compiled
        return self.loss.prepare_target(y, (n,) + tuple(out_shape))

    # -- computation --------------------------------------------------------------------------
    def _forward(self, X: np.ndarray, training: bool) -> np.ndarray:
        out = X
        for layer in self.layers:
            out = layer.forward(out, training=training)
        return out

    def forward(self, X: ArrayLike, training: bool = False) -> np.ndarray:
        """Run the layers on X and return a copy of the output.

        Shape
        -----
        - X: ``(N, *input_shape)``; Output: ``(N, *output_shape)``, the model's dtype.
        """
        X, _ = self._check_X(X)
        return self._forward(X, training).copy()

    def backward(self, grad_output: ArrayLike) -> np.ndarray | None:
        """Back-propagate ``grad_output`` (d loss / d output of the last forward): fills every
        layer's ``grads``. Returns None (the first layer skips the input gradient)."""
        grad: Any = grad_output  # array_like in; each layer returns an ndarray or None
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:
                break
        return grad

    def _train_step(self, Xb: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
        assert self.loss is not None and self.optimizer is not None  # checked by the callers
        out = self._forward(Xb, training=True)
        loss = self.loss.forward(out, yb, prepared=True)
        if not np.isfinite(loss):
            return loss, out  # the caller decides; weights are untouched
        self.backward(self.loss.backward())
        self.optimizer.step(self.layers)
        return loss, out

    def train_on_batch(self, X: ArrayLike, y: ArrayLike, check_finite: bool = True) -> float:
        """One optimisation step on a batch; returns the mean loss (float).

        Raises
        ------
        RuntimeError
            If the model is not compiled.
        FloatingPointError
            If the loss is NaN or inf (the weights are left unchanged).
        ValueError, TypeError
            Bad X or y (see ``fit``).
        """
        self._require_compiled()
        X, out_shape = self._check_X(X, check_finite=bool(check_finite))
        yb = self._prepare_y(y, X.shape[0], out_shape)
        loss, _ = self._train_step(X, yb)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss}; the step was not applied")
        return float(loss)

    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, shuffle: bool = True,
            seed: int | None = None, verbose: int = 1, callbacks: Iterable[Callback] | None = None,
            on_nan: str = "raise", initial_epoch: int = 0, check_finite: bool = True) -> History:
        """Train with mini-batches; returns a :class:`~fastnn.callbacks.History`.

        Parameters
        ----------
        X : array_like, shape ``(N, *input_shape)``
            Float (or int, converted) samples; float64 is converted once to a float32 model.
        y : array_like
            Targets for the loss: ``(N,)`` int labels (or one-hot) for SoftmaxCrossEntropy;
            ``(N, K)`` or ``(N,)`` floats for BinaryCrossEntropy / MeanSquaredError.
        epochs : int, default=1
            ``>= 1``.
        batch_size : int, default=32
            ``1 <= batch_size <= N``.
        validation_data : tuple (X_val, y_val), optional
            Evaluated after each epoch (``val_loss``, ``val_accuracy``).
        shuffle : bool, default=True
        seed : int, optional
            Seed of the shuffling (defaults to the model's seed).
        verbose : {0, 1, 2}, default=1
            0 silent, 1 a progress bar (tqdm) and a line per epoch, 2 a line per epoch.
        callbacks : list of Callback, optional
        on_nan : {"raise", "stop"}, default="raise"
            A NaN/inf loss raises FloatingPointError naming the epoch and batch, or warns and
            stops; either way the bad step is not applied.
        initial_epoch : int, default=0
            Epoch index to start from (for resuming).
        check_finite : bool, default=True
            Refuse NaN and inf in X and y (ValueError). ``False`` skips that check (the loss then
            decides, see ``on_nan``).

        Notes
        -----
        Unless the thread count is fixed with :func:`fastnn.set_num_threads`, ``fit`` runs each
        step at the faster of the default count and one thread, re-checked as it trains
        (:class:`fastnn._config.ThreadTuner`: on a machine where another process keeps a core
        busy, one thread is often faster). Results do not depend on the thread count.

        Raises
        ------
        ValueError, TypeError
            Bad arrays or arguments, named in the message.
        FloatingPointError
            NaN/inf loss with ``on_nan="raise"``.
        """
        self._require_compiled()
        X, out_shape = self._check_X(X, check_finite=bool(check_finite))
        n = X.shape[0]
        y = self._prepare_y(y, n, out_shape)
        epochs = V.check_int(epochs, "epochs", minimum=1)
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        if batch_size > n:
            raise ValueError(f"batch_size ({batch_size}) is larger than the number of samples "
                             f"({n})")
        initial_epoch = V.check_int(initial_epoch, "initial_epoch", minimum=0)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if on_nan not in ("raise", "stop"):
            raise ValueError(f"on_nan must be 'raise' or 'stop', got {on_nan!r}")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (X_val, y_val)")
            Xv, vout = self._check_X(validation_data[0], "validation_data[0]",
                                     check_finite=bool(check_finite))
            try:
                yv = self._prepare_y(validation_data[1], Xv.shape[0], vout)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"validation_data[1] (the validation targets; X means "
                                f"validation_data[0]): {exc}") from None
        history = History()
        cbs = [history] + list(callbacks or [])
        assert self.loss is not None  # _require_compiled
        metrics = ["loss"] + ([self.loss.metric] if self.loss.metric else [])
        if validation_data is not None:
            metrics += [f"val_{k}" for k in metrics]
        params = {"epochs": epochs, "batch_size": batch_size, "verbose": verbose,
                  "metrics": metrics + ["seconds"]}
        for cb in cbs:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastnn Callbacks, got {type(cb).__name__}")
            cb.model = self
            cb.params = dict(params)
        # Each epoch's order comes from (seed, epoch): a run resumed at initial_epoch=k shuffles
        # exactly as an uninterrupted one.
        base_seed = seed if seed is not None else self.seed
        if base_seed is None:
            base_seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.stop_training = False
        self.history = history
        for cb in cbs:
            cb.on_train_begin()
        interrupted = _SigintFlag()
        with interrupted, _config.ThreadTuner.shared() as tuner:
            self._fit_epochs(X, y, epochs, batch_size, validation_data and (Xv, yv), shuffle,
                             base_seed, verbose, cbs, on_nan, initial_epoch, interrupted, tuner)
        for cb in cbs:
            cb.on_train_end()
        if interrupted.hit:
            raise KeyboardInterrupt("training interrupted; the model holds the weights after the "
                                    "last completed batch and model.history the epochs so far")
        return history

    def _fit_epochs(self, X: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
                    validation: tuple[np.ndarray, np.ndarray] | None, shuffle: bool,
                    base_seed: int, verbose: int, cbs: list[Callback], on_nan: str,
                    initial_epoch: int, interrupted: _SigintFlag,
                    tuner: _config.ThreadTuner) -> None:
        assert self.loss is not None  # checked by fit
        n = X.shape[0]
        xbuf = ybuf = None
        for epoch in range(initial_epoch, epochs):
            t0 = time.perf_counter()
            if shuffle:
                order = np.random.default_rng((base_seed, epoch)).permutation(n)
            else:
                order = np.arange(n)
            nb = (n + batch_size - 1) // batch_size
            bar = None
            if verbose == 1:
                from tqdm.auto import tqdm

                bar = tqdm(total=nb, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="batch")
            loss_sum = score_sum = 0.0
            seen = 0
            for b in range(nb):
                idx = order[b * batch_size:(b + 1) * batch_size]
                m = idx.shape[0]
                if xbuf is None or xbuf.shape[0] != m:
                    xbuf = np.empty((m,) + X.shape[1:], dtype=X.dtype)
                    ybuf = np.empty((m,) + y.shape[1:], dtype=y.dtype)
                assert ybuf is not None  # allocated with xbuf
                np.take(X, idx, axis=0, out=xbuf)
                np.take(y, idx, axis=0, out=ybuf)
                t_step = time.perf_counter()
                loss, out = self._train_step(xbuf, ybuf)
                tuner.step_done(time.perf_counter() - t_step)
                if not np.isfinite(loss):
                    msg = (f"loss became {loss} at epoch {epoch + 1}, batch {b + 1}; the step was "
                           f"not applied (weights are those before this batch)")
                    if bar is not None:
                        bar.close()
                    if on_nan == "raise":
                        raise FloatingPointError(msg)
                    warnings.warn(msg + "; training stopped", RuntimeWarning, stacklevel=3)
                    self.stop_training = True
                    if seen == 0:  # nothing was trained in this epoch: no epoch record
                        if bar is not None:
                            bar.close()
                        return
                    break
                loss_sum += loss * m
                seen += m
                if self.loss.metric:
                    score = self.loss.score(out, ybuf)
                    assert score is not None  # a loss with a metric scores it
                    score_sum += score * m
                for cb in cbs:
                    cb.on_batch_end(b, {"loss": loss})
                if bar is not None:
                    bar.update(1)
                    if b % 20 == 0:
                        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
                if self.stop_training or interrupted.hit:
                    break
            if bar is not None:
                bar.close()
            if interrupted.hit:
                return
            logs = {"loss": loss_sum / max(seen, 1)}
            if self.loss.metric:
                logs[self.loss.metric] = score_sum / max(seen, 1)
            if validation is not None:
                vlogs = self._evaluate_prepared(*validation)
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            logs["seconds"] = time.perf_counter() - t0
            if verbose:
                print(f"epoch {epoch + 1}/{epochs} " + " ".join(
                    f"{k}={v:.4f}" if k != "seconds" else f"{k}={v:.1f}"
                    for k, v in logs.items()), flush=True)
            self.epochs_completed = epoch + 1
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break

    # -- inference ----------------------------------------------------------------------------
    def _predict_checked(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        n = X.shape[0]
        outs = []
        for s in range(0, n, batch_size):
            outs.append(self._forward(X[s:s + batch_size], training=False).copy())
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def predict(self, X: ArrayLike, batch_size: int = 1024,
                check_finite: bool = True) -> np.ndarray:
        """The network's output for X (logits when the last layer has no activation).

        Shape
        -----
        - X: ``(N, *input_shape)``; Output: ``(N, *output_shape)``, the model's dtype.

        Raises
        ------
        ValueError, TypeError
            X of the wrong shape or dtype, empty, NaN or inf (unless ``check_finite=False``).
        """
        X, _ = self._check_X(X, check_finite=bool(check_finite))
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        return self._predict_checked(X, batch_size)

    def predict_proba(self, X: ArrayLike, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities: softmax of the logits (SoftmaxCrossEntropy) or sigmoid
        (BinaryCrossEntropy). Shape ``(N, K)``.

        Raises
        ------
        RuntimeError
            If the model is not compiled with a classification loss.
        """
        if not isinstance(self.loss, (losses_mod.SoftmaxCrossEntropy,
                                      losses_mod.BinaryCrossEntropy)):
            raise RuntimeError("predict_proba needs a model compiled with SoftmaxCrossEntropy or "
                               "BinaryCrossEntropy")
        return self.loss.probabilities(self.predict(X, batch_size))

    def predict_classes(self, X: ArrayLike, batch_size: int = 1024) -> np.ndarray:
        """Predicted labels ``(N,)`` int64: argmax of the logits, or ``logit > 0`` for a single
        binary output."""
        out = self.predict(X, batch_size)
        if out.shape[1] == 1:
            return (out[:, 0] > 0).astype(np.int64)
        return out.argmax(axis=1).astype(np.int64)

    def _evaluate_prepared(self, X: np.ndarray, y: np.ndarray,
                           batch_size: int = 1024) -> dict[str, float]:
        assert self.loss is not None  # checked by the callers
        n = X.shape[0]
        loss_sum = score_sum = 0.0
        for s in range(0, n, batch_size):
            out = self._forward(X[s:s + batch_size], training=False)
            yb = y[s:s + batch_size]
            m = out.shape[0]
            loss_sum += self.loss.forward(out, yb, prepared=True) * m
            if self.loss.metric:
                score = self.loss.score(out, yb)
                assert score is not None  # a loss with a metric scores it
                score_sum += score * m
        res = {"loss": loss_sum / n}
        if self.loss.metric:
            res[self.loss.metric] = score_sum / n
        return res

    def evaluate(self, X: ArrayLike, y: ArrayLike, batch_size: int = 1024,
                 check_finite: bool = True) -> dict[str, float]:
        """Mean loss (and accuracy for classification losses) over X: a dict
        ``{"loss": float, "accuracy": float}``.

        Raises
        ------
        RuntimeError
            If the model has no loss (not compiled).
        ValueError, TypeError
            Bad X or y.
        """
        if self.loss is None:
            raise RuntimeError("call model.compile(optimizer, loss) before evaluate")
        X, out_shape = self._check_X(X, check_finite=bool(check_finite))
        y = self._prepare_y(y, X.shape[0], out_shape)
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        return self._evaluate_prepared(X, y, batch_size)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], include_optimizer: bool = True) -> None:
        """Save to ``path`` (.npz + JSON header, loads without pickle); see :func:`fastnn.load`."""
        io_mod.save_model(self, path, include_optimizer=include_optimizer)

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"


MODELS.register(Sequential)
