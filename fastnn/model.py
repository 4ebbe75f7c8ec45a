"""Sequential: a stack of layers trained with fit / evaluate / predict (Keras conventions)."""
from __future__ import annotations

import os
import signal
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _config, _flat
from . import _validation as V
from . import io as io_mod
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from ._registry import MODELS
from .callbacks import Callback, History
from .layers.base import LAYERS, Layer

if TYPE_CHECKING:
    from typing_extensions import Self

    from .losses import Loss
    from .metrics import Metric
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


def _short_repr(layer: Layer) -> str:
    """``Class(args)`` with the arguments that differ from the constructor's defaults (the
    initialisers and seeds left out), for :meth:`Sequential.summary`."""
    import inspect

    try:
        defaults = {k: p.default for k, p in inspect.signature(type(layer)).parameters.items()}
    except (TypeError, ValueError):
        defaults = {}
    args = []
    for k, v in layer.get_config().items():
        if k in ("weight_init", "bias_init", "seed"):
            continue
        d = defaults.get(k, inspect.Parameter.empty)
        if k == "alpha" and d is None:  # None: the activation's own default (leaky_relu 0.01)
            from .activations import ACTIVATIONS

            d = ACTIVATIONS[getattr(layer, "activation", "identity")].default_alpha
        if isinstance(v, (list, tuple)) and len(set(v)) == 1 and not isinstance(d, (list, tuple)):
            v = v[0]  # (3, 3) written as 3, as the constructor accepts
        if d is inspect.Parameter.empty or v != d:
            args.append(f"{k}={v!r}")
    return f"{type(layer).__name__}({', '.join(args)})"


class Sequential:
    """A linear stack of layers.

    Parameters
    ----------
    layers : list of Layer
        Applied in order. Each layer's parameters are created here, in ``dtype``, from ``seed``.
    dtype : {"float32", "float64", "mixed_bfloat16"}, default="float32"
        The dtype of every parameter and computation. Inputs of another dtype (float64 data for a
        float32 model, or ints) are converted once per call of fit/evaluate/predict.
        ``"mixed_bfloat16"`` is Keras' mixed-precision policy of that name: parameters, optimizer
        state, activations, gradients and the loss are float32 (``model.dtype`` is float32), and
        the matrix products of Dense and Conv2D (forward, weight and input gradients) take
        their inputs rounded to bfloat16 (round to nearest even) with float32 sums: PyTorch's
        ``torch.autocast("cpu", dtype=torch.bfloat16)`` for those layers. It runs on
        ``fastnn.show_config()``'s ``bf16_kernel``: AMX or AVX512_BF16 where the CPU has them,
        else the same rounding emulated with float32 FMAs.
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

    #: data-parallel training: None, or the hooks object of :mod:`fastnn.distributed` while its
    #: ``fit`` runs (shards each batch and the validation set, reduces the loss, the gradients
    #: and the epoch sums across ranks)
    _data_parallel: Any = None

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
        #: the dtype policy: "float32", "float64" or "mixed_bfloat16"
        mixed = isinstance(dtype, str) and dtype == "mixed_bfloat16"
        self.dtype = V.check_dtype("float32" if mixed else dtype)
        self.dtype_policy = "mixed_bfloat16" if mixed else str(self.dtype)
        self.seed = seed
        rng = np.random.default_rng(seed)
        for i, layer in enumerate(layers):
            layer.build(self.dtype, rng)
            layer.need_input_grad = i > 0
            layer.compute_bf16 = self.dtype_policy == "mixed_bfloat16"
        self._own_parameters()
        if input_shape is None and hasattr(layers[0], "in_features"):
            input_shape = (layers[0].in_features,)
        self.input_shape: tuple[int, ...] | None = (tuple(input_shape) if input_shape is not None
                                                    else None)
        if self.input_shape is not None:
            self.output_shape(self.input_shape)
        self.loss: Loss | None = None
        self.optimizer: Optimizer | None = None
        self.metrics: list[Metric] = []
        self.stop_training = False
        self.epochs_completed = 0
        self.history: History | None = None

    def _own_parameters(self) -> None:
        """Pack every parameter into the model's flat buffers (values kept)."""
        self._params = _flat.ParamGroup(self.layers)
        self._params.owner = weakref.ref(self)
        #: whether a training step changes more than the parameters (BatchNorm, Dropout)
        self._has_state = any(layer.buffers or layer.get_state() for layer in self.layers)
        #: whether a batch of one sample cannot train (BatchNorm of (N, C) inputs needs 2 values
        #: per channel): fit then drops a last batch of one sample
        self._drops_single_sample = any(type(layer).__name__ == "BatchNorm"
                                        for layer in self.layers)

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
                "dtype": self.dtype_policy,
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
                loss: Loss | type[Loss] | str = "softmax_cross_entropy",
                metrics: Sequence[Metric | str] | None = None) -> Self:
        """Set the optimizer, the loss and the metrics.

        Parameters
        ----------
        optimizer : Optimizer or str, default="sgd"
            An instance or a name of ``fastnn.optimizers.OPTIMIZERS`` (default settings).
        loss : Loss, Loss subclass or str, default="softmax_cross_entropy"
            An instance, a class or a name of ``fastnn.losses.LOSSES``.
        metrics : list of Metric or str, optional
            Reported by ``fit`` (History, progress bar, ``val_`` versions with validation data)
            and ``evaluate`` besides the loss: names of ``fastnn.metrics.METRICS``
            (``"accuracy"``, ``"top_k_accuracy"``, ``"mae"``, ``"mse"``) or instances (e.g.
            ``TopKAccuracy(k=3)``). Default: the loss's own metric (accuracy for the
            classification losses), none for the others; ``[]`` reports the loss only.

        Raises
        ------
        ValueError
            An unknown name, a metric that does not apply to the loss (accuracy with a
            regression loss), or two metrics of the same name.

        Warns
        -----
        UserWarning
            When the last layer applies softmax (sigmoid) and the loss is one that applies it
            itself (SoftmaxCrossEntropy / KLDivergence: logits expected; BinaryCrossEntropy):
            the function would be applied twice.
        """
        self.optimizer = optimizers_mod.get(optimizer)
        self.loss = losses_mod.get(loss)
        if metrics is None:
            metrics = [self.loss.metric] if self.loss.metric else []
        if isinstance(metrics, (str, metrics_mod.Metric)):
            metrics = [metrics]
        resolved = [metrics_mod.get(m) for m in metrics]
        names = [m.name for m in resolved]
        for m in resolved:
            if names.count(m.name) > 1 or m.name == "loss":
                raise ValueError(f"metrics must have distinct names other than 'loss', got "
                                 f"{names}")
            m.check_loss(self.loss)
        self.metrics = resolved
        self._warn_double_output_function()
        return self

    def _warn_double_output_function(self) -> None:
        last = self.layers[-1]
        activation = getattr(last, "activation", None)
        logit_losses = ("SoftmaxCrossEntropy", "KLDivergence")
        loss_name = type(self.loss).__name__
        if activation == "softmax" and loss_name in logit_losses:
            warnings.warn(f"the last layer ({type(last).__name__}) applies softmax and "
                          f"{loss_name} applies softmax to its input again; give the last layer "
                          f"no activation (the loss takes logits)", UserWarning, stacklevel=3)
        elif activation == "sigmoid" and loss_name == "BinaryCrossEntropy":
            warnings.warn(f"the last layer ({type(last).__name__}) applies sigmoid and "
                          f"BinaryCrossEntropy applies sigmoid to its input again; give the last "
                          f"layer no activation (the loss takes logits)", UserWarning,
                          stacklevel=3)

    def _require_compiled(self) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError("call model.compile(optimizer, loss) before training")

    def count_params(self) -> int:
        return int(sum(p.size for layer in self.layers for p in layer.params.values()))

    def summary(self, input_shape: Sequence[int] | None = None,
                print_fn: Callable[[str], Any] | None = print) -> str | None:
        """Print a Keras-like table: each layer (its index, class and the constructor arguments
        that differ from the defaults, never truncated), its output shape
        (``None`` for the batch axis) and parameter count, then the total, trainable and
        non-trainable (e.g. BatchNorm's running statistics) counts.

        Parameters
        ----------
        input_shape : tuple of int, optional
            Per-sample input shape; default the model's ``input_shape``. Without either, output
            shapes show as ``?``.
        print_fn : callable or None, default=print
            Called with the table (one string), as Keras' ``summary(print_fn=...)``.

        Returns
        -------
        str or None
            The table when ``print_fn`` is None (nothing is printed then), else None.
        """
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        rows = []
        for i, layer in enumerate(self.layers):
            if shape is not None:
                shape = layer.output_shape(shape)
            n = sum(p.size for p in layer.params.values())
            out = "(None, " + ", ".join(map(str, shape)) + ")" if shape is not None else "?"
            rows.append((f"{i}: {_short_repr(layer)}", out, f"{n:,}"))
        trainable = self.count_params()
        fixed = int(sum(b.size for layer in self.layers
                        for b in getattr(layer, "buffers", {}).values()))
        heads = ("Layer", "Output shape", "Param #")
        w0 = max(len(heads[0]), *(len(r[0]) for r in rows))
        w1 = max(len(heads[1]), *(len(r[1]) for r in rows))
        w2 = max(len(heads[2]), *(len(r[2]) for r in rows))
        rule = "=" * (w0 + w1 + w2 + 4)
        lines = [f'Model: "{type(self).__name__}" ({self.dtype_policy})', rule,
                 f"{heads[0]:<{w0}}  {heads[1]:<{w1}}  {heads[2]:>{w2}}", rule]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}" for a, b, c in rows]
        lines += [rule, f"Total params: {trainable + fixed:,}",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {fixed:,}"]
        table = "\n".join(lines)
        if print_fn is None:
            return table
        print_fn(table)
        return None

    def get_weights(self) -> list[dict[str, np.ndarray]]:
        """A list (per layer) of dicts of copies of the parameters and of the non-trainable
        arrays (``layer.buffers``, e.g. BatchNorm's running statistics), as Keras' weights."""
        return [{**{k: v.copy() for k, v in layer.params.items()},
                 **{k: v.copy() for k, v in layer.buffers.items()}} for layer in self.layers]

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
            expected = set(layer.params) | set(layer.buffers)
            if set(w) != expected:
                raise ValueError(f"layer {i}: expected parameters and buffers "
                                 f"{sorted(expected)}, got {sorted(w)}")
            for k, v in w.items():
                target = layer.params[k] if k in layer.params else layer.buffers[k]
                if np.shape(v) != target.shape:
                    raise ValueError(f"layer {i} {k}: expected shape {target.shape}, got "
                                     f"{np.shape(v)}")
                np.copyto(target, v, casting="same_kind")

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

    def _training_state(self) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
        """Copies of every layer's non-trainable arrays and state (running statistics, Dropout's
        step), to put back when a step is not applied."""
        return [({k: v.copy() for k, v in layer.buffers.items()}, layer.get_state())
                for layer in self.layers if layer.buffers or layer.get_state()]

    def _restore_training_state(self, saved: list[tuple[dict[str, np.ndarray],
                                                          dict[str, Any]]]) -> None:
        layers = [layer for layer in self.layers if layer.buffers or layer.get_state()]
        for layer, (buffers, state) in zip(layers, saved):
            for k, v in buffers.items():
                layer.buffers[k] = v
            layer.set_state(state)

    def _train_step(self, Xb: np.ndarray, yb: np.ndarray,
                    wb: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        assert self.loss is not None and self.optimizer is not None  # checked by the callers
        saved = self._training_state() if self._has_state else None
        out = self._forward(Xb, training=True)
        dp = self._data_parallel
        if dp is None:
            # through Loss.__call__: a loss without sample-weight support gets a clear TypeError
            loss = self.loss(out, yb, prepared=True, sample_weight=wb)
        else:  # the global batch's mean loss and its gradients, summed over the ranks
            loss = dp.loss_and_gradients(self, out, yb, wb)
        if not np.isfinite(loss):  # the caller decides; weights and running statistics untouched
            if saved:
                self._restore_training_state(saved)
            return loss, out
        if dp is None:
            self.backward(self.loss.backward())
        self.optimizer.step(self.layers)
        return loss, out

    def train_on_batch(self, X: ArrayLike, y: ArrayLike, check_finite: bool = True,
                       sample_weight: ArrayLike | None = None,
                       class_weight: Mapping[int, float] | None = None) -> float:
        """One optimisation step on a batch; returns the mean loss (float), weighted as in
        ``fit`` when ``sample_weight`` or ``class_weight`` is given.

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
        wb = self._sample_weights(sample_weight, class_weight, yb, X.shape[0])
        loss, _ = self._train_step(X, yb, wb)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss}; the step was not applied")
        return float(loss)

    def _sample_weights(self, sample_weight: ArrayLike | None,
                        class_weight: Mapping[int, float] | None, y: np.ndarray,
                        n: int) -> np.ndarray | None:
        """Per-sample weights ``(n,)`` float64 from ``sample_weight`` times ``class_weight`` of
        each sample's class, or None when neither is given."""
        if sample_weight is None and class_weight is None:
            return None
        assert self.loss is not None  # callers check that the model is compiled
        w = np.ones(n, dtype=np.float64)
        if sample_weight is not None:
            sw = V.as_float_array(sample_weight, "sample_weight", np.float64, ndim=1)
            if sw.shape[0] != n:
                raise ValueError(f"sample_weight must have shape ({n},) (one weight per sample), "
                                 f"got {sw.shape}")
            if np.any(sw < 0):
                raise ValueError(f"sample_weight must be >= 0, got a minimum of {sw.min()}")
            w *= sw
        if class_weight is not None:
            if not isinstance(class_weight, Mapping):
                raise TypeError(f"class_weight must be a dict {{class index: weight}}, got "
                                f"{type(class_weight).__name__}")
            if y.ndim == 1:
                labels = y.astype(np.int64)
                n_classes = None
            elif y.shape[1] == 1:  # binary targets in [0, 1]: class 1 where target >= 0.5
                labels = (y[:, 0] >= 0.5).astype(np.int64)
                n_classes = 2
            else:
                labels = np.argmax(y, axis=1)
                n_classes = y.shape[1]
            n_classes = n_classes or (int(labels.max()) + 1 if labels.size else 0)
            table = np.ones(max(n_classes, 1), dtype=np.float64)
            for c, cw in class_weight.items():
                if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                    raise TypeError(f"class_weight keys must be class indices (int), got {c!r}")
                cw = V.check_float(cw, f"class_weight[{c}]", minimum=0.0)
                if 0 <= c < table.shape[0]:
                    table[c] = cw
                elif c < 0:
                    raise ValueError(f"class_weight key {c} is negative")
            w *= table[labels]
        if not np.any(w > 0):
            raise ValueError("the sample weights (sample_weight times class_weight) are all 0")
        if not self.loss.supports_sample_weight:  # before training, not at the first step
            self.loss.check_sample_weight(w, n)
        return w

    def fit(self, X: ArrayLike, y: ArrayLike, epochs: int = 1, batch_size: int = 32,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, shuffle: bool = True,
            seed: int | None = None, verbose: int = 1, callbacks: Iterable[Callback] | None = None,
            on_nan: str = "raise", initial_epoch: int = 0, check_finite: bool = True,
            validation_split: float = 0.0, sample_weight: ArrayLike | None = None,
            class_weight: Mapping[int, float] | None = None) -> History:
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
            ``>= 1``; a value above the number of training samples is clipped to it with a
            warning (as Keras and scikit-learn).
        validation_data : tuple (X_val, y_val), optional
            Evaluated after each epoch (``val_loss`` and ``val_`` + each metric). Takes
            precedence over ``validation_split`` (as Keras).
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
        validation_split : float, default=0.0
            In ``[0, 1)``: the last ``int(N * validation_split)`` samples (taken before
            shuffling, as Keras) are held out and evaluated after each epoch; the rest is trained
            on.
        sample_weight : array_like, shape ``(N,)``, optional
            Non-negative weight of each sample in the training loss.
        class_weight : dict of int -> float, optional
            Weight of each class (classes not listed weigh 1); a sample's weight is its class's,
            times its ``sample_weight`` if both are given (as Keras). The class is the label, the
            argmax of a one-hot row, or ``target >= 0.5`` for one binary output.

        Notes
        -----
        In a model with BatchNorm, a last batch of a single sample (``N % batch_size == 1``) is
        left out of the epoch, as PyTorch's ``drop_last`` would: batch statistics need at least
        2 values per channel (a different sample each epoch when shuffling).

        With weights, each batch's loss is the weighted mean ``sum_n w_n l_n / sum_n w_n`` of
        the samples' losses ``l_n``, computed in the loss kernel (PyTorch's convention for class
        weights); metrics and validation losses are unweighted.

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
        weights = self._sample_weights(sample_weight, class_weight, y, n)
        epochs = V.check_int(epochs, "epochs", minimum=1)
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
        validation_split = V.check_float(validation_split, "validation_split", minimum=0.0,
                                         maximum=1.0, max_inclusive=False)
        initial_epoch = V.check_int(initial_epoch, "initial_epoch", minimum=0)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if on_nan not in ("raise", "stop"):
            raise ValueError(f"on_nan must be 'raise' or 'stop', got {on_nan!r}")
        validation: tuple[np.ndarray, np.ndarray] | None = None
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
            validation = (Xv, yv)
        elif validation_split > 0:
            split = int(n * (1.0 - validation_split))
            if split == n or split == 0:
                raise ValueError(f"validation_split={validation_split} of {n} samples leaves "
                                 f"{n - split} for validation and {split} for training; both "
                                 f"need at least 1")
            validation = (X[split:], y[split:])
            X, y = X[:split], y[:split]
            if weights is not None:
                weights = weights[:split]
                if not np.any(weights > 0):
                    raise ValueError("the sample weights of the training part are all 0")
            n = split
        if batch_size > n:
            warnings.warn(f"batch_size ({batch_size}) is larger than the number of training "
                          f"samples ({n}); using batch_size={n}", UserWarning, stacklevel=2)
            batch_size = n
        history = History()
        cbs = [history] + list(callbacks or [])
        assert self.loss is not None  # _require_compiled
        metrics = ["loss"] + [m.name for m in self.metrics]
        if validation is not None:
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
            self._fit_epochs(X, y, weights, epochs, batch_size, validation, shuffle,
                             base_seed, verbose, cbs, on_nan, initial_epoch, interrupted, tuner)
        for cb in cbs:
            cb.on_train_end()
        if interrupted.hit:
            raise KeyboardInterrupt("training interrupted; the model holds the weights after the "
                                    "last completed batch and model.history the epochs so far")
        return history

    def _fit_epochs(self, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None,
                    epochs: int, batch_size: int,
                    validation: tuple[np.ndarray, np.ndarray] | None, shuffle: bool,
                    base_seed: int, verbose: int, cbs: list[Callback], on_nan: str,
                    initial_epoch: int, interrupted: _SigintFlag,
                    tuner: _config.ThreadTuner) -> None:
        assert self.loss is not None  # checked by fit
        n = X.shape[0]
        dp = self._data_parallel
        # a last batch smaller than this is left out (BatchNorm needs 2 samples; under
        # fastnn.distributed each rank needs its share)
        min_last = dp.min_batch if dp is not None else (2 if self._drops_single_sample else 1)
        xbuf = ybuf = wbuf = None
        for epoch in range(initial_epoch, epochs):
            t0 = time.perf_counter()
            if shuffle:
                order = np.random.default_rng((base_seed, epoch)).permutation(n)
            else:
                order = np.arange(n)
            nb = (n + batch_size - 1) // batch_size
            if nb > 1 and 0 < n % batch_size < min_last:
                nb -= 1  # BatchNorm cannot train on one sample: drop a last batch of one
            bar = None
            if verbose == 1:
                from tqdm.auto import tqdm

                bar = tqdm(total=nb, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="batch")
            loss_sum = 0.0
            metric_sums = dict.fromkeys((m.name for m in self.metrics), 0.0)
            seen = 0
            for b in range(nb):
                idx = order[b * batch_size:(b + 1) * batch_size]
                if dp is not None:  # this rank's part; None when the batch weighs nothing
                    idx = dp.shard(idx, weights)
                    if idx is None:
                        continue
                m = idx.shape[0]
                if xbuf is None or xbuf.shape[0] != m:
                    xbuf = np.empty((m,) + X.shape[1:], dtype=X.dtype)
                    ybuf = np.empty((m,) + y.shape[1:], dtype=y.dtype)
                    wbuf = np.empty(m, dtype=np.float64) if weights is not None else None
                assert ybuf is not None  # allocated with xbuf
                np.take(X, idx, axis=0, out=xbuf)
                np.take(y, idx, axis=0, out=ybuf)
                if weights is not None:
                    assert wbuf is not None  # allocated with xbuf
                    np.take(weights, idx, out=wbuf)
                    if dp is None and not np.any(wbuf > 0):  # zero weights: nothing to learn
                        continue
                t_step = time.perf_counter()
                loss, out = self._train_step(xbuf, ybuf, wbuf)
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
                for metric in self.metrics:
                    metric_sums[metric.name] += metric(out, ybuf, self.loss) * m
                for cb in cbs:
                    cb.on_batch_end(b, {"loss": loss})
                if bar is not None:
                    bar.update(1)
                    if b % 20 == 0:
                        bar.set_postfix({"loss": f"{loss_sum / seen:.4f}"} | {
                            k: f"{v / seen:.4f}" for k, v in metric_sums.items()})
                if self.stop_training or interrupted.hit:
                    break
            if bar is not None:
                bar.close()
            if interrupted.hit:
                return
            if dp is not None:  # the sums over every rank; every rank's weights checked
                loss_sum, seen = dp.end_epoch(self, epoch, loss_sum, metric_sums, seen)
            logs = {"loss": loss_sum / max(seen, 1)}
            logs.update({k: v / max(seen, 1) for k, v in metric_sums.items()})
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
        """Class probabilities: softmax of the logits (SoftmaxCrossEntropy, KLDivergence) or
        sigmoid (BinaryCrossEntropy). Shape ``(N, K)``.

        Raises
        ------
        RuntimeError
            If the model is not compiled with a classification loss.
        """
        if not isinstance(self.loss, (losses_mod.SoftmaxCrossEntropy, losses_mod.KLDivergence,
                                      losses_mod.BinaryCrossEntropy)):
            raise RuntimeError("predict_proba needs a model compiled with SoftmaxCrossEntropy, "
                               "KLDivergence or BinaryCrossEntropy")
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
        dp = self._data_parallel
        if dp is not None:  # this rank's contiguous part (the sums are reduced below)
            X, y = dp.shard_rows(X), dp.shard_rows(y)
        loss_sum = 0.0
        sums = dict.fromkeys((m.name for m in self.metrics), 0.0)
        for s in range(0, X.shape[0], batch_size):
            out = self._forward(X[s:s + batch_size], training=False)
            yb = y[s:s + batch_size]
            m = out.shape[0]
            loss_sum += self.loss.forward(out, yb, prepared=True) * m
            for metric in self.metrics:
                sums[metric.name] += metric(out, yb, self.loss) * m
        if dp is not None:
            loss_sum = dp.reduce_sums(loss_sum, sums)
        res = {"loss": loss_sum / n}
        res.update({k: v / n for k, v in sums.items()})
        return res

    def evaluate(self, X: ArrayLike, y: ArrayLike, batch_size: int = 1024,
                 check_finite: bool = True) -> dict[str, float]:
        """Mean loss and metrics (see :meth:`compile`) over X: a dict ``{"loss": float,
        <metric name>: float, ...}`` (e.g. ``{"loss": 0.31, "accuracy": 0.89}``).

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

    def export_onnx(self, path: str | os.PathLike[str] | None, opset: int = 17,
                    probabilities: bool = False,
                    input_shape: Sequence[int] | None = None) -> Any:
        """Write the model as an ONNX file whose graph computes :meth:`predict` (inference form;
        needs ``pip install 'fastnn[onnx]'``); returns the ``onnx.ModelProto``. See
        :func:`fastnn.onnx.export` for the arguments, the graph and the errors raised."""
        from . import onnx as onnx_export

        return onnx_export.export(self, path, opset=opset, probabilities=probabilities,
                                  input_shape=input_shape)

    def __repr__(self) -> str:
        return "Sequential([" + ", ".join(repr(layer) for layer in self.layers) + "])"


MODELS.register(Sequential)
